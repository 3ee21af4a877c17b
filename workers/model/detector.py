"""Running the model: a compiled OpenVINO model fed with many requests in flight, each image's views
batched with other images' views, their outputs decoded by the format and merged per image."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from facesweep.workers.config import DetectorSettings, Tuning
from facesweep.workers.errors import ImageFailure, internal_failure
from facesweep.workers.faces import Faces
from facesweep.workers.model.plan import plan_model
from facesweep.workers.model.runtime import compile_model, run_in_flight, warm_up
from facesweep.workers.model.views import (
    Prepared,
    View,
    image_views,
    in_original,
    merge,
    reduction,
    view_bytes,
)


@dataclass
class Timings:
    """Seconds per stage, summed over images (thread-safe accumulation): the CPU time of the thread that
    did the work (fetch, decode, preprocess, decode_nms, anonymize, crops, write; so fetch excludes
    waiting for the network), and for infer the requests' own latency, several of which overlap."""

    seconds: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def lap(self, stage: str, since: float) -> float:
        """Adds this thread's CPU time since `since` (a `time.thread_time()`) to `stage`; returns now."""
        now = time.thread_time()
        self.add(stage, now - since)
        return now


@dataclass
class _InFlight:
    """An image whose views are being inferred: each view's faces (or failure) once decoded."""

    views: tuple[View, ...]
    parts: list[Faces | ImageFailure | None]
    remaining: int


class Detector:
    """Compiles the model once (`compiled`, the runtime's object); turns prepared images into faces in
    original-image pixels."""

    def __init__(self, settings: DetectorSettings, tuning: Tuning = Tuning()) -> None:  # noqa: B008 (frozen)
        self.settings, self.tuning = settings, tuning
        model, self.plan = plan_model(settings)
        self.format = self.plan.format
        self.compiled = compile_model(
            model,
            self.plan.preprocess,
            settings.device,
            settings.threads,
            settings.precision,
            self.plan.batch,
            tuning.cpu_pinning,
        )
        width, height = self.plan.preprocess.input_size or (64, 64)
        warm_up(self.compiled, np.zeros((self.plan.batch, height, width, 3), np.uint8))

    def reduction(self, width: int, height: int) -> int:
        """How much smaller (1, 2, 4 or 8) an image of this stored size may be decoded (`views.reduction`;
        native-resolution tiles want every pixel up to `--max-side`); 1 with --full-decode."""
        if not self.settings.reduced_decode:
            return 1
        return reduction(self.plan.preprocess, self.settings.scales, width, height, self.plan.tile)

    def view_bytes(self, width: int, height: int) -> int:
        """Bytes the views of a decoded image of this size hold besides it, in either orientation (EXIF
        may turn it): `views.view_bytes`."""
        preprocess, scales, tile = self.plan.preprocess, self.settings.scales, self.plan.tile
        return max(view_bytes(preprocess, scales, *size, tile) for size in ((width, height), (height, width)))

    def prepare(self, image: np.ndarray, full_size: tuple[int, int] | None = None) -> Prepared:
        """All views of a BGR image for the network (`views.image_views`); thread-safe."""
        return image_views(image, self.plan.preprocess, self.settings.scales, self.plan.tile, full_size)

    def detect(
        self,
        items: Iterable[tuple[object, Prepared]],
        timings: Timings,
        on_done: Callable[[object, Faces | ImageFailure], None] | None = None,
    ) -> dict[object, Faces | ImageFailure]:
        """Faces (or the failure) per key, running the model with several requests in flight; an image's
        views may share batches with other images' views, and merge once the last is decoded. `on_done`
        is told each image's result as soon as it is known (in OpenVINO's callback: keep it short)."""
        results: dict[object, Faces | ImageFailure] = {}
        in_flight: dict[object, _InFlight] = {}
        lock = threading.Lock()

        def views() -> Iterator[tuple[object, int, View]]:
            for key, prepared in items:
                count = len(prepared.views)
                in_flight[key] = _InFlight(prepared.views, [None] * count, count)
                for index, view in enumerate(prepared.views):
                    yield key, index, view

        def on_result(
            outputs: list[np.ndarray], infer_seconds: float, batch: list[tuple[object, int, View]]
        ) -> None:
            started = time.thread_time()
            try:
                decoded: list[Faces | ImageFailure] = list(
                    self._decode_views(outputs, [v for _, _, v in batch])
                )
            except Exception as error:  # a decoder bug must not take the shard down with it
                decoded = [internal_failure("face decoding", error)] * len(batch)
            done = []
            with lock:
                for (key, index, _), faces in zip(batch, decoded, strict=True):
                    image = in_flight[key]
                    image.parts[index] = faces
                    image.remaining -= 1
                    if image.remaining == 0:
                        done.append((key, in_flight.pop(key)))
            for key, image in done:
                results[key] = self._finish(image)
                if on_done is not None:
                    on_done(key, results[key])
            timings.add("infer", infer_seconds)
            timings.add("decode_nms", time.thread_time() - started)

        batches = _batched(views(), self.plan.batch)
        inputs = ((self._batch_tensor([v for _, _, v in b]), b) for b in batches)
        run_in_flight(self.compiled, inputs, on_result, self.tuning.requests_per_stream)
        return results

    def _decode_views(self, outputs: list[np.ndarray], views: list[View]) -> list[Faces]:
        """Each view's faces in original pixels from one batch's raw outputs."""
        per_view = self.format.split([outputs[i] for i in self.plan.outputs], self.plan.batch)
        return [
            in_original(self.format.decode(tensors, view.net_size, self.plan.decode), view)
            for tensors, view in zip(per_view, views, strict=False)
        ]

    def _finish(self, image: _InFlight) -> Faces | ImageFailure:
        """An image's result once all its views are decoded: the first failure, else the merged faces."""
        faces = [part for part in image.parts if isinstance(part, Faces)]
        if len(faces) < len(image.parts):
            return next(part for part in image.parts if not isinstance(part, Faces))
        try:
            return merge(faces, image.views, self.format.nms_rule, self.plan.decode.nms_threshold)
        except Exception as error:  # like a decoder bug, a merge bug fails its image only
            return internal_failure("merge", error)

    def _batch_tensor(self, views: list[View]) -> np.ndarray:
        """The views stacked into one batch, padded with copies of the last to the compiled batch size."""
        if self.plan.batch == 1:
            return views[0].tensor
        tensors = [view.tensor for view in views]
        return np.concatenate(tensors + [tensors[-1]] * (self.plan.batch - len(views)))


def _batched(
    items: Iterator[tuple[object, int, View]], size: int
) -> Iterator[list[tuple[object, int, View]]]:
    while batch := list(islice(items, size)):
        yield batch
