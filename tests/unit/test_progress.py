"""The run's progress: the plan read ahead of the actors, and a bar whose rate is the job's own."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator

import pytest

from facesweep.progress import LogProgress, TerminalProgress
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


def test_read_ahead_plans_up_to_its_limit_and_no_further() -> None:
    """After the first shard is taken the plan fills the queue (`limit`) and holds one more; from then on
    it never asks for a shard more than `limit` + 1 beyond those the consumer has taken."""
    limit, taken, produced, beyond = 10, [0], [], []
    planned = threading.Condition()

    def plan() -> Iterator[Shard]:
        for shard in shards(100, produced):
            # the queue's `limit`, one in the planning thread's hand and one on its way to the consumer
            if shard.index > taken[0] + limit + 1:
                beyond.append((shard.index, taken[0]))
            with planned:
                planned.notify_all()
            yield shard

    ahead = read_ahead(plan(), limit)
    assert next(ahead).index == 0
    taken[0] = 1
    with planned:
        assert planned.wait_for(lambda: len(produced) >= limit + 2, timeout=30), produced
    rest = []
    for shard in ahead:
        rest.append(shard.index)
        taken[0] += 1
    assert rest == list(range(1, 100)) and not beyond, beyond


def test_read_ahead_raises_the_plans_error_at_the_consumer_after_what_came_before() -> None:
    ahead = read_ahead(shards(5, [], fail_at=3), limit=10)
    assert [next(ahead).index for _ in range(3)] == [0, 1, 2]
    with pytest.raises(PlanFailed, match="listing failed"):
        next(ahead)


def test_closing_read_ahead_stops_its_thread() -> None:
    before = set(threading.enumerate())
    ahead = read_ahead(shards(10**6, []), limit=4)
    next(ahead)
    [thread] = [t for t in threading.enumerate() if t.name == "facesweep-plan" and t not in before]
    ahead.close()
    thread.join(timeout=30)
    assert not thread.is_alive()


def frames(stream: io.StringIO) -> list[str]:
    return [frame.strip() for frame in stream.getvalue().split("\r") if frame.strip()]


def test_the_bar_shows_the_jobs_rate_and_ends_on_the_summarys() -> None:
    stream = io.StringIO()
    bar = TerminalProgress(stream)
    started = time.monotonic() - 12.0
    progress = JobProgress(started=started, startup_seconds=4.0)
    progress.images, progress.faces = 64, 9  # the first shard, in the bar's first instant
    progress.plan.new, progress.plan.finished = 640, True
    before = time.monotonic()
    bar(progress)
    after = time.monotonic()
    first = frames(stream)[-1]
    # 64 images in the 8 s (and the bar's call) since the actors were ready, not 64 in a millisecond
    slowest, fastest = 64 / (after - started - 4.0), 64 / (before - started - 4.0)
    rate = float(re.search(r"([\d.]+) img/s", first).group(1))
    assert round(slowest, 1) <= rate <= round(fastest, 1), first
    assert "64/640" in first and "left" in first and "faces 9" in first
    progress.images, progress.last_shard_at, progress.finished = 640, started + 20.0, started + 23.0
    bar.close(progress)
    last = frames(stream)[-1]
    assert "40.0 img/s" in last and "left" not in last  # 640 images from start-up to the last shard
    assert "640/640" in last


def test_log_lines_count_a_containers_images_without_a_made_up_total() -> None:
    stream = io.StringIO()
    progress = JobProgress(started=time.monotonic() - 2.0)
    progress.plan.new, progress.plan.pieces, progress.plan.shards = 1, 1, 1  # one tar: its images unknown
    progress.images, progress.shards = 10, 1
    LogProgress(stream)(progress)
    assert stream.getvalue().startswith("shard 1 of 1+: 10 images, 0 faces, 0 errors, ")  # the plan goes on
    progress.plan.finished = True
    LogProgress(stream)(progress)
    assert stream.getvalue().splitlines()[-1].startswith("shard 1 of 1: 10 images, ")
