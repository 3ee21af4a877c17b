"""Running the model: a compiled OpenVINO model fed with many requests in flight, each image's views
batched with other images' views, their outputs decoded by the format and merged per image."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from facesweep.workers.config import DetectorSettings, Tuning
from facesweep.workers.errors import ImageFailure, internal_failure
from facesweep.workers.faces import Faces
from facesweep.workers.model.formats.base import DecodeSettings
from facesweep.workers.model.plan import plan_model
from facesweep.workers.model.runtime import compile_model, run_in_flight, warm_up
from facesweep.workers.model.second_look import SCORE_FLOOR, wants_second_look
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
    """An image whose views are being inferred: each view's faces (or failure) once decoded. With
    `--second-look`, until its first pass has decided: its pixels (`prepared.image`), how many views its
    first pass has, and their faces down to the rule's SCORE_FLOOR (`judged`, where the job's threshold
    is above it)."""

    prepared: Prepared
    views: tuple[View, ...]
    parts: list[Faces | ImageFailure | None]
    remaining: int
    first: int
    judged: list[Faces | None]


_Item = tuple[object, int, View, bool]
"""A view in the stream: its image's key, its index among the image's views, the view, and whether it is
also decoded down to SCORE_FLOOR for the second-look rule."""


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

    @property
    def all_scales(self) -> tuple[float, ...]:
        """The scales an image may be viewed at: the job's, and a second look's."""
        second = self.settings.second_look
        return self.settings.scales + ((second,) if second is not None else ())

    def reduction(self, width: int, height: int) -> int:
        """How much smaller (1, 2, 4 or 8) an image of this stored size may be decoded (`views.reduction`;
        native-resolution tiles want every pixel up to `--max-side`, a second look its own scale); 1 with
        --full-decode."""
        if not self.settings.reduced_decode:
            return 1
        return reduction(self.plan.preprocess, self.all_scales, width, height, self.plan.tile)

    def view_bytes(self, width: int, height: int) -> int:
        """Bytes the views of a decoded image of this size hold besides it, in either orientation (EXIF
        may turn it): `views.view_bytes`, a second look's included."""
        preprocess, scales, tile = self.plan.preprocess, self.all_scales, self.plan.tile
        return max(view_bytes(preprocess, scales, *size, tile) for size in ((width, height), (height, width)))

    def second_look_bytes(self, width: int, height: int) -> int:
        """Bytes a second look's views of a decoded image of this size may add (0 without one)."""
        if self.settings.second_look is None:
            return 0
        return view_bytes(self.plan.preprocess, (self.settings.second_look,), width, height)

    def prepare(self, image: np.ndarray, full_size: tuple[int, int] | None = None) -> Prepared:
        """All views of a BGR image for the network (`views.image_views`); thread-safe. With a second
        look, the image is kept with them until its first pass decides."""
        prepared = image_views(image, self.plan.preprocess, self.settings.scales, self.plan.tile, full_size)
        if self.settings.second_look is None:
            return prepared
        return replace(prepared, image=image, full_size=full_size)

    def detect(
        self,
        items: Iterable[tuple[object, Prepared] | None],
        timings: Timings,
        on_done: Callable[[object, Faces | ImageFailure], None] | None = None,
        wake: Callable[[], None] | None = None,
    ) -> dict[object, Faces | ImageFailure]:
        """Faces (or the failure) per key, running the model with several requests in flight; an image's
        views may share batches with other images' views, and merge once the last is decoded. `on_done`
        is told each image's result as soon as it is known (in OpenVINO's callback: keep it short).

        With `--second-look`, an image whose first pass wants one (`second_look.wants_second_look`) gets
        its second views into the same stream, batched with other images' views, and one result of all
        its views merged. `items` may yield None while they wait (a heartbeat: second views queued by then
        go in); `wake` is called when one is queued, so that a caller whose `items` block can yield one."""
        stream = _Stream(self, timings, on_done, wake)
        batches = _batched(stream.views(items), self.plan.batch)
        inputs = ((self._batch_tensor([item[2] for item in b]), b) for b in batches)
        run_in_flight(self.compiled, inputs, stream.on_result, self.tuning.requests_per_stream)
        return stream.results

    @property
    def _judge_decode(self) -> DecodeSettings | None:
        """The decode settings of a first pass's faces for the second-look rule, where the job's
        threshold is above the rule's SCORE_FLOOR (else its own faces serve)."""
        decode = self.plan.decode
        if decode.score_threshold <= SCORE_FLOOR:
            return None
        return replace(decode, score_threshold=SCORE_FLOOR)

    def _wants_second_look(self, image: _InFlight) -> bool:
        """Whether an image's first pass (every view decoded, none failed) wants a second look."""
        first = [part for part in image.parts[: image.first] if isinstance(part, Faces)]
        if len(first) < image.first:
            return False
        judged = [own if own is not None else part for own, part in zip(image.judged, first, strict=True)]
        faces = merge(judged, image.views, self.format.nms_rule, self.plan.decode.nms_threshold)
        return wants_second_look(faces.scores)

    def _second_look(self, prepared: Prepared) -> Prepared:
        """An image's second views: scale `second_look`, tiled as `--scales 1,S` tiles it."""
        assert prepared.image is not None and self.settings.second_look is not None
        return image_views(
            prepared.image,
            self.plan.preprocess,
            (self.settings.second_look,),
            self.plan.tile,
            prepared.full_size,
            after=self.settings.scales,
        )

    def _decode_views(
        self, outputs: list[np.ndarray], batch: list[_Item]
    ) -> list[tuple[Faces, Faces | None]]:
        """Each view's faces in original pixels from one batch's raw outputs, and where it is judged for a
        second look, its faces down to SCORE_FLOOR too."""
        per_view = self.format.split([outputs[i] for i in self.plan.outputs], self.plan.batch)
        judge = self._judge_decode
        return [
            (
                in_original(self.format.decode(tensors, view.net_size, self.plan.decode), view),
                in_original(self.format.decode(tensors, view.net_size, judge), view)
                if judged and judge is not None
                else None,
            )
            for tensors, (_, _, view, judged) in zip(per_view, batch, strict=False)
        ]

    def _finish(self, image: _InFlight) -> Faces | ImageFailure:
        """An image's result once all its views are decoded: the first failure, else the merged faces."""
        faces = [part for part in image.parts if isinstance(part, Faces)]
        if len(faces) < len(image.parts):
            return next(part for part in image.parts if isinstance(part, ImageFailure))
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


