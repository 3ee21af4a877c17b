"""Faults as the cloud makes them (issue 26): the project's S3 client, and a real job, through
infra/fault_proxy.py in front of the session's SeaweedFS. Each fault the proxy injects costs the client one
retry (workers/storage/pacing.py; every attempt counted, the retries also as RETRIED or THROTTLED) and
never a wrong byte; a stalled response costs the request timeout, then a retry; a conditional PUT whose
connection is reset is retried too (obstore alone does not)."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from facesweep.workers.config import DEFAULT_MODEL, DetectorSettings, JobConfig
from facesweep.workers.job.actor import ShardWorker
from facesweep.workers.job.driver import run_job
from facesweep.workers.storage import _store, request_counts, storage_for
from facesweep.workers.storage import base as storage_base
from infra.demo import WIDER_SUBSET
from infra.fault_proxy import FAULTS, FaultProxy, Weather
from infra.local_s3 import LocalS3
from tests.outputs import read_rows

BUCKET = "weather"
OBJECTS = 50
SEED = 156
"""A seed whose draws give every test here a few faults of each kind it sets."""
MODERATE = Weather(
    latency_ms=30, slowdown=0.03, internal=0.01, reset_before=0.01, cut_body=0.005, aim=".", seed=79
)
"""The job's weather: every request pays 30 ms and may fail (seed 79 cuts one image's body, and answers
another's GET with a 500 and a third's with a 503)."""
JOB_PHOTOS = 16


@pytest.fixture(scope="module")
def proxy(local_s3: LocalS3) -> Iterator[FaultProxy]:
    with FaultProxy(local_s3.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def proxied(s3_env: LocalS3, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The proxy in fair weather, reset, AWS_ENDPOINT_URL pointing at it, and this process's storage
    clients made afresh (before and after), so they read the endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    proxy.weather = Weather()
    proxy.reset()
    _store.cache_clear()
    yield proxy
    proxy.weather = Weather()
    _store.cache_clear()


@pytest.fixture(scope="module")
def objects(local_s3: LocalS3) -> dict[str, bytes]:
    """OBJECTS objects of about 64 KiB in s3://weather/objects/, by URI, put straight into the store."""
    client = local_s3.client()
    client.create_bucket(Bucket=BUCKET)
    found = {}
    for i in range(OBJECTS):
        data = os.urandom(64 * 1024 + i)
        client.put_object(Bucket=BUCKET, Key=f"objects/{i:03d}", Body=data)
        found[f"s3://{BUCKET}/objects/{i:03d}"] = data
    return found


def fair_after_the_first_fault(proxy: FaultProxy) -> None:
    """Turns the proxy's weather fair, aimed as it is, once it has injected a fault (from a thread)."""

    def watch() -> None:
        while not any(proxy.counts()[fault] for fault in FAULTS):
            time.sleep(0.005)
        proxy.weather = Weather(aim=proxy.weather.aim)

    threading.Thread(target=watch, daemon=True).start()


@pytest.mark.parametrize("fault", ["slowdown", "internal", "reset_before", "reset_during", "cut_body"])
def test_gets_through_3_percent_of_a_fault_are_retried_to_the_right_bytes(
    proxied: FaultProxy, objects: dict[str, bytes], fault: str
) -> None:
    storage = storage_for(f"s3://{BUCKET}/")
    proxied.weather = Weather(**{fault: 0.03}, seed=SEED)
    before = request_counts()
    for uri, data in objects.items():
        assert storage.get(uri) == data
        assert storage.get_range(uri, 1000, 5000) == data[1000:6000]
    counts, after = proxied.counts(), request_counts()
    assert counts[fault] >= 3, counts
    assert counts["aimed"] == 2 * OBJECTS + counts[fault], counts  # each fault cost one retry, no more
    assert after["GET"] - before["GET"] == counts["aimed"]  # every attempt is counted
    retried = "THROTTLED" if fault == "slowdown" else "RETRIED"
    assert after[retried] - before[retried] == counts[fault]


