"""The whole path on real components: SeaweedFS, a local Ray, OpenVINO, real photos -> Parquet."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facesweep.workers.config import DetectorSettings, JobConfig
from facesweep.workers.job.budget import PixelBudget
from facesweep.workers.job.driver import run_job
from facesweep.workers.job.pipeline import ImagePipeline
from facesweep.workers.model.detector import Detector, Timings
from facesweep.workers.model.nms import pairwise_iou
from facesweep.workers.output.schema import ImageResult
from infra.demo import sample_photos
from infra.local_s3 import LocalS3
from tests.outputs import read_rows
from tests.photos import ASTRONAUT_FACE, ASTRONAUT_LANDMARKS, astronaut

FACELESS = ("skimage/coffee.png", "skimage/rocket.jpg")


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample photos in a nested directory, plus a non-image file the listing must skip."""
    root = tmp_path_factory.mktemp("photos")
    for key, path in sample_photos()[:12]:
        target = root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (root / "skimage" / "NOTES.txt").write_text("not an image")
    return root


def job(input_: str, output: str, **detector: object) -> JobConfig:
    return JobConfig(
        input=input_,
        output=output,
        detector=DetectorSettings(model="retinaface-mnet025", precision="f32", **detector),
        actors=1,
        cpus_per_actor=1,
        shard_size=4,
    )


def check_contract(rows: dict[str, dict], expected_uris: set[str]) -> None:
    assert set(rows) == expected_uris
    for row in rows.values():
        assert row["status"] == "ok" and row["error"] is None, row
        assert row["model"] == "retinaface-mnet025"
        scores = [face["score"] for face in row["faces"]]
        assert scores == sorted(scores, reverse=True)
        for face in row["faces"]:
            assert (
                0 <= face["x1"] < face["x2"] <= row["width"] and 0 <= face["y1"] < face["y2"] <= row["height"]
            )
            assert len(face["landmarks"]) == 10
    for name in FACELESS:
        [row] = [row for uri, row in rows.items() if uri.endswith(name)]
        assert row["faces"] == [], f"{name} should be present with an empty face list"
    [astronaut] = [row for uri, row in rows.items() if uri.endswith("astronaut.png")]
    assert (astronaut["width"], astronaut["height"]) == (512, 512)
    face = astronaut["faces"][0]
    box = np.array([[face["x1"], face["y1"], face["x2"], face["y2"]]], np.float32)
    assert pairwise_iou(box, ASTRONAUT_FACE, plus_one=False)[0, 0] >= 0.8
    landmarks = np.array(face["landmarks"], np.float32).reshape(5, 2)
    assert np.abs(landmarks - ASTRONAUT_LANDMARKS).max() <= 8


def test_local_directory_to_local_directory(ray_local: None, photo_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    totals: list[tuple[bool, int]] = []
    result = run_job(job(str(photo_dir), str(output)), lambda p: totals.append((p.plan.finished, p.plan.new)))
    images = {str(p) for p in photo_dir.rglob("*") if p.suffix in (".png", ".jpg")}
    assert result.images == len(images) and result.errors == 0 and not result.failed_shards
    # The plan is read ahead: the total is known when the first of the three shards comes back.
    assert totals[0] == (True, len(images)) and len(totals) == 3
    rows = read_rows(str(output))
    check_contract(rows, images)
    assert result.faces == sum(len(row["faces"]) for row in rows.values())
    # The shards' files are compacted into one part file (the job is far below --rows-per-file).
    assert sorted(p.name for p in output.iterdir()) == ["_job.json", "part-000000.parquet"]  # no _shards/


def test_s3_prefix_to_s3_prefix(ray_local: None, local_s3: LocalS3, photo_dir: Path) -> None:
    client = local_s3.client()
    client.create_bucket(Bucket="pipeline-in")
    client.create_bucket(Bucket="pipeline-out")
    keys = []
    for path in sorted(photo_dir.rglob("*")):
        if path.is_file():
            key = f"batch 1/{path.relative_to(photo_dir)}"
            client.upload_file(str(path), "pipeline-in", key)
            keys.append(key)
    result = run_job(job("s3://pipeline-in/batch 1", "s3://pipeline-out/run"))
    s3 = local_s3.arrow_filesystem()
    rows = read_rows("pipeline-out/run", s3)
    check_contract(rows, {f"s3://pipeline-in/{k}" for k in keys if not k.endswith(".txt")})
    assert result.images == len(rows)


def test_manifests_list_exactly_their_images(ray_local: None, photo_dir: Path, tmp_path: Path) -> None:
    photos = sorted(str(p) for p in photo_dir.rglob("*.png"))[:3]
    text = tmp_path / "images.txt"
    text.write_text("# three photos\n" + "\n".join(photos) + "\n\n")
    table = tmp_path / "images.parquet"
    pq.write_table(pa.table({"uri": photos[::-1], "note": ["x"] * 3}), table)
    for manifest in (text, table):
        output = tmp_path / f"out-{manifest.suffix[1:]}"
        run_job(job(str(manifest), str(output)))
        assert set(read_rows(str(output))) == set(photos)


def test_a_slow_step_after_detection_holds_back_the_loading() -> None:
    """With a `finish` step (copies, crops) slower than the model, at most `in_flight` images are
    loaded and not yet finished, so decoded images never pile up behind it; and the loading keeps that
    many ahead: no image is finished before the `in_flight` - 1 after it (or the rest) are loaded."""
    images, in_flight = 40, 8
    detector = Detector(DetectorSettings(model="retinaface-mnet025", threads=2))
    assert 2 * detector.plan.batch <= in_flight  # else the pipeline holds two batches, not `in_flight`
    pipeline = ImagePipeline(detector, ThreadPoolExecutor(8), in_flight, PixelBudget(2**30))  # room for all
    image = cv2.resize(astronaut(), (256, 256))
    changed = threading.Condition()
    loaded, finished, most = [0], [0], [0]

    def load(i: int) -> np.ndarray:
        with changed:
            loaded[0] += 1
            most[0] = max(most[0], loaded[0] - finished[0])
            changed.notify_all()
        return image

    def finish(position: int, result: ImageResult, pixels: np.ndarray) -> ImageResult:
        with changed:
            ahead = min(finished[0] + in_flight, images)
            if not changed.wait_for(lambda: loaded[0] >= ahead, timeout=60):
                raise AssertionError(f"{loaded[0]} images loaded, {finished[0]} finished: not loading ahead")
        time.sleep(0.2)  # slower than the model: without the hold, every image would be loaded at once
        with changed:
            finished[0] += 1
            changed.notify_all()
        return replace(result, key=str(position))

    results = pipeline.run([f"a{i}" for i in range(images)], load, Timings(), finish)
    assert [r.key for r in results] == [str(i) for i in range(images)]
    assert all(r.faces is not None and len(r.faces) == 1 for r in results)
    assert most[0] == in_flight, most[0]
