"""The Ray actor's body: for each shard, fetch -> decode -> infer -> decode faces -> one Parquet file.

Wiring only: storage fetches, `images` decodes, `Detector` runs the model and decodes its outputs,
`sink` writes. Fetching and image decoding run in the actor's thread pool (boto3 and OpenCV release the
GIL) while the model works on earlier images, so the model never waits for the network. The actor runs
CONCURRENT_SHARDS shards at once (a threaded Ray actor): the next shard is fetched and decoded while the
last images of the previous one are inferred and its Parquet file written, so the model never drains.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

import cv2
import pyarrow.parquet as pq
import ray

from workers.detector import Detector, DetectorSettings, Prepared, Timings
from workers.errors import ErrorKind, ImageError, ImageFailure, internal_failure, take_tracebacks
from workers.faces import Faces
from workers.images import decode_reduced
from workers.metrics import error_kinds, shard_metrics
from workers.shards import Shard
from workers.sink import ImageResult, ShardCounts, read_footer, results_table, write_parquet
from workers.storage import ObjectError, RangedFile, join, request_counts, storage_for

CONCURRENT_SHARDS = 2
"""Shards one actor works on at once (its Ray `max_concurrency`; the driver queues as many per actor)."""


@dataclass(frozen=True)
class ActorInfo:
    """A started actor: its model's output format, where Ray placed it, and which process it is (a
    restarted actor is a new process of the same actor)."""

    format: str
    node_id: str
    process: str  # "<Ray actor id>/<pid>"


@dataclass(frozen=True)
class ShardReport:
    """What one shard produced; the driver sums these."""

    index: int
    actor: ActorInfo  # who processed it, and on which node
    images: int
    faces: int
    errors: int
    error_kinds: dict[str, int]  # metrics.error_kinds
    stage_seconds: dict[str, float]
    actor_cpu_seconds: float  # CPU time of the actor's process (all its threads) since it was ready
    requests: dict[str, int]  # storage requests of the actor's process so far, by kind
    tracebacks: dict[str, str]  # the first of each stage's internal errors since the last report


@dataclass(frozen=True)
class _Fetched:
    position: int
    width: int | None = None
    height: int | None = None
    prepared: Prepared | None = None
    failure: ImageFailure | None = None


class ShardCalls:
    """An actor's calls: each carries a few shards (fewer Ray calls per image for the driver), done one
    after another. A call Ray retries after the actor died is retried whole, so a restarted actor first
    checks each shard's file and reports a committed one from its footer instead of redoing it."""

    def start_calls(self, output: str, format_name: str) -> None:
        """Who this actor is (and whether Ray restarted it), where it writes; call once it is ready."""
        context = ray.get_runtime_context()
        self.output = output
        self.info = ActorInfo(format_name, context.get_node_id(), f"{context.get_actor_id()}/{os.getpid()}")
        self.restarted = bool(context.was_current_actor_reconstructed)
        self._ready_cpu = time.process_time()

    def report(
        self, shard: Shard, counts: ShardCounts, kinds: dict[str, int], stages: dict[str, float]
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
        )

    def process(self, shards: list[Shard]) -> list[ShardReport]:
        return [self._committed(shard) or self.process_one(shard) for shard in shards]

    def process_one(self, shard: Shard) -> ShardReport:
        raise NotImplementedError

    def _committed(self, shard: Shard) -> ShardReport | None:
        uri = join(self.output, shard.file_name)
        if not self.restarted or not storage_for(uri).exists(uri):
            return None
        return self.report(shard, read_footer(pq.ParquetFile(RangedFile(uri))).counts, {}, {})


