"""Exactly once and resume: the plan, committed shards, the job record, refusals and --overwrite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from jobs.demo import sample_photos
from workers.detector import DetectorSettings
from workers.driver import JobConfig, run_job
from workers.models import model_checksum, resolve_model
from workers.resume import OutputConflictError


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("resume-photos")
    for key, path in sample_photos()[:10]:
        (folder / key.replace("/", "_")).write_bytes(path.read_bytes())
    return folder


def job(photos: Path, output: Path, **detector: object) -> JobConfig:
    settings = DetectorSettings(model="retinaface-mnet025", **detector)
    return JobConfig(str(photos), str(output), settings, actors=1, cpus_per_actor=1, shard_size=3)


def uris(output: Path) -> list[str]:
    return ds.dataset(output, format="parquet").to_table(columns=["uri"])["uri"].to_pylist()


def test_plan_is_deterministic_and_written_before_shards(
    ray_local: None, photos: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    run_job(job(photos, first))
    run_job(job(photos, second))
    plans = sorted(p.name for p in (first / "_plan").iterdir())
    assert plans == [f"part-{i:06d}.json" for i in range(-(-len(list(photos.iterdir())) // 3))]
    for name in plans:
        assert (first / "_plan" / name).read_text() == (second / "_plan" / name).read_text()
    names = {p.name for p in first.iterdir()}
    assert all(n.startswith("_") or (n.startswith("part-") and n.endswith(".parquet")) for n in names)


def test_rerun_after_a_crash_does_only_the_missing_shards(
    ray_local: None, photos: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    run_job(job(photos, output))
    record = json.loads((output / "_job.json").read_text())
    assert record["complete"] and record["images"] == len(list(photos.iterdir()))
    # What a driver killed after the first shards leaves: an incomplete record and missing shard files.
    (output / "part-000001.parquet").unlink()
    (output / "part-000003.parquet").unlink()
    (output / "_job.json").write_text(json.dumps({**record, "complete": False, "finished_at": None}))
    again = run_job(job(photos, output))
    assert again.images == 3 + 1 and again.resumed_shards == 2
    assert sorted(uris(output)) == sorted(str(p) for p in photos.iterdir())  # each image exactly once
    record_after = json.loads((output / "_job.json").read_text())
    assert record_after["complete"] and record_after["images"] == record["images"]
    assert record_after["faces"] == record["faces"] and record_after["started_at"] == record["started_at"]


def test_finished_job_does_nothing(ray_local: None, photos: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    run_job(job(photos, output))
    before = {p.name: p.stat().st_mtime_ns for p in output.glob("part-*.parquet")}
    again = run_job(job(photos, output))
    assert (
        again.already_complete and again.images == 0 and again.resumed.images == len(list(photos.iterdir()))
    )
    assert before == {p.name: p.stat().st_mtime_ns for p in output.glob("part-*.parquet")}


def test_other_config_is_refused_and_overwrite_redoes(ray_local: None, photos: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    run_job(job(photos, output))
    with pytest.raises(OutputConflictError, match="different nms_threshold, score_threshold"):
        run_job(job(photos, output, score_threshold=0.3, nms_threshold=0.3))
    (output / "user-notes.txt").write_text("not ours")
    redone = run_job(job(photos, output, score_threshold=0.3), overwrite=True)
    assert redone.images == len(list(photos.iterdir())) and redone.resumed_shards == 0
    assert (output / "user-notes.txt").exists()
    record = json.loads((output / "_job.json").read_text())
    assert record["identity"]["score_threshold"] == 0.3


def test_changed_input_is_refused(ray_local: None, photos: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    run_job(job(photos, output))
    (output / "_job.json").write_text(
        json.dumps({**json.loads((output / "_job.json").read_text()), "complete": False})
    )
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for photo in sorted(photos.iterdir())[1:]:
        (fewer / photo.name).write_bytes(photo.read_bytes())
    record = json.loads((output / "_job.json").read_text())
    record["identity"]["input"] = str(fewer)
    (output / "_job.json").write_text(json.dumps(record))
    with pytest.raises(OutputConflictError, match="INPUT changed"):
        run_job(job(fewer, output))


def test_model_checksum_pin(photos: Path, tmp_path: Path) -> None:
    checksum = model_checksum(resolve_model("retinaface-mnet025"))
    command = [sys.executable, "-m", "jobs.cli", "run", str(photos), str(tmp_path / "out"), "--model-sha256"]
    wrong = subprocess.run([*command, "0" * 64], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1 and f"has SHA-256 {checksum}, not {'0' * 64}" in wrong.stderr
    assert not (tmp_path / "out").exists()
