"""A face detector: a compiled OpenVINO model plus its output format's preprocessing and decoder."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np
import openvino as ov

from workers.errors import ImageFailure, internal_failure
from workers.faces import Faces, Geometry
from workers.formats import detect_format
from workers.formats.base import DecodeSettings, Format, Preprocess
from workers.formats.known import recognise
from workers.images import network_tensor, scale_for_network
from workers.models import ModelError, model_checksum, resolve_model
from workers.nms import pairwise_intersection
from workers.runtime import (
    compile_model,
    output_infos,
    read_model,
    run_in_flight,
    static_input_size,
    warm_up,
)


@dataclass(frozen=True)
class DetectorSettings:
    """Everything that decides which faces come out of an image. None means: the model's or format's value."""

    model: str
    device: str = "CPU"
    threads: int = 1
    score_threshold: float = 0.5
    nms_threshold: float | None = None
    format: str | None = None  # None: detected from the model's outputs
    resize: Literal["stretch", "letterbox"] | None = None
    input_size: tuple[int, int] | None = None  # (width, height)
    color: Literal["BGR", "RGB"] | None = None
    mean: tuple[float, float, float] | None = None
    scale: tuple[float, float, float] | None = None
    face_label: int | None = None
    batch: int = 1
    precision: str | None = None  # INFERENCE_PRECISION_HINT, e.g. "f32"; None: the device's default
    model_sha256: str | None = None  # refuse a model whose bytes have another checksum
    scales: tuple[float, ...] = (1.0,)  # test-time pyramid: run each image at these scales (prepare)
    tile: bool = False  # also run images larger than a fixed network input as native-resolution tiles
    reduced_decode: bool = True  # decode a JPEG at 1/2, 1/4, 1/8 when every view downscales that much


MIN_FACE = 64
"""Network pixels: faces this large are found reliably; sets how much tiles overlap (`_largest_face`)."""
EDGE_MARGIN = 4
EDGE_FRACTION = 0.25
"""A tile's box closer to a tile edge inside the image than EDGE_MARGIN network pixels or EDGE_FRACTION
of its own size is a face the tile cut: dropped (another tile, or a coarser view, holds it whole)."""
CONTAINED = 0.6
"""A tile's face this much inside a better-scoring face larger than the tile looks after is a part of it."""


@dataclass(frozen=True)
class View:
    """One network input of an image: the `window` (x, y, w, h) of `scaled` (the image resized for one
    scale) at the input's top-left, the rest padded; `geometry` maps its pixels back to the image.
    `inner`: whether the window's left, top, right and bottom edges lie inside the scaled image (a tile);
    `largest`: the widest and tallest face (network px) a tile keeps when a coarser view finds larger ones.
    """

    scaled: np.ndarray
    window: tuple[int, int, int, int]
    net_size: tuple[int, int]
    pad: tuple[int, int, int]
    geometry: Geometry
    inner: tuple[bool, bool, bool, bool] = (False, False, False, False)
    largest: tuple[float, float] = (math.inf, math.inf)

    @property
    def tensor(self) -> np.ndarray:
        """The uint8 [1, h, w, 3] network input (built on demand: tiles share `scaled`)."""
        return network_tensor(self.scaled, self.window, self.net_size, self.pad)


@dataclass(frozen=True)
class Prepared:
    """An image ready for the network: its views, one for a plain run, one per scale and tile otherwise."""

    views: tuple[View, ...]

    @property
    def tensor(self) -> np.ndarray:
        """The uint8 NHWC tensor of a single-view image."""
        return self._single().tensor

    @property
    def geometry(self) -> Geometry:
        """How a single-view image's network input maps back."""
        return self._single().geometry

    def _single(self) -> View:
        if len(self.views) != 1:
            raise ValueError(f"this image has {len(self.views)} views (scales or tiles), not one")
        return self.views[0]


