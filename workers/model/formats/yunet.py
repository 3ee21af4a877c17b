"""YuNet (OpenCV's FaceDetectorYN, opencv_zoo `face_detection_yunet`): one anchor per cell, strides 8/16/32.

Outputs per stride: cls_s, obj_s [.., K, 1], bbox_s [.., K, 4] = (dx, dy, log w, log h) and kps_s
[.., K, 10] = (x, y) offsets of 5 points, all in strides; K = (H/s) * (W/s), rows ordered (row, column).
Reference (OpenCV `objdetect/src/face_detect.cpp`, `postProcess`): score = sqrt(clip(cls, 0, 1) *
clip(obj, 0, 1)); centre = (column + dx, row + dy) * s, size = exp(log w, log h) * s, box from
centre - size / 2; points = (column + x, row + y) * s. Candidates with score >= threshold go to
`dnn::NMSBoxes` (when more than one): it keeps score > threshold, takes the top 5000 by a stable sort,
and suppresses IoU > 0.3 computed on *integer* rectangles (x1, y1, w, h each truncated toward zero)
with plain areas; the faces it keeps carry the float boxes.

Preprocessing: the reference takes BGR raw pixels at the image's own size, padded with black at the
bottom and right to a multiple of 32, never scaled: the letterbox with no input size (the default;
`Preprocess.fit`); with an input size (needed for batches) it letterboxes or stretches as usual.

Batches: the exports keep a leading 1 and put a batch's images one after another along the rows,
so each image's rows are cut from there (also right for a true batch axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facesweep.workers.faces import Faces
from facesweep.workers.model.formats.base import DecodeSettings, Format, OutputInfo, find_named, stride_grid
from facesweep.workers.model.nms import nms
from facesweep.workers.model.preprocess import Preprocess

STRIDES = (8, 16, 32)
TOP_K = 5000
OUTPUTS = tuple(f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in STRIDES)


def match(outputs: Sequence[OutputInfo]) -> list[int] | None:
    return find_named(outputs, OUTPUTS)


def split(outputs: Sequence[np.ndarray], batch: int) -> list[list[np.ndarray]]:
    """Each image's outputs: its consecutive block of rows (of a leading 1 or of a batch axis)."""
    return [[o.reshape(batch, -1, o.shape[-1])[i : i + 1] for o in outputs] for i in range(batch)]


def decode(outputs: Sequence[np.ndarray], net_size: tuple[int, int], settings: DecodeSettings) -> Faces:
    cls, obj, bbox, kps = (
        np.concatenate([o.reshape(-1, o.shape[-1]) for o in outputs[k : k + 3]]) for k in range(0, 12, 3)
    )
    grid, strides = stride_grid(*net_size, STRIDES)
    scores = np.sqrt(np.clip(cls[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
    candidates = np.flatnonzero(scores >= settings.score_threshold)
    if len(candidates) > 1:  # NMSBoxes runs only then, and keeps only scores above the threshold
        candidates = candidates[scores[candidates] > settings.score_threshold]
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")[:TOP_K]]
    cell, stride, d = grid[candidates], strides[candidates, None], bbox[candidates]
    size = np.exp(d[:, 2:]) * stride
    corner = (cell + d[:, :2]) * stride - size / 2
    boxes = np.hstack([corner, corner + size])
    points = (cell[:, None, :] + kps[candidates].reshape(-1, 5, 2)) * stride[:, :, None]
    faces = Faces(boxes, scores[candidates], points)
    int_corner, int_size = np.trunc(corner), np.trunc(size)
    int_boxes = np.hstack([int_corner, int_corner + int_size])
    return faces.take(nms(int_boxes, faces.scores, settings.nms_threshold))


FORMAT = Format(
    name="yunet",
    description="YuNet (OpenCV FaceDetectorYN): cls/obj/bbox/kps at strides 8/16/32",
    has_landmarks=True,
    preprocess=Preprocess(input_size=None, resize="letterbox", color="BGR", size_multiple=32),
    match=match,
    decode=decode,
    default_nms_threshold=0.3,
    split=split,
)
