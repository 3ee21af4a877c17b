"""What every output format declares: how to recognise its outputs, its preprocessing, its decoder."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from workers.faces import Faces, Geometry
from workers.nms import nms


@dataclass(frozen=True)
class OutputInfo:
    """One model output as format detection sees it: all its tensor names and its (partial) shape."""

    names: frozenset[str]
    shape: tuple[int | None, ...]  # None = dynamic dimension


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network input.

    `input_size` (width, height) is the network input; None means the image's own size rounded up to
    `size_multiple`. `resize` "stretch" scales each axis to fill the input (aspect not kept), "letterbox"
    keeps the aspect ratio with the image at the top-left and `pad` (BGR) in the rest. `color`, `mean`
    and `scale` describe what the network expects: `(pixel - mean) / scale` in that channel order.
    """

    input_size: tuple[int, int] | None
    resize: Literal["stretch", "letterbox"]
    color: Literal["BGR", "RGB"]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad: tuple[int, int, int] = (0, 0, 0)
    size_multiple: int = 1

    def with_overrides(self, **changes: object) -> Preprocess:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def plan(self, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int], Geometry]:
        """For an image of this size: the network input (w, h), the size the image is resized to before
        it is placed at the input's top-left, and the geometry that maps detections back."""
        m = self.size_multiple
        if self.input_size is None:
            net = (math.ceil(width / m) * m, math.ceil(height / m) * m)
        else:
            net = self.input_size
        if self.resize == "letterbox":
            s = min(net[0] / width, net[1] / height)
            resized = (min(net[0], max(1, round(width * s))), min(net[1], max(1, round(height * s))))
        else:
            resized = net
        return net, resized, Geometry(width, height, resized[0] / width, resized[1] / height)


@dataclass(frozen=True)
class DecodeSettings:
    """What a decoder needs besides the outputs: thresholds and, for multi-class outputs, the face label."""

    score_threshold: float
    nms_threshold: float
    face_label: int | None = None  # None: every label counts as a face


Decode = Callable[[Sequence[np.ndarray], tuple[int, int], DecodeSettings], Faces]
"""decode(outputs of one image in `Format.match` order, as `Format.split` cut them, (net_w, net_h),
settings) -> faces in network-input pixels, sorted by score descending."""

Split = Callable[[Sequence[np.ndarray], int], list[list[np.ndarray]]]
"""split(outputs of a batch in `Format.match` order, batch size) -> each image's outputs."""


def split_batch_axis(outputs: Sequence[np.ndarray], batch: int) -> list[list[np.ndarray]]:
    """Cuts every output along its first (batch) axis, keeping a batch axis of 1."""
    return [[o[i : i + 1] for o in outputs] for i in range(batch)]


@dataclass(frozen=True)
class NmsRule:
    """How a format's reference runs NMS: +1-pixel areas, and whether an IoU equal to the threshold
    suppresses. Decoders apply it, and so does merging an image's views (scales, tiles)."""

    plus_one: bool = False
    suppress_equal: bool = False

    def keep(self, faces: Faces, threshold: float, max_kept: int | None = None) -> np.ndarray:
        """Indices of the faces NMS keeps, best first."""
        return nms(
            faces.boxes,
            faces.scores,
            threshold,
            self.plus_one,
            max_kept=max_kept,
            suppress_equal=self.suppress_equal,
        )

    def apply(self, faces: Faces, threshold: float, max_kept: int | None = None) -> Faces:
        return faces.take(self.keep(faces, threshold, max_kept))


@dataclass(frozen=True)
class Format:
    """An output format: a matching rule over the model's outputs, default preprocessing, a decoder."""

    name: str
    description: str
    has_landmarks: bool
    preprocess: Preprocess
    match: Callable[[Sequence[OutputInfo]], list[int] | None]
    """Indices of the outputs the decoder takes, in its order, or None when these are not our outputs."""
    decode: Decode
    default_nms_threshold: float
    split: Split = split_batch_axis
    max_batch: int | None = None  # 1 when the outputs cannot tell a batch's images apart
    nms_rule: NmsRule = NmsRule()


def find_named(outputs: Sequence[OutputInfo], names: Sequence[str]) -> list[int] | None:
    """Indices of the outputs carrying each of `names` (a port may carry several names), or None."""
    found = []
    for name in names:
        hits = [i for i, out in enumerate(outputs) if name in out.names]
        if not hits:
            return None
        found.append(hits[0])
    return found
