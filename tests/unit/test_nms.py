"""The one NMS: the same kept set as OpenCV's NMSBoxes and as the classic box-by-box loop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facesweep.workers.model.nms import nms
from tests.references import reference_loop


def random_boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    xy = rng.uniform(0, 400, (n, 2))
    wh = rng.uniform(1, 120, (n, 2))
    return np.hstack([xy, xy + wh]).astype(np.float32), rng.uniform(0, 1, n).astype(np.float32)


@pytest.mark.parametrize("seed", range(20))
def test_same_kept_set_as_opencv(seed: int) -> None:
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, int(rng.integers(1, 700)))
    threshold = float(rng.uniform(0.1, 0.8))
    xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
    expected = np.array(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, threshold)).reshape(-1)
    assert sorted(nms(boxes, scores, threshold).tolist()) == sorted(expected.tolist())


@pytest.mark.parametrize("seed", range(5))
def test_plus_one_convention_matches_the_reference_loop_in_order(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    boxes, scores = random_boxes(rng, 600)  # more than one block of 256
    assert nms(boxes, scores, 0.4, plus_one=True).tolist() == reference_loop(boxes, scores, 0.4, True)


def test_equal_iou_is_suppressed_only_when_asked() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)  # IoU exactly 1/3
    scores = np.array([0.9, 0.8], np.float32)
    iou = np.float32(50) / np.float32(150)
    assert nms(boxes, scores, iou).tolist() == [0, 1]
    assert nms(boxes, scores, iou, suppress_equal=True).tolist() == [0]


def test_max_kept_and_empty_input() -> None:
    boxes = np.array([[0, 0, 1, 1], [10, 10, 11, 11], [20, 20, 21, 21]], np.float32)
    assert nms(boxes, np.array([0.1, 0.3, 0.2], np.float32), 0.5, max_kept=2).tolist() == [1, 2]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).tolist() == []
