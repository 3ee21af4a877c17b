"""Reference implementations written out plainly (one box at a time), for tests to compare against."""

from __future__ import annotations

import math

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


def insightface_anchor_reference(
    outputs: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    width: int,
    height: int,
    threshold: float,
    nms_threshold: float,
    top_k: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """insightface `RetinaFace.detect` (top_k None) / mxnet-SSH `SSHDetector.detect` (top_k 1000), written
    out one anchor at a time: `generate_anchors`, `anchors_plane`, `bbox_pred`, `clip_boxes`,
    `landmark_pred`, then one NMS (+1 areas, suppressing IoU > threshold as the GPU kernel does).

    `outputs`: per stride 32, 16, 8 the (scores, deltas, landmarks or None) tensors of one image.
    RetinaFace keeps scores >= threshold per stride before NMS; SSH keeps the top_k per stride, runs NMS
    on them all and applies the threshold after it. Returns boxes [N,4], scores [N], points [N,10] or None.
    """
    found = []  # (score, box, points)
    for stride, scales, (cls, deltas, landmarks) in zip(
        (32, 16, 8), ((32, 16), (8, 4), (2, 1)), outputs, strict=True
    ):
        base = []
        for scale in scales:  # _scale_enum of the base box [0, 0, 15, 15] (ratio 1 changes nothing)
            size, ctr = 16.0 * scale, 0.5 * (16.0 - 1)
            base.append(
                (
                    ctr - 0.5 * (size - 1),
                    ctr - 0.5 * (size - 1),
                    ctr + 0.5 * (size - 1),
                    ctr + 0.5 * (size - 1),
                )
            )
        num_anchors = len(scales)
        cls, deltas = cls[0].tolist(), deltas[0].tolist()
        landmarks = None if landmarks is None else landmarks[0].tolist()
        level = []
        for y in range(len(deltas[0])):
            for x in range(len(deltas[0][0])):
                for a in range(num_anchors):
                    x1, y1 = base[a][0] + x * stride, base[a][1] + y * stride
                    x2, y2 = base[a][2] + x * stride, base[a][3] + y * stride
                    w, h = x2 - x1 + 1.0, y2 - y1 + 1.0
                    cx, cy = x1 + 0.5 * (w - 1.0), y1 + 0.5 * (h - 1.0)
                    dx, dy, dw, dh = (deltas[a * 4 + j][y][x] for j in range(4))
                    pcx, pcy = dx * w + cx, dy * h + cy
                    pw, ph = math.exp(dw) * w, math.exp(dh) * h
                    box = [
                        pcx - 0.5 * (pw - 1.0),
                        pcy - 0.5 * (ph - 1.0),
                        pcx + 0.5 * (pw - 1.0),
                        pcy + 0.5 * (ph - 1.0),
                    ]
                    box = [max(min(v, (width, height)[k % 2] - 1), 0) for k, v in enumerate(box)]
                    points = None
                    if landmarks is not None:
                        points = []
                        for k in range(5):
                            points.append(landmarks[a * 10 + 2 * k][y][x] * w + cx)
                            points.append(landmarks[a * 10 + 2 * k + 1][y][x] * h + cy)
                    level.append((cls[num_anchors + a][y][x], box, points))
        if top_k is None:
            found += [item for item in level if item[0] >= threshold]
        else:
            found += sorted(level, key=lambda item: -item[0])[:top_k]
    scores = np.array([item[0] for item in found], np.float64)
    boxes = np.array([item[1] for item in found], np.float64).reshape(-1, 4)
    kept = [i for i in reference_loop(boxes, scores, nms_threshold, plus_one=True) if scores[i] >= threshold]
    points = None if outputs[0][2] is None else np.array([found[i][2] for i in kept]).reshape(-1, 10)
    return boxes[kept], scores[kept], points
