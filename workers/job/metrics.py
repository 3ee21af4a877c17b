"""What the actors did, per shard: error rows by kind (for OUTPUT/_job.json's report) and Ray metrics.

Ray exports the metrics through each node's metrics agent in Prometheus text format
(`ray_facesweep_images_total`, ...); see README "Running on a cluster".
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc
from ray.util.metrics import Counter, Histogram

STAGE_BOUNDARIES = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
"""Seconds one shard spent in a stage (summed over its images): 64 images x 1-500 ms."""


def error_kinds(kinds: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """Error rows per kind of a shard's `error_kind` column (nulls are ok rows)."""
    counts = pc.value_counts(pc.drop_null(kinds))
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))


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