def test_puts_and_heads_through_errors_and_resets_are_retried(
    proxied: FaultProxy, local_s3: LocalS3, objects: dict[str, bytes]
) -> None:
    storage = storage_for(f"s3://{BUCKET}/")
    proxied.weather = Weather(
        slowdown=0.05, internal=0.05, reset_before=0.05, aim=f"^(PUT|HEAD) /{BUCKET}/", seed=SEED
    )
    written = {f"s3://{BUCKET}/written/{i:02d}": os.urandom(10_000 + i) for i in range(15)}
    for uri, data in written.items():
        storage.put(uri, data)
        assert storage.head(uri).size == len(data)
    counts = proxied.counts()
    assert min(counts["slowdown"], counts["internal"], counts["reset_before"]) >= 1, counts
    assert counts["aimed"] == 2 * len(written) + sum(counts[fault] for fault in FAULTS), counts
    client = local_s3.client()
    for uri, data in written.items():
        assert client.get_object(Bucket=BUCKET, Key=uri.split("/", 3)[3])["Body"].read() == data


@pytest.mark.parametrize("fault", ["slowdown", "internal"])
def test_a_conditional_put_answered_with_an_error_is_retried(proxied: FaultProxy, fault: str) -> None:
    storage = storage_for(f"s3://{BUCKET}/")
    proxied.weather = Weather(**{fault: 1.0}, aim=f"^PUT /{BUCKET}/lease-{fault}")
    fair_after_the_first_fault(proxied)
    before = request_counts()
    assert storage.create(f"s3://{BUCKET}/lease-{fault}", b"mine") is not None
    counts, after = proxied.counts(), request_counts()
    retried = "THROTTLED" if fault == "slowdown" else "RETRIED"
    assert counts["aimed"] == counts[fault] + 1 == after["PUT"] - before["PUT"] >= 2, counts
    assert after[retried] - before[retried] == counts[fault]


def test_a_conditional_put_whose_connection_is_reset_is_retried(proxied: FaultProxy) -> None:
    """obstore never retries a conditional PUT after a connection error (it cannot know whether the first
    landed); facesweep's retry does, and a create whose first attempt landed reads as taken (the lease then
    finds its own token)."""
    storage = storage_for(f"s3://{BUCKET}/")
    proxied.weather = Weather(reset_before=1.0, aim=f"^PUT /{BUCKET}/lease-reset")
    fair_after_the_first_fault(proxied)
    assert storage.create(f"s3://{BUCKET}/lease-reset", b"mine") is not None
    assert proxied.counts()["reset_before"] >= 1


def test_a_prefix_over_its_request_rate_gets_slowdowns_until_its_tokens_come_back(
    proxied: FaultProxy, objects: dict[str, bytes]
) -> None:
    """20 requests/s per bucket and first key segment: 50 GETs at once on one prefix take 1.5 s (a burst
    of 20, then 20 a second), their excess answered `503 SlowDown` and retried; another prefix has its
    own tokens."""
    storage = storage_for(f"s3://{BUCKET}/")
    proxied.weather = Weather(prefix_rate_limit=20)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(storage.get, objects)) == list(objects.values())
    elapsed, counts = time.monotonic() - started, proxied.counts()
    assert elapsed > 1.4 and counts["rate_limited"] >= 1, (elapsed, counts)
    assert counts["aimed"] == OBJECTS + counts["rate_limited"], counts
    storage.put(f"s3://{BUCKET}/elsewhere/one", b"x")  # PUTs are not aimed
    assert storage.get(f"s3://{BUCKET}/elsewhere/one") == b"x"
    assert proxied.counts()["rate_limited"] == counts["rate_limited"]


