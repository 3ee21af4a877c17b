"""What actors tell the driver: small message types of their own, so the driver's progress, the record
and the progress bar need neither Ray nor the model to read them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActorInfo:
    """A started actor: its model's output format, where Ray placed it, and which process it is (a
    restarted actor is a new process of the same actor)."""

    format: str
    node_id: str
    process: str  # "<Ray actor id>/<pid>"
    version: str  # the facesweep its process imported: a node installed otherwise shows in _job.json


@dataclass(frozen=True)
class ShardReport:
    """What one shard produced; the driver sums these."""

    index: int
    actor: ActorInfo  # who processed it, and on which node
    images: int
    faces: int
    errors: int
    error_kinds: dict[str, int]  # metrics.error_kinds
    stage_seconds: dict[str, float]
    actor_cpu_seconds: float  # CPU time of the actor's process (all its threads) since it was ready
    requests: dict[str, int]  # storage requests of the actor's process so far, by kind
    tracebacks: dict[str, str]  # the first of each stage's internal errors since the last report
    anonymized: int = 0  # anonymized copies written (--anonymize)
    crops: int = 0  # face crops written (--crops)
