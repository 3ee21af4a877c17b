"""Face crops (`facesweep run --crops`) of real WIDER FACE photos: the aligned ones are insightface's
`norm_crop` of the same landmarks, the square ones the box with its margin; every output face has exactly
one crop, keyed by uri and face, through compaction, a re-run and --reprocess-changed."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from facesweep.api import job_config
from facesweep.workers.config import ConfigError, CropSettings
from facesweep.workers.faces import Faces
from facesweep.workers.inputs.images import decode_image
from facesweep.workers.job.driver import run_job
from facesweep.workers.job.ledger import Ledger, OutputConflictError
from facesweep.workers.output.layout import crop_part_path, crop_shard_path, shard_path
from facesweep.workers.output.schema import ImageResult, results_table
from facesweep.workers.output.writer import put_table, write_parquet
from facesweep.workers.products.crops import crops_table, image_crops, warped_crops
from facesweep.workers.storage import storage_for
from tests.outputs import assert_one_crop_per_face, read_crops
from tests.paths import MODELS, WIDER_SUBSET

PHOTOS = 6
SSD_MODEL = MODELS / "face-detection-0204" / "FP16" / "face-detection-0204.xml"
needs_shared = pytest.mark.skipif(not WIDER_SUBSET.is_dir(), reason="needs ../shared (WIDER FACE subset)")


def insightface_norm_crop() -> Callable[..., np.ndarray]:
    """`insightface.utils.face_align.norm_crop`, loaded from its file: importing the package would need
    onnxruntime, which the tests do not install."""
    path = importlib.metadata.distribution("insightface").locate_file("insightface/utils/face_align.py")
    spec = importlib.util.spec_from_file_location("insightface_face_align", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.norm_crop


def wider_photos(folder: Path, count: int = PHOTOS) -> Path:
    folder.mkdir(parents=True)
    for path in sorted(WIDER_SUBSET.rglob("*.jpg"))[:count]:
        shutil.copyfile(path, folder / path.name)
    return folder


def run_crops(source: Path, output: Path, **options) -> dict:
    """A job with --crops over `source` on the session's Ray (1 actor, 2 images a shard, 3 a part file):
    its `_job.json`."""
    config = job_config(str(source), str(output), crops=True, **options)
    progress = run_job(replace(config, actors=1, cpus_per_actor=1, shard_size=2, rows_per_file=3))
    assert not progress.failed_shards, progress.failed_shards
    return json.loads((output / "_job.json").read_text())


@pytest.fixture(scope="module")
def job(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not WIDER_SUBSET.is_dir():
        pytest.skip("needs ../shared (WIDER FACE subset)")
    root = tmp_path_factory.mktemp("crops")
    photos = wider_photos(root / "photos")
    record = run_crops(photos, root / "output", score_threshold=0.5)
    return {"photos": photos, "output": root / "output", "record": record}


@needs_shared
@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")  # skimage, inside norm_crop
def test_aligned_crops_are_insightface_norm_crop_of_the_same_landmarks(job: dict) -> None:
    norm_crop = insightface_norm_crop()
    crops = read_crops(job["output"])
    rows = ds.dataset(job["output"], format="parquet").to_table(columns=["uri", "faces"]).to_pylist()
    landmarks = {(r["uri"], i): f["landmarks"] for r in rows for i, f in enumerate(r["faces"] or [])}
    images: dict[str, np.ndarray] = {}
    differences = []
    for uri, face, jpeg in zip(*(crops[c].to_pylist() for c in ("uri", "face", "jpeg")), strict=True):
        image = images.setdefault(uri, decode_image(Path(uri).read_bytes()))
        points = np.array(landmarks[uri, face], np.float32).reshape(5, 2)
        reference = norm_crop(image, points).astype(np.float64)
        ours = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).astype(np.float64)
        differences.append(np.abs(ours - reference).mean())
        # Before the JPEG, the warp itself: the same pixels to one grey level.
        one = Faces(np.zeros((1, 4), np.float32), np.ones(1, np.float32), points[None])
        raw = warped_crops(image, one, CropSettings())[1][0]
        assert np.abs(raw.astype(int) - reference).max() <= 1
    assert crops["aligned"].to_pylist() == [True] * crops.num_rows and len(differences) >= 20
    assert max(differences) < 3.0, max(differences)  # the JPEG at quality 95: a few grey levels
    print(f"{len(differences)} crops, mean abs difference to norm_crop: median {np.median(differences):.2f}")


@needs_shared
def test_every_face_has_one_crop_through_compaction_and_the_record_counts_them(job: dict) -> None:
    output, record = job["output"], job["record"]
    crops = assert_one_crop_per_face(output)
    assert record["crops"] == record["faces"] == crops.num_rows > 0
    assert record["this_run"]["crops"] == crops.num_rows
    parts = sorted(p.name for p in output.glob("part-*.parquet"))
    assert len(parts) == 2  # 6 photos, 3 a part file
    assert sorted(p.name for p in (output / "_crops").glob("*.parquet")) == [
        Path(crop_part_path(number, 0)).name for number in range(2)
    ]
    assert not list((output / "_crops" / "_shards").glob("*"))  # compacted, and nothing partial
    first = read_crops(output)
    assert first["transform"].type == pa.list_(pa.float32(), 6)


@needs_shared
def test_a_rerun_keeps_the_crops_and_refuses_other_crop_settings(job: dict) -> None:
    output = job["output"]
    before = read_crops(output).sort_by([("uri", "ascending"), ("face", "ascending")])
    again = run_crops(job["photos"], output, score_threshold=0.5)
    assert again["this_run"]["images"] == 0 and again["crops"] == before.num_rows
    assert read_crops(output).sort_by([("uri", "ascending"), ("face", "ascending")]).equals(before)
    for options in ({"crops": False}, {"crop_size": 224}):
        config = job_config(str(job["photos"]), str(output), score_threshold=0.5, crops=True)
        if options.get("crops") is False:
            config = replace(config, crops=None)
        else:
            config = replace(config, crops=CropSettings(**options))
        with pytest.raises(OutputConflictError, match="crop"):
            run_job(config)


@needs_shared
def test_crops_of_a_changed_image_are_replaced_not_added(ray_local: None, tmp_path: Path) -> None:
    photos = wider_photos(tmp_path / "photos", 4)
    output = tmp_path / "output"
    run_crops(photos, output, score_threshold=0.5)
    changed = sorted(photos.glob("*.jpg"))[1]
    image = cv2.imread(str(changed))
    cv2.imwrite(str(changed), image[:, ::-1])  # mirrored: other boxes, as many faces
    os.utime(changed, ns=(1, 1))
    record = run_crops(photos, output, score_threshold=0.5, reprocess_changed=True)
    assert record["this_run"]["changed_redone"] == 1 and record["this_run"]["images"] == 1
    crops = assert_one_crop_per_face(output)
    assert record["crops"] == record["faces"] == crops.num_rows


@needs_shared
def test_square_crops_for_a_model_without_landmarks(ray_local: None, tmp_path: Path) -> None:
    photos = wider_photos(tmp_path / "photos", 2)
    output = tmp_path / "output"
    run_crops(photos, output, model=str(SSD_MODEL), score_threshold=0.5, crop_margin=0.5)
    crops = assert_one_crop_per_face(output)
    assert crops.num_rows and not any(crops["aligned"].to_pylist())
    rows = ds.dataset(output, format="parquet").to_table(columns=["uri", "faces"]).to_pylist()
    boxes = {(r["uri"], i): f for r in rows for i, f in enumerate(r["faces"])}
    for uri, face, transform in zip(
        *(crops[c].to_pylist() for c in ("uri", "face", "transform")), strict=True
    ):
        box, matrix = boxes[uri, face], np.array(transform).reshape(2, 3)
        corners = matrix @ np.array([[box["x1"], box["x2"]], [box["y1"], box["y2"]], [1, 1]])
        side = max(box["x2"] - box["x1"], box["y2"] - box["y1"]) * 1.5
        assert np.allclose(corners.mean(axis=1), 56, atol=1e-3)  # the box's centre is the crop's
        assert np.isclose((corners[:, 1] - corners[:, 0]).max(), 112 / 1.5, rtol=1e-4), side


def test_square_crops_sample_the_box_to_the_pixel() -> None:
    """A square crop is what cv2.resize makes of the square cut out (pixel centres as OpenCV's), at the
    same scale and at half of it; without the half-pixel shift it would be half a source pixel off."""
    rng = np.random.default_rng(7)
    image = cv2.GaussianBlur(rng.integers(0, 256, (400, 500, 3), np.uint8), (0, 0), 2)
    for scale in (1, 2):
        side = 112 * scale
        x1, y1 = 101.0, 57.0  # the square's corner, at pixel edges; the box: its middle, side / 1.25
        cx, cy, half = x1 + side / 2, y1 + side / 2, side / 2.5
        faces = Faces(np.array([[cx - half, cy - half, cx + half, cy + half]]), np.ones(1), None)
        crop = warped_crops(image, faces, CropSettings(crop_margin=0.25))[1][0]
        square = image[int(y1) : int(y1) + side, int(x1) : int(x1) + side]
        reference = cv2.resize(square, (112, 112), interpolation=cv2.INTER_LINEAR)
        assert np.abs(crop.astype(int) - reference).max() <= 1, scale


def test_the_crops_table_is_sorted_and_keyed(tmp_path: Path) -> None:
    image = np.full((100, 100, 3), 128, np.uint8)
    faces = Faces(np.array([[10, 10, 50, 50], [40, 40, 90, 90]], np.float32), np.array([0.9, 0.8]), None)
    settings = CropSettings()
    table = crops_table(
        [image_crops("b.jpg", image, faces, settings), image_crops("a.jpg", image, faces.take([1]), settings)]
    )
    assert list(zip(table["uri"].to_pylist(), table["face"].to_pylist(), strict=True)) == [
        ("a.jpg", 0),
        ("b.jpg", 0),
        ("b.jpg", 1),
    ]


def test_crops_files_of_uncommitted_work_are_removed_by_the_next_run(tmp_path: Path) -> None:
    """A shard's or a part's crops file written before a kill, its data file never committed (or
    committed by a later attempt that counts no crops), is left from a kill: the ledger removes it (a
    read-only one does not) and keeps the crops file of a committed shard that counts them."""
    image = np.full((60, 60, 3), 90, np.uint8)
    faces = Faces(np.array([[10, 10, 40, 40]], np.float32), np.ones(1, np.float32), None)
    table = crops_table([image_crops("/x/a.jpg", image, faces, CropSettings())])
    output = tmp_path / "out"
    storage = storage_for(str(output))
    for index, crops in ((1, 1), (2, 0)):  # committed shards: one counts its crop, one none
        rows = results_table([ImageResult(f"/x/{index}.jpg", 60, 60, faces=faces)], "m")
        write_parquet(rows, storage, str(output / shard_path(index)), crops=crops)
    kept = output / crop_shard_path(1)
    orphans = [output / crop_shard_path(2), output / crop_shard_path(7), output / crop_part_path(3, 0)]
    for path in [kept, *orphans]:
        put_table(storage, str(path), table)
    Ledger.read(str(output), read_only=True)
    assert all(path.exists() for path in orphans)
    ledger = Ledger.read(str(output))
    assert not any(path.exists() for path in orphans) and kept.exists()
    assert ledger.crop_files == {(False, 1): [str(kept)]}


def test_bad_crop_settings_are_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    with pytest.raises(ConfigError, match="--crop-size 100: use a multiple of 112 or 128"):
        job_config(str(tmp_path / "in"), str(tmp_path / "out"), crops=True, crop_size=100)
    with pytest.raises(ValueError, match="--crop-margin need --crops"):
        job_config(str(tmp_path / "in"), str(tmp_path / "out"), crop_margin=0.3)
    with pytest.raises(ConfigError, match="--crop-margin -1: use 0 or more"):
        job_config(str(tmp_path / "in"), str(tmp_path / "out"), crops=True, crop_margin=-1)
