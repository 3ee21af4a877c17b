"""The job driver: validate early, compare the listing with the ledger, keep a pool of Ray actors busy,
and compact committed shards into few large files.

Every mistake a user can make (bad model, missing bucket, empty prefix, unwritable OUTPUT) is found
before any actor starts. The driver never waits on storage per shard: the listing and the ledger are
streamed and compared in sorted order by a thread planning up to READ_AHEAD_IMAGES ahead while shards
are handed out (two per actor, which it works on at once), actors commit their own shard files, and Ray
tasks merge each ROWS_PER_FILE committed images into one part file, so its loop only submits and
collects Ray calls.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from itertools import chain, islice
from pathlib import Path

import pyarrow as pa
import ray

from workers.actor import CONCURRENT_SHARDS, ActorInfo, ShardReport, ShardWorker
from workers.containers import ContainerSettings
from workers.detector import DetectorSettings, inspect_model
from workers.inputs import InputError, is_manifest, list_images
from workers.ledger import Ledger
from workers.runtime import check_device, uses_gpu
from workers.shards import (
    READ_AHEAD_IMAGES,
    PlanCounts,
    Shard,
    compare,
    compare_with_changes,
    plan_shards,
    read_ahead,
)
from workers.sink import NO_COUNTS, CompactionReport, ShardCounts, compact
from workers.sorted_runs import rebatch
from workers.storage import is_s3_uri, request_counts

MAX_RESTARTS = 4
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
ROWS_PER_FILE = 100_000
SHARDS_PER_CALL = 16
"""Shards per actor call once every actor is busy (measured: a Ray call costs the driver ~0.8 ms of CPU)."""
RAMP_CALLS = 2
"""Calls of one shard each actor slot gets first."""
COMPACTION_RETRIES = 3
STARTUP_TIMEOUT = 300.0
PLACEMENT_POLL = 2.0
log = logging.getLogger("facesweep")
COMPACTIONS_AT_ONCE = 2
"""Compaction tasks in flight; more wait their turn (each reads rows_per_file / shard_size files)."""


class JobError(RuntimeError):
    """A job that could not run; the message says why in one line."""


@dataclass(frozen=True)
class JobConfig:
    """One job: what to read, where to write, which detector, and how many actors."""

    input: str
    output: str
    detector: DetectorSettings
    actors: int | None = None  # None: as many as the cluster's CPUs allow
    cpus_per_actor: float = 2.0
    shard_size: int = 64
    include: str | None = None
    ray_address: str | None = None  # None: a local Ray instance (or the one RAY_ADDRESS names)
    rows_per_file: int = ROWS_PER_FILE  # images per part file (the job's tail: fewer)
    startup_timeout: float = STARTUP_TIMEOUT  # seconds to wait for a cluster to fit the actors
    reprocess_changed: bool = False  # redo images whose object changed since they were done
    containers: ContainerSettings = field(default_factory=ContainerSettings)  # how tar / Parquet are read


@dataclass
class NodeUse:
    """One Ray node's part in a job: its address, the actors placed on it, the shards and images it did."""

    ip: str = ""
    actors: int = 0
    shards: int = 0
    images: int = 0


