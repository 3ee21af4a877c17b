"""Face crops: each output face cut out at a fixed size, as JPEG bytes in a crops table beside the detections.

With landmarks, a face is aligned as insightface's `norm_crop` aligns it: its five points mapped onto
ArcFace's template (112x112, or scaled to a multiple of 112 or 128) by the least-squares similarity
transform (scale, rotation, shift: skimage's `SimilarityTransform.estimate`, solved here for all faces at
once in complex numbers), then `cv2.warpAffine` bilinear, black outside the image. Without landmarks: a
square around the box, its side the box's longer side grown by `crop_margin`, warped the same way. Each
row keeps the 2x3 transform from the image's coordinates to the crop's, so a crop maps back exactly: the
landmarks' transform as `norm_crop` uses it; a square's in the boxes' convention (pixel edges at integers:
a box from x1 to x2 covers x2 - x1 pixels), sampled with the half-pixel shift that convention needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

from facesweep.workers.config import CropSettings
from facesweep.workers.faces import Faces
from facesweep.workers.output.schema import CROPS_SCHEMA
from facesweep.workers.products.base import Detected, Product

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float32,
)
"""Where ArcFace's 112x112 crops put the five landmarks (insightface's `arcface_dst`, float32 as there)."""
JPEG_QUALITY = 95


def alignments(faces: Faces, settings: CropSettings) -> np.ndarray:
    """[N, 2, 3] transforms from image pixels to each face's crop: by its landmarks when the model has
    them (least squares, as `norm_crop`), else the square around its box."""
    size = settings.crop_size
    if faces.landmarks is not None:
        ratio, shift = (size / 112, 0.0) if size % 112 == 0 else (size / 128, 8.0 * size / 128)
        template = ARCFACE_TEMPLATE.astype(np.float64) * ratio + [shift, 0.0]
        return similarities(faces.landmarks.astype(np.float64), template)
    boxes = faces.boxes.astype(np.float64)
    side = (boxes[:, 2:] - boxes[:, :2]).max(axis=1) * (1 + settings.crop_margin)
    scale = size / np.maximum(side, 1e-6)
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    matrices = np.zeros((len(boxes), 2, 3))
    matrices[:, 0, 0] = matrices[:, 1, 1] = scale
    matrices[:, :, 2] = size / 2 - scale[:, None] * center
    return matrices


def similarities(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[N, 2, 3] least-squares similarity transforms taking each face's points [N, K, 2] onto `target`
    [K, 2]: with z = x + iy, the target is a z + b; a = cov(z, target) / var(z), b from the means."""
    z = points[..., 0] + 1j * points[..., 1]
    w = target[:, 0] + 1j * target[:, 1]
    dz, dw = z - z.mean(axis=1, keepdims=True), w - w.mean()
    spread = (np.abs(dz) ** 2).sum(axis=1)
    a = (dw * dz.conj()).sum(axis=1) / np.where(spread > 0, spread, np.inf)  # all points at one: a = 0
    b = w.mean() - a * z.mean(axis=1)
    return np.stack(
        [np.stack([a.real, -a.imag, b.real], axis=1), np.stack([a.imag, a.real, b.imag], axis=1)], axis=1
    )


def warped_crops(
    image: np.ndarray, faces: Faces, settings: CropSettings, scale: float = 1.0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The transforms [N, 2, 3] of `faces` (full-size pixels) and their crops, size x size x 3, from the
    BGR `image` decoded at `scale` of the full size (one OpenCV warp per face: each has its own
    transform)."""
    matrices = alignments(faces, settings)
    sampling = matrices.copy()
    sampling[:, :, :2] /= scale  # from the decoded image's pixels
    if faces.landmarks is None:  # pixel edges at integers -> OpenCV's pixel centres at integers
        sampling[:, :, 2] += 0.5 * sampling[:, :, :2].sum(axis=2) - 0.5
    size = (settings.crop_size, settings.crop_size)
    return matrices, [cv2.warpAffine(image, matrix, size, borderValue=0.0) for matrix in sampling]


def _jpeg(crop: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("OpenCV could not encode a crop")
    return encoded.tobytes()


@dataclass(frozen=True)
class ImageCrops:
    """One image's crops, in the order of its output faces."""

    uri: str
    scores: np.ndarray
    aligned: bool
    transforms: np.ndarray  # [N, 2, 3]
    jpegs: list[bytes]


def image_crops(
    uri: str, image: np.ndarray, faces: Faces, settings: CropSettings, scale: float = 1.0
) -> ImageCrops:
    transforms, crops = warped_crops(image, faces, settings, scale)
    return ImageCrops(uri, faces.scores, faces.landmarks is not None, transforms, [_jpeg(c) for c in crops])


def crops_table(crops: Sequence[ImageCrops]) -> pa.Table:
    """The crops table of some images' crops, built column-wise, sorted by uri and face."""
    counts = [len(c.jpegs) for c in crops]
    transforms = np.concatenate([c.transforms.reshape(-1, 6) for c in crops]) if crops else np.zeros((0, 6))
    table = pa.table(
        {
            "uri": pa.array(np.repeat([c.uri for c in crops], counts).tolist(), pa.string()),
            "face": pa.array(np.concatenate([np.arange(n) for n in counts] or [[]]).astype(np.int32)),
            "score": pa.array(np.concatenate([c.scores for c in crops] or [[]]).astype(np.float32)),
            "aligned": pa.array(np.repeat([c.aligned for c in crops], counts).astype(bool)),
            "transform": pa.FixedSizeListArray.from_arrays(
                pa.array(transforms.reshape(-1).astype(np.float32)), 6
            ),
            "jpeg": pa.array([jpeg for c in crops for jpeg in c.jpegs], pa.binary()),
        },
        schema=CROPS_SCHEMA,
    )
    return table.sort_by([("uri", "ascending"), ("face", "ascending")])


class FaceCrops(Product):
    """`--crops`: each output face's crop, in a side table beside the detections (`OUTPUT/_crops/`)."""

    name = "crops"

    def __init__(self, settings: CropSettings) -> None:
        self.settings = settings

    def make(self, image: Detected) -> ImageCrops | None:
        if not len(image.faces):
            return None
        return image_crops(image.uri, image.image, image.faces, self.settings, image.scale)

    def table(self, parts: Sequence[ImageCrops]) -> pa.Table | None:
        return crops_table(parts) if parts else None
