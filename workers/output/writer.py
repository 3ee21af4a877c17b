"""The output contract and its files: one Arrow row per image; each shard's rows written by its actor to a
hidden `_shards/` file, and the committed shards compacted into few large `part-NNNNNN.parquet` files.

Every file is written atomically (one PUT, or a renamed temporary file) with its rows sorted by uri and its
counts in the footer; a part file's footer also names the shards it holds, so a shard file left behind by a
compaction that was cut short is known to be a copy and removed. Readers take `part-*.parquet` only
(pyarrow, DuckDB and Spark skip `_`-prefixed paths), so no reader ever sees an image twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, astuple, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facesweep.workers.faces import Faces
from facesweep.workers.products.crops import (
    CROP_COMPRESSION,
    CROP_FOLDER,
    crop_part_path,
    crop_part_prefix,
    crop_shard_path,
)
from facesweep.workers.storage import ObjectError, RangedFile, Storage, join, request_counts, storage_for

SHARD_FOLDER = "_shards"
PART_PREFIX = "part-"
PART_ROW_GROUP = 16384
"""Rows per row group of a part file: a re-run streams a part's uri column this many rows at a time."""
READERS = 32
"""Shard files a compaction reads at once."""
CROP_PART_BYTES = 256 * 2**20
"""Crop bytes per crops file of a part (a part's 100,000 images can hold a million faces: 4 GB of crops)."""

FACE_TYPE = pa.struct(
    [
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("x2", pa.float32()),
        ("y2", pa.float32()),
        ("score", pa.float32()),
        ("landmarks", pa.list_(pa.float32())),
    ]
)
COLUMNS = {
    "uri": (
        pa.string(),
        "the input image: its full s3:// URI or absolute local path; an image in a container: the "
        "container's, then # and the tar member's path or row=N (the Parquet row, from 0)",
    ),
    "etag": (
        pa.string(),
        "the version of the object processed: its S3 ETag as listed, a local file's "
        "modification time in ns, or null (a manifest without versions)",
    ),
    "size": (pa.int64(), "the object's size in bytes as listed (a container's member: its own), or null"),
    "width": (pa.int32(), "width in pixels of the decoded image after EXIF orientation; null if not decoded"),
    "height": (pa.int32(), "height in pixels, as width"),
    "status": (pa.string(), "ok, or error (then faces is null)"),
    "error": (pa.string(), "what was wrong with this image, in a few words; null when ok"),
    "error_kind": (
        pa.string(),
        "why, as a value: fetch, not_an_image, truncated, corrupt, too_large, "
        "undecodable, or internal (a bug of facesweep's)",
    ),
    "model": (pa.string(), "the model's name or path"),
    "faces": (
        pa.list_(FACE_TYPE),
        "every face, best score first: x1, y1, x2, y2 = box corners in pixels of "
        "the original upright image (origin top left, x right, y down); score in [0, 1]; landmarks = "
        "x, y of five points or null when the model has none: the eye on the image's left (the person's "
        "right eye), the other eye, the nose tip, the mouth corner on the image's left, the other "
        "mouth corner. Empty when no face, null on error rows",
    ),
    "key": (
        pa.string(),
        "an image in a container: the WebDataset sample key (__key__) or the Parquet row's id; else null",
    ),
    "container": (
        pa.string(),
        "an image in a container: the piece of it that held the image (container#bytes=START-END); else null",
    ),
}
SCHEMA = pa.schema(
    [pa.field(name, kind, metadata={"description": text}) for name, (kind, text) in COLUMNS.items()]
)
"""The output contract: one row per input image; each field's description is in the file's schema."""


@dataclass(frozen=True)
class ImageResult:
    """One input image's outcome: its faces (original-image pixels, best first) or an error."""

    uri: str
    width: int | None = None
    height: int | None = None
    faces: Faces | None = None
    error: str | None = None
    error_kind: str | None = None  # errors.ErrorKind
    etag: str | None = None  # the version of the object listed (S3 ETag, a file's mtime), and its size
    size: int | None = None
    key: str | None = None  # in a container: the sample key or row id, and the piece that held it
    container: str | None = None


