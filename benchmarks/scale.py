"""`make scale`: a big cluster's driver, ledger, storage and sink, simulated on this machine.

Every request goes through infra/fault_proxy.py, which adds a fixed latency (30 ms) in front of a
real SeaweedFS. The jobs are the product's own `run_job` / `dry_run` on a 1,000,000-image Parquet
manifest: its listing, the ledger, shard planning, dispatch to Ray actors, the sink's shard files and
the compaction tasks. One thing is replaced: the actor class. SimulatedWorker does not fetch or detect:
it writes each shard's file with one made-up face per image through the product's sink (one PUT), so
the driver, the ledger and the store are what is measured, not the model. Then a real `facesweep run`
of a few thousand small photos, through the proxy and straight to the store, shows what the latency
costs a real job. Writes docs/SCALE.md; the last line is the SCALE line.

    python benchmarks/scale.py --out docs/SCALE.md [--latency-ms 30] [--images 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import generated_by, table  # noqa: E402
from facesweep.workers.config import DEFAULT_MODEL  # noqa: E402
from facesweep.workers.faces import Faces  # noqa: E402
from facesweep.workers.job.calls import ShardCalls  # noqa: E402
from facesweep.workers.job.messages import ActorInfo, ShardReport  # noqa: E402
from facesweep.workers.job.shards import Shard  # noqa: E402
from facesweep.workers.output.schema import ImageResult, results_table  # noqa: E402
from facesweep.workers.output.writer import write_parquet  # noqa: E402
from facesweep.workers.storage import join, storage_for  # noqa: E402
from infra.local_s3 import LocalS3, start_local_s3  # noqa: E402

PYTHON = sys.executable
BUCKET = "scale"
PRICE_PER_1000 = {"LIST": 0.005, "PUT": 0.005, "GET": 0.0004, "HEAD": 0.0004, "DELETE": 0.0}
"""USD per 1,000 requests of each kind the product counts (storage.REQUEST_KINDS): Amazon S3 Standard,
US East (N. Virginia), https://aws.amazon.com/s3/pricing/ "Requests & data retrievals": PUT, COPY, POST,
LIST $0.005; GET, SELECT and all other requests (HEAD) $0.0004; DELETE free."""
FACE = Faces(
    np.array([[10, 20, 110, 140]], np.float32), np.array([0.9], np.float32), np.zeros((1, 5, 2), np.float32)
)

SHARDS_AT_ONCE = 32  # SimulatedWorker's calls at once
ACTORS = 4  # simulated actors per job
REAL_ORDER = (False, True, True, False)  # the real runs: through the proxy or not, in this order
RATE = "processing_images_per_second"


class SimulatedWorker(ShardCalls):
    """Stands in for ShardWorker with negligible per-image work: one face per image, the shard written
    through the product's sink. Many shards at once (SHARDS_AT_ONCE), so that a few actors keep up with
    the driver."""

    def __init__(self, settings: object, output: str, *_: object) -> None:
        self.start_calls(output, "simulated")

    def ready(self) -> ActorInfo:
        return self.info

    def process_one(self, shard: Shard) -> ShardReport:
        results = [
            ImageResult(uri, 640, 480, FACE, etag=etag, size=size)
            for uri, etag, size in zip(shard.uris, shard.etags, shard.sizes, strict=True)
        ]
        uri = join(self.output, shard.file_name)
        counts = write_parquet(results_table(results, "simulated"), storage_for(uri), uri)
        return self.report(shard, counts, {}, {})


def child_job(manifest: str, output: str, actors: int, rows_per_file: int) -> dict:
    """One job in this process (run as a child, so its peak RSS is the driver's own)."""
    from facesweep.workers.config import DetectorSettings, JobConfig, Tuning
    from facesweep.workers.job.driver import run_job

    marks: list[tuple[int, float, float]] = []

    def mark(progress: object) -> None:
        marks.append((progress.images, time.process_time(), time.monotonic()))

    config = JobConfig(
        manifest,
        output,
        DetectorSettings(model=DEFAULT_MODEL),
        actors,
        0.5,
        shard_size=64,
        rows_per_file=rows_per_file,
        tuning=Tuning(shards_at_once=SHARDS_AT_ONCE),
    )
    cpu, wall = time.process_time(), time.monotonic()
    progress = run_job(config, mark, worker=SimulatedWorker)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    (first_images, first_cpu, first_wall), (last_images, last_cpu, last_wall) = marks[0], marks[-1]
    return {
        "images": progress.images,
        "new": progress.plan.new,
        "done": progress.plan.done,
        "files": progress.files,
        "failed": progress.failed_shards,
        "requests": progress.requests,
        "wall_s": wall,
        "cpu_s": cpu,
        "dispatch_images": last_images - first_images,
        "dispatch_cpu_s": last_cpu - first_cpu,
        "dispatch_wall_s": last_wall - first_wall,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child_decide(manifest: str, output: str, rows_per_file: int) -> dict:
    """What a re-run decides now (the product's dry run: listing, ledger, comparison, plan)."""
    from facesweep.workers.config import DetectorSettings, JobConfig
    from facesweep.workers.job.preparation import dry_run

    config = JobConfig(
        manifest, output, DetectorSettings(model=DEFAULT_MODEL), shard_size=64, rows_per_file=rows_per_file
    )
    plan = dry_run(config)
    return {
        "seconds": plan.seconds,
        "new": plan.counts.new,
        "done": plan.counts.done,
        "shards": plan.counts.shards,
        "requests": plan.requests,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def latency_proxy(server: LocalS3, latency_ms: float) -> Iterator[str]:
    """The proxy in front of `server`, as an endpoint URL."""
    port = _free_port()
    target = server.endpoint_url.removeprefix("http://")
    command = [PYTHON, "-m", "infra.fault_proxy", f"--port={port}", f"--target={target}"]
    process = subprocess.Popen(
        [*command, f"--latency-ms={latency_ms}"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        process.stdout.readline()
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


class Bench:
    """The store, the proxy's endpoint, and children run against one or the other."""

    def __init__(self, server: LocalS3, proxied: str, folder: Path) -> None:
        self.server, self.proxied, self.folder = server, proxied, folder
        self.client = server.client()

    def env(self, proxy: bool = True) -> dict[str, str]:
        endpoint = self.proxied if proxy else self.server.endpoint_url
        return {
            **os.environ,
            **self.server.env(),
            "AWS_ENDPOINT_URL": endpoint,
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    def child(self, *args: str) -> dict:
        done = subprocess.run(
            [PYTHON, __file__, *args], env=self.env(), capture_output=True, text=True, timeout=1800
        )
        if done.returncode != 0:
            raise SystemExit(f"scale.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def manifest(self, name: str, keys: list[str]) -> str:
        """A Parquet manifest of made-up image URIs (each with its own version tag and a size), uploaded
        to the store. The images need not exist: the simulated actors never fetch them."""
        uris = pa.array([f"s3://{BUCKET}/photos/{key}.jpg" for key in keys])
        etags = pa.array([f'"{key:>32}"' for key in keys])
        sizes = pa.array(np.full(len(uris), 120_000, np.int64))
        path = self.folder / f"{name}.parquet"
        pq.write_table(pa.table({"uri": uris, "etag": etags, "size": sizes}), path)
        self.client.upload_file(str(path), BUCKET, f"manifests/{name}.parquet")
        return f"s3://{BUCKET}/manifests/{name}.parquet"

    def move(self, keys: list[str], to: str, strip: str = "") -> None:
        """Copies each key to `to` + key (less `strip`), then deletes the originals."""
        for key in keys:
            source = {"Bucket": BUCKET, "Key": key}
            self.client.copy_object(Bucket=BUCKET, Key=to + key.removeprefix(strip), CopySource=source)
        self.client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": key} for key in keys]})

    def objects(self, prefix: str) -> list[tuple[str, int]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [(o["Key"], o["Size"]) for page in pages for o in page.get("Contents", ())]

    def uris(self, output: str) -> pa.ChunkedArray:
        files = [
            f"{BUCKET}/{key}" for key, _ in self.objects(output) if key.split("/")[-1].startswith("part-")
        ]
        return ds.dataset(files, format="parquet", filesystem=self.server.arrow_filesystem()).to_table(
            columns=["uri"]
        )["uri"]


def small_photos(count: int) -> list[bytes]:
    """`count` distinct small JPEGs: 160x120 crops of the sample photos at varying offsets."""
    import cv2

    from infra.demo import sample_photos

    sources = [cv2.imread(str(path)) for _, path in sample_photos()]
    sources = [s for s in sources if s is not None and min(s.shape[:2]) >= 240]
    photos = []
    for i in range(count):
        image = sources[i % len(sources)]
        y, x = (i * 7) % (image.shape[0] - 120), (i * 13) % (image.shape[1] - 160)
        photos.append(cv2.imencode(".jpg", image[y : y + 120, x : x + 160])[1].tobytes())
    return photos


def real_run(bench: Bench, proxy: bool, name: str) -> dict:
    command = [str(ROOT / ".venv/bin/facesweep"), "run", f"s3://{BUCKET}/small/", f"s3://{BUCKET}/{name}/"]
    done = subprocess.run(
        [*command, "--actors=1", "--cpus-per-actor=2"], env=bench.env(proxy), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"facesweep run failed:\n{done.stderr[-3000:]}")
    body = bench.client.get_object(Bucket=BUCKET, Key=f"{name}/_job.json")["Body"].read()
    return json.loads(body)["this_run"]


def per_million(requests: dict[str, int], images: int) -> dict[str, float]:
    return {k: v * 1_000_000 / images for k, v in requests.items()}


def main_run(args: argparse.Namespace) -> list[str]:
    """Every measurement, as the lines of docs/SCALE.md."""
    started, n, rows = time.monotonic(), args.images, args.rows_per_file
    with (
        tempfile.TemporaryDirectory(prefix="facesweep-scale-") as tmp,
        start_local_s3(Path(tmp, "s3")) as server,
        latency_proxy(server, args.latency_ms) as proxied,
    ):
        bench = Bench(server, proxied, Path(tmp))
        bench.client.create_bucket(Bucket=BUCKET)
        keys = [f"{i:08d}" for i in range(n)]
        late = [f"{i:08d}-late" for i in range(0, n, 100)]  # 1% new, spread through the key range
        small = bench.manifest("small", keys[: n // 10])
        full = bench.manifest("full", keys)
        log = _logger(started)
        log(f"manifests of {n // 10} and {n} images uploaded")
        job_small = bench.child("job", small, f"s3://{BUCKET}/out-small/", f"--rows-per-file={rows}")
        log(f"{n // 10} images: {job_small['wall_s']:.1f} s, driver RSS {job_small['rss_mb']:.0f} MB")
        job = bench.child("job", full, f"s3://{BUCKET}/out/", f"--rows-per-file={rows}")
        log(f"{n} images: {job['wall_s']:.1f} s, driver RSS {job['rss_mb']:.0f} MB")
        objects = bench.objects("out/")
        all_done = bench.child("decide", full, f"s3://{BUCKET}/out/", f"--rows-per-file={rows}")
        log(f"re-run decision, all committed: {all_done['seconds']:.2f} s, new {all_done['new']}")
        parts = sorted(key for key, _ in objects if key.split("/")[-1].startswith("part-"))
        held = parts[::2]  # every other part file set aside: half of the job is committed
        bench.move(held, "held/")
        half = bench.child("decide", full, f"s3://{BUCKET}/out/", f"--rows-per-file={rows}")
        log(f"re-run decision, half committed: {half['seconds']:.2f} s, new {half['new']}")
        bench.move([f"held/{key}" for key in held], "", strip="held/")
        grown = bench.manifest("full", sorted(keys + late))  # the same INPUT, grown by 1%
        incremental = bench.child("decide", grown, f"s3://{BUCKET}/out/", f"--rows-per-file={rows}")
        log(f"incremental decision: {incremental['seconds']:.2f} s, new {incremental['new']}")
        grow = bench.child("job", grown, f"s3://{BUCKET}/out/", f"--rows-per-file={rows}")
        uris = bench.uris("out/")
        once_grown = len(uris) == n + len(late) and len(set(uris.to_pylist())) == n + len(late)
        log(f"incremental run: {grow['images']} new images, exactly once: {once_grown}")
        photos = small_photos(args.small_photos)
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda i: bench.client.put_object(
                        Bucket=BUCKET, Key=f"small/{i:05d}.jpg", Body=photos[i]
                    ),
                    range(len(photos)),
                )
            )
        real = []  # (through the proxy, the run's record), in the order run
        for proxy in REAL_ORDER:  # this shared machine's speed drifts: each endpoint goes first once
            endpoint = "proxy" if proxy else "direct"
            real.append((proxy, real_run(bench, proxy, f"real-{endpoint}-{len(real)}")))
            log(f"real run {len(real)}, {endpoint}: {real[-1][1][RATE]:.1f} img/s")
    measured = dict(job_small=job_small, job=job, objects=objects, all_done=all_done, half=half)
    measured |= dict(incremental=incremental, grow=grow, once_grown=once_grown, late=len(late))
    return report(args, started, measured, real)


def report(
    args: argparse.Namespace, started: float, measured: dict, real: list[tuple[bool, dict]]
) -> list[str]:
    n = args.images
    job_small, job, objects = measured["job_small"], measured["job"], measured["objects"]
    all_done, half, incremental = measured["all_done"], measured["half"], measured["incremental"]
    grow, once_grown, late = measured["grow"], measured["once_grown"], measured["late"]
    capacity = job["dispatch_images"] / job["dispatch_cpu_s"]
    e2e = job["dispatch_images"] / job["dispatch_wall_s"]
    parts = [size for key, size in objects if key.split("/")[-1].startswith("part-")]
    requests = per_million(job["requests"], n)
    price = {k: v / 1000 * PRICE_PER_1000[k] for k, v in requests.items() if k in PRICE_PER_1000}
    image_gets = 1_000_000  # per million images: the one GET per image the simulated actors do not make
    image_gets_price = image_gets / 1000 * PRICE_PER_1000["GET"]
    ratio = sum(r[RATE] for proxy, r in real if proxy) / sum(r[RATE] for proxy, r in real if not proxy)
    decide = max(all_done["seconds"], half["seconds"])
    scale = (
        f"SCALE latency_ms={args.latency_ms:g} driver_images_s={capacity:.0f} rerun_decide_s={decide:.1f} "
        f"incremental_decide_s={incremental['seconds']:.1f} objects_per_million={len(objects) * 1e6 / n:.0f} "
        f"driver_rss_mb={max(job['rss_mb'], job_small['rss_mb']):.0f} "
        f"requests_per_million={sum(requests.values()):.0f}"
    )
    return [
        f"# Scale: the driver, the ledger and the output at {n:,} images",
        "",
        generated_by("scale", "scale.py", started),
        "",
        f"Every request goes through a proxy that adds {args.latency_ms:g} ms (infra/fault_proxy.py) "
        "in front of a real SeaweedFS on this machine. The jobs are the product's `run_job` and `dry_run` on "
        f"Parquet manifests of {n:,} made-up image URIs (each with an ETag and a size), shards of 64 and "
        f"part files of {args.rows_per_file:,} images: listing, ledger, comparison, planning, dispatch to "
        "Ray actors, shard files through the sink and compaction tasks are the product's code. Only the "
        "actor class is replaced: `SimulatedWorker` fetches nothing and runs no model; it writes each "
        "shard's file (one made-up face per image) through the product's sink, so per-image work is "
        f"negligible and the driver, the ledger and the store are what is measured. {ACTORS} simulated "
        f"actors, {SHARDS_AT_ONCE} calls each at once.",
        "",
        "## The driver",
        "",
        *table(
            ["figure", "value"],
            [
                [
                    "driver capacity: images per driver CPU second, while dispatching",
                    f"{capacity:,.0f} images/s",
                ],
                ["the same in shards (64 images)", f"{capacity / 64:,.0f} shards/s"],
                [
                    "achieved here end to end (2 cores shared by driver, actors, proxy, store)",
                    f"{e2e:,.0f} images/s",
                ],
                [f"driver peak RSS, {n // 10:,} images", f"{job_small['rss_mb']:.0f} MB"],
                [f"driver peak RSS, {n:,} images", f"{job['rss_mb']:.0f} MB"],
                [f"{n:,}-image job, wall clock (start-up included)", f"{job['wall_s']:.1f} s"],
            ],
        ),
        "",
        "The driver's loop makes no storage request per shard: actors commit their shard files, compaction "
        "tasks merge them, and the driver only submits and collects Ray calls. Its capacity is its CPU per "
        "image; the end-to-end rate here is what 2 cores give when the driver, 4 actor processes, the proxy "
        "and SeaweedFS share them.",
        "",
        "## What a re-run decides",
        "",
        *table(
            ["state of OUTPUT", "decision time", "new images found", "requests made"],
            [
                [
                    "all committed",
                    f"{all_done['seconds']:.2f} s",
                    f"{all_done['new']:,}",
                    _requests(all_done["requests"]),
                ],
                [
                    "half committed (every other part file set aside)",
                    f"{half['seconds']:.2f} s",
                    f"{half['new']:,}",
                    _requests(half["requests"]),
                ],
                [
                    f"complete, input grown by {late:,} images (1%)",
                    f"{incremental['seconds']:.2f} s",
                    f"{incremental['new']:,}",
                    _requests(incremental["requests"]),
                ],
            ],
        ),
        "",
        f"For the half-committed decision every other part file was set aside, then put back. "
        f"The incremental run processed {grow['images']:,} new images and touched no committed part file; "
        f"every image exactly once: {once_grown}. Decision time is the product's `--dry-run`: reading the "
        "manifest, the ledger's footers and uri columns, and comparing them (the model found and "
        "checksummed; a dry run does not read it).",
        "",
        "## What the job leaves and what it costs",
        "",
        *table(
            ["figure", "value"],
            [
                [
                    f"objects in OUTPUT after {n:,} images",
                    f"{len(objects)} ({len(parts)} part files + _job.json)",
                ],
                ["objects per million images", f"{len(objects) * 1e6 / n:.0f}"],
                ["part file size, mean / largest", f"{np.mean(parts) / 1e6:.1f} / {max(parts) / 1e6:.1f} MB"],
            ],
        ),
        "",
        *table(
            ["requests", f"counted, {n:,} images", "per million images", "S3 Standard price per million"],
            [[k, f"{job['requests'][k]:,}", f"{v:,.0f}", f"${price[k]:.2f}"] for k, v in requests.items()]
            + [
                [
                    "all bookkeeping",
                    f"{sum(job['requests'].values()):,}",
                    f"{sum(requests.values()):,.0f}",
                    f"${sum(price.values()):.2f}",
                ],
                [
                    "+ the images' own GETs in a real job (one per image, not made here)",
                    f"{n:,}",
                    f"{image_gets:,}",
                    f"${image_gets_price:.2f}",
                ],
                [
                    "all, with the images' GETs",
                    f"{sum(job['requests'].values()) + n:,}",
                    f"{sum(requests.values()) + image_gets:,.0f}",
                    f"${sum(price.values()) + image_gets_price:.2f}",
                ],
            ],
        ),
        "",
        f"Prices: {_price_list()}. Bookkeeping requests are the shard files' PUTs, the compactions' GETs, "
        "part PUTs and batched DELETEs, the manifest, the ledger read and the job record.",
        "",
        "## A real job through the proxy",
        "",
        *table(
            [
                "run",
                "endpoint",
                "images/s after start-up",
                "actor CPU ms per image",
                "fetch CPU ms per image",
                "GETs per image (counted)",
            ],
            [
                [
                    f"{i + 1}",
                    f"+{args.latency_ms:g} ms a request" if proxy else "SeaweedFS directly",
                    f"{r[RATE]:.1f}",
                    f"{r['actor_cpu_ms_per_image']:.1f}",
                    f"{r['stage_ms_per_image'].get('fetch', 0):.1f}",
                    f"{r['requests']['GET'] / r['images']:.2f}",
                ]
                for i, (proxy, r) in enumerate(real)
            ],
        ),
        "",
        f"`facesweep run` of {args.small_photos:,} small JPEGs (160x120) with the default model, 1 actor x 2 "
        "CPUs, in the order above (each endpoint first once, as this shared machine's speed drifts): through "
        f"the proxy at {ratio:.2f} of the direct rate (the sums of the runs' rates). GETs per image: all "
        "of a run's GETs (the images' and those of the job's own files) over its images.",
        "",
        scale,
    ]


def _price_list() -> str:
    """PRICE_PER_1000 in words: `$0.005 per 1,000 LIST or PUT, ..., DELETE free`."""
    kinds: dict[float, list[str]] = {}
    for kind, price in PRICE_PER_1000.items():
        kinds.setdefault(price, []).append(kind)
    priced = [f"${price:g} per 1,000 {' or '.join(k)}" for price, k in kinds.items() if price]
    free = " and ".join(kinds.get(0.0, []))
    return "S3 Standard us-east-1 list prices, " + ", ".join([*priced, f"{free} free"] if free else priced)


def _requests(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v)


def _logger(started: float):
    def log(text: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {text}", flush=True)

    return log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    job = commands.add_parser("job")
    job.add_argument("manifest")
    job.add_argument("output")
    job.add_argument("--actors", type=int, default=ACTORS)
    job.add_argument("--rows-per-file", type=int, default=100_000)
    decide = commands.add_parser("decide")
    decide.add_argument("manifest")
    decide.add_argument("output")
    decide.add_argument("--rows-per-file", type=int, default=100_000)
    parser.add_argument("--out", default="docs/SCALE.md")
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--small-photos", type=int, default=1500)
    parser.add_argument("--rows-per-file", type=int, default=100_000)
    args = parser.parse_args()
    if args.command == "job":
        print(json.dumps(child_job(args.manifest, args.output, args.actors, args.rows_per_file)))
    elif args.command == "decide":
        print(json.dumps(child_decide(args.manifest, args.output, args.rows_per_file)))
    else:
        lines = main_run(args)
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(lines[-1])


if __name__ == "__main__":
    main()