@dataclass
class Timings:
    """Seconds per stage, summed over images (thread-safe accumulation): the CPU time of the thread that
    did the work (fetch, decode, preprocess, decode_nms, write; so fetch excludes waiting for the network),
    and for infer the requests' own latency, several of which overlap."""

    seconds: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


@dataclass(frozen=True)
class ModelPlan:
    """What reading a model decides: its format, the outputs to decode, preprocessing, decode settings."""

    path: Path
    checksum: str  # models.model_checksum
    format: Format
    outputs: list[int]
    preprocess: Preprocess
    decode: DecodeSettings
    batch: int


def plan_model(settings: DetectorSettings) -> tuple[ov.Model, ModelPlan]:
    """Reads the model and decides how to run it; every mismatch is a one-line ModelError or format error."""
    path = resolve_model(settings.model, settings.model_sha256)
    checksum = model_checksum(path)
    if settings.model_sha256 and settings.model_sha256.lower() != checksum:
        raise ModelError(
            f"model {settings.model} has SHA-256 {checksum}, not {settings.model_sha256} (--model-sha256): "
            "refusing to run it"
        )
    model = read_model(str(path), settings.model)
    fmt, outputs = detect_format(output_infos(model), settings.model, settings.format)
    known = recognise(path)
    known = known if known is not None and known.format == fmt.name else None
    if known is not None and known.preprocess is not None:
        base = known.preprocess
    else:
        base = replace(fmt.preprocess, input_size=static_input_size(model) or fmt.preprocess.input_size)
    preprocess = base.with_overrides(
        resize=settings.resize,
        input_size=settings.input_size,
        color=settings.color,
        mean=settings.mean,
        scale=settings.scale,
    )
    if settings.tile and preprocess.input_size is None:
        raise ModelError(
            f"--tile needs a fixed network input: model {settings.model} already runs each image at its "
            "own size (native resolution); pass --input-size WxH to tile"
        )
    if not settings.scales or min(settings.scales) <= 0:
        raise ModelError(f"--scales must be positive numbers, got {settings.scales}")
    limits = [m for m in (fmt.max_batch, known.max_batch if known else None) if m is not None]
    if settings.batch > min(limits, default=settings.batch):
        raise ModelError(
            f"model {settings.model} ({fmt.name} format) runs batch {min(limits)} only: drop --batch"
        )
    if settings.batch > 1 and preprocess.input_size is None:
        raise ModelError(f"--batch {settings.batch} needs a fixed --input-size for model {settings.model}")
    face_label = settings.face_label
    if face_label is None and known is not None:
        face_label = known.face_label
    decode = DecodeSettings(
        score_threshold=settings.score_threshold,
        nms_threshold=fmt.default_nms_threshold if settings.nms_threshold is None else settings.nms_threshold,
        face_label=face_label,
    )
    return model, ModelPlan(path, checksum, fmt, outputs, preprocess, decode, settings.batch)


def inspect_model(settings: DetectorSettings) -> ModelPlan:
    """Reads the model and plans it without compiling (cheap; for early errors in the driver)."""
    return plan_model(settings)[1]


