"""The output contract: one Arrow row per image, written as one Parquet file per shard, atomically."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workers.faces import Faces
from workers.storage import Storage

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
SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("model", pa.string()),
        ("faces", pa.list_(FACE_TYPE)),
    ]
)


@dataclass(frozen=True)
class ImageResult:
    """One input image's outcome: its faces (original-image pixels, best first) or an error."""

    uri: str
    width: int | None = None
    height: int | None = None
    faces: Faces | None = None
    error: str | None = None


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
            "width": pa.array([r.width for r in results], pa.int32()),
            "height": pa.array([r.height for r in results], pa.int32()),
            "status": pa.array(["ok" if good else "error" for good in ok], pa.string()),
            "error": pa.array([r.error for r in results], pa.string()),
            "model": pa.array([model] * len(results), pa.string()),
            "faces": pa.ListArray.from_arrays(offsets, faces, mask=pa.array([not good for good in ok])),
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
    """A committed shard's totals, kept in its Parquet footer so a resumed job can sum them cheaply."""

    images: int
    faces: int
    errors: int


COUNTS_KEY = b"facesweep.counts"


def write_parquet(table: pa.Table, storage: Storage, uri: str) -> ShardCounts:
    """Writes `table` to `uri` as one Parquet file, atomically (readers never see a partial file)."""
    counts = ShardCounts(
        images=table.num_rows,
        faces=int(pc.sum(pc.list_value_length(table["faces"])).as_py() or 0),
        errors=int(pc.sum(pc.equal(table["status"], "error")).as_py() or 0),
    )
    table = table.replace_schema_metadata({COUNTS_KEY: json.dumps(asdict(counts)).encode()})
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    storage.put(uri, buffer.getvalue().to_pybytes())
    return counts


def read_counts(parquet: bytes) -> ShardCounts:
    """The counts a shard file carries in its footer."""
    metadata = pq.read_metadata(pa.BufferReader(parquet)).metadata or {}
    return ShardCounts(**json.loads(metadata[COUNTS_KEY]))
