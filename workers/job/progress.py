"""A run's running totals: what the progress callback sees after every shard, and what the job record
(`workers/output/record.py`) reports when the run ends."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from typing import Any

from facesweep.workers.config import JobConfig
from facesweep.workers.errors import ErrorKind
from facesweep.workers.job.messages import ActorInfo, ShardReport
from facesweep.workers.job.shards import PlanCounts
from facesweep.workers.output.record import JobRecord
from facesweep.workers.output.writer import NO_COUNTS, ShardCounts
from facesweep.workers.wording import plural


@dataclass
class NodeUse:
    """One Ray node's part in a job: its address, the actors placed on it, the shards and images it did,
    and the facesweep versions its actors ran."""

    ip: str = ""
    actors: int = 0
    shards: int = 0
    images: int = 0
    versions: list[str] = field(default_factory=list)


@dataclass
class Retried:
    """--retry-errors: the error rows of `kinds` dropped from OUTPUT to be redone once, and, after the
    run, how their images came back (the rest were not done: a shard failed)."""

    kinds: tuple[str, ...]
    errors: int = 0  # error rows of those kinds dropped (of images INPUT still lists)
    entries: int = 0  # what the plan redoes for them: images, and the container pieces holding some
    ok: int = 0  # after the run: of them, images whose new row is ok
    still_errors: int = 0  # ... whose new row is an error row again


@dataclass
class JobProgress:
    """Running totals, passed to the progress callback after every shard."""

    images: int = 0
    faces: int = 0
    errors: int = 0
    shards: int = 0
    failed_shards: list[str] = field(default_factory=list)
    redone_shards: Counter[str] = field(default_factory=Counter)  # taken back to redo, by why (dispatch.py)
    plan: PlanCounts = field(default_factory=PlanCounts)
    started: float = field(default_factory=time.monotonic)
    resumed: ShardCounts = NO_COUNTS  # what earlier runs left in OUTPUT
    redone_changed: int = 0  # changed images whose old rows were dropped, to be done again
    retried: Retried | None = None  # --retry-errors
    overwritten: int = 0  # facesweep's files in OUTPUT removed first (--overwrite)
    files: int = 0  # part files this run wrote
    compacted_shards: int = 0  # shard files merged into them
    anonymized: int = 0  # anonymized copies written (--anonymize)
    blurred_videos: int = 0  # blurred copies of videos joined (--anonymize), and those that failed
    blurred_failed: int = 0
    crops: int = 0  # face crops written (--crops)
    already_complete: bool = False  # nothing new, nothing pending: the job did nothing
    startup_seconds: float = 0.0  # until every actor had compiled its model
    finished: float | None = None  # when the run's work (shards and compactions) had ended
    last_shard_at: float | None = None  # when the latest shard came back
    stage_seconds: dict[str, float] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    tracebacks: dict[str, str] = field(default_factory=dict)  # the first internal error of each stage
    nodes: dict[str, NodeUse] = field(default_factory=dict)  # by Ray node id
    actor_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by actor process (ActorInfo)
    actor_requests: dict[str, dict[str, int]] = field(default_factory=dict)  # by actor process
    other_requests: Counter = field(default_factory=Counter)  # the driver's and the compactions'

    @property
    def requests(self) -> dict[str, int]:
        """Storage requests of this run by kind, driver, actors and compactions together."""
        total = Counter(self.other_requests)
        for counts in self.actor_requests.values():
            total.update(counts)
        return dict(sorted(total.items()))

    @property
    def total(self) -> ShardCounts:
        """The job's totals in OUTPUT: what earlier runs left and this run's."""
        this_run = ShardCounts(
            self.images, self.faces, self.errors, self.crops, self.error_kinds.get(ErrorKind.INTERNAL, 0)
        )
        return self.resumed + this_run

    def failure(self, max_error_rate: float) -> str | None:
        """Why the job fails as a whole, or None: an error of ours, more than `max_error_rate` of its
        images error rows, a failed shard. Judged on the whole job, so a re-run with nothing left to do
        fails as the run that left the errors did."""
        total = self.total
        if total.internal:
            earlier = f", {self.resumed.internal} of them in earlier runs" if self.resumed.internal else ""
            return (
                f"{plural(total.internal, 'image')} failed inside facesweep (a bug, not the images: "
                f"error_kind 'internal'{earlier}); the first traceback of each stage is in _job.json: "
                "please report it"
            )
        if total.images and total.errors / total.images > max_error_rate:
            return (
                f"{total.errors} of {plural(total.images, 'image')} are error rows "
                f"({total.errors / total.images:.1%}, more than --max-error-rate {max_error_rate:g})"
            )
        if self.failed_shards:
            failed = plural(len(self.failed_shards), "shard or compaction", "shards or compactions")
            return f"{failed} failed: re-run to retry them"
        return None

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def images_per_second(self) -> float:
        """Over the whole job, start-up included."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def processing_images_per_second(self) -> float:
        """The job's rate, the one figure the progress lines, the summary and `_job.json` give: images over
        the time from the actors being ready to the latest shard's return (start-up and the compaction
        after the last shard left out)."""
        busy = (self.last_shard_at or time.monotonic()) - self.started - self.startup_seconds
        return self.images / busy if busy > 0 else 0.0

    def add(self, report: ShardReport) -> None:
        self.last_shard_at = time.monotonic()
        self.anonymized += report.anonymized
        self.crops += report.crops
        self.images += report.images
        self.faces += report.faces
        self.errors += report.errors
        self.shards += 1
        for stage, seconds in report.stage_seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        for kind, count in report.error_kinds.items():
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + count
        for stage, text in report.tracebacks.items():
            self.tracebacks.setdefault(stage, text)
        process = report.actor.process
        self.actor_cpu[process] = max(self.actor_cpu.get(process, 0.0), report.actor_cpu_seconds)
        previous = self.actor_requests.get(process, {})
        self.actor_requests[process] = {k: max(v, previous.get(k, 0)) for k, v in report.requests.items()}
        node = self.nodes.setdefault(report.actor.node_id, NodeUse())
        node.shards += 1
        node.images += report.images

    def add_actors(self, infos: list[ActorInfo]) -> None:
        for info in infos:
            node = self.nodes.setdefault(info.node_id, NodeUse())
            node.actors += 1
            node.versions = sorted({*node.versions, info.version})


