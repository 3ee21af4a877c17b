"""Progress for `facesweep run`: a live bar on a terminal, one log line per shard otherwise."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from workers.driver import JobProgress


class TerminalProgress:
    """A tqdm bar: images done of the new ones (known once the listing is compared with OUTPUT), images/s,
    faces, errors."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream
        self._bar: tqdm | None = None  # appears with the first finished shard, not before errors

    def __call__(self, progress: JobProgress) -> None:
        if self._bar is None:
            self._bar = tqdm(total=None, unit="img", file=self._stream, dynamic_ncols=True)
        if progress.plan.finished and self._bar.total is None:
            self._bar.total = progress.plan.new
        self._bar.update(progress.images - self._bar.n)
        self._bar.set_postfix(faces=progress.faces, errors=progress.errors, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class LogProgress:
    """A plain line per shard, for logs and CI."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream

    def __call__(self, progress: JobProgress) -> None:
        plan = progress.plan
        total = str(plan.new) if plan.finished else f"{plan.new}+"
        print(
            f"shard {progress.shards}: {progress.images}/{total} images, {progress.faces} faces, "
            f"{progress.errors} errors, {progress.processing_images_per_second:.1f} img/s",
            file=self._stream,
            flush=True,
        )

    def close(self) -> None:
        pass


def progress_for(stream: TextIO = sys.stderr) -> TerminalProgress | LogProgress:
    return TerminalProgress(stream) if stream.isatty() else LogProgress(stream)
