"""The pixel budget (`workers/job/budget.py`): an actor's decoded pixels stay within it whatever the photos'
size and whatever its products make of them; a photo over it is decoded reduced (its row says the scale,
its faces in full-size pixels), and only one that cannot fit at all is an error row. Real WIDER photos,
upscaled as cameras of 12 MP and more would write them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from facesweep.api import FaceDetector
from facesweep.workers.config import AnonymizeSettings, CropSettings, DetectorSettings, JobConfig, Tuning
from facesweep.workers.faces import Faces
from facesweep.workers.inputs.images import decode_at, read_header
from facesweep.workers.job import budget as budget_module
from facesweep.workers.job.budget import MB, PixelBudget, decode_plan
from facesweep.workers.job.driver import run_job
from facesweep.workers.job.pipeline import ImagePipeline
from facesweep.workers.model.detector import Detector, Timings
from facesweep.workers.model.nms import pairwise_iou
from facesweep.workers.output.compaction import compact
from facesweep.workers.output.layout import part_path, shard_path
from facesweep.workers.output.reader import read_rows
from facesweep.workers.output.schema import SCHEMA, ImageResult, results_table
from facesweep.workers.output.writer import write_parquet
from facesweep.workers.products.anonymize import anonymized
from facesweep.workers.products.crops import image_crops
from facesweep.workers.storage import join, storage_for
from tests.paths import WIDER_SUBSET
from tests.photos import encode

CROWD = WIDER_SUBSET / "images" / "0--Parade" / "0_Parade_Parade_0_102.jpg"
needs_shared = pytest.mark.skipif(not CROWD.is_file(), reason="needs ../shared (WIDER FACE photos)")


def upscaled(megapixels: float) -> np.ndarray:
    """The WIDER crowd photo upscaled (bicubic, aspect kept) to about `megapixels`."""
    photo = cv2.imread(str(CROWD))
    factor = math.sqrt(megapixels * 1e6 / (photo.shape[0] * photo.shape[1]))
    size = (round(photo.shape[1] * factor), round(photo.shape[0] * factor))
    return cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def twelve() -> bytes:
    """A 12 MP JPEG of the crowd photo (3873 x 3098)."""
    return encode(".jpg", upscaled(12), cv2.IMWRITE_JPEG_QUALITY, 90)


@pytest.fixture(scope="module")
def full_size(twelve: bytes) -> ImageResult:
    """Its faces from a full-size decode (1 GB: it fits whole)."""
    detector = FaceDetector(threads=2, precision="f32", reduced_decode=False, score_threshold=0.3)
    [result] = detector.detect([twelve])
    assert result.decode_scale == 1.0 and result.faces is not None
    return result


@needs_shared
def test_a_photo_over_the_budget_is_decoded_reduced_and_its_faces_are_in_full_size_pixels(
    twelve: bytes, full_size: ImageResult
) -> None:
    """40 MB cannot hold the 12 MP photo whole (its decode takes 2 x 34 MB): decoded at 1/2, the same
    faces come back where the full-size decode puts them."""
    small = FaceDetector(
        threads=2, precision="f32", reduced_decode=False, score_threshold=0.3, pixel_budget=40
    )
    [reduced] = small.detect([twelve])
    assert reduced.decode_scale == 0.5 and reduced.error is None
    assert (reduced.width, reduced.height) == (full_size.width, full_size.height) == (3873, 3098)
    whole = full_size.faces
    assert abs(int((reduced.faces.scores > 0.5).sum()) - int((whole.scores > 0.5).sum())) <= 1
    confident = whole.boxes[whole.scores > 0.6]  # a face near the threshold may move: the others must not
    assert len(confident) >= 10
    overlap = pairwise_iou(confident, reduced.faces.boxes, plus_one=False).max(axis=1)
    assert (overlap > 0.85).all(), overlap  # full-size pixels: reduced-image boxes would not overlap
    assert small.detect_table([twelve])["decode_scale"].to_pylist() == [0.5]


@needs_shared
def test_crops_and_copies_of_a_reduced_decode_are_cut_where_the_faces_are(
    twelve: bytes, full_size: ImageResult
) -> None:
    """A crop from the 1/2 decode is the full-size crop within a few grey levels (same transform, in
    full-size pixels); the copy is the decoded image's size, never upscaled, each face hidden in it."""
    header = read_header(twelve)
    whole, half = decode_at(twelve, header, 1)[0], decode_at(twelve, header, 2)[0]
    faces = full_size.faces.take(full_size.faces.scores > 0.5)
    settings = CropSettings()
    expected = image_crops("a", whole, faces, settings)
    crops = image_crops("a", half, faces, settings, 0.5)
    np.testing.assert_array_equal(crops.transforms, expected.transforms)
    for ours, theirs in zip(crops.jpegs, expected.jpegs, strict=True):
        difference = cv2.imdecode(np.frombuffer(ours, np.uint8), 0).astype(int) - cv2.imdecode(
            np.frombuffer(theirs, np.uint8), 0
        )
        assert np.abs(difference).mean() < 6
    hide = AnonymizeSettings(anonymize="copies", anonymize_method="solid")
    copy, suffix = anonymized(half, twelve, full_size.faces, hide, 0.5)
    copied = cv2.imdecode(np.frombuffer(copy, np.uint8), cv2.IMREAD_COLOR)
    assert suffix == ".jpg" and copied.shape == half.shape == (1549, 1937, 3)
    hidden = full_size.faces.boxes[full_size.faces.scores >= hide.anonymize_threshold] / 2
    centres = np.round((hidden[:, :2] + hidden[:, 2:]) / 2).astype(int)
    assert copied[centres[:, 1], centres[:, 0]].max() < 40  # black, but for the JPEG's ringing


