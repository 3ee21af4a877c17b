"""What the actors did, per shard: error rows by kind (for OUTPUT/_job.json's report) and Ray metrics.

Ray exports the metrics through each node's metrics agent in Prometheus text format
(`ray_facesweep_images_total`, ...); see README "Running on a cluster".
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc
from ray.util.metrics import Counter, Histogram

ERROR_KINDS: tuple[tuple[str, str], ...] = (
    ("fetch", r"^fetch failed"),
    ("not_an_image", r"^(empty file|not an image|unsupported format|corrupt or unsupported)"),
    ("truncated", r"^truncated"),
    ("corrupt", r"^corrupt"),
    ("too_large", r"^image too large"),
    ("decode", r"^(cannot decode|decode failed)"),
    ("preprocess", r"^preprocess failed"),
    ("merge", r"^merge failed"),
)
"""(kind, regex on the error row's message), first match wins; anything else is `other`."""
STAGE_BOUNDARIES = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
"""Seconds one shard spent in a stage (summed over its images): 64 images x 1-500 ms."""


def error_kinds(errors: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """Error rows per kind of a shard's `error` column (nulls are ok rows), one regex pass per kind."""
    left = pc.drop_null(errors)
    counts: dict[str, int] = {}
    for kind, pattern in ERROR_KINDS:
        hit = pc.match_substring_regex(left, pattern)
        if found := int(pc.sum(hit).as_py() or 0):
            counts[kind] = found
            left = left.filter(pc.invert(hit))
    if len(left):
        counts["other"] = len(left)
    return counts


class ShardMetrics:
    """The Ray metrics one actor process updates once per shard (never per image or face)."""

    def __init__(self) -> None:
        self.images = Counter("facesweep_images", "Images processed, error rows included")
        self.faces = Counter("facesweep_faces", "Faces found")
        self.errors = Counter("facesweep_errors", "Error rows, by kind", tag_keys=("kind",))
        self.shards = Counter("facesweep_shards", "Shards committed")
        self.stage = Histogram(
            "facesweep_stage_seconds",
            "Seconds a shard spent per stage, summed over its images",
            boundaries=STAGE_BOUNDARIES,
            tag_keys=("stage",),
        )

    def record(self, images: int, faces: int, errors: Mapping[str, int], stages: Mapping[str, float]) -> None:
        self.shards.inc()
        for counter, value in ((self.images, images), (self.faces, faces)):
            if value:
                counter.inc(value)
        for kind, count in errors.items():
            self.errors.inc(count, tags={"kind": kind})
        for stage, seconds in stages.items():
            self.stage.observe(seconds, tags={"stage": stage})


_metrics: ShardMetrics | None = None


def shard_metrics() -> ShardMetrics:
    """This process's metrics, created on first use (inside the actor, which Ray has connected)."""
    global _metrics
    if _metrics is None:
        _metrics = ShardMetrics()
    return _metrics