class Detector:
    """Compiles the model once; turns prepared images into faces in original-image pixels."""

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        model, self.plan = plan_model(settings)
        self.format = self.plan.format
        self._compiled = compile_model(
            model,
            self.plan.preprocess,
            settings.device,
            settings.threads,
            settings.precision,
            self.plan.batch,
        )
        width, height = self.plan.preprocess.input_size or (64, 64)
        warm_up(self._compiled, np.zeros((self.plan.batch, height, width, 3), np.uint8))

    def reduction(self, width: int, height: int) -> int:
        """How much smaller (1, 2, 4 or 8) an image of this stored size may be decoded (JPEG DCT scaling)
        without any view seeing fewer pixels than it would from the full image: every view scales it down
        at least that much. Either orientation (EXIF may turn it); 1 with --tile, which wants every pixel."""
        if not self.settings.reduced_decode or self.settings.tile:
            return 1
        most = max(self.settings.scales)
        finest = max(
            max(geometry.scale_x, geometry.scale_y) * most
            for geometry in (
                self.plan.preprocess.plan(w, h)[2] for w, h in ((width, height), (height, width))
            )
        )
        return next((r for r in (8, 4, 2) if r * finest <= 1), 1)

    def prepare(self, image: np.ndarray, full_size: tuple[int, int] | None = None) -> Prepared:
        """All views of a BGR image for the network; thread-safe, so fetch threads can do it in parallel.

        One view per scale of `settings.scales` (1: the format's preprocessing; see `scale_for_network`),
        cut into overlapping tiles where a scale makes the image larger than a fixed network input; with
        `settings.tile`, also the image at native resolution in tiles when it does not fit the input.
        `full_size`: (width, height) of the full image when `image` is a reduced decode of it (`reduction`);
        faces then come back in the full image's pixels."""
        preprocess = self.plan.preprocess
        full_size = full_size or (image.shape[1], image.shape[0])
        levels = [
            (scaled, net, geometry.of_full_size(*full_size))
            for scaled, net, geometry in (
                scale_for_network(image, preprocess, scale) for scale in dict.fromkeys(self.settings.scales)
            )
        ]
        if self.settings.tile:
            native = scale_for_network(image, preprocess, native=True)
            height, width = image.shape[:2]
            fits = width <= native[1][0] and height <= native[1][1]
            if not fits and all(level[2] != native[2] for level in levels):
                levels.append(native)
        coarsest = (min(g.scale_x for _, _, g in levels), min(g.scale_y for _, _, g in levels))
        return Prepared(tuple(view for level in levels for view in _views(*level, coarsest, preprocess.pad)))

    def infer(self, prepared: Sequence[Prepared]) -> list[np.ndarray]:
        """The model's raw outputs for one batch of views, synchronously (for tests and one-off use)."""
        views = [view for image in prepared for view in image.views]
        if len(views) > self.plan.batch:
            raise ValueError(f"{len(views)} views do not fit one batch of {self.plan.batch}: use detect")
        result = self._compiled(self._batch_tensor(views))
        return [result[output] for output in self._compiled.outputs]

    def decode(
        self, outputs: list[np.ndarray], prepared: Sequence[Prepared], settings: DecodeSettings | None = None
    ) -> list[Faces]:
        """Faces of each image of a batch from the model's raw outputs, in original pixels, best first.

        `settings` overrides the planned thresholds (to decode stored outputs at another threshold)."""
        settings = settings or self.plan.decode
        per_view = self._decode_views(outputs, [view for image in prepared for view in image.views], settings)
        faces, start = [], 0
        for image in prepared:
            parts = per_view[start : start + len(image.views)]
            faces.append(self.merge(parts, image.views, settings.nms_threshold))
            start += len(image.views)
        return faces

    def _decode_views(
        self, outputs: list[np.ndarray], views: Sequence[View], settings: DecodeSettings
    ) -> list[Faces]:
        """Each view's faces in original pixels, less the faces cut by a tile edge inside the image; new
        arrays (`Geometry.to_original` computes them), so nothing points into `outputs`."""
        picked = [outputs[i] for i in self.plan.outputs]
        per_view = self.format.split(picked, self.plan.batch)
        return [
            view.geometry.to_original(_drop_cut(self.format.decode(tensors, view.net_size, settings), view))
            for tensors, view in zip(per_view, views, strict=False)
        ]

    def merge(
        self, parts: Sequence[Faces], views: Sequence[View], nms_threshold: float | None = None
    ) -> Faces:
        """One image's faces from its views' faces (a single view's as they are): all of them through the
        format's NMS, best first, less any tile's face that lies inside a better-scoring face larger than
        the tile looks after (the part of a large face that the tile cut, and a coarser view saw whole)."""
        if len(parts) == 1:
            return parts[0]
        faces = Faces.concat(list(parts))
        threshold = self.plan.decode.nms_threshold if nms_threshold is None else nms_threshold
        kept = self.format.nms_rule.keep(faces, threshold)
        if any(any(view.inner) for view in views):
            limits = np.concatenate(
                [np.tile(_limit(v), (len(p), 1)) for p, v in zip(parts, views, strict=True)]
            )
            kept = kept[~_inside_larger(faces.boxes[kept], faces.scores[kept], limits[kept])]
        return faces.take(kept)

    def _finish(
        self, found: Sequence[Faces | ImageFailure | None], views: Sequence[View]
    ) -> Faces | ImageFailure:
        """An image's result once all its views are decoded: the first error, else the merged faces."""
        faces = [part for part in found if isinstance(part, Faces)]
        if len(faces) < len(found):
            return next(part for part in found if not isinstance(part, Faces))
        try:
            return self.merge(faces, views)
        except Exception as error:  # like a decoder bug, a merge bug fails its image only
            return internal_failure("merge", error)

    def _batch_tensor(self, views: Sequence[View]) -> np.ndarray:
        """The views stacked into one batch, padded with copies of the last to the compiled batch size."""
        if self.plan.batch == 1:
            return views[0].tensor
        tensors = [view.tensor for view in views]
        return np.concatenate(tensors + [tensors[-1]] * (self.plan.batch - len(views)))

    def detect(
        self, items: Iterable[tuple[object, Prepared]], timings: Timings
    ) -> dict[object, Faces | ImageFailure]:
        """Faces (or an error string) per key, running the model with several requests in flight; an
        image's views may share batches with other images' views, and merge once the last is decoded."""
        results: dict[object, Faces | ImageFailure] = {}
        parts: dict[object, list[Faces | ImageFailure | None]] = {}
        remaining: dict[object, int] = {}
        views_of: dict[object, tuple[View, ...]] = {}
        lock = threading.Lock()

        def views() -> Iterator[tuple[object, int, View]]:
            for key, prepared in items:
                parts[key] = [None] * len(prepared.views)
                views_of[key] = prepared.views
                remaining[key] = len(prepared.views)
                for index, view in enumerate(prepared.views):
                    yield key, index, view

        def on_result(
            outputs: list[np.ndarray], infer_seconds: float, batch: list[tuple[object, int, View]]
        ) -> None:
            started = time.thread_time()
            try:
                decoded: list[Faces | ImageFailure] = list(
                    self._decode_views(outputs, [view for _, _, view in batch], self.plan.decode)
                )
            except Exception as error:  # a decoder bug must not take the shard down with it
                decoded = [internal_failure("face decoding", error)] * len(batch)
            done = []
            with lock:
                for (key, index, _), faces in zip(batch, decoded, strict=True):
                    parts[key][index] = faces
                    remaining[key] -= 1
                    if remaining[key] == 0:
                        done.append(key)
            for key in done:
                results[key] = self._finish(parts.pop(key), views_of.pop(key))
            timings.add("infer", infer_seconds)
            timings.add("decode_nms", time.thread_time() - started)

        batches = _batched(views(), self.plan.batch)
        run_in_flight(
            self._compiled, ((self._batch_tensor([v for _, _, v in b]), b) for b in batches), on_result
        )
        return results