@dataclass
class JobProgress:
    """Running totals, passed to the progress callback after every shard."""

    images: int = 0
    faces: int = 0
    errors: int = 0
    shards: int = 0
    failed_shards: list[str] = field(default_factory=list)
    plan: PlanCounts = field(default_factory=PlanCounts)
    started: float = field(default_factory=time.monotonic)
    resumed: ShardCounts = NO_COUNTS  # what earlier runs left in OUTPUT
    redone_changed: int = 0  # changed images whose old rows were dropped, to be done again
    files: int = 0  # part files this run wrote
    already_complete: bool = False  # nothing new, nothing pending: the job did nothing
    startup_seconds: float = 0.0  # until every actor had compiled its model
    finished: float | None = None  # when the last shard came back
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
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def images_per_second(self) -> float:
        """Over the whole job, start-up included."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def processing_images_per_second(self) -> float:
        """Once the actors were ready: the pipeline's own rate."""
        busy = self.seconds - self.startup_seconds
        return self.images / busy if busy > 0 else 0.0

    def add(self, report: ShardReport) -> None:
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
            self.nodes.setdefault(info.node_id, NodeUse()).actors += 1


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
    job.ledger.write_record(_record(job, finished_at=_now()))
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
    started_ray = _ensure_ray(config.ray_address)
    actors = []
    try:
        if first is not None:
            actors = _start_actors(config, job.checksum, progress, worker, started_ray)
        progress.startup_seconds = progress.seconds
        compactor = _Compactor(job.ledger, config.rows_per_file)
        pending = chain([first] if first else [], shards)
        _dispatch(actors, pending, compactor, progress, on_progress, _concurrency(worker))
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
    output = config.output if is_s3_uri(config.output) else str(Path(config.output).absolute())
    config = replace(config, output=output, detector=replace(config.detector, device=device))
    _check_output(config)
    checksum = inspect_model(config.detector).checksum
    listing = _non_empty(list_images(config.input, config.include, config.containers.piece_bytes), config)
    ledger = Ledger.read(config.output, read_only)
    if overwrite:
        ledger.clear()
    identity = _identity(config, checksum)
    ledger.check_identity(identity)
    progress = JobProgress()
    if config.reprocess_changed:
        progress.redone_changed = _drop_changed(ledger, config)
    progress.resumed = ledger.totals
    shards = plan_shards(
        compare(listing, ledger.done(), progress.plan), config.shard_size, ledger.next_shard, progress.plan
    )
    started_at = (ledger.record or {}).get("started_at") or _now()
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
    shards = counts.shards + len(job.ledger.shards)
    expected = {
        "LIST": 0,
        "GET": counts.new + shards,  # each image, each shard file when it is compacted
        "PUT": counts.shards + files + 2,  # shard files, part files, the job record twice
        "HEAD": 0,
        "DELETE": math.ceil(shards / 1000),  # a DeleteObjects call takes 1,000 keys
    }
    after = request_counts()
    last_rate = ((job.ledger.record or {}).get("this_run") or {}).get("processing_images_per_second")
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
    """OUTPUT must be a folder, and not inside a folder INPUT (a later run would list its own files)."""
    output, source = config.output, config.input
    if not is_s3_uri(output) and Path(output).is_file():
        raise InputError(f"OUTPUT {output} is a file: give a directory or an s3://bucket/prefix")
    if is_manifest(source) or is_s3_uri(source) != is_s3_uri(output):
        return
    if is_s3_uri(source):
        inside = output.rstrip("/").startswith(source.rstrip("/") + "/") or output.rstrip(
            "/"
        ) == source.rstrip("/")
    else:
        inside = Path(output).resolve().is_relative_to(Path(source).resolve())
    if inside:
        raise InputError(
            f"OUTPUT {output} is inside INPUT {source}: a later run would read its own files; "
            "give an OUTPUT outside INPUT"
        )


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


def _identity(config: JobConfig, checksum: str) -> dict:
    """What decides which faces the job writes; a re-run into the same OUTPUT must match it."""
    detector = {
        k: v for k, v in asdict(config.detector).items() if k not in ("model", "threads", "model_sha256")
    }
    identity = {"input": config.input, "include": config.include, "model_sha256": checksum, **detector}
    defaults = ContainerSettings()  # in the identity when set: older records have no such keys
    identity.update({k: v for k, v in asdict(config.containers).items() if v != getattr(defaults, k)})
    return json.loads(json.dumps(identity))  # as _job.json stores it (tuples become lists)


def _non_empty(tables: Iterator[pa.Table], config: JobConfig) -> Iterator[pa.Table]:
    """The listing in windows of sorted_runs.rebatch's size; an error now if it has no image at all."""
    windows = rebatch(tables)
    first = next(windows, None)
    if first is None or not first.num_rows:
        rule = f"--include {config.include!r}" if config.include else "image extensions"
        raise InputError(f"no images found in {config.input} (matched by {rule}): check INPUT or --include")
    return chain([first], windows)


def _concurrency(worker: type) -> int:
    """Shards an actor of class `worker` works on at once (its Ray max_concurrency)."""
    return getattr(worker, "CONCURRENCY", CONCURRENT_SHARDS)


def _ensure_ray(address: str | None) -> bool:
    """Connects to `address` (or RAY_ADDRESS), else starts a local, loopback-only instance.

    Returns whether this call started Ray (and so must stop it).
    """
    if ray.is_initialized():
        return False
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    os.environ.update({k: os.environ.get(k, v) for k, v in env.items()})
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("joining the Ray cluster at %s", address)
        ray.init(address=address, runtime_env={"env_vars": env}, logging_level="WARNING", log_to_driver=False)
    else:
        log.info("starting a local Ray")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray turns token authentication on for a new local instance (good) and warns that it did (noise).
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            runtime_env={"env_vars": env},
            logging_level="WARNING",
            log_to_driver=False,
        )
    return True


