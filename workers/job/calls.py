"""The actor's side of the driver's calls, whatever the actor computes: who it is, its shard reports,
shards a restarted actor finds already committed, and the drain on SIGTERM. Neither OpenCV nor OpenVINO:
stand-ins (the scale benchmark's) run on it alone."""

from __future__ import annotations

import os
import signal
import threading
import time
from importlib.metadata import version
from types import FrameType

import pyarrow.parquet as pq
import ray

from facesweep.workers.errors import take_tracebacks
from facesweep.workers.job.messages import ActorInfo, ShardReport
from facesweep.workers.job.shards import Shard
from facesweep.workers.output.writer import ShardCounts, read_footer
from facesweep.workers.storage import RangedFile, join, request_counts, storage_for, trust_the_endpoints


class ShardCalls:
    """An actor's calls: each carries a few shards (fewer Ray calls per image for the driver), done one
    after another. A call Ray retries after the actor died is retried whole, so a restarted actor first
    checks each shard's file and reports a committed one from its footer instead of redoing it."""

    def start_calls(self, output: str, format_name: str) -> None:
        """Who this actor is (and whether Ray restarted it), where it writes; call once it is ready."""
        trust_the_endpoints()
        context = ray.get_runtime_context()
        self.output = output
        process = f"{context.get_actor_id()}/{os.getpid()}"
        self.info = ActorInfo(format_name, context.get_node_id(), process, version("facesweep"))
        self.restarted = bool(context.was_current_actor_reconstructed)
        self._ready_cpu = time.process_time()
        self.draining = False
        handler = signal.getsignal(signal.SIGTERM)  # Ray's own; the constructor runs in the main thread
        if threading.current_thread() is threading.main_thread() and callable(handler):
            self._on_sigterm = handler
            signal.signal(signal.SIGTERM, self._drain)

    def _drain(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM (a spot node reclaimed, a pod evicted): each call in progress ends after its current
        shard, returning the reports of the shards it did (the driver redoes the rest elsewhere); then
        Ray's own handler: the process takes no new call, exits once those have returned, and Ray
        restarts the actor where there is room."""
        self.draining = True
        self._on_sigterm(signum, frame)

    def report(
        self,
        shard: Shard,
        counts: ShardCounts,
        kinds: dict[str, int],
        stages: dict[str, float],
        anonymized: int = 0,
    ) -> ShardReport:
        """The driver's report of a shard just committed (or found committed)."""
        cpu = time.process_time() - self._ready_cpu
        return ShardReport(
            shard.index,
            self.info,
            counts.images,
            counts.faces,
            counts.errors,
            kinds,
            stages,
            cpu,
            request_counts(),
            take_tracebacks(),
            anonymized,
            counts.crops,
        )

    def process(self, shards: list[Shard]) -> list[ShardReport]:
        """The reports of `shards`, in order; fewer when the actor drains (the rest are given back)."""
        reports = []
        for shard in shards:
            if self.draining:
                break
            reports.append(self._committed(shard) or self.process_one(shard))
        return reports

    def process_one(self, shard: Shard) -> ShardReport:
        raise NotImplementedError

    def _committed(self, shard: Shard) -> ShardReport | None:
        uri = join(self.output, shard.file_name)
        if not self.restarted or not storage_for(uri).exists(uri):
            return None
        return self.report(shard, read_footer(pq.ParquetFile(RangedFile(uri))).counts, {}, {})
