"""Faults that land where a test wants them: an actor class whose first process stops in the middle of a
shard and stays there until it is killed (or its node removed), and one that says which process did which
shard and when it took a call of several (to be stopped or drained in its middle)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import ray.cloudpickle

from facesweep.workers.job.actor import ShardWorker
from facesweep.workers.job.messages import ShardReport
from facesweep.workers.job.shards import Shard

HELD_SHARD = 1
HOLD_SECONDS = 240.0
"""How long the held shard waits for its kill; then it fails, and so does the test."""

# Ray's workers run elsewhere than the checkout and cannot import `tests`: this module travels by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def held_marker(output: str | Path) -> Path:
    """Where a HeldWorker says it holds the shard: `<OUTPUT>.held`, beside OUTPUT (a local one)."""
    return Path(f"{output}.held")


class HeldWorker(ShardWorker):
    """A ShardWorker whose first process, once it has taken shard HELD_SHARD, writes `held_marker(OUTPUT)`
    (`<pid> <node id>`) and holds the shard, uncommitted, until the process dies; a restarted process
    (Ray's reconstruction of the actor) processes it as any other."""

    def process_one(self, shard: Shard) -> ShardReport:
        if shard.index == HELD_SHARD and not self.restarted:
            marker = held_marker(self.output)
            partial = marker.with_name(marker.name + ".partial")
            partial.write_text(f"{os.getpid()} {self.info.node_id}")
            partial.replace(marker)  # whole, or not there
            threading.Event().wait(HOLD_SECONDS)
            raise RuntimeError(f"shard {shard.index} held for {HOLD_SECONDS:g} s and never killed")
        return super().process_one(shard)


def wait_until_held(output: str | Path, timeout: float = 240.0) -> tuple[int, str]:
    """The pid and Ray node id of the process holding HELD_SHARD of OUTPUT, once it holds it."""
    marker = held_marker(output)
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert time.monotonic() < deadline, f"no actor took shard {HELD_SHARD} within {timeout:g} s"
        time.sleep(0.05)
    pid, node_id = marker.read_text().split()
    return int(pid), node_id


PACE_SECONDS = 0.2
"""A TracedWorker's least time per shard: calls last long enough to be signalled in their middle."""


def traces(output: str | Path) -> Path:
    """Where a TracedWorker says what it does: `<OUTPUT>.trace/`, beside OUTPUT (a local one)."""
    return Path(f"{output}.trace")


class TracedWorker(ShardWorker):
    """A ShardWorker that takes at least PACE_SECONDS a shard, and says in `traces(OUTPUT)` which process
    did which shard (`shard-<index>.<pid>`, once committed) and which took calls of several shards
    (`call-<pid>.<first index>`, holding the call's shard indices, written as the call starts)."""

    def process(self, shards: list[Shard]) -> list[ShardReport]:
        folder = traces(self.output)
        folder.mkdir(exist_ok=True)
        if len(shards) > 1:
            name = f"call-{os.getpid()}.{shards[0].index}"
            (folder / f"{name}.partial").write_text(" ".join(str(shard.index) for shard in shards))
            (folder / f"{name}.partial").replace(folder / name)  # whole, or not there
        return super().process(shards)

    def process_one(self, shard: Shard) -> ShardReport:
        time.sleep(PACE_SECONDS)
        report = super().process_one(shard)
        (traces(self.output) / f"shard-{shard.index}.{os.getpid()}").touch()
        return report


def traced_shards(output: str | Path) -> list[tuple[int, int]]:
    """(shard index, pid) of every shard a TracedWorker committed, a shard done twice twice."""
    names = (path.name.removeprefix("shard-") for path in traces(output).glob("shard-*"))
    return sorted((int(index), int(pid)) for index, _, pid in (name.partition(".") for name in names))


def traced_calls(output: str | Path) -> dict[int, list[int]]:
    """The shards of the calls of several shards a TracedWorker took, by pid (of all its calls)."""
    calls: dict[int, list[int]] = {}
    for path in traces(output).glob("call-*[0-9]"):
        pid = int(path.name.removeprefix("call-").partition(".")[0])
        calls.setdefault(pid, []).extend(int(index) for index in path.read_text().split())
    return calls


def wait_for_a_call_of_several_shards(output: str | Path, timeout: float = 120.0) -> int:
    """The pid of a process that has started a call of several shards."""
    deadline = time.monotonic() + timeout
    while not (calls := traced_calls(output)):
        assert time.monotonic() < deadline, f"no call of several shards within {timeout:g} s"
        time.sleep(0.02)
    return min(calls)
