"""Tests for workers/evaluation/evaluate.py on small hand-made boxes with hand-computed
answers, plus the real subset.

The APs are also checked against line-by-line ports of the official WIDER script and OMZ's `bbox_match`
on random sets (tests/integration/test_wider_ap.py checks the real figures).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from facesweep.cli import main
from facesweep.workers.evaluation.annotations import (
    SETTINGS,
    EvaluationError,
    GroundTruth,
    Predictions,
    read_ground_truth,
    read_ground_truth_with_settings,
    read_predictions,
    read_wider_txt,
)
from facesweep.workers.evaluation.evaluate import evaluate, omz_ap, voc_ap, wider_ap
from facesweep.workers.evaluation.matching import match_by_suffix, match_faces, pair_paths, recall
from facesweep.workers.faces import Faces
from facesweep.workers.model.nms import pairwise_iou
from facesweep.workers.output.schema import ImageResult, results_table
from facesweep.workers.output.writer import write_parquet
from facesweep.workers.storage import storage_for
from infra.local_s3 import LocalS3
from tests.paths import SHARED

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


OFFICIAL_SUBSET = SHARED / "data/widerface/val-subset-145/wider_face_val_bbx_gt_subset.txt"
REFERENCE_PREDICTIONS = SHARED / "data/widerface/reference-predictions/retinaface-mnet025/widerface_txt"


def test_the_official_layout_reads_as_the_one_line_per_face_file() -> None:
    if not OFFICIAL_SUBSET.is_file():
        pytest.skip(f"WIDER FACE subset not available at {OFFICIAL_SUBSET}")
    official, lines = read_ground_truth(OFFICIAL_SUBSET), read_ground_truth(SUBSET_ANNOTATIONS)
    assert list(lines) == [f"images/{name}" for name in official]
    for name, faces in official.items():
        np.testing.assert_array_equal(faces, lines[f"images/{name}"])
    truth = read_ground_truth_with_settings(OFFICIAL_SUBSET)
    assert all(entry.positives is None for entry in truth.values())  # the settings are in the .mat files
    scored_official = evaluate(str(REFERENCE_PREDICTIONS), OFFICIAL_SUBSET)
    scored_lines = evaluate(str(REFERENCE_PREDICTIONS), SUBSET_ANNOTATIONS)
    assert scored_official["images"]["matched"] == 145
    assert scored_official["omz_ap"] == scored_lines["omz_ap"] > 0.5


def test_the_official_layout_with_an_image_without_faces_and_a_cut_file(tmp_path: Path) -> None:
    path = tmp_path / "wider_face_val_bbx_gt.txt"
    path.write_text(
        "a/1.jpg\n2\n1 2 3 4 0 0 0 0 0 0 \n5 6 7 8 0 0 0 0 0 0 \nb/2.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n"
    )
    truth = read_ground_truth(path)
    assert list(truth) == ["a/1.jpg", "b/2.jpg"]
    np.testing.assert_array_equal(truth["a/1.jpg"], [[1, 2, 4, 6], [5, 6, 12, 14]])
    assert truth["b/2.jpg"].shape == (0, 4)
    path.write_text("a/1.jpg\n3\n1 2 3 4 0 0 0 0 0 0 \n")
    with pytest.raises(ValueError, match=r"a/1\.jpg has 3 faces but the file ends after 1"):
        read_ground_truth(path)


# --- IoU and recall ---------------------------------------------------------------------------


def test_iou_matrix_hand_computed() -> None:
    a = boxes((0, 0, 10, 10), (5, 5, 5, 5))  # the second is empty
    b = boxes((0, 0, 10, 10), (5, 0, 15, 10), (20, 20, 30, 30))
    # (0,0,10,10) vs (5,0,15,10): intersection 50, union 150
    np.testing.assert_allclose(pairwise_iou(a, b, plus_one=False), [[1, 1 / 3, 0], [0, 0, 0]])
    assert pairwise_iou(boxes(), b, plus_one=False).shape == (0, 3)


def test_match_faces_is_greedy_and_one_to_one_in_the_given_order() -> None:
    truth = boxes((0, 0, 10, 10), (4, 0, 14, 10))
    # 0 takes the first face (IoU 1); 1 overlaps it more (0.82) than the second (0.54) but it is taken,
    # so 1 falls back to the second; 2 overlaps only the taken first face enough; 3 overlaps nothing
    detections = boxes((0, 0, 10, 10), (1, 0, 11, 10), (0, 0, 10, 11), (50, 50, 60, 60))
    matched, found = match_faces(detections, truth, 0.5)
    assert matched.tolist() == [True, True, False, False] and found.tolist() == [True, True]
    matched, found = match_faces(detections[[1, 0]], truth[:1], 0.5)  # the order decides
    assert matched.tolist() == [True, False] and found.tolist() == [True]


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


def test_pair_paths_by_the_longest_common_suffix_of_segments() -> None:
    pairing = pair_paths(
        [
            "/data/0--Parade/x.jpg",
            "s3://b/t.parquet#1--Handshaking/y.jpg",
            "/d/a/v.jpg",
            "/e/v.jpg",
            "/f/w.jpg",
        ],
        ["images/0--Parade/x.jpg", "images/1--Handshaking/y.jpg", "a/v.jpg", "c/v.jpg", "w.png", "x.jpg"],
    )
    # `x.jpg` ends `/data/0--Parade/x.jpg` too, but `images/0--Parade/x.jpg` shares more of it; `/e/v.jpg`
    # shares only its name with `c/v.jpg` and `a/v.jpg`, and `/d/a/v.jpg` shares more with `a/v.jpg`
    assert pairing.pairs == {
        "images/0--Parade/x.jpg": "/data/0--Parade/x.jpg",
        "images/1--Handshaking/y.jpg": "s3://b/t.parquet#1--Handshaking/y.jpg",
        "a/v.jpg": "/d/a/v.jpg",
        "c/v.jpg": "/e/v.jpg",
    }
    assert pairing.ambiguous == {}


def test_pair_paths_leaves_ambiguous_images_unpaired_and_says_why() -> None:
    pairing = pair_paths(
        ["/run1/images/a.jpg", "/run2/images/a.jpg", "c.jpg", "/x/d.jpg"],
        ["images/a.jpg", "images/c.jpg", "other/c.jpg", "images/d.jpg"],
    )
    assert pairing.pairs == {"images/d.jpg": "/x/d.jpg"}
    assert pairing.ambiguous == {
        "images/a.jpg": "images/a.jpg pairs equally well with /run1/images/a.jpg and /run2/images/a.jpg",
        "images/c.jpg": "c.jpg pairs equally well with images/c.jpg and other/c.jpg",
        "other/c.jpg": "c.jpg pairs equally well with images/c.jpg and other/c.jpg",
    }
    predictions = _predictions("/run1/images/a.jpg", "/run2/images/a.jpg")
    assert match_by_suffix(predictions, {"images/a.jpg": boxes()}, both_ways=True) == {}


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


# --- ground truth with the easy/medium/hard flags, WIDER txt predictions ---------------------------------


def test_read_ground_truth_with_settings_reads_the_flags(tmp_path: Path) -> None:
    path = tmp_path / "annotations.txt"
    path.write_text(
        "# image_relpath x y w h blur expression illumination invalid occlusion pose easy medium hard\n"
        "b/2.jpg 10 20 30 40 0 0 0 0 0 0 1 1 1\n"
        "a/1.jpg 1 2 3 4 2 0 0 0 2 0 0 0 1\n"
        "b/2.jpg 0 0 5 5 0 0 0 0 0 0 0 1 1\n"
    )
    truth = read_ground_truth_with_settings(path)
    assert list(truth) == ["b/2.jpg", "a/1.jpg"]
    np.testing.assert_array_equal(truth["b/2.jpg"].boxes, [[10, 20, 40, 60], [0, 0, 5, 5]])
    np.testing.assert_array_equal(truth["b/2.jpg"].positives, [[True, True, True], [False, True, True]])
    np.testing.assert_array_equal(truth["a/1.jpg"].positives, [[False, False, True]])
    assert truth["a/1.jpg"].positives.dtype == bool
    old = read_ground_truth(path)  # the plain reader is unchanged
    assert list(old) == list(truth)
    np.testing.assert_array_equal(old["b/2.jpg"], truth["b/2.jpg"].boxes)


def test_read_ground_truth_with_settings_without_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "annotations.txt"
    path.write_text("a/1.jpg 1 2 3 4\na/1.jpg 5 6 7 8 0 0 0 0 0 0\n")
    (only,) = read_ground_truth_with_settings(path).values()
    assert only.positives is None
    np.testing.assert_array_equal(only.boxes, [[1, 2, 4, 6], [5, 6, 12, 14]])


def test_read_wider_txt(tmp_path: Path) -> None:
    (tmp_path / "0--Parade").mkdir()
    (tmp_path / "1--Handshaking").mkdir()
    (tmp_path / "0--Parade" / "0_Parade_1.txt").write_text(
        "0_Parade_1\n2\n10 20 30 40 0.9 \n1.5 2 3 4 0.25 \n"
    )
    (tmp_path / "1--Handshaking" / "x.txt").write_text("1--Handshaking/x.png\n0\n")
    (tmp_path / "results.txt").write_text("not a prediction file, and not read\n")
    predictions = read_wider_txt(tmp_path)
    assert sorted(predictions) == ["0--Parade/0_Parade_1.jpg", "1--Handshaking/x.png"]
    found, scores = predictions["0--Parade/0_Parade_1.jpg"]
    np.testing.assert_array_equal(found, [[10, 20, 40, 60], [1.5, 2, 4.5, 6]])
    np.testing.assert_array_equal(scores, [0.9, 0.25])
    assert found.dtype == scores.dtype == np.float64
    none, no_scores = predictions["1--Handshaking/x.png"]
    assert none.shape == (0, 4) and no_scores.shape == (0,)


def test_read_wider_txt_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="no such directory"):
        read_wider_txt(tmp_path / "nope")
    with pytest.raises(ValueError, match="no WIDER prediction files"):
        read_wider_txt(tmp_path)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "a.txt").write_text("a\n2\n1 2 3 4 0.5\n")
    with pytest.raises(ValueError, match=r"a\.txt: expected 2 lines"):
        read_wider_txt(tmp_path)
    (tmp_path / "e" / "a.txt").write_text("a\nmany\n1 2 3 4 0.5\n")
    with pytest.raises(ValueError, match="not a face count"):
        read_wider_txt(tmp_path)


def test_match_by_suffix_both_ways_takes_shorter_prediction_keys() -> None:
    predictions = _predictions("0--Parade/a.jpg", "/abs/images/1--Handshaking/b.jpg", "c.jpg")
    truth = {"images/0--Parade/a.jpg": boxes(), "images/1--Handshaking/b.jpg": boxes(), "x/c.jpg": boxes()}
    assert list(match_by_suffix(predictions, truth)) == ["images/1--Handshaking/b.jpg"]
    matched = match_by_suffix(predictions, truth, both_ways=True)
    assert list(matched) == list(truth)
    assert matched["images/0--Parade/a.jpg"] is predictions["0--Parade/a.jpg"]


# --- WIDER AP ----------------------------------------------------------------------------------------


def truth_of(*faces: tuple[tuple[float, float, float, float], bool]) -> GroundTruth:
    """Faces with one flag used for all three settings."""
    flags = np.array([[positive] * 3 for _, positive in faces], bool).reshape(-1, 3)
    return GroundTruth(boxes(*(box for box, _ in faces)), flags)


def found(*detections: tuple[tuple[float, float, float, float], float]) -> Predictions:
    return boxes(*(box for box, _ in detections)), np.array([score for _, score in detections], np.float32)


def test_wider_ap_hand_computed() -> None:
    face1, face2, ignored, elsewhere = (0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10), (90, 90, 99, 99)
    truth = {
        "a.jpg": truth_of((face1, True), (face2, True), (ignored, False)),
        "b.jpg": truth_of((face1, True)),
    }
    predictions = {
        # scores already span [0, 1], so normalizing leaves them; none sits on a threshold (k / 1000)
        "a.jpg": found((face1, 1.0), (ignored, 0.7005), (elsewhere, 0.5005), (face1, 0.3005)),
        "b.jpg": found((face1, 0.0)),
    }
    # down the thresholds (recall, precision): face1 (1/3, 1/1); + the ignored face's hit, which counts
    # neither way (1/3, 1/1); + a miss (1/3, 1/2); + face1 again, a proposal that finds nothing new
    # (1/3, 1/3); at threshold 0, b's face (2/3, 2/4). AP = 1/3 * 1 + 1/3 * 1/2 = 0.5
    assert wider_ap(predictions, truth) == pytest.approx({"easy": 0.5, "medium": 0.5, "hard": 0.5})


def test_wider_ap_settings_use_their_own_positives() -> None:
    face, small = (0, 0, 10, 10), (20, 0, 30, 10)
    truth = {"a.jpg": GroundTruth(boxes(face, small), np.array([[1, 1, 1], [0, 0, 1]], bool))}
    predictions = {"a.jpg": found((face, 1.0), (small, 0.0))}
    # easy / medium: one positive, found by the first prediction; the other hits an ignored face: AP 1.
    # hard: both positive and both found, precision 1 all along: AP 1; with `small` missed, recall 1/2
    aps = wider_ap(predictions, truth)
    assert aps == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    assert wider_ap({"a.jpg": found((face, 1.0), ((50, 50, 60, 60), 0.0))}, truth)["hard"] == 0.5


def test_wider_ap_counts_an_image_up_to_its_last_prediction_above_the_threshold() -> None:
    """The official quirk: predictions are not sorted within an image; at each threshold the image counts
    everything up to its *last* prediction scoring at least that much."""
    face, miss1, miss2 = (0, 0, 10, 10), (50, 50, 60, 60), (80, 80, 90, 90)
    truth = {"a.jpg": truth_of((face, True))}
    # file order: the hit scores lowest but comes first, so it counts from the top threshold on:
    # (1, 1/2) above 0.5, then (1, 1/3). Sorted by score it would be (0, 0) ... then (1, 1/3): AP 1/3
    unsorted = {"a.jpg": found((face, 0.0), (miss1, 1.0), (miss2, 0.5))}
    assert wider_ap(unsorted, truth)["easy"] == pytest.approx(0.5)
    in_score_order = {"a.jpg": found((miss1, 1.0), (miss2, 0.5), (face, 0.0))}
    assert wider_ap(in_score_order, truth)["easy"] == pytest.approx(1 / 3)


def test_wider_ap_needs_the_settings() -> None:
    with pytest.raises(ValueError, match="easy/medium/hard"):
        wider_ap({}, {"a.jpg": GroundTruth(boxes((0, 0, 1, 1)), None)})


# --- OMZ and VOC AP ----------------------------------------------------------------------------------


def test_omz_ap_hand_computed() -> None:
    normal1, normal2, small = (0, 0, 100, 100), (200, 0, 300, 100), (400, 0, 410, 10)  # small: 10 px, ignored
    truth = {"a.jpg": boxes(normal1, normal2, small), "b.jpg": boxes()}
    predictions = {
        "a.jpg": found(
            (normal1, 0.9),  # true positive
            ((0, 0, 100, 110), 0.8),  # IoU 0.91 with normal1, already taken: false positive
            ((402, 2, 407, 7), 0.7),  # inside `small` (IoU 0.25, but intersection / own area 1): ignored
            ((500, 500, 600, 600), 0.6),  # nothing: false positive
            (normal2, 0.5),  # true positive
        ),
        "b.jpg": found(((0, 0, 50, 50), 0.85)),  # an image without faces: false positive
    }
    # by score: TP, FP, FP, (ignored), FP, TP -> precision 1, 1/2, 1/3, 1/3, 1/4, 2/5 at recall 1/2 ... 1
    # AP = 1/2 * 1 + 1/2 * 2/5 = 0.7
    assert omz_ap(predictions, truth) == pytest.approx(0.7)
    # counting faces from 5 px, `small` is a positive and the prediction inside it (IoU 0.25) a false one:
    # precision 1, 1/2, 1/3, 1/4, 1/5, 2/6 at recall 1/3 ... 2/3, AP = 1/3 * 1 + 1/3 * 1/3
    assert omz_ap(predictions, truth, height_range=(5, 1024)) == pytest.approx(4 / 9)


def test_omz_ap_clips_faces_to_1024_and_rounds_predictions() -> None:
    tall = (0, 100, 100, 1200)  # 1100 px high: ignored as it is, 924 px once clipped to y <= 1024
    truth = {"a.jpg": boxes(tall)}
    predictions = {"a.jpg": found(((0.4, 100.4, 100.4, 1024.4), 0.9))}  # rounds to the clipped face
    assert omz_ap(predictions, truth) == 1.0
    assert omz_ap(predictions, truth, clip=None) == 0.0  # no positive left


def test_voc_ap_hand_computed() -> None:
    face1, face2 = (0, 0, 10, 10), (20, 0, 30, 10)
    truth = {"a.jpg": boxes(face1, face2), "b.jpg": boxes((0, 0, 0, 0))}  # b: WIDER's "no face" placeholder
    predictions = {
        "a.jpg": found(
            ((25, 0, 35, 10), 0.95),  # IoU 1/3 with face2: false positive
            (face1, 0.9),  # true positive
            ((0, 0, 10, 12), 0.8),  # IoU 0.83 with face1, taken: false positive (no fallback to face2)
            (face2, 0.6),  # true positive
        ),
        "b.jpg": found(((50, 50, 60, 60), 0.7)),  # false positive; the placeholder is no face to find
    }
    # precision 0, 1/2, 1/3, 1/4, 2/5 at recall 0, 1/2, 1/2, 1/2, 1: AP = 1/2 * 1/2 + 1/2 * 2/5 = 0.45
    assert voc_ap(predictions, truth) == pytest.approx(0.45)
    assert voc_ap({}, truth) == 0.0


# --- against line-by-line ports of the reference code, on random sets --------------------------------


def _all_point(recalls: np.ndarray, precisions: np.ndarray) -> float:
    mrec, mpre = np.concatenate(([0.0], recalls, [1.0])), np.concatenate(([0.0], precisions, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def official_wider(predictions: dict[str, Predictions], truth: dict[str, GroundTruth]) -> dict[str, float]:
    """`widerface_evaluate/evaluation.py`'s norm_score, image_eval, img_pr_info and voc_ap, loop for loop."""
    scores = [s.astype(float) for _, s in predictions.values() if len(s)]
    low, high = min([1.0, *(s.min() for s in scores)]), max([0.0, *(s.max() for s in scores)])
    aps = {}
    for column, setting in enumerate(SETTINGS):
        curve, count = np.zeros((1000, 2)), 0
        for name, entry in truth.items():
            keep = entry.positives[:, column]
            count += keep.sum()
            pred, score = predictions[name]
            if not len(entry.boxes) or not len(score):
                continue
            score = (score.astype(float) - low) / (high - low)
            overlaps = pairwise_iou(pred.astype(float), entry.boxes.astype(float), plus_one=True)
            state, found_, proposal = np.zeros(len(keep)), np.zeros(len(score)), np.ones(len(score))
            for h in range(len(score)):
                j = overlaps[h].argmax()
                if overlaps[h, j] >= 0.5:
                    if not keep[j]:
                        state[j], proposal[h] = -1, -1
                    elif state[j] == 0:
                        state[j] = 1
                found_[h] = (state == 1).sum()
            for t in range(1000):
                above = np.where(score >= 1 - (t + 1) / 1000)[0]
                if len(above):
                    curve[t] += [(proposal[: above[-1] + 1] == 1).sum(), found_[above[-1]]]
        with np.errstate(invalid="ignore"):
            aps[setting] = _all_point(curve[:, 1] / count, curve[:, 1] / curve[:, 0])
    return aps


