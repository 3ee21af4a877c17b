"""The job's ledger: what OUTPUT already holds, read in a few requests, so a re-run does exactly what is
missing, and new images are found without holding the set of done ones.

- `OUTPUT/_job.json`: the job record (`workers/output/record.py`), read here for the identity a re-run
  must match.
- The data files (parts and shards, `workers/output/layout.py`), and with --crops the crops of each (a
  shard's crops file is written before it, a part's before it): a crops file whose data file is not committed,
  or whose data file's footer counts no crops, is left from a kill, and removed. The data files are
  the ledger: an image is done exactly when its row is in one of them. Their footers hold their counts
  (and a part's shards), their rows are sorted by uri, so reading the ledger is one LIST, a footer GET
  per file, and the uri columns streamed a row group at a time and merged into one sorted stream
  (`done`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facesweep.workers.errors import UserError
from facesweep.workers.inputs.sorted_runs import Prefetched, merge_sorted
from facesweep.workers.inputs.videos import VideoKey
from facesweep.workers.job.shards import DONE_SCHEMA
from facesweep.workers.output.layout import (
    JOB_FILE,
    OutputPath,
    parse,
)
from facesweep.workers.output.record import JobRecord, encode_record, parse_record
from facesweep.workers.output.schema import CROP_COMPRESSION
from facesweep.workers.output.writer import (
    NO_COUNTS,
    Footer,
    ShardCounts,
    put_table,
    read_footer,
    write_parquet,
)
from facesweep.workers.storage import ObjectInfo, RangedFile, Storage, is_remote, join, storage_for

LEDGER_COLUMNS = ["uri", "etag", "size"]
FOOTER_READERS = 32
ERROR_ROWS = pa.schema([("uri", pa.string()), ("entry", pa.string()), ("file", pa.int32())])
"""An error row as --retry-errors finds it: its uri, what the listing names it by (the uri, or in a
container its piece) and which data file holds it."""


class OutputConflictError(UserError, ValueError):
    """OUTPUT holds another job's results; the message says how they differ and what to do."""


@dataclass(frozen=True)
class DataFile:
    """A committed data file: a part (`number`: its part number) or a shard (`number`: its shard index)."""

    uri: str
    part: bool
    number: int
    size: int
    footer: Footer
    metadata: pq.FileMetaData  # read once; streaming its rows needs no second footer GET


