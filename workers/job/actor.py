"""The Ray actor's body: for each shard, fetch -> decode -> infer -> decode faces -> one Parquet file.

Wiring only: `pipeline` fetches (storage), decodes and prepares images in the actor's thread pool while
`Detector` runs the model and decodes its outputs; `sink` writes. The actor runs
`Tuning.shards_at_once` shards at once (a threaded Ray actor): the next shard is fetched and decoded while
the last images of the previous one are inferred and its Parquet file written, so the model never drains.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from facesweep.workers.config import (
    AnonymizeSettings,
    ContainerSettings,
    CropSettings,
    DetectorSettings,
    Tuning,
)
from facesweep.workers.errors import ErrorKind, ImageError, ImageFailure, internal_failure
from facesweep.workers.faces import Faces
from facesweep.workers.inputs import videos
from facesweep.workers.inputs.containers import parse_piece, read_piece
from facesweep.workers.inputs.videos import FrameChoice
from facesweep.workers.job.budget import PixelBudget, budget_bytes
from facesweep.workers.job.calls import ShardCalls
from facesweep.workers.job.messages import ActorInfo, ShardReport
from facesweep.workers.job.metrics import error_kinds, shard_metrics
from facesweep.workers.job.pipeline import Finish, ImagePipeline
from facesweep.workers.job.shards import Shard
from facesweep.workers.model.detector import Detector, Timings
from facesweep.workers.output.layout import crop_shard_path
from facesweep.workers.output.schema import CROP_COMPRESSION, ImageResult, results_table
from facesweep.workers.output.writer import Piece, VideoSeconds, put_table, write_parquet
from facesweep.workers.products import Detected, Product, products_for
from facesweep.workers.products.blurred_videos import blurred_segment, put_segment
from facesweep.workers.storage import ObjectError, StorageError, join, storage_for


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
        self.score_threshold, self.products = settings.score_threshold, products_for(anonymizer, crops)
        self.anonymizer = anonymizer
        low = min([settings.score_threshold, *(p.score_threshold for p in self.products)])
        self.detector = Detector(replace(settings, score_threshold=low), tuning)  # the output keeps its own
        self.containers = containers
        rate = containers.frame_rate(anonymizing=anonymizer is not None)
        self.frames = FrameChoice(rate, containers.keyframes)
        threads = tuning.fetch_threads
        pool = ThreadPoolExecutor(threads, thread_name_prefix="fetch")
        self.budget = PixelBudget(budget_bytes(tuning.pixel_budget, settings.threads))  # its shards share it
        copies = max((p.pixel_copies for p in self.products), default=0)
        self.pipeline = ImagePipeline(
            self.detector, pool, max(2 * threads, 8), self.budget, tuning.shards_at_once, copies
        )  # in flight per shard
        self.start_calls(output, self.detector.format.name)

    def ready(self) -> ActorInfo:
        """Answers once the model is compiled (the constructor has run)."""
        return self.info

    def process_one(self, shard: Shard) -> ShardReport:
        timings = Timings()
        piece = parse_piece(shard.uris[0]) if len(shard.uris) == 1 else None
        video = videos.parse_piece(shard.uris[0]) if len(shard.uris) == 1 else None
        products = [p for p in self.products if video is None or p.of_video_frames]
        inside = piece is not None or video is not None
        made = _ShardProducts(self, timings, products, inside, cut=video is None) if products else None
        finish = made.finish if made is not None else None
        seconds: list[VideoSeconds] = []
        if video is not None:
            results, duration = self._video_piece(shard, timings, finish)
            pieces = [(shard.uris[0], shard.etags[0], shard.sizes[0])]
            if duration is not None:
                seconds.append((video[0], shard.etags[0], shard.sizes[0], duration))
        elif piece is None:
            uris = shard.uris

            def load(i: int) -> bytes:
                data = storage_for(uris[i]).get(uris[i])
                if made is not None:
                    made.hold(i, data)
                return data

            results = self.pipeline.run(uris, load, timings, finish)
            results = [
                replace(result, etag=etag, size=size)
                for result, etag, size in zip(results, shard.etags, shard.sizes, strict=True)
            ]
            pieces: list[Piece] = []
        else:
            results = self._container_piece(shard, timings, made)
            pieces = [(shard.uris[0], shard.etags[0], shard.sizes[0])]
        started = time.thread_time()
        storage = storage_for(self.output)
        side = made.side_table() if made is not None else None
        if side is not None:  # before the shard's file: its commit also commits its side table
            put_table(storage, join(self.output, crop_shard_path(shard.index)), side, CROP_COMPRESSION)
        table = results_table(results, self.detector.settings.model)
        side_rows = side.num_rows if side is not None else 0
        counts = write_parquet(
            table,
            storage,
            join(self.output, shard.file_name),
            pieces=pieces,
            crops=side_rows,
            video_seconds=seconds,
        )
        timings.add("write", time.thread_time() - started)
        kinds = error_kinds(table["error_kind"])
        shard_metrics().record(counts.images, counts.faces, kinds, timings.seconds)
        copied = made.done.get("anonymize", 0) if made is not None else 0
        return self.report(shard, counts, kinds, timings.seconds, copied)

    def _video_piece(
        self, shard: Shard, timings: Timings, finish: Finish | None
    ) -> tuple[list[ImageResult], float | None]:
        """The rows of a video piece's sampled frames (and one naming the piece if its end could not be
        read), and the video's duration; a video that cannot be opened is one error row, named after the
        video for its first piece. `finish`: the products made of each frame (its faces left uncut: the
        blurred segment needs them)."""
        piece, etag, size = shard.uris[0], shard.etags[0], shard.sizes[0]
        video, start, _ = videos.parse_piece(piece)
        clock = time.thread_time()
        try:
            frames = videos.VideoPiece(piece, size, self.frames)
        except (ImageError, ObjectError) as error:
            failure = (
                error.failure if isinstance(error, ImageError) else ImageFailure(ErrorKind.FETCH, str(error))
            )
            return [_error_row(video if start == 0 else piece, failure, etag, piece)], None
        timings.add("fetch", time.thread_time() - clock)
        with frames:
            reader = videos.FrameReader(frames, keyframes=self.frames.keyframes)
            sampled = [frames.frames[i] for i in reader.sampled]
            names = [videos.frame_uri(video, frame.time) for frame in sampled]
            results = self.pipeline.run(names, reader, timings, finish)
            if self.anonymizer is not None:
                clock = time.thread_time()
                self._blurred_segment(frames, reader.sampled, results)
                timings.add("anonymize", time.thread_time() - clock)
        results = [
            replace(
                result,
                faces=_at_least(result.faces, self.score_threshold),
                etag=etag,
                container=piece,
                frame_index=frame.index,
                frame_time=float(frame.time),
            )
            for result, frame in zip(results, sampled, strict=True)
        ]
        if frames.failure is not None:
            results.append(_error_row(piece, frames.failure.failure, etag, piece))
        return results, frames.seconds

    def _blurred_segment(
        self, frames: videos.VideoPiece, positions: list[int], results: list[ImageResult]
    ) -> None:
        """The piece's blurred segment into OUTPUT (its faces down to the anonymize threshold)."""
        assert self.anonymizer is not None
        low = self.anonymizer.anonymize_threshold
        detections = {
            position: result.faces.boxes[result.faces.scores >= low]
            for position, result in zip(positions, results, strict=True)
            if result.faces is not None
        }
        segment = blurred_segment(frames, detections, self.anonymizer, self.frames.fps)
        put_segment(self.output, frames.piece, segment)

    def _container_piece(
        self, shard: Shard, timings: Timings, made: _ShardProducts | None
    ) -> list[ImageResult]:
        """The results of a container piece's image members (read with a few ranged GETs)."""
        piece, etag, size = shard.uris[0], shard.etags[0], shard.sizes[0]
        clock = time.thread_time()
        members = read_piece(piece, size, self.containers)
        timings.add("fetch", time.thread_time() - clock)
        if made is not None:
            for i, member in enumerate(members):
                made.hold(i, member.data)

        def load(i: int) -> bytes:
            member = members[i]
            if member.failure is not None:
                raise ImageError(member.failure.message, member.failure.kind)
            return member.data

        finish = made.finish if made is not None else None
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


