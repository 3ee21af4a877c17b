"""Progress for `facesweep run`: a live bar on a terminal, one log line per shard otherwise."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from facesweep.workers.job.progress import JobProgress


class TerminalProgress:
    """A tqdm bar: images done of the new ones (known once the plan, read ahead, reaches its end), and the
    rate, time left, faces and errors from the job's own totals, so the bar's rate is the summary's."""

    COUNTING = "{n_fmt} img{postfix}"
    KNOWN = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} img{postfix}"

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream
        self._bar: tqdm | None = None  # appears with the first finished shard, not before errors

    def __call__(self, progress: JobProgress) -> None:
        if self._bar is None:
            self._bar = tqdm(total=None, file=self._stream, dynamic_ncols=True, bar_format=self.COUNTING)
        if progress.plan.images_known is not None and self._bar.total is None:
            self._bar.total = progress.plan.images_known
            self._bar.bar_format = self.KNOWN
        self._bar.n = progress.images
        self._bar.set_postfix_str(_status(progress, self._bar.total), refresh=True)

    def close(self, final: JobProgress | None = None) -> None:
        """Ends the bar; with the finished job's totals, its last frame shows the summary's rate."""
        if self._bar is not None:
            if final is not None:
                self(final)
            self._bar.close()


def _status(progress: JobProgress, total: int | None) -> str:
    """`12.5 img/s, 0:42 left, faces 310, errors 0`: the rate once the actors were ready (not tqdm's,
    which a shard's worth of images in the first instant makes absurd)."""
    rate = progress.processing_images_per_second
    parts = [f"{rate:.1f} img/s"]
    if total is not None and rate > 0 and progress.finished is None:
        parts.append(f"{tqdm.format_interval((total - progress.images) / rate)} left")
    parts += [f"faces {progress.faces}", f"errors {progress.errors}"]
    return ", ".join(parts)


class LogProgress:
    """A plain line per shard, for logs and CI."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream

    def __call__(self, progress: JobProgress) -> None:
        plan = progress.plan
        known = plan.images_known
        if known is not None:
            done = f"shard {progress.shards}: {progress.images}/{known} images"
        else:  # a container's images are counted as they are read
            shards = f"{plan.shards}{'' if plan.finished else '+'}"
            done = f"shard {progress.shards} of {shards}: {progress.images} images"
        print(
            f"{done}, {progress.faces} faces, "
            f"{progress.errors} errors, {progress.processing_images_per_second:.1f} img/s",
            file=self._stream,
            flush=True,
        )

    def close(self, final: JobProgress | None = None) -> None:
        """Nothing to end: the summary follows the last shard's line."""


def progress_for(stream: TextIO = sys.stderr) -> TerminalProgress | LogProgress:
    return TerminalProgress(stream) if stream.isatty() else LogProgress(stream)
