"""`facesweep export`: a job's faces as COCO JSON, CSV or a flat Parquet.

- `coco`: `images` (the images read without error: id, file_name = uri, or the uri relative to
  `--image-root`, width, height), `annotations` (one per face: bbox `[x, y, w, h]`, the box as a
  `segmentation` polygon, area, score, `keypoints` `[x, y, v] * 5` with v = 2, or all 0 with
  `num_keypoints` 0 when the model has no landmarks), `categories` (one: face, its five keypoint names).
  Images that could not be read are not COCO images (they have no size): they are listed under the extra
  key `errors` as `{"file_name": ..., "error": reason}`. A video's frames are images with `video_id`,
  `frame_id` (the frame's index) and `frame_time`, and the videos are listed under `videos` (`id`,
  `name`), as COCO-video layouts (YouTube-VIS, TAO) have them.
- `csv`, `flat-parquet`: the columns of
  `facesweep.workers.output.reader.FLAT_SCHEMA`, one row per face and one (face
  columns null) per image without any: every image of the output is there.

`--min-score` keeps the faces scoring at least that much, in every format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from facesweep.workers.errors import UserError
from facesweep.workers.output.reader import (
    BOX,
    LANDMARK_COLUMNS,
    LANDMARK_NAMES,
    flat_faces,
    one_row_per_image,
    read_output,
)
from facesweep.workers.storage import is_remote, join, storage_for

DEFAULT_FILES = {"coco": "faces.coco.json", "csv": "faces.csv", "flat-parquet": "faces.parquet"}
"""Where each format goes without `--out` (the current directory), or in the folder `--out` names."""


@dataclass(frozen=True)
class Exported:
    """What `export` wrote."""

    path: str
    images: int
    faces: int
    errors: int


class ExportError(UserError, ValueError):
    """An export that cannot be made as asked."""


def export(
    output: str,
    format: str,
    out: str | None = None,
    min_score: float = 0.0,
    image_root: str | None = None,
) -> Exported:
    """Writes the faces of the facesweep output `output` in `format` to `out` (a local path or s3://; a
    folder gets the format's default name inside it)."""
    if format not in DEFAULT_FILES:
        raise ExportError(f"unknown export format {format!r}: one of {', '.join(DEFAULT_FILES)}")
    table = read_output(output)
    if format == "coco":
        faces = flat_faces(table)
        faces = faces.filter(pc.greater_equal(faces["score"], pa.scalar(min_score, pa.float32())))
        data = json.dumps(to_coco(table, faces, image_root), separators=(",", ":")).encode()
    else:
        rows = one_row_per_image(table, min_score)
        faces = rows.filter(pc.is_valid(rows["face"]))
        buffer = pa.BufferOutputStream()
        if format == "csv":
            pacsv.write_csv(rows, buffer)
        else:
            pq.write_table(rows, buffer, compression="zstd")
        data = buffer.getvalue().to_pybytes()
    path = destination(out, format)
    storage_for(path).put(path, data)
    errors = int(pc.sum(pc.equal(table["status"], "error")).as_py() or 0)
    return Exported(path, table.num_rows, faces.num_rows, errors)


def destination(out: str | None, format: str) -> str:
    """`out`, or the format's default file name inside it when it is a folder (ends with `/`, or is a
    local directory), or in the current directory without it."""
    if out is None:
        return DEFAULT_FILES[format]
    folder = out.endswith("/") or (not is_remote(out) and Path(out).is_dir())
    return join(out, DEFAULT_FILES[format]) if folder else out


def file_names(uris: list[str], image_root: str | None) -> list[str]:
    """COCO file names: the uris, or their paths below `image_root` (every uri must be below it)."""
    if not image_root:
        return uris
    root = image_root.rstrip("/") + "/"
    outside = next((uri for uri in uris if not uri.startswith(root)), None)
    if outside is not None:
        raise ExportError(
            f"--image-root {image_root}: image {outside} is not below it: give a root of every image"
        )
    return [uri[len(root) :] for uri in uris]


def to_coco(table: pa.Table, flat: pa.Table, image_root: str | None = None) -> dict[str, Any]:
    """The COCO dict of an output's rows `table` and the faces `flat` of them to annotate (`flat_faces`
    rows, maybe filtered): file names relative to `image_root` when given."""
    ok = pc.is_valid(table["faces"])
    images, failed = table.filter(ok), table.filter(pc.invert(ok))
    image_ids = pc.index_in(flat["uri"], value_set=images["uri"].combine_chunks()).to_numpy() + 1
    x1, y1, x2, y2 = (flat[name].to_numpy().astype(np.float64) for name in BOX)
    boxes = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)  # exact: float32 differences fit in float64
    polygons = np.stack([x1, y1, x2, y1, x2, y2, x1, y2], axis=1)
    points = np.stack([flat[name].to_numpy().astype(np.float64) for name in LANDMARK_COLUMNS], axis=1)
    present = ~np.isnan(points).any(axis=1)
    keypoints = np.concatenate([np.nan_to_num(points).reshape(-1, 5, 2), np.zeros((len(points), 5, 1))], 2)
    keypoints[present, :, 2] = 2
    videos, frames = _video_frames(images, image_root)
    return {
        "info": {
            "description": "faces found by facesweep",
            "model": ", ".join(pc.unique(table["model"]).to_pylist()),
        },
        "images": [
            {"id": i, "file_name": name, "width": width, "height": height, **frame}
            for i, (name, width, height, frame) in enumerate(
                zip(
                    file_names(images["uri"].to_pylist(), image_root),
                    images["width"].to_pylist(),
                    images["height"].to_pylist(),
                    frames,
                    strict=True,
                ),
                1,
            )
        ],
        "annotations": [
            {
                "id": i,
                "image_id": image_id,
                "category_id": 1,
                "bbox": box,
                "segmentation": [polygon],
                "area": box[2] * box[3],
                "score": score,
                "iscrowd": 0,
                "keypoints": [round(v) if k % 3 == 2 else v for k, v in enumerate(points)],
                "num_keypoints": 5 if has else 0,
            }
            for i, (image_id, box, polygon, score, points, has) in enumerate(
                zip(
                    image_ids.tolist(),
                    boxes.tolist(),
                    polygons.tolist(),
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
            {"file_name": name, "error": error}
            for name, error in zip(failed["uri"].to_pylist(), failed["error"].to_pylist(), strict=True)
        ],
        **({"videos": videos} if videos else {}),
    }


def _video_frames(
    images: pa.Table, image_root: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """COCO-video's `videos` (id, name) and, per image, its `video_id` and `frame_id` (the frame's index)
    with its `frame_time`; an image that is no video's frame gets nothing."""
    index = images["frame_index"].to_pylist()
    if all(i is None for i in index):
        return [], [{}] * images.num_rows
    video_uris = pc.replace_substring_regex(images["uri"], r"#t=[\d.]+$", "").to_pylist()
    ids = {
        uri: i
        for i, uri in enumerate(
            dict.fromkeys(u for u, f in zip(video_uris, index, strict=True) if f is not None), 1
        )
    }
    names = dict(zip(ids, file_names(list(ids), image_root), strict=True))
    frames = [
        {} if f is None else {"video_id": ids[uri], "frame_id": f, "frame_time": t}
        for uri, f, t in zip(video_uris, index, images["frame_time"].to_pylist(), strict=True)
    ]
    return [{"id": i, "name": names[uri]} for uri, i in ids.items()], frames
