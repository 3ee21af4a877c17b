"""Anonymized copies (`facesweep run --anonymize DEST`) of real WIDER FACE photos: faces the model finds are
hidden, the rest of the picture only re-encoded at its own quality, metadata gone, a failed image never
copied."""

from __future__ import annotations

import re
import shutil
import struct
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow.dataset as ds
import pytest

from facesweep.api import job_config
from facesweep.report import write_report
from facesweep.workers.config import AnonymizeSettings
from facesweep.workers.evaluation.annotations import read_ground_truth
from facesweep.workers.evaluation.matching import match_faces
from facesweep.workers.inputs.listing import InputError
from facesweep.workers.job.driver import run_job
from facesweep.workers.job.ledger import OutputConflictError
from facesweep.workers.products.anonymize import copy_uri, hide_faces, jpeg_quality
from facesweep.workers.storage import ObjectError
from tests.browser import CHROMIUM, chromium
from tests.outputs import SUBSET_ANNOTATIONS, WIDER_SUBSET
from tests.photos import astronaut, encode, exif_jpeg

PHOTOS = 8
THRESHOLD = 0.3
needs_shared = pytest.mark.skipif(not WIDER_SUBSET.is_dir(), reason="needs ../shared (WIDER FACE subset)")


def sharpness(grey: np.ndarray) -> float:
    """High-frequency energy: the variance of the Laplacian."""
    return float(cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F).var())


def with_metadata(jpeg: bytes) -> bytes:
    """`jpeg` with an EXIF segment naming GPS coordinates and a comment after its own segments."""
    gps = b"Exif\x00\x00MM\x00\x2a" + struct.pack(">I", 8) + b"GPSLatitude 48.8584 N GPSLongitude 2.2945 E"
    comment = b"taken at home, 12 Example Street"
    segments = b"\xff\xe1" + struct.pack(">H", 2 + len(gps)) + gps
    segments += b"\xff\xfe" + struct.pack(">H", 2 + len(comment)) + comment
    return jpeg[:2] + segments + jpeg[2:]


def test_jpeg_quality_is_read_from_the_quantization_table() -> None:
    image = astronaut()
    for quality in (30, 60, 85, 95):
        assert jpeg_quality(encode(".jpg", image, cv2.IMWRITE_JPEG_QUALITY, quality)) == quality
    assert jpeg_quality(encode(".png", image)) is None


@pytest.mark.parametrize("method", ["blur", "mosaic", "solid"])
def test_hide_faces_changes_the_ellipse_only(method: str) -> None:
    image = astronaut()
    box = np.array([[180, 62, 270, 180]], np.float32)
    hidden = hide_faces(image, box, method, 1.3)
    changed = np.any(hidden != image, axis=2)
    ys, xs = np.nonzero(changed)
    cx, cy, ax, ay = 225, 121, 45 * 1.3, 59 * 1.3
    assert ((((xs - cx) / (ax + 1.5)) ** 2 + ((ys - cy) / (ay + 1.5)) ** 2) <= 1).all()  # inside the ellipse
    face = (slice(75, 170), slice(190, 260))
    if method == "mosaic":  # sharp cell edges, but a few colours where there were thousands
        colours = [len(np.unique(picture[face].reshape(-1, 3), axis=0)) for picture in (hidden, image)]
        assert colours[0] < 0.05 * colours[1], colours
    else:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[face]
        assert sharpness(cv2.cvtColor(hidden, cv2.COLOR_BGR2GRAY)[face]) < 0.1 * sharpness(grey)


