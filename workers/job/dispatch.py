"""Keeping the actors fed, in one loop over `ray.wait`: each actor's calls, the committed shards'
compactions, and the shards to redo when a call is stuck, an actor drains or one is lost for good.

A call is stuck once it has run `Tuning.stuck_seconds` and `stuck_factor` times as long as its shards
usually take (the median time per shard of the latest finished calls of their kind: objects, or a
container's pieces), while other calls have come back since it started; with nothing to compare it with,
once it has run `stuck_factor` times `stuck_seconds`. (A store that is down slows every call alike: its
requests time out and fail their shards instead.) A stuck call's actor (a process stopped or hung in a
request or in inference answers nothing) is killed and restarted by Ray, its calls cancelled so that Ray
does not retry them, and their shards are redone, by the other actors first. An actor draining on SIGTERM
(workers/job/calls.py) returns the shards it did not start, which go to the other actors; Ray restarts it
once it has exited. Either actor takes calls again once it answers `ready`. A shard redone after a stuck
call or a lost actor that is lost that way again fails (a re-run retries it): a shard that hangs every
actor it meets fails the job instead of hanging it.

Exactly once: a shard is reported by the one call the driver still waits for, and its file has one name
(`_shards/shard-N.parquet`), written atomically, so a redone shard writes the same rows over any copy the
killed process committed; a copy it wrote after its compaction is named in the part file's footer, which
the next `Ledger.read` deletes.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

import ray

from facesweep.workers.config import JobConfig
from facesweep.workers.errors import line_of
from facesweep.workers.job.messages import ShardReport
from facesweep.workers.job.progress import JobProgress
from facesweep.workers.job.shards import Shard
from facesweep.workers.output.compaction import CompactionReport
from facesweep.workers.wording import plural

SHARDS_PER_CALL = 16
"""Shards per actor call once every actor is busy (measured: a Ray call costs the driver ~0.8 ms of CPU)."""
RAMP_CALLS = 2
"""Calls of one shard each actor slot gets first."""
REDOS = 1
"""Times a shard is redone after a stuck call or a lost actor; lost once more, it fails."""
SAMPLES = 256
"""Finished calls of each kind whose time per shard gives the usual time (their median)."""
LOSSES = {"stuck": "its call was stuck", "lost_actor": "lost with its actor"}
CHECK_SECONDS = 10.0
"""Most seconds between two looks for stuck calls (at most a quarter of `stuck_seconds`)."""
log = logging.getLogger("facesweep")


class Compactions(Protocol):
    """The driver's compactor: committed shards in, compaction tasks out."""

    def add(self, index: int, images: int) -> None: ...

    def ready(self, final: bool, running: int) -> list[tuple[ray.ObjectRef, str]]: ...


@dataclass(eq=False)
class _Actor:
    handle: ray.actor.ActorHandle
    number: int
    process: str = ""  # "<Ray actor id>/<pid>", as its last report says
    calls: int = 0  # in flight
    restarting: float | None = None  # since when it is being restarted (killed or draining): no calls
    gone: bool = False  # lost for good, or not restarted in time: never a call again

    @property
    def name(self) -> str:
        return f"actor {self.number}" + (f" ({self.process})" if self.process else "")


@dataclass(eq=False)
class _Call:
    actor: _Actor
    shards: list[Shard]
    started: float = field(default_factory=time.monotonic)


