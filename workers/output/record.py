"""OUTPUT/_job.json, the job record, and its one owner: what it holds and every reading of it.

The driver writes it when a run starts and when it ends: the job's identity (what decides which faces
come out: input, include rule, the model's checksum and every decoding setting), its config, the totals
of OUTPUT and this run's report (counts, requests, stage times, errors by kind). A re-run checks the
identity (`workers/job/ledger.py`), `--resume` takes the config, `show` how containers were read, and the dry
run the last run's rate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from facesweep.workers.config import AnonymizeSettings, ContainerSettings
from facesweep.workers.output.layout import JOB_FILE
from facesweep.workers.storage import ObjectError, join, storage_for


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
        """Images per second (JobProgress.processing_images_per_second) of the latest run that processed
        images: a run with nothing to do keeps its predecessor's."""
        rate = (self.data.get("this_run") or {}).get("processing_images_per_second")
        return rate or self.data.get("last_known_rate")


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
