"""Writing facesweep's Parquet files: each file atomically (one PUT, or a renamed temporary file), its
rows sorted by uri and its counts in its footer (a part file's footer also names the shards it holds, and
any file the container pieces it did). Their paths: `layout.py`; their compaction: `compaction.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facesweep.workers.errors import ErrorKind
from facesweep.workers.storage import Storage

PART_ROW_GROUP = 16384
"""Rows per row group of a part file: a re-run streams a part's uri column this many rows at a time."""


@dataclass(frozen=True)
class ShardCounts:
    """A file's totals, kept in its Parquet footer so a re-run can sum them from footers alone."""

    images: int
    faces: int
    errors: int
    crops: int = 0  # rows in the file's crops (--crops; workers/products/crops.py)
    internal: int = 0  # of `errors`: errors of ours (error_kind internal)

    def __add__(self, other: ShardCounts) -> ShardCounts:
        return ShardCounts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __sub__(self, other: ShardCounts) -> ShardCounts:
        return ShardCounts(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


NO_COUNTS = ShardCounts(0, 0, 0)
COUNTS_KEY = b"facesweep.counts"
SHARDS_KEY = b"facesweep.shards"
PIECES_KEY = b"facesweep.pieces"
VIDEO_SECONDS_KEY = b"facesweep.video_seconds"
Piece = tuple[str, str | None, int | None]
"""A container's piece a file's rows came from: its uri, the container's etag and size (the ledger's)."""
VideoSeconds = tuple[str, str | None, int | None, float]
"""A video's duration as a file's piece of it found it: its uri, etag, size and seconds."""


def write_parquet(
    table: pa.Table,
    storage: Storage,
    uri: str,
    shards: Sequence[int] = (),
    row_group: int | None = None,
    pieces: Sequence[Piece] = (),
    crops: int = 0,
    video_seconds: Sequence[VideoSeconds] = (),
) -> ShardCounts:
    """Writes `table` to `uri` as one Parquet file, atomically (readers never see a partial file); a part
    file names the `shards` it holds, and any file the container `pieces` it did (even one without an
    image: a piece is done when a footer names it); `crops`: the rows of its crops files;
    `video_seconds`: the durations of the videos its pieces are of (a re-run cuts them without opening)."""
    counts = ShardCounts(
        images=table.num_rows,
        faces=int(pc.sum(pc.list_value_length(table["faces"])).as_py() or 0),
        errors=int(pc.sum(pc.equal(table["status"], "error")).as_py() or 0),
        crops=crops,
        internal=int(pc.sum(pc.equal(table["error_kind"], ErrorKind.INTERNAL.value)).as_py() or 0),
    )
    metadata = {COUNTS_KEY: json.dumps(asdict(counts)).encode()}
    if shards:
        metadata[SHARDS_KEY] = json.dumps(list(shards)).encode()
    if pieces:
        metadata[PIECES_KEY] = json.dumps(sorted(map(list, pieces))).encode()
    if video_seconds:
        metadata[VIDEO_SECONDS_KEY] = json.dumps(sorted(map(list, set(video_seconds)))).encode()
    put_table(storage, uri, table.replace_schema_metadata(metadata), row_group=row_group)
    return counts


def put_table(
    storage: Storage, uri: str, table: pa.Table, compression: str = "zstd", row_group: int | None = None
) -> None:
    """`table` as one Parquet file at `uri`, in one PUT (or a renamed temporary file)."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression=compression, row_group_size=row_group)
    storage.put(uri, buffer.getvalue().to_pybytes())


@dataclass(frozen=True)
class Footer:
    """What a file's footer says: its counts, for a part file the shards it holds, the pieces it did."""

    counts: ShardCounts
    shards: tuple[int, ...]
    pieces: tuple[Piece, ...] = ()
    video_seconds: tuple[VideoSeconds, ...] = ()


def read_footer(file: pq.ParquetFile) -> Footer:
    return footer_of(file.schema_arrow.metadata or {})


def footer_of(metadata: dict[bytes, bytes]) -> Footer:
    shards = tuple(json.loads(metadata[SHARDS_KEY])) if SHARDS_KEY in metadata else ()
    pieces = tuple(tuple(p) for p in json.loads(metadata[PIECES_KEY])) if PIECES_KEY in metadata else ()
    seconds = json.loads(metadata.get(VIDEO_SECONDS_KEY, b"[]"))
    return Footer(
        ShardCounts(**json.loads(metadata[COUNTS_KEY])), shards, pieces, tuple(tuple(v) for v in seconds)
    )
