"""Every store request has a timeout (workers/storage/base.py, TIMEOUTS): a request that gets no byte for
READ_TIMEOUT_S is given up, one whose bytes keep coming may take REQUEST_TIMEOUT_S. Scaled down here to a
1 s read timeout: a GET stalled by infra/fault_proxy.py fails its work as a store that is down does, and a
body that stalls half-way is cut, while a slow one that keeps coming is read whole."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import obstore
import pytest
from obstore.store import HTTPStore

from facesweep.workers.storage import ObjectError, S3Storage, StorageError, pacing
from facesweep.workers.storage import base as storage_base
from infra.fault_proxy import FaultProxy, Weather
from infra.local_s3 import LocalS3

READ_TIMEOUT = 1.0
BODY = 1024 * 1024


@pytest.fixture
def one_second_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients made from now on give up a request after 1 s without a byte, and facesweep's own retries
    after 3 s, so a store that stays stalled fails in seconds."""
    monkeypatch.setitem(storage_base.TIMEOUTS, "read_timeout", f"{READ_TIMEOUT:g}s")
    monkeypatch.setattr(pacing, "RETRY_BUDGET", 3.0)


def test_a_stalled_get_fails_its_work_within_the_timeouts(
    s3_env: LocalS3, one_second_reads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every GET through the proxy answers nothing for a minute: each attempt is given up after the read
    timeout, and once the retries are spent the GET raises a StorageError (the store's failure: the shard
    fails and a re-run redoes it), never an ObjectError (which would make the image an error row)."""
    client = s3_env.client()
    client.create_bucket(Bucket="stalled")
    client.put_object(Bucket="stalled", Key="photo.jpg", Body=b"x" * 1000)
    with FaultProxy(s3_env.endpoint_url, Weather(stall=1.0, stall_s=60.0)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        started = time.monotonic()
        with pytest.raises(StorageError) as failure:
            S3Storage().get("s3://stalled/photo.jpg")
        elapsed = time.monotonic() - started
        stalls = proxy.counts()["stall"]
    print(f"a stalled GET failed after {elapsed:.1f} s, {stalls} attempts: {failure.value}")
    assert not isinstance(failure.value, ObjectError)
    assert READ_TIMEOUT <= elapsed < 20 and stalls >= 1, (elapsed, stalls)


class _Server:
    """A loopback HTTP server answering every GET with BODY bytes in 16 pieces, `pause` seconds apart,
    or holding the rest after the first half (`pause` None) until the test ends."""

    def __init__(self, pause: float | None) -> None:
        self.pause, self.done = pause, threading.Event()
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            try:
                while b"\r\n\r\n" not in connection.recv(65536):
                    pass
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BODY)
                piece = BODY // 16
                for i in range(16):
                    if self.pause is None and i == 8:
                        self.done.wait()
                        return
                    connection.sendall(b"x" * piece)
                    time.sleep(self.pause or 0)
            except OSError:
                return

    def close(self) -> None:
        self.done.set()
        self.socket.close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    served = _Server(request.param)
    yield served
    served.close()


def read_with_facesweeps_timeouts(url: str) -> bytes:
    store = HTTPStore.from_url(
        url,
        client_options={"allow_http": True, **storage_base.TIMEOUTS},
        retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=1)},
    )
    return bytes(obstore.get(store, "object").bytes())


@pytest.mark.parametrize("server", [0.25], indirect=True)
def test_a_slow_body_that_keeps_coming_is_read_whole(one_second_reads: None, server: _Server) -> None:
    """4 s of body in pieces 0.25 s apart, with a 1 s read timeout: read whole (obstore's default, one
    timeout for the whole request, cut a 64 MiB container piece below 2.2 MB/s)."""
    started = time.monotonic()
    assert len(read_with_facesweeps_timeouts(server.url)) == BODY
    assert time.monotonic() - started > 3.5


@pytest.mark.parametrize("server", [None], indirect=True)
def test_a_body_stalled_half_way_is_cut_after_the_read_timeout(
    one_second_reads: None, server: _Server
) -> None:
    started = time.monotonic()
    with pytest.raises(Exception, match="body error"):
        read_with_facesweeps_timeouts(server.url)
    elapsed = time.monotonic() - started
    assert READ_TIMEOUT <= elapsed < READ_TIMEOUT + 2, elapsed