def test_the_same_seed_injects_the_same_faults_and_the_counts_are_served(
    local_s3: LocalS3, s3_env: LocalS3, objects: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    weather = Weather(slowdown=0.05, reset_during=0.05, cut_body=0.05, seed=SEED)
    runs = []
    for _ in range(2):
        with FaultProxy(local_s3.endpoint_url, weather) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
            _store.cache_clear()
            storage = storage_for(f"s3://{BUCKET}/")
            for uri in list(objects)[:20]:
                storage.get(uri)
            with urllib.request.urlopen(f"{proxy.endpoint}/_weather") as answer:
                served = json.load(answer)
            assert served == {"weather": dataclasses.asdict(weather), "counts": proxy.counts()}
            runs.append(proxy.counts())
    _store.cache_clear()
    assert runs[0] == runs[1] and min(runs[0][f] for f in ("slowdown", "reset_during", "cut_body")) >= 1, runs


def test_a_stalled_response_is_given_up_after_the_read_timeout_then_retried(
    proxied: FaultProxy, objects: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first GET's response is held for a minute: the client gives it up once no byte has come for
    its read timeout (30 s, scaled down here to 2 s: workers/storage/base.py TIMEOUTS) and facesweep's
    retry, in fair weather, gets the bytes."""
    monkeypatch.setitem(storage_base.TIMEOUTS, "read_timeout", "2s")
    storage = storage_for(f"s3://{BUCKET}/")  # made after the change: the fixture cleared the clients
    uri = next(iter(objects))
    proxied.weather = Weather(stall=1.0)  # stall_s: 60
    fair_after_the_first_fault(proxied)
    started = time.monotonic()
    assert storage.get(uri) == objects[uri]
    elapsed = time.monotonic() - started
    assert 2 <= elapsed < 15, elapsed
    assert proxied.counts()["aimed"] == 2


def proxied_worker(endpoint: str) -> type[ShardWorker]:
    """ShardWorker whose process sends its store requests to `endpoint` (the session's Ray was started
    pointing straight at the store)."""

    class ProxiedWorker(ShardWorker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            _store.cache_clear()  # a reused worker process may hold a client for the store itself
            super().__init__(*args, **kwargs)

    return ProxiedWorker


@pytest.mark.slow
@pytest.mark.skipif(not WIDER_SUBSET.is_dir(), reason="needs ../shared's WIDER FACE photos")
def test_a_job_through_moderate_weather_does_every_image_once(
    ray_local: None, proxied: FaultProxy, local_s3: LocalS3
) -> None:
    """WIDER photos in, Parquet out, every request of the driver and the actor through 30 ms of latency,
    3% 503s, 1% 500s, 1% resets and 0.5% cut bodies (the compaction tasks, in Ray's pooled workers
    started before the proxy, go straight to the store): every image once, no error row, no failed shard."""
    client = local_s3.client()
    client.create_bucket(Bucket="weather-job")
    uris = []
    for path in sorted(WIDER_SUBSET.rglob("*.jpg"))[:JOB_PHOTOS]:
        client.upload_file(str(path), "weather-job", f"in/{path.name}")
        uris.append(f"s3://weather-job/in/{path.name}")
    proxied.weather = MODERATE
    settings = DetectorSettings(model=DEFAULT_MODEL)
    config = JobConfig("s3://weather-job/in", "s3://weather-job/out", settings, 1, 1.0, shard_size=2)
    result = run_job(config, worker=proxied_worker(proxied.endpoint))
    assert (result.images, result.errors, result.failed_shards) == (JOB_PHOTOS, 0, [])
    rows = read_rows("weather-job/out", local_s3.arrow_filesystem())
    assert sorted(rows) == sorted(uris)
    assert all(row["error"] is None for row in rows.values())
    counts = proxied.counts()
    injected = sum(counts[fault] for fault in FAULTS)
    assert min(counts["slowdown"], counts["internal"], counts["cut_body"]) >= 1, counts
    actor = sum(sum(kinds.values()) for kinds in result.actor_requests.values())
    assert counts["requests"] - injected > actor, (counts, result.requests)  # the driver's too
