"""Preparing a job without running it: the checked config, OUTPUT's ledger compared with the listing
into a lazy plan of new shards, and the dry run that walks that plan to the end. Imports neither Ray nor
OpenVINO: the dry run is this module alone.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from itertools import chain
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from facesweep.workers.config import AnonymizeSettings, JobConfig, job_identity
from facesweep.workers.inputs.containers import is_container
from facesweep.workers.inputs.listing import InputError, in_pieces, is_manifest, list_entries, list_images
from facesweep.workers.inputs.sorted_runs import rebatch
from facesweep.workers.inputs.videos import VideoKey
from facesweep.workers.job.ledger import Ledger
from facesweep.workers.job.progress import JobProgress, Retried
from facesweep.workers.job.shards import PlanCounts, Shard, compare, compare_with_changes, plan_shards
from facesweep.workers.model.catalog import checked_model
from facesweep.workers.output.layout import expected_requests
from facesweep.workers.output.lease import OutputLease, live_holder
from facesweep.workers.output.record import now, read_record
from facesweep.workers.storage import absolute, is_below, is_remote, request_counts, storage_for

log = logging.getLogger("facesweep")


@dataclass
class Prepared:
    """A job ready to run: its checked config, OUTPUT's ledger, and the lazy plan of its new shards."""

    config: JobConfig
    checksum: str
    identity: dict
    ledger: Ledger
    progress: JobProgress
    shards: Iterator[Shard]
    started_at: str
    lease: OutputLease  # held by a job that runs, not by the dry run
    retry: Retry | None = None  # --retry-errors


@dataclass(frozen=True)
class Retry:
    """The error rows --retry-errors redoes: their uris, what the listing names them by (the uris, and
    the container pieces holding some), and the run's first shard (their new rows are in the files of
    the shards from it on)."""

    uris: pa.Array
    entries: pa.Array
    first_shard: int


def prepare(config: JobConfig, overwrite: bool, read_only: bool = False) -> Prepared:
    """Checks INPUT, OUTPUT and the model's file, reads the ledger and plans lazily (nothing runs).

    `read_only` (the dry run): nothing is written, and the model is only found and checksummed (the job
    that runs reads it with OpenVINO first, `workers/job/driver.py`); otherwise OUTPUT's lease is taken
    (OutputInUseError when another job holds it) before anything there changes."""
    # A local OUTPUT as an absolute path: actors and compactions run in other working directories.
    config = replace(config, output=absolute(config.output))
    if config.anonymizer is not None:
        config = replace(config, anonymizer=_anonymizer(config.anonymizer, config.input))
    _check_output(config)
    checksum = checked_model(config.detector.model, config.detector.model_sha256)[1]
    entries = _non_empty(list_entries(config.input, config.include), config)  # cut into pieces below
    lease = OutputLease(config.output)
    if not read_only:
        lease.acquire()  # before anything under OUTPUT changes; the driver releases it
    try:
        ledger = Ledger.read(config.output, read_only)
        progress = JobProgress()
        if overwrite:
            progress.overwritten = ledger.clear(read_only)
        if ledger.record is not None and not ledger.complete and not read_only:
            _remove_partials(config)
        identity = job_identity(config, checksum)
        ledger.check_identity(identity)
        known = ledger.video_seconds()  # before any rows are dropped: a changed video is probed anyway
        if config.reprocess_changed:
            progress.redone_changed = _drop_changed(ledger, config, known)
        retry = _retry_errors(ledger, config, progress, read_only, known) if config.retry_errors else None
        progress.resumed = ledger.totals
        done = ledger.done()
        if retry is not None and read_only:  # the dry run: the ledger as it will be once they are dropped
            done = (table.filter(pc.invert(pc.is_in(table["uri"], retry.entries))) for table in done)
        new = compare(in_pieces(entries, config.containers, known), done, progress.plan)
        shards = plan_shards(new, config.shard_size, ledger.next_shard, progress.plan)
    except BaseException:
        lease.release()  # a job refused here leaves no lease
        raise
    started_at = (ledger.record and ledger.record.started_at) or now()
    return Prepared(config, checksum, identity, ledger, progress, shards, started_at, lease, retry)


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
    overwritten: int  # facesweep's files in OUTPUT that --overwrite would remove first
    in_use_by: str | None  # the job holding OUTPUT's lease now, if any: a run would be refused
    retried: Retried | None = None  # --retry-errors: the error rows a run would redo


