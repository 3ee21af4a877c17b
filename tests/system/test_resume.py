"""Exactly once, resume and incremental runs: the ledger (OUTPUT's data files), compaction into few part
files, what a killed compaction leaves, new / changed / vanished images, refusals and --overwrite."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from facesweep.cli import build_parser, config_from_args
from facesweep.specs import run_arguments
from facesweep.workers.config import CropSettings, DetectorSettings, JobConfig
from facesweep.workers.job.driver import run_job
from facesweep.workers.job.ledger import OutputConflictError
from facesweep.workers.model.catalog import model_checksum, resolve_model
from facesweep.workers.output import lease
from facesweep.workers.output.compaction import compact
from facesweep.workers.output.layout import shard_path
from facesweep.workers.output.schema import ImageResult, results_table
from facesweep.workers.output.writer import SHARDS_KEY, write_parquet
from facesweep.workers.storage import storage_for
from infra.demo import sample_photos

PHOTOS = 10


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for key, path in sample_photos()[:PHOTOS]:
        (folder / key.replace("/", "_")).write_bytes(path.read_bytes())
    return folder


def job(photos: Path, output: Path, **options: object) -> JobConfig:
    detector = {k: options.pop(k) for k in ("score_threshold", "nms_threshold") if k in options}
    settings = DetectorSettings(model="retinaface-mnet025", **detector)
    return JobConfig(str(photos), str(output), settings, actors=1, cpus_per_actor=1, shard_size=3, **options)


def rows(output: Path) -> pa.Table:
    """What a reader of OUTPUT sees (pyarrow skips `_`-prefixed paths, as DuckDB and Spark do)."""
    return ds.dataset(output, format="parquet").to_table(columns=["uri", "etag", "faces"])


def assert_exactly_once(output: Path, photos: Path) -> None:
    assert sorted(rows(output)["uri"].to_pylist()) == sorted(str(p) for p in photos.iterdir())


def shard_files(output: Path) -> list[Path]:
    return sorted((output / "_shards").glob("*.parquet")) if (output / "_shards").exists() else []


def test_committed_shards_are_compacted_into_few_sorted_part_files(
    photos: Path, tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "out"
    monkeypatch.setattr(lease, "TTL_SECONDS", 3600.0)  # no heartbeat: the PUTs below are exactly these
    result = run_job(job(photos, output, rows_per_file=4))
    parts = sorted(output.glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-000000.parquet", "part-000001.parquet"] and result.files == 2
    assert not shard_files(output)
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in parts]
    assert sizes == [6, 4]  # two 3-image shards reach 4 rows; the job's tail is the last file
    shards = [json.loads(pq.ParquetFile(p).schema_arrow.metadata[SHARDS_KEY]) for p in parts]
    assert sorted(s for group in shards for s in group) == [0, 1, 2, 3]
    for part in parts:
        uris = pq.read_table(part, columns=["uri"])["uri"].to_pylist()
        assert uris == sorted(uris)
        schema = pq.ParquetFile(part).schema_arrow  # every column documented in the file itself
        assert all(field.metadata and field.metadata[b"description"] for field in schema)
        assert b"the person's right eye" in schema.field("faces").metadata[b"description"]
    assert_exactly_once(output, photos)
    assert sorted(p.name for p in output.iterdir()) == ["_job.json", *(p.name for p in parts)]  # no _shards/
    record = json.loads((output / "_job.json").read_text())
    assert record["complete"] and record["images"] == PHOTOS and record["this_run"]["new_images"] == PHOTOS
    requests = record["this_run"]["requests"]
    # every image and shard file read once; shard files, part files, the record started with and the
    # lease taken written
    assert requests["GET"] >= PHOTOS + 4 and requests["PUT"] == 4 + 2 + 1 + 1


def test_rerun_after_a_crash_does_only_what_is_missing(photos: Path, tmp_path: Path, ray_local: None) -> None:
    output = tmp_path / "out"
    run_job(job(photos, output, rows_per_file=4))
    record = json.loads((output / "_job.json").read_text())
    lost = pq.read_table(output / "part-000001.parquet", columns=["uri"])["uri"].to_pylist()
    (output / "part-000001.parquet").unlink()  # as if the run had died before this compaction
    (output / "_job.json").write_text(json.dumps({**record, "complete": False, "finished_at": None}))
    again = run_job(job(photos, output, rows_per_file=4))
    assert again.images == len(lost) == 4 and again.plan.done == 6 and again.resumed.images == 6
    assert_exactly_once(output, photos)
    after = json.loads((output / "_job.json").read_text())
    assert after["complete"] and after["images"] == PHOTOS and after["faces"] == record["faces"]
    assert after["started_at"] == record["started_at"]


def test_shards_committed_before_their_compaction_are_kept_and_compacted(
    photos: Path, tmp_path: Path, ray_local: None
) -> None:
    output = tmp_path / "out"
    run_job(job(photos, output))
    part = output / "part-000000.parquet"
    table = pq.read_table(part).replace_schema_metadata(None)
    # What a driver killed before its compaction leaves: committed shard files and no part file.
    storage = storage_for(str(output))
    write_parquet(table.slice(0, 3), storage, str(output / shard_path(0)))
    write_parquet(table.slice(3, 3), storage, str(output / shard_path(1)))
    part.unlink()
    again = run_job(job(photos, output))
    assert again.images == PHOTOS - 6 and again.resumed.images == 6 and again.files == 1
    assert not shard_files(output)
    assert_exactly_once(output, photos)


def test_a_shard_left_behind_by_a_finished_compaction_is_removed(
    photos: Path, tmp_path: Path, ray_local: None
) -> None:
    output = tmp_path / "out"
    run_job(job(photos, output))
    table = pq.read_table(output / "part-000000.parquet").replace_schema_metadata(None)
    # Killed between the part file's PUT and the deletion of its shards: a copy of shard 2 remains.
    write_parquet(table.slice(6, 3), storage_for(str(output)), str(output / shard_path(2)))
    again = run_job(job(photos, output))
    assert again.already_complete and again.images == 0 and again.resumed.images == PHOTOS
    assert not shard_files(output)
    assert_exactly_once(output, photos)


def test_incremental_run_does_only_the_new_images(photos: Path, tmp_path: Path, ray_local: None) -> None:
    output = tmp_path / "out"
    run_job(job(photos, output))
    before = {p.name: p.stat().st_mtime_ns for p in output.glob("part-*.parquet")}
    nothing = run_job(job(photos, output))
    assert nothing.already_complete and nothing.images == 0 and nothing.resumed.images == PHOTOS
    first = sorted(photos.iterdir())[0]
    for name in ("0-late-upload.png", "zz-late-upload.png"):
        (photos / name).write_bytes(first.read_bytes())
    again = run_job(job(photos, output))
    assert again.images == 2 and again.plan.new == 2 and again.plan.done == PHOTOS and again.files == 1
    # The small tail part took the 2 new rows in one PUT, instead of a part file of 2 rows beside it.
    assert list(before) == [p.name for p in output.glob("part-*.parquet")] == ["part-000000.parquet"]
    tail = pq.ParquetFile(output / "part-000000.parquet")
    shards = json.loads(tail.schema_arrow.metadata[SHARDS_KEY])
    assert tail.metadata.num_rows == PHOTOS + 2 and shards == [0, 1, 2, 3, 4]  # 4 shards of 3, then 1
    assert_exactly_once(output, photos)
    record = json.loads((output / "_job.json").read_text())
    assert record["complete"] and record["images"] == PHOTOS + 2 and record["this_run"]["new_images"] == 2


def test_changed_and_vanished_images_are_counted_and_changed_ones_redone(
    photos: Path, tmp_path: Path, ray_local: None
) -> None:
    output = tmp_path / "out"
    run_job(job(photos, output))
    changed, vanished = sorted(photos.iterdir())[:2]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    vanished.unlink()
    seen = run_job(job(photos, output))
    assert seen.images == 0 and seen.plan.changed == 1 and seen.plan.vanished == 1
    assert seen.plan.changed_examples == [str(changed)] and seen.plan.vanished_examples == [str(vanished)]
    redone = run_job(job(photos, output, reprocess_changed=True))
    assert redone.images == 1 and redone.redone_changed == 1 and redone.plan.changed == 0
    table = rows(output)
    uris = table["uri"].to_pylist()
    assert sorted(uris) == sorted([*(str(p) for p in photos.iterdir()), str(vanished)])  # each once
    assert table["etag"][uris.index(str(changed))].as_py() == str(changed.stat().st_mtime_ns)
    assert json.loads((output / "_job.json").read_text())["images"] == PHOTOS


def test_other_config_is_refused_naming_both_values_and_overwrite_redoes(
    photos: Path, tmp_path: Path, ray_local: None
) -> None:
    output = tmp_path / "out"
    run_job(job(photos, output))
    with pytest.raises(OutputConflictError, match=r"different nms_threshold, score_threshold .*0\.5 -> 0\.3"):
        run_job(job(photos, output, score_threshold=0.3, nms_threshold=0.3))
    (output / "user-notes.txt").write_text("not ours")
    redone = run_job(job(photos, output, score_threshold=0.3), overwrite=True)
    assert redone.images == PHOTOS and redone.resumed.images == 0
    assert (output / "user-notes.txt").exists()
    assert json.loads((output / "_job.json").read_text())["identity"]["score_threshold"] == 0.3


def test_dry_run_plans_without_ray_or_writing(photos: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "facesweep.cli",
        "run",
        str(photos),
        str(output),
        "--dry-run",
        "--shard-size=3",
    ]
    done = subprocess.run([*command, "--rate", "5"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"listed: {PHOTOS} images; already done: 0; new: {PHOTOS}" in done.stdout
    assert "plan: 4 shards of up to 3 images, 1 output file (" in done.stdout
    assert f"GET {PHOTOS + 4}" in done.stdout and "estimate: 2 s at 5.0 images/s" in done.stdout
    assert not output.exists()


def test_one_rate_kept_through_a_run_with_nothing_to_do(photos: Path, tmp_path: Path) -> None:
    """The progress lines, the summary and the next dry run give one rate; a re-run that had nothing to
    do keeps it; a dry run previews --overwrite and checks that OUTPUT can be written."""
    output = tmp_path / "out"
    command = [sys.executable, "-m", "facesweep.cli", "run", str(photos), str(output), "--shard-size=2"]
    first = subprocess.run([*command, "--actors=1"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    last_line = float(re.findall(r"^shard \d+: .* ([\d.]+) img/s$", first.stderr, re.M)[-1])
    summary = float(re.search(r"^throughput: ([\d.]+) images/s from the actors", first.stdout, re.M).group(1))
    assert last_line == summary > 0, (first.stderr, first.stdout)
    assert f"the job now holds {PHOTOS} images, " in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.startswith("nothing to do"), again
    planned = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert f"at {summary:.1f} images/s (the last run's rate)" in planned.stdout, planned.stdout
    overwrite = subprocess.run(
        [*command, "--dry-run", "--overwrite"], capture_output=True, text=True, timeout=120
    )
    assert overwrite.returncode == 0, overwrite.stderr
    assert f"already done: 0; new: {PHOTOS} images" in overwrite.stdout
    assert "overwrite: 2 files of facesweep's in OUTPUT would be removed first" in overwrite.stdout
    assert (output / "part-000000.parquet").exists(), "a dry run removes nothing"
    (tmp_path / "a-file").write_text("")
    unwritable = [*command[:-2], str(tmp_path / "a-file" / "out"), "--dry-run"]
    refused = subprocess.run(unwritable, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "Not a directory: give a writable OUTPUT" in refused.stderr


def test_a_tail_merge_repeated_after_its_put_adds_no_row_twice(photos: Path, tmp_path: Path) -> None:
    """`compact(..., extend=True)` killed after the tail's PUT, before deleting the shard files, and run
    again: the tail's footer names the shards, so they are not merged a second time."""
    output, storage = tmp_path / "out", storage_for(str(tmp_path / "out"))
    uris = sorted(str(p) for p in photos.iterdir())
    rows = results_table([ImageResult(uri, error="x", error_kind="corrupt") for uri in uris], "m")
    write_parquet(rows.slice(0, 4), storage, str(output / shard_path(0)))
    compact(str(output), [0], 0)
    shards = {1: rows.slice(4, 3), 2: rows.slice(7)}
    for repeat in range(2):  # the second: the shard files back, as if the first's deletions never ran
        for index, table in shards.items():
            write_parquet(table, storage, str(output / shard_path(index)))
        report = compact(str(output), [1, 2], 0, extend=True)
        assert report.counts.images == PHOTOS, repeat
    table = pq.read_table(output / "part-000000.parquet")
    assert table["uri"].to_pylist() == uris
    assert json.loads(table.schema.metadata[SHARDS_KEY]) == [0, 1, 2]
    assert not shard_files(output)


