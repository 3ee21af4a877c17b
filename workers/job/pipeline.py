"""Images in, one result each out: load -> decode -> prepare in a thread pool while the model runs on
earlier images (boto3 and OpenCV release the GIL), so the model never waits for the network or the decoder.

What is held: at most `in_flight` images loaded and not yet let go, and their decoded pixels within the
actor's pixel budget (`workers/job/budget.py`): each image is decoded, at the largest scale its header
says fits, once its reservation is taken, and gives it back as it lets its pixels go.

Whatever an image's bytes do to the decoder or the preprocessing is that image's error row, never its
neighbours'. The actor feeds it a shard's uris (loaded from storage); `jobs/api.py` feeds it a script's own
bytes or arrays.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field, replace

import numpy as np

from facesweep.workers.errors import ErrorKind, ImageError, ImageFailure, internal_failure
from facesweep.workers.faces import Faces
from facesweep.workers.inputs.images import Header, decode_at, read_header, shrink
from facesweep.workers.job.budget import DecodePlan, PixelBudget, Reservations, decode_plan
from facesweep.workers.model.detector import Detector, Timings
from facesweep.workers.model.views import Prepared
from facesweep.workers.output.schema import ImageResult
from facesweep.workers.storage import ObjectError

Loaded = bytes | np.ndarray
"""An encoded image (JPEG, PNG, ...: decoded as a job decodes it) or a decoded BGR uint8 HxWx3 array."""
Finish = Callable[[int, ImageResult, np.ndarray], ImageResult]
"""What a caller does with a detected image (its position, result and pixels): its new result."""


@dataclass(frozen=True)
class _Loaded:
    """An image fetched, its header read and its decoding planned: it waits for its reservation."""

    position: int
    data: Loaded
    header: Header | None  # None: a decoded array
    plan: DecodePlan


@dataclass(frozen=True)
class _Prepared:
    position: int
    width: int | None = None
    height: int | None = None
    prepared: Prepared | None = None
    failure: ImageFailure | None = None
    scale: float | None = None  # the scale it was decoded at


@dataclass
class _Call:
    """What one `run`'s pool tasks share: its loader, timings, the pixels `finish` will need, its
    reservations, and its loaded images waiting for theirs, in the order they were loaded."""

    load: Callable[[int], Loaded]
    timings: Timings
    decoded: dict[int, np.ndarray] | None  # with `finish`: each detected image's pixels, until it runs
    reservations: Reservations
    waiting: deque[_Loaded] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    woken: Future[None] = field(default_factory=Future)  # the detector queued a second look

    def wake(self) -> None:
        """The detector queued a second look: the loading loop yields, so that its views go in."""
        with suppress(InvalidStateError):  # already woken: its heartbeat is still to come
            self.woken.set_result(None)


class ImagePipeline:
    """Runs `detector` over images, `in_flight` of them loaded and prepared ahead in `pool`, their pixels
    within `budget`, which `sharers` calls share at once (the actor's shards); `copies`: the copies of an
    image's pixels a call's `finish` makes at once (its products), reserved with the image."""

    def __init__(
        self,
        detector: Detector,
        pool: ThreadPoolExecutor,
        in_flight: int,
        budget: PixelBudget,
        sharers: int = 1,
        copies: int = 0,
    ) -> None:
        self.detector, self.pool, self.in_flight = detector, pool, in_flight
        self.budget, self.copies = budget, copies
        # a batch waits for its images while holding theirs: every call's unfilled batch, and one image
        # more, must fit, or the calls could wait on each other for ever
        self.largest = budget.capacity // (sharers * (detector.plan.batch - 1) + 1)

    def run(
        self,
        names: Sequence[str],
        load: Callable[[int], Loaded],
        timings: Timings,
        finish: Finish | None = None,
    ) -> list[ImageResult]:
        """One result per name, in order; `load(i)` gives image i (an ObjectError: its fetch failed; an
        ImageError: it could not be read; any other StorageError fails the whole call, as a store that is
        down should). With `finish`, images are decoded full-size where the budget allows (reduced only so
        they fit), and each detected one goes through `finish(i, result, image)` in the pool as soon as
        its faces are known (its pixels then let go: a shard's images are never all held); what it
        returns is the image's result."""
        call = _Call(load, timings, {} if finish is not None else None, Reservations(self.budget))
        reservations, decoded = call.reservations, call.decoded
        prepared: dict[int, _Prepared] = {}
        lifetimes: dict[int, Future[None]] = {}  # each image's place among the `in_flight`
        finished: dict[int, Future[ImageResult]] = {}

        def ready() -> Iterator[tuple[int, Prepared] | None]:
            for item in self._prepare_all(len(names), call, lifetimes):
                if item is None:  # a heartbeat: the detector's queued second looks go in
                    yield None
                    continue
                prepared[item.position] = replace(item, prepared=None)  # its views go once inferred
                if item.prepared is None or finish is None:  # with `finish`, held until it has run
                    lifetimes[item.position].set_result(None)
                if item.prepared is None and decoded is not None:
                    decoded.pop(item.position, None)
                if item.prepared is not None:
                    yield item.position, item.prepared

        def on_done(position: int, faces: Faces | ImageFailure) -> None:
            if finish is None or decoded is None:  # its views are let go
                reservations.give(position)
                return
            image = decoded.pop(position)
            if isinstance(faces, Faces):
                result = _result(names[position], prepared[position], faces)
                finished[position] = self.pool.submit(
                    _finished, finish, position, result, image, lifetimes, reservations
                )
            else:
                reservations.give(position)
                lifetimes[position].set_result(None)

        try:
            faces = self.detector.detect(ready(), timings, on_done, call.wake)
            return [
                finished[i].result() if i in finished else _result(name, prepared[i], faces.get(i))
                for i, name in enumerate(names)
            ]
        finally:
            reservations.close()

    def _prepare_all(
        self, count: int, call: _Call, lifetimes: dict[int, Future[None]]
    ) -> Iterator[_Prepared | None]:
        """Prepared images in completion order, at most `in_flight` of them started and not yet let go:
        each image's future in `lifetimes` is ended by the caller (once it is prepared, or once what it
        does with the image after detection has run), so a slow step after detection holds back the
        loading instead of piling up decoded images. A loaded image whose reservation is not free waits
        (in no pool thread) until it is, behind those loaded before it. None when the detector queued a
        second look (`_Call.wake`): its views go in while this waits (images waiting for one hold
        their pixels and their place)."""
        started: set[Future[_Prepared | None]] = set()  # loading, or decoding and preparing
        alive: set[Future[None]] = set()
        limit = max(self.in_flight, 2 * self.detector.plan.batch)  # a batch is never short of images
        positions = iter(range(count))
        position = next(positions, None)
        try:
            while position is not None or started or call.waiting:
                alive = {lifetime for lifetime in alive if not lifetime.done()}
                while position is not None and len(alive) < limit:
                    lifetimes[position] = lifetime = Future()
                    alive.add(lifetime)
                    started.add(self.pool.submit(self._load_one, position, call))
                    position = next(positions, None)
                retry = self._start_waiting(call, started)
                done, _ = wait(started | alive | retry | {call.woken}, return_when=FIRST_COMPLETED)
                if call.woken.done():
                    call.woken = Future()
                    yield None
                for future in done & started:
                    started.discard(future)
                    if (item := future.result()) is not None:  # None: it waits for its reservation
                        yield item
        finally:  # a failing call (a store that stays down) leaves no work behind in the shared pool
            for future in started:
                future.cancel()

    def _start_waiting(self, call: _Call, started: set[Future[_Prepared | None]]) -> set[Future[None]]:
        """Decodes the waiting images whose reservations are free, in turn; what to wait for if one is not."""
        with call.lock:
            while call.waiting:
                item = call.waiting[0]
                retry = call.reservations.take(item.position, item.plan.reserve)
                if retry is not None:
                    return {retry}
                call.waiting.popleft()
                started.add(self.pool.submit(self._prepare_one, item, call))
        return set()

    def _load_one(self, position: int, call: _Call) -> _Prepared | None:
        """Image `position` fetched and planned (full-size where the budget allows, for `finish`), then
        decoded and prepared at once if its reservation is free and no image of the call waits before
        it; else it waits in `call.waiting` (None). Its failure, if it has one."""
        clock = time.thread_time()
        try:
            data = call.load(position)
        except ObjectError as error:  # this object is missing or forbidden; a failing store fails the call
            return _Prepared(position, failure=ImageFailure(ErrorKind.FETCH, f"fetch failed: {error}"))
        except ImageError as error:  # a container member that could not be read
            return _Prepared(position, failure=error.failure)
        clock = call.timings.lap("fetch", clock)
        try:
            if isinstance(data, np.ndarray):  # the caller's pixels: only its views' copies are ours
                data = _checked_array(data)
                views = self.detector.view_bytes(data.shape[1], data.shape[0])
                item = _Loaded(position, data, None, DecodePlan(1, min(views, self.largest)))
            else:
                header, wanted = read_header(data), 1
                if header.kind == "JPEG" and header.size is not None and call.decoded is None:
                    wanted = self.detector.reduction(*header.size)  # as small as every view allows
                item = _Loaded(position, data, header, self._plan(header, wanted))
        except ImageError as error:
            return _Prepared(position, failure=error.failure)
        except Exception as error:
            return _Prepared(position, failure=internal_failure("image decoding", error))
        finally:
            call.timings.lap("decode", clock)
        with call.lock:
            if call.waiting or call.reservations.take(position, item.plan.reserve) is not None:
                call.waiting.append(item)
                return None
        return self._prepare_one(item, call)

    def _prepare_one(self, item: _Loaded, call: _Call) -> _Prepared:
        """A loaded image, its reservation taken, decoded as planned and prepared; the reservation cut to
        what it then holds (given back whole if it fails)."""
        clock, position, reduction = time.thread_time(), item.position, item.plan.reduction
        reservations, decoded = call.reservations, call.decoded
        try:
            if item.header is None:
                image, (width, height) = item.data, (item.data.shape[1], item.data.shape[0])
            else:
                image, (width, height) = decode_at(item.data, item.header, reduction)
                if item.header.size is None:  # no header reader: planned now that its size is known
                    reduction = self._plan(replace(item.header, size=(width, height)), 1).reduction
                    image = shrink(image, reduction)
        except ImageError as error:
            reservations.give(position)
            return _Prepared(position, failure=error.failure)
        except Exception as error:
            reservations.give(position)
            return _Prepared(position, failure=internal_failure("image decoding", error))
        clock = call.timings.lap("decode", clock)
        if decoded is not None:
            decoded[position] = image
        try:
            prepared = self.detector.prepare(image, (width, height))
        except Exception as error:
            reservations.give(position)
            return _Prepared(position, width, height, failure=internal_failure("preprocessing", error))
        own, kept = 0 if item.header is None else image.nbytes, 0 if decoded is None else 1 + self.copies
        if prepared.image is not None:  # kept for a second look, which may add its views
            kept = max(kept, 1)
        second = self.detector.second_look_bytes(image.shape[1], image.shape[0])
        reservations.keep(position, _holds(image, own, prepared, kept) + second)
        call.timings.lap("preprocess", clock)
        return _Prepared(position, width, height, prepared, scale=1 / reduction)

    def _plan(self, header: Header, wanted: int) -> DecodePlan:
        return decode_plan(header, wanted, self.largest, self.copies, self.detector.view_bytes)


def _holds(image: np.ndarray, own: int, prepared: Prepared, kept: int) -> int:
    """Bytes an image holds once prepared: its views' resized copies, and its `own` pixels `kept` times
    (the image and what `finish` makes of it), or once when a view is the image itself."""
    copies = {id(view.scaled): view.scaled.nbytes for view in prepared.views if view.scaled is not image}
    shared = any(view.scaled is image for view in prepared.views)
    return sum(copies.values()) + own * max(kept, int(shared))


def _checked_array(image: np.ndarray) -> np.ndarray:
    """A decoded image as the detector takes it: HxWx3 uint8, else this image's error."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ImageError(
            f"not an HxWx3 uint8 image: {image.dtype} array of shape {image.shape}", ErrorKind.NOT_AN_IMAGE
        )
    return np.ascontiguousarray(image)


def _result(name: str, item: _Prepared, faces: Faces | ImageFailure | None) -> ImageResult:
    failure = item.failure or (faces if isinstance(faces, ImageFailure) else None)
    if failure is not None:
        return ImageResult(name, item.width, item.height, error=failure.message, error_kind=failure.kind)
    return ImageResult(name, item.width, item.height, faces=faces, decode_scale=item.scale)


def _finished(
    finish: Finish,
    position: int,
    result: ImageResult,
    image: np.ndarray,
    lifetimes: dict[int, Future[None]],
    reservations: Reservations,
) -> ImageResult:
    """`finish` of a detected image; its pixels and its place among the images in flight let go after it."""
    try:
        return finish(position, result, image)
    finally:
        reservations.give(position)
        lifetimes[position].set_result(None)
