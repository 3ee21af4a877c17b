"""Compaction: committed shard files merged into one part file (and their crops into the part's crops
files), then deleted. Safe to repeat at any point: a part file's footer names its shards, so a shard file
left behind by a compaction that was cut short is known to be a copy."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from facesweep.workers.output.layout import (
    CROP_FOLDER,
    SHARD_FOLDER,
    VIDEO_FOLDER,
    crop_part_path,
    crop_part_prefix,
    crop_shard_path,
    part_path,
    shard_path,
)
from facesweep.workers.output.schema import CROP_COMPRESSION, SCHEMA
from facesweep.workers.output.writer import (
    PART_ROW_GROUP,
    Footer,
    ShardCounts,
    footer_of,
    put_table,
    read_footer,
    write_parquet,
)
from facesweep.workers.storage import (
    ObjectError,
    RangedFile,
    Storage,
    is_remote,
    join,
    request_counts,
    storage_for,
)

READERS = 32
"""Shard files a compaction reads at once."""
CROP_PART_BYTES = 256 * 2**20
"""Crop bytes per crops file of a part (a part's 100,000 images can hold a million faces: 4 GB of crops)."""
HOLD_AFTER_PUT = "FACESWEEP_TEST_HOLD_COMPACTION"
"""Test hook: a folder; a compaction marks `part-N` there after its part's PUT, then holds until killed."""


@dataclass(frozen=True)
class CompactionReport:
    """A part file written from committed shard files (which are then deleted)."""

    number: int
    counts: ShardCounts
    requests: dict[str, int]  # made by this compaction
    shards: int  # shard files merged


def compact(output: str, shards: Sequence[int], number: int, extend: bool = False) -> CompactionReport:
    """Merges the shard files `shards` of OUTPUT into part file `number`, sorted by uri, then deletes them;
    their crops first into the part's crops files. `extend`: part `number` exists (a small tail without
    crops, from an earlier run) and its rows join the new ones in the same file, replaced in one PUT, so
    no reader sees a row twice and incremental runs do not each leave a tiny file.

    Safe to repeat: when an earlier attempt already wrote the part file (its footer names the shards) and
    deleted some shard files, it finishes the deletion."""
    before = request_counts()
    storage = storage_for(output)
    target = join(output, part_path(number))
    sources = [join(output, shard_path(i)) for i in shards]
    with ThreadPoolExecutor(READERS, thread_name_prefix="compact") as pool:
        try:
            tables = list(pool.map(lambda uri: pq.read_table(pa.BufferReader(storage.get(uri))), sources))
        except ObjectError:
            tables = None
        tail = pq.read_table(pa.BufferReader(storage.get(target))) if extend else None
        if tables is None or (tail is not None and set(shards) <= set(_footer(tail).shards)):
            footer = _footer(tail) if tail is not None else read_footer(pq.ParquetFile(RangedFile(target)))
            if not set(shards) <= set(footer.shards):
                raise RuntimeError(f"{target}: a shard file to compact into it is missing")
            counts = footer.counts
        else:
            footers = [_footer(t) for t in tables]
            cropped = [i for i, f in zip(shards, footers, strict=True) if f.counts.crops]
            if cropped:
                compact_crops(storage, output, cropped, number, pool)
            if tail is not None:
                tables.append(tail)
                footers.append(_footer(tail))
            pieces = [p for f in footers for p in f.pieces]
            merged = sorted({*shards, *(shard for f in footers for shard in f.shards)})  # the tail's too
            table = pa.concat_tables(tables, promote_options="default")  # files older than a column:
            for field in SCHEMA:  # its rows are null, also when no file has it
                if field.name not in table.column_names:
                    table = table.append_column(field, pa.nulls(table.num_rows, field.type))
            table = table.select(SCHEMA.names).cast(SCHEMA).sort_by("uri")
            crops = sum(f.counts.crops for f in footers)
            seconds = [v for f in footers for v in f.video_seconds]
            counts = write_parquet(table, storage, target, merged, PART_ROW_GROUP, pieces, crops, seconds)
    if hold := os.environ.get(HOLD_AFTER_PUT):
        Path(hold, f"part-{number}").touch()
        threading.Event().wait()
    storage.delete(sources)
    if counts.crops:  # after the shard files: while one of those is left, a repeat needs all its crops
        storage.delete([join(output, crop_shard_path(i)) for i in shards])
    after = request_counts()
    return CompactionReport(number, counts, {k: after[k] - before[k] for k in after}, len(shards))


def _footer(table: pa.Table) -> Footer:
    return footer_of(table.schema.metadata or {})


def remove_empty_folders(output: str) -> None:
    """A local OUTPUT's shard folders once compaction has emptied them, and its videos' segment folders
    once their copies are joined (a store has no folders)."""
    if is_remote(output):
        return
    videos = Path(output, VIDEO_FOLDER)
    joined = [f"{VIDEO_FOLDER}/{f.name}" for f in videos.iterdir()] if videos.is_dir() else []
    for folder in (SHARD_FOLDER, f"{CROP_FOLDER}/{SHARD_FOLDER}", CROP_FOLDER, *joined, VIDEO_FOLDER):
        with contextlib.suppress(OSError):  # not there, or not empty
            Path(output, folder).rmdir()


def compact_crops(
    storage: Storage, output: str, shards: Sequence[int], number: int, pool: ThreadPoolExecutor
) -> None:
    """The crops files of part `number` from the crops files of `shards`, each of about CROP_PART_BYTES,
    sorted by uri and face; a longer run of them left by an earlier attempt of this part is removed."""
    held: list[pa.Table] = []
    size = written = 0

    def flush() -> None:
        nonlocal held, size, written
        if held:
            table = pa.concat_tables(held).sort_by([("uri", "ascending"), ("face", "ascending")])
            put_table(storage, join(output, crop_part_path(number, written)), table, CROP_COMPRESSION)
            held, size, written = [], 0, written + 1

    for start in range(0, len(shards), READERS):
        uris = [join(output, crop_shard_path(i)) for i in shards[start : start + READERS]]
        for table in pool.map(lambda uri: pq.read_table(pa.BufferReader(storage.get(uri))), uris):
            held.append(table)
            size += table.nbytes
            if size >= CROP_PART_BYTES:
                flush()
    flush()
    if storage.exists(join(output, crop_part_path(number, written))):
        prefix = join(output, crop_part_prefix(number))
        left = [uri for uri in storage.list(join(output, CROP_FOLDER)) if uri.startswith(prefix)]
        storage.delete(left[written:])