class ShardWorker(ShardCalls):
    """Holds one compiled detector; processes shards into OUTPUT, CONCURRENT_SHARDS calls at a time
    (thread-safe: each shard has its own requests and timings). Ray wraps it as a threaded actor."""

    def __init__(self, settings: DetectorSettings, output: str, fetchers: int = 16) -> None:
        cv2.setNumThreads(1)  # the model owns the actor's cores; many images decode in parallel instead
        self.detector = Detector(settings)
        self.pool = ThreadPoolExecutor(fetchers, thread_name_prefix="fetch")
        self.in_flight = max(2 * fetchers, 8)  # per shard
        self.start_calls(output, self.detector.format.name)

    def ready(self) -> ActorInfo:
        """Answers once the model is compiled (the constructor has run)."""
        return self.info

    def process_one(self, shard: Shard) -> ShardReport:
        timings = Timings()
        fetched: dict[int, _Fetched] = {}

        def ready() -> Iterator[tuple[int, Prepared]]:
            for item in self._fetch_all(shard.uris, timings):
                fetched[item.position] = item
                if item.prepared is not None:
                    yield item.position, item.prepared

        faces = self.detector.detect(ready(), timings)
        results = [
            replace(self._result(uri, fetched[i], faces.get(i)), etag=shard.etags[i], size=shard.sizes[i])
            for i, uri in enumerate(shard.uris)
        ]
        started = time.thread_time()
        table = results_table(results, self.detector.settings.model)
        counts = write_parquet(table, storage_for(self.output), join(self.output, shard.file_name))
        timings.add("write", time.thread_time() - started)
        kinds = error_kinds(table["error_kind"])
        shard_metrics().record(counts.images, counts.faces, kinds, timings.seconds)
        return self.report(shard, counts, kinds, timings.seconds)

    @staticmethod
    def _result(uri: str, item: _Fetched, faces: Faces | ImageFailure | None) -> ImageResult:
        failure = item.failure or (faces if isinstance(faces, ImageFailure) else None)
        if failure is not None:
            return ImageResult(uri, item.width, item.height, error=failure.message, error_kind=failure.kind)
        return ImageResult(uri, item.width, item.height, faces=faces)

    def _fetch_all(self, uris: tuple[str, ...], timings: Timings) -> Iterator[_Fetched]:
        """Fetched and prepared images in completion order, at most `in_flight` held at once."""
        pending: set[Future[_Fetched]] = set()
        queue = iter(enumerate(uris))
        try:
            for position, uri in queue:
                pending.add(self.pool.submit(self._fetch_one, position, uri, timings))
                if len(pending) >= self.in_flight:
                    break
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
                    next_item = next(queue, None)
                    if next_item is not None:
                        pending.add(self.pool.submit(self._fetch_one, *next_item, timings))
        finally:  # a failing shard (a store that stays down) leaves no work behind in the shared pool
            for future in pending:
                future.cancel()

    def _fetch_one(self, position: int, uri: str, timings: Timings) -> _Fetched:
        clock = time.thread_time()
        try:
            data = storage_for(uri).get(uri)
        except ObjectError as error:  # this object is missing or forbidden; a failing store fails the shard
            return _Fetched(position, failure=ImageFailure(ErrorKind.FETCH, f"fetch failed: {error}"))
        clock = _lap(timings, "fetch", clock)
        # Whatever this image's bytes do to the decoder or the preprocessing, it is this image's error
        # row: an exception escaping here would fail the whole shard, and its neighbours with it.
        try:
            image, (width, height) = decode_reduced(data, self.detector.reduction)
        except ImageError as error:
            return _Fetched(position, failure=error.failure)
        except Exception as error:
            return _Fetched(position, failure=internal_failure("image decoding", error))
        clock = _lap(timings, "decode", clock)
        try:
            prepared = self.detector.prepare(image, (width, height))
        except Exception as error:
            return _Fetched(position, width, height, failure=internal_failure("preprocessing", error))
        _lap(timings, "preprocess", clock)
        return _Fetched(position, width, height, prepared)


def _lap(timings: Timings, stage: str, since: float) -> float:
    now = time.thread_time()
    timings.add(stage, now - since)
    return now
