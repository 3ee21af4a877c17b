"""Reference implementations written out plainly (one box at a time), for tests to compare against."""

from __future__ import annotations

import numpy as np


def reference_loop(boxes: np.ndarray, scores: np.ndarray, threshold: float, plus_one: bool) -> list[int]:
    """insightface/biubug6 `py_cpu_nms`, written out plainly: one kept box at a time."""
    one = 1.0 if plus_one else 0.0
    order = list(np.argsort(-scores, kind="stable"))
    kept = []
    while order:
        i, rest = order[0], order[1:]
        kept.append(int(i))
        survivors = []
        for j in rest:
            iw = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]) + one
            ih = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]) + one
            inter = max(0.0, iw) * max(0.0, ih)
            area_i = (boxes[i, 2] - boxes[i, 0] + one) * (boxes[i, 3] - boxes[i, 1] + one)
            area_j = (boxes[j, 2] - boxes[j, 0] + one) * (boxes[j, 3] - boxes[j, 1] + one)
            if inter / (area_i + area_j - inter) <= threshold:
                survivors.append(j)
        order = survivors
    return kept
