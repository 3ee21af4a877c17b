"""Faults that land where a test wants them: an actor class whose first process stops in the middle of a
shard and stays there until it is killed (or its node removed)."""

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
