"""Shared pytest fixtures: a real local S3 server (SeaweedFS), an AWS environment pointing at it, one local
Ray, and one small real job's output for the tests of what reads outputs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local_s3 import LocalS3, start_local_s3

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
def ray_local(local_s3: LocalS3) -> Iterator[None]:
    """One local, loopback-only Ray for the session; its workers see the local S3 server's AWS_* vars."""
    import ray

    os.environ.update(local_s3.env())
    ray.init(
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        object_store_memory=100 * 1024 * 1024,
        logging_level="WARNING",
    )
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