class _Stream:
    """One `Detector.detect` call: its images in flight, their results, and (with `--second-look`) the
    images whose first pass is in and wants a second look, and those whose pixels are kept until their
    first pass decides or their second views are made (`undecided`)."""

    def __init__(
        self,
        detector: Detector,
        timings: Timings,
        on_done: Callable[[object, Faces | ImageFailure], None] | None,
        wake: Callable[[], None] | None,
    ) -> None:
        self.detector, self.timings, self.on_done, self.wake = detector, timings, on_done, wake
        self.results: dict[object, Faces | ImageFailure] = {}
        self.in_flight: dict[object, _InFlight] = {}
        self.changed = threading.Condition()
        self.again: deque[object] = deque()
        self.undecided = 0
        self.judging = detector.settings.second_look is not None and detector._judge_decode is not None

    def views(self, items: Iterable[tuple[object, Prepared] | None]) -> Iterator[_Item | None]:
        """Every view to infer: the images' own, each image's second views as soon as it wants them, and
        None where the batch being filled must go in (the last first passes, to decide)."""
        for entry in items:
            yield from self._second_views()
            if entry is None:
                continue
            key, prepared = entry
            count = len(prepared.views)
            parts: list[Faces | ImageFailure | None] = [None] * count
            self.in_flight[key] = _InFlight(prepared, prepared.views, parts, count, count, [None] * count)
            if prepared.image is not None:
                with self.changed:
                    self.undecided += 1
            judged = self.judging and prepared.image is not None
            for index, view in enumerate(prepared.views):
                yield key, index, view, judged
        while True:  # the last first passes decide; their second views go in
            yield from self._second_views()
            with self.changed:
                if not self.again and not self.undecided:
                    return
            yield None
            with self.changed:
                self.changed.wait_for(lambda: bool(self.again) or not self.undecided)

    def on_result(self, outputs: list[np.ndarray], infer_seconds: float, batch: list[_Item]) -> None:
        """A batch's outputs (OpenVINO's callback): each view's faces; each image whose views are all in
        settled."""
        started = time.thread_time()
        try:
            decoded = self.detector._decode_views(outputs, batch)
        except Exception as error:  # a decoder bug must not take the shard down with it
            decoded = [(internal_failure("face decoding", error), None)] * len(batch)
        done = []
        with self.changed:
            for (key, index, _, _), (faces, judged) in zip(batch, decoded, strict=True):
                image = self.in_flight[key]
                image.parts[index] = faces
                if judged is not None:
                    image.judged[index] = judged
                image.remaining -= 1
                if image.remaining == 0:
                    done.append((key, image))
        for key, image in done:
            self._settle(key, image)
        self.timings.add("infer", infer_seconds)
        self.timings.add("decode_nms", time.thread_time() - started)

    def _settle(self, key: object, image: _InFlight) -> None:
        """An image whose views are all decoded: done, or (its first pass in) queued for a second look."""
        failure = None
        if image.prepared.image is not None:
            try:
                wanted = self.detector._wants_second_look(image)
            except Exception as error:  # like a merge bug, a rule bug fails its image only
                wanted, failure = False, internal_failure("second look", error)
            if wanted:
                with self.changed:
                    self.again.append(key)
                    self.changed.notify_all()
                if self.wake is not None:
                    self.wake()
                return
            self._decided(image)
        self._finish(key, image, failure)

    def _second_views(self) -> Iterator[_Item]:
        """The second views of the images queued for one, made now (their pixels then let go)."""
        while True:
            with self.changed:
                if not self.again:
                    return
                key = self.again.popleft()
            image = self.in_flight[key]
            try:
                extra, failure = self.detector._second_look(image.prepared).views, None
            except Exception as error:  # its row says so; the other images go on
                extra, failure = (), internal_failure("preprocessing", error)
            first = len(image.views)
            image.views += extra
            image.parts += [None] * len(extra)
            image.remaining = len(extra)
            self._decided(image)
            if failure is not None or not extra:
                self._finish(key, image, failure)
            yield from ((key, first + index, view, False) for index, view in enumerate(extra))

    def _decided(self, image: _InFlight) -> None:
        """An image's second look is decided (and its views made): its pixels are let go."""
        image.prepared = replace(image.prepared, image=None)
        with self.changed:
            self.undecided -= 1
            self.changed.notify_all()

    def _finish(self, key: object, image: _InFlight, failure: ImageFailure | None = None) -> None:
        with self.changed:
            self.in_flight.pop(key)
        self.results[key] = self.detector._finish(image) if failure is None else failure
        if self.on_done is not None:
            self.on_done(key, self.results[key])


def _batched(items: Iterator[_Item | None], size: int) -> Iterator[list[_Item]]:
    """Batches of `size` items, and a shorter one where the stream says None (flush) or ends."""
    batch: list[_Item] = []
    for item in items:
        if item is not None:
            batch.append(item)
        if batch and (item is None or len(batch) == size):
            yield batch
            batch = []
    if batch:
        yield batch