@dataclass
class Ledger:
    """OUTPUT as a job finds it: its record (if any) and its committed data files."""

    output: str
    storage: Storage
    record: JobRecord | None
    files: list[DataFile]
    crop_files: dict[tuple[bool, int], list[str]] = field(default_factory=dict)
    """The crops files of each committed data file, by (part, number)."""

    @classmethod
    def read(cls, output: str, read_only: bool = False) -> Ledger:
        """Reads OUTPUT's record and footers, and removes shard files a compaction had already merged
        (unless `read_only`: then a missing local OUTPUT is an empty one, not created)."""
        storage = storage_for(output)
        if not read_only:
            storage.make_folder(output)
        else:
            storage.check_writable(output)
            if not is_remote(output) and not Path(output).exists():
                return cls(output, storage, None, [])
        root = output.rstrip("/") + "/"
        listed = [(o, parse(o.uri[len(root) :])) for o in storage.list_objects(output)]
        ours = [(info, path) for info, path in listed if path is not None]
        record_uri = join(output, JOB_FILE)
        record = parse_record(storage.get(record_uri)) if any(o.uri == record_uri for o, _ in ours) else None
        data = [(info, path) for info, path in ours if path.kind in ("part", "shard")]
        with ThreadPoolExecutor(FOOTER_READERS, thread_name_prefix="footer") as pool:
            files = list(pool.map(lambda item: _data_file(*item), data))
        merged = {shard for f in files if f.part for shard in f.footer.shards}
        stale = {f.uri for f in files if not f.part and f.number in merged}
        files = [f for f in files if f.uri not in stale]
        committed = {(f.part, f.number) for f in files if f.footer.counts.crops}  # files with crops
        crop_files: dict[tuple[bool, int], list[str]] = {}
        for info, path in ours:
            if path.kind != "crops":
                continue
            if (path.part, path.number) in committed:
                crop_files.setdefault((path.part, path.number), []).append(info.uri)
            else:
                stale.add(info.uri)
        if not read_only:
            storage.delete(sorted(stale))
        return cls(output, storage, record, files, crop_files)

    @property
    def complete(self) -> bool:
        return self.record is not None and self.record.complete

    @property
    def totals(self) -> ShardCounts:
        return sum((f.footer.counts for f in self.files), NO_COUNTS)

    @property
    def shards(self) -> list[DataFile]:
        """Committed shard files not yet in a part file."""
        return [f for f in self.files if not f.part]

    @property
    def next_shard(self) -> int:
        """The first shard index no earlier run used."""
        used = [f.number for f in self.shards] + [s for f in self.files if f.part for s in f.footer.shards]
        return max(used, default=-1) + 1

    @property
    def next_part(self) -> int:
        return max((f.number for f in self.files if f.part), default=-1) + 1

    def done(self) -> Iterator[pa.Table]:
        """Every committed image as (uri, etag, size, file: index into `files`), sorted by uri; an image
        of a container counts through its piece (named in its file's footer), as the listing names it."""
        pool = ThreadPoolExecutor(FOOTER_READERS, thread_name_prefix="ledger")
        try:
            streams = [Prefetched(_rows(f, i), pool) for i, f in enumerate(self.files)]
            yield from merge_sorted([*streams, [self._pieces()]])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _pieces(self) -> pa.Table:
        """The container pieces the files' footers name, as ledger rows, sorted by uri."""
        rows = [(*piece, i) for i, f in enumerate(self.files) for piece in f.footer.pieces]
        columns = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
        arrays = [pa.array(c, f.type) for c, f in zip(columns, DONE_SCHEMA, strict=True)]
        return pa.table(arrays, schema=DONE_SCHEMA).sort_by("uri")

    def video_seconds(self) -> dict[VideoKey, float]:
        """The durations of the videos whose pieces the files did, by uri, etag and size (from footers
        already read: no request)."""
        return {
            (uri, etag, size): seconds
            for f in self.files
            for uri, etag, size, seconds in f.footer.video_seconds
        }

    def check_identity(self, identity: dict) -> None:
        """Refuses to mix this job's results with another's in one OUTPUT, naming the old and new values."""
        if self.record is None:
            if self.files:
                raise OutputConflictError(
                    f"OUTPUT {self.output} already holds {len(self.files)} result files but no "
                    f"{JOB_FILE}: use --overwrite to replace them, or another OUTPUT"
                )
            return
        previous = self.record.identity
        differences = sorted(
            k for k in identity.keys() | previous.keys() if identity.get(k) != previous.get(k)
        )
        if differences:
            changes = "; ".join(f"{k}: {previous.get(k)!r} -> {identity.get(k)!r}" for k in differences)
            raise OutputConflictError(
                f"OUTPUT {self.output} holds a job with a different {', '.join(differences)} ({changes}): "
                "use --overwrite to redo it, or another OUTPUT"
            )

    def clear(self, read_only: bool = False) -> int:
        """--overwrite: removes this tool's files (results, record), nothing else in OUTPUT; how many
        (`read_only`, the dry run: only forgets them)."""
        root = self.output.rstrip("/") + "/"
        ours = [uri for uri in self.storage.list(self.output) if parse(uri[len(root) :]) is not None]
        if not read_only:
            self.storage.delete(ours)
        self.record, self.files = None, []
        return len(ours)

    def drop_rows(self, by_file: dict[int, list[str]]) -> ShardCounts:
        """Rewrites each file without the rows of the given uris (changed images to redo; a container's
        piece: the rows of its images, and the piece from the footer), its crops files first; their
        counts."""
        dropped = NO_COUNTS
        for index, uris in by_file.items():
            file = self.files[index]
            table = pq.read_table(pa.BufferReader(self.storage.get(file.uri)))
            gone = pa.array(uris, pa.string())
            keep = pc.invert(pc.is_in(table["uri"], gone))
            if "container" in table.column_names:
                keep = pc.and_(keep, pc.invert(pc.fill_null(pc.is_in(table["container"], gone), False)))
            kept = table.filter(keep)
            gone_rows = table.filter(pc.invert(keep))["uri"].combine_chunks()
            crops = file.footer.counts.crops - self._drop_crops(file, gone_rows)
            pieces = [p for p in file.footer.pieces if p[0] not in set(uris)]
            shards = file.footer.shards
            seconds = file.footer.video_seconds  # all kept: each is keyed by its video's etag and size
            counts = write_parquet(
                kept, self.storage, file.uri, shards, pieces=pieces, crops=crops, video_seconds=seconds
            )
            dropped += file.footer.counts - counts
            size = self.storage.size(file.uri)
            metadata = pq.ParquetFile(RangedFile(file.uri, size)).metadata
            footer = Footer(counts, file.footer.shards, tuple(pieces), seconds)
            self.files[index] = replace(file, size=size, footer=footer, metadata=metadata)
        return dropped

    def error_rows(self, kinds: Sequence[str]) -> pa.Table:
        """The error rows of `kinds` (ERROR_ROWS), sorted by entry: four columns read of the files whose
        footer counts errors, none of the others."""
        wanted = pa.array(kinds, pa.string())
        with ThreadPoolExecutor(FOOTER_READERS, thread_name_prefix="errors") as pool:
            tables = pool.map(
                lambda i: _error_rows(self.files[i], i, wanted),
                [i for i, f in enumerate(self.files) if f.footer.counts.errors],
            )
            return pa.concat_tables([ERROR_ROWS.empty_table(), *tables]).sort_by("entry")

    def statuses(self, uris: pa.Array, first_shard: int) -> pa.ChunkedArray:
        """The `status` of the rows of `uris` in the files a run whose shards are numbered from
        `first_shard` on wrote (those shards' files, and the parts they went into): its `uri` and `status`
        columns, nothing of the other files."""
        mine = [
            f
            for f in self.files
            if (f.number >= first_shard if not f.part else max(f.footer.shards, default=-1) >= first_shard)
        ]
        with ThreadPoolExecutor(FOOTER_READERS, thread_name_prefix="statuses") as pool:
            columns = [t.filter(pc.is_in(t["uri"], uris))["status"] for t in pool.map(_statuses, mine)]
            return pa.chunked_array([chunk for column in columns for chunk in column.chunks], pa.string())

    def _drop_crops(self, file: DataFile, gone: pa.Array) -> int:
        """Rewrites the crops files of `file` without the crops of the images `gone`; how many it dropped."""
        dropped = 0
        for uri in self.crop_files.get((file.part, file.number), []):
            table = pq.read_table(pa.BufferReader(self.storage.get(uri)))
            keep = pc.invert(pc.is_in(table["uri"], gone))
            kept = table.filter(keep)
            if kept.num_rows < table.num_rows:
                put_table(self.storage, uri, kept, CROP_COMPRESSION)
                dropped += table.num_rows - kept.num_rows
        return dropped

    def write_record(self, record: JobRecord) -> None:
        self.record = record
        self.storage.put(join(self.output, JOB_FILE), encode_record(record))


