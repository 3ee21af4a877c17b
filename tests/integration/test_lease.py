"""OUTPUT's lease on the real stores: SeaweedFS (S3 `If-None-Match: *` and `If-Match`, which it honours:
of 8 simultaneous conditional PUTs exactly one succeeds) and Azurite (Azure's same headers). The
scenarios are tests/leases.py's, which tests/unit/test_lease.py runs on a local OUTPUT."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from infra.azurite import Azurite
from infra.local_s3 import LocalS3
from tests import leases

BUCKET = "lease"

SCENARIOS = [
    leases.conditional_writes_are_conditional_and_counted,
    leases.a_live_lease_refuses_the_second_job,
    leases.an_expired_lease_is_taken_over,
    leases.one_of_concurrent_takers_wins,
    leases.release_deletes_only_its_own_lease,
    leases.heartbeats_renew_and_find_a_takeover,
]


@pytest.fixture
def s3_output(s3_env: LocalS3) -> str:
    client = s3_env.client()
    if BUCKET not in {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/out"


@pytest.fixture
def az_output(az_env: Azurite) -> str:
    containers = az_env.client()
    if not containers.get_container_client(BUCKET).exists():
        containers.create_container(BUCKET)
    return f"az://{BUCKET}/{uuid.uuid4().hex[:8]}/out"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_on_seaweedfs(s3_output: str, scenario: Callable[[str], None]) -> None:
    scenario(s3_output)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_on_azurite(az_output: str, scenario: Callable[[str], None]) -> None:
    scenario(az_output)
