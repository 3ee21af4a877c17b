"""`facesweep errors OUTPUT` on real outputs: exactly the error rows, from a local folder or S3, or that
there are none."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from facesweep.cli import main
from infra.local_s3 import LocalS3
from tests.outputs import BROKEN


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[list[str]]:
    """`facesweep errors ARGS`'s stdout, split into tab-separated fields (it must exit 0)."""
    assert main(["errors", *args]) == 0
    return [line.split("\t") for line in capsys.readouterr().out.splitlines()]


def test_the_error_rows_of_a_local_and_an_s3_output(
    output: Path, s3_env: LocalS3, capsys: pytest.CaptureFixture[str]
) -> None:
    table = ds.dataset(output, format="parquet").to_table().sort_by("uri")
    errors = table.filter(pc.equal(table["status"], "error")).select(["uri", "error_kind", "error"])
    expected = [["uri", "error_kind", "error"], *(list(row.values()) for row in errors.to_pylist())]
    assert len(expected) == 2 and expected[1][0].endswith(BROKEN)  # the small job's broken JPEG
    assert listed(capsys, str(output)) == expected
    client = s3_env.client()
    client.create_bucket(Bucket="errors-test")
    for part in output.glob("*.parquet"):
        client.upload_file(str(part), "errors-test", f"run/{part.name}")
    assert listed(capsys, "s3://errors-test/run/") == expected


def test_an_output_without_error_rows_says_so(
    output: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = ds.dataset(output, format="parquet").to_table()
    clean = table.filter(pc.equal(table["status"], "ok"))
    pq.write_table(clean, tmp_path / "part-000000.parquet")
    assert listed(capsys, str(tmp_path)) == [
        [f"no error rows: every one of the {clean.num_rows} images of {tmp_path} was read"]
    ]


def test_a_missing_output_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["errors", str(tmp_path / "nothing")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"facesweep: error: {tmp_path / 'nothing'}: no such directory"), line
