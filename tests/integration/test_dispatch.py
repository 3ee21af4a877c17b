"""The driver's dispatch (workers/job/dispatch.py) with stand-in actors on the session's Ray, no model: an
actor lost for good has its shards redone by another, a shard that hangs every actor it meets fails
instead of hanging the job, and a job whose every actor is gone ends with what is left failed."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import pytest
import ray
import ray.cloudpickle

from facesweep.workers.config import JobConfig, Tuning
from facesweep.workers.job.dispatch import Dispatcher
from facesweep.workers.job.messages import ActorInfo, ShardReport
from facesweep.workers.job.progress import JobProgress
from facesweep.workers.job.shards import Shard

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import `tests`
SHARDS = 30


class StandIn:
    """Reports each shard after 20 ms, as its process; hangs on `hang_on` (every process of it does)."""

    def __init__(self, hang_on: int | None = None) -> None:
        self.hang_on = hang_on
        self.info = ActorInfo("stand-in", ray.get_runtime_context().get_node_id(), f"x/{os.getpid()}", "0")

    def ready(self) -> ActorInfo:
        return self.info

    def process(self, shards: list[Shard]) -> list[ShardReport]:
        reports = []
        for shard in shards:
            time.sleep(3600 if shard.index == self.hang_on else 0.02)
            reports.append(ShardReport(shard.index, self.info, 1, 0, 0, {}, {}, 0.0, {}, {}))
        return reports


class NoCompactions:
    def __init__(self) -> None:
        self.added: list[int] = []

    def add(self, index: int, images: int) -> None:
        self.added.append(index)

    def ready(self, final: bool, running: int) -> list[tuple[ray.ObjectRef, str]]:
        return []


def stand_ins(count: int, hang_on: int | None = None) -> list[ray.actor.ActorHandle]:
    actor = ray.remote(StandIn).options(num_cpus=0.5, max_concurrency=2, max_restarts=1, max_task_retries=-1)
    actors = [actor.remote(hang_on) for _ in range(count)]
    ray.get([a.ready.remote() for a in actors])
    return actors


def run(
    actors: list[ray.actor.ActorHandle],
    on_progress: Callable[[JobProgress], None] = lambda _: None,
    **tuning: float,
) -> tuple[JobProgress, list[int]]:
    """Dispatches SHARDS shards to `actors` (killed at the end); the progress and the shards reported."""
    progress, compactor = JobProgress(), NoCompactions()
    config = JobConfig("in", "out", tuning=Tuning(**tuning), startup_timeout=30.0)
    started = time.monotonic()
    plan = [Shard(i, (f"/in/{i:03d}.jpg",), (None,), (None,)) for i in range(SHARDS)]
    try:
        Dispatcher(actors, iter(plan), compactor, progress, on_progress, config).run()
    finally:
        for actor in actors:
            ray.kill(actor)
    print(
        f"dispatched {len(plan)} shards in {time.monotonic() - started:.1f} s: {dict(progress.redone_shards)}"
    )
    return progress, compactor.added


@pytest.mark.timeout(60)
def test_an_actor_lost_for_good_has_its_shards_redone_by_another(ray_local: None) -> None:
    actors = stand_ins(2)
    lost: list[bool] = []

    def lose_the_first(progress: JobProgress) -> None:
        if not lost:
            ray.kill(actors[0], no_restart=True)  # Ray restarts it no more: its calls fail, ActorDiedError
            lost.append(True)

    progress, added = run(actors, lose_the_first)
    assert progress.failed_shards == []
    assert sorted(added) == list(range(SHARDS))  # each shard reported once
    assert progress.redone_shards["lost_actor"] >= 1


@pytest.mark.timeout(60)
def test_a_shard_that_hangs_every_actor_fails_and_the_job_ends(ray_local: None) -> None:
    """Shard 5 hangs whichever actor takes it: stuck once, redone by the other actor, stuck again, failed;
    every other shard is done once."""
    progress, added = run(stand_ins(2, hang_on=5), stuck_seconds=1.0, stuck_factor=5.0)
    assert progress.failed_shards == ["shard 5: its call was stuck again"]
    assert sorted(added) == [i for i in range(SHARDS) if i != 5]
    assert progress.redone_shards["stuck"] >= 1


@pytest.mark.timeout(60)
def test_when_every_actor_is_gone_the_rest_fails(ray_local: None) -> None:
    """The only actor is lost for good holding its first two calls: they, and the plan's rest, fail."""
    [actor] = stand_ins(1)
    ray.kill(actor, no_restart=True)
    progress, added = run([actor])
    assert added == []
    assert sorted(progress.failed_shards) == [
        "shard 0: every actor is gone",
        "shard 1: every actor is gone",
        "shard 2 and the rest: every actor is gone",
    ]
