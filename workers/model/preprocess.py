"""How an image becomes a network input, and how the network's pixels map back: the one owner of the
resize rule (stretch, letterbox, insightface's truncating letterbox, padding to a multiple), test-time
scales, padding and the inverse mapping. Colour, mean and scale are declared here too; the runtime bakes
them into the compiled graph (PrePostProcessor)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np

from facesweep.workers.faces import Faces


@dataclass(frozen=True)
class Geometry:
    """How an image of `width` x `height` was scaled into the network input.

    The image, scaled by `scale_x` x `scale_y`, lies at the input's top-left; or, for a tile, the input's
    top-left is the point (`offset_x`, `offset_y`) of the scaled image (in scaled pixels)."""

    width: int
    height: int
    scale_x: float
    scale_y: float
    offset_x: float = 0.0
    offset_y: float = 0.0

    def of_full_size(self, width: int, height: int) -> Geometry:
        """This geometry of a reduced decode, for the full image of `width` x `height` it was decoded from."""
        if (width, height) == (self.width, self.height):
            return self
        ratio_x, ratio_y = self.width / width, self.height / height
        return replace(
            self, width=width, height=height, scale_x=self.scale_x * ratio_x, scale_y=self.scale_y * ratio_y
        )

    def to_original(self, faces: Faces) -> Faces:
        """Maps boxes and landmarks from network-input pixels to the original image, boxes clipped to it."""
        scale = np.array([self.scale_x, self.scale_y], np.float32)
        offset = np.array([self.offset_x, self.offset_y], np.float32)
        boxes = ((faces.boxes.reshape(-1, 2, 2) + offset) / scale).reshape(-1, 4)
        np.maximum(np.minimum(boxes, [self.width, self.height] * 2, out=boxes), 0, out=boxes)  # clipped
        landmarks = (
            None if faces.landmarks is None else ((faces.landmarks + offset) / scale).astype(np.float32)
        )
        return Faces(boxes.astype(np.float32), faces.scores.astype(np.float32), landmarks)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network input.

    `input_size` (width, height) is the network input; None means the image's own size rounded up to
    `size_multiple`. `resize` "stretch" scales each axis to fill the input (aspect not kept), "letterbox"
    keeps the aspect ratio with the image at the top-left and `pad` (BGR) in the rest (with no input
    size: the image unscaled, padded to the multiple). `truncate`: the letterbox of insightface's SCRFD,
    the short side's length truncated rather than rounded and one scale (the height's) for both axes.
    `color`, `mean` and `scale` describe what the network expects: `(pixel - mean) / scale` in that
    channel order. `max_side` (`--resolution native`): the longest side, in pixels, an image keeps at its
    own size (no input size) or in its native-resolution tiles (a fixed input); larger ones are first
    downscaled to it (`shrink`).
    """

    input_size: tuple[int, int] | None
    resize: Literal["stretch", "letterbox"]
    color: Literal["BGR", "RGB"]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad: tuple[int, int, int] = (0, 0, 0)
    size_multiple: int = 1
    truncate: bool = False
    max_side: int | None = None

    def with_overrides(self, **changes: object) -> Preprocess:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def shrink(self, width: int, height: int) -> float:
        """The factor (at most 1) that brings an image of this size within `max_side`."""
        return 1.0 if self.max_side is None else min(1.0, self.max_side / max(width, height))

    def own_size(self, width: int, height: int) -> tuple[int, int]:
        """An image of this size at its own resolution, within `max_side`."""
        shrink = self.shrink(width, height)
        return max(1, round(width * shrink)), max(1, round(height * shrink))

    def fit(self, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int], Geometry]:
        """For an image of this size: the network input (w, h), the size the image is resized to before
        it is placed at the input's top-left, and the geometry that maps detections back."""
        if self.input_size is None:
            own, m = self.own_size(width, height), self.size_multiple
            net = (math.ceil(own[0] / m) * m, math.ceil(own[1] / m) * m)
            resized = own if self.resize == "letterbox" else net
        elif self.resize == "stretch":
            net = resized = self.input_size
        elif self.truncate:
            net = self.input_size
            if height / width > net[1] / net[0]:
                resized = (max(1, int(net[1] / (height / width))), net[1])
            else:
                resized = (net[0], max(1, int(net[0] * (height / width))))
            return net, resized, Geometry(width, height, resized[1] / height, resized[1] / height)
        else:
            net = self.input_size
            s = min(net[0] / width, net[1] / height)
            resized = (min(net[0], max(1, round(width * s))), min(net[1], max(1, round(height * s))))
        return net, resized, Geometry(width, height, resized[0] / width, resized[1] / height)


