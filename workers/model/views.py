"""Views: the network inputs one image becomes (one per test-time scale, cut into overlapping tiles
where a scale or `--tile` makes it larger than a fixed input), and the merge of their faces back into
one image's (NMS across views, less the parts of large faces that a tile cut)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from facesweep.workers.faces import Faces
from facesweep.workers.model.formats.base import NmsRule
from facesweep.workers.model.nms import pairwise_intersection
from facesweep.workers.model.preprocess import (
    Geometry,
    Preprocess,
    network_size,
    network_tensor,
    scale_for_network,
)

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
    """An image ready for the network: its views, one for a plain run, one per scale and tile otherwise.
    With `--second-look`, also the image (and its `full_size`, for a reduced decode), kept until its
    first pass decides whether it gets a second view."""

    views: tuple[View, ...]
    image: np.ndarray | None = None
    full_size: tuple[int, int] | None = None

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


def reduction(
    preprocess: Preprocess, scales: Sequence[float], width: int, height: int, tile: bool = False
) -> int:
    """How much smaller (1, 2, 4 or 8) an image of this stored size may be decoded (JPEG DCT scaling)
    without any view seeing fewer pixels than it would from the full image: every view scales it down
    at least that much. Either orientation (EXIF may turn it). `tile`: with native-resolution tiles,
    which want every pixel up to `max_side`."""
    finest = max(
        max(geometry.scale_x, geometry.scale_y) * max(scales)
        for geometry in (preprocess.fit(w, h)[2] for w, h in ((width, height), (height, width)))
    )
    if tile:
        finest = max(finest, preprocess.shrink(width, height))
    return next((r for r in (8, 4, 2) if r * finest <= 1), 1)


def view_bytes(
    preprocess: Preprocess, scales: Sequence[float], width: int, height: int, tile: bool = False
) -> int:
    """Bytes of the resized copies `image_views` makes of a BGR image of this size, which its views hold
    until they are inferred: one per scale (its tiles share it), and with `tile` the native-resolution
    level; a view at the image's own size is the image itself."""
    sizes = [network_size(preprocess, width, height, scale)[0] for scale in dict.fromkeys(scales)]
    if tile:
        sizes.append(preprocess.own_size(width, height))
    return sum(3 * w * h for w, h in dict.fromkeys(sizes) if (w, h) != (width, height))


def image_views(
    image: np.ndarray,
    preprocess: Preprocess,
    scales: Sequence[float] = (1.0,),
    tile: bool = False,
    full_size: tuple[int, int] | None = None,
    after: Sequence[float] = (),
) -> Prepared:
    """All views of a BGR image for the network (thread-safe, so fetch threads can prepare in parallel).

    One view per scale of `scales` (1: the format's preprocessing; see `scale_for_network`), cut into
    overlapping tiles where a scale makes the image larger than a fixed network input; with `tile`, also
    the image at native resolution (within `max_side`) in tiles when it does not fit the input.
    `full_size`: (width, height)
    of the full image when `image` is a reduced decode of it (`reduction`); faces then come back in the
    full image's pixels. `after`: the scales of views made of the image before (a first pass, and with
    `tile` its native level): only the views `scales` adds to them are made, tiled as `after + scales`
    together would tile them, so that merging both gives what one run of all the scales gives."""
    height, width = image.shape[:2]
    full_size = full_size or (width, height)

    def level(scale: float, native: bool = False) -> tuple[tuple[int, int], tuple[int, int], Geometry]:
        resized, net, geometry = network_size(preprocess, width, height, scale, native)
        return resized, net, geometry.of_full_size(*full_size)

    levels: dict[float | str, tuple[tuple[int, int], tuple[int, int], Geometry]] = {
        scale: level(scale) for scale in dict.fromkeys((*after, *scales))
    }
    if tile:
        resized, net, geometry = own = level(1.0, native=True)
        fits = resized[0] <= net[0] and resized[1] <= net[1]
        if not fits and all(other[2] != geometry for other in levels.values()):
            levels["native"] = own
    made = {*after, "native"} if after else set()  # the levels of the views made before
    earlier = [geometry for key, (_, _, geometry) in levels.items() if key in made]
    geometries = [geometry for _, _, geometry in levels.values()]
    coarsest = (min(g.scale_x for g in geometries), min(g.scale_y for g in geometries))
    views: list[View] = []
    for key, (_, _, geometry) in levels.items():
        if key in made or geometry in earlier:
            continue
        native = key == "native"
        scaled, net, _ = scale_for_network(image, preprocess, 1.0 if native else float(key), native)
        views += _views(scaled, net, geometry, coarsest, preprocess.pad)
    return Prepared(tuple(views))


def merge(parts: Sequence[Faces], views: Sequence[View], nms_rule: NmsRule, nms_threshold: float) -> Faces:
    """One image's faces from its views' faces (a single view's as they are): all of them through the
    format's NMS, best first, less any tile's face that lies inside a better-scoring face larger than
    the tile looks after (the part of a large face that the tile cut, and a coarser view saw whole)."""
    if len(parts) == 1:
        return parts[0]
    faces = Faces.concat(list(parts))
    kept = nms_rule.keep(faces, nms_threshold)
    if any(any(view.inner) for view in views):
        limits = np.concatenate([np.tile(_limit(v), (len(p), 1)) for p, v in zip(parts, views, strict=True)])
        kept = kept[~_inside_larger(faces.boxes[kept], faces.scores[kept], limits[kept])]
    return faces.take(kept)


def in_original(faces: Faces, view: View) -> Faces:
    """A view's faces (network pixels) in the original image's pixels, less those a tile edge inside
    the image may have cut (`_drop_cut`); new arrays, so nothing points into the model's outputs."""
    return view.geometry.to_original(_drop_cut(faces, view))


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
