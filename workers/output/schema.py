"""The output contract: the detections' schema (one row per image, each field described in the file's
own schema) and the crops table's, and how a detector's results become rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from facesweep.workers.faces import Faces

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
        "container's, then # and the tar member's path or row=N (the Parquet row, from 0); a video's "
        "frame: the video's, then #t= and the frame's time in seconds (three decimals)",
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
        "an image in a container: the piece of it that held the image (container#bytes=START-END); a "
        "video's frame: the piece of the video (video#t=START,END); else null",
    ),
    "decode_scale": (
        pa.float32(),
        "the scale the image was decoded at: 1 = full size; 0.5, 0.25 or 0.125 where a JPEG was decoded "
        "reduced (its views downscale it that much anyway) or the actor's pixel budget could not hold it "
        "larger; faces are in full-size pixels either way. Null on error rows and in rows written before "
        "the column",
    ),
    "frame_index": (
        pa.int64(),
        "a video's frame: its number from 0, counted at the stream's average frame rate (exact at a "
        "constant rate); else null",
    ),
    "frame_time": (pa.float64(), "a video's frame: its presentation time in seconds; else null"),
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
    decode_scale: float | None = None  # the scale its pixels were decoded at (1: full size)
    frame_index: int | None = None  # a video's frame: its number and time (seconds)
    frame_time: float | None = None


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
            "decode_scale": pa.array(
                [r.decode_scale if good else None for r, good in zip(results, ok, strict=True)], pa.float32()
            ),
            "frame_index": pa.array([r.frame_index for r in results], pa.int64()),
            "frame_time": pa.array([r.frame_time for r in results], pa.float64()),
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


CROP_COMPRESSION = "none"
"""The crops files' Parquet compression: their bytes are JPEG, compressed already."""
CROP_COLUMNS = {
    "uri": (pa.string(), "the image, as the detections' uri"),
    "face": (pa.int32(), "the face's place in the detections' faces list of that uri (0 = best score)"),
    "score": (pa.float32(), "the face's score, as in the detections"),
    "aligned": (
        pa.bool_(),
        "true: the five landmarks warped onto ArcFace's template (insightface's norm_crop); false: a "
        "square around the box (a model without landmarks)",
    ),
    "transform": (
        pa.list_(pa.float32(), 6),
        "the 2x3 affine matrix, row by row, taking a point (x, y) of the original upright image, in the "
        "faces' coordinates, to the crop's",
    ),
    "jpeg": (pa.binary(), "the crop, crop_size x crop_size, as a JPEG at quality 95"),
}
CROPS_SCHEMA = pa.schema(
    [pa.field(name, kind, metadata={"description": text}) for name, (kind, text) in CROP_COLUMNS.items()]
)
"""The crops table: one row per face of the detections, keyed by (uri, face)."""
