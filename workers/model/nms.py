"""The one non-maximum suppression every decoder uses: exact greedy NMS, vectorized in blocks.

Greedy NMS is sequential by nature (a box survives only if no *kept* higher-scoring box overlaps it).
We process boxes in score order in blocks: a block is first thinned by every box kept so far (one
[kept x block] IoU matrix), then resolved internally by iterating `keep = not any(kept earlier and
overlapping)` to its fixed point on the block's [block x block] matrix. The fixed point of that
triangular system is unique and equals the greedy result, so the output is exactly what the
classic box-by-box loop (insightface's `py_cpu_nms`, OpenCV's `NMSBoxes`) keeps.
"""

from __future__ import annotations

import numpy as np

BLOCK = 256
_TINY = np.finfo(np.float32).tiny
_LATER = np.triu(np.ones((BLOCK, BLOCK), bool), k=1)  # [i, j]: box j comes after box i in the block


def pairwise_intersection(a: np.ndarray, b: np.ndarray, plus_one: bool) -> tuple[np.ndarray, ...]:
    """(intersection [len(a), len(b)], areas of a, areas of b) of x1,y1,x2,y2 boxes.

    `plus_one` uses the (x2-x1+1) pixel convention."""
    one = 1.0 if plus_one else 0.0
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one
    return np.maximum(iw, 0) * np.maximum(ih, 0), area_a, area_b


def pairwise_iou(a: np.ndarray, b: np.ndarray, plus_one: bool) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of x1,y1,x2,y2 boxes (0 where the union is empty)."""
    inter, area_a, area_b = pairwise_intersection(a, b, plus_one)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, _TINY)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    plus_one: bool = False,
    max_kept: int | None = None,
    suppress_equal: bool = False,
) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, highest score first.

    A box is suppressed when its IoU with a kept, higher-scoring box is greater than `iou_threshold`
    (or equal to it, with `suppress_equal`, as some references do). Equal scores keep their input order.
    """
    overlap = np.greater_equal if suppress_equal else np.greater
    order = np.argsort(-scores, kind="stable")
    if len(order) <= 1:  # nothing to suppress (the common case at a high score threshold: one face)
        return order
    ordered = boxes[order].astype(np.float32, copy=False)
    kept = np.zeros(0, np.int64)
    for start in range(0, len(order), BLOCK):
        block = np.arange(start, min(start + BLOCK, len(order)))
        if kept.size:
            block = block[
                ~overlap(pairwise_iou(ordered[kept], ordered[block], plus_one), iou_threshold).any(0)
            ]
        overlaps = overlap(pairwise_iou(ordered[block], ordered[block], plus_one), iou_threshold)
        overlaps &= _LATER[: len(block), : len(block)]
        keep = np.ones(len(block), bool)
        while True:
            updated = ~(overlaps & keep[:, None]).any(0)
            if (updated == keep).all():
                break
            keep = updated
        kept = np.concatenate([kept, block[keep]])
        if max_kept is not None and len(kept) >= max_kept:
            kept = kept[:max_kept]
            break
    return order[kept]
