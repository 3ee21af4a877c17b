"""CPU per GET of each S3 client on the WIDER FACE photos from a local SeaweedFS, and the store's own.

    .venv/bin/python benchmarks/s3_clients.py --out docs/S3-CLIENTS.md     # `make bench` runs it

The clients take turns, round after round (this machine drifts when anything else runs): boto3's
`get_object` (facesweep's client before obstore), facesweep's storage (obstore, what actors run now),
and pyarrow's S3FileSystem. Each GET's client CPU is this process's CPU time over the GETs; the store's
is the SeaweedFS process's, which shares these cores here and would not on a cloud (so it belongs in a
per-object input's ceiling here, not there). The last line: `S3CLIENTS boto3_ms=... obstore_ms=...`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pyarrow.fs as pafs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import SUBSET, cpu_ticks, generated_by, require_shared, table
from facesweep.workers.storage import S3Storage
from infra.local_s3 import start_local_s3

ROUNDS = 3
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = parser.parse_args()
    require_shared(args.shared, "benchmarks/s3_clients.py")
    started = time.monotonic()
    photos = sorted((args.shared / SUBSET).rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as folder, start_local_s3(Path(folder)) as server:
        os.environ.update(server.env())
        client = server.client()
        client.create_bucket(Bucket="clients")
        keys = [f"p/{i:04d}.jpg" for i in range(len(photos))]
        for key, path in zip(keys, photos, strict=True):
            client.put_object(Bucket="clients", Key=key, Body=path.read_bytes())
        boto = boto3.session.Session().client("s3")
        arrow = server.arrow_filesystem()
        ours = S3Storage()
        clients = {
            "boto3": lambda key: boto.get_object(Bucket="clients", Key=key)["Body"].read(),
            "obstore (facesweep)": lambda key: ours.get(f"s3://clients/{key}"),
            "pyarrow S3FileSystem": lambda key: _arrow_get(arrow, key),
        }
        for get in clients.values():
            get(keys[0])  # each client's first request sets it up (connection, credentials): not measured
        client_ms: dict[str, list[float]] = {name: [] for name in clients}
        store_ms: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(ROUNDS):
            for name, get in clients.items():
                store_before, cpu_before = cpu_ticks(server.pid), time.process_time()
                for key in keys:
                    get(key)
                client_ms[name].append(1000 * (time.process_time() - cpu_before) / len(keys))
                store_ms[name].append(1000 * (cpu_ticks(server.pid) - store_before) * TICK_S / len(keys))
    size_kb = sum(p.stat().st_size for p in photos) / len(photos) / 1024
    rows = [
        [name, f"{min(client_ms[name]):.3f}", f"{_mean(client_ms[name]):.3f}", f"{_mean(store_ms[name]):.2f}"]
        for name in clients
    ]
    line = (
        f"S3CLIENTS boto3_ms={min(client_ms['boto3']):.3f} "
        f"obstore_ms={min(client_ms['obstore (facesweep)']):.3f} "
        f"pyarrow_ms={min(client_ms['pyarrow S3FileSystem']):.3f} "
        f"store_ms={_mean(store_ms['obstore (facesweep)']):.2f}"
    )
    text = [
        "# S3 clients: CPU per GET",
        "",
        generated_by("bench", "s3_clients.py", started),
        "",
        f"{len(photos)} WIDER FACE photos (mean {size_kb:.0f} KB) from a local SeaweedFS, {ROUNDS} rounds, "
        "the clients taking turns. Client CPU: this process's CPU time per GET (best and mean round). "
        "Store CPU: the SeaweedFS process's per GET (it shares these 2 cores; on a cloud it does not).",
        "",
        *table(["client", "client ms/GET (best)", "client ms/GET (mean)", "store ms/GET"], rows),
        "",
        "```",
        line,
        "```",
        "",
    ]
    args.out.write_text("\n".join(text))
    print(line)
    return 0


def _arrow_get(filesystem: pafs.FileSystem, key: str) -> bytes:
    with filesystem.open_input_stream(f"clients/{key}") as stream:
        return stream.read()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


if __name__ == "__main__":
    sys.exit(main())
