"""The run's progress: the plan read ahead of the actors, and a bar whose rate is the job's own."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator

import pytest

from facesweep.progress import TerminalProgress
from facesweep.workers.job.progress import JobProgress
from facesweep.workers.job.shards import Shard, read_ahead


class PlanFailed(RuntimeError):
    """What a listing's storage error would be."""


def shards(count: int, produced: list[int], fail_at: int | None = None) -> Iterator[Shard]:
    for index in range(count):
        if index == fail_at:
            raise PlanFailed("listing failed")
        produced.append(index)
        yield Shard(index, (f"s3://b/{index}.jpg",), (None,), (None,))


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_read_ahead_plans_up_to_its_limit_before_the_first_shard_is_taken() -> None:
    produced: list[int] = []
    ahead = read_ahead(shards(100, produced), limit=10)
    assert next(ahead).index == 0
    wait_for(lambda: len(produced) >= 12)
    time.sleep(0.2)  # had it no bound, the thread would run on to 100
    assert 10 <= len(produced) <= 12
    assert [s.index for s in ahead] == list(range(1, 100))


def test_read_ahead_raises_the_plans_error_at_the_consumer_after_what_came_before() -> None:
    ahead = read_ahead(shards(5, [], fail_at=3), limit=10)
    assert [next(ahead).index for _ in range(3)] == [0, 1, 2]
    with pytest.raises(PlanFailed, match="listing failed"):
        next(ahead)


def test_closing_read_ahead_stops_its_thread() -> None:
    ahead = read_ahead(shards(10**6, []), limit=4)
    next(ahead)
    ahead.close()
    wait_for(lambda: not any(t.name == "facesweep-plan" for t in threading.enumerate()))
    assert not any(t.name == "facesweep-plan" for t in threading.enumerate())


def frames(stream: io.StringIO) -> list[str]:
    return [frame.strip() for frame in stream.getvalue().split("\r") if frame.strip()]


def test_the_bar_shows_the_jobs_rate_and_ends_on_the_summarys() -> None:
    stream = io.StringIO()
    bar = TerminalProgress(stream)
    progress = JobProgress(started=time.monotonic() - 12.0, startup_seconds=4.0)
    progress.images, progress.faces = 64, 9  # the first shard, in the bar's first instant
    progress.plan.new, progress.plan.finished = 640, True
    bar(progress)
    first = frames(stream)[-1]
    rate = float(re.search(r"([\d.]+) img/s", first).group(1))
    assert 7.5 <= rate <= 8.5, first  # 64 images in ~8 s after start-up, not 64 in a millisecond
    assert "64/640" in first and "left" in first and "faces 9" in first
    progress.images, progress.finished = 640, time.monotonic()
    bar.close(progress)
    last = frames(stream)[-1]
    assert f"{progress.processing_images_per_second:.1f} img/s" in last and "left" not in last
    assert "640/640" in last
