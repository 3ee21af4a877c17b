"""Every path under OUTPUT, written and parsed here alone, and the requests a job's files cost.

```
OUTPUT/_job.json                              the job record (record.py)
OUTPUT/part-NNNNNN.parquet                    compacted results: the only files readers take
OUTPUT/_shards/shard-NNNNNNNNN.parquet        a committed shard not yet compacted
OUTPUT/_crops/part-NNNNNN-KKK.parquet         the crops of part NNNNNN, in files of about 256 MiB
OUTPUT/_crops/_shards/shard-NNNNNNNNN.parquet the crops of a committed shard
OUTPUT/_videos/VIDEO/START.nut                a video piece's blurred segment (--anonymize), until the
                                              video's copy is joined from its segments in DEST
OUTPUT/_plan/...                              written by facesweep before the ledger; --overwrite removes it
OUTPUT/_lease.json                            the running job's lease (lease.py): --overwrite keeps it
```
Readers (pyarrow, DuckDB, Spark) skip `_`-prefixed paths, so they see each image once.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

JOB_FILE = "_job.json"
LEASE_FILE = "_lease.json"
SHARD_FOLDER = "_shards"
PART_PREFIX = "part-"
CROP_FOLDER = "_crops"
OLD_PLAN_FOLDER = "_plan"
DELETES_PER_CALL = 1000
"""Keys a DeleteObjects call takes."""

VIDEO_FOLDER = "_videos"
Kind = Literal["part", "shard", "record", "crops", "plan", "segment"]


def shard_path(index: int) -> str:
    """A shard's file, relative to OUTPUT."""
    return f"{SHARD_FOLDER}/shard-{index:09d}.parquet"


def part_path(number: int) -> str:
    """A part file, relative to OUTPUT."""
    return f"{PART_PREFIX}{number:06d}.parquet"


def crop_shard_path(index: int) -> str:
    """A shard's crops file, relative to OUTPUT."""
    return f"{CROP_FOLDER}/{shard_path(index)}"


def video_segments(video: str) -> str:
    """The folder of a video's blurred segments, relative to OUTPUT: named by a hash of its uri."""
    return f"{VIDEO_FOLDER}/{hashlib.sha256(video.encode()).hexdigest()[:32]}/"


def video_segment_path(video: str, start: str) -> str:
    """The blurred segment of a video's piece starting at `start` (as its piece names it), relative to
    OUTPUT."""
    return f"{video_segments(video)}{start}.nut"


def crop_part_prefix(number: int) -> str:
    """What the crops files of part `number` begin with, relative to OUTPUT."""
    return f"{CROP_FOLDER}/{PART_PREFIX}{number:06d}-"


def crop_part_path(number: int, file: int) -> str:
    """Crops file `file` of part file `number`, relative to OUTPUT: `_crops/part-NNNNNN-KKK.parquet`."""
    return f"{crop_part_prefix(number)}{file:03d}.parquet"


@dataclass(frozen=True)
class OutputPath:
    """One of facesweep's files under OUTPUT, parsed from its path. `number` is a part's number or a
    shard's index; for a crops file, that of the data file it belongs to (`part` says which kind)."""

    kind: Kind
    part: bool = False
    number: int = -1


def parse(relative: str) -> OutputPath | None:
    """Which of facesweep's files `relative` (a path below OUTPUT) is; None for anything else."""
    if relative == JOB_FILE:
        return OutputPath("record")
    if relative.startswith(f"{OLD_PLAN_FOLDER}/"):
        return OutputPath("plan")
    if relative.startswith(f"{VIDEO_FOLDER}/"):
        return OutputPath("segment")
    crops = relative.startswith(f"{CROP_FOLDER}/")
    data = _data_file(relative.removeprefix(f"{CROP_FOLDER}/"), crops)
    if data is None:
        return None
    part, number = data
    return OutputPath("crops" if crops else "part" if part else "shard", part, number)


def _data_file(name: str, crops: bool) -> tuple[bool, int] | None:
    """(part, number) of a data file's name (`crops`: of a crops file's name, which a part's crops files
    extend by `-KKK`), None if it is not one."""
    stem = name.removesuffix(".parquet")
    if stem == name:
        return None
    shard = stem.removeprefix(f"{SHARD_FOLDER}/shard-")
    if shard != stem:
        return (False, int(shard)) if shard.isdigit() else None
    number, _, file = stem.removeprefix(PART_PREFIX).partition("-")
    if not stem.startswith(PART_PREFIX) or not number.isdigit() or bool(file) != crops:
        return None
    return (True, int(number)) if not file or file.isdigit() else None


def expected_requests(
    new_images: int, new_shards: int, pending_shards: int, part_files: int, copies: bool, crops: bool
) -> dict[str, int]:
    """The requests a run makes to write its files: each image read, each shard file written and read
    back by its compaction, each part file, the record twice; a copy per image; a crops file per shard
    and per part (at most)."""
    shards = new_shards + pending_shards
    deletes = math.ceil(shards / DELETES_PER_CALL)
    expected = {
        "LIST": 0,
        "GET": new_images + shards,
        "PUT": new_shards + part_files + 2,
        "HEAD": 0,
        "DELETE": deletes,
    }
    if copies:
        expected["PUT"] += new_images
    if crops:
        expected["PUT"] += new_shards + part_files
        expected["GET"] += shards
        expected["DELETE"] += deletes
    return expected
