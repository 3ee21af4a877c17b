"""OUTPUT's lease on a local OUTPUT (no Ray): taken by an exclusive create under an flock of the folder,
refused while live, taken over once stale, renewed, given back only by its holder. The same scenarios run
against SeaweedFS and Azurite in tests/integration/test_lease.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from facesweep.workers.output.layout import LEASE_FILE, parse
from facesweep.workers.output.lease import OutputInUseError, OutputLease, _pid_namespace
from tests import leases


@pytest.fixture
def output(tmp_path: Path) -> str:
    return str(tmp_path / "out")  # not there yet: taking the lease makes it


def test_conditional_writes(output: str) -> None:
    leases.conditional_writes_are_conditional_and_counted(output)


def test_a_live_lease_refuses_the_second_job(output: str) -> None:
    leases.a_live_lease_refuses_the_second_job(output)


def test_an_expired_lease_is_taken_over(output: str) -> None:
    leases.an_expired_lease_is_taken_over(output)


def test_one_of_concurrent_takers_wins(output: str) -> None:
    leases.one_of_concurrent_takers_wins(output, rounds=20)


def test_release_deletes_only_its_own_lease(output: str) -> None:
    leases.release_deletes_only_its_own_lease(output)


def test_heartbeats_renew_and_find_a_takeover(output: str) -> None:
    leases.heartbeats_renew_and_find_a_takeover(output)


def this_host(pid: int) -> bytes:
    """A live lease (55 s left) of process `pid` on this host, in this PID namespace."""
    lease = json.loads(leases.lease_of(host=socket.gethostname(), pid=pid))
    return json.dumps({**lease, "pid_namespace": _pid_namespace()}).encode()


def test_a_live_lease_of_a_process_of_this_host_that_is_gone_is_taken_over_at_once(output: str) -> None:
    """What a driver killed with SIGKILL leaves: its re-run on the same host need not wait for the TTL."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    leases.put_lease(output, this_host(int(gone.stdout)))
    with OutputLease(output) as lease:
        assert leases.stored(output)["token"] == lease.token
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            leases.put_lease(output, this_host(alive.pid))
            with pytest.raises(OutputInUseError, match=rf"\(host {socket.gethostname()}, pid {alive.pid}, "):
                OutputLease(output).acquire()
        finally:
            alive.kill()


def test_a_lease_this_process_left_is_taken_over(output: str) -> None:
    """A live lease of this very process that none of its OutputLease objects holds (a release that
    failed) is a leftover; one it holds refuses (the first scenario)."""
    leases.put_lease(output, this_host(os.getpid()))
    with OutputLease(output) as lease:
        assert leases.stored(output)["token"] == lease.token


@pytest.mark.parametrize("data", [b"", b"not a lease", b'{"host": "h"}', leases.lease_of()[:40]])
def test_an_unreadable_lease_is_taken_over(output: str, data: bytes) -> None:
    leases.put_lease(output, data)
    with OutputLease(output) as lease:
        assert leases.stored(output)["token"] == lease.token


def test_the_lease_is_none_of_facesweeps_data_files() -> None:
    """Readers skip it (a `_` name) and --overwrite, which removes what `parse` names, keeps it."""
    assert LEASE_FILE.startswith("_") and parse(LEASE_FILE) is None