def _fit(resources: dict[str, float], cpus: float, gpus: int) -> float:
    """How many actors of `cpus` CPUs (and `gpus` GPUs) the cluster's resources hold."""
    fit = resources.get("CPU", 0) // cpus
    return min(fit, resources.get("GPU", 0) // gpus) if gpus else fit


def _wait_for_room(count: int, cpus: float, gpus: int, timeout: float, grows: bool) -> None:
    """Returns once the cluster can place `count` actors: at once on a cluster that cannot grow (a local
    Ray), else within `timeout` seconds (an autoscaler adding nodes); a JobError otherwise, never a hang."""
    need = f"{count} actors x {cpus:g} CPUs" + (f" and {gpus} GPU" if gpus else "")
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    if cpus > largest and not grows:
        raise JobError(f"--cpus-per-actor {cpus:g}: no node has that many CPUs (the largest has {largest:g})")
    deadline = time.monotonic() + timeout
    while (have := _fit(ray.cluster_resources(), cpus, gpus)) < count:
        cluster = f"the cluster has {ray.cluster_resources().get('CPU', 0):g} CPUs"
        if not grows:
            raise JobError(f"{need} do not fit: {cluster}; use fewer --actors or --cpus-per-actor")
        if time.monotonic() > deadline:
            raise JobError(f"gave up after {timeout:g} s waiting for {need}: {cluster} (room for {have:g})")
        log.info("waiting for %s; %s", need, cluster)
        time.sleep(PLACEMENT_POLL)


def _start_actors(
    config: JobConfig, checksum: str, progress: JobProgress, worker: type, started_ray: bool
) -> list[ray.actor.ActorHandle]:
    """Actors spread over the cluster's nodes, each with the model the driver checked (by checksum)."""
    cpus, device = config.cpus_per_actor, config.detector.device
    resources = ray.cluster_resources()
    gpus = 1 if uses_gpu(device) else 0
    if gpus and resources.get("GPU", 0) < 1:
        raise JobError(
            f"--device {device}: the Ray cluster has no GPU; start its GPU nodes with "
            "`ray start --num-gpus=N`, or use --device CPU or AUTO"
        )
    count = config.actors or max(1, int(_fit(resources, cpus, gpus)))
    _wait_for_room(count, cpus, gpus, config.startup_timeout, grows=started_ray is False)
    settings = replace(config.detector, threads=max(1, round(cpus)), model_sha256=checksum)
    # A lost actor (process or node) is restarted up to MAX_RESTARTS times; its shards wait for it and
    # are retried as often as needed (each retry rewrites the same shard file, atomically).
    actor_class = ray.remote(worker).options(
        num_cpus=cpus,
        num_gpus=gpus,
        max_concurrency=_concurrency(worker),
        scheduling_strategy="SPREAD",
        max_restarts=MAX_RESTARTS,
        max_task_retries=-1,
    )
    log.info("starting %d actors (%g CPUs each), each compiling the model on %s", count, cpus, device)
    actors = [actor_class.remote(settings, config.output, config.containers) for _ in range(count)]
    try:
        progress.add_actors(
            ray.get([actor.ready.remote() for actor in actors], timeout=config.startup_timeout)
        )
    except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as error:
        for actor in actors:
            ray.kill(actor)
        if isinstance(error, ray.exceptions.GetTimeoutError):
            raise JobError(f"actors not ready after --startup-timeout {config.startup_timeout:g} s") from None
        raise JobError(
            f"actors could not start the model on {config.detector.device}: {_last_line(error)}"
        ) from None
    return actors


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
                    progress.failed_shards.append(f"{name}: {_last_line(error)}")
                continue
            actor, batch = running.pop(ref)
            try:
                for shard_report in ray.get(ref):
                    progress.add(shard_report)
                    compactor.add(shard_report.index, shard_report.images)
            except ray.exceptions.RayError as error:
                reason = _last_line(error)
                progress.failed_shards += [f"shard {shard.index}: {reason}" for shard in batch]
            submit(actor)
            on_progress(progress)
        compactions.update(compactor.ready(not running, len(compactions)))


def _last_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _record(job: _Job, finished_at: str | None = None) -> dict:
    """OUTPUT/_job.json: identity, config and totals (no credentials are ever part of a JobConfig)."""
    config, progress, plan = job.config, job.progress, job.progress.plan
    complete = finished_at is not None and plan.finished and not progress.failed_shards
    actor_cpu = sum(progress.actor_cpu.values())
    total = progress.resumed + ShardCounts(progress.images, progress.faces, progress.errors)
    return {
        "identity": job.identity,
        "config": asdict(config),
        "started_at": job.started_at,
        "finished_at": finished_at,
        "complete": complete,
        "images": total.images,
        "faces": total.faces,
        "errors": total.errors,
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
            "failed": progress.failed_shards,
            "requests": progress.requests,
            "seconds": round(progress.seconds, 3),
            "startup_seconds": round(progress.startup_seconds, 3),
            "images_per_second": round(progress.images_per_second, 3),
            "processing_images_per_second": round(progress.processing_images_per_second, 3),
            "stage_seconds": {k: round(v, 3) for k, v in progress.stage_seconds.items()},
            "stage_ms_per_image": {
                k: round(1000 * v / max(progress.images, 1), 3) for k, v in progress.stage_seconds.items()
            },
            "actor_cpu_seconds": round(actor_cpu, 3),
            "actor_cpu_ms_per_image": round(1000 * actor_cpu / max(progress.images, 1), 3),
            "faces": progress.faces,
            "errors": progress.errors,
            "errors_by_kind": progress.error_kinds,
            "internal_error_tracebacks": progress.tracebacks,
            "device": config.detector.device,
            "nodes": {node_id: asdict(use) for node_id, use in progress.nodes.items()},
        },
    }
