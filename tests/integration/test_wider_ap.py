"""Regression: the reference RetinaFace-MobileNet0.25 predictions' official figures, and `facesweep eval`.

Needs ../shared (WIDER FACE ground truth and the reference predictions); skipped without it.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from facesweep.cli import main
from facesweep.workers.evaluation.annotations import (
    GroundTruth,
    Predictions,
    read_ground_truth_with_settings,
    read_wider_txt,
)
from facesweep.workers.evaluation.evaluate import omz_ap, omz_difficult, omz_faces, wider_ap
from facesweep.workers.evaluation.matching import match_by_suffix
from facesweep.workers.faces import Faces
from facesweep.workers.output.schema import ImageResult, results_table
from facesweep.workers.output.writer import write_parquet
from facesweep.workers.storage import storage_for
from tests.paths import WIDER

REFERENCE = WIDER / "reference-predictions" / "retinaface-mnet025"
PREDICTIONS = REFERENCE / "widerface_txt"
FULL_VAL = WIDER / "full-val-ground-truth" / "annotations.txt"
SUBSET = WIDER / "val-subset-145" / "annotations.txt"

pytestmark = pytest.mark.skipif(
    not (PREDICTIONS.is_dir() and FULL_VAL.is_file() and SUBSET.is_file()),
    reason=f"WIDER FACE ground truth and reference predictions not available under {WIDER}",
)


@pytest.fixture(scope="module")
def predictions() -> dict[str, Predictions]:
    return read_wider_txt(PREDICTIONS)


@pytest.fixture(scope="module")
def full_val() -> dict[str, GroundTruth]:
    return read_ground_truth_with_settings(FULL_VAL)


@pytest.fixture(scope="module")
def subset() -> dict[str, GroundTruth]:
    return read_ground_truth_with_settings(SUBSET)


def official_results() -> dict[str, float]:
    """The APs the official script printed for the reference predictions (results.txt)."""
    text = (REFERENCE / "results.txt").read_text()
    return {m[1].lower(): float(m[2]) for m in re.finditer(r"(Easy|Medium|Hard)\s+Val AP:\s*(\S+)", text)}


def test_the_data_is_what_the_readme_says(
    predictions: dict[str, Predictions], full_val: dict[str, GroundTruth], subset: dict[str, GroundTruth]
) -> None:
    assert len(predictions) == len(full_val) == 3226
    assert sum(len(truth.boxes) for truth in full_val.values()) == 39708
    positives = np.concatenate([truth.positives for truth in full_val.values()]).sum(axis=0)
    assert positives.tolist() == [7211, 13319, 31958]
    assert len(subset) == 145 and sum(len(truth.boxes) for truth in subset.values()) == 4255


def test_full_val_wider_ap_is_the_official_scripts(
    predictions: dict[str, Predictions], full_val: dict[str, GroundTruth]
) -> None:
    matched = match_by_suffix(predictions, full_val)
    assert len(matched) == 3226
    aps = wider_ap(matched, full_val)
    assert {setting: round(ap, 5) for setting, ap in aps.items()} == {
        "easy": 0.90032,
        "medium": 0.87271,
        "hard": 0.71975,
    }
    # not just close: the official script's own printout (equal to the last digit today)
    official = official_results()
    assert set(official) == {"easy", "medium", "hard"}
    for setting, ap in aps.items():
        assert ap == pytest.approx(official[setting], rel=1e-12, abs=0), setting


def test_full_val_omz_ap(predictions: dict[str, Predictions], full_val: dict[str, GroundTruth]) -> None:
    matched = match_by_suffix(predictions, full_val)
    positives = sum(int((~omz_difficult(omz_faces(truth.boxes))).sum()) for truth in full_val.values())
    assert positives == 5044
    assert round(omz_ap(matched, full_val), 4) == 0.9073


def test_subset_figures(predictions: dict[str, Predictions], subset: dict[str, GroundTruth]) -> None:
    # the subset's relpaths are images/<event>/<name>.jpg, the predictions' <event>/<name>.jpg
    matched = match_by_suffix(predictions, subset, both_ways=True)
    assert len(matched) == 145
    aps = wider_ap(matched, subset)
    assert {setting: round(ap, 4) for setting, ap in aps.items()} == {
        "easy": 0.8530,
        "medium": 0.8407,
        "hard": 0.6919,
    }
    assert round(omz_ap(matched, subset), 4) == 0.8898


def test_cli_on_the_subset_with_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_file = tmp_path / "report.json"
    assert main(["eval", str(PREDICTIONS), str(SUBSET), "--json", str(report_file)]) == 0
    out = capsys.readouterr().out
    assert "145 matched, 0 in the ground truth without predictions, 3081 predicted" in out
    assert "WIDER AP (official protocol): easy 0.8530   medium 0.8407   hard 0.6919" in out
    assert "213 faces 64 to 1024 px high): 0.8898" in out
    assert "note:" not in out  # WIDER txt predictions: no job record, no threshold to speak of
    report = json.loads(report_file.read_text())
    assert report["images"] == {"matched": 145, "missing": 0, "not_in_ground_truth": 3081}
    assert report["faces"] == 4255
    assert [round(report["wider_ap"][s], 4) for s in ("easy", "medium", "hard")] == [0.8530, 0.8407, 0.6919]
    assert report["wider_positives"] == {"easy": 299, "medium": 721, "hard": 3233}
    assert round(report["omz_ap"], 4) == 0.8898 and report["omz_positives"] == 213
    assert "voc_ap" not in report


def _write_output(output: str, results: list[ImageResult]) -> None:
    """`results` written as a facesweep job would, in two part files."""
    storage = storage_for(output)
    write_parquet(results_table(results[:70], "m"), storage, f"{output}/part-000000.parquet")
    write_parquet(results_table(results[70:], "m"), storage, f"{output}/part-000001.parquet")


def _subset_results(
    predictions: dict[str, Predictions], subset: dict[str, GroundTruth], root: str
) -> list[ImageResult]:
    """The subset's reference predictions as float32 rows, each image at `root/<event>/<name>.jpg`."""
    return [
        ImageResult(
            f"{root}/{name.removeprefix('images/')}",
            1024,
            768,
            faces=Faces(boxes.astype(np.float32), scores.astype(np.float32), None),
        )
        for name, (boxes, scores) in match_by_suffix(predictions, subset, both_ways=True).items()
    ]


