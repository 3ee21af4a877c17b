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
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import pyarrow.parquet as pq
import ray

from facesweep.workers.config import (
    AnonymizeSettings,
    ContainerSettings,
    CropSettings,
    DetectorSettings,
    Tuning,
)
from facesweep.workers.errors import ErrorKind, ImageError, ImageFailure, internal_failure, take_tracebacks
from facesweep.workers.faces import Faces
from facesweep.workers.inputs.containers import parse_piece, read_piece
from facesweep.workers.job.messages import ActorInfo, ShardReport
from facesweep.workers.job.metrics import error_kinds, shard_metrics
from facesweep.workers.job.pipeline import ImagePipeline
from facesweep.workers.job.shards import Shard
from facesweep.workers.model.detector import Detector, Timings
from facesweep.workers.output.layout import crop_shard_path
from facesweep.workers.output.schema import CROP_COMPRESSION, ImageResult, results_table
from facesweep.workers.output.writer import Piece, ShardCounts, put_table, read_footer, write_parquet
from facesweep.workers.products.anonymize import anonymized, copy_uri
from facesweep.workers.products.crops import ImageCrops, crops_table, image_crops
from facesweep.workers.storage import ObjectError, RangedFile, StorageError, join, request_counts, storage_for


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
        products = None
        if self.anonymizer is not None or self.crops is not None:
            products = _Products(self, timings, in_container=piece is not None)
        finish = products.finish if products is not None else None
        if piece is None:
            uris = shard.uris

            def load(i: int) -> bytes:
                data = storage_for(uris[i]).get(uris[i])
                if self.anonymizer is not None:
                    products.held[i] = data
                return data

            results = self.pipeline.run(uris, load, timings, finish)
            results = [
                replace(result, etag=etag, size=size)
                for result, etag, size in zip(results, shard.etags, shard.sizes, strict=True)
            ]
            pieces: list[Piece] = []
        else:
            results = self._container_piece(shard, timings, products)
            pieces = [(shard.uris[0], shard.etags[0], shard.sizes[0])]
        started = time.thread_time()
        storage = storage_for(self.output)
        cropped = crops_table(products.crops) if products is not None and products.crops else None
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
        copied = len(products.copied) if products is not None else 0
        return self.report(shard, counts, kinds, timings.seconds, copied)

    def _container_piece(
        self, shard: Shard, timings: Timings, products: _Products | None
    ) -> list[ImageResult]:
        """The results of a container piece's image members (read with a few ranged GETs)."""
        piece, etag, size = shard.uris[0], shard.etags[0], shard.sizes[0]
        clock = time.thread_time()
        members = read_piece(piece, size, self.containers)
        timings.add("fetch", time.thread_time() - clock)
        if self.anonymizer is not None:
            products.held.update({i: m.data for i, m in enumerate(members) if m.data is not None})

        def load(i: int) -> bytes:
            member = members[i]
            if member.failure is not None:
                raise ImageError(member.failure.message, member.failure.kind)
            return member.data

        finish = products.finish if products is not None else None
        results = self.pipeline.run([m.name for m in members], load, timings, finish)
        return [
            replace(
                result,
                etag=etag,
                size=len(m.data) if m.data is not None else None,
                key=m.key,
                container=piece,
            )
            for result, m in zip(results, members, strict=True)
        ]


@dataclass
class _Products:
    """What a shard's detected images add besides their rows (--anonymize, --crops), each made in the
    fetch pool from the image's full-size pixels as soon as its faces are known, before the shard
    commits: its anonymized copy written to DEST, its faces cut to the job's own threshold, their crops.
    An image whose copy or crops cannot be made becomes an error row (its detections are not written
    without them); a store that fails DEST fails the shard, as the shard's own write would."""

    worker: ShardWorker
    timings: Timings
    in_container: bool
    held: dict[int, bytes] = field(default_factory=dict)  # --anonymize: the bytes (format, JPEG quality)
    copied: list[int] = field(default_factory=list)  # positions of the images copied
    crops: list[ImageCrops] = field(default_factory=list)

    def finish(self, position: int, result: ImageResult, image: np.ndarray) -> ImageResult:
        worker, timings = self.worker, self.timings
        faces = result.faces.take(result.faces.scores >= worker.score_threshold)
        try:
            clock, crops = time.thread_time(), None
            if worker.crops is not None and len(faces):
                crops = image_crops(result.uri, image, faces, worker.crops)
                clock = timings.lap("crops", clock)
            if worker.anonymizer is not None:  # last: an image that fails makes no copy
                self._write_copy(result.uri, image, self.held.pop(position), faces=result.faces)
                self.copied.append(position)
                timings.lap("anonymize", clock)
        except ObjectError as error:
            failure = ImageFailure(ErrorKind.FETCH, f"anonymized copy not written: {error}")
        except StorageError:
            raise
        except Exception as error:  # a bug of ours: logged with its traceback, the image's error row
            failure = internal_failure("anonymize and crops", error)
        else:
            if crops is not None:
                self.crops.append(crops)
            return replace(result, faces=faces)
        return replace(result, faces=None, error=failure.message, error_kind=failure.kind)

    def _write_copy(self, uri: str, image: np.ndarray, data: bytes, faces: Faces) -> None:
        """The image's anonymized copy (faces down to the anonymize threshold), written to DEST."""
        settings = self.worker.anonymizer
        copy, suffix = anonymized(image, data, faces, settings)
        storage_for(settings.anonymize).put(
            copy_uri(uri, settings, suffix if self.in_container else ""), copy
        )
