"""The job driver: validate early, compare the listing with the ledger, keep a pool of Ray actors busy,
and compact committed shards into few large files.

Every mistake a user can make (bad model, missing bucket, empty prefix, unwritable OUTPUT) is found
before any actor starts. The driver never waits on storage per shard: the listing and the ledger are
streamed and compared in sorted order by a thread planning up to READ_AHEAD_IMAGES ahead while shards
are handed out (two per actor, which it works on at once), actors commit their own shard files, and Ray
tasks merge each ROWS_PER_FILE committed images into one part file, so its loop only submits and
collects Ray calls. (Preparing a job and the dry run: workers/job/preparation.py; Ray itself:
workers/job/cluster.py; the calls, stuck ones and draining actors: workers/job/dispatch.py; the record:
workers/output/record.py.)
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import astuple, replace
from itertools import chain

import ray

from facesweep.workers.config import AnonymizeSettings, DetectorSettings, JobConfig
from facesweep.workers.errors import JobError, JobInterrupted, line_of
from facesweep.workers.job.cluster import ensure_ray, start_actors
from facesweep.workers.job.dispatch import Dispatcher
from facesweep.workers.job.ledger import Ledger
from facesweep.workers.job.preparation import Prepared, count_retried, prepare
from facesweep.workers.job.progress import JobProgress, job_record
from facesweep.workers.job.shards import (
    READ_AHEAD_IMAGES,
    Shard,
    read_ahead,
)
from facesweep.workers.output.compaction import CompactionReport, compact, remove_empty_folders
from facesweep.workers.output.record import JobRecord, now
from facesweep.workers.storage import request_counts, trust_the_endpoints

COMPACTION_RETRIES = 3
log = logging.getLogger("facesweep")
COMPACTIONS_AT_ONCE = 2
"""Compaction tasks in flight; more wait their turn (each reads rows_per_file / shard_size files)."""


def run_job(
    config: JobConfig,
    on_progress: Callable[[JobProgress], None] = lambda _: None,
    overwrite: bool = False,
    worker: type | None = None,
) -> JobProgress:
    """Runs the job to the end: the images of INPUT not yet in OUTPUT (all of them the first time), and
    the compaction of what an earlier run committed; returns its totals. `worker` is the actor class.

    Raises a one-line error for bad input, OutputConflictError when OUTPUT holds another job's results,
    OutputInUseError when another job is writing there, and LeaseLostError when one took it meanwhile."""
    requests_before = request_counts()
    job = prepare(_model_checked(config), overwrite)

    def checked(progress: JobProgress) -> None:
        job.lease.check()  # a job whose OUTPUT another job took stops at its next shard
        on_progress(progress)

    with job.lease:  # prepare took it; released at the end, however the job ends
        shards = read_ahead(job.shards, READ_AHEAD_IMAGES // job.config.shard_size)
        try:
            _run(job, shards, checked, worker)
        except KeyboardInterrupt:
            raise JobInterrupted(_recount(job)) from None
        finally:
            shards.close()
        remove_empty_folders(job.config.output)
        count_retried(job)
        _count_requests(job.progress, requests_before)
        job.lease.check()
        job.ledger.write_record(_record(job, finished_at=now()))
    return job.progress


def _join_videos(job: Prepared, in_tasks: bool) -> None:
    """With --anonymize: each video whose pieces all have their blurred segment joined into its copy,
    after the last shard; `in_tasks`: in Ray tasks spread over the nodes (every copy's bytes pass through
    the process that joins it: the driver alone would be a cluster's bottleneck), else here."""
    if job.config.anonymizer is None or not job.progress.plan.video_pieces:
        return
    from facesweep.workers.products import blurred_videos  # PyAV, only for videos

    output, settings, pieces = job.config.output, job.config.anonymizer, job.progress.plan.video_pieces
    if not in_tasks:
        joined = blurred_videos.join_copies(output, settings, pieces)
    else:
        joined = blurred_videos.Joined()
        task = ray.remote(_join_task).options(
            num_cpus=0, max_retries=COMPACTION_RETRIES, scheduling_strategy="SPREAD"
        )
        at_once = blurred_videos.JOINS_AT_ONCE * max(1, len(ray.nodes()))
        todo, running = blurred_videos.videos_to_join(output, pieces), {}
        while todo or running:
            while todo and len(running) < at_once:
                video, count = todo.pop()
                running[task.remote(output, settings, video, count)] = video
            [ref], _ = ray.wait(list(running), num_returns=1)
            video = running.pop(ref)
            try:
                joined.add(ray.get(ref))
            except ray.exceptions.RayError as error:  # a store that stays down: the next run joins it
                log.warning(
                    "facesweep: the blurred copy of %s was not written: %s", video, line_of(error, last=True)
                )
                joined.add("failed")
    job.progress.blurred_videos += joined.copies
    job.progress.blurred_failed += joined.failed


def _join_task(output: str, settings: AnonymizeSettings, video: str, pieces: int) -> str:
    """`join_one` in a Ray task."""
    from facesweep.workers.products.blurred_videos import join_one

    trust_the_endpoints()
    return join_one(output, settings, video, pieces)


def _recount(job: Prepared) -> int:
    """After Ctrl-C (the actors stopped): this run's totals as OUTPUT holds them, which a call cut short
    may have committed without its report reaching the driver, into the record; OUTPUT's images."""
    if job.ledger.record is None:  # the run never started: it wrote nothing
        return job.progress.resumed.images
    progress, totals = job.progress, Ledger.read(job.config.output, read_only=True).totals
    progress.images, progress.faces, progress.errors, progress.crops = astuple(totals - progress.resumed)[:4]
    job.ledger.write_record(_record(job))
    return totals.images


def _model_checked(config: JobConfig) -> JobConfig:
    """The device and the model read as the actors will read them, before OUTPUT is touched, in a
    short-lived child process: the driver never holds OpenVINO and OpenCV (about 35 MB), and their
    import costs the job well under a second beside Ray's start."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        device = child.submit(check_model, config.detector).result()
    return replace(config, detector=replace(config.detector, device=device))


def check_model(settings: DetectorSettings) -> str:
    """The checked device; a one-line JobError or ModelError for a device or model the actors cannot run."""
    from facesweep.workers.model.plan import inspect_model
    from facesweep.workers.model.runtime import check_device

    try:
        device = check_device(settings.device)
    except ValueError as error:
        raise JobError(str(error)) from None
    inspect_model(replace(settings, device=device))
    return device


def _run(
    job: Prepared, shards: Iterator[Shard], on_progress: Callable[[JobProgress], None], worker: type | None
) -> None:
    """Starts Ray and the actors if there is work, dispatches every shard and compaction, stops them.
    `worker`: the actor class (None: ShardWorker, whose module loads OpenCV and OpenVINO)."""
    config, progress = job.config, job.progress
    first = next(shards, None)
    if first is None:  # nothing new: compact what earlier runs committed, if anything, without Ray
        progress.already_complete = not progress.redone_changed and not job.ledger.shards
        _Compactor(job.ledger, config.rows_per_file).here(progress)
        progress.finished = time.monotonic()
        _join_videos(job, in_tasks=False)  # segments a killed run left
        return
    started_ray = ensure_ray(config.ray_address)
    actors = []
    try:
        if first is not None:
            if worker is None:
                from facesweep.workers.job.actor import ShardWorker as worker
            actors = start_actors(config, job.checksum, progress, worker, started_ray)
        job.ledger.write_record(_record(job))  # once the job can run: a refused start leaves OUTPUT as it was
        progress.startup_seconds = progress.seconds
        compactor = _Compactor(job.ledger, config.rows_per_file)
        pending = chain([first] if first else [], shards)
        Dispatcher(actors, pending, compactor, progress, on_progress, config).run()
        progress.finished = time.monotonic()
        _join_videos(job, in_tasks=True)
        addresses = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
        for node_id, use in progress.nodes.items():
            use.ip = addresses.get(node_id, "")
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_ray:
            ray.shutdown()


def _count_requests(progress: JobProgress, before: dict[str, int]) -> None:
    after = request_counts()
    progress.other_requests.update({k: after[k] - before[k] for k in after})


def _compaction_task(output: str, shards: list[int], number: int, extend: bool) -> CompactionReport:
    """`compact` in a Ray task, which retries through a store's outage as the actors do."""
    trust_the_endpoints()
    return compact(output, shards, number, extend)


class _Compactor:
    """Collects committed shards and hands each `rows` images of them to a compaction."""

    def __init__(self, ledger: Ledger, rows: int) -> None:
        self.output, self.rows = ledger.output, rows
        self.next_part = ledger.next_part
        self.pending = [(f.number, f.footer.counts.images) for f in ledger.shards]  # from earlier runs
        self.pending_images = sum(images for _, images in self.pending)
        # An earlier run's small last part without crops: the job's last pending shards join it.
        last = max((f for f in ledger.files if f.part), key=lambda f: f.number, default=None)
        small = last is not None and last.footer.counts.images < rows and not last.footer.counts.crops
        self.tail = last if small else None

    def add(self, index: int, images: int) -> None:
        self.pending.append((index, images))
        self.pending_images += images

    def take(self, final: bool) -> tuple[list[int], int, bool] | None:
        """`compact`'s arguments for the next part: a full part's worth of pending shards (if `final`, the
        rest, into the small tail part when they fit there), or None."""
        if not self.pending or not (final or self.pending_images >= self.rows):
            return None
        tail = self.tail
        if final and tail is not None and tail.footer.counts.images + self.pending_images <= self.rows:
            self.tail = None
            shards = sorted(index for index, _ in self.pending)
            self.pending, self.pending_images = [], 0
            return shards, tail.number, True
        take, images = 0, 0
        while take < len(self.pending) and images < self.rows:
            images += self.pending[take][1]
            take += 1
        shards = sorted(index for index, _ in self.pending[:take])
        del self.pending[:take]
        self.pending_images -= images
        self.next_part += 1
        return shards, self.next_part - 1, False

    def ready(self, final: bool, running: int) -> list[tuple[ray.ObjectRef, str]]:
        """Ray tasks compacting what `take` gives, up to COMPACTIONS_AT_ONCE with the `running` ones."""
        task = ray.remote(_compaction_task).options(num_cpus=0, max_retries=COMPACTION_RETRIES)
        started = []
        while running + len(started) < COMPACTIONS_AT_ONCE and (part := self.take(final)):
            shards, number, extend = part
            name = f"part {number} ({len(shards)} shards)"
            started.append((task.remote(self.output, shards, number, extend), name))
        return started

    def here(self, progress: JobProgress) -> None:
        """Every pending shard compacted in this process: what a run with no new image has left to do,
        without starting Ray."""
        while part := self.take(final=True):
            report = compact(self.output, *part)
            progress.files += 1
            progress.compacted_shards += report.shards
            progress.other_requests.update(report.requests)


def _record(job: Prepared, finished_at: str | None = None) -> JobRecord:
    return job_record(job.config, job.identity, job.started_at, job.progress, finished_at, job.ledger.record)
