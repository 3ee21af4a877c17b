"""`make demo` end to end: its own SeaweedFS and local Ray, a summary, and a readable local copy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from infra.demo import sample_photos
from tests.paths import ROOT


@pytest.mark.slow
def test_demo_runs_and_leaves_a_readable_copy(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(ROOT)  # `infra` from the checkout; the demo and its Ray run in tmp_path
    result = subprocess.run(
        [sys.executable, "-m", "infra.demo", "--copy-to", str(tmp_path / "copy")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    photos = len(sample_photos())
    assert f"uploaded {photos} photos" in result.stdout
    assert re.search(rf"^images: {photos}   faces: \d+   errors: 0$", result.stdout, re.MULTILINE), (
        result.stdout
    )
    copy = tmp_path / "copy"
    assert f"next: facesweep show {copy}  " in result.stdout and "facesweep show s3://" not in result.stdout
    assert re.search(rf"^report: {copy}/_report/report.html \({photos} images drawn; ", result.stdout, re.M)
    table = ds.dataset(tmp_path / "copy", format="parquet").to_table()
    assert table.num_rows == photos and len(set(table["uri"].to_pylist())) == photos