def results_table(results: Sequence[ImageResult], model: str) -> pa.Table:
    """The contract's table for `results`; error rows have null faces. Built column-wise, no per-face loop."""
    ok = [r.faces is not None and r.error is None for r in results]
    found = [r.faces for r, good in zip(results, ok, strict=True) if good]
    counts = np.array([len(r.faces) if good else 0 for r, good in zip(results, ok, strict=True)], np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    boxes = np.concatenate([f.boxes for f in found]) if found else np.zeros((0, 4), np.float32)
    scores = np.concatenate([f.scores for f in found]) if found else np.zeros(0, np.float32)
    faces = pa.StructArray.from_arrays(
        [
            *(pa.array(boxes[:, i], pa.float32()) for i in range(4)),
            pa.array(scores, pa.float32()),
            _landmarks(found, len(scores)),
        ],
        fields=list(FACE_TYPE),
    )
    return pa.table(
        {
            "uri": pa.array([r.uri for r in results], pa.string()),
            "etag": pa.array([r.etag for r in results], pa.string()),
            "size": pa.array([r.size for r in results], pa.int64()),
            "width": pa.array([r.width for r in results], pa.int32()),
            "height": pa.array([r.height for r in results], pa.int32()),
            "status": pa.array(["ok" if good else "error" for good in ok], pa.string()),
            "error": pa.array([r.error for r in results], pa.string()),
            "error_kind": pa.array([r.error_kind for r in results], pa.string()),
            "model": pa.array([model] * len(results), pa.string()),
            "faces": pa.ListArray.from_arrays(
                offsets, faces, mask=pa.array([not good for good in ok], pa.bool_())
            ),
            "key": pa.array([r.key for r in results], pa.string()),
            "container": pa.array([r.container for r in results], pa.string()),
        },
        schema=SCHEMA,
    )


def _landmarks(found: Sequence[Faces], count: int) -> pa.Array:
    """10 floats per face (x,y of five points), or nulls when the model has no landmarks."""
    if not found or found[0].landmarks is None:
        return pa.nulls(count, pa.list_(pa.float32()))
    points = np.concatenate([f.landmarks for f in found]).astype(np.float32).reshape(-1)
    return pa.ListArray.from_arrays(
        pa.array(np.arange(0, 10 * count + 1, 10, dtype=np.int32)), pa.array(points)
    )


@dataclass(frozen=True)
class ShardCounts:
    """A file's totals, kept in its Parquet footer so a re-run can sum them from footers alone."""

    images: int
    faces: int
    errors: int
    crops: int = 0  # rows in the file's crops (--crops; workers/products/crops.py)

    def __add__(self, other: ShardCounts) -> ShardCounts:
        return ShardCounts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __sub__(self, other: ShardCounts) -> ShardCounts:
        return ShardCounts(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


NO_COUNTS = ShardCounts(0, 0, 0)
COUNTS_KEY = b"facesweep.counts"
SHARDS_KEY = b"facesweep.shards"
PIECES_KEY = b"facesweep.pieces"
Piece = tuple[str, str | None, int | None]
"""A container's piece a file's rows came from: its uri, the container's etag and size (the ledger's)."""


def shard_path(index: int) -> str:
    """A shard's file, relative to OUTPUT."""
    return f"{SHARD_FOLDER}/shard-{index:09d}.parquet"


def part_path(number: int) -> str:
    return f"{PART_PREFIX}{number:06d}.parquet"


def write_parquet(
    table: pa.Table,
    storage: Storage,
    uri: str,
    shards: Sequence[int] = (),
    row_group: int | None = None,
    pieces: Sequence[Piece] = (),
    crops: int = 0,
) -> ShardCounts:
    """Writes `table` to `uri` as one Parquet file, atomically (readers never see a partial file); a part
    file names the `shards` it holds, and any file the container `pieces` it did (even one without an
    image: a piece is done when a footer names it); `crops`: the rows of its crops files."""
    counts = ShardCounts(
        images=table.num_rows,
        faces=int(pc.sum(pc.list_value_length(table["faces"])).as_py() or 0),
        errors=int(pc.sum(pc.equal(table["status"], "error")).as_py() or 0),
        crops=crops,
    )
    metadata = {COUNTS_KEY: json.dumps(asdict(counts)).encode()}
    if shards:
        metadata[SHARDS_KEY] = json.dumps(list(shards)).encode()
    if pieces:
        metadata[PIECES_KEY] = json.dumps(sorted(map(list, pieces))).encode()
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


def read_footer(file: pq.ParquetFile) -> Footer:
    return footer_of(file.schema_arrow.metadata or {})


def footer_of(metadata: dict[bytes, bytes]) -> Footer:
    shards = tuple(json.loads(metadata[SHARDS_KEY])) if SHARDS_KEY in metadata else ()
    pieces = tuple(tuple(p) for p in json.loads(metadata[PIECES_KEY])) if PIECES_KEY in metadata else ()
    return Footer(ShardCounts(**json.loads(metadata[COUNTS_KEY])), shards, pieces)


@dataclass(frozen=True)
class CompactionReport:
    """A part file written from committed shard files (which are then deleted)."""

    number: int
    counts: ShardCounts
    requests: dict[str, int]  # made by this compaction


def compact(output: str, shards: Sequence[int], number: int) -> CompactionReport:
    """Merges the shard files `shards` of OUTPUT into part file `number`, sorted by uri, then deletes them;
    their crops first into the part's crops files.

    Safe to repeat: when an earlier attempt already wrote the part file and deleted some shard files, it
    finishes the deletion."""
    before = request_counts()
    storage = storage_for(output)
    target = join(output, part_path(number))
    sources = [join(output, shard_path(i)) for i in shards]
    with ThreadPoolExecutor(READERS, thread_name_prefix="compact") as pool:
        try:
            tables = list(pool.map(lambda uri: pq.read_table(pa.BufferReader(storage.get(uri))), sources))
        except ObjectError:
            tables = None
        if tables is None:
            footer = read_footer(pq.ParquetFile(RangedFile(target)))
            if sorted(footer.shards) != sorted(shards):
                raise RuntimeError(f"{target}: a shard file to compact into it is missing")
            counts = footer.counts
        else:
            footers = [footer_of(t.schema.metadata or {}) for t in tables]
            cropped = [i for i, f in zip(shards, footers, strict=True) if f.counts.crops]
            if cropped:
                compact_crops(storage, output, cropped, number, pool)
            pieces = [p for f in footers for p in f.pieces]
            table = pa.concat_tables(tables, promote_options="default")  # files older than a column
            table = table.select(SCHEMA.names).cast(SCHEMA).sort_by("uri")
            crops = sum(f.counts.crops for f in footers)
            counts = write_parquet(table, storage, target, shards, PART_ROW_GROUP, pieces, crops)
    storage.delete(sources)
    if counts.crops:  # after the shard files: while one of those is left, a repeat needs all its crops
        storage.delete([join(output, crop_shard_path(i)) for i in shards])
    after = request_counts()
    return CompactionReport(number, counts, {k: after[k] - before[k] for k in after})


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