def job_record(
    config: JobConfig,
    identity: dict[str, Any],
    started_at: str,
    progress: JobProgress,
    finished_at: str | None = None,
    earlier: JobRecord | None = None,
) -> JobRecord:
    """The record of a run in progress (`finished_at` None) or ended (no credentials are ever part of a
    JobConfig); `earlier`, the record it replaces, lends its rate to a run that processed nothing."""
    plan = progress.plan
    complete = finished_at is not None and plan.finished and not progress.failed_shards
    actor_cpu = sum(progress.actor_cpu.values())
    total = progress.total
    per_image = 1000 / max(progress.images, 1)
    return JobRecord(
        {
            "identity": identity,
            "facesweep_version": version("facesweep"),
            "config": asdict(config),
            "started_at": started_at,
            "finished_at": finished_at,
            "complete": complete,
            "images": total.images,
            "faces": total.faces,
            "errors": total.errors,
            "crops": total.crops,
            "last_known_rate": earlier.processing_rate if earlier and not progress.images else None,
            "this_run": {
                "listed": plan.listed,
                "new_images": plan.new,
                "already_done": plan.done,
                "changed": plan.changed,
                "changed_redone": progress.redone_changed,
                "retried_errors": progress.retried and asdict(progress.retried),
                "vanished": plan.vanished,
                "changed_examples": plan.changed_examples,
                "vanished_examples": plan.vanished_examples,
                "images": progress.images,
                "shards": progress.shards,
                "part_files_written": progress.files,
                "anonymized_copies": progress.anonymized,
                "blurred_videos": progress.blurred_videos,
                "crops": progress.crops,
                "failed": progress.failed_shards,
                "redone_shards": dict(progress.redone_shards),
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