def official_omz(predictions: dict[str, Predictions], truth: dict[str, np.ndarray]) -> float:
    """OMZ's cast_to_int, clip_boxes 1024, filter [64, 1024) + is_empty and `bbox_match` (ignore_difficult,
    no boundaries, multiple matches per ignored), prediction by prediction."""
    faces = {name: np.clip(np.rint(b.astype(float)), 0, 1024) for name, b in truth.items()}
    heights = {name: b[:, 3] - b[:, 1] for name, b in faces.items()}
    difficult = {
        name: ~((h >= 64) & (h < 1024)) | (faces[name][:, 2] <= faces[name][:, 0]) | (h <= 0)
        for name, h in heights.items()
    }
    used = {name: np.zeros(len(b), bool) for name, b in faces.items()}
    rows = [
        (name, box, score) for name, (p, s) in predictions.items() for box, score in zip(p, s, strict=True)
    ]
    order = np.argsort(-np.array([score for _, _, score in rows]))
    tp, fp = np.zeros(len(rows)), np.zeros(len(rows))
    for k, index in enumerate(order):
        name, box, _ = rows[index]
        gt, hard = faces[name], difficult[name]
        if not len(gt):
            fp[k] = 1
            continue
        box = np.rint(box.astype(float))
        iw = np.maximum(np.minimum(gt[:, 2], box[2]) - np.maximum(gt[:, 0], box[0]), 0)
        ih = np.maximum(np.minimum(gt[:, 3], box[3]) - np.maximum(gt[:, 1], box[1]), 0)
        area = (box[2] - box[0]) * (box[3] - box[1])
        overlaps = pairwise_iou(box[None], gt, plus_one=False)[0]
        overlaps[hard] = (iw * ih / area if area else np.zeros(len(gt)))[hard]
        best = overlaps[~hard].max() if (~hard).any() else -np.inf
        if best < 0.5 and hard.any():
            best = overlaps[hard].max()
        at_best = np.where(overlaps == best)[0]
        if best < 0.5:
            fp[k] = 1
        elif not hard[at_best].any():
            if used[name][at_best].any():
                fp[k] = 1
            else:
                tp[k], used[name][at_best] = 1, True
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    positives = sum(int((~d).sum()) for d in difficult.values())
    eps = np.finfo(float).eps
    return _all_point(tp / max(positives, eps), tp / np.maximum(tp + fp, eps))