def _views(
    scaled: np.ndarray,
    net: tuple[int, int],
    geometry: Geometry,
    coarsest: tuple[float, float],
    pad: tuple[int, int, int],
) -> list[View]:
    """The network inputs of one scale: the whole scaled image when it fits the input, else overlapping
    input-sized tiles of it (evenly spread, the first and last at the image's edges)."""
    height, width = scaled.shape[:2]
    if width <= net[0] and height <= net[1]:
        return [View(scaled, (0, 0, width, height), net, pad, geometry)]
    largest = (
        _largest_face(geometry.scale_x / coarsest[0]),
        _largest_face(geometry.scale_y / coarsest[1]),
    )
    xs = _starts(width, net[0], int(min(net[0] // 2, largest[0])))
    ys = _starts(height, net[1], int(min(net[1] // 2, largest[1])))
    w, h = min(net[0], width), min(net[1], height)
    return [
        View(
            scaled,
            (x, y, w, h),
            net,
            pad,
            replace(geometry, offset_x=float(x), offset_y=float(y)),
            (x > 0, y > 0, x + w < width, y + h < height),
            largest,
        )
        for y in ys
        for x in xs
    ]


def _largest_face(finer: float) -> float:
    """The largest face (network px, one axis) that the tiles of a view `finer` times the coarsest view's
    scale look after, and so how much neighbouring tiles overlap (at most half a tile).

    A face up to it, less two edge margins, is whole in some tile (clear of its edges when smaller still:
    `_drop_cut`); a larger one is at least MIN_FACE px in the coarsest view, which finds it whole, while a
    tile may see only part of it. Unlimited for the coarsest view itself: its tiles overlap by half a
    tile and keep faces of every size."""
    return math.inf if finer <= 1 else float(math.ceil(MIN_FACE * finer) + 2 * EDGE_MARGIN)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile offsets along one axis: as few tiles as cover `length` with at least `overlap` shared."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(v) for v in np.linspace(0, length - tile, count)]


def _drop_cut(faces: Faces, view: View) -> Faces:
    """The faces of a tile less those it may have cut: a face within EDGE_MARGIN or EDGE_FRACTION of its
    size of (or past) a tile edge inside the image, which another tile holds whole; and a face larger than
    the tile looks after (so possibly the visible part of a larger face) within half its size of such an
    edge, which the coarser view holds whole. Larger faces clear of the edges stay: the tile sees them
    whole, and sharper than the coarser view."""
    left, top, right, bottom = view.inner
    if not (left or top or right or bottom):
        return faces
    _, _, width, height = view.window
    boxes = faces.boxes
    sizes = boxes[:, 2:] - boxes[:, :2]
    reach = np.maximum(EDGE_MARGIN, np.where(sizes > np.array(view.largest), 0.5, EDGE_FRACTION) * sizes)
    cut = np.zeros(len(faces), bool)
    if left:
        cut |= boxes[:, 0] < reach[:, 0]
    if top:
        cut |= boxes[:, 1] < reach[:, 1]
    if right:
        cut |= boxes[:, 2] > width - reach[:, 0]
    if bottom:
        cut |= boxes[:, 3] > height - reach[:, 1]
    return faces.take(~cut)


def _limit(view: View) -> np.ndarray:
    """The largest face (w, h) in original pixels that a view looks after (unlimited but for tiles)."""
    if not any(view.inner):
        return np.array([np.inf, np.inf])
    return np.array(view.largest) / (view.geometry.scale_x, view.geometry.scale_y)


def _inside_larger(boxes: np.ndarray, scores: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """Which faces lie mostly (CONTAINED of their area) inside a better-scoring face larger than their
    view looks after (`limits`, w and h per face): parts of a large face that a tile cut."""
    result = np.zeros(len(boxes), bool)
    rows = np.flatnonzero(np.isfinite(limits[:, 0]))
    sizes = boxes[:, 2:] - boxes[:, :2]
    columns = np.flatnonzero((sizes > limits[rows].min(axis=0, initial=np.inf)).any(axis=1))
    if not len(rows) or not len(columns):
        return result
    inter, area, _ = pairwise_intersection(boxes[rows], boxes[columns], plus_one=False)
    inside = inter >= CONTAINED * np.maximum(area[:, None], np.finfo(np.float32).tiny)
    larger = (sizes[None, columns, :] > limits[rows, None, :]).any(axis=2)
    better = scores[None, columns] > scores[rows, None]
    result[rows] = (inside & larger & better).any(axis=1)
    return result


def _batched(
    items: Iterator[tuple[object, int, View]], size: int
) -> Iterator[list[tuple[object, int, View]]]:
    while batch := list(islice(items, size)):
        yield batch