@pytest.fixture(scope="module")
def job(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real job over WIDER photos, a broken JPEG and a sideways photo with GPS metadata, with copies."""
    if not WIDER_SUBSET.is_dir():
        pytest.skip("needs ../shared (WIDER FACE subset)")
    root = tmp_path_factory.mktemp("anonymize")
    photos, output, dest = root / "photos", root / "output", root / "dest"
    for path in sorted(WIDER_SUBSET.rglob("*.jpg"))[:PHOTOS]:
        target = photos / "images" / path.relative_to(WIDER_SUBSET)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    (photos / "located.jpg").write_bytes(with_metadata(exif_jpeg(astronaut())))
    config = job_config(
        str(photos),
        str(output),
        score_threshold=THRESHOLD,
        anonymize=str(dest),
        anonymize_threshold=THRESHOLD,
    )
    config = replace(config, actors=1, cpus_per_actor=1, shard_size=4)
    progress = run_job(config)
    assert not progress.failed_shards, progress.failed_shards
    return {"photos": photos, "output": output, "dest": dest, "anonymized": progress.anonymized}


@needs_shared
def test_every_found_face_is_hidden_and_the_rest_only_reencoded(job: dict) -> None:
    rows = {row["uri"]: row for row in ds.dataset(job["output"], format="parquet").to_table().to_pylist()}
    truth = read_ground_truth(SUBSET_ANNOTATIONS)
    checked = 0
    for relative, faces in truth.items():
        source = job["photos"] / relative
        if not source.is_file():
            continue
        copy = cv2.imread(str(job["dest"] / relative))
        original = cv2.imread(str(source))
        assert copy is not None and copy.shape == original.shape, relative
        found = np.array([[f["x1"], f["y1"], f["x2"], f["y2"]] for f in rows[str(source)]["faces"]]).reshape(
            -1, 4
        )
        large = faces[(faces[:, 3] - faces[:, 1]) >= 24]
        _, matched = match_faces(found, large, 0.5)
        grey_copy, grey = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in (copy, original))
        for x1, y1, x2, y2 in large[matched].astype(int):
            dx, dy = (x2 - x1) // 5, (y2 - y1) // 5  # the face itself: its box's central 60% (no corners)
            face = (slice(y1 + dy, y2 - dy), slice(x1 + dx, x2 - dx))
            assert sharpness(grey_copy[face]) < 0.35 * sharpness(grey[face]), (relative, x1, y1)
            checked += 1
        masks = np.zeros(grey.shape, np.uint8)
        for x1, y1, x2, y2 in found:
            center, axes = (
                (round((x1 + x2) / 2), round((y1 + y2) / 2)),
                (round((x2 - x1) * 0.65) + 8, round((y2 - y1) * 0.65) + 8),
            )
            cv2.ellipse(masks, center, axes, 0, 0, 360, 255, -1)
        away = masks == 0
        difference = np.abs(copy.astype(np.int16) - original.astype(np.int16)).max(axis=2)[away]
        assert difference.mean() < 2.0 and np.percentile(difference, 99) < 16, relative
    assert checked >= 20


@needs_shared
def test_a_failed_image_is_never_copied_and_metadata_is_gone(job: dict) -> None:
    assert not (job["dest"] / "broken.jpg").exists()
    located = (job["dest"] / "located.jpg").read_bytes()
    assert b"Exif" not in located and b"GPS" not in located and b"Example Street" not in located
    assert (
        cv2.imdecode(np.frombuffer(located, np.uint8), cv2.IMREAD_COLOR).shape == astronaut().shape
    )  # upright
    copies = sorted(p for p in job["dest"].rglob("*") if p.is_file())
    assert job["anonymized"] == len(copies) == PHOTOS + 1
    assert not [p for p in copies if p.name.startswith("_") or p.name.endswith(".partial")]


@needs_shared
def test_the_output_keeps_its_threshold_and_a_rerun_must_keep_the_copies_settings(
    job: dict, tmp_path: Path
) -> None:
    photos = job["photos"]
    config = job_config(
        str(photos),
        str(tmp_path / "out"),
        score_threshold=0.8,
        anonymize=str(tmp_path / "copies"),
        anonymize_threshold=0.1,
    )
    progress = run_job(replace(config, actors=1, cpus_per_actor=1, shard_size=8))
    scores = [
        f["score"]
        for row in ds.dataset(tmp_path / "out", format="parquet").to_table().to_pylist()
        for f in row["faces"] or []
    ]
    assert scores and min(scores) >= 0.8
    assert progress.anonymized == PHOTOS + 1
    with pytest.raises(OutputConflictError, match="anonymize_method"):
        run_job(replace(config, anonymizer=replace(config.anonymizer, anonymize_method="solid")))


def test_bad_anonymize_settings_are_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(encode(".png", astronaut()))
    with pytest.raises(InputError, match=r"--anonymize .* is inside INPUT"):
        run_job(
            job_config(str(tmp_path / "in"), str(tmp_path / "out"), anonymize=str(tmp_path / "in" / "copies"))
        )
    with pytest.raises(ValueError, match="--anonymize-method need --anonymize DEST"):
        job_config(str(tmp_path / "in"), str(tmp_path / "out"), anonymize_method="solid")
    assert AnonymizeSettings("d").anonymize_mask_scale == 1.3


def test_copies_keep_the_relative_key_and_never_leave_dest() -> None:
    settings = AnonymizeSettings("s3://copies/run-1", root="s3://photos/2026")
    assert copy_uri("s3://photos/2026/a/b.jpg", settings) == "s3://copies/run-1/a/b.jpg"
    assert copy_uri("s3://other/c.png", settings) == "s3://copies/run-1/other/c.png"  # a manifest's entry
    assert copy_uri("s3://photos/2026/t.tar#k_1.jpg", settings) == "s3://copies/run-1/t.tar/k_1.jpg"
    assert (
        copy_uri("s3://photos/2026/t.parquet#row=7", settings, ".jpg")
        == "s3://copies/run-1/t.parquet/row=7.jpg"
    )
    local = AnonymizeSettings("/copies", root=None)
    assert copy_uri("/data/x/y.jpg", local) == "/copies/data/x/y.jpg"
    for escaping in ("/data/../etc/y.jpg", "s3://photos/2026/a//b.jpg"):
        with pytest.raises(ObjectError, match="could leave"):
            copy_uri(escaping, settings if escaping.startswith("s3") else local)


@needs_shared
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`make test` installs it)")
def test_show_puts_each_image_beside_its_anonymized_copy(job: dict, tmp_path: Path) -> None:
    report = write_report(str(job["output"]), tmp_path / "report")
    assert report.drawn == PHOTOS + 1 and report.unreadable == 0
    dom = chromium(report.path, "--dump-dom", cwd=tmp_path)
    pairs = re.findall(r'<div class="pair"><a href="full/([^"]+)">.*?<img class="copy" src="([^"]+)"', dom)
    assert len(pairs) == PHOTOS + 1 and "no anonymized copy" not in dom
    for name, copy in pairs:
        original = cv2.imread(str(tmp_path / "report" / "thumbs" / name))
        hidden = cv2.imread(str(tmp_path / "report" / copy))
        assert hidden.shape == original.shape  # the copy upright, as the original is shown
    shot = tmp_path / "shot.png"
    chromium(report.path, f"--screenshot={shot}", "--window-size=1280,1600", cwd=tmp_path)
    assert len(np.unique(cv2.imread(str(shot)).reshape(-1, 3), axis=0)) > 5000  # photos side by side
    # A copy that is gone is said, not hidden: the tile keeps its original and names why.
    name = sorted(p for p in job["dest"].rglob("*.jpg"))[0]
    saved = name.read_bytes()
    name.unlink()
    try:
        again = write_report(str(job["output"]), tmp_path / "again")
    finally:
        name.write_bytes(saved)
    html = again.path.read_text()
    assert html.count("no anonymized copy:") == 1 and again.drawn == PHOTOS + 1