def dry_run(config: JobConfig, rate: float | None = None, overwrite: bool = False) -> DryRun:
    """Lists, compares with OUTPUT and plans to the end; writes nothing (a missing OUTPUT stays missing;
    with `overwrite`, OUTPUT's files are counted as the run would remove them)."""
    started, before = time.monotonic(), request_counts()
    earlier = read_record(absolute(config.output)) if overwrite else None  # --overwrite forgets it
    job = prepare(replace(config, reprocess_changed=False), overwrite=overwrite, read_only=True)
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
    earlier = earlier or job.ledger.record
    last_rate = earlier and earlier.processing_rate
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
        job.progress.overwritten,
        live_holder(job.config.output),
        job.progress.retried,
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
                f"give {name} a place outside INPUT"
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


def _drop_changed(ledger: Ledger, config: JobConfig, known: Mapping[VideoKey, float]) -> int:
    """--reprocess-changed: a first pass finds the changed images and drops their rows from OUTPUT, so
    the plan then sees them as new (a kill between the two leaves them simply not done)."""
    by_file: dict[int, list[str]] = {}
    listing = rebatch(list_images(config.input, config.include, config.containers, known))
    for _, changed in compare_with_changes(listing, ledger.done(), PlanCounts()):
        for uri, file in zip(changed["uri"].to_pylist(), changed["file"].to_pylist(), strict=True):
            by_file.setdefault(file, []).append(uri)
    return ledger.drop_rows(by_file).images


def _retry_errors(
    ledger: Ledger, config: JobConfig, progress: JobProgress, read_only: bool, known: Mapping[VideoKey, float]
) -> Retry:
    """--retry-errors: OUTPUT's error rows of its kinds whose images INPUT still lists, dropped from their
    files (unless `read_only`) so the plan sees them as new; a kill between the two leaves them simply not
    done. An image in a container is redone with its whole piece."""
    kinds = config.retry_errors or ()
    rows = _still_listed(ledger.error_rows(kinds), config, known)
    entries = pc.unique(rows["entry"])
    progress.retried = Retried(kinds, rows.num_rows, len(entries))
    if rows.num_rows and not read_only:
        by_file = rows.group_by("file").aggregate([("entry", "distinct")])
        files, dropped = by_file["file"].to_pylist(), by_file["entry_distinct"].to_pylist()
        ledger.drop_rows(dict(zip(files, dropped, strict=True)))
    return Retry(rows["uri"].combine_chunks(), entries, ledger.next_shard)


def _still_listed(rows: pa.Table, config: JobConfig, known: Mapping[VideoKey, float]) -> pa.Table:
    """The `rows` (sorted by entry) whose entry INPUT lists: the listing is read only until it has passed
    the last of them (an image no longer listed keeps its row, as a vanished one does)."""
    if not rows.num_rows:
        return rows
    kept = [rows.slice(0, 0)]
    listing = rebatch(list_images(config.input, config.include, config.containers, known))
    try:
        for window in listing:
            if not rows.num_rows:
                break
            if window.num_rows:
                cut = int(pc.sum(pc.less_equal(rows["entry"], window["uri"][-1])).as_py() or 0)
                mine, rows = rows.slice(0, cut), rows.slice(cut)
                kept.append(mine.filter(pc.is_in(mine["entry"], window["uri"])))
    finally:
        listing.close()
    return pa.concat_tables(kept)


def count_retried(job: Prepared) -> None:
    """After the run: how the images --retry-errors redid came back, from their new rows (the `uri` and
    `status` columns of the files this run wrote, nothing else read)."""
    retried, retry = job.progress.retried, job.retry
    if retried is None or retry is None or not retried.errors:
        return
    statuses = Ledger.read(job.config.output, read_only=True).statuses(retry.uris, retry.first_shard)
    retried.ok = int(pc.sum(pc.equal(statuses, "ok")).as_py() or 0)
    retried.still_errors = len(statuses) - retried.ok


def _non_empty(tables: Iterator[pa.Table], config: JobConfig) -> Iterator[pa.Table]:
    """The listing in windows of sorted_runs.rebatch's size; an error now if it has no image at all."""
    windows = rebatch(tables)
    first = next(windows, None)
    if first is None or not first.num_rows:
        rule = f"--include {config.include!r}" if config.include else "image extensions"
        raise InputError(f"no images found in {config.input} (matched by {rule}): check INPUT or --include")
    return chain([first], windows)
