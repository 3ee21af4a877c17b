"""--retry-errors: a job's error rows of some kinds redone once (images a manifest named before they
existed, a broken member of a tar), each image still exactly once; the dry run counts them without
writing, a run without the flag and --resume do not retry."""

from __future__ import annotations

import io
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from facesweep.cli import build_parser, config_from_args, dry_run_summary, summary
from facesweep.specs import read_spec, run_arguments, subcommand
from facesweep.workers.config import DetectorSettings, JobConfig
from facesweep.workers.job.driver import run_job
from facesweep.workers.job.preparation import dry_run
from facesweep.workers.job.progress import Retried
from infra.demo import sample_photos


def statuses(output: Path) -> dict[str, str]:
    """Each row's status by uri; an image twice fails."""
    table = ds.dataset(output, format="parquet").to_table(columns=["uri", "status", "error_kind"])
    found = {row["uri"]: row["error_kind"] or row["status"] for row in table.to_pylist()}
    assert len(found) == table.num_rows, "an image twice"
    return found


def files(output: Path, pattern: str = "*") -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in output.rglob(pattern) if p.is_file()}


def test_error_rows_of_the_kinds_asked_are_redone_once(tmp_path: Path, ray_local: None) -> None:
    photos = [path for _, path in sample_photos()[:4]]
    here, later = tmp_path / "here", tmp_path / "later"
    here.mkdir()
    for photo in photos[:2]:
        shutil.copy(photo, here / photo.name)
    (here / "junk.jpg").write_bytes(b"not an image")
    tar = here / "000000.tar"
    with tarfile.open(tar, "w") as archive:
        for name, data in (("a.jpg", photos[0].read_bytes()), ("b.jpg", b"broken")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    missing = [later / photo.name for photo in photos[2:]]
    manifest = tmp_path / "images.txt"
    manifest.write_text("\n".join(map(str, [*sorted(here.iterdir()), *missing])) + "\n")
    output = tmp_path / "out"
    settings = DetectorSettings(model="retinaface-mnet025")
    config = JobConfig(str(manifest), str(output), settings, actors=1, cpus_per_actor=1, shard_size=3)

    first = run_job(config)
    assert first.error_kinds == {"fetch": 2, "not_an_image": 2} and first.retried is None
    later.mkdir()
    for photo, path in zip(photos[2:], missing, strict=True):
        shutil.copy(photo, path)

    before, data = files(output), files(output, "*.parquet")
    planned = dry_run(replace(config, retry_errors=("fetch",)))
    assert planned.retried == Retried(("fetch",), errors=2, entries=2)
    assert planned.counts.new == 2 and planned.counts.done == 4
    assert "retry: 2 error rows of kinds fetch would be redone" in dry_run_summary(planned)
    assert files(output) == before, "a dry run writes nothing"

    again = run_job(config)  # without the flag: nothing to do, the error rows stay
    assert again.already_complete and again.retried is None and files(output, "*.parquet") == data

    fetched = run_job(replace(config, retry_errors=("fetch",)))
    assert fetched.retried == Retried(("fetch",), errors=2, entries=2, ok=2, still_errors=0)
    assert fetched.images == 2 and fetched.total.errors == 2
    assert "retried: 2 error rows (fetch); 2 came back ok, 0 still errors" in summary(fetched, str(output))
    rows = statuses(output)
    assert [rows[str(path)] for path in missing] == ["ok", "ok"]
    assert rows[str(here / "junk.jpg")] == rows[f"{tar}#b.jpg"] == "not_an_image"  # not retried by default

    broken = run_job(replace(config, retry_errors=("not_an_image",)))
    # junk.jpg, and the tar's piece redone whole: its good member too
    assert broken.retried == Retried(("not_an_image",), errors=2, entries=2, ok=0, still_errors=2)
    assert broken.images == 3 and broken.total.images == 7 and broken.total.errors == 2
    assert "retried: 2 error rows (not_an_image); 0 came back ok, 2 still errors" in summary(
        broken, str(output)
    )
    assert statuses(output) == rows  # each image once, as before

    none_left = run_job(replace(config, retry_errors=("fetch",)))
    assert none_left.retried == Retried(("fetch",)) and none_left.already_complete
    assert "retried: no error rows (fetch) to redo" in summary(none_left, str(output))

    parser = build_parser()  # --resume goes on with the job's settings, never its one-off retry
    argv = ["run", "--resume", str(output)]
    assert config_from_args(run_arguments(parser, argv, parser.parse_args(argv))).retry_errors is None


def test_the_flag_takes_the_transient_kinds_by_default_and_refuses_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    assert parser.parse_args(["run", "in", "out", "--retry-errors"]).retry_errors == ("fetch",)
    given = parser.parse_args(["run", "in", "out", "--retry-errors", "not_an_image,fetch"])
    assert config_from_args(given).retry_errors == ("not_an_image", "fetch")
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "in", "out", "--retry-errors=fetch,nope"])
    assert (
        "argument --retry-errors: expected error kinds among fetch, not_an_image, truncated, corrupt, "
        "too_large, undecodable, internal, got 'fetch,nope'" in capsys.readouterr().err
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text("retry_errors: true\n")
    assert read_spec(str(spec), subcommand(parser, "run")) == {"retry_errors": ("fetch",)}
    spec.write_text("retry_errors: [corrupt, truncated]\n")
    assert read_spec(str(spec), subcommand(parser, "run")) == {"retry_errors": ("corrupt", "truncated")}
