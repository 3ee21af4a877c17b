"""The job driver: validate early, compare the listing with the ledger, keep a pool of Ray actors busy,
and compact committed shards into few large files.

Every mistake a user can make (bad model, missing bucket, empty prefix, unwritable OUTPUT) is found
before any actor starts. The driver never waits on storage per shard: the listing and the ledger are
streamed and compared in sorted order by a thread planning up to READ_AHEAD_IMAGES ahead while shards
are handed out (two per actor, which it works on at once), actors commit their own shard files, and Ray
tasks merge each ROWS_PER_FILE committed images into one part file, so its loop only submits and
collects Ray calls. (Ray itself: workers/job/cluster.py; the record: workers/output/record.py. What is left
here, preparing a job, the dry run, dispatch and compaction, is one loop's state, kept together.)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import chain, islice
from pathlib import Path

import pyarrow as pa
import ray

from facesweep.workers.config import (
    AnonymizeSettings,
    JobConfig,
    job_identity,
)
from facesweep.workers.errors import JobError, line_of
from facesweep.workers.inputs.containers import is_container
from facesweep.workers.inputs.listing import InputError, is_manifest, list_images
from facesweep.workers.inputs.sorted_runs import rebatch
from facesweep.workers.job.actor import ShardWorker
from facesweep.workers.job.cluster import ensure_ray, start_actors
from facesweep.workers.job.ledger import Ledger
from facesweep.workers.job.progress import JobProgress, job_record
from facesweep.workers.job.shards import (
    READ_AHEAD_IMAGES,
    PlanCounts,
    Shard,
    compare,
    compare_with_changes,
    plan_shards,
    read_ahead,
)
from facesweep.workers.model.plan import inspect_model
from facesweep.workers.model.runtime import check_device
from facesweep.workers.output.compaction import CompactionReport, compact
from facesweep.workers.output.layout import expected_requests
from facesweep.workers.output.record import JobRecord, now
from facesweep.workers.storage import absolute, is_below, is_remote, request_counts, storage_for

SHARDS_PER_CALL = 16
"""Shards per actor call once every actor is busy (measured: a Ray call costs the driver ~0.8 ms of CPU)."""
RAMP_CALLS = 2
"""Calls of one shard each actor slot gets first."""
COMPACTION_RETRIES = 3
log = logging.getLogger("facesweep")
COMPACTIONS_AT_ONCE = 2
"""Compaction tasks in flight; more wait their turn (each reads rows_per_file / shard_size files)."""


def run_job(
    config: JobConfig,
    on_progress: Callable[[JobProgress], None] = lambda _: None,
    overwrite: bool = False,
    worker: type = ShardWorker,
) -> JobProgress:
    """Runs the job to the end: the images of INPUT not yet in OUTPUT (all of them the first time), and
    the compaction of what an earlier run committed; returns its totals. `worker` is the actor class.

    Raises a one-line error for bad input, and OutputConflictError when OUTPUT holds another job."""
    requests_before = request_counts()
    job = _prepare(config, overwrite)
    shards = read_ahead(job.shards, READ_AHEAD_IMAGES // job.config.shard_size)
    try:
        _run(job, shards, on_progress, worker)
    finally:
        shards.close()
    _count_requests(job.progress, requests_before)
    job.ledger.write_record(_record(job, finished_at=now()))
    return job.progress


def _run(
    job: _Job, shards: Iterator[Shard], on_progress: Callable[[JobProgress], None], worker: type
) -> None:
    """Starts Ray and the actors if there is work, dispatches every shard and compaction, stops them."""
    config, progress = job.config, job.progress
    first = next(shards, None)
    if first is None and not job.ledger.shards:
        progress.already_complete = not progress.redone_changed
        progress.finished = time.monotonic()
        return
    job.ledger.write_record(_record(job))
    started_ray = ensure_ray(config.ray_address)
    actors = []
    try:
        if first is not None:
            actors = start_actors(config, job.checksum, progress, worker, started_ray)
        progress.startup_seconds = progress.seconds
        compactor = _Compactor(job.ledger, config.rows_per_file)
        pending = chain([first] if first else [], shards)
        _dispatch(actors, pending, compactor, progress, on_progress, config.tuning.shards_at_once)
        progress.finished = time.monotonic()
        addresses = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
        for node_id, use in progress.nodes.items():
            use.ip = addresses.get(node_id, "")
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_ray:
            ray.shutdown()


@dataclass
class _Job:
    """A job ready to run: its config, OUTPUT's ledger, and the lazy plan of its new shards."""

    config: JobConfig
    checksum: str
    identity: dict
    ledger: Ledger
    progress: JobProgress
    shards: Iterator[Shard]
    started_at: str


