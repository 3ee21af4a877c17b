"""The Python API (`import facesweep`): a detector for a script's images, as a Ray Data stage, and jobs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow.dataset as ds
import pytest

import facesweep
from facesweep.workers.model.nms import pairwise_iou
from infra.demo import sample_photos
from tests.photos import ASTRONAUT_FACE

MODEL = "retinaface-mnet025"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("api-photos")
    for key, path in sample_photos()[:6]:
        (folder / key.replace("/", "_")).write_bytes(path.read_bytes())
    return folder


@pytest.fixture(scope="module")
def detector() -> facesweep.FaceDetector:
    return facesweep.FaceDetector(MODEL, threads=2, precision="f32")


def test_detect_bytes_and_arrays_with_bad_images_as_their_own_errors(
    detector: facesweep.FaceDetector, photos: Path
) -> None:
    [astronaut] = photos.glob("*astronaut.png")
    data = astronaut.read_bytes()
    results = detector.detect([data, cv2.imread(str(astronaut)), b"junk", np.zeros((4, 4), np.uint8)])
    from_bytes, from_array, junk, flat = results
    assert (from_bytes.width, from_bytes.height) == (512, 512) and from_bytes.error is None
    assert pairwise_iou(from_bytes.faces.boxes[:1], ASTRONAUT_FACE, plus_one=False)[0, 0] >= 0.8
    assert from_bytes.faces.landmarks.shape == (len(from_bytes.faces), 5, 2)
    np.testing.assert_array_equal(from_array.faces.boxes, from_bytes.faces.boxes)  # a PNG: same pixels
    assert (junk.faces, junk.error_kind) == (None, "not_an_image")
    assert flat.error_kind == "not_an_image" and "HxWx3 uint8" in flat.error
    assert [r.uri for r in results] == ["0", "1", "2", "3"]
    table = detector.detect_table([data], names=["astronaut"])
    assert table.schema.equals(facesweep.SCHEMA) and table["uri"].to_pylist() == ["astronaut"]


def test_detect_takes_paths_and_refuses_what_it_cannot_read(
    detector: facesweep.FaceDetector, photos: Path
) -> None:
    [astronaut] = photos.glob("*astronaut.png")
    by_path, by_str, missing = detector.detect([astronaut, str(astronaut), photos / "nothing.jpg"])
    [by_bytes] = detector.detect([astronaut.read_bytes()])
    assert by_path.uri == by_str.uri == str(astronaut)
    assert by_path.faces.boxes.tolist() == by_bytes.faces.boxes.tolist() != []
    assert missing.error_kind == "fetch" and missing.uri == str(photos / "nothing.jpg")
    with pytest.raises(TypeError, match="image 0 is a int: detect takes paths or URIs, encoded bytes"):
        detector.detect([3])


def test_a_ray_data_batch_of_grey_rgb_and_rgba_arrays(detector: facesweep.FaceDetector, photos: Path) -> None:
    [astronaut] = photos.glob("*astronaut.png")
    rgb = cv2.cvtColor(cv2.imread(str(astronaut)), cv2.COLOR_BGR2RGB)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    batch = {"image": np.array([rgb, grey, rgba, np.zeros((2, 2, 2), np.uint8)], dtype=object)}
    table = detector(batch)
    assert table["status"].to_pylist() == ["ok", "ok", "ok", "error"]
    assert table["error_kind"].to_pylist()[3] == "not_an_image"
    faces = table["faces"].to_pylist()[:3]
    boxes = [
        np.array([[f["x1"], f["y1"], f["x2"], f["y2"]] for f in found[:1]], np.float32) for found in faces
    ]
    assert all(pairwise_iou(b, ASTRONAUT_FACE, plus_one=False)[0, 0] >= 0.8 for b in boxes)
    np.testing.assert_array_equal(boxes[2], boxes[0])  # an opaque alpha channel changes nothing


def test_a_job_through_the_api_finds_what_detect_finds(
    ray_local: None, detector: facesweep.FaceDetector, photos: Path, tmp_path: Path
) -> None:
    with pytest.raises(TypeError, match="unknown job options: scor_threshold"):
        facesweep.job_config(str(photos), str(tmp_path / "out"), scor_threshold=0.3)
    config = facesweep.job_config(
        str(photos), str(tmp_path / "out"), MODEL, precision="f32", actors=1, cpus_per_actor=1, shard_size=2
    )
    progress = facesweep.run(config)
    files = sorted(photos.iterdir())
    assert progress.images == len(files) and progress.errors == 0
    rows = ds.dataset(tmp_path / "out", format="parquet").to_table().sort_by("uri")
    direct = detector.detect_table([p.read_bytes() for p in files], [str(p) for p in files])
    assert rows["uri"].equals(direct["uri"]) and rows["faces"].equals(direct["faces"])


def test_the_api_refuses_what_the_cli_refuses_and_fails_where_it_exits_1(
    ray_local: None, photos: Path, tmp_path: Path
) -> None:
    with pytest.raises(facesweep.ConfigError, match=r"^--score-threshold: "):
        facesweep.job_config(str(photos), str(tmp_path / "out"), score_threshold="high")
    with pytest.raises(facesweep.ConfigError, match=r"^--shard-size: must be at least 1, got 0$"):
        facesweep.job_config(str(photos), str(tmp_path / "out"), shard_size=0)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.jpg").write_bytes(b"not an image")
    [astronaut] = photos.glob("*astronaut.png")
    (mixed / "b.png").write_bytes(astronaut.read_bytes())
    job = facesweep.job_config(str(mixed), str(tmp_path / "out"), MODEL, actors=1, cpus_per_actor=1)
    with pytest.raises(
        facesweep.JobFailedError, match=r"^1 of 2 images are error rows \(50.0%, more than"
    ) as run:
        facesweep.run(job)
    assert run.value.progress.images == 2 and run.value.progress.errors == 1
    with pytest.raises(facesweep.JobFailedError) as again:  # same errors, same outcome: nothing new to do
        facesweep.run(job)
    assert again.value.progress.already_complete and again.value.progress.images == 0
    tolerant = facesweep.run(str(mixed), str(tmp_path / "out"), MODEL, max_error_rate=0.5)
    assert tolerant.already_complete and tolerant.total.errors == 1


def test_the_detector_as_a_ray_data_stage(
    ray_local: None, detector: facesweep.FaceDetector, photos: Path
) -> None:
    import ray.data

    files = sorted(photos.iterdir())
    stage = ray.data.read_binary_files(str(photos), include_paths=True).map_batches(
        facesweep.FaceDetector,
        fn_constructor_kwargs={"model": MODEL, "threads": 1, "precision": "f32"},
        batch_size=4,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=1,
    )
    rows = {row["path"]: row for row in stage.take_all()}
    assert sorted(rows) == [str(p) for p in files]
    direct = detector.detect_table([p.read_bytes() for p in files], [str(p) for p in files]).to_pylist()
    for expected in direct:
        row = rows[expected["uri"]]
        assert "bytes" not in row and row["status"] == "ok" and row["model"] == MODEL
        assert (row["width"], row["height"]) == (expected["width"], expected["height"])
        assert [face["score"] for face in row["faces"]] == [face["score"] for face in expected["faces"]]