# images/<event>/<name>.jpg below some root, as the annotations name them; <event>/<name>.jpg, as WIDER's
# own layout and a folder of event folders have them
@pytest.mark.parametrize("root", ["/data/val/images", "/data"])
def test_cli_on_a_facesweep_output(
    predictions: dict[str, Predictions],
    subset: dict[str, GroundTruth],
    root: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same subset predictions written as a facesweep job would (float32 Parquet), read back by eval."""
    output = str(tmp_path / "out")
    results = _subset_results(predictions, subset, root)
    _write_output(output, [*results, ImageResult(f"{root}/0--Parade/broken.jpg", error="not an image")])
    report_file = tmp_path / "report.json"
    assert main(["eval", output, str(SUBSET), "--json", str(report_file)]) == 0
    out = capsys.readouterr().out
    assert "145 matched, 0 in the ground truth without predictions, 0 predicted" in out
    assert "ambiguous" not in out and "note:" not in out  # no job record: no threshold to speak of
    report = json.loads(report_file.read_text())
    # float32 scores move the normalized scores by ~1e-8: the same figures to 4 decimals
    assert [round(report["wider_ap"][s], 4) for s in ("easy", "medium", "hard")] == [0.8530, 0.8407, 0.6919]
    assert round(report["omz_ap"], 4) == 0.8898
    assert report["ambiguous"] == {} and report["score_threshold"] is None


def test_cli_leaves_out_an_image_two_predictions_pair_with_equally(
    predictions: dict[str, Predictions],
    subset: dict[str, GroundTruth],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The first image twice, below two roots: neither copy is guessed, the report says which and why."""
    output = str(tmp_path / "out")
    results = _subset_results(predictions, subset, "/data/a")
    first = results[0]
    _write_output(output, [*results, replace(first, uri=first.uri.replace("/data/a/", "/data/b/"))])
    report_file = tmp_path / "report.json"
    assert main(["eval", output, str(SUBSET), "--json", str(report_file)]) == 0
    out = capsys.readouterr().out
    relpath = f"images/{first.uri.removeprefix('/data/a/')}"
    why = f"{relpath} pairs equally well with {first.uri} and /data/b/{first.uri.removeprefix('/data/a/')}"
    assert "144 matched, 0 in the ground truth without predictions, 2 predicted" in out
    assert f"1 ground-truth images left out as ambiguous, e.g. {why}\n" in out
    assert "(the APs cover the 144 matched images only)" in out
    report = json.loads(report_file.read_text())
    assert report["ambiguous"] == {relpath: why}
    assert report["faces"] == sum(len(truth.boxes) for name, truth in subset.items() if name != relpath)


def test_cli_reports_missing_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Full-val ground truth, predictions for two events only: the APs cover the matched images."""
    folder = tmp_path / "widerface_txt"
    for event in ("0--Parade", "1--Handshaking"):
        (folder / event).mkdir(parents=True)
        for file in (PREDICTIONS / event).glob("*.txt"):
            (folder / event / file.name).write_bytes(file.read_bytes())
    assert main(["eval", str(folder), str(FULL_VAL)]) == 0
    out = capsys.readouterr().out
    matched = len(list(folder.glob("*/*.txt")))
    assert f"{matched} matched, {3226 - matched} in the ground truth without predictions" in out
    assert f"(the APs cover the {matched} matched images only)" in out
