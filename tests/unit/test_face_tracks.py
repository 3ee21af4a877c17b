"""Faces to hide in every frame of a video piece from sparse detections: linear motion is interpolated
exactly, a missed or appearing face stays covered by the hold, and nothing lands outside the piece."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from facesweep.workers.products.face_tracks import boxes_per_frame, iou_matrix

PROPERTY = settings(max_examples=150, deadline=None)


def box(x: float, y: float, size: float = 40.0) -> np.ndarray:
    return np.array([[x, y, x + size, y + size]], np.float32)


def covered(boxes: np.ndarray, face: np.ndarray, min_iou: float = 0.99) -> bool:
    """Whether some box of `boxes` is (nearly) the face."""
    return bool(len(boxes)) and float(iou_matrix(boxes, face).max()) >= min_iou


@PROPERTY
@given(
    step=st.integers(1, 8),
    samples=st.integers(2, 6),
    start=st.tuples(st.integers(0, 500), st.integers(0, 500)),
    velocity=st.tuples(st.integers(-6, 6), st.integers(-6, 6)),
    hold=st.integers(0, 4),
)
def test_a_face_moving_linearly_is_interpolated_exactly(
    step: int, samples: int, start: tuple[int, int], velocity: tuple[int, int], hold: int
) -> None:
    """Sampled every `step` frames, a box moving by `velocity` a frame (fast enough at step 8 to have
    IoU 0 with itself one sample later) is at its true place in every frame between the samples."""
    true = np.array([box(start[0] + t * velocity[0], start[1] + t * velocity[1])[0] for t in range(200)])
    last = (samples - 1) * step
    frames = last + hold + 3
    detections = {t: true[t : t + 1] for t in range(0, last + 1, step)}
    per_frame = boxes_per_frame(detections, frames, hold)
    assert len(per_frame) == frames
    for t in range(last + 1):
        assert any(np.allclose(b, true[t], atol=1e-3) for b in per_frame[t]), (t, per_frame[t], true[t])
    for t in range(last + 1, last + hold + 1):  # held where it was last seen
        assert any(np.allclose(b, true[last], atol=1e-3) for b in per_frame[t])
    assert all(len(per_frame[t]) == 0 for t in range(last + hold + 1, frames))


def test_a_face_missed_in_one_sample_stays_covered() -> None:
    """Found at 0, 2, 4, missed at 6 (sampled, none found), found again at 8: covered in 5..8 whether it
    stands still or moves slowly."""
    for velocity in (0.0, 1.5):
        true = [box(100 + velocity * t, 80) for t in range(10)]
        detections = {t: true[t] for t in (0, 2, 4, 8)} | {6: np.zeros((0, 4), np.float32)}
        per_frame = boxes_per_frame(detections, 10, hold=2)
        for t in range(9):
            assert covered(per_frame[t], true[t], min_iou=0.9), (velocity, t, per_frame[t])
        # and across the miss it is interpolated (not only held at both ends)
        assert any(np.allclose(b, true[6][0], atol=1e-3) for b in per_frame[6])


def test_a_missed_face_without_hold_is_only_bridged_across_one_miss() -> None:
    """hold 0: a face missed in one sample is still paired across it; missed in two, it is not
    (that is what `hold` is for)."""
    face = box(100, 100)
    empty = np.zeros((0, 4), np.float32)
    once = boxes_per_frame({0: face, 4: empty, 8: face}, 9, hold=0)
    assert all(covered(once[t], face) for t in range(9))
    twice = boxes_per_frame({0: face, 4: empty, 8: empty, 12: face}, 13, hold=0)
    assert [len(b) for b in twice] == [1] + [0] * 11 + [1]


def test_hold_extends_both_ways_and_stops_at_the_piece() -> None:
    face = box(10, 10)
    per_frame = boxes_per_frame({5: face}, 10, hold=3)
    assert [len(b) for b in per_frame] == [0, 0, 1, 1, 1, 1, 1, 1, 1, 0]
    assert all(np.array_equal(per_frame[t], face) for t in range(2, 9))
    near_edges = boxes_per_frame({1: face, 8: box(200, 200)}, 10, hold=3)
    assert len(near_edges) == 10
    assert covered(near_edges[0], face) and covered(near_edges[4], face) and not covered(near_edges[5], face)
    assert covered(near_edges[9], box(200, 200)) and covered(near_edges[5], box(200, 200))
    assert [b.shape for b in boxes_per_frame({}, 4, hold=3)] == [(0, 4)] * 4
    assert boxes_per_frame({0: face}, 0, hold=3) == []


def test_unmatched_faces_are_held_from_both_sides() -> None:
    """A face that leaves and another that arrives between two samples (far apart, different sizes):
    each held from its own side, never moved towards the other."""
    leaving, arriving = box(0, 0, 40), box(400, 300, 120)
    per_frame = boxes_per_frame({0: leaving, 10: arriving}, 11, hold=3)
    assert all(covered(per_frame[t], leaving) and len(per_frame[t]) == 1 for t in range(4))
    assert all(len(per_frame[t]) == 0 for t in range(4, 7))
    assert all(covered(per_frame[t], arriving) and len(per_frame[t]) == 1 for t in range(7, 11))


def test_two_faces_are_paired_by_overlap_not_by_order() -> None:
    """Two faces listed in opposite orders in consecutive samples: each interpolated towards itself."""
    a0, b0, a4, b4 = box(0, 0), box(300, 0), box(8, 0), box(292, 0)
    per_frame = boxes_per_frame({0: np.vstack([a0, b0]), 4: np.vstack([b4, a4])}, 5, hold=0)
    assert len(per_frame[2]) == 2
    assert covered(per_frame[2], box(4, 0)) and covered(per_frame[2], box(296, 0))


@PROPERTY
@given(
    detections=st.dictionaries(
        st.integers(-5, 30),
        st.lists(
            st.tuples(st.floats(0, 300), st.floats(0, 300), st.floats(1, 80), st.floats(1, 80)), max_size=4
        ),
        max_size=8,
    ),
    frames=st.integers(1, 25),
    hold=st.integers(0, 5),
)
def test_every_detection_is_covered_in_its_frame_and_held(
    detections: dict[int, list[tuple[float, float, float, float]]], frames: int, hold: int
) -> None:
    """Whatever the detections: one float32 [n, 4] array per frame, every detected box present in its
    own frame, and every box present within `hold` frames either side unless paired with a face there."""
    arrays = {
        t: np.array([[x, y, x + w, y + h] for x, y, w, h in faces], np.float32).reshape(-1, 4)
        for t, faces in detections.items()
    }
    per_frame = boxes_per_frame(arrays, frames, hold)
    assert len(per_frame) == frames
    assert all(b.dtype == np.float32 and b.ndim == 2 and b.shape[1] == 4 for b in per_frame)
    for t, found in arrays.items():
        if 0 <= t < frames:
            for face in found:
                assert any(np.array_equal(b, face) for b in per_frame[t])
    keys = sorted(arrays)
    if keys and keys[-1] < frames and len(arrays[keys[-1]]):  # the last sample's faces: held after it
        for t in range(max(0, keys[-1] + 1), min(frames, keys[-1] + hold + 1)):
            for face in arrays[keys[-1]]:
                assert any(np.array_equal(b, face) for b in per_frame[t])
