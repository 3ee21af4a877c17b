"""insightface SCRFD: anchor-free distance regression at strides 8/16/32, two anchors per cell.

Outputs per stride: score [.., K*2, 1] (sigmoid), bbox [.., K*2, 4] (left, top, right, bottom distances
in strides) and, for the `kps` models, kps [.., K*2, 10] (point offsets in strides); K = (H/s) * (W/s),
rows ordered (row, column, anchor). The `bnkps` export names them score_/bbox_/kps_{8,16,32} with a batch
axis; other exports have numeric names and no batch axis, and insightface then goes by count and
position (9 outputs: scores, boxes, points per stride; 6: no points). Reference (insightface
`model_zoo/scrfd.py`): anchor centre (x * s, y * s); box = centre -/+ distance * s; points = centre +
offset * s; keep score >= threshold; order by `argsort()[::-1]` (in `detect`, again in `nms`); NMS with
+1 areas, suppressing IoU > 0.4; no top-k. Input RGB, (x - 127.5) / 128, 640x640 letterboxed at the
top-left with black (raw 0) padding, the short side's length truncated and one scale mapping both axes
back (`Preprocess.truncate`: a rounded length changes the network input and, measured on WIDER photos,
the faces found).

A model without point outputs has no landmarks, so it is its own format, `scrfd-nokps`, sharing this
decoder. Batches: a batch axis is cut as usual; exports without one interleave a batch's images
per anchor (rows ordered row, column, image, anchor), measured on scrfd_2.5g.onnx.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache, partial

import numpy as np

from facesweep.workers.faces import Faces
from facesweep.workers.model.formats.base import (
    PLUS_ONE_NMS,
    DecodeSettings,
    Format,
    OutputInfo,
    find_named,
    stride_grid,
)
from facesweep.workers.model.preprocess import Preprocess

STRIDES = (8, 16, 32)
NUM_ANCHORS = 2
KINDS = (("score", 1), ("bbox", 4), ("kps", 10))  # output name prefix, channels


@lru_cache(maxsize=16)
def anchors(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres [P, 2] (x, y) in input pixels and their strides [P], in output row order."""
    cells, strides = stride_grid(width, height, STRIDES, NUM_ANCHORS)
    return cells * strides[:, None], strides


def _names(with_kps: bool) -> list[str]:
    return [f"{kind}_{stride}" for kind, _ in KINDS[: 3 if with_kps else 2] for stride in STRIDES]


def _shapes_fit(outputs: Sequence[OutputInfo], indices: list[int]) -> bool:
    """Rank 2 or 3, the channels of scores / boxes / points, and anchor counts n, n/4, n/16 per kind."""
    shapes = [outputs[i].shape for i in indices]
    if any(len(shape) not in (2, 3) for shape in shapes):
        return False
    channels = [channel for _, channel in KINDS for _ in STRIDES][: len(shapes)]
    if [shape[-1] for shape in shapes] != channels:
        return False
    counts = [shape[-2] for shape in shapes]
    if None in counts:  # dynamic input size
        return True
    return counts == [counts[0] // 4**k for k in range(len(STRIDES))] * (len(counts) // len(STRIDES))


def match(outputs: Sequence[OutputInfo], with_kps: bool) -> list[int] | None:
    named = find_named(outputs, _names(True)) or find_named(outputs, _names(False))
    if named is not None:
        indices = named if (len(named) == 9) == with_kps else None
    elif len(outputs) == (9 if with_kps else 6):  # numeric names: insightface goes by count and position
        indices = list(range(len(outputs)))
    else:
        return None
    return indices if indices is not None and _shapes_fit(outputs, indices) else None


def split(outputs: Sequence[np.ndarray], batch: int) -> list[list[np.ndarray]]:
    """Each image's outputs: cut along the batch axis, or de-interleaved when there is none."""

    def cut(output: np.ndarray, image: int) -> np.ndarray:
        if output.ndim == 3:
            return output[image : image + 1]
        channels = output.shape[-1]
        return output.reshape(-1, batch, NUM_ANCHORS, channels)[:, image].reshape(-1, channels)

    return [[cut(output, image) for output in outputs] for image in range(batch)]


def decode(outputs: Sequence[np.ndarray], net_size: tuple[int, int], settings: DecodeSettings) -> Faces:
    """Scores, boxes and (with 9 outputs) points, each one output per stride, in `match` order."""
    score, bbox, kps = (
        np.concatenate([o.reshape(-1, o.shape[-1]) for o in outputs[k : k + 3]]) if k < len(outputs) else None
        for k in (0, 3, 6)
    )
    centers, strides = anchors(*net_size)
    candidates = np.flatnonzero(score[:, 0] >= settings.score_threshold)
    # insightface sorts with `argsort()[::-1]` in `detect` and again in `nms`: equal scores (a sigmoid
    # saturated at 1.0, say) keep that order, which the stable NMS below preserves.
    candidates = candidates[np.argsort(score[candidates, 0])[::-1]]
    candidates = candidates[np.argsort(score[candidates, 0])[::-1]]
    center, stride = centers[candidates], strides[candidates, None]
    distance = bbox[candidates] * stride
    boxes = np.hstack([center - distance[:, :2], center + distance[:, 2:]])
    points = None
    if kps is not None:
        points = center[:, None, :] + (kps[candidates] * stride).reshape(-1, 5, 2)
    faces = Faces(boxes, score[candidates, 0], points)
    return PLUS_ONE_NMS.apply(faces, settings.nms_threshold)


def _format(name: str, with_kps: bool) -> Format:
    return Format(
        name=name,
        description=f"insightface SCRFD score/bbox{'/kps' if with_kps else ''} at strides 8/16/32",
        has_landmarks=with_kps,
        preprocess=Preprocess(
            input_size=(640, 640),
            resize="letterbox",
            color="RGB",
            mean=(127.5, 127.5, 127.5),
            scale=(128.0, 128.0, 128.0),
            truncate=True,
        ),
        match=partial(match, with_kps=with_kps),
        decode=decode,
        nms_rule=PLUS_ONE_NMS,
        default_nms_threshold=0.4,
        split=split,
    )


FORMAT = _format("scrfd", with_kps=True)
FORMAT_NO_KPS = _format("scrfd-nokps", with_kps=False)
