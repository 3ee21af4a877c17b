"""The job driver: validate early, plan shards from a lazy listing, keep a pool of Ray actors busy.

Every mistake a user can make (bad model, missing bucket, empty prefix, unwritable OUTPUT) is found
before any actor starts. Shards are handed out as actors free up, two per actor at a time (which it
works on at once), so neither the listing nor the plan is ever held whole in memory.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from itertools import chain

import ray

from workers.actor import CONCURRENT_SHARDS, ActorInfo, ShardReport, ShardWorker
from workers.detector import DetectorSettings, inspect_model
from workers.inputs import InputError, list_inputs
from workers.resume import OutputState
from workers.runtime import check_device, uses_gpu
from workers.shards import Shard, plan_shards
from workers.sink import ShardCounts

MAX_RESTARTS = 4
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024


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
    listed: int = 0
    listing_done: bool = False
    started: float = field(default_factory=time.monotonic)
    resumed: ShardCounts = field(default_factory=lambda: ShardCounts(0, 0, 0))  # by earlier runs
    resumed_shards: int = 0
    already_complete: bool = False
    startup_seconds: float = 0.0  # until every actor had compiled its model
    finished: float | None = None  # when the last shard came back
    stage_seconds: dict[str, float] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, NodeUse] = field(default_factory=dict)  # by Ray node id
    actor_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by actor process (ActorInfo)

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

    def add_resumed(self, counts: ShardCounts) -> None:
        r = self.resumed
        self.resumed = ShardCounts(r.images + counts.images, r.faces + counts.faces, r.errors + counts.errors)
        self.resumed_shards += 1

    def add(self, report: ShardReport) -> None:
        self.images += report.images
        self.faces += report.faces
        self.errors += report.errors
        self.shards += 1
        for stage, seconds in report.stage_seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        for kind, count in report.error_kinds.items():
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + count
        process = report.actor.process
        self.actor_cpu[process] = max(self.actor_cpu.get(process, 0.0), report.actor_cpu_seconds)
        node = self.nodes.setdefault(report.actor.node_id, NodeUse())
        node.shards += 1
        node.images += report.images

    def add_actors(self, infos: list[ActorInfo]) -> None:
        for info in infos:
            self.nodes.setdefault(info.node_id, NodeUse()).actors += 1


def run_job(
    config: JobConfig, on_progress: Callable[[JobProgress], None] = lambda _: None, overwrite: bool = False
) -> JobProgress:
    """Runs the job to the end (or finishes what an earlier run of it left) and returns its totals.

    Raises a one-line error for bad input, and OutputConflictError when OUTPUT holds another job."""
    try:
        device = check_device(config.detector.device)
    except ValueError as error:
        raise JobError(str(error)) from None
    config = replace(config, detector=replace(config.detector, device=device))
    plan = inspect_model(config.detector)
    uris = _non_empty(list_inputs(config.input, config.include), config)
    state = OutputState.read(config.output)
    if overwrite:
        state.clear()
    identity = _identity(config, plan.checksum)
    state.check_identity(identity)
    progress = JobProgress()
    if state.complete:
        progress.already_complete = True
        record = state.record or {}
        progress.resumed = ShardCounts(record["images"], record["faces"], record["errors"])
        progress.resumed_shards = record["shards"]
        progress.finished = time.monotonic()
        return progress
    started_at = (state.record or {}).get("started_at") or _now()
    state.write_record(_record(config, identity, progress, started_at))
    started_ray = _ensure_ray(config.ray_address)
    actors = []
    try:
        actors = _start_actors(config, plan.checksum, progress)
        progress.startup_seconds = progress.seconds
        shards = state.resume(plan_shards(_count_listed(uris, progress), config.shard_size))
        _dispatch(actors, shards, progress, on_progress)
        progress.finished = time.monotonic()
        addresses = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
        for node_id, use in progress.nodes.items():
            use.ip = addresses.get(node_id, "")
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_ray:
            ray.shutdown()
    state.write_record(_record(config, identity, progress, started_at, finished_at=_now()))
    return progress


def _identity(config: JobConfig, checksum: str) -> dict:
    """What decides which faces the job writes; a re-run into the same OUTPUT must match it."""
    detector = {
        k: v for k, v in asdict(config.detector).items() if k not in ("model", "threads", "model_sha256")
    }
    identity = {
        "input": config.input,
        "include": config.include,
        "shard_size": config.shard_size,
        "model_sha256": checksum,
        **detector,
    }
    return json.loads(json.dumps(identity))  # as _job.json stores it (tuples become lists)


def _non_empty(uris: Iterator[str], config: JobConfig) -> Iterator[str]:
    first = next(uris, None)
    if first is None:
        rule = f"--include {config.include!r}" if config.include else "image extensions"
        raise InputError(f"no images found in {config.input} (matched by {rule}): check INPUT or --include")
    return chain([first], uris)


def _count_listed(uris: Iterator[str], progress: JobProgress) -> Iterator[str]:
    for uri in uris:
        progress.listed += 1
        yield uri
    progress.listing_done = True


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
        ray.init(address=address, runtime_env={"env_vars": env}, logging_level="WARNING", log_to_driver=False)
    else:
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


def _start_actors(config: JobConfig, checksum: str, progress: JobProgress) -> list[ray.actor.ActorHandle]:
    """Actors spread over the cluster's nodes, each with the model the driver checked (by checksum)."""
    cpus, device = config.cpus_per_actor, config.detector.device
    resources = ray.cluster_resources()
    gpus = 1 if uses_gpu(device) else 0
    if gpus and resources.get("GPU", 0) < 1:
        raise JobError(
            f"--device {device}: the Ray cluster has no GPU; start its GPU nodes with "
            "`ray start --num-gpus=N`, or use --device CPU or AUTO"
        )
    fit = resources.get("CPU", 1) // cpus
    if gpus:
        fit = min(fit, resources["GPU"])
    count = config.actors or max(1, int(fit))
    settings = replace(config.detector, threads=max(1, round(cpus)), model_sha256=checksum)
    # A lost actor (process or node) is restarted up to MAX_RESTARTS times; its shards wait for it and
    # are retried as often as needed (each retry rewrites the same shard file, atomically).
    actor_class = ray.remote(ShardWorker).options(
        num_cpus=cpus,
        num_gpus=gpus,
        max_concurrency=CONCURRENT_SHARDS,
        scheduling_strategy="SPREAD",
        max_restarts=MAX_RESTARTS,
        max_task_retries=-1,
    )
    actors = [actor_class.remote(settings, config.output) for _ in range(count)]
    try:
        progress.add_actors(ray.get([actor.ready.remote() for actor in actors]))
    except ray.exceptions.RayError as error:
        for actor in actors:
            ray.kill(actor)
        raise JobError(
            f"actors could not start the model on {config.detector.device}: {_first_line(error)}"
        ) from None
    return actors


