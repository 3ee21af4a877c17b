"""workers/output/layout.py: every path it writes parses back to what it names, and nothing else is taken
for one of facesweep's files."""

from __future__ import annotations

import pytest

from facesweep.workers.output.layout import (
    JOB_FILE,
    OutputPath,
    crop_part_path,
    crop_shard_path,
    expected_requests,
    parse,
    part_path,
    shard_path,
)


@pytest.mark.parametrize("number", [0, 7, 123_456, 999_999])
def test_every_written_path_parses_back(number: int) -> None:
    assert parse(part_path(number)) == OutputPath("part", True, number)
    assert parse(shard_path(number)) == OutputPath("shard", False, number)
    assert parse(crop_shard_path(number)) == OutputPath("crops", False, number)
    assert parse(crop_part_path(number, 3)) == OutputPath("crops", True, number)
    assert parse(JOB_FILE) == OutputPath("record")


@pytest.mark.parametrize(
    "relative",
    [
        "photo.parquet",  # a user's file beside the output
        "part-000001-002.parquet",  # a crops file's name outside _crops/
        "_crops/part-000001.parquet",  # a data file's name inside _crops/
        "part-abc.parquet",
        "_shards/x/shard-000000001.parquet",
        "_shards/shard-000000001.parquet.tmp",
        "part-000001/x.parquet",
        "_job.json.bak",
    ],
)
def test_other_files_are_not_taken_for_ours(relative: str) -> None:
    assert parse(relative) is None


def test_expected_requests_count_each_file_once() -> None:
    plain = expected_requests(100, 2, 1, 1, copies=False, crops=False)
    assert plain == {"LIST": 0, "GET": 103, "PUT": 5, "HEAD": 0, "DELETE": 1}
    both = expected_requests(100, 2, 1, 1, copies=True, crops=True)
    assert both == {"LIST": 0, "GET": 106, "PUT": 108, "HEAD": 0, "DELETE": 2}
    assert expected_requests(0, 0, 2001, 3, False, False)["DELETE"] == 3  # 1,000 keys a call