def _prepare(config: JobConfig, overwrite: bool, read_only: bool = False) -> _Job:
    """Checks the device, the model, INPUT and OUTPUT, reads the ledger and plans lazily (nothing runs)."""
    try:
        device = check_device(config.detector.device)
    except ValueError as error:
        raise JobError(str(error)) from None
    # A local OUTPUT as an absolute path: actors and compactions run in other working directories.
    output = absolute(config.output)
    config = replace(config, output=output, detector=replace(config.detector, device=device))
    if config.anonymizer is not None:
        config = replace(config, anonymizer=_anonymizer(config.anonymizer, config.input))
    _check_output(config)
    checksum = inspect_model(config.detector).checksum
    listing = _non_empty(list_images(config.input, config.include, config.containers.piece_bytes), config)
    ledger = Ledger.read(config.output, read_only)
    if overwrite:
        ledger.clear()
    if ledger.record is not None and not ledger.complete and not read_only:
        _remove_partials(config)
    identity = job_identity(config, checksum)
    ledger.check_identity(identity)
    progress = JobProgress()
    if config.reprocess_changed:
        progress.redone_changed = _drop_changed(ledger, config)
    progress.resumed = ledger.totals
    shards = plan_shards(
        compare(listing, ledger.done(), progress.plan), config.shard_size, ledger.next_shard, progress.plan
    )
    started_at = (ledger.record and ledger.record.started_at) or now()
    return _Job(config, checksum, identity, ledger, progress, shards, started_at)


@dataclass(frozen=True)
class DryRun:
    """What a run would do now, found by the run's own listing, ledger and planning, without Ray."""

    counts: PlanCounts
    shard_size: int
    rows_per_file: int
    files: int  # part files the run would write
    expected_requests: dict[str, int]
    requests: dict[str, int]  # made to decide (listing and ledger)
    seconds: float  # to decide
    rate: float | None  # images/s the estimate uses
    rate_source: str


def dry_run(config: JobConfig, rate: float | None = None) -> DryRun:
    """Lists, compares with OUTPUT and plans to the end; writes nothing (a missing OUTPUT stays missing)."""
    started, before = time.monotonic(), request_counts()
    job = _prepare(replace(config, reprocess_changed=False), overwrite=False, read_only=True)
    for _ in job.shards:
        pass
    counts = job.progress.plan
    pending = sum(f.footer.counts.images for f in job.ledger.shards)
    files = math.ceil((counts.new + pending) / config.rows_per_file)
    expected = expected_requests(
        counts.new,
        counts.shards,
        len(job.ledger.shards),
        files,
        copies=config.anonymizer is not None,
        crops=config.crops is not None,
    )
    after = request_counts()
    last_rate = job.ledger.record and job.ledger.record.processing_rate
    source = "--rate" if rate else "the last run's rate"
    return DryRun(
        counts,
        config.shard_size,
        config.rows_per_file,
        files,
        expected,
        {k: after[k] - before[k] for k in after},
        time.monotonic() - started,
        rate or last_rate or None,
        source,
    )


def _check_output(config: JobConfig) -> None:
    """OUTPUT (and --anonymize DEST) must be a folder, and not inside a folder INPUT (a later run would
    list its own files)."""
    targets = [("OUTPUT", config.output)]
    if config.anonymizer is not None:
        targets.append(("--anonymize", config.anonymizer.anonymize))
    for name, target in targets:
        if not is_remote(target) and Path(target).is_file():
            raise InputError(f"{name} {target} is a file: give a directory or an s3://bucket/prefix")
        if _inside(target, config.input):
            raise InputError(
                f"{name} {target} is inside INPUT {config.input}: a later run would read its own files; "
                f"give a {name} outside INPUT"
            )


def _inside(target: str, source: str) -> bool:
    """Whether `target` is the folder or prefix `source` or below it (never for a manifest)."""
    return not is_manifest(source) and is_below(target, source)


def _anonymizer(settings: AnonymizeSettings, source: str) -> AnonymizeSettings:
    """--anonymize as the actors take it: DEST absolute when local, the keys' root (INPUT `source` when
    it is a folder or prefix)."""
    root = None if is_manifest(source) or is_container(source) else absolute(source)
    return replace(settings, anonymize=absolute(settings.anonymize), root=root)


def _remove_partials(config: JobConfig) -> None:
    """A run that was cut short may have been killed mid-write: its temporary files in a local OUTPUT or
    DEST are removed (a re-run writes every file it did not finish again)."""
    targets = [config.output] + ([config.anonymizer.anonymize] if config.anonymizer else [])
    removed = sum(storage_for(target).remove_partials(target) for target in targets)
    if removed:
        log.info("removed %d partial files a killed run left", removed)