def _at_least(faces: Faces | None, score: float) -> Faces | None:
    """The faces scoring at least `score` (None stays None: an error row)."""
    return None if faces is None else faces.take(faces.scores >= score)


def _error_row(name: str, failure: ImageFailure, etag: str | None, piece: str) -> ImageResult:
    return ImageResult(name, error=failure.message, error_kind=failure.kind, etag=etag, container=piece)


@dataclass
class _ShardProducts:
    """A shard's products (workers/products/): each image goes through them in the fetch pool as soon as
    its faces are known, from its pixels (full-size where the pixel budget allows), before the shard
    commits; its faces are then cut to the job's own threshold. An image a product fails on becomes an
    error row (its detections are not written without its products); a store that fails a product's
    writes fails the shard, as the shard's own write would."""

    worker: ShardWorker
    timings: Timings
    products: list[Product]
    in_container: bool
    cut: bool = True  # its results' faces cut to the job's threshold (else left to the caller)
    held: dict[int, bytes] = field(default_factory=dict)  # encoded bytes, for products that keep them
    parts: dict[str, list[Any]] = field(default_factory=dict)  # each product's parts of the shard's images
    done: Counter[str] = field(default_factory=Counter)  # images each product made its part of

    def hold(self, position: int, data: bytes | None) -> None:
        if data is not None and any(p.keeps_bytes for p in self.products):
            self.held[position] = data

    def finish(self, position: int, result: ImageResult, image: np.ndarray) -> ImageResult:
        faces = result.faces.take(result.faces.scores >= self.worker.score_threshold)
        data, scale = self.held.pop(position, None), result.decode_scale or 1.0
        detected = Detected(result.uri, image, data, faces, result.faces, self.in_container, scale)
        made: list[tuple[str, Any]] = []
        clock = time.thread_time()
        for product in self.products:
            try:
                made.append((product.name, product.make(detected)))
            except ObjectError as error:
                failure = ImageFailure(ErrorKind.FETCH, f"{product.name} not made: {error}")
            except StorageError:
                raise
            except Exception as error:  # a bug of ours: logged with its traceback, the image's error row
                failure = internal_failure(product.name, error)
            else:
                clock = self.timings.lap(product.name, clock)
                continue
            return replace(result, faces=None, error=failure.message, error_kind=failure.kind)
        for name, part in made:  # kept only once every product has its part: an error row has none
            self.done[name] += 1
            if part is not None:
                self.parts.setdefault(name, []).append(part)
        return replace(result, faces=faces) if self.cut else result

    def side_table(self) -> pa.Table | None:
        """The shard's side table (at most one product has one: footers count its rows)."""
        tables = [p.table(self.parts.get(p.name, [])) for p in self.products]
        return next((table for table in tables if table is not None), None)