def _data_file(info: ObjectInfo, path: OutputPath) -> DataFile:
    size = info.size if info.size is not None else storage_for(info.uri).size(info.uri)
    file = pq.ParquetFile(RangedFile(info.uri, size))
    return DataFile(info.uri, path.part, path.number, size, read_footer(file), file.metadata)


def _reader(file: DataFile) -> pq.ParquetFile:
    return pq.ParquetFile(RangedFile(file.uri, file.size), metadata=file.metadata, pre_buffer=True)


def _error_rows(file: DataFile, index: int, kinds: pa.Array) -> pa.Table:
    reader = _reader(file)
    container = "container" in reader.schema_arrow.names
    table = reader.read(columns=["uri", "status", "error_kind"] + ["container"] * container)
    table = table.filter(pc.and_(pc.equal(table["status"], "error"), pc.is_in(table["error_kind"], kinds)))
    entry = pc.coalesce(table["container"], table["uri"]) if container else table["uri"]
    index_column = pa.array(np.full(table.num_rows, index, np.int32))
    return pa.table([table["uri"], entry, index_column], schema=ERROR_ROWS)


def _statuses(file: DataFile) -> pa.Table:
    return _reader(file).read(columns=["uri", "status"])


def _rows(file: DataFile, index: int) -> Iterator[pa.Table]:
    """A data file's ledger columns, a row group at a time, tagged with its index; rows of container
    images left out (their pieces stand for them)."""
    reader = _reader(file)
    containers = "container" in reader.schema_arrow.names
    for group in range(reader.num_row_groups):
        table = reader.read_row_group(group, columns=LEDGER_COLUMNS + ["container"] * containers)
        if containers:
            table = table.filter(pc.is_null(table["container"])).drop_columns(["container"])
        yield table.append_column("file", pa.array(np.full(table.num_rows, index, np.int32)))
