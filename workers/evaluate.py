"""Accuracy of a facesweep output against ground-truth face boxes (WIDER FACE's one-line-per-face format).

The building blocks: read the ground truth, read a job's Parquet output, pair images by path suffix, and
count the ground-truth faces a set of predictions finds. Boxes are always float32 `[N, 4]` arrays of
`x1, y1, x2, y2` in original-image pixels, with `x2 = x + w` (no "+1" pixel convention).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from workers.nms import pairwise_iou
from workers.sink import SCHEMA
from workers.storage import is_s3_uri, split_s3_uri

Predictions = tuple[np.ndarray, np.ndarray]  # boxes [N, 4] float32, scores [N] float32


def read_ground_truth(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """`image_relpath -> boxes [N, 4]` from an annotations file (`relpath x y w h ...` per face).

    `#` starts a comment; columns after `h` are ignored; images keep the order they first appear in.
    """
    text = Path(path).read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return {}
    columns = np.loadtxt(lines, dtype=str, usecols=range(5), ndmin=2)
    xywh = columns[:, 1:].astype(np.float32)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    names, first, inverse = np.unique(columns[:, 0], return_index=True, return_inverse=True)
    groups = np.split(boxes[np.argsort(inverse, kind="stable")], np.cumsum(np.bincount(inverse))[:-1])
    return {str(names[i]): groups[i] for i in np.argsort(first)}


def read_predictions(output: str) -> dict[str, Predictions]:
    """`uri -> (boxes [N, 4], scores [N])` for every image a facesweep job wrote to `output`.

    `output` is a local directory or `s3://bucket/prefix` (an empty one gives `{}`). S3 is reached with
    pyarrow's S3 client: credentials the standard AWS way, the endpoint from `AWS_ENDPOINT_URL` when set.
    Files whose names start with `_` or `.` (the job file, partial writes) are skipped. Rows with status
    `error` (null faces) are left out, so those images show up as unmatched in `match_by_suffix` rather
    than as images without faces. Raises ValueError if a uri appears twice.
    """
    filesystem, root = _filesystem(output)
    dataset = ds.dataset(root, format="parquet", filesystem=filesystem, schema=SCHEMA)
    table = dataset.to_table(columns=["uri", "faces"])
    table = table.filter(pc.is_valid(table["faces"]))
    if not table.num_rows:
        return {}
    uris = table["uri"].to_pylist()
    if len(set(uris)) != len(uris):
        raise ValueError(f"{output}: some images appear more than once (an output written by several jobs?)")
    faces = table["faces"].combine_chunks()
    values = faces.flatten()
    boxes = np.stack([_floats(values.field(name)) for name in ("x1", "y1", "x2", "y2")], axis=1)
    scores = _floats(values.field("score"))
    splits = np.cumsum(pc.list_value_length(faces).to_numpy(zero_copy_only=False))[:-1]
    return dict(zip(uris, zip(np.split(boxes, splits), np.split(scores, splits), strict=True), strict=True))


def _floats(array: pa.Array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)


def _filesystem(output: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path for a local directory or s3://bucket/prefix."""
    if not is_s3_uri(output):
        return pafs.LocalFileSystem(), str(Path(output).absolute())
    bucket, key = split_s3_uri(output)
    options: dict[str, str] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options), f"{bucket}/{key}".rstrip("/")


def match_by_suffix(
    predictions: Mapping[str, Predictions], ground_truth: Mapping[str, np.ndarray]
) -> dict[str, Predictions]:
    """`relpath -> predictions` for each ground-truth image whose relpath ends some prediction's uri.

    The match is on whole path components: `images/a/b.jpg` matches `/data/images/a/b.jpg` and
    `s3://bucket/images/a/b.jpg`, never `/data/xximages/a/b.jpg`. Ground-truth images with no matching
    prediction are absent from the result (callers decide whether that is a miss or an error). Raises
    ValueError when a relpath matches more than one uri.
    """
    by_suffix: dict[str, list[str]] = {}
    for uri in predictions:
        parts = uri.split("/")
        for start in range(len(parts)):
            by_suffix.setdefault("/".join(parts[start:]), []).append(uri)
    matched: dict[str, Predictions] = {}
    for relpath in ground_truth:
        candidates = by_suffix.get(relpath.strip("/"), [])
        if len(candidates) > 1:
            raise ValueError(f"{relpath} matches several predictions: {', '.join(candidates[:3])}")
        if candidates:
            matched[relpath] = predictions[candidates[0]]
    return matched


def recall(
    pred_boxes: np.ndarray,
    gt_boxes: np.ndarray,
    iou: float = 0.5,
    min_height: float = 0,
    scores: np.ndarray | None = None,
) -> tuple[int, int]:
    """`(found, total)`: how many of the counted ground-truth faces the predictions find.

    Matching is greedy and one-to-one: predictions in descending score order (`scores`, else the given
    order, which facesweep writes best first) each take the unmatched counted face they overlap most,
    if that IoU is at least `iou`. A second prediction on an already-found face finds nothing.

    Faces less than `min_height` pixels high are ignored: left out of `total` and removed before
    matching, so they can never be found nor take a prediction away from a counted face. (This is
    COCO's rule for ignored ground truth: a prediction falls back to an ignored face only when no
    counted face is left for it, and such a match is not counted.)
    """
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    pred_boxes = np.asarray(pred_boxes, np.float32).reshape(-1, 4)
    counted = gt_boxes[(gt_boxes[:, 3] - gt_boxes[:, 1]) >= min_height]
    if scores is not None:
        pred_boxes = pred_boxes[np.argsort(-np.asarray(scores), kind="stable")]
    overlaps = pairwise_iou(pred_boxes.astype(np.float64), counted.astype(np.float64), plus_one=False)
    overlaps[(overlaps < iou) | (overlaps <= 0)] = -1.0  # -1: not a candidate
    taken = np.zeros(len(counted), bool)
    for row in overlaps[(overlaps >= 0).any(axis=1)]:  # only predictions with a candidate, in order
        free = np.where(taken, -1.0, row)
        best = int(np.argmax(free))
        if free[best] >= 0:
            taken[best] = True
    return int(taken.sum()), len(counted)
