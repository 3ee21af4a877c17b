"""Faults: an actor killed mid-shard, the driver killed mid-job, the object store down for 10 s, a node
lost. Whatever happens, every input image ends up in the output exactly once."""

from __future__ import annotations

import contextlib
import io
import json
import logging
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
import ray._private.state

from facesweep.cli import summary
from facesweep.workers.config import AnonymizeSettings, DetectorSettings, JobConfig, Tuning
from facesweep.workers.job.driver import run_job
from facesweep.workers.job.progress import JobProgress
from facesweep.workers.output.compaction import HOLD_AFTER_PUT
from facesweep.workers.output.layout import part_path, shard_path
from facesweep.workers.output.writer import read_footer
from facesweep.workers.products.anonymize import copy_uri
from infra.demo import sample_photos
from infra.local_s3 import LocalS3, start_local_s3
from tests.faults import (
    HELD_SHARD,
    HeldWorker,
    TracedWorker,
    traced_calls,
    traced_shards,
    wait_for_a_call_of_several_shards,
    wait_until_held,
)
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


def test_actor_killed_mid_shard_is_restarted_and_the_shard_redone(
    ray_local: None, photos: Path, tmp_path: Path
) -> None:
    """The actor's process is killed while it holds shard 1, taken and not committed (tests/faults.py):
    Ray restarts the actor and retries the call, and the new process does the shard."""
    output = tmp_path / "out"
    killed: list[tuple[int, bool]] = []  # the pid, and whether the held shard's file existed then

    def kill_when_held() -> None:
        pid, _ = wait_until_held(output)
        killed.append((pid, (output / shard_path(HELD_SHARD)).exists()))
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_held, daemon=True)
    killer.start()
    config = JobConfig(
        str(photos), str(output), DetectorSettings(model="retinaface-mnet025"), 1, 1.0, shard_size=2
    )
    result = run_job(config, worker=HeldWorker)
    killer.join(timeout=30)
    assert [committed for _, committed in killed] == [False], "not killed in the middle of the shard"
    [(pid, _)] = killed
    [actor] = {process.split("/")[0] for process in result.actor_cpu}
    assert ray._private.state.actors(actor)["NumRestarts"] == 1
    assert [process for process in result.actor_cpu if process != f"{actor}/{pid}"], "no restarted process"
    # Every shard reported once, the held one too: only the restarted process can have committed it.
    this_run = json.loads((output / "_job.json").read_text())["this_run"]
    assert (this_run["shards"], this_run["images"], this_run["failed"]) == (PHOTOS // 2, PHOTOS, [])
    assert_exactly_once(str(output), {str(p) for p in photos.iterdir()})


def gone(pid: int, timeout: float = 15.0) -> bool:
    """Whether process `pid` has exited (and been reaped) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.timeout(150)
def test_an_actor_stopped_by_sigstop_is_abandoned_and_its_shards_redone_elsewhere(
    ray_local: None, photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One of two actors is stopped (SIGSTOP) with calls in progress: they never answer. Once they have
    run --stuck-seconds (3 here) and 10 times as long as a shard takes while the other actor's calls come
    back, the driver cancels them, kills the actor (Ray restarts it) and gives their shards to the other
    actor: the job ends with every image once and no failed shard."""
    output = tmp_path / "out"
    stopped: dict[str, float] = {}

    def stop_an_actor(progress: JobProgress) -> None:
        if not stopped and progress.shards >= 2:  # both actors hold calls: each is refilled at once
            pid = int(sorted(progress.actor_cpu)[0].split("/")[1])
            os.kill(pid, signal.SIGSTOP)
            stopped.update(pid=pid, at=time.time())

    config = JobConfig(
        str(photos),
        str(output),
        DetectorSettings(model="retinaface-mnet025"),
        2,
        1.0,
        shard_size=1,
        tuning=Tuning(stuck_seconds=3.0, stuck_factor=10.0),
    )
    try:
        with caplog.at_level(logging.WARNING, logger="facesweep"):
            result = run_job(config, on_progress=stop_an_actor, worker=TracedWorker)
    finally:
        if stopped:  # never leave a stopped process behind, whatever failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stopped["pid"]), signal.SIGCONT)
    assert stopped, "no actor was stopped"
    assert (result.images, result.failed_shards) == (PHOTOS, [])
    [warning] = [r for r in caplog.records if "stuck" in r.getMessage()]
    abandoned_after = warning.created - stopped["at"]
    print(f"abandoned {abandoned_after:.1f} s after SIGSTOP: {warning.getMessage()}")
    assert abandoned_after < 15, abandoned_after
    assert 1 <= result.redone_shards["stuck"] <= 2 and set(result.redone_shards) == {"stuck"}
    assert gone(int(stopped["pid"])), "the stopped process was not killed"
    # Every shard reported once; each redone one by a process of the other actor or the restarted one.
    this_run = json.loads((output / "_job.json").read_text())["this_run"]
    assert (this_run["shards"], this_run["failed"], this_run["redone_shards"]) == (
        PHOTOS,
        [],
        dict(result.redone_shards),
    )
    assert {index for index, _ in traced_shards(output)} == set(range(PHOTOS))
    assert_exactly_once(str(output), {str(p) for p in photos.iterdir()})


@pytest.fixture(scope="module")
def more_photos(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 images: the photos, copied under other names."""
    folder = tmp_path_factory.mktemp("more-photos")
    originals = sorted(photos.iterdir())
    for i in range(40):
        source = originals[i % len(originals)]
        shutil.copyfile(source, folder / f"{i:02d}.{source.name}")
    return folder


@pytest.mark.timeout(150)
def test_an_actor_drains_on_sigterm_and_its_shards_are_done_by_the_other(
    ray_local: None, more_photos: Path, tmp_path: Path
) -> None:
    """SIGTERM to an actor's process in the middle of a call of 16 shards (a spot node reclaimed, a pod
    evicted): its calls end after their current shard and give the rest back, the process exits, and the
    other actor does them: every shard done once, by one process, none failed."""
    output = tmp_path / "out"
    drained: list[tuple[int, float]] = []

    def drain_an_actor() -> None:
        pid = wait_for_a_call_of_several_shards(output)
        os.kill(pid, signal.SIGTERM)
        signalled = time.monotonic()
        assert gone(pid, timeout=60), "the drained process did not exit"
        drained.append((pid, time.monotonic() - signalled))

    thread = threading.Thread(target=drain_an_actor, daemon=True)
    thread.start()
    config = JobConfig(
        str(more_photos), str(output), DetectorSettings(model="retinaface-mnet025"), 2, 1.0, shard_size=1
    )
    result = run_job(config, worker=TracedWorker)
    thread.join(timeout=60)
    [(pid, exited_after)] = drained
    assert (result.images, result.failed_shards) == (40, [])
    traced = traced_shards(output)
    assert sorted(index for index, _ in traced) == list(range(40)), "a shard done twice, or never"
    by = dict(traced)
    actor_of = {int(process.split("/")[1]): process.split("/")[0] for process in result.actor_cpu}
    calls = traced_calls(output)[pid]
    given_back = [index for index in calls if by[index] != pid]
    print(f"SIGTERM: {len(given_back)} of {len(calls)} shards given back, exited after {exited_after:.1f} s")
    assert given_back and result.redone_shards == {"given_back": len(given_back)}
    assert f"redone elsewhere: {len(given_back)} shards (given back {len(given_back)})" in summary(
        result, str(output)
    )
    assert all(actor_of[by[index]] != actor_of[pid] for index in given_back), "not done by the other actor"
    this_run = json.loads((output / "_job.json").read_text())["this_run"]
    assert (this_run["shards"], this_run["failed"]) == (40, [])
    assert_exactly_once(str(output), {str(p) for p in more_photos.iterdir()})


def facesweep(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`facesweep run` with one actor, in `cwd` (where the Ray it starts runs: not the checkout)."""
    return subprocess.Popen(
        [sys.executable, "-m", "facesweep.cli", "run", *args, "--actors", "1", "--cpus-per-actor", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,  # its own process group: the driver and the Ray it started die together
    )


def wait_for_shard_line(process: subprocess.Popen[str]) -> Iterator[str]:
    for line in process.stderr:
        if line.startswith("shard "):
            yield line


def committed_files(output: Path) -> list[Path]:
    """OUTPUT's committed data files: part files and not yet compacted shard files."""
    return [*output.glob("part-*.parquet"), *output.glob("_shards/shard-*.parquet")]


def committed_images(output: Path) -> int:
    """Rows in OUTPUT's committed files (an image both in a part file and in a shard file left behind by
    its compaction counts twice)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in committed_files(output))


def committed_uris(output: Path) -> set[str]:
    """The images OUTPUT's committed files hold, each once."""
    return {
        uri for f in committed_files(output) for uri in pq.read_table(f, columns=["uri"])["uri"].to_pylist()
    }


def kill_processes_with(variable: str, timeout: float = 60.0) -> None:
    """SIGKILL to every process whose environment holds `variable` (NAME=value: a run started with it,
    and every process of the Ray it started), until none is left."""
    entry = b"\0" + variable.encode() + b"\0"
    deadline = time.monotonic() + timeout
    while pids := [
        int(proc.name) for proc in Path("/proc").iterdir() if proc.name.isdigit() and entry in _environ(proc)
    ]:
        assert time.monotonic() < deadline, f"processes with {variable} still alive: {pids}"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _environ(proc: Path) -> bytes:
    try:
        return b"\0" + (proc / "environ").read_bytes()
    except OSError:  # gone meanwhile, or not ours
        return b""


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
    first = facesweep(str(source), str(output), *options, cwd=tmp_path)
    next(wait_for_shard_line(first))
    os.killpg(first.pid, signal.SIGKILL)  # the driver's machine dies: the driver and its local Ray
    first.wait(timeout=30)
    done_before = committed_images(output)
    assert 1 <= done_before < PHOTOS
    second = facesweep(str(source), str(output), *options, cwd=tmp_path)
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
    """Killed, driver and Ray, while a compaction holds between its part file's PUT and the deletion of
    its shard files (the compaction's test hook), then re-run on an input that gained two images: the
    shard files the part holds are known as copies, every image is in OUTPUT exactly once, and only the
    new images and those not committed are done."""
    source = tmp_path / "photos"
    shutil.copytree(photos, source)
    output, held = tmp_path / "out", tmp_path / "held"
    held.mkdir()
    options = ("--shard-size", "1", "--rows-per-file", "2", "--crops")  # a compaction every two images
    hook = {HOLD_AFTER_PUT: str(held)}
    first = facesweep(str(source), str(output), *options, cwd=tmp_path, env=hook)
    deadline = time.monotonic() + 240
    while not any(held.iterdir()) and first.poll() is None:
        assert time.monotonic() < deadline, "no compaction within 240 s"
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()[1][-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # the driver's machine dies: the driver and its local Ray
    first.wait(timeout=30)
    kill_processes_with(f"{HOLD_AFTER_PUT}={held}")  # orphans too: nothing writes to OUTPUT any more
    # Each held compaction left its part file whole beside all its shard files; no reader sees a copy.
    parts = sorted(int(mark.name.removeprefix("part-")) for mark in held.iterdir())
    for number in parts:
        shards = read_footer(pq.ParquetFile(output / part_path(number))).shards
        assert len(shards) == 2 and all((output / shard_path(i)).exists() for i in shards), number
    assert not json.loads((output / "_job.json").read_text())["complete"]
    assert_exactly_once(str(output), set(), filesystem=None, at_most=True)
    committed = committed_uris(output)
    for name in ("00-late.png", "zz-late.png"):
        shutil.copy(sorted(source.iterdir())[0], source / name)
    second = facesweep(str(source), str(output), *options, cwd=tmp_path)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    resumed = int(re.search(r"resumed: (\d+) images already done", out).group(1))
    assert resumed == len(committed)  # each committed image once: the shard files' copies do not count
    assert re.search(rf"^images: {PHOTOS + 2 - resumed} ", out, re.MULTILINE), out
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
    job = facesweep("s3://flaky/in", "s3://flaky/out", "--shard-size", "2", cwd=tmp_path, env=own_s3.env())
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
import json, sys, threading
import ray, ray._private.state
from ray.cluster_utils import Cluster
from facesweep.workers.config import DetectorSettings, JobConfig
from facesweep.workers.job.driver import run_job
from tests.faults import HeldWorker, wait_until_held

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"})
workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(4)]
ray.init(address=cluster.address)
lost = {}

def lose_the_actors_nodes():
    _, held = wait_until_held(sys.argv[2])  # an actor is in the middle of shard 1
    placed = {a["Address"]["NodeID"] for a in ray._private.state.actors().values() if a["State"] == "ALIVE"}
    removed = [node for node in workers if node.node_id in placed]  # Ray says an actor lives there
    for node in removed:
        cluster.remove_node(node, allow_graceful=False)
    lost.update(held=held, placed=sorted(placed), removed=sorted(node.node_id for node in removed))

threading.Thread(target=lose_the_actors_nodes, daemon=True).start()
settings = DetectorSettings(model="retinaface-mnet025")
result = run_job(JobConfig(sys.argv[1], sys.argv[2], settings, 2, 1.0, shard_size=2), worker=HeldWorker)
lost["restarts"] = sorted(a["NumRestarts"] for a in ray._private.state.actors().values())
print("report", json.dumps({**lost, "images": result.images, "failed": result.failed_shards}))
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.cluster
def test_node_lost_mid_job(photos: Path, tmp_path: Path) -> None:
    """Both nodes that hold an actor are lost while one actor is in the middle of shard 1
    (tests/faults.py): Ray restarts both actors on the two nodes left and retries their calls, and the
    shard held on a lost node is done by a restarted actor."""
    output = tmp_path / "out"
    # The job runs in tmp_path, as its Ray does; `tests` (tests/faults.py) from the checkout.
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", NODE_LOSS_JOB, str(photos), str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=400)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, err[-3000:]
    report = json.loads(re.search(r"^report (.*)$", out, re.MULTILINE).group(1))
    assert len(report["removed"]) == 2 and report["removed"] == report["placed"], report
    assert report["held"] in report["removed"], report
    assert report["restarts"] == [1, 1], report  # each actor lost its node once
    assert (report["images"], report["failed"]) == (PHOTOS, []), report
    nodes = json.loads((output / "_job.json").read_text())["this_run"]["nodes"]
    # The restarted actors did shards on nodes where no actor was started; every shard was done once.
    assert sum(n["shards"] for n in nodes.values() if n["actors"] == 0) >= 1, nodes
    assert sum(n["shards"] for n in nodes.values()) == PHOTOS // 2, nodes
    assert_exactly_once(str(output), {str(p) for p in photos.iterdir()})
