"""A throttled prefix (issue 26, item 2): through infra/fault_proxy.py limiting a prefix to LIMIT requests/s
(the excess answered `503 SlowDown`, as S3 does), the project's S3 client slows down to what the prefix
takes and keeps taking it: no failed request, and at least 0.8 of the limit once it has found it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from facesweep.workers.storage import _store, request_counts, storage_for
from infra.fault_proxy import FaultProxy, Weather
from infra.local_s3 import LocalS3

BUCKET = "paced"
LIMIT = 40.0
"""Requests/s the proxy lets through to the prefix."""
THREADS = 16
SECONDS = 16.0
SETTLED = 6.0
"""Seconds after which the rate is judged: the pacer has found the limit by then."""


@pytest.fixture(scope="module")
def objects(local_s3: LocalS3) -> None:
    client = local_s3.client()
    client.create_bucket(Bucket=BUCKET)
    for i in range(THREADS):
        client.put_object(Bucket=BUCKET, Key=f"photos/{i:02d}", Body=b"x" * 1024)


@pytest.fixture
def proxy(
    objects: None, s3_env: LocalS3, local_s3: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultProxy]:
    """The proxy in front of the session's SeaweedFS, in fair weather, AWS_ENDPOINT_URL pointing at it."""
    with FaultProxy(local_s3.endpoint_url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        _store.cache_clear()
        yield proxy
    _store.cache_clear()


def fetch_for(seconds: float) -> list[float]:
    """THREADS threads GET their object as fast as they can for `seconds`: when each GET returned."""
    storage, started = storage_for(f"s3://{BUCKET}/"), time.monotonic()

    def fetch_until_the_end(thread: int) -> list[float]:
        done = []
        while time.monotonic() - started < seconds:
            assert storage.get(f"s3://{BUCKET}/photos/{thread:02d}") == b"x" * 1024
            done.append(time.monotonic() - started)
        return done

    with ThreadPoolExecutor(THREADS) as pool:
        return [t for times in pool.map(fetch_until_the_end, range(THREADS)) for t in times]


def test_a_throttled_prefix_is_paced_to_its_limit(proxy: FaultProxy) -> None:
    proxy.weather = throttled = Weather(prefix_rate_limit=LIMIT, aim=f"^GET /{BUCKET}/")
    before = request_counts()
    finished = fetch_for(SECONDS)
    throttled_answers = request_counts()["THROTTLED"] - before["THROTTLED"]
    settled = sum(t >= SETTLED for t in finished) / (SECONDS - SETTLED)
    assert proxy.weather == throttled and proxy.counts()["rate_limited"] == throttled_answers > 0
    assert settled >= 0.8 * LIMIT, f"{settled:.1f} requests/s of {LIMIT:g} once settled"
    rate = storage_for(f"s3://{BUCKET}/").pacer(BUCKET).rate
    assert rate is not None and rate < 2 * LIMIT, rate
    # Paced, a throttled prefix costs a few retries a second, not one per request at full speed.
    assert throttled_answers < 0.25 * len(finished), (throttled_answers, len(finished))


def test_scattered_slowdowns_are_retried_without_slowing_the_client(proxy: FaultProxy) -> None:
    """3 % of the GETs answered `503 SlowDown` at random, not a prefix over its limit: each retried at
    once, and the client keeps its speed (botocore's adaptive mode would cut it at each)."""
    proxy.weather = Weather(slowdown=0.03, aim=f"^GET /{BUCKET}/", seed=3)
    before = request_counts()
    finished = fetch_for(5.0)
    throttled_answers = request_counts()["THROTTLED"] - before["THROTTLED"]
    assert proxy.counts()["slowdown"] == throttled_answers > 0
    assert storage_for(f"s3://{BUCKET}/").pacer(BUCKET).rate is None, "never paced"
    assert len(finished) > 20 * throttled_answers