def random_set(seed: int) -> tuple[dict[str, Predictions], dict[str, GroundTruth]]:
    """Whole-pixel faces of 5 to 300 px (ties and exact matches happen), nested easy/medium/hard flags,
    predictions near faces and astray, unsorted; an image without predictions and one without faces."""
    rng = np.random.default_rng(seed)
    predictions, truth = {}, {}
    for i in range(12):
        n = int(rng.integers(0, 15)) if i else 0
        xy = rng.integers(0, 800, (n, 2))
        size = rng.choice([5, 12, 40, 64, 70, 100, 300], (n, 1)) + rng.integers(0, 3, (n, 2))
        faces = np.concatenate([xy, xy + size], axis=1).astype(np.float32)
        level = rng.integers(0, 4, n)  # 0 easy, 1 medium, 2 hard, 3 in no setting
        flags = level[:, None] <= np.arange(3)[None, :]
        picked = faces[rng.integers(0, max(n, 1), int(rng.integers(0, 2 * n + 1)))] if n else faces
        jitter = rng.choice([0, 0, 1, 3, 8], picked.shape) * rng.choice([-1, 1], picked.shape)
        stray = rng.integers(0, 800, (int(rng.integers(0, 5)), 2))
        stray = np.concatenate([stray, stray + rng.integers(5, 200, stray.shape)], axis=1)
        boxes_ = np.concatenate([picked + jitter, stray]).astype(np.float32) if i != 1 else np.zeros((0, 4))
        scores = np.round(rng.random(len(boxes_)), 2).astype(np.float32)  # rounded: equal scores happen
        truth[f"{i}.jpg"] = GroundTruth(faces, flags)
        predictions[f"{i}.jpg"] = (boxes_.astype(np.float32), scores)
    return predictions, truth