class Dispatcher:
    """Keeps every actor fed with up to `Tuning.shards_at_once` calls until the plan runs out, redoes
    what a stuck call, a draining actor or a lost one did not do, and compacts committed shards as they
    add up; `run` returns when every shard and compaction has ended.

    A call carries one shard until every actor has had a few, then SHARDS_PER_CALL: a big job costs the
    driver one Ray call per SHARDS_PER_CALL shards, a small one still spreads over every actor."""

    def __init__(
        self,
        actors: list[ray.actor.ActorHandle],
        shards: Iterator[Shard],
        compactor: Compactions,
        progress: JobProgress,
        on_progress: Callable[[JobProgress], None],
        config: JobConfig,
    ) -> None:
        self.actors = [_Actor(handle, i + 1) for i, handle in enumerate(actors)]
        self.plan, self.compactor, self.progress, self.on_progress = shards, compactor, progress, on_progress
        self.tuning, self.startup_timeout = config.tuning, config.startup_timeout
        self.concurrency = config.tuning.shards_at_once
        self.single = RAMP_CALLS * len(actors) * self.concurrency
        self.dispatched = 0
        self.running: dict[ray.ObjectRef, _Call] = {}
        self.compactions: dict[ray.ObjectRef, str] = {}
        self.restarts: dict[ray.ObjectRef, _Actor] = {}  # each restarting actor's `ready` call
        self.redo: deque[tuple[Shard, _Actor | None]] = deque()  # and the actor that gave it up
        self.losses: Counter[int] = Counter()  # by shard: stuck calls and lost actors
        self.samples: dict[str, deque[float]] = {}  # seconds per shard of finished calls, by kind
        self.last_return = 0.0  # when a call last returned its reports
        self.check_every = min(CHECK_SECONDS, config.tuning.stuck_seconds / 4)

    def run(self) -> None:
        for actor in self.actors:
            self._fill(actor)
        self._compact()
        last_check = time.monotonic()
        while self.running or self.compactions or (self.restarts and self._work_left()):
            waiting = [*self.running, *self.compactions, *self.restarts]
            for ref in ray.wait(waiting, num_returns=1, timeout=self.check_every)[0]:
                if ref in self.compactions:
                    self._compacted(ref)
                elif ref in self.restarts:
                    self._restarted(ref)
                else:
                    self._returned(ref)
            if time.monotonic() - last_check >= self.check_every:
                last_check = time.monotonic()
                self._check(last_check)
            if not self.actors and self._work_left():
                self._give_up()
            self._compact()

    def _take(self, actor: _Actor) -> list[Shard]:
        """The next call's shards for `actor`: shards to redo first (not those it gave up while another
        actor can take them), then the plan's."""
        size = 1 if self.dispatched < self.single else SHARDS_PER_CALL
        batch: list[Shard] = []
        if self.redo:
            others = any(a is not actor and a.restarting is None for a in self.actors)
            kept: list[tuple[Shard, _Actor | None]] = []
            while self.redo and len(batch) < size:
                shard, left = self.redo.popleft()
                if left is actor and others:
                    kept.append((shard, left))
                else:
                    batch.append(shard)
            self.redo.extendleft(reversed(kept))
        batch += islice(self.plan, size - len(batch))
        return batch

    def _fill(self, actor: _Actor) -> None:
        while (
            not actor.gone
            and actor.restarting is None
            and actor.calls < self.concurrency
            and (batch := self._take(actor))
        ):
            self.running[actor.handle.process.remote(batch)] = _Call(actor, batch)
            actor.calls += 1
            self.dispatched += len(batch)

    def _work_left(self) -> bool:
        if not self.redo and (shard := next(self.plan, None)) is not None:
            self.redo.append((shard, None))
        return bool(self.redo)

    def _compact(self) -> None:
        final = not self.running and not (self.restarts and self._work_left())
        self.compactions.update(self.compactor.ready(final, len(self.compactions)))

    def _compacted(self, ref: ray.ObjectRef) -> None:
        name = self.compactions.pop(ref)
        try:
            report: CompactionReport = ray.get(ref)
        except ray.exceptions.RayError as error:
            self.progress.failed_shards.append(f"{name}: {line_of(error, last=True)}")
            return
        self.progress.files += 1
        self.progress.compacted_shards += report.shards
        self.progress.other_requests.update(report.requests)

    def _returned(self, ref: ray.ObjectRef) -> None:
        call = self.running.pop(ref)
        actor = call.actor
        actor.calls -= 1
        try:
            reports: list[ShardReport] = ray.get(ref)
        except ray.exceptions.RayActorError as error:  # dead for good: Ray ran out of restarts
            self._retire(actor, line_of(error, last=True))
            self._redo(call.shards, actor, "lost_actor")
        except ray.exceptions.RayError as error:  # the call failed (a store that stays down)
            reason = line_of(error, last=True)
            self.progress.failed_shards += [f"shard {shard.index}: {reason}" for shard in call.shards]
            self._fill(actor)
        else:
            self._reported(call, reports)
        self.on_progress(self.progress)

    def _reported(self, call: _Call, reports: list[ShardReport]) -> None:
        actor, now = call.actor, time.monotonic()
        self.last_return = now
        for report in reports:
            self.progress.add(report)
            self.compactor.add(report.index, report.images)
            actor.process = report.actor.process
        if len(reports) == len(call.shards):
            kinds = {shard.kind for shard in call.shards}
            if len(kinds) == 1:
                samples = self.samples.setdefault(kinds.pop(), deque(maxlen=SAMPLES))
                samples.append((now - call.started) / len(call.shards))
            self._fill(actor)
            return
        done = {report.index for report in reports}
        back = [shard for shard in call.shards if shard.index not in done]
        log.info("%s is draining: %s given back", actor.name, plural(len(back), "shard"))
        self.progress.redone_shards["given_back"] += len(back)
        self.redo.extend((shard, actor) for shard in back)
        self._restart(actor)
        for other in self.actors:
            self._fill(other)

    def _check(self, now: float) -> None:
        """Abandons the stuck calls' actors, retires those not restarted within the start-up timeout."""
        usual = {kind: statistics.median(samples) for kind, samples in self.samples.items()}
        stuck = {
            call.actor: now - call.started for call in self.running.values() if self._stuck(call, now, usual)
        }
        for actor, seconds in stuck.items():
            self._abandon(actor, seconds)
        for ref, actor in list(self.restarts.items()):
            if now - (actor.restarting or now) > self.startup_timeout:
                del self.restarts[ref]
                self._retire(actor, f"not restarted after --startup-timeout {self.startup_timeout:g} s")

    def _stuck(self, call: _Call, now: float, usual: dict[str, float]) -> bool:
        elapsed = now - call.started
        if elapsed <= self.tuning.stuck_seconds:
            return False
        kinds = [shard.kind for shard in call.shards]
        if self.last_return <= call.started or not all(kind in usual for kind in kinds):
            return elapsed > self.tuning.stuck_factor * self.tuning.stuck_seconds  # no peer to go by
        return elapsed > self.tuning.stuck_factor * sum(usual[kind] for kind in kinds)

    def _abandon(self, actor: _Actor, seconds: float) -> None:
        """Kills a stuck call's actor (Ray restarts it) and redoes every call it held, cancelled first so
        that Ray does not retry them on the restarted actor."""
        calls = [ref for ref, call in self.running.items() if call.actor is actor]
        shards = [shard for ref in calls for shard in self.running[ref].shards]
        log.warning(
            "%s: a call stuck for %.0f s: the actor is restarted, its %s redone elsewhere",
            actor.name,
            seconds,
            plural(len(shards), "shard"),
        )
        for ref in calls:
            ray.cancel(ref)
            del self.running[ref]
        actor.calls = 0
        ray.kill(actor.handle, no_restart=False)
        self._restart(actor)
        self._redo(shards, actor, "stuck")

    def _restart(self, actor: _Actor) -> None:
        """No calls to `actor` until it answers `ready` (Ray runs no call on a process that got SIGTERM:
        the answer comes from the restarted one)."""
        if actor.restarting is None:
            actor.restarting = time.monotonic()
            self.restarts[actor.handle.ready.remote()] = actor

    def _restarted(self, ref: ray.ObjectRef) -> None:
        actor = self.restarts.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayError as error:
            self._retire(actor, line_of(error, last=True))
            return
        actor.restarting = None
        self._fill(actor)

    def _redo(self, shards: Iterable[Shard], left: _Actor, why: str) -> None:
        """Shards lost with a stuck call or a dead actor (`why`: "stuck", "lost_actor"), to redo, by the
        other actors first; a shard lost REDOS times already fails."""
        for shard in shards:
            self.losses[shard.index] += 1
            if self.losses[shard.index] > REDOS:
                self.progress.failed_shards.append(f"shard {shard.index}: {LOSSES[why]} again")
            else:
                self.redo.append((shard, left))
                self.progress.redone_shards[why] += 1
        for actor in self.actors:
            self._fill(actor)

    def _retire(self, actor: _Actor, reason: str) -> None:
        if not actor.gone:
            log.warning("%s is gone: %s", actor.name, reason)
            actor.gone = True
            self.actors.remove(actor)

    def _give_up(self) -> None:
        """Every actor is gone: what is left fails (a re-run does it)."""
        self.progress.failed_shards += [f"shard {shard.index}: every actor is gone" for shard, _ in self.redo]
        self.redo.clear()
        if (shard := next(self.plan, None)) is not None:
            self.progress.failed_shards.append(f"shard {shard.index} and the rest: every actor is gone")
        self.plan = iter(())
