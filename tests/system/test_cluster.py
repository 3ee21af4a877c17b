"""On an existing Ray cluster: `ray start` head + second node, `ray job submit -- facesweep run`, actors on
both nodes and the same output as a local run; models fetched from S3 once per node; --device checks."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from facesweep.workers.config import DetectorSettings, JobConfig
from facesweep.workers.errors import JobError
from facesweep.workers.job.driver import run_job
from facesweep.workers.model.catalog import ModelError, model_checksum, resolve_model
from infra.demo import sample_photos
from infra.local_s3 import LocalS3, _PortPicker
from tests.paths import MODELS, ROOT

RAY = Path(sys.executable).with_name("ray")
FACESWEEP = Path(sys.executable).with_name("facesweep")
MODEL = MODELS / "face-detection-0204/FP16/face-detection-0204.xml"
needs_model = pytest.mark.skipif(not MODEL.is_file(), reason=f"needs {MODEL} (../shared)")
PHOTOS = 12


@pytest.fixture
def s3_model(s3_env: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """face-detection-0204 (.xml and .bin) on the local S3, and an empty model cache for this test."""
    monkeypatch.setenv("FACESWEEP_CACHE", str(tmp_path / "cache"))
    bucket = f"models-{secrets.token_hex(4)}"  # the S3 server is the session's
    s3_env.client().create_bucket(Bucket=bucket)
    for part in (MODEL, MODEL.with_suffix(".bin")):
        s3_env.client().upload_file(str(part), bucket, f"omz/{part.name}")
    return f"s3://{bucket}/omz/{MODEL.name}"


def resolve_and_stat(uri: str, sha256: str) -> tuple[str, int]:
    """In another process: the cached model's path and inode (a second fetch would replace the file)."""
    path = resolve_model(uri, sha256)
    return str(path), path.stat().st_ino


@needs_model
def test_model_from_s3_cached_by_checksum_and_fetched_once_per_node(
    s3_env: LocalS3, s3_model: str, tmp_path: Path
) -> None:
    checksum = model_checksum(MODEL)
    with ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:  # four actors starting at once
        answers = set(pool.map(resolve_and_stat, [s3_model] * 4, [checksum] * 4))
    [(path, inode)] = answers
    cached = tmp_path / "cache" / "s3" / checksum
    assert Path(path) == cached / MODEL.name and Path(path).stat().st_ino == inode
    assert sorted(p.name for p in (tmp_path / "cache" / "s3").iterdir() if not p.name.endswith(".lock")) == [
        checksum
    ]
    assert {p.name for p in cached.iterdir()} == {MODEL.name, MODEL.with_suffix(".bin").name}
    assert model_checksum(Path(path)) == checksum

    s3_env.client().delete_objects(
        Bucket=s3_model.split("/")[2],
        Delete={"Objects": [{"Key": f"omz/{MODEL.stem}{s}"} for s in (".xml", ".bin")]},
    )
    # Given the checksum, the cached copy is used without asking S3; without it the model must be fetched.
    assert resolve_model(s3_model, checksum) == Path(path)
    with pytest.raises(ModelError, match=f"cannot fetch model {s3_model}"):
        resolve_model(s3_model)


@needs_model
def test_model_from_s3_that_changed_is_refused(s3_model: str) -> None:
    with pytest.raises(ModelError, match=r"expected 0{64}: it changed during the job"):
        resolve_model(s3_model, "0" * 64)


def test_device_is_checked_before_anything_runs(ray_local: None, tmp_path: Path) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    shutil.copy(sample_photos()[0][1], photos)

    def run(device: str) -> None:
        settings = DetectorSettings(model="retinaface-mnet025", device=device)
        run_job(JobConfig(str(photos), str(tmp_path / device), settings, 1, 1.0))

    with pytest.raises(
        JobError, match=r"^unknown --device 'TPU': use CPU, GPU, GPU\.N, AUTO or AUTO:GPU,CPU$"
    ):
        run("TPU")
    with pytest.raises(JobError, match=r"^--device GPU\.1: the Ray cluster has no GPU; start its GPU nodes"):
        run("gpu.1")
    assert not list((tmp_path / "gpu.1").glob("part-*"))


