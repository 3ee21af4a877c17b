"""Two jobs into one OUTPUT: `facesweep run` into an OUTPUT whose lease another job holds and renews is
refused in one line naming that job, with or without --overwrite, and leaves OUTPUT as it was."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from facesweep.workers.output.layout import JOB_FILE, LEASE_FILE
from infra.demo import sample_photos
from tests.leases import STARTED, lease_of


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("one-photo")
    (folder / "astronaut.png").write_bytes(dict(sample_photos())["skimage/astronaut.png"].read_bytes())
    return folder


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_a_job_into_an_output_in_use_is_refused(photo: Path, tmp_path: Path, overwrite: bool) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / JOB_FILE).write_text('{"identity": {}}')  # the other job's record: --overwrite must keep it
    (output / LEASE_FILE).write_bytes(held := lease_of(host="render-7", pid=4242))
    result = subprocess.run(
        [sys.executable, "-m", "facesweep.cli", "run", str(photo), str(output), *["--overwrite"] * overwrite],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result
    assert re.fullmatch(
        rf"facesweep: error: OUTPUT {re.escape(str(output))} is in use by another facesweep job \(host "
        rf"render-7, pid 4242, started {re.escape(STARTED)}, last heartbeat \d+ s ago\): wait for it, or "
        rf"remove {re.escape(str(output / LEASE_FILE))} if that job is gone \(without a heartbeat its lease "
        r"expires in \d+ s\)\n",
        result.stderr,
    ), result.stderr
    assert (output / LEASE_FILE).read_bytes() == held
    assert sorted(path.name for path in output.iterdir()) == [JOB_FILE, LEASE_FILE]
    assert (output / JOB_FILE).read_text() == '{"identity": {}}'


def test_a_dry_run_says_the_output_is_in_use_and_takes_nothing(photo: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / LEASE_FILE).write_bytes(held := lease_of(host="render-7", pid=4242))
    result = subprocess.run(
        [sys.executable, "-m", "facesweep.cli", "run", str(photo), str(output), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"^note: OUTPUT is in use by another facesweep job \(host render-7, pid 4242, .*\): "
        r"a run now is refused$",
        result.stdout,
        re.M,
    ), result.stdout
    assert (output / LEASE_FILE).read_bytes() == held and [p.name for p in output.iterdir()] == [LEASE_FILE]
