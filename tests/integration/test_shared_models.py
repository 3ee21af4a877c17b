"""Every model in ../shared/models runs through `facesweep run` on real WIDER FACE photos.

The photos are the 73 images of val-subset-145 that hold a face at least 64 px high (all 214 of them),
given as a manifest. Each model must find at least its own share of those faces at IoU 0.5 (its floor
below: a little under what it found when measured, and never under 90% for a seed format); every
model's boxes must lie inside their image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from facesweep.cli import main as facesweep
from facesweep.workers.evaluation.annotations import read_ground_truth, read_predictions
from facesweep.workers.evaluation.matching import match_by_suffix, recall
from facesweep.workers.model.catalog import model_checksum, resolve_model
from facesweep.workers.model.formats.known import recognise
from tests.paths import SHARED

SUBSET = SHARED / "data" / "widerface" / "val-subset-145"
MODELS = SHARED / "models"
SCORE_THRESHOLD = 0.05
MIN_HEIGHT = 64

# (model file below ../shared/models, format it must be detected as, its recall floor). The floors: each
# model's recall of the 214 faces measured with this test (OpenVINO 2026.4 CPU, score threshold 0.05), in
# the comment, less about 3 faces (0.015), rounded down, and at least 0.90 for the seed formats (the first
# nine). Each lies above the model's VOC AP on faces >= 64 px in ../shared/docs/reference-figures.md, where
# it has one (recall bounds AP from above).
CASES = [
    ("face-detection-0204/FP16/face-detection-0204.xml", "ssd", 0.93),  # 203/214 = 0.949
    ("face-detection-0204/FP16-INT8/face-detection-0204.xml", "ssd", 0.93),  # 203/214 = 0.949
    ("face-detection-0200/FP16/face-detection-0200.xml", "ssd", 0.91),  # 198/214 = 0.925
    ("face-detection-adas-0001/FP16/face-detection-adas-0001.xml", "ssd", 0.92),  # 200/214 = 0.935
    ("face-detection-retail-0005/FP16/face-detection-retail-0005.xml", "ssd", 0.90),  # 196/214 = 0.916
    ("face-detection-0205/FP16/face-detection-0205.xml", "boxes_labels", 0.92),  # 201/214 = 0.939
    ("retinaface-mnet025-insightface/retinaface-mnet025-bgr-640.xml", "retinaface", 0.90),  # 195/214 = 0.911
    ("retinaface-mnet025-insightface/mnet.25.onnx", "retinaface", 0.90),  # 195/214 = 0.911
    ("ssh-format-mnet025/ssh-format-mnet025-bgr-640.xml", "ssh", 0.90),  # 195/214 = 0.911
    ("retinaface-mnet025-biubug6/retinaface_mnet025_biubug6.onnx", "priorbox", 0.90),  # 197/214 = 0.921
    ("centerface/centerface.onnx", "centerface", 0.95),  # 207/214 = 0.967
    ("scrfd/scrfd_500m_bnkps.onnx", "scrfd", 0.94),  # 206/214 = 0.963
    ("scrfd/scrfd_2.5g.onnx", "scrfd", 0.96),  # 209/214 = 0.977
    ("yunet/face_detection_yunet_2026may.onnx", "yunet", 0.92),  # 201/214 = 0.939
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SUBSET.is_dir(), reason="needs ../shared (models and WIDER FACE photos)"),
]


@pytest.fixture(scope="module")
def truth() -> dict[str, np.ndarray]:
    faces = read_ground_truth(SUBSET / "annotations.txt")
    return {k: v for k, v in faces.items() if ((v[:, 3] - v[:, 1]) >= MIN_HEIGHT).any()}


@pytest.fixture(scope="module")
def manifest(truth: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("manifest") / "big-faces.txt"
    path.write_text("\n".join(str(SUBSET / relpath) for relpath in sorted(truth)) + "\n")
    return path


@pytest.mark.parametrize(("model", "format_name", "floor"), CASES, ids=[c[0].split("/")[-1] for c in CASES])
def test_model_runs_through_the_cli(
    ray_local: None, truth: dict, manifest: Path, tmp_path: Path, model: str, format_name: str, floor: float
) -> None:
    output = tmp_path / "out"
    args = ["run", str(manifest), str(output), "--model", str(MODELS / model)]
    args += ["--score-threshold", str(SCORE_THRESHOLD), "--actors", "1", "--cpus-per-actor", "1"]
    assert facesweep(args) == 0
    table = ds.dataset(output, format="parquet").to_table()
    assert table.num_rows == len(truth) and set(table["status"].to_pylist()) == {"ok"}
    for row in table.to_pylist():
        for face in row["faces"]:
            assert 0 <= face["x1"] <= face["x2"] <= row["width"], face
            assert 0 <= face["y1"] <= face["y2"] <= row["height"], face
    matched = match_by_suffix(read_predictions(str(output)), truth)
    counts = [recall(matched[k][0], truth[k], 0.5, MIN_HEIGHT, matched[k][1]) for k in truth]
    found, total = np.sum(counts, axis=0)
    print(f"{model}: {format_name}, recall of faces >= {MIN_HEIGHT} px {found}/{total} = {found / total:.3f}")
    assert total == 214 and found / total >= floor, f"recall {found}/{total} under {model}'s floor {floor}"


@pytest.mark.skipif(not MODELS.is_dir(), reason="needs ../shared/models")
def test_known_models_are_recognised_by_their_checksum_under_any_name(tmp_path: Path) -> None:
    """Every model file here that is known by its name is known by its checksum (`model_checksum`, the
    one convention: .onnx, or .xml then .bin) once renamed."""
    files = [
        *sorted(MODELS.rglob("*.xml")),
        *sorted(MODELS.rglob("*.onnx")),
        resolve_model("retinaface-mnet025"),
    ]
    recognised = []
    for index, path in enumerate(files):
        by_name = recognise(path, "0" * 64)
        if by_name is None:
            continue
        renamed = tmp_path / f"model-{index}{path.suffix}"
        renamed.symlink_to(path)
        if path.suffix == ".xml":
            renamed.with_suffix(".bin").symlink_to(path.with_suffix(".bin"))
        found = recognise(renamed, model_checksum(renamed))
        assert found is not None and found.name == by_name.name, path
        recognised.append(found.name)
    assert len(recognised) >= 12, recognised
