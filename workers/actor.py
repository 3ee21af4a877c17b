"""The Ray actor's body: for each shard, fetch -> decode -> infer -> decode faces -> one Parquet file.

Wiring only: `pipeline` fetches (storage), decodes and prepares images in the actor's thread pool while
`Detector` runs the model and decodes its outputs; `sink` writes. The actor runs
`Tuning.shards_at_once` shards at once (a threaded Ray actor): the next shard is fetched and decoded while
the last images of the previous one are inferred and its Parquet file written, so the model never drains.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import cv2
import numpy as np
import pyarrow.parquet as pq
import ray

from workers.anonymize import AnonymizeSettings, anonymized, copy_uri
from workers.containers import ContainerSettings, Member, parse_piece, read_piece
from workers.crops import (
    CROP_COMPRESSION,
    CropSettings,
    ImageCrops,
    crop_shard_path,
    crops_table,
    image_crops,
)
from workers.detector import Detector, Timings
from workers.errors import ErrorKind, ImageError, ImageFailure, internal_failure, take_tracebacks
from workers.metrics import error_kinds, shard_metrics
from workers.model_plan import DetectorSettings
from workers.pipeline import ImagePipeline
from workers.shards import Shard
from workers.sink import ImageResult, Piece, ShardCounts, put_table, read_footer, results_table, write_parquet
from workers.storage import ObjectError, RangedFile, StorageError, join, request_counts, storage_for
from workers.tuning import Tuning


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
    anonymized: int = 0  # anonymized copies written (--anonymize)
    crops: int = 0  # face crops written (--crops)


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
        return [self._committed(shard) or self.process_one(shard) for shard in shards]

    def process_one(self, shard: Shard) -> ShardReport:
        raise NotImplementedError

    def _committed(self, shard: Shard) -> ShardReport | None:
        uri = join(self.output, shard.file_name)
        if not self.restarted or not storage_for(uri).exists(uri):
            return None
        return self.report(shard, read_footer(pq.ParquetFile(RangedFile(uri))).counts, {}, {})


class ShardWorker(ShardCalls):
    """Holds one compiled detector; processes shards into OUTPUT, `Tuning.shards_at_once` calls at a time
    (thread-safe: each shard has its own requests and timings). Ray wraps it as a threaded actor."""

    def __init__(
        self,
        settings: DetectorSettings,
        output: str,
        containers: ContainerSettings = ContainerSettings(),  # noqa: B008 (frozen)
        tuning: Tuning = Tuning(),  # noqa: B008 (frozen)
        anonymizer: AnonymizeSettings | None = None,
        crops: CropSettings | None = None,
    ) -> None:
        cv2.setNumThreads(1)  # the model owns the actor's cores; many images decode in parallel instead
        self.score_threshold, self.anonymizer, self.crops = settings.score_threshold, anonymizer, crops
        if anonymizer is not None:  # faces down to the anonymize threshold; the output keeps its own
            low = min(settings.score_threshold, anonymizer.anonymize_threshold)
            settings = replace(settings, score_threshold=low)
        self.detector = Detector(settings, tuning)
        self.containers = containers
        threads = tuning.fetch_threads
        pool = ThreadPoolExecutor(threads, thread_name_prefix="fetch")
        self.pipeline = ImagePipeline(self.detector, pool, in_flight=max(2 * threads, 8))  # per shard
        self.start_calls(output, self.detector.format.name)

    def ready(self) -> ActorInfo:
        """Answers once the model is compiled (the constructor has run)."""
        return self.info

    def process_one(self, shard: Shard) -> ShardReport:
        timings = Timings()
        piece = parse_piece(shard.uris[0]) if len(shard.uris) == 1 else None
        products = self.anonymizer is not None or self.crops is not None
        held: dict[int, bytes] = {}  # each image's bytes, for its anonymized copy and crops
        decoded: dict[int, np.ndarray] | None = {} if products else None  # and its pixels, full-size
        if piece is None:
            uris = shard.uris

            def load(i: int) -> bytes:
                data = storage_for(uris[i]).get(uris[i])
                if products:
                    held[i] = data
                return data

            results = self.pipeline.run(uris, load, timings, decoded)
            results = [
                replace(result, etag=etag, size=size)
                for result, etag, size in zip(results, shard.etags, shard.sizes, strict=True)
            ]
            pieces: list[Piece] = []
        else:
            results, members = self._container_piece(shard, timings, decoded)
            held = {i: m.data for i, m in enumerate(members) if m.data is not None}
            pieces = [(shard.uris[0], shard.etags[0], shard.sizes[0])]
        results, copied, crops = self._finish(results, held, decoded or {}, timings)
        started = time.thread_time()
        storage, cropped = storage_for(self.output), crops_table(crops) if crops else None
        if cropped is not None:  # before the shard's file: its commit also commits its crops
            put_table(storage, join(self.output, crop_shard_path(shard.index)), cropped, CROP_COMPRESSION)
        table = results_table(results, self.detector.settings.model)
        crop_rows = cropped.num_rows if cropped is not None else 0
        counts = write_parquet(
            table, storage, join(self.output, shard.file_name), pieces=pieces, crops=crop_rows
        )
        timings.add("write", time.thread_time() - started)
        kinds = error_kinds(table["error_kind"])
        shard_metrics().record(counts.images, counts.faces, kinds, timings.seconds)
        return self.report(shard, counts, kinds, timings.seconds, copied)

    def _finish(
        self,
        results: list[ImageResult],
        held: dict[int, bytes],
        decoded: dict[int, np.ndarray],
        timings: Timings,
    ) -> tuple[list[ImageResult], int, list[ImageCrops]]:
        """What each detected image adds to its row (from its pixels as the detection decoded them, full
        size), in the fetch pool, before the shard commits: its
        anonymized copy written to DEST (--anonymize), its faces cut to the job's own threshold, their
        crops (--crops); the copies written and the crops. An image whose copy or crops cannot be made
        becomes an error row (its detections are not written without them); a store that fails DEST fails
        the shard, as the shard's own write would."""
        if self.anonymizer is None and self.crops is None:
            return results, 0, []

        def finish(position: int) -> tuple[ImageResult, bool, ImageCrops | None]:
            result = results[position]
            if result.faces is None:
                return result, False, None  # not detected: never copied
            faces = result.faces.take(result.faces.scores >= self.score_threshold)
            if self.anonymizer is None and not len(faces):
                return replace(result, faces=faces), False, None
            try:
                clock = time.thread_time()
                image = decoded.pop(position)  # every detected image was decoded full-size
                if self.anonymizer is not None:
                    self._write_copy(result, image, held[position], self.anonymizer)
                    clock = timings.lap("anonymize", clock)
                crops = None
                if self.crops is not None and len(faces):
                    crops = image_crops(result.uri, image, faces, self.crops)
                    timings.lap("crops", clock)
            except ObjectError as error:
                failure = ImageFailure(ErrorKind.FETCH, f"anonymized copy not written: {error}")
            except StorageError:
                raise
            except Exception as error:  # a bug of ours: logged with its traceback, the image's error row
                failure = internal_failure("anonymize and crops", error)
            else:
                return replace(result, faces=faces), self.anonymizer is not None, crops
            return replace(result, faces=None, error=failure.message, error_kind=failure.kind), False, None

        done = list(self.pipeline.pool.map(finish, range(len(results))))
        crops = [c for _, _, c in done if c is not None]
        return [result for result, _, _ in done], sum(copied for _, copied, _ in done), crops

    def _write_copy(
        self, result: ImageResult, image: np.ndarray, data: bytes, settings: AnonymizeSettings
    ) -> None:
        """The image's anonymized copy, written to DEST under its key."""
        copy, suffix = anonymized(image, data, result.faces, settings)
        member = suffix if result.container is not None else ""
        storage_for(settings.anonymize).put(copy_uri(result.uri, settings, member), copy)

    def _container_piece(
        self, shard: Shard, timings: Timings, decoded: dict[int, np.ndarray] | None
    ) -> tuple[list[ImageResult], list[Member]]:
        """The results of a container piece's image members (read with a few ranged GETs)."""
        piece, etag, size = shard.uris[0], shard.etags[0], shard.sizes[0]
        clock = time.thread_time()
        members = read_piece(piece, size, self.containers)
        timings.add("fetch", time.thread_time() - clock)

        def load(i: int) -> bytes:
            member = members[i]
            if member.failure is not None:
                raise ImageError(member.failure.message, member.failure.kind)
            return member.data

        results = self.pipeline.run([m.name for m in members], load, timings, decoded)
        results = [
            replace(
                result,
                etag=etag,
                size=len(m.data) if m.data is not None else None,
                key=m.key,
                container=piece,
            )
            for result, m in zip(results, members, strict=True)
        ]
        return results, members
