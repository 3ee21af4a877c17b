"""OUTPUT's lease (workers/output/lease.py) the same way on every store: each function is one scenario
for an OUTPUT (a local path, s3:// or az://), and `lease_of` writes a lease as another job would."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from facesweep.workers.output.layout import LEASE_FILE
from facesweep.workers.output.lease import LeaseLostError, OutputInUseError, OutputLease
from facesweep.workers.storage import MissingObjectError, join, request_counts, storage_for

STARTED = "2026-12-05T00:12:00+00:00"


def lease_of(
    host: str = "render-7", pid: int = 4242, token: str = "theirs", beat_ago: float = 5.0, ttl: float = 60.0
) -> bytes:
    """A lease as another job writes it: its last heartbeat `beat_ago` s ago, expiring `ttl` s after it
    (so expired when `beat_ago` > `ttl`)."""
    beat = datetime.now(UTC) - timedelta(seconds=beat_ago)
    lease = {
        "host": host,
        "pid": pid,
        "pid_namespace": "pid:[1]",
        "token": token,
        "started_at": STARTED,
        "heartbeat_at": beat.isoformat(timespec="milliseconds"),
        "expires_at": (beat + timedelta(seconds=ttl)).isoformat(timespec="milliseconds"),
    }
    return json.dumps(lease).encode()


def stored(output: str) -> dict | None:
    """OUTPUT's lease as stored, None when there is none."""
    try:
        return json.loads(storage_for(output).get_versioned(join(output, LEASE_FILE))[0])
    except MissingObjectError:
        return None


def put_lease(output: str, data: bytes) -> None:
    storage_for(output).put(join(output, LEASE_FILE), data)


def conditional_writes_are_conditional_and_counted(output: str) -> None:
    """create writes only where nothing is, replace only over the version it names; each one request."""
    storage, uri = storage_for(output), join(output, "conditional.json")
    storage.make_folder(output)
    assert not storage.exists(uri)  # the store's first requests (region, probe) are behind us
    before = request_counts()
    first = storage.create(uri, b"one")
    assert first and storage.create(uri, b"two") is None
    assert storage.get_versioned(uri) == (b"one", first)
    second = storage.replace(uri, b"three", first)
    assert second and second != first
    assert storage.replace(uri, b"four", first) is None  # a stale version changes nothing
    assert storage.get(uri) == b"three"
    storage.delete([uri])
    assert storage.replace(uri, b"five", second) is None and not storage.exists(uri)  # nor on nothing
    after = request_counts()
    made = {k: after[k] - before[k] for k in after}
    assert made == {"LIST": 0, "GET": 2, "PUT": 5, "HEAD": 1, "DELETE": 1, "THROTTLED": 0, "RETRIED": 0}


def a_live_lease_refuses_the_second_job(output: str) -> None:
    """One line naming the holder; the refused job changes nothing; the holder's release removes it."""
    with OutputLease(output) as first:
        held = stored(output)
        assert held is not None and held["token"] == first.token
        with pytest.raises(OutputInUseError) as refused:
            OutputLease(output).acquire()
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith(f"OUTPUT {output} is in use by another facesweep job (host ")
        assert f"host {socket.gethostname()}, pid {os.getpid()}, started {first.started_at}," in message
        assert stored(output) == held
    assert stored(output) is None

    put_lease(output, theirs := lease_of())  # another machine's job, alive
    with pytest.raises(OutputInUseError) as refused:
        OutputLease(output).acquire()
    said = re.fullmatch(
        rf"OUTPUT {re.escape(output)} is in use by another facesweep job \(host render-7, pid 4242, started "
        rf"{re.escape(STARTED)}, last heartbeat (\d+) s ago\): wait for it, or remove "
        rf"{re.escape(join(output, LEASE_FILE))} if that job is gone \(without a heartbeat its lease "
        r"expires in (\d+) s\)",
        str(refused.value),
    )
    assert said, str(refused.value)
    assert 5 <= int(said[1]) <= 7 and 53 <= int(said[2]) <= 55  # the seconds since the lease was written
    assert storage_for(output).get_versioned(join(output, LEASE_FILE))[0] == theirs
    storage_for(output).delete([join(output, LEASE_FILE)])


def an_expired_lease_is_taken_over(output: str) -> None:
    put_lease(output, lease_of(beat_ago=61))
    with OutputLease(output) as lease:
        assert stored(output)["token"] == lease.token
    assert stored(output) is None


def one_of_concurrent_takers_wins(output: str, takers: int = 8, rounds: int = 5) -> None:
    """Jobs taking over one expired lease at the same moment: exactly one holds it, the others are refused."""
    for _ in range(rounds):
        put_lease(output, lease_of(beat_ago=61))
        holders, refused = race([OutputLease(output) for _ in range(takers)])
        assert len(holders) == 1 and len(refused) == takers - 1, (holders, refused)
        assert stored(output)["token"] == holders[0].token
        holders[0].release()
        assert stored(output) is None


def race(leases: list[OutputLease]) -> tuple[list[OutputLease], list[OutputInUseError]]:
    """Every lease acquired at once, each in its thread: those that hold it, and the refusals."""
    start, holders, refused = threading.Barrier(len(leases)), [], []

    def take(lease: OutputLease) -> None:
        start.wait()
        try:
            lease.acquire()
            holders.append(lease)
        except OutputInUseError as error:
            refused.append(error)

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return holders, refused


def release_deletes_only_its_own_lease(output: str) -> None:
    lease = OutputLease(output)
    lease.acquire()
    put_lease(output, theirs := lease_of())  # as if another job had taken it over
    lease.release()
    assert storage_for(output).get_versioned(join(output, LEASE_FILE))[0] == theirs
    storage_for(output).delete([join(output, LEASE_FILE)])


def heartbeats_renew_and_find_a_takeover(output: str) -> None:
    """A lease renewed every TTL/4; once another job has taken it, `check` says so and release leaves
    the taker's lease."""
    lease = OutputLease(output, ttl=0.8)
    lease.acquire()
    first = stored(output)["expires_at"]
    wait_for(lambda: stored(output)["expires_at"] != first, "a heartbeat")
    lease.check()
    put_lease(output, theirs := lease_of())
    wait_for(lambda: lease_lost(lease), "the heartbeat to find the lease taken")
    with pytest.raises(LeaseLostError, match=r"taken by another job while this one ran \(host render-7, "):
        lease.check()
    lease.release()
    assert storage_for(output).get_versioned(join(output, LEASE_FILE))[0] == theirs
    storage_for(output).delete([join(output, LEASE_FILE)])


def lease_lost(lease: OutputLease) -> bool:
    try:
        lease.check()
    except LeaseLostError:
        return True
    return False


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.05)
