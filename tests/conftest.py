"""Shared pytest fixtures: a real local S3 server (SeaweedFS), an AWS environment pointing at it, a real
local Azure Blob Storage (Azurite), one local Ray, and one small real job's output for the tests of what
reads outputs."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.azurite import Azurite, find_azurite, start_azurite
from infra.local_s3 import LocalS3, start_local_s3
from tests.paths import ROOT

# Telemetry opt-outs, set at import time so they are in place before any test imports ray or openvino
# (so this file must not import them at module level) and are inherited by processes tests start.
# setdefault: an explicit setting wins.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# openvino_telemetry 2025.2 honours no OPENVINO_TELEMETRY* variable: its only environment switch is
# CI=true (also TF_BUILD / JENKINS_URL), which turns it off for callers passing disable_in_ci=True, as
# openvino.convert_model/ovc do. (Side effect: pytest prints untruncated assertion diffs.)
os.environ.setdefault("CI", "true")

# Variables that would make boto3 sign requests with something other than the local server's keys.
_CONFLICTING_AWS_VARS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

# Files that are not a test's doing: tools' own (Python, pytest, Hypothesis, ruff, pip, npm) and sources,
# which people may be adding to the checkout while a session runs (tests write data: Parquet, JSON, images).
_NOT_THE_SUITES = re.compile(
    r"(^|/)(__pycache__|\.pytest_cache|\.hypothesis|\.ruff_cache|\.venv|\.cache|node_modules|[^/]+\.egg-info)/"
    r"|\.(py|md)$"
)


def checkout_files() -> set[str] | None:
    """The checkout's untracked and ignored files (`git status`) of kinds the suite could write; None when
    the checkout is not the top of a git work tree."""
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != ROOT:
        return None
    listed = subprocess.run(
        ["git", "status", "--porcelain", "-z", "--untracked-files=all", "--ignored"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    paths = {entry[3:] for entry in listed.split("\0") if entry[:3] in ("?? ", "!! ")}
    return {path for path in paths if not _NOT_THE_SUITES.search(path)}


@pytest.fixture(scope="session", autouse=True)
def checkout_untouched() -> Iterator[None]:
    """Fails the session (at its last teardown) when a file appeared in the checkout while it ran: a
    test, or a process it started (Ray's workers included), resolved a relative path there. Files that
    were there when the session started never count."""
    before = checkout_files()
    yield
    if before is not None:
        new = sorted((checkout_files() or set()) - before)
        assert not new, f"the tests wrote {len(new)} files into the checkout {ROOT}: {new[:10]}"


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """A local S3 server shared by the whole test session (random credentials, own data dir)."""
    with start_local_s3(tmp_path_factory.mktemp("local_s3")) as server:
        yield server


@pytest.fixture
def s3_env(local_s3: LocalS3, monkeypatch: pytest.MonkeyPatch) -> LocalS3:
    """The session's local S3 server, with AWS_* environment variables pointing at it for this test."""
    for name in _CONFLICTING_AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in local_s3.env().items():
        monkeypatch.setenv(name, value)
    return local_s3


@pytest.fixture(scope="session")
def azurite_if_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite | None]:
    """A local Azure Blob Storage (Azurite) shared by the whole test session (a random account key, own
    data dir), None where `make setup` has not installed it. Ray's workers get its connection string at
    start, so it starts with the session's Ray."""
    try:
        find_azurite()
    except FileNotFoundError:
        yield None
        return
    with start_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture(scope="session")
def azurite(azurite_if_installed: Azurite | None) -> Azurite:
    """The session's Azurite; a test that needs it is skipped where it is not installed."""
    if azurite_if_installed is None:
        pytest.skip("Azurite is not installed: run `make setup` (npm installs it into .cache/azurite)")
    return azurite_if_installed


@pytest.fixture
def az_env(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Azurite:
    """The session's Azurite, with AZURE_STORAGE_CONNECTION_STRING pointing at it for this test."""
    for name, value in azurite.env().items():
        monkeypatch.setenv(name, value)
    return azurite


@pytest.fixture(scope="session")
def ray_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working directory of the session's Ray: its actors and tasks resolve relative paths here."""
    return tmp_path_factory.mktemp("ray-workdir")


@pytest.fixture(scope="session")
def ray_local(local_s3: LocalS3, azurite_if_installed: Azurite | None, ray_workdir: Path) -> Iterator[None]:
    """One local, loopback-only Ray for the session; its workers see the local S3 server's AWS_* vars (and
    Azurite's connection string) and run in `ray_workdir`, not in the directory pytest runs in (the
    checkout)."""
    import ray

    os.environ.update(local_s3.env())
    if azurite_if_installed is not None:
        os.environ.update(azurite_if_installed.env())
    here = Path.cwd()
    os.chdir(ray_workdir)  # Ray's processes keep the working directory ray.init was called in
    try:
        ray.init(
            address="local",  # never a cluster another process started on this machine
            num_cpus=2,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            object_store_memory=100 * 1024 * 1024,
            logging_level="WARNING",
        )
    finally:
        os.chdir(here)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def output(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real job's local output over the sample photos, a broken JPEG and, with ../shared, a few WIDER
    photos (`tests/outputs.py`); read-only for the tests that share it."""
    from tests.outputs import photo_folder, run_small_job

    photos = photo_folder(tmp_path_factory.mktemp("small-job-photos"))
    output = tmp_path_factory.mktemp("small-job-output")
    run_small_job(str(photos), str(output))
    return output