@dataclass
class LoopbackCluster:
    """Ray nodes started with `ray start` on loopback addresses, each in its own process group; every
    process of it (nodes, actors, job drivers) carries `marker` in its environment."""

    temp_dir: Path
    env: dict[str, str]
    marker: str
    head_ip: str = "127.0.0.2"
    dashboard: str = ""
    groups: list[int] = field(default_factory=list)

    def start(self, *args: str, cache: Path) -> None:
        picker = _PortPicker()
        ports = {flag: picker.port() for flag in ("agent", "grpc", "metrics", "runtime-env")}
        picker.close()
        node = subprocess.Popen(
            [
                RAY,
                "start",
                *args,
                "--num-cpus=1",
                "--object-store-memory=100000000",
                "--disable-usage-stats",
                f"--dashboard-agent-listen-port={ports['agent']}",
                f"--dashboard-agent-grpc-port={ports['grpc']}",
                f"--metrics-export-port={ports['metrics']}",
                f"--runtime-env-agent-port={ports['runtime-env']}",
            ],
            env={**self.env, "FACESWEEP_CACHE": str(cache)},
            cwd=self.temp_dir,  # the node's processes (and the jobs' drivers) run here: not the checkout
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its daemons stay in this process group: stop() kills exactly them
        )
        self.groups.append(node.pid)
        _, err = node.communicate(timeout=120)
        assert node.returncode == 0, err[-3000:]

    def submit(self, s3_env: LocalS3, output: str, *command: str | Path, runtime_env: str = "{}") -> dict:
        """`ray job submit` of `command` (its output to s3://cluster/`output`) with `runtime_env`: the
        job's stdout, asserted to have succeeded, and the `_job.json` it wrote."""
        submitted = subprocess.run(
            [
                RAY,
                "job",
                "submit",
                "--address",
                self.dashboard,
                "--runtime-env-json",
                runtime_env,
                "--",
                *command,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=480,
        )
        assert submitted.returncode == 0 and "succeeded" in submitted.stdout, (
            submitted.stdout[-3000:] + submitted.stderr[-3000:]
        )
        key = f"{output}/_job.json"
        record = json.loads(s3_env.client().get_object(Bucket="cluster", Key=key)["Body"].read())
        return {"stdout": submitted.stdout, **record}

    def processes(self) -> list[int]:
        """This cluster's live processes: in its nodes' process groups, or carrying its marker."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ours = (
                    os.getpgid(int(entry.name)) in self.groups
                    or self.marker.encode() in (entry / "environ").read_bytes()
                )
            except OSError:  # gone meanwhile
                continue
            if ours and (entry / "stat").read_text().split()[2] != "Z":
                found.append(int(entry.name))
        return found

    def stop(self) -> list[int]:
        """SIGTERM, then SIGKILL after 10 s, to every process of this cluster (never `ray stop`, which would
        stop every Ray on the machine); returns those still alive after that (none)."""
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        return self.processes()


@pytest.fixture
def loopback_cluster(s3_env: LocalS3) -> Iterator[LoopbackCluster]:
    """A head node (127.0.0.2) and a second node (127.0.0.3), one CPU each, token authentication on.

    Ray rewrites 127.0.0.1 to the machine's external address for multi-node use, but not 127.0.0.2/3, so
    the nodes and every connection stay on the loopback interface."""
    temp_dir = Path(tempfile.mkdtemp(prefix="fsray-", dir="/tmp"))  # short: Ray's socket paths must fit
    marker = secrets.token_hex(8)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env |= {"RAY_USAGE_STATS_ENABLED": "0", "FACESWEEP_TEST_CLUSTER": marker}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # "0" (conftest) forbids joining a second node
    cluster = LoopbackCluster(temp_dir, env, marker)
    picker = _PortPicker()
    gcs, dashboard, client = picker.port(), picker.port(), picker.port()
    picker.close()
    cluster.dashboard = f"http://{cluster.head_ip}:{dashboard}"
    try:
        cluster.start(
            "--head",
            f"--node-ip-address={cluster.head_ip}",
            f"--port={gcs}",
            f"--temp-dir={temp_dir}",
            f"--dashboard-host={cluster.head_ip}",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={client}",
            cache=temp_dir / "cache-head",
        )
        cluster.start(
            f"--address={cluster.head_ip}:{gcs}",
            "--node-ip-address=127.0.0.3",
            f"--temp-dir={temp_dir / 'node2'}",  # its own disk, as a machine of its own has: two runtime
            cache=temp_dir / "cache-node2",  # env agents building one virtualenv at once would break it
        )
        yield cluster
    finally:
        left = cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes of the test cluster still alive: {left}"


@pytest.fixture
def s3_photos(s3_env: LocalS3) -> list[str]:
    client = s3_env.client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):  # the session's server
        client.create_bucket(Bucket="cluster")
    originals = [path for _, path in sample_photos()]
    keys = [f"in/{i:02d}-{originals[i % len(originals)].name}" for i in range(PHOTOS)]
    for i, key in enumerate(keys):
        client.upload_file(str(originals[i % len(originals)]), "cluster", key)
    return [f"s3://cluster/{key}" for key in keys]


def faces_by_uri(s3_env: LocalS3, prefix: str) -> dict[str, np.ndarray]:
    table = ds.dataset(prefix, format="parquet", filesystem=s3_env.arrow_filesystem()).to_table()
    return {
        row["uri"]: np.array([[f[k] for k in ("x1", "y1", "x2", "y2", "score")] for f in row["faces"]])
        for row in table.to_pylist()
    }


@pytest.mark.slow
@pytest.mark.cluster
@needs_model
def test_job_submitted_to_a_two_node_cluster_runs_on_both_and_matches_a_local_run(
    loopback_cluster: LoopbackCluster, s3_env: LocalS3, s3_model: str, s3_photos: list[str], ray_local: None
) -> None:
    flags = ["--model", s3_model, "--precision", "f32", "--shard-size", "2"]
    run = [FACESWEEP, "run", "s3://cluster/in", "s3://cluster/out-cluster", *flags]
    record = loopback_cluster.submit(s3_env, "out-cluster", *run, "--actors", "2", "--cpus-per-actor", "0.5")
    assert f"images: {PHOTOS} " in record["stdout"]
    assert record["complete"] and record["images"] == PHOTOS
    nodes = record["this_run"]["nodes"].values()
    assert sorted(node["ip"] for node in nodes) == ["127.0.0.2", "127.0.0.3"]
    assert all(node["actors"] == 1 and node["shards"] >= 1 for node in nodes)
    checksum = model_checksum(MODEL)
    for cache in ("cache-head", "cache-node2"):  # each node fetched the model into its own cache
        assert (loopback_cluster.temp_dir / cache / "s3" / checksum / MODEL.name).is_file()

    settings = DetectorSettings(model=s3_model, precision="f32")
    local = run_job(JobConfig("s3://cluster/in", "s3://cluster/out-local", settings, 1, 1.0, shard_size=2))
    assert local.images == PHOTOS and not local.failed_shards
    on_cluster, here = faces_by_uri(s3_env, "cluster/out-cluster"), faces_by_uri(s3_env, "cluster/out-local")
    assert sorted(on_cluster) == sorted(here) == sorted(s3_photos)
    assert sum(len(faces) for faces in here.values()) > 0
    for uri, faces in here.items():
        assert on_cluster[uri].shape == faces.shape
        np.testing.assert_allclose(on_cluster[uri], faces, atol=1e-3)


@pytest.mark.slow
@pytest.mark.cluster
def test_a_cluster_without_facesweep_installed_gets_the_wheel_through_the_jobs_runtime_env(
    loopback_cluster: LoopbackCluster, s3_env: LocalS3, s3_photos: list[str], tmp_path: Path
) -> None:
    """A clean clone's wheel, under a version of its own, shipped with the job (`working_dir`) and
    installed by Ray on each node (`pip`): the driver and every actor run that wheel, not the checkout."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    # A letter first: PEP 440 would drop the leading zeros of an all-digit label (019585 -> 19585).
    version = f"0.1.0+runtimeenv.r{secrets.token_hex(3)}"
    pyproject = clone / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', f'version = "{version}"', 1))
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(clone)],
        check=True,
        capture_output=True,
    )
    [wheel] = dist.glob("facesweep-*.whl")
    runtime_env = {"working_dir": str(dist), "pip": [f"${{RAY_RUNTIME_ENV_CREATE_WORKING_DIR}}/{wheel.name}"]}
    run = [
        "python",
        "-m",
        "facesweep.cli",
        "run",
        "s3://cluster/in",
        "s3://cluster/out-wheel",
        "--shard-size",
        "2",
    ]
    record = loopback_cluster.submit(
        s3_env,
        "out-wheel",
        *run,
        "--actors",
        "2",
        "--cpus-per-actor",
        "0.5",
        runtime_env=json.dumps(runtime_env),
    )
    assert record["complete"] and record["images"] == len(s3_photos)
    assert record["facesweep_version"] == version, "the driver ran the wheel"
    nodes = record["this_run"]["nodes"].values()
    assert sorted(node["ip"] for node in nodes) == ["127.0.0.2", "127.0.0.3"]
    assert all(node["versions"] == [version] for node in nodes), "every actor ran the wheel"
