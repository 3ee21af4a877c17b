"""Tests for workers.evaluate on small hand-made boxes with hand-computed answers, plus the real subset."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from jobs.local_s3 import LocalS3
from workers.evaluate import match_by_suffix, read_ground_truth, read_predictions, recall
from workers.faces import Faces
from workers.nms import pairwise_iou
from workers.sink import ImageResult, results_table, write_parquet
from workers.storage import storage_for

SHARED = Path(__file__).parents[1].parent / "shared"
SUBSET_ANNOTATIONS = SHARED / "data/widerface/val-subset-145/annotations.txt"


def boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, np.float32).reshape(-1, 4)


# --- read_ground_truth -------------------------------------------------------------------------------


def test_read_ground_truth_converts_xywh_and_groups_by_image(tmp_path: Path) -> None:
    path = tmp_path / "annotations.txt"
    path.write_text(
        "# one line per face\n"
        "# columns: image_relpath x y w h blur ...\n"
        "images/b/2.jpg 10 20 30 40 0 0 0 0 0 0 1 1 1\n"
        "images/a/1.jpg 1 2 3 4 2 0 0 0 2 0 0 0 1\n"
        "images/b/2.jpg 0 0 5 5 0 0 0 0 0 0 1 1 1\n"
        "\n"
    )
    truth = read_ground_truth(path)
    assert list(truth) == ["images/b/2.jpg", "images/a/1.jpg"]  # order of first appearance
    assert truth["images/b/2.jpg"].dtype == np.float32
    np.testing.assert_array_equal(truth["images/b/2.jpg"], [[10, 20, 40, 60], [0, 0, 5, 5]])
    np.testing.assert_array_equal(truth["images/a/1.jpg"], [[1, 2, 4, 6]])


def test_read_ground_truth_of_only_comments_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "annotations.txt"
    path.write_text("# nothing here\n")
    assert read_ground_truth(path) == {}


def test_real_subset_has_145_images_and_4255_faces() -> None:
    if not SUBSET_ANNOTATIONS.is_file():
        pytest.skip(f"WIDER FACE subset not available at {SUBSET_ANNOTATIONS}")
    truth = read_ground_truth(SUBSET_ANNOTATIONS)
    assert len(truth) == 145
    assert sum(len(faces) for faces in truth.values()) == 4255
    assert all(name.startswith(("images/0--Parade/", "images/1--Handshaking/")) for name in truth)


# --- IoU and recall ---------------------------------------------------------------------------


def test_iou_matrix_hand_computed() -> None:
    a = boxes((0, 0, 10, 10), (5, 5, 5, 5))  # the second is empty
    b = boxes((0, 0, 10, 10), (5, 0, 15, 10), (20, 20, 30, 30))
    # (0,0,10,10) vs (5,0,15,10): intersection 50, union 150
    np.testing.assert_allclose(pairwise_iou(a, b, plus_one=False), [[1, 1 / 3, 0], [0, 0, 0]])
    assert pairwise_iou(boxes(), b, plus_one=False).shape == (0, 3)


def test_recall_perfect_match() -> None:
    truth = boxes((0, 0, 10, 10), (20, 20, 40, 40))
    assert recall(truth[::-1], truth) == (2, 2)


def test_recall_counts_a_miss_and_ignores_far_or_weak_overlaps() -> None:
    truth = boxes((0, 0, 10, 10), (20, 20, 40, 40))
    # (0,0,10,12) vs (0,0,10,10): IoU 100/120 = 0.83, found; (30,20,50,40) vs the second: IoU 200/600 = 1/3
    predictions = boxes((0, 0, 10, 12), (30, 20, 50, 40), (100, 100, 120, 120))
    assert recall(predictions, truth) == (1, 2)
    assert recall(predictions, truth, iou=0.3) == (2, 2)
    assert recall(predictions, truth, iou=0.9) == (0, 2)


def test_recall_counts_a_duplicate_prediction_once() -> None:
    truth = boxes((0, 0, 10, 10))
    predictions = boxes((0, 0, 10, 10), (0, 0, 10, 11), (1, 0, 10, 10))
    assert recall(predictions, truth) == (1, 1)


def test_recall_without_predictions_or_faces() -> None:
    assert recall(boxes(), boxes((0, 0, 10, 10), (20, 20, 30, 30))) == (0, 2)
    assert recall(boxes((0, 0, 10, 10)), boxes()) == (0, 0)
    assert recall(boxes(), boxes()) == (0, 0)


def test_recall_min_height_excludes_small_faces_from_total_and_from_found() -> None:
    # heights: 40, 10 (a prediction finds it exactly), 20
    truth = boxes((0, 0, 40, 40), (100, 100, 110, 110), (200, 200, 220, 220))
    predictions = boxes((0, 0, 40, 40), (100, 100, 110, 110))
    assert recall(predictions, truth) == (2, 3)
    assert recall(predictions, truth, min_height=20) == (1, 2)  # 20 px high counts (>=)
    assert recall(predictions, truth, min_height=21) == (1, 1)
    assert recall(predictions, truth, min_height=41) == (0, 0)


def test_recall_ignored_face_does_not_take_a_prediction_from_a_counted_one() -> None:
    counted = (0, 0, 40, 40)  # 40 high
    ignored = (0, 0, 30, 36)  # 36 high
    prediction = boxes((0, 0, 32, 38))  # IoU 1216/1600 = 0.76 with counted, 1080/1216 = 0.89 with ignored
    assert recall(prediction, boxes(counted, ignored), min_height=38) == (1, 1)
    assert recall(prediction, boxes(counted, ignored)) == (1, 2)  # without the filter it takes the closer


def test_recall_matches_greedily_in_score_order() -> None:
    # Two overlapping faces; `high` fits the first best (IoU 0.905) and also the second (0.739),
    # `low` fits only the first (0.538; 0.333 with the second).
    truth = boxes((0, 0, 10, 10), (2, 0, 12, 10))
    high, low = (0.5, 0, 10.5, 10), (-3, 0, 7, 10)
    predictions = boxes(low, high)
    # in score order `high` takes the first face and `low` is left with nothing (greedy, not optimal)
    assert recall(predictions, truth, scores=np.array([0.3, 0.9])) == (1, 2)
    # without scores the given order is used: `low` takes the first face, `high` the second
    assert recall(predictions, truth) == (2, 2)


# --- match_by_suffix ---------------------------------------------------------------------------------


def _predictions(*uris: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {uri: (boxes((i, i, i + 1, i + 1)), np.array([0.9], np.float32)) for i, uri in enumerate(uris)}


def test_match_by_suffix_pairs_on_whole_path_components() -> None:
    predictions = _predictions(
        "/data/val/images/0--Parade/a.jpg",
        "s3://bucket/run/images/1--Handshaking/b.jpg",
        "/data/xximages/0--Parade/c.jpg",
        "/data/other.jpg",
    )
    truth = {
        "images/0--Parade/a.jpg": boxes(),
        "images/1--Handshaking/b.jpg": boxes(),
        "images/0--Parade/c.jpg": boxes(),  # only a partial-component match: unmatched
        "images/0--Parade/missing.jpg": boxes(),
    }
    matched = match_by_suffix(predictions, truth)
    assert list(matched) == ["images/0--Parade/a.jpg", "images/1--Handshaking/b.jpg"]
    assert matched["images/0--Parade/a.jpg"] is predictions["/data/val/images/0--Parade/a.jpg"]
    assert (
        matched["images/1--Handshaking/b.jpg"] is predictions["s3://bucket/run/images/1--Handshaking/b.jpg"]
    )


def test_match_by_suffix_refuses_an_ambiguous_match() -> None:
    predictions = _predictions("/run1/images/a.jpg", "/run2/images/a.jpg")
    with pytest.raises(ValueError, match="several predictions"):
        match_by_suffix(predictions, {"images/a.jpg": boxes()})


# --- read_predictions --------------------------------------------------------------------------------


def _write_output(output: str) -> None:
    """Two shards in facesweep's own format, an error row, and a job file readers must skip."""
    two = Faces(
        boxes((1, 2, 3, 4), (5, 6, 7, 8)), np.array([0.9, 0.6], np.float32), np.zeros((2, 5, 2), np.float32)
    )
    storage = storage_for(output)
    first = [
        ImageResult(f"{output}/img/a.jpg", 100, 80, faces=two),
        ImageResult(f"{output}/img/broken.jpg", error="not an image"),
    ]
    second = [ImageResult(f"{output}/img/b.jpg", 50, 50, faces=Faces.empty(with_landmarks=True))]
    write_parquet(results_table(first, "m"), storage, f"{output}/part-000000.parquet")
    write_parquet(results_table(second, "m"), storage, f"{output}/part-000001.parquet")
    storage.put(f"{output}/_job.json", b"{}")


def _check_read(output: str) -> None:
    predictions = read_predictions(output)
    assert sorted(predictions) == [f"{output}/img/a.jpg", f"{output}/img/b.jpg"]  # the error row is left out
    found, scores = predictions[f"{output}/img/a.jpg"]
    np.testing.assert_array_equal(found, [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(scores, np.array([0.9, 0.6], np.float32))
    none, no_scores = predictions[f"{output}/img/b.jpg"]
    assert none.shape == (0, 4) and no_scores.shape == (0,)


def test_read_predictions_from_a_local_output(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    _write_output(output)
    _check_read(output)


def test_read_predictions_refuses_duplicate_images(tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    _write_output(output)
    table = results_table([ImageResult(f"{output}/img/b.jpg", 50, 50, faces=Faces.empty(True))], "m")
    write_parquet(table, storage_for(output), f"{output}/part-000002.parquet")
    with pytest.raises(ValueError, match="more than once"):
        read_predictions(output)


def test_read_predictions_from_s3(s3_env: LocalS3) -> None:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3_env.client().create_bucket(Bucket=bucket)
    output = f"s3://{bucket}/jobs/run1"
    _write_output(output)
    _check_read(output)