def _dispatch(
    actors: list[ray.actor.ActorHandle],
    shards: Iterator[tuple[Shard, ShardCounts | None]],
    progress: JobProgress,
    on_progress: Callable[[JobProgress], None],
) -> None:
    """Keeps every actor fed with up to CONCURRENT_SHARDS shards until the plan runs out; shards an
    earlier run committed are counted, not redone."""
    running: dict[ray.ObjectRef, tuple[ray.actor.ActorHandle, Shard]] = {}

    def next_to_do() -> Shard | None:
        for shard, committed in shards:
            if committed is None:
                return shard
            progress.add_resumed(committed)
        return None

    def submit(actor: ray.actor.ActorHandle) -> bool:
        shard = next_to_do()
        if shard is None:
            return False
        running[actor.process.remote(shard)] = (actor, shard)
        return True

    for actor in actors:
        for _ in range(CONCURRENT_SHARDS):
            submit(actor)
    while running:
        [done], _ = ray.wait(list(running), num_returns=1)
        actor, shard = running.pop(done)
        try:
            progress.add(ray.get(done))
        except ray.exceptions.RayError as error:
            progress.failed_shards.append(f"{shard.file_name}: {_first_line(error)}")
        submit(actor)
        on_progress(progress)


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _record(
    config: JobConfig, identity: dict, progress: JobProgress, started_at: str, finished_at: str | None = None
) -> dict:
    """OUTPUT/_job.json: identity, config and totals (no credentials are ever part of a JobConfig)."""
    complete = finished_at is not None and progress.listing_done and not progress.failed_shards
    actor_cpu = sum(progress.actor_cpu.values())
    return {
        "identity": identity,
        "config": asdict(config),
        "started_at": started_at,
        "finished_at": finished_at,
        "complete": complete,
        "images": progress.images + progress.resumed.images,
        "faces": progress.faces + progress.resumed.faces,
        "errors": progress.errors + progress.resumed.errors,
        "shards": progress.shards + progress.resumed_shards,
        "failed_shards": progress.failed_shards,
        "this_run": {
            "images": progress.images,
            "shards": progress.shards,
            "resumed_shards": progress.resumed_shards,
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
            "device": config.detector.device,
            "nodes": {node_id: asdict(use) for node_id, use in progress.nodes.items()},
        },
    }
