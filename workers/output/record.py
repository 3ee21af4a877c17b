"""OUTPUT/_job.json, the job record, and its one owner: what it holds and every reading of it.

The driver writes it when a run starts and when it ends: the job's identity (what decides which faces
come out: input, include rule, the model's checksum and every decoding setting), its config, the totals
of OUTPUT and this run's report (counts, requests, stage times, errors by kind). A re-run checks the
identity (`workers/job/ledger.py`), `--resume` takes the config, `show` how containers were read, and the dry
run the last run's rate.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from facesweep.workers.config import AnonymizeSettings, ContainerSettings
from facesweep.workers.output.writer import ShardCounts
from facesweep.workers.storage import ObjectError, join, storage_for

if TYPE_CHECKING:
    from facesweep.workers.config import JobConfig
    from facesweep.workers.job.progress import JobProgress

JOB_FILE = "_job.json"


@dataclass(frozen=True)
class JobRecord:
    """A stored `_job.json`, as read back (records of older versions lack some keys)."""

    data: dict[str, Any]

    @property
    def identity(self) -> dict[str, Any]:
        return self.data.get("identity") or {}

    @property
    def complete(self) -> bool:
        return bool(self.data.get("complete"))

    @property
    def started_at(self) -> str | None:
        return self.data.get("started_at")

    @property
    def config(self) -> dict[str, Any] | None:
        """The JobConfig of the run that wrote it, as `dataclasses.asdict` stores it."""
        return self.data.get("config")

    @property
    def containers(self) -> ContainerSettings:
        """How that run read containers (the defaults for a record that predates them)."""
        return ContainerSettings(**((self.config or {}).get("containers") or {}))

    @property
    def anonymizer(self) -> AnonymizeSettings | None:
        """Where and how that run wrote anonymized copies (--anonymize), None if it wrote none."""
        settings = (self.config or {}).get("anonymizer")
        return AnonymizeSettings(**settings) if settings else None

    @property
    def processing_rate(self) -> float | None:
        """Images per second of the last run once its actors were ready."""
        return (self.data.get("this_run") or {}).get("processing_images_per_second")


def read_record(output: str) -> JobRecord | None:
    """OUTPUT's job record, None when it has none: one GET."""
    try:
        return parse_record(storage_for(output).get(join(output, JOB_FILE)))
    except ObjectError:
        return None


def parse_record(data: bytes) -> JobRecord:
    return JobRecord(json.loads(data))


def encode_record(record: JobRecord) -> bytes:
    return json.dumps(record.data, indent=2).encode()


def now() -> str:
    """The record's timestamps: UTC, ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def job_record(
    config: JobConfig,
    identity: dict[str, Any],
    started_at: str,
    progress: JobProgress,
    finished_at: str | None = None,
) -> JobRecord:
    """The record of a run in progress (`finished_at` None) or ended (no credentials are ever part of a
    JobConfig)."""
    plan = progress.plan
    complete = finished_at is not None and plan.finished and not progress.failed_shards
    actor_cpu = sum(progress.actor_cpu.values())
    total = progress.resumed + ShardCounts(progress.images, progress.faces, progress.errors, progress.crops)
    per_image = 1000 / max(progress.images, 1)
    return JobRecord(
        {
            "identity": identity,
            "config": asdict(config),
            "started_at": started_at,
            "finished_at": finished_at,
            "complete": complete,
            "images": total.images,
            "faces": total.faces,
            "errors": total.errors,
            "crops": total.crops,
            "this_run": {
                "listed": plan.listed,
                "new_images": plan.new,
                "already_done": plan.done,
                "changed": plan.changed,
                "changed_redone": progress.redone_changed,
                "vanished": plan.vanished,
                "changed_examples": plan.changed_examples,
                "vanished_examples": plan.vanished_examples,
                "images": progress.images,
                "shards": progress.shards,
                "part_files_written": progress.files,
                "anonymized_copies": progress.anonymized,
                "crops": progress.crops,
                "failed": progress.failed_shards,
                "requests": progress.requests,
                "seconds": round(progress.seconds, 3),
                "startup_seconds": round(progress.startup_seconds, 3),
                "images_per_second": round(progress.images_per_second, 3),
                "processing_images_per_second": round(progress.processing_images_per_second, 3),
                "stage_seconds": {k: round(v, 3) for k, v in progress.stage_seconds.items()},
                "stage_ms_per_image": {k: round(v * per_image, 3) for k, v in progress.stage_seconds.items()},
                "actor_cpu_seconds": round(actor_cpu, 3),
                "actor_cpu_ms_per_image": round(actor_cpu * per_image, 3),
                "faces": progress.faces,
                "errors": progress.errors,
                "errors_by_kind": progress.error_kinds,
                "internal_error_tracebacks": progress.tracebacks,
                "device": config.detector.device,
                "nodes": {node_id: asdict(use) for node_id, use in progress.nodes.items()},
            },
        }
    )
