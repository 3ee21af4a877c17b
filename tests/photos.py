"""Photos tests share: the scikit-image astronaut with its face located by eye, and camera-made JPEGs."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from infra.demo import sample_photos

# The face in scikit-image's astronaut.png, read off a pixel grid by eye: forehead below the fringe
# to chin, cheek to cheek; and the five landmarks (eyes' pupils, nose tip, mouth corners).
ASTRONAUT_FACE = np.array([[180, 62, 270, 180]], np.float32)
ASTRONAUT_LANDMARKS = np.array([[201, 101], [245, 101], [222, 128], [201, 142], [245, 142]], np.float32)


def astronaut() -> np.ndarray:
    return cv2.imread(str(dict(sample_photos())["skimage/astronaut.png"]))


def encode(ext: str, image: np.ndarray, *params: int) -> bytes:
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


def exif_jpeg(upright: np.ndarray, thumbnail: bytes = b"") -> bytes:
    """A JPEG as a camera held sideways writes it: pixels rotated 90 degrees counter-clockwise, EXIF
    Orientation 6 ("rotate 90 clockwise to display") in an APP1 segment, optionally a thumbnail after it."""
    stored = encode(".jpg", cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE), cv2.IMWRITE_JPEG_QUALITY, 95)
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack(">I", 0)
    app1 = b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd + thumbnail
    return stored[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(app1)) + app1 + stored[2:]
