"""The reachability probe: a process's first request to a store refuses an endpoint where nothing answers
at once; a job's workers, whose driver already found the store, skip it and retry through an outage."""

from __future__ import annotations

import socket

import pytest

from facesweep.workers.storage import StorageError, base, trust_the_endpoints
from facesweep.workers.storage.s3 import S3Storage


@pytest.fixture
def nothing_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setattr(base, "_PROBING", [True])  # this process's setting, restored after the test


def test_the_first_request_probes_and_names_the_endpoint(nothing_answers: None) -> None:
    with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:"):
        S3Storage()._session()


def test_workers_trust_the_drivers_check_and_send_no_probe(nothing_answers: None) -> None:
    trust_the_endpoints()
    before = base.request_counts()["LIST"]
    S3Storage()._session()  # no request: the first real one retries through the outage instead
    assert base.request_counts()["LIST"] == before
