"""A facesweep job's output read back: every row as one Arrow table, its faces one row per face or as arrays.

`facesweep show`, `facesweep export` and `facesweep eval` read outputs through here (`read_rows`: the
columns they need, with the same storage client as the job).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facesweep.workers.errors import UserError, line_of
from facesweep.workers.faces import Faces
from facesweep.workers.output.schema import SCHEMA
from facesweep.workers.storage import ObjectInfo, RangedFile, StorageError, as_folder, is_remote, storage_for

READERS = 16
"""Output files read at once."""
BOX = ("x1", "y1", "x2", "y2")
LANDMARK_NAMES = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")
"""The five landmarks in the faces' order, named as COCO names keypoints, by the person's side: the first
point is the eye on the image's left, the person's right eye (a frontal face)."""
LANDMARK_COLUMNS = tuple(f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy")
IMAGE_COLUMNS = ("uri", "width", "height", "model", "status", "error", "error_kind")
FLAT_SCHEMA = pa.schema(
    [
        *(SCHEMA.field(name) for name in IMAGE_COLUMNS),
        ("face", pa.int32()),
        *((name, pa.float32()) for name in (*BOX, "score", *LANDMARK_COLUMNS)),
    ]
)
"""One row per face: its image's columns (as the output's), its rank in the image (0 = best score), box
corners, score, and the five landmarks' x and y (null when the model has none)."""


class OutputError(UserError, ValueError):
    """OUTPUT is not a readable facesweep output; the message says which and what to do, in one line."""


def read_output(output: str, columns: Sequence[str] = SCHEMA.names) -> pa.Table:
    """`columns` of every row of the facesweep output at `output` (a local directory or s3://bucket/prefix),
    by uri.

    Raises OutputError when `output` is missing, holds no Parquet file or one that is not facesweep's,
    StorageError when its bucket is missing or the store fails."""
    if not is_remote(output) and not Path(output).is_dir():
        raise OutputError(f"{output}: no such directory: give the OUTPUT folder of a `facesweep run`")
    table = read_rows(output, columns)
    if table is None:
        raise OutputError(
            f"{output}: no Parquet files: give the OUTPUT of a `facesweep run` that has started"
        )
    return table.sort_by("uri")


def read_rows(output: str, columns: Sequence[str] = SCHEMA.names) -> pa.Table | None:
    """`columns` of every row of the output's `.parquet` files (None when it has none), through the one
    storage client every request of facesweep's takes (`workers/storage/`), READERS files at once.

    Files under a name that starts with `_` or `.` (the job's own files, partial writes) are left out, as
    pyarrow, DuckDB and Spark leave them out; a column a file predates reads as nulls."""
    root = as_folder(output)
    files = [
        info
        for info in storage_for(output).list_objects(root)
        if info.uri.endswith(".parquet")
        and not any(part.startswith(("_", ".")) for part in info.uri[len(root) :].split("/"))
    ]
    if not files:
        return None
    schema = pa.schema([SCHEMA.field(name) for name in columns])
    with ThreadPoolExecutor(READERS, thread_name_prefix="output") as pool:
        tables = list(pool.map(lambda info: _read_file(info, schema, output), files))
    return pa.concat_tables(tables)


def _read_file(info: ObjectInfo, schema: pa.Schema, output: str) -> pa.Table:
    try:
        file = pq.ParquetFile(RangedFile(info.uri, info.size))
        names = set(file.schema_arrow.names)
        table = file.read(columns=[name for name in schema.names if name in names])
        columns = [
            table[f.name].cast(f.type) if f.name in names else pa.nulls(table.num_rows, f.type)
            for f in schema
        ]
        return pa.table(columns, schema=schema)
    except (pa.ArrowException, OSError, KeyError) as error:
        if isinstance(error, StorageError):
            raise
        reason = line_of(error)
        raise OutputError(f"{output}: not a readable facesweep output ({info.uri}: {reason})") from None


def flat_faces(table: pa.Table) -> pa.Table:
    """One row per face of `table` (the output's rows; error rows have none), in FLAT_SCHEMA, vectorized."""
    faces = table["faces"].combine_chunks()
    parent = pc.list_parent_indices(faces)
    values = pc.list_flatten(faces)
    lengths = pc.list_value_length(faces).fill_null(0).to_numpy(zero_copy_only=False)
    starts = np.cumsum(lengths) - lengths
    columns = {name: table[name].take(parent) for name in IMAGE_COLUMNS}
    columns["face"] = pa.array(np.arange(len(values)) - starts[parent.to_numpy()], pa.int32())
    columns.update((name, pc.struct_field(values, name)) for name in (*BOX, "score"))
    points, present = _landmark_matrix(pc.struct_field(values, "landmarks"))
    columns.update(
        (name, pa.array(points[:, i], pa.float32(), mask=~present)) for i, name in enumerate(LANDMARK_COLUMNS)
    )
    return pa.table(columns, schema=FLAT_SCHEMA)


def one_row_per_image(table: pa.Table, min_score: float = 0.0) -> pa.Table:
    """FLAT_SCHEMA rows: one per face scoring at least `min_score`, and one with null face columns for
    every image left without a face (none found, none that high, or an error row), so "no face" never
    looks like "not processed"; sorted by uri, then rank."""
    flat = flat_faces(table)
    flat = flat.filter(pc.greater_equal(flat["score"], pa.scalar(min_score, pa.float32())))
    bare = table.filter(pc.invert(pc.is_in(table["uri"], value_set=flat["uri"].combine_chunks())))
    nulls = {name: pa.nulls(bare.num_rows, FLAT_SCHEMA.field(name).type) for name in FLAT_SCHEMA.names}
    bare = pa.table({**nulls, **{name: bare[name] for name in IMAGE_COLUMNS}}, schema=FLAT_SCHEMA)
    return pa.concat_tables([flat, bare]).sort_by([("uri", "ascending"), ("face", "ascending")])


def _landmark_matrix(landmarks: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """`[N, 10]` float32 landmark coordinates (NaN where absent) and `[N]` whether each face has them."""
    present = pc.equal(pc.list_value_length(landmarks), 10).fill_null(False)
    points = np.full((len(landmarks), 10), np.nan, np.float32)
    mask = present.to_numpy(zero_copy_only=False)
    points[mask] = pc.list_flatten(landmarks.filter(present)).to_numpy(zero_copy_only=False).reshape(-1, 10)
    return points, mask


def faces_per_image(table: pa.Table) -> list[Faces | None]:
    """Each row's faces as arrays (None for error rows), from its `faces` column alone; landmarks None
    when no face of `table` has any."""
    if not table.num_rows:
        return []
    faces = table["faces"].combine_chunks()
    values = pc.list_flatten(faces)
    boxes = np.stack([_floats(pc.struct_field(values, name)) for name in BOX], axis=1).reshape(-1, 4)
    scores = _floats(pc.struct_field(values, "score"))
    points, present = _landmark_matrix(pc.struct_field(values, "landmarks"))
    lengths = pc.list_value_length(faces)
    splits = np.cumsum(lengths.fill_null(0).to_numpy(zero_copy_only=False))[:-1]
    marks = np.split(points.reshape(-1, 5, 2), splits) if present.any() else [None] * len(faces)
    return [
        Faces(b, s, lm) if valid else None
        for b, s, lm, valid in zip(
            np.split(boxes, splits),
            np.split(scores, splits),
            marks,
            pc.is_valid(lengths).to_pylist(),
            strict=True,
        )
    ]


def _floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """float32 values, NaN for nulls."""
    return np.asarray(column.to_numpy(zero_copy_only=False), np.float32)
