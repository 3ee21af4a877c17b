"""Images in, one result each out: load -> decode -> prepare in a thread pool while the model runs on
earlier images (boto3 and OpenCV release the GIL), so the model never waits for the network or the decoder.

Whatever an image's bytes do to the decoder or the preprocessing is that image's error row, never its
neighbours'. The actor feeds it a shard's uris (loaded from storage); `jobs/api.py` feeds it a script's own
bytes or arrays.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from facesweep.workers.errors import ErrorKind, ImageError, ImageFailure, internal_failure
from facesweep.workers.faces import Faces
from facesweep.workers.inputs.images import decode_reduced
from facesweep.workers.model.detector import Detector, Timings
from facesweep.workers.model.views import Prepared
from facesweep.workers.output.schema import ImageResult
from facesweep.workers.storage import ObjectError

Loaded = bytes | np.ndarray
"""An encoded image (JPEG, PNG, ...: decoded as a job decodes it) or a decoded BGR uint8 HxWx3 array."""
Finish = Callable[[int, ImageResult, np.ndarray], ImageResult]
"""What a caller does with a detected image (its position, result and full-size pixels): its new result."""


@dataclass(frozen=True)
class _Prepared:
    position: int
    width: int | None = None
    height: int | None = None
    prepared: Prepared | None = None
    failure: ImageFailure | None = None


class ImagePipeline:
    """Runs `detector` over images, `in_flight` of them loaded and prepared ahead in `pool`."""

    def __init__(self, detector: Detector, pool: ThreadPoolExecutor, in_flight: int) -> None:
        self.detector, self.pool, self.in_flight = detector, pool, in_flight

    def run(
        self,
        names: Sequence[str],
        load: Callable[[int], Loaded],
        timings: Timings,
        finish: Finish | None = None,
    ) -> list[ImageResult]:
        """One result per name, in order; `load(i)` gives image i (an ObjectError: its fetch failed; an
        ImageError: it could not be read; any other StorageError fails the whole call, as a store that is
        down should). With `finish`, images are decoded full-size (never reduced), and each detected one
        goes through `finish(i, result, image)` in the pool as soon as its faces are known (its pixels
        then let go: a shard's images are never all held); what it returns is the image's result."""
        prepared: dict[int, _Prepared] = {}
        decoded: dict[int, np.ndarray] | None = {} if finish is not None else None
        lifetimes: dict[int, Future[None]] = {}  # each image's place among the `in_flight`
        finished: dict[int, Future[ImageResult]] = {}

        def ready() -> Iterator[tuple[int, Prepared]]:
            for item in self._prepare_all(len(names), load, timings, decoded, lifetimes):
                prepared[item.position] = item
                if item.prepared is None or finish is None:  # with `finish`, held until it has run
                    lifetimes[item.position].set_result(None)
                if item.prepared is None and decoded is not None:
                    decoded.pop(item.position, None)
                if item.prepared is not None:
                    yield item.position, item.prepared

        def on_done(position: int, faces: Faces | ImageFailure) -> None:
            image = decoded.pop(position)
            if isinstance(faces, Faces):
                result = _result(names[position], prepared[position], faces)
                finished[position] = self.pool.submit(_finished, finish, position, result, image, lifetimes)
            else:
                lifetimes[position].set_result(None)

        faces = self.detector.detect(ready(), timings, on_done if finish is not None else None)
        return [
            finished[i].result() if i in finished else _result(name, prepared[i], faces.get(i))
            for i, name in enumerate(names)
        ]

    def _prepare_all(
        self,
        count: int,
        load: Callable[[int], Loaded],
        timings: Timings,
        decoded: dict[int, np.ndarray] | None,
        lifetimes: dict[int, Future[None]],
    ) -> Iterator[_Prepared]:
        """Prepared images in completion order, at most `in_flight` of them started and not yet let go:
        each image's future in `lifetimes` is ended by the caller (once it is prepared, or once what it
        does with the image after detection has run), so a slow step after detection holds back the
        loading instead of piling up decoded images."""
        pending: set[Future[_Prepared]] = set()
        alive: set[Future[None]] = set()
        limit = max(self.in_flight, 2 * self.detector.plan.batch)  # a batch is never short of images
        positions = iter(range(count))
        position = next(positions, None)
        try:
            while position is not None or pending:
                alive = {lifetime for lifetime in alive if not lifetime.done()}
                while position is not None and len(alive) < limit:
                    lifetimes[position] = lifetime = Future()
                    alive.add(lifetime)
                    pending.add(self.pool.submit(self._prepare_one, position, load, timings, decoded))
                    position = next(positions, None)
                done, _ = wait(pending | alive, return_when=FIRST_COMPLETED)
                for future in done & pending:
                    pending.discard(future)
                    yield future.result()
        finally:  # a failing call (a store that stays down) leaves no work behind in the shared pool
            for future in pending:
                future.cancel()

    def _prepare_one(
        self,
        position: int,
        load: Callable[[int], Loaded],
        timings: Timings,
        decoded: dict[int, np.ndarray] | None,
    ) -> _Prepared:
        clock = time.thread_time()
        try:
            data = load(position)
        except ObjectError as error:  # this object is missing or forbidden; a failing store fails the call
            return _Prepared(position, failure=ImageFailure(ErrorKind.FETCH, f"fetch failed: {error}"))
        except ImageError as error:  # a container member that could not be read
            return _Prepared(position, failure=error.failure)
        clock = timings.lap("fetch", clock)
        try:
            if isinstance(data, np.ndarray):
                image, (width, height) = _checked_array(data), (data.shape[1], data.shape[0])
            else:
                reduction = self.detector.reduction if decoded is None else None
                image, (width, height) = decode_reduced(data, reduction)
        except ImageError as error:
            return _Prepared(position, failure=error.failure)
        except Exception as error:
            return _Prepared(position, failure=internal_failure("image decoding", error))
        clock = timings.lap("decode", clock)
        if decoded is not None:
            decoded[position] = image
        try:
            prepared = self.detector.prepare(image, (width, height))
        except Exception as error:
            return _Prepared(position, width, height, failure=internal_failure("preprocessing", error))
        timings.lap("preprocess", clock)
        return _Prepared(position, width, height, prepared)


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
    return ImageResult(name, item.width, item.height, faces=faces)


def _finished(
    finish: Finish, position: int, result: ImageResult, image: np.ndarray, lifetimes: dict[int, Future[None]]
) -> ImageResult:
    """`finish` of a detected image; its place among the images in flight let go after it."""
    try:
        return finish(position, result, image)
    finally:
        lifetimes[position].set_result(None)
