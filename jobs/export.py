"""`facesweep export`: a job's faces as COCO JSON, CSV or a flat Parquet with one row per face.

- `coco`: `images` (the images read without error: id, file_name = uri, width, height), `annotations` (one
  per face: bbox `[x, y, w, h]`, area, score, `keypoints` `[x, y, v] * 5` with v = 2, or all 0 with
  `num_keypoints` 0 when the model has no landmarks), `categories` (one: face, its five keypoint names).
  Images that could not be read are not COCO images (they have no size): they are listed under the extra
  key `errors` as `{"file_name": uri, "error": reason}`.
- `csv`, `flat-parquet`: the columns of `workers.output.FLAT_SCHEMA`; images without faces or with errors
  have no row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from workers.output import BOX, LANDMARK_COLUMNS, LANDMARK_NAMES, flat_faces, read_output
from workers.storage import storage_for

DEFAULT_FILES = {"coco": "faces.coco.json", "csv": "faces.csv", "flat-parquet": "faces.parquet"}
"""Where each format goes without `--out` (the current directory)."""


@dataclass(frozen=True)
class Exported:
    """What `export` wrote."""

    path: str
    images: int
    faces: int
    errors: int


def export(output: str, format: str, out: str | None = None) -> Exported:
    """Writes the faces of the facesweep output `output` in `format` to `out` (a local path or s3://)."""
    table = read_output(output)
    flat = flat_faces(table)
    if format == "coco":
        data = json.dumps(to_coco(table, flat), separators=(",", ":")).encode()
    elif format == "csv":
        buffer = pa.BufferOutputStream()
        pacsv.write_csv(flat, buffer)
        data = buffer.getvalue().to_pybytes()
    elif format == "flat-parquet":
        buffer = pa.BufferOutputStream()
        pq.write_table(flat, buffer, compression="zstd")
        data = buffer.getvalue().to_pybytes()
    else:
        raise ValueError(f"unknown export format {format!r}: one of {', '.join(DEFAULT_FILES)}")
    path = out or DEFAULT_FILES[format]
    storage_for(path).put(path, data)
    errors = int(pc.sum(pc.equal(table["status"], "error")).as_py() or 0)
    return Exported(path, table.num_rows, flat.num_rows, errors)


def to_coco(table: pa.Table, flat: pa.Table) -> dict[str, Any]:
    """The COCO dict of an output's rows `table` and their faces `flat` (`flat_faces(table)`)."""
    ok = pc.is_valid(table["faces"])
    images, failed = table.filter(ok), table.filter(pc.invert(ok))
    image_ids = np.repeat(
        np.arange(1, images.num_rows + 1),
        pc.list_value_length(images["faces"]).to_numpy(zero_copy_only=False),
    )
    x1, y1, x2, y2 = (flat[name].to_numpy().astype(np.float64) for name in BOX)
    boxes = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)  # exact: float32 differences fit in float64
    points = np.stack([flat[name].to_numpy().astype(np.float64) for name in LANDMARK_COLUMNS], axis=1)
    present = ~np.isnan(points).any(axis=1)
    keypoints = np.concatenate([np.nan_to_num(points).reshape(-1, 5, 2), np.zeros((len(points), 5, 1))], 2)
    keypoints[present, :, 2] = 2
    return {
        "info": {
            "description": "faces found by facesweep",
            "model": ", ".join(pc.unique(table["model"]).to_pylist()),
        },
        "images": [
            {"id": i, "file_name": uri, "width": width, "height": height}
            for i, (uri, width, height) in enumerate(
                zip(*(images[name].to_pylist() for name in ("uri", "width", "height")), strict=True), 1
            )
        ],
        "annotations": [
            {
                "id": i,
                "image_id": image_id,
                "category_id": 1,
                "bbox": box,
                "area": box[2] * box[3],
                "score": score,
                "iscrowd": 0,
                "keypoints": [round(v) if k % 3 == 2 else v for k, v in enumerate(points)],
                "num_keypoints": 5 if has else 0,
            }
            for i, (image_id, box, score, points, has) in enumerate(
                zip(
                    image_ids.tolist(),
                    boxes.tolist(),
                    flat["score"].to_numpy().astype(np.float64).tolist(),
                    keypoints.reshape(-1, 15).tolist(),
                    present.tolist(),
                    strict=True,
                ),
                1,
            )
        ],
        "categories": [
            {
                "id": 1,
                "name": "face",
                "supercategory": "face",
                "keypoints": list(LANDMARK_NAMES),
                "skeleton": [],
            }
        ],
        "errors": [
            {"file_name": uri, "error": error}
            for uri, error in zip(failed["uri"].to_pylist(), failed["error"].to_pylist(), strict=True)
        ],
    }
