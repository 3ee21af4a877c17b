"""Ray for a job: start a local instance or join a cluster, wait until the actors fit (an autoscaler may
add nodes; a cluster that cannot grow is refused at once, never a hang), and start them."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import ray

from facesweep.workers.errors import JobError, line_of
from facesweep.workers.wording import plural

if TYPE_CHECKING:
    from facesweep.workers.config import JobConfig
    from facesweep.workers.job.progress import JobProgress

MAX_RESTARTS = 4
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
PLACEMENT_POLL = 2.0
log = logging.getLogger("facesweep")


def ensure_ray(address: str | None) -> bool:
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
            address="local",  # a new instance: never a cluster someone else started with `ray start`
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
    need = f"{plural(count, 'actor')} x {plural(cpus, 'CPU')}" + (
        f" and {plural(gpus, 'GPU')}" if gpus else ""
    )
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


def start_actors(
    config: JobConfig, checksum: str, progress: JobProgress, worker: type, started_ray: bool
) -> list[ray.actor.ActorHandle]:
    """Actors spread over the cluster's nodes, each with the model the driver checked (by checksum)."""
    cpus, device = config.cpus_per_actor, config.detector.device
    resources = ray.cluster_resources()
    gpus = 1 if config.detector.holds_gpu else 0
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
        max_concurrency=config.tuning.shards_at_once,
        scheduling_strategy="SPREAD",
        max_restarts=MAX_RESTARTS,
        max_task_retries=-1,
    )
    log.info(
        "starting %s (%s each), each compiling the model on %s",
        plural(count, "actor"),
        plural(cpus, "CPU"),
        device,
    )
    arguments = (settings, config.output, config.containers, config.tuning, config.anonymizer, config.crops)
    actors = [actor_class.remote(*arguments) for _ in range(count)]
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
            f"actors could not start the model on {config.detector.device}: {line_of(error, last=True)}"
        ) from None
    return actors