def _drop_changed(ledger: Ledger, config: JobConfig) -> int:
    """--reprocess-changed: a first pass finds the changed images and drops their rows from OUTPUT, so
    the plan then sees them as new (a kill between the two leaves them simply not done)."""
    by_file: dict[int, list[str]] = {}
    listing = rebatch(list_images(config.input, config.include, config.containers.piece_bytes))
    for _, changed in compare_with_changes(listing, ledger.done(), PlanCounts()):
        for uri, file in zip(changed["uri"].to_pylist(), changed["file"].to_pylist(), strict=True):
            by_file.setdefault(file, []).append(uri)
    return ledger.drop_rows(by_file).images


def _count_requests(progress: JobProgress, before: dict[str, int]) -> None:
    after = request_counts()
    progress.other_requests.update({k: after[k] - before[k] for k in after})


def _non_empty(tables: Iterator[pa.Table], config: JobConfig) -> Iterator[pa.Table]:
    """The listing in windows of sorted_runs.rebatch's size; an error now if it has no image at all."""
    windows = rebatch(tables)
    first = next(windows, None)
    if first is None or not first.num_rows:
        rule = f"--include {config.include!r}" if config.include else "image extensions"
        raise InputError(f"no images found in {config.input} (matched by {rule}): check INPUT or --include")
    return chain([first], windows)


class _Compactor:
    """Collects committed shards and hands each `rows` images of them to a compaction task."""

    def __init__(self, ledger: Ledger, rows: int) -> None:
        self.output, self.rows = ledger.output, rows
        self.next_part = ledger.next_part
        self.pending = [(f.number, f.footer.counts.images) for f in ledger.shards]  # from earlier runs
        self.pending_images = sum(images for _, images in self.pending)
        self.task = ray.remote(compact).options(num_cpus=0, max_retries=COMPACTION_RETRIES)

    def add(self, index: int, images: int) -> None:
        self.pending.append((index, images))
        self.pending_images += images

    def ready(self, final: bool, running: int) -> list[tuple[ray.ObjectRef, str]]:
        """Compaction tasks for each full part's worth of pending shards (and, if `final`, the rest), up
        to COMPACTIONS_AT_ONCE with the `running` ones."""
        started = []
        while (
            self.pending
            and running + len(started) < COMPACTIONS_AT_ONCE
            and (final or self.pending_images >= self.rows)
        ):
            take, images = 0, 0
            while take < len(self.pending) and (images < self.rows):
                images += self.pending[take][1]
                take += 1
            shards = sorted(index for index, _ in self.pending[:take])
            del self.pending[:take]
            self.pending_images -= images
            name = f"part {self.next_part} ({len(shards)} shards)"
            started.append((self.task.remote(self.output, shards, self.next_part), name))
            self.next_part += 1
        return started


def _dispatch(
    actors: list[ray.actor.ActorHandle],
    shards: Iterator[Shard],
    compactor: _Compactor,
    progress: JobProgress,
    on_progress: Callable[[JobProgress], None],
    concurrency: int,
) -> None:
    """Keeps every actor fed with up to `concurrency` calls until the plan runs out, and compacts
    committed shards as they add up; returns when every shard and compaction has ended.

    A call carries one shard until every actor has had a few, then SHARDS_PER_CALL: a big job costs the
    driver one Ray call per SHARDS_PER_CALL shards, a small one still spreads over every actor."""
    running: dict[ray.ObjectRef, tuple[ray.actor.ActorHandle, list[Shard]]] = {}
    compactions: dict[ray.ObjectRef, str] = {}
    single = RAMP_CALLS * len(actors) * concurrency
    dispatched = 0

    def submit(actor: ray.actor.ActorHandle) -> None:
        nonlocal dispatched
        batch = list(islice(shards, 1 if dispatched < single else SHARDS_PER_CALL))
        if batch:
            running[actor.process.remote(batch)] = (actor, batch)
            dispatched += len(batch)

    for actor in actors:
        for _ in range(concurrency):
            submit(actor)
    compactions.update(compactor.ready(not running, len(compactions)))
    while running or compactions:
        done, _ = ray.wait([*running, *compactions], num_returns=1)
        for ref in done:
            if ref in compactions:
                name = compactions.pop(ref)
                try:
                    report: CompactionReport = ray.get(ref)
                    progress.files += 1
                    progress.other_requests.update(report.requests)
                except ray.exceptions.RayError as error:
                    progress.failed_shards.append(f"{name}: {line_of(error, last=True)}")
                continue
            actor, batch = running.pop(ref)
            try:
                for shard_report in ray.get(ref):
                    progress.add(shard_report)
                    compactor.add(shard_report.index, shard_report.images)
            except ray.exceptions.RayError as error:
                reason = line_of(error, last=True)
                progress.failed_shards += [f"shard {shard.index}: {reason}" for shard in batch]
            submit(actor)
            on_progress(progress)
        compactions.update(compactor.ready(not running, len(compactions)))


def _record(job: _Job, finished_at: str | None = None) -> JobRecord:
    return job_record(job.config, job.identity, job.started_at, job.progress, finished_at)
