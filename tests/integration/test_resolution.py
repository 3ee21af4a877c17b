"""`--resolution native`: each photo near its own size (a model that takes any input size) or in
native-resolution tiles (a fixed-input model), downscaled to `--max-side`; on real WIDER photos, f32."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.dataset as ds
import pytest

from facesweep.api import FaceDetector
from facesweep.workers.config import DetectorSettings, job_identity, resolve
from facesweep.workers.faces import Faces
from facesweep.workers.inputs.images import decode_reduced
from facesweep.workers.job.driver import run_job
from facesweep.workers.model.catalog import ModelError
from facesweep.workers.model.detector import Detector
from facesweep.workers.model.nms import pairwise_iou
from facesweep.workers.model.plan import inspect_model
from tests.detection import detect
from tests.paths import MODELS, WIDER_SUBSET

CROWD = WIDER_SUBSET / "images" / "0--Parade" / "0_Parade_Parade_0_102.jpg"  # 1024x819
SSD_0204 = MODELS / "face-detection-0204" / "FP16" / "face-detection-0204.xml"  # a fixed 448x448 input
CONFIDENT = 0.7
pytestmark = pytest.mark.skipif(not SSD_0204.is_file(), reason="needs ../shared (WIDER photos, models)")


def detector(**settings: object) -> Detector:
    return Detector(DetectorSettings(model="retinaface-mnet025", precision="f32", **settings))


def matched(ours: Faces, theirs: Faces) -> np.ndarray:
    """For each confident face of `ours`, its best IoU with a face of `theirs`."""
    confident = ours.boxes[ours.scores > CONFIDENT]
    return pairwise_iou(confident, theirs.boxes, plus_one=False).max(axis=1, initial=0)


def as_faces(faces: list[dict]) -> Faces:
    boxes = np.array([[f["x1"], f["y1"], f["x2"], f["y2"]] for f in faces], np.float32).reshape(-1, 4)
    return Faces(boxes, np.array([f["score"] for f in faces], np.float32), None)


def test_a_native_job_finds_the_faces_of_an_input_the_photos_size(ray_local: None, tmp_path: Path) -> None:
    """A 1024x819 photo runs as a 1024x832 input (its own size, padded to x32), as `--input-size
    1024x832` runs it: the same confident faces, and `_job.json` records the resolution and its cap."""
    photos, output = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    shutil.copy(CROWD, photos / CROWD.name)
    config = resolve(
        str(photos), str(output), precision="f32", resolution="native", actors=1, cpus_per_actor=1
    )
    assert not run_job(config).failed_shards
    (row,) = ds.dataset(output, format="parquet").to_table().to_pylist()
    assert (row["width"], row["height"]) == (1024, 819)
    native = as_faces(row["faces"])
    fixed = FaceDetector(precision="f32", input_size=(1024, 832), threads=1).detect([CROWD])[0].faces
    assert (fixed.scores > CONFIDENT).sum() >= 10
    assert (native.scores > CONFIDENT).sum() == (fixed.scores > CONFIDENT).sum()
    assert matched(fixed, native).min() >= 0.8 and matched(native, fixed).min() >= 0.8
    identity = json.loads((output / "_job.json").read_text())["identity"]
    assert (identity["resolution"], identity["max_side"]) == ("native", 1024)
    assert job_identity(resolve("in", "out"), "abc").keys().isdisjoint({"resolution", "max_side"})


def test_the_cap_downsizes_the_network_input() -> None:
    photo = cv2.imread(str(CROWD))
    shapes = {
        side: detector(resolution="native", max_side=side).prepare(photo).tensor.shape
        for side in (None, 640, 2048)
    }
    assert shapes == {None: (1, 832, 1024, 3), 640: (1, 512, 640, 3), 2048: (1, 832, 1024, 3)}
    capped = detector(resolution="native", max_side=640).prepare(photo).geometry
    assert (capped.scale_x, capped.scale_y) == (640 / 1024, 512 / 819)
    large = cv2.resize(photo, (3000, 2400))
    assert detector(resolution="native").prepare(large).tensor.shape == (1, 832, 1024, 3)  # 1024x819
    two = detector(resolution="native", scales=(1.0, 2.0)).prepare(photo)
    assert [v.tensor.shape for v in two.views] == [(1, 832, 1024, 3), (1, 1664, 2048, 3)]  # x2 of the cap


def test_a_large_jpeg_decodes_reduced_where_the_cap_allows() -> None:
    """A 2048x1638 JPEG under the default cap (1024) decodes at 1/2 in libjpeg: the same faces, in
    full-size pixels, as the full decode downscaled by the cap."""
    data = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(CROWD)), (2048, 1638)))[1].tobytes()
    reduced = detector(resolution="native")
    full = detector(resolution="native", reduced_decode=False)
    assert reduced.reduction(2048, 1638) == reduced.reduction(4000, 3000) == 2
    assert full.reduction(2048, 1638) == 1
    assert detector(resolution="native", max_side=640).reduction(4000, 3000) == 4
    (small, size), (whole, _) = (decode_reduced(data, d.reduction) for d in (reduced, full))
    assert small.shape[:2] == (819, 1024) and size == (2048, 1638) and whole.shape[:2] == (1638, 2048)
    faces_small = detect(reduced, [reduced.prepare(small, size)])[0]
    faces_whole = detect(full, [full.prepare(whole)])[0]
    assert (faces_whole.scores > CONFIDENT).sum() >= 10
    assert matched(faces_whole, faces_small).min() >= 0.8


def test_a_fixed_input_model_runs_native_resolution_as_tiles() -> None:
    """face-detection-0204 (448x448) at native resolution: the whole photo in one input, plus 448x448
    tiles of the photo downscaled to the cap, as `--tile` cuts them from the full photo."""
    photo = cv2.imread(str(CROWD))
    ssd = Detector(DetectorSettings(model=str(SSD_0204), resolution="native", max_side=800))
    assert ssd.plan.tile and ssd.plan.preprocess.input_size == (448, 448)
    views = ssd.prepare(photo).views
    assert {v.net_size for v in views} == {(448, 448)}
    assert {v.scaled.shape[:2] for v in views} == {(448, 448), (640, 800)}  # whole (stretched), tiles
    assert len(views) == 1 + 6 and len(detect(ssd, [ssd.prepare(photo)])[0]) >= 5
    half = ssd.prepare(cv2.resize(photo, (512, 410)), (1024, 819)).views  # a reduced decode: full-size faces
    assert len(half) > 1 and {(v.geometry.width, v.geometry.height) for v in half} == {(1024, 819)}
    tiled = Detector(DetectorSettings(model=str(SSD_0204), tile=True)).prepare(photo).views
    assert {v.scaled.shape[:2] for v in tiled} == {(448, 448), (819, 1024)} and len(tiled) == 1 + 9


def test_settings_that_cannot_run_are_refused_in_one_line() -> None:
    with pytest.raises(ModelError, match=r"^--max-side 800 needs --resolution native$"):
        inspect_model(DetectorSettings(model="retinaface-mnet025", max_side=800))
    with pytest.raises(ModelError, match="--tile needs a fixed network input"):
        inspect_model(DetectorSettings(model="retinaface-mnet025", resolution="native", tile=True))
    with pytest.raises(ModelError, match="--batch 2 needs a fixed --input-size"):
        inspect_model(DetectorSettings(model="retinaface-mnet025", resolution="native", batch=2))
