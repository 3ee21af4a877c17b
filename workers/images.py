"""Image bytes to the network's input: decode (OpenCV, EXIF orientation applied) and resize."""

from __future__ import annotations

import cv2
import numpy as np

from workers.faces import Geometry
from workers.formats.base import Preprocess

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2"})


class ImageError(ValueError):
    """An input that is not a usable image; the message is the row's `error`."""


def decode_image(data: bytes) -> np.ndarray:
    """BGR uint8 [H, W, 3] of encoded image bytes, upright per its EXIF orientation."""
    if not data:
        raise ImageError("empty file")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError("not a decodable image")
    return image


def to_network_input(image: np.ndarray, preprocess: Preprocess) -> tuple[np.ndarray, Geometry]:
    """The uint8 [1, h, w, 3] tensor for the network (channel order unchanged) and its geometry."""
    height, width = image.shape[:2]
    net, resized, geometry = preprocess.plan(width, height)
    if resized == (width, height):
        scaled = image
    else:  # bilinear, as every reference implementation resizes
        scaled = cv2.resize(image, resized, interpolation=cv2.INTER_LINEAR)
    if resized == net:
        return scaled[None], geometry
    canvas = np.empty((1, net[1], net[0], 3), np.uint8)
    canvas[:] = preprocess.pad
    canvas[0, : resized[1], : resized[0]] = scaled
    return canvas, geometry
