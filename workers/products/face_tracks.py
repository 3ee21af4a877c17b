"""Faces to hide in every frame of a video piece, from the boxes found in its sampled frames.

Between two consecutive detection frames, faces are paired greedily by IoU (>= `min_iou`); a face left
over on both sides is then paired by how far its centre moved relative to its size (a fast face has
IoU 0 with itself one sample later): `max_shift` sizes at most, the two sizes within a factor 2. A pair
is interpolated linearly over the frames between. A face whose next detection frame has no IoU pair
(it ended, was missed there, or moved fast) is also held unchanged for `hold` frames after, and one with
no IoU pair in the previous detection frame for `hold` frames before: a missed face or one that appears
between two samples stays covered when `hold` is at least the sampling step. A face missed in exactly
one detection frame is moreover paired with itself across it (same rules) and interpolated over the gap.
Extra boxes cost a blur; a missing one is a leak, so the rules only ever add boxes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

NO_BOXES = np.zeros((0, 4), np.float32)


def boxes_per_frame(
    detections: Mapping[int, np.ndarray],
    frames: int,
    hold: int,
    min_iou: float = 0.3,
    max_shift: float = 2.0,
) -> list[np.ndarray]:
    """The boxes ([n, 4] float32 x1, y1, x2, y2) to hide in each of the piece's `frames` frames.

    `detections` maps a frame index to the boxes found there (an empty array where the frame was
    sampled and had none: an absent index is a frame that was not sampled, and is no evidence that a
    face left). Indices outside 0..frames-1 (a neighbouring piece's samples) count for the tracks but
    get no entry. A frame may hold overlapping boxes for one face (held and interpolated)."""
    if frames <= 0:
        return []
    keys = sorted(detections)
    boxes = [np.asarray(detections[k], np.float32).reshape(-1, 4) for k in keys]
    chunks: list[tuple[np.ndarray, np.ndarray]] = []  # (frame indices [k], boxes [k, 4])
    ended = [np.ones(len(b), bool) for b in boxes]  # no IoU pair in the next detection frame
    started = [np.ones(len(b), bool) for b in boxes]  # no IoU pair in the previous one
    open_end = [np.ones(len(b), bool) for b in boxes]  # no pair at all in the next detection frame
    open_start = [np.ones(len(b), bool) for b in boxes]
    for i, (frame, found) in enumerate(zip(keys, boxes, strict=True)):
        chunks.append((np.full(len(found), frame), found))
        if i == 0:
            continue
        by_iou, by_shift = _pair(boxes[i - 1], found, min_iou, max_shift)
        for a, b in (by_iou, by_shift):
            chunks.append(_between(keys[i - 1], frame, boxes[i - 1][a], found[b]))
            open_end[i - 1][a], open_start[i][b] = False, False
        ended[i - 1][by_iou[0]], started[i][by_iou[1]] = False, False
    for i in range(len(keys) - 2):  # a face missed in one detection frame: paired across it
        a_left, b_left = np.flatnonzero(open_end[i]), np.flatnonzero(open_start[i + 2])
        for a, b in _pair(boxes[i][a_left], boxes[i + 2][b_left], min_iou, max_shift):
            chunks.append(_between(keys[i], keys[i + 2], boxes[i][a_left[a]], boxes[i + 2][b_left[b]]))
    for frame, found, end, start in zip(keys, boxes, ended, started, strict=True):
        chunks.append(_held(frame, found[end], np.arange(1, hold + 1)))
        chunks.append(_held(frame, found[start], -np.arange(1, hold + 1)))
    at = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0, np.int64)
    every = np.concatenate([c[1] for c in chunks]) if chunks else NO_BOXES
    inside = (at >= 0) & (at < frames)
    at, every = at[inside], every[inside]
    order = np.argsort(at, kind="stable")
    bounds = np.searchsorted(at[order], np.arange(1, frames))
    return [part.astype(np.float32, copy=False) for part in np.split(every[order], bounds)]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, m] IoU of every box of `a` with every box of `b` (0 where either box is empty)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, np.float64), where=union > 0)


def _pair(
    a: np.ndarray, b: np.ndarray, min_iou: float, max_shift: float
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Pairs (rows of `a`, rows of `b`): by IoU, then the faces left by centre shift over size."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    iou = iou_matrix(a64, b64)
    by_iou = _greedy(iou, iou >= min_iou)
    centre_a, centre_b = (a64[:, :2] + a64[:, 2:]) / 2, (b64[:, :2] + b64[:, 2:]) / 2
    size_a = np.sqrt(np.clip(a64[:, 2:] - a64[:, :2], 0, None).prod(axis=1))
    size_b = np.sqrt(np.clip(b64[:, 2:] - b64[:, :2], 0, None).prod(axis=1))
    mean_size = (size_a[:, None] + size_b[None, :]) / 2
    shift = np.linalg.norm(centre_a[:, None] - centre_b[None, :], axis=2) / np.maximum(mean_size, 1e-9)
    similar = (size_a[:, None] <= 2 * size_b[None, :]) & (size_b[None, :] <= 2 * size_a[:, None])
    free = np.ones(iou.shape, bool)
    free[by_iou[0], :] = False
    free[:, by_iou[1]] = False
    by_shift = _greedy(-shift, free & similar & (shift <= max_shift) & (mean_size > 0))
    return by_iou, by_shift


def _greedy(score: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one pairs by highest `score` among `allowed`, as rows and columns.

    Each round takes every pair that is the best of both its row and its column (the global best always
    is), then strikes their rows and columns: the same pairs as sorting all scores and taking each
    pair whose row and column are still free, in a few vectorized rounds."""
    score = np.where(allowed, score, -np.inf)
    rows, columns = [], []
    while score.size and np.isfinite(score).any():
        best_column = score.argmax(axis=1)
        best_row = score.argmax(axis=0)
        row = np.flatnonzero(
            np.isfinite(score[np.arange(len(score)), best_column])
            & (best_row[best_column] == np.arange(len(score)))
        )
        column = best_column[row]
        rows.append(row)
        columns.append(column)
        score[row, :] = -np.inf
        score[:, column] = -np.inf
    empty = np.zeros(0, np.intp)
    return (np.concatenate(rows) if rows else empty), (np.concatenate(columns) if columns else empty)


def _between(first: int, last: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paired boxes `a` at frame `first` and `b` at `last` interpolated over the frames between."""
    frames = np.arange(first + 1, last)
    weight = ((frames - first) / (last - first))[:, None, None]
    a64 = a.astype(np.float64)[None]
    boxes = a64 + weight * (b.astype(np.float64)[None] - a64)
    return np.repeat(frames, len(a)), boxes.reshape(-1, 4).astype(np.float32)


def _held(frame: int, boxes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`boxes` unchanged at `frame` + each offset."""
    return np.repeat(frame + offsets, len(boxes)), np.tile(boxes, (len(offsets), 1))