def scale_for_network(
    image: np.ndarray, preprocess: Preprocess, scale: float = 1.0, native: bool = False
) -> tuple[np.ndarray, tuple[int, int], Geometry]:
    """The image resized for the network (not padded), the network input (w, h), and the geometry.

    `scale` 1: the format's preprocessing (`Preprocess.fit`). Otherwise the image reaches the network
    `scale` times larger than at 1: a network that takes any input size (`input_size` None) gets the image
    resized by `scale` and then preprocessed as usual (one resize); a fixed-input network keeps its input,
    and the resized image, `scale` times the size `plan` gives, is larger than the input (to be cut into
    tiles of it) or smaller (padded as usual). `native`: the image at its own pixels, within `max_side`
    (tiles of a fixed-input network at native resolution)."""
    height, width = image.shape[:2]
    resized, net, geometry = network_size(preprocess, width, height, scale, native)
    if resized == (width, height):
        return image, net, geometry
    # bilinear, as every reference implementation resizes
    return cv2.resize(image, resized, interpolation=cv2.INTER_LINEAR), net, geometry


def network_size(
    preprocess: Preprocess, width: int, height: int, scale: float = 1.0, native: bool = False
) -> tuple[tuple[int, int], tuple[int, int], Geometry]:
    """`scale_for_network` without the pixels: for an image of `width` x `height`, the size it is resized
    to, the network input (w, h) and the geometry."""
    net, resized, geometry = preprocess.fit(width, height)
    if native:
        resized = preprocess.own_size(width, height)
        geometry = Geometry(width, height, resized[0] / width, resized[1] / height)
    elif scale != 1 and preprocess.input_size is None:
        factor = scale * preprocess.shrink(width, height)  # `scale` times the size at scale 1
        scaled_size = (max(1, round(width * factor)), max(1, round(height * factor)))
        net, resized, inner = replace(preprocess, max_side=None).fit(*scaled_size)
        ratio = scaled_size[0] / width, scaled_size[1] / height
        geometry = Geometry(width, height, inner.scale_x * ratio[0], inner.scale_y * ratio[1])
    elif scale != 1:
        base = resized
        resized = (max(1, round(base[0] * scale)), max(1, round(base[1] * scale)))
        ratio = resized[0] / base[0], resized[1] / base[1]
        geometry = Geometry(width, height, geometry.scale_x * ratio[0], geometry.scale_y * ratio[1])
    return resized, net, geometry


def network_tensor(
    scaled: np.ndarray, window: tuple[int, int, int, int], net: tuple[int, int], pad: tuple[int, int, int]
) -> np.ndarray:
    """The uint8 [1, h, w, 3] network input: the `window` (x, y, w, h) of `scaled` at its top-left, the
    rest `pad`."""
    x, y, w, h = window
    if (w, h) == net and (x, y) == (0, 0) and scaled.shape[:2] == (h, w):
        return scaled[None]
    # one OpenCV call: ~60x faster than filling a canvas with a broadcast (B, G, R) tuple in NumPy
    crop = scaled[y : y + h, x : x + w]
    return cv2.copyMakeBorder(crop, 0, net[1] - h, 0, net[0] - w, cv2.BORDER_CONSTANT, value=pad)[None]