@needs_shared
def test_the_budget_bounds_the_pixels_held_with_many_images_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two calls at once (an actor's two shards) share a budget of 110 MB, 16 threads and 24 images in
    flight each, with products that keep each image and two copies of it (`copies=2`): the accountant
    never holds more than the budget, several images are decoded at once, a 12 MP photo that needs
    nearly the whole budget is not starved by the small ones, every image keeps at most what it reserved,
    and everything is given back."""
    detector = Detector(DetectorSettings(model="retinaface-mnet025", threads=2))
    small, large = encode(".jpg", upscaled(2.7)), encode(".jpg", upscaled(12))
    budget = PixelBudget(110 * MB)
    pipeline = ImagePipeline(detector, ThreadPoolExecutor(16), 24, budget, sharers=2, copies=2)
    kept: list[tuple[int, int]] = []
    keep = budget_module.Reservations.keep

    def recording_keep(self: budget_module.Reservations, key: int, amount: int) -> None:
        kept.append((self._held[key], amount))
        keep(self, key, amount)

    monkeypatch.setattr(budget_module.Reservations, "keep", recording_keep)
    lock, inside, most = threading.Lock(), [0], [0]

    def finish(position: int, result: ImageResult, image: np.ndarray) -> ImageResult:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            assert budget.held <= budget.capacity
        time.sleep(0.05)  # a product slower than the model
        with lock:
            inside[0] -= 1
        return replace(result, key=str(image.shape[1]))

    images = [large if i == 3 else small for i in range(16)]

    def call(name: str) -> list[ImageResult]:
        return pipeline.run([f"{name}{i}" for i in range(16)], lambda i: images[i], Timings(), finish)

    with ThreadPoolExecutor(2) as calls:
        results = [
            r for future in [calls.submit(call, "a"), calls.submit(call, "b")] for r in future.result()
        ]
    assert all(r.error is None and len(r.faces) >= 10 for r in results), [r.error for r in results]
    assert {r.decode_scale for r in results} == {1.0}
    large_cost = decode_plan(read_header(large), 1, 110 * MB, 2, detector.view_bytes).reserve
    small_cost = decode_plan(read_header(small), 1, 110 * MB, 2, detector.view_bytes).reserve
    assert 90 * MB < large_cost <= 110 * MB and small_cost < 30 * MB
    assert 2 * small_cost < budget.peak <= budget.capacity
    assert 2 <= most[0] <= 110 * MB // small_cost
    assert all(amount <= reserved for reserved, amount in kept) and len(kept) == 32
    assert budget.held == 0 and not budget._queue


DECODE_RSS = """
import json, re, sys
import cv2, numpy as np
def peak():  # this process's VmHWM (ru_maxrss would count the parent's, from before the exec)
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
data = open(sys.argv[1], "rb").read()
flags = {1: cv2.IMREAD_COLOR, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
cv2.imdecode(cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))[1], cv2.IMREAD_COLOR)  # libraries loaded
before = peak()
image = cv2.imdecode(np.frombuffer(data, np.uint8), flags[int(sys.argv[2])])
print(json.dumps(peak() - before))
"""


@needs_shared
@pytest.mark.parametrize(
    ("name", "reduction"),
    [("baseline.jpg", 1), ("baseline.jpg", 4), ("progressive.jpg", 8), ("photo.png", 1)],
)
def test_a_reservation_covers_what_decoding_takes(name: str, reduction: int, tmp_path: Path) -> None:
    """What `decode_plan` reserves for decoding (no views, no copies) is the peak memory OpenCV's decode
    takes, measured in a fresh process: its output twice, and a progressive JPEG's full-size
    coefficients even at 1/8; within 2% and 1 MB."""
    photo = upscaled(12)
    made = {
        "baseline.jpg": encode(".jpg", photo, cv2.IMWRITE_JPEG_QUALITY, 90),
        "progressive.jpg": encode(
            ".jpg", photo, cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1
        ),
        "photo.png": encode(".png", photo, cv2.IMWRITE_PNG_COMPRESSION, 1),
    }
    (tmp_path / name).write_bytes(made[name])
    reserve = decode_plan(read_header(made[name]), reduction, 2**40, 0, lambda w, h: 0).reserve
    measured = json.loads(
        subprocess.run(
            [sys.executable, "-c", DECODE_RSS, str(tmp_path / name), str(reduction)],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    )
    assert 0.98 * reserve - MB <= measured <= reserve + MB, (measured / MB, reserve / MB)


@needs_shared
def test_a_job_over_the_budget_decodes_reduced_makes_its_products_and_refuses_what_cannot_fit(
    ray_local: None, tmp_path: Path
) -> None:
    """--pixel-budget 40 with --anonymize and --crops: the 12 MP JPEG, which would need 4 x 34 MB at full
    size with its copy, is decoded at 1/2 and copied at that size, its faces hidden and cropped; a 12 MP
    PNG, which needs 69 MB to decode at all, is a `too_large` row naming the budget and the flag; a
    WIDER photo is decoded whole."""
    photos, copies, output = tmp_path / "photos", tmp_path / "copies", tmp_path / "out"
    photos.mkdir()
    photo = upscaled(12)
    (photos / "big.jpg").write_bytes(encode(".jpg", photo, cv2.IMWRITE_JPEG_QUALITY, 90))
    (photos / "big.png").write_bytes(encode(".png", photo, cv2.IMWRITE_PNG_COMPRESSION, 1))
    (photos / "small.jpg").write_bytes(CROWD.read_bytes())
    config = JobConfig(
        input=str(photos),
        output=str(output),
        detector=DetectorSettings(model="retinaface-mnet025"),
        actors=1,
        cpus_per_actor=1,
        shard_size=4,
        tuning=Tuning(pixel_budget=40),
        anonymizer=AnonymizeSettings(anonymize=str(copies), anonymize_method="solid", root=str(photos)),
        crops=CropSettings(),
    )
    progress = run_job(config)
    assert not progress.failed_shards
    rows = {Path(row["uri"]).name: row for row in ds.dataset(output, format="parquet").to_table().to_pylist()}
    big, png, small = rows["big.jpg"], rows["big.png"], rows["small.jpg"]
    assert (
        big["status"] == "ok" and big["decode_scale"] == 0.5 and (big["width"], big["height"]) == (3873, 3098)
    )
    assert small["status"] == "ok" and small["decode_scale"] == 1.0
    assert png["error_kind"] == "too_large" and png["decode_scale"] is None
    assert "pixel budget" in png["error"] and "one image may hold 40 MB (--pixel-budget)" in png["error"]
    copy = cv2.imread(str(copies / "big.jpg"))
    assert copy.shape == (1549, 1937, 3) and not (copies / "big.png").exists()
    assert cv2.imread(str(copies / "small.jpg")).shape == cv2.imread(str(CROWD)).shape
    boxes = np.array([[f["x1"], f["y1"], f["x2"], f["y2"]] for f in big["faces"]]) / 2
    assert len(boxes) >= 10
    centres = np.round((boxes[:, :2] + boxes[:, 2:]) / 2).astype(int)
    assert copy[centres[:, 1], centres[:, 0]].max() < 40
    crops = ds.dataset(output / "_crops", format="parquet").to_table()
    assert crops.num_rows == len(big["faces"]) + len(small["faces"])
    record = json.loads((output / "_job.json").read_text())
    assert record["config"]["tuning"]["pixel_budget"] == 40 and "pixel_budget" not in record["identity"]


def test_rows_written_before_decode_scale_still_read_and_compact(tmp_path: Path) -> None:
    """Files older than the column: a compaction of old and new shards, of old shards alone and of an old
    part extended with a new shard writes the whole schema, old rows' scale null; the reader fills it."""
    output = str(tmp_path)
    storage = storage_for(output)

    def shard(index: int, old: bool) -> None:
        results = [ImageResult(f"/photos/{index}.jpg", 4, 3, error="x", error_kind="corrupt")]
        results.append(ImageResult(f"/photos/{index}b.jpg", 8, 6, Faces.empty(False), decode_scale=0.5))
        table = results_table(results[:1], "m") if old else results_table(results, "m")
        if old:
            table = table.drop_columns(["decode_scale"])
        write_parquet(table, storage, join(output, shard_path(index)))

    shard(0, old=True)
    shard(1, old=False)
    compact(output, [0, 1], 0)
    shard(2, old=True)
    compact(output, [2], 1)
    parts = [pq.read_table(tmp_path / part_path(n)) for n in (0, 1)]
    assert all(part.schema.equals(SCHEMA) for part in parts)
    assert parts[1]["decode_scale"].to_pylist() == [None]
    old_part = parts[1].drop_columns(["decode_scale"])  # a tail part written before the column
    write_parquet(old_part, storage, join(output, part_path(1)), shards=[2])
    shard(3, old=False)
    compact(output, [3], 1, extend=True)
    table = read_rows(output)
    scales = dict(zip(table["uri"].to_pylist(), table["decode_scale"].to_pylist(), strict=True))
    assert scales == {
        "/photos/0.jpg": None,
        "/photos/1.jpg": None,
        "/photos/1b.jpg": 0.5,
        "/photos/2.jpg": None,
        "/photos/3.jpg": None,
        "/photos/3b.jpg": 0.5,
    }
