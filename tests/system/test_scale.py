"""`make scale` in small: the product's driver, ledger, sink and compaction with benchmarks/scale.py's
simulated actors, every request through the latency proxy; a re-run after a lost part file on an input
that gained 1% finds exactly the missing and the new images."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from benchmarks.scale import BUCKET, Bench, latency_proxy
from facesweep.workers.output.lease import HEARTBEATS_PER_TTL, TTL_SECONDS
from infra.local_s3 import LocalS3

pytestmark = pytest.mark.slow
IMAGES = 3000
ROWS = 1000
HEARTBEAT_SECONDS = TTL_SECONDS / HEARTBEATS_PER_TTL


def test_simulated_job_through_the_latency_proxy(local_s3: LocalS3, tmp_path: Path) -> None:
    with latency_proxy(local_s3, 5.0) as proxied:
        bench = Bench(local_s3, proxied, tmp_path)
        bench.client.create_bucket(Bucket=BUCKET)
        keys = [f"{i:08d}" for i in range(IMAGES)]
        manifest = bench.manifest("input", keys)
        output = f"s3://{BUCKET}/out/"
        first = bench.child("job", manifest, output, f"--rows-per-file={ROWS}")
        assert first["images"] == IMAGES and first["files"] == 3 and not first["failed"]
        lease_puts = first["requests"]["PUT"] - (-(-IMAGES // 64) + 3 + 1)  # shard files, parts, record
        assert 1 <= lease_puts <= 1 + first["wall_s"] // HEARTBEAT_SECONDS  # taken, then each heartbeat
        parts = sorted(key for key, _ in bench.objects("out/") if key.split("/")[-1].startswith("part-"))
        assert [key for key, _ in bench.objects("out/")] == ["out/_job.json", *parts] and len(parts) == 3
        assert bench.child("decide", manifest, output, f"--rows-per-file={ROWS}")["new"] == 0
        s3 = local_s3.arrow_filesystem()
        lost = pq.ParquetFile(s3.open_input_file(f"{BUCKET}/{parts[1]}")).metadata.num_rows
        bench.client.delete_object(Bucket=BUCKET, Key=parts[1])  # as if its compaction never happened
        late = [f"{i:08d}-late" for i in range(0, IMAGES, 100)]
        bench.manifest("input", sorted(keys + late))  # the same INPUT, grown by 1%
        decided = bench.child("decide", manifest, output, f"--rows-per-file={ROWS}")
        assert decided["done"] == IMAGES - lost and decided["new"] == lost + len(late)
        again = bench.child("job", manifest, output, f"--rows-per-file={ROWS}")
        assert again["images"] == decided["new"] and again["done"] == IMAGES - lost
        uris = bench.uris("out/").to_pylist()
        assert sorted(uris) == sorted(f"s3://{BUCKET}/photos/{key}.jpg" for key in keys + late)
