"""Faults: an actor killed mid-shard, the driver killed mid-job, the object store down for 10 s, a node
lost. Whatever happens, every input image ends up in the output exactly once."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from facesweep.workers.config import AnonymizeSettings, DetectorSettings, JobConfig
from facesweep.workers.job.driver import run_job
from facesweep.workers.job.progress import JobProgress
from facesweep.workers.products.anonymize import copy_uri
from infra.demo import sample_photos
from infra.local_s3 import LocalS3, start_local_s3
from tests.outputs import assert_one_crop_per_face
from tests.paths import ROOT

pytestmark = pytest.mark.slow
PHOTOS = 12


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fault-photos")
    originals = [path for _, path in sample_photos()]
    for i in range(PHOTOS):
        source = originals[i % len(originals)]
        (folder / f"{i:02d}-{source.name}").write_bytes(source.read_bytes())
    return folder


def assert_exactly_once(
    output: str, expected: set[str], filesystem: pafs.FileSystem | None = None, at_most: bool = False
) -> None:
    """What a reader sees is `expected`, each once (`at_most`: no image twice, whatever is there)."""
    seen = ds.dataset(output, format="parquet", filesystem=filesystem).to_table(columns=["uri"])["uri"]
    if at_most:
        assert len(set(seen.to_pylist())) == len(seen)
    else:
        assert sorted(seen.to_pylist()) == sorted(expected)


def worker_pids(name: str) -> list[int]:
    """Processes whose title Ray set to `ray::<name>...` (an actor process shows its class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(f"ray::{name}".encode()):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_actor_killed_mid_shard_is_restarted_and_the_shard_retried(
    ray_local: None, photos: Path, tmp_path: Path
) -> None:
    killed: list[int] = []

    def kill_once(progress: JobProgress) -> None:
        if not killed:  # the actor holds a second shard already: it dies in the middle of it
            killed.extend(worker_pids("ShardWorker"))
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    config = JobConfig(
        str(photos), str(tmp_path / "out"), DetectorSettings(model="retinaface-mnet025"), 1, 1.0, shard_size=2
    )
    result = run_job(config, kill_once)
    assert len(killed) == 1
    assert not result.failed_shards and result.images == PHOTOS
    assert_exactly_once(str(tmp_path / "out"), {str(p) for p in photos.iterdir()})


def facesweep(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "facesweep.cli", "run", *args, "--actors", "1", "--cpus-per-actor", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        start_new_session=True,  # its own process group: the driver and the Ray it started die together
    )


def wait_for_shard_line(process: subprocess.Popen[str]) -> Iterator[str]:
    for line in process.stderr:
        if line.startswith("shard "):
            yield line


def committed_images(output: Path) -> int:
    """Images in OUTPUT's committed files, part files and not yet compacted shard files alike."""
    files = [*output.glob("part-*.parquet"), *output.glob("_shards/shard-*.parquet")]
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


@pytest.fixture(scope="module")
def photo_tar(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The photos as one WebDataset shard (each with a .json beside it) in a folder of its own."""
    folder = tmp_path_factory.mktemp("fault-tar")
    with tarfile.open(folder / "000000.tar", "w") as archive:
        for path in sorted(photos.iterdir()):
            archive.add(path, arcname=path.name)
            info = tarfile.TarInfo(f"{path.stem}.json")
            info.size = 2
            archive.addfile(info, io.BytesIO(b"{}"))
    return folder


def expected_uris(input_: Path) -> set[str]:
    """What a run over `input_` (the photos, or their tar) must leave: every image once."""
    tars = sorted(input_.glob("*.tar"))
    if not tars:
        return {str(p) for p in input_.iterdir()}
    with tarfile.open(tars[0]) as archive:
        return {f"{tars[0]}#{name}" for name in archive.getnames() if not name.endswith(".json")}


@pytest.mark.parametrize("kind", ["objects", "tar"])
def test_driver_killed_mid_job_then_rerun_completes(
    photos: Path, photo_tar: Path, tmp_path: Path, kind: str
) -> None:
    source = photos if kind == "objects" else photo_tar
    output, dest = tmp_path / "out", tmp_path / "copies"
    options = ("--shard-size", "2") if kind == "objects" else ("--piece-bytes", "400000")
    options += ("--crops", "--anonymize", str(dest))
    first = facesweep(str(source), str(output), *options)
    next(wait_for_shard_line(first))
    os.killpg(first.pid, signal.SIGKILL)  # the driver's machine dies: the driver and its local Ray
    first.wait(timeout=30)
    done_before = committed_images(output)
    assert 1 <= done_before < PHOTOS
    second = facesweep(str(source), str(output), *options)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    # Shards committed before the kill (and any an orphaned actor finished since) are not redone.
    resumed = int(re.search(r"resumed: (\d+) images already done", out).group(1))
    assert resumed >= done_before
    assert re.search(rf"^images: {PHOTOS - resumed} ", out, re.MULTILINE), out
    assert_exactly_once(str(output), expected_uris(source))
    assert_one_crop_per_face(output)  # and nothing partial anywhere: every file is a whole one
    settings = AnonymizeSettings(str(dest), root=str(source))
    copies = {copy_uri(uri, settings) for uri in expected_uris(source)}
    assert {str(path) for path in dest.rglob("*") if path.is_file()} == copies
    assert not [path for path in output.rglob("*.partial")]


def test_driver_killed_during_a_compaction_then_an_incremental_run(photos: Path, tmp_path: Path) -> None:
    """Killed the moment a part file appears (its shard files may still be there), then re-run on an
    input that gained two images: every image exactly once, and only the new ones and the unfinished
    ones done."""
    source = tmp_path / "photos"
    shutil.copytree(photos, source)
    output = tmp_path / "out"
    options = ("--shard-size", "1", "--rows-per-file", "2", "--crops")  # a compaction every two images
    first = facesweep(str(source), str(output), *options)
    deadline = time.monotonic() + 240
    while not list(output.glob("part-*.parquet")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.005)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert list(output.glob("part-*.parquet")), "no compaction happened before the kill"
    assert_exactly_once(str(output), set(), filesystem=None, at_most=True)
    done_before = committed_images(output)
    for name in ("00-late.png", "zz-late.png"):
        shutil.copy(sorted(source.iterdir())[0], source / name)
    second = facesweep(str(source), str(output), *options)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    new = PHOTOS + 2 - int(re.search(r"resumed: (\d+) images already done", out).group(1))
    assert re.search(rf"^images: {new} ", out, re.MULTILINE), out
    # done_before counts a stale copy of each of the two shards of a finished compaction twice
    assert new <= PHOTOS + 2 - done_before + 2
    assert_exactly_once(str(output), {str(p) for p in source.iterdir()})
    assert not list(output.glob("_shards/*.parquet"))
    assert_one_crop_per_face(output)
    assert not list(output.glob("_crops/_shards/*.parquet"))


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[LocalS3]:
    with start_local_s3(tmp_path / "s3") as server:
        yield server


def test_object_store_down_for_ten_seconds(own_s3: LocalS3, photos: Path, tmp_path: Path) -> None:
    client = own_s3.client()
    client.create_bucket(Bucket="flaky")
    for photo in sorted(photos.iterdir()):
        client.upload_file(str(photo), "flaky", f"in/{photo.name}")
    job = facesweep("s3://flaky/in", "s3://flaky/out", "--shard-size", "2", env=own_s3.env())
    next(wait_for_shard_line(job))
    own_s3.stop()
    restarted: list[LocalS3] = []
    running_when_back: list[bool] = []

    def restart() -> None:
        running_when_back.append(job.poll() is None)  # the job lived through the whole outage
        restarted.append(start_local_s3(own_s3.data_dir, own_s3.credentials, ports=own_s3.ports))

    timer = threading.Timer(10.0, restart)
    timer.start()
    try:
        out, err = job.communicate(timeout=300)
        timer.join()
        assert running_when_back == [True] and restarted, "the store was not down while the job ran"
        # obstore's retries (about a minute) ride out a 10 s outage: no shard fails, nothing to re-run
        assert job.returncode == 0 and "failed (" not in out, err
        s3 = own_s3.arrow_filesystem()
        assert_exactly_once("flaky/out", {f"s3://flaky/in/{p.name}" for p in photos.iterdir()}, s3)
        errors = ds.dataset("flaky/out", format="parquet", filesystem=s3).to_table(columns=["error"])
        assert set(errors["error"].to_pylist()) == {None}, "an outage must not turn images into error rows"
    finally:
        timer.cancel()
        for server in restarted:
            server.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)


NODE_LOSS_JOB = """
import sys, ray
from ray.cluster_utils import Cluster
from facesweep.workers.model.plan import DetectorSettings
from facesweep.workers.job.driver import JobConfig, run_job

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"})
workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(4)]
ray.init(address=cluster.address)
removed = []

def lose_nodes(progress):
    if not removed:  # two of the four worker nodes go: at least one of them holds an actor
        for node in workers[:2]:
            cluster.remove_node(node, allow_graceful=False)
            removed.append(node)

settings = DetectorSettings(model="retinaface-mnet025")
config = JobConfig(sys.argv[1], sys.argv[2], settings, 2, 1.0, shard_size=2)
result = run_job(config, lose_nodes)
print("images", result.images, "failed", len(result.failed_shards), "removed", len(removed))
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.cluster
def test_node_lost_mid_job(photos: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    process = subprocess.Popen(
        [sys.executable, "-c", NODE_LOSS_JOB, str(photos), str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=400)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, err[-3000:]
    assert f"images {PHOTOS} failed 0 removed 2" in out
    assert_exactly_once(str(output), {str(p) for p in photos.iterdir()})