@pytest.mark.parametrize("seed", range(3))
def test_wider_ap_equals_the_official_loops(seed: int) -> None:
    predictions, truth = random_set(seed)
    expected = official_wider(predictions, truth)
    assert wider_ap(predictions, truth) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("seed", range(4))
def test_omz_ap_equals_the_accuracy_checker_loops(seed: int) -> None:
    predictions, truth = random_set(seed)
    plain = {name: entry.boxes for name, entry in truth.items()}
    assert omz_ap(predictions, truth) == pytest.approx(official_omz(predictions, plain), rel=1e-12, abs=1e-15)


# --- facesweep eval: bad input -----------------------------------------------------------------------


def _one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("facesweep: error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


def test_eval_missing_inputs_and_no_match(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = tmp_path / "annotations.txt"
    truth.write_text("images/e/a.jpg 0 0 10 10\n")
    (tmp_path / "txt" / "e").mkdir(parents=True)
    (tmp_path / "txt" / "e" / "b.txt").write_text("b\n1\n0 0 10 10 0.9\n")
    assert main(["eval", str(tmp_path / "txt"), str(tmp_path / "nope.txt")]) == 1
    _one_line_error(capsys, "nope.txt", "no such file")
    assert main(["eval", str(tmp_path / "nowhere"), str(truth)]) == 1
    _one_line_error(capsys, "nowhere", "no such file or directory")
    assert main(["eval", str(tmp_path / "txt"), str(truth)]) == 1
    _one_line_error(capsys, "no image of", "(1 images)")
    assert main(["eval", str(tmp_path), str(truth)]) == 1  # a folder with neither kind of predictions
    _one_line_error(capsys, "neither a facesweep output")


def test_eval_without_settings_reports_voc_ap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = tmp_path / "annotations.txt"
    truth.write_text("images/e/a.jpg 0 0 100 100\nimages/e/a.jpg 200 0 100 100\n")
    (tmp_path / "txt" / "e").mkdir(parents=True)
    (tmp_path / "txt" / "e" / "a.txt").write_text("a\n2\n0 0 100 100 0.9\n500 500 10 10 0.8\n")
    report = tmp_path / "out" / "report.json"
    assert main(["eval", str(tmp_path / "txt"), str(truth), "--json", str(report)]) == 1  # no such folder
    _one_line_error(capsys, "report.json")
    report = tmp_path / "report.json"
    assert main(["eval", str(tmp_path / "txt"), str(truth), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "VOC AP (IoU 0.5, all faces): 0.5000" in out and "WIDER" not in out
    figures = json.loads(report.read_text())
    assert figures["voc_ap"] == 0.5 and figures["omz_ap"] == 0.5 and figures["omz_positives"] == 2


# --- pairing before a job and in eval, ground truth that is no annotations, the output's threshold ----

needs_shared = pytest.mark.skipif(
    not (SUBSET_ANNOTATIONS.is_file() and REFERENCE_PREDICTIONS.is_dir()),
    reason="needs ../shared (WIDER FACE)",
)
SUBSET_PHOTO = "0--Parade/0_Parade_marchingband_1_465.jpg"


def _handshaking_only(folder: Path) -> Path:
    """The subset's annotations of its 1--Handshaking images only."""
    path = folder / "handshaking.txt"
    lines = SUBSET_ANNOTATIONS.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if line.startswith("images/1--Handshaking/")))
    return path


@needs_shared
def test_run_ground_truth_pairs_photos_below_their_event_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """INPUT holds `0--Parade/x.jpg`, the annotations say `images/0--Parade/x.jpg`: the check before the job
    pairs them as eval will; when nothing pairs, its error shows an image of each side."""
    photos = tmp_path / "photos"
    (photos / "0--Parade").mkdir(parents=True)
    shutil.copyfile(SUBSET_ANNOTATIONS.parent / "images" / SUBSET_PHOTO, photos / SUBSET_PHOTO)
    run = ["run", str(photos), str(tmp_path / "out"), "--dry-run", "--ground-truth"]
    assert main([*run, str(SUBSET_ANNOTATIONS)]) == 0
    assert "listed: 1 image" in capsys.readouterr().out
    assert main([*run, str(_handshaking_only(tmp_path))]) == 1
    _one_line_error(
        capsys,
        "none of its 30 images pairs with an image of INPUT",
        f"(e.g. INPUT {photos / SUBSET_PHOTO}, ground truth images/1--Handshaking/",
    )


@needs_shared
def test_eval_that_pairs_nothing_shows_an_image_of_each_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    predictions = tmp_path / "widerface_txt"
    shutil.copytree(REFERENCE_PREDICTIONS / "0--Parade", predictions / "0--Parade")
    count = len(list(predictions.glob("*/*.txt")))
    assert main(["eval", str(predictions), str(_handshaking_only(tmp_path))]) == 1
    _one_line_error(
        capsys,
        f"no image of {predictions} ({count} images) pairs with one of",
        "(30 images): e.g. prediction 0--Parade/",
        ", ground truth images/1--Handshaking/",
        "the longest ending their paths share",
    )


@needs_shared
def test_eval_of_a_file_that_is_no_annotations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One line naming the file, the line and what a line should hold: not numpy's words."""
    listing = SUBSET_ANNOTATIONS.parent / "images.txt"  # `relpath width height faces`: no boxes
    assert main(["eval", str(REFERENCE_PREDICTIONS), str(listing)]) == 1
    _one_line_error(
        capsys,
        f"{listing}, line 2: not a face (too few fields: 'images/0--Parade/0_Parade_marchingband_1_465.jpg",
        "expected `image_relpath x y w h [blur expression illumination invalid occlusion pose easy medium",
    )
    photo = SUBSET_ANNOTATIONS.parent / "images" / SUBSET_PHOTO
    assert main(["eval", str(REFERENCE_PREDICTIONS), str(photo)]) == 1
    _one_line_error(capsys, f"{photo}: not a text file; expected `image_relpath x y w h")
    official = tmp_path / "wider_face_val_bbx_gt.txt"
    official.write_text(
        "# the official layout\n0--Parade/a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n5 6 x 8 0 0 0 0 0 0\n"
    )
    assert main(["eval", str(REFERENCE_PREDICTIONS), str(official)]) == 1
    _one_line_error(capsys, f"{official}, line 5: not a face (a field that is not a number: '5 6 x 8 0")


@needs_shared
def test_eval_of_an_output_kept_above_the_low_scores_says_so(
    output: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The session's real job ran at the default score threshold, 0.5: eval says AP needs the low scores.
    The same output recorded as written at 0.02 gets no such note."""
    assert main(["eval", str(output), str(SUBSET_ANNOTATIONS)]) == 0
    out = capsys.readouterr().out
    assert "WIDER AP (official protocol)" in out
    assert (
        f"note: {output} kept faces scoring 0.5 or more only; AP counts the low-scoring ones too: run with "
        "--score-threshold 0.02 (into a new OUTPUT, or with --overwrite) for figures comparable with"
    ) in out
    low = tmp_path / "low"
    shutil.copytree(output, low)
    record = json.loads((low / "_job.json").read_text())
    assert record["config"]["detector"]["score_threshold"] == 0.5
    record["config"]["detector"]["score_threshold"] = 0.02
    (low / "_job.json").write_text(json.dumps(record))
    report = tmp_path / "report.json"
    assert main(["eval", str(low), str(SUBSET_ANNOTATIONS), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "WIDER AP" in out and "note:" not in out
    assert json.loads(report.read_text())["score_threshold"] == 0.02