def test_model_checksum_pin(photos: Path, tmp_path: Path) -> None:
    checksum = model_checksum(resolve_model("retinaface-mnet025"))
    command = [
        sys.executable,
        "-m",
        "facesweep.cli",
        "run",
        str(photos),
        str(tmp_path / "out"),
        "--model-sha256",
    ]
    wrong = subprocess.run([*command, "0" * 64], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1 and f"has SHA-256 {checksum}, not {'0' * 64}" in wrong.stderr
    assert not (tmp_path / "out").exists()


def test_a_relative_output_is_resumed_too(
    photos: Path, tmp_path: Path, ray_local: None, ray_workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OUTPUT is relative to the caller's directory, not to the actors' and compactions' (Ray's, another
    one here): nothing is written where they run."""
    monkeypatch.chdir(tmp_path)
    assert tmp_path != ray_workdir and not (ray_workdir / "out").exists()
    run_job(job(photos, Path("out")))
    again = run_job(job(photos, Path("./out")))
    assert again.already_complete and again.images == 0 and again.resumed.images == PHOTOS
    assert_exactly_once(tmp_path / "out", photos)
    assert not (ray_workdir / "out").exists()


def test_resume_takes_every_setting_from_output(photos: Path, tmp_path: Path, ray_local: None) -> None:
    output = tmp_path / "out"
    config = job(photos, output, score_threshold=0.4, rows_per_file=7, crops=CropSettings(crop_margin=0.5))
    run_job(config)
    parser = build_parser()
    argv = ["run", "--resume", str(output)]
    resumed = config_from_args(run_arguments(parser, argv, parser.parse_args(argv)))
    assert resumed == config
    command = [sys.executable, "-m", "facesweep.cli", "run", "--resume", str(output)]
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.startswith("nothing to do"), again
    other = subprocess.run(
        [*command, "--score-threshold", "0.3"], capture_output=True, text=True, timeout=120
    )
    assert other.returncode == 1 and "score_threshold" in other.stderr and "0.4 -> 0.3" in other.stderr
    missing = subprocess.run([*command[:-1], str(photos)], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1
    assert f"--resume {photos}: no _job.json there" in missing.stderr
