"""`make weather`: a real job through a cloud store's bad day, beside the same job in fair weather.

N small real photos (benchmarks/scale.py's 160x120 JPEG crops of the WIDER FACE and scikit-image sample
photos, each distinct) in a local SeaweedFS, behind infra/fault_proxy.py in its own process, detected by
the real CLI (`python -m facesweep.cli run`, each run starting its own local Ray) with the built-in model at
a small network input (this measures the weather, not accuracy), three times, each into a fresh OUTPUT:

- clear: 30 ms a request, no fault;
- weather: 30 ms, and on every request 3% `503 SlowDown`, 1% `500 InternalError`, 1% resets (half
  before the response, half in its body), 0.5% bodies cut short and 0.1% responses held a minute; an
  actor process killed (SIGKILL) every minute; the driver killed with its Ray (SIGKILL to its process
  group) at 40% of the images, then the same command re-run to the end;
- throttled: 30 ms and a request-rate limit on the photos' prefix at half the clear job's GET rate.

Every OUTPUT is read back: each image exactly once, its error rows counted. Writes docs/WEATHER.md; the
last line is the WEATHER line.

    python benchmarks/weather.py --out docs/WEATHER.md [--images 20000] [--kill-every 60]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import generated_by, table  # noqa: E402
from benchmarks.scale import _free_port, small_photos  # noqa: E402
from infra.demo import WIDER_SUBSET  # noqa: E402
from infra.fault_proxy import Weather  # noqa: E402
from infra.local_s3 import LocalS3, start_local_s3  # noqa: E402

PYTHON = sys.executable
BUDGET_S = 600
"""The whole benchmark's time on 2 cores (issue 26), against which it reports its progress."""
BUCKET = "weather"
PREFIX = "photos"
"""Every input key is below it: one prefix (bucket and first key segment) for the proxy's rate limit."""
PHOTO_GETS = rf"^GET /{BUCKET}/{PREFIX}/"
"""The proxy's aim in the clear and throttled jobs: the photos' GETs, so its counts are theirs alone."""
MARK = "FACESWEEP_WEATHER_BENCH"
"""An environment variable every process of the jobs inherits (driver, its Ray, actors, compactions): how
the benchmark finds its actors to kill and a killed driver's orphans, and no one else's processes."""
ACTOR = b"ray::ShardWorker"
SHARD_LINE = re.compile(r"^shard \d+: (\d+)/\d+ images, .* ([\d.]+) img/s$")
"""facesweep's LogProgress line per shard: this run's images so far and its processing rate."""
STEADY = (0.1, 0.9)
"""A job's steady state: from the sample where the photos' GETs served reached this share of the images
to the one where they reached that one."""


def storm(latency_ms: float, seed: int) -> Weather:
    """The weather job's weather: issue 26's rates, on every request (`aim` "."): listings, GETs, HEADs,
    PUTs (shard files, part files, the lease, the record) and DELETEs, of the driver, the actors and the
    compactions."""
    return Weather(
        latency_ms=latency_ms,
        slowdown=0.03,
        internal=0.01,
        reset_before=0.005,
        reset_during=0.005,
        cut_body=0.005,
        stall=0.001,
        aim=".",
        seed=seed,
    )


def distinct_photos(count: int) -> list[bytes]:
    """`count` small JPEGs with distinct bytes: scale.py's crops less the few its offsets repeat."""
    photos = list(dict.fromkeys(small_photos(count + count // 100 + 10)))
    if len(photos) < count:
        raise SystemExit(f"weather.py: only {len(photos)} distinct photos of {count} asked")
    return photos[:count]


def proxy_counts(endpoint: str) -> dict[str, int]:
    """The proxy's counts (`GET /_weather`), asked directly, whatever HTTP proxy the environment names."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{endpoint}/_weather", timeout=10) as answer:
        return json.load(answer)["counts"]


@contextlib.contextmanager
def fault_proxy(server: LocalS3, weather: Weather) -> Iterator[str]:
    """`python -m infra.fault_proxy` in front of `server` with `weather`, in its own process (so it shares
    no GIL with the benchmark): its endpoint URL, once it answers."""
    port = _free_port()
    target = server.endpoint_url.removeprefix("http://")
    flags = [f"--{f.name.replace('_', '-')}={getattr(weather, f.name)}" for f in dataclasses.fields(Weather)]
    command = [PYTHON, "-m", "infra.fault_proxy", f"--port={port}", f"--target={target}", *flags]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                proxy_counts(endpoint)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"weather.py: the fault proxy did not start: {' '.join(command)}"
                    ) from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def marked(mark: str, name: bytes = b"") -> list[int]:
    """The live processes whose environment holds MARK=`mark` (and whose command line starts with `name`)."""
    entry = f"\0{MARK}={mark}\0".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if name and not (proc / "cmdline").read_bytes().startswith(name):
                continue
            if entry in b"\0" + (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return found


def kill_marked(mark: str, timeout: float = 60.0) -> None:
    """SIGKILL to every process of the jobs (a killed driver's Ray and actors), until none is left."""
    deadline = time.monotonic() + timeout
    while pids := marked(mark):
        if time.monotonic() > deadline:
            raise SystemExit(f"weather.py: processes of the jobs still alive: {pids}")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _peak_and_start(pid: int) -> tuple[int, int] | None:
    """A process's peak RSS (VmHWM, KiB) and start time (clock ticks after boot); None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        start = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None
    hwm = next((line for line in status.splitlines() if line.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(hwm.split()[1]), start


class Watch:
    """A job's proxy counts, four times a second, and each second the peak RSS of its actor processes;
    with `kill_every`, a SIGKILL that often to the actor process that has lived longest (once there is
    one)."""

    def __init__(self, endpoint: str, mark: str, kill_every: float = 0.0, verbose: bool = False) -> None:
        self.endpoint, self.mark, self.kill_every, self.verbose = endpoint, mark, kill_every, verbose
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.peak_kib: dict[int, int] = {}
        self.kills = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="weather-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        due = time.monotonic() + self.kill_every
        for tick in itertools.count(1):
            if self._stop.wait(0.25):
                return
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), proxy_counts(self.endpoint)))
            if tick % 4:
                continue
            actors = {pid: seen for pid in marked(self.mark, ACTOR) if (seen := _peak_and_start(pid))}
            for pid, (hwm, _) in actors.items():
                self.peak_kib[pid] = max(self.peak_kib.get(pid, 0), hwm)
            if self.kill_every and actors and time.monotonic() >= due:
                oldest = min(actors, key=lambda pid: actors[pid][1])
                with contextlib.suppress(ProcessLookupError):
                    os.kill(oldest, signal.SIGKILL)
                    self.kills += 1
                    if self.verbose:
                        print(f"  killed actor process {oldest}", file=sys.stderr, flush=True)
                due = time.monotonic() + self.kill_every

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def steady_rate(self, served: Callable[[dict[str, int]], int], images: int) -> float:
        """Per second, of `served` (from the proxy's counts) in the job's steady state (STEADY)."""
        low, high = (
            next(((t, n) for t, counts in self.samples if (n := served(counts)) >= share * images), None)
            for share in STEADY
        )
        if low is None or high is None or high[0] <= low[0]:
            return 0.0
        return (high[1] - low[1]) / (high[0] - low[0])


@dataclass
class Drive:
    """One driver run (one `facesweep run` process)."""

    wall_s: float
    images: int  # processed: a finished run's, from its record; a killed one's, from what it committed
    processing_s: float  # from its actors being ready to its last shard (finished) or its kill
    record: dict | None  # _job.json's this_run; None for a killed run (its record died with it)
    exit_code: int | None  # None: killed


@dataclass
class Output:
    """An OUTPUT read back: rows, distinct images, missing and foreign ones, error rows."""

    rows: int
    distinct: int
    missing: int
    foreign: int
    errors: int

    @property
    def exactly_once(self) -> bool:
        return self.rows == self.distinct and not self.missing and not self.foreign


@dataclass
class Job:
    name: str
    weather: Weather
    runs: list[Drive]
    watch: Watch
    counts: dict[str, int]  # the proxy's, at the end
    wall_s: float  # from the first driver's start to the last one's end
    output: Output

    @property
    def rate(self) -> float:
        """Images per second of processing, over every driver run."""
        return sum(r.images for r in self.runs) / sum(r.processing_s for r in self.runs)

    @property
    def failed(self) -> int:
        return len(self.runs[-1].record["failed"])

    @property
    def requests(self) -> Counter[str]:
        """The client's requests by kind, over the finished runs."""
        return sum((Counter(r.record["requests"]) for r in self.runs if r.record), Counter())

    @property
    def peak_mb(self) -> float:
        return max(self.watch.peak_kib.values(), default=0) / 1024


class Bench:
    """The store with the photos, and the jobs run on them through the proxy."""

    def __init__(self, server: LocalS3, folder: Path, args: argparse.Namespace) -> None:
        self.server, self.folder, self.args = server, folder, args
        self.client = server.client()
        self.mark = uuid.uuid4().hex
        self.expected: set[str] = set()

    def upload(self, photos: list[bytes]) -> None:
        self.client.create_bucket(Bucket=BUCKET)
        keys = [f"{PREFIX}/{i:06d}.jpg" for i in range(len(photos))]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k, p: self.client.put_object(Bucket=BUCKET, Key=k, Body=p), keys, photos))
        self.expected = {f"s3://{BUCKET}/{key}" for key in keys}

    def job(self, name: str, weather: Weather, kill_every: float = 0.0, kill_driver_at: int = 0) -> Job:
        """The job into s3://weather/NAME/ through a proxy with `weather`; with `kill_driver_at`, its
        driver killed once that many images are done, then the same command run again."""
        with fault_proxy(self.server, weather) as endpoint:
            started = time.monotonic()
            watch = Watch(endpoint, self.mark, kill_every, self.args.verbose)
            try:
                runs = [self.drive(endpoint, name, kill_driver_at)]
                if kill_driver_at:  # the same command again, killed or not (a run may fail first)
                    runs.append(self.drive(endpoint, name))
                    if runs[0].record is None:
                        runs[0].images = runs[1].record["already_done"]
            finally:
                watch.stop()
            wall = time.monotonic() - started
            counts = proxy_counts(endpoint)
        return Job(name, weather, runs, watch, counts, wall, self.read_back(name))

    def drive(self, endpoint: str, name: str, kill_at: int = 0) -> Drive:
        """One `facesweep run` through `endpoint`, in its own process group; with `kill_at`, the group
        (the driver and the local Ray it started) SIGKILLed at the first shard line past `kill_at` images,
        and any orphan after it."""
        args = self.args
        command = [
            *(PYTHON, "-m", "facesweep.cli", "run", f"s3://{BUCKET}/{PREFIX}/", f"s3://{BUCKET}/{name}/"),
            *(f"--input-size={args.input_size}", f"--shard-size={args.shard_size}"),
            *(f"--actors={args.actors}", f"--cpus-per-actor={args.cpus_per_actor}"),
        ]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env |= self.server.env() | {"AWS_ENDPOINT_URL": endpoint, MARK: self.mark}
        env |= {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        # Ray's files in a folder of the benchmark's: without it, a cluster someone else started with
        # `ray start` (its address in /tmp/ray/ray_current_cluster) is joined instead of a new local one.
        env["RAY_TMPDIR"] = str(self.folder)
        started = time.monotonic()
        with open(self.folder / f"{name}.out", "a") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=self.folder,  # where its Ray runs: not the checkout
                start_new_session=True,
            )
            tail: deque[str] = deque(maxlen=40)
            last = None  # (when, images, img/s) of the latest shard line
            killed = None  # when
            for line in process.stderr:
                tail.append(line)
                if args.verbose:
                    print(f"  {name} {time.monotonic() - started:5.1f} s: {line}", end="", file=sys.stderr)
                if match := SHARD_LINE.match(line):
                    last = (time.monotonic(), int(match[1]), float(match[2]))
                    if kill_at and last[1] >= kill_at:
                        os.killpg(process.pid, signal.SIGKILL)
                        killed = time.monotonic()
                        break
            process.wait()
            process.stderr.close()
        ended = time.monotonic()
        kill_marked(self.mark)  # a killed run's orphans, a finished one's stragglers
        if killed is not None and last is not None:
            ready = last[0] - last[1] / last[2]  # the rate counts from the actors being ready
            return Drive(killed - started, last[1], killed - ready, None, None)
        record = self.record(name)
        if record is None or record.get("finished_at") is None:
            raise SystemExit(f"weather.py: {name}: exit {process.returncode}, no record:\n{''.join(tail)}")
        this_run = record["this_run"]
        images, rate = this_run["images"], this_run["processing_images_per_second"]
        return Drive(ended - started, images, images / rate if rate else 0.0, this_run, process.returncode)

    def record(self, name: str) -> dict | None:
        with contextlib.suppress(self.client.exceptions.NoSuchKey):
            return json.loads(self.client.get_object(Bucket=BUCKET, Key=f"{name}/_job.json")["Body"].read())
        return None

    def read_back(self, name: str) -> Output:
        """OUTPUT's part files, read straight from the store (not through the proxy)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{name}/part-")
        files = [f"{BUCKET}/{o['Key']}" for page in pages for o in page.get("Contents", ())]
        if not files:
            return Output(0, 0, len(self.expected), 0, 0)
        rows = ds.dataset(files, format="parquet", filesystem=self.server.arrow_filesystem()).to_table(
            columns=["uri", "status"]
        )
        uris = rows["uri"].to_pylist()
        seen = set(uris)
        errors = pc.sum(pc.equal(rows["status"], "error")).as_py() or 0
        return Output(len(uris), len(seen), len(self.expected - seen), len(seen - self.expected), errors)


def photo_gets(counts: dict[str, int]) -> int:
    """The photos' GETs the proxy served (the clear and throttled jobs aim at them alone)."""
    return counts["aimed"] - counts["rate_limited"]


def main_run(args: argparse.Namespace) -> list[str]:
    """Every measurement, as the lines of docs/WEATHER.md."""
    started, n = time.monotonic(), args.images

    def log(text: str) -> None:
        elapsed = time.monotonic() - started
        print(f"[{elapsed:4.0f} s of {BUDGET_S} s] {text}", flush=True)

    if not WIDER_SUBSET.is_dir():
        raise SystemExit(f"weather.py: {WIDER_SUBSET} is missing: run it with ../shared beside the checkout")
    photos = distinct_photos(n)
    with (
        tempfile.TemporaryDirectory(prefix="fsw-weather-") as tmp,  # short: Ray's sockets are below it
        start_local_s3(Path(tmp, "s3")) as server,
    ):
        bench = Bench(server, Path(tmp), args)
        try:
            bench.upload(photos)
            log(f"{n:,} photos uploaded to s3://{BUCKET}/{PREFIX}/")
            clear = bench.job("clear", Weather(latency_ms=args.latency_ms, aim=PHOTO_GETS))
            get_rate = photo_gets(clear.counts) / clear.runs[0].processing_s
            ahead = clear.wall_s * (2 + 1 / args.limit_share)  # in fair weather: the jobs' floor
            log(
                f"clear: {clear.rate:.1f} img/s, {get_rate:.0f} photo GETs/s, {clear.wall_s:.0f} s; "
                f"the two jobs ahead need {ahead:.0f} s or more"
            )
            weather = bench.job(
                "weather",
                storm(args.latency_ms, args.seed),
                kill_every=args.kill_every,
                kill_driver_at=max(1, round(args.kill_driver_at * n)),
            )
            log(
                f"weather: {weather.rate:.1f} img/s ({weather.rate / clear.rate:.2f} of clear), "
                f"{weather.watch.kills} actor kills, driver runs {_runs(weather)}, {weather.wall_s:.0f} s"
            )
            limit = max(1.0, round(args.limit_share * get_rate))
            throttled = bench.job(
                "throttled", Weather(latency_ms=args.latency_ms, prefix_rate_limit=limit, aim=PHOTO_GETS)
            )
            served = throttled.watch.steady_rate(photo_gets, n)
            log(f"throttled: {served:.0f} GETs/s served at a limit of {limit:g}, {throttled.wall_s:.0f} s")
        finally:
            kill_marked(bench.mark)
    return report(args, started, clear, weather, throttled, get_rate, served)


def report(
    args: argparse.Namespace,
    started: float,
    clear: Job,
    weather: Job,
    throttled: Job,
    get_rate: float,
    served: float,
) -> list[str]:
    n, jobs = args.images, (clear, weather, throttled)
    limit = throttled.weather.prefix_rate_limit
    once = all(job.output.exactly_once for job in jobs)
    error_rows = weather.output.errors + throttled.output.errors
    failed = weather.failed + throttled.failed
    line = (
        f"WEATHER images={n} exactly_once={'yes' if once else 'no'} weather_error_rows={error_rows} "
        f"failed_shards={failed} rate_vs_clear={weather.rate / clear.rate:.2f} "
        f"throttled_rate_vs_limit={served / limit:.2f}"
    )
    return [
        "# Cloud weather: a real job through a store's bad day",
        "",
        generated_by("weather", "weather.py", started),
        "",
        f"{n:,} small real photos (160x120 JPEG crops of the WIDER FACE val-subset-145 and scikit-image "
        f"sample photos, each distinct) in a local SeaweedFS under `s3://{BUCKET}/{PREFIX}/`, behind "
        "`infra/fault_proxy.py` in its own process, detected three times by the real CLI "
        "(`python -m facesweep.cli run`, each run starting its own local Ray), each time into a fresh "
        f"OUTPUT: the built-in model at `--input-size {args.input_size}` (a small network input, for a "
        f"short benchmark: this measures the weather, not accuracy), `--shard-size {args.shard_size}`, "
        f"`--actors {args.actors} --cpus-per-actor {args.cpus_per_actor}`. Every request of every job pays "
        f"{args.latency_ms:g} ms at the proxy.",
        "",
        *table(
            ["job", "weather"],
            [
                ["clear", f"{args.latency_ms:g} ms a request, no fault"],
                [
                    "weather",
                    f"{args.latency_ms:g} ms; {_faults(weather.weather)}, on every request (`aim` `.`: "
                    "listings, GETs, HEADs, PUTs, DELETEs of the driver, the actors and the compactions). An "
                    "actor process SIGKILLed every "
                    f"{args.kill_every:g} s; the driver and its Ray SIGKILLed (its process group) at "
                    f"{args.kill_driver_at:.0%} of the images, then the same command re-run to the end",
                ],
                [
                    "throttled",
                    f"{args.latency_ms:g} ms; the photos' prefix limited to {limit:g} requests/s "
                    f"({args.limit_share:g} of the {get_rate:.0f} photo GETs/s of the clear job's processing "
                    "time), the excess answered `503 SlowDown`; no other fault",
                ],
            ],
        ),
        "",
        *(line for job in jobs for line in job_section(job, clear)),
        "## What the proxy did",
        "",
        *table(
            ["count", "the weather job's rate", *(job.name for job in jobs)],
            [
                [
                    f"`{kind}`",
                    f"{getattr(weather.weather, kind) * 100:g}%" if kind in FAULT_WORDS else "",
                    *(f"{job.counts.get(kind, 0):,}" for job in jobs),
                ]
                for kind in ("requests", "aimed", *FAULT_WORDS, "rate_limited")
            ],
        ),
        "",
        "`requests`: every request the proxy saw (the proxy's count, over both driver runs of the weather "
        "job); `aimed`: those its weather applied to (the clear and throttled jobs aim at the photos' GETs "
        "alone, the weather job at every request); the others: the faults it injected, each never reaching "
        "the store.",
        "",
        "## What the figures mean",
        "",
        "- **images/s**: images over processing time, the time from the actors being ready to the last "
        "shard's return (the job's own `processing_images_per_second`); for the weather job, over both "
        "driver runs, the killed one counted from its actors being ready to its kill (the work it lost "
        "included) and credited with the images it committed (the re-run's `already_done`). `vs clear`: "
        "over the clear job's. Wall clock: start-up (Ray, the model) and the final compaction included.",
        "- **exactly once**: OUTPUT's part files read back straight from the store: every input image in "
        "one row, none twice, nothing else.",
        "- **error rows**: every input is a valid photo, so every error row is the weather's doing.",
        "- **failed shards**: `_job.json`'s `this_run.failed` of the job's last run.",
        "- **client requests**: `_job.json`'s `this_run.requests` of the finished runs (the killed run's "
        "counts died with it; the proxy's count both runs): every attempt by kind, the retries also as "
        "`RETRIED` (after a 5xx, a reset, a cut body or a timeout) or `THROTTLED` (after a `503 SlowDown`, "
        "paced by `workers/storage/pacing.py`).",
        "- **actor peak RSS**: the largest VmHWM of the job's actor processes, sampled each second.",
        "- **served rate vs limit** (throttled job): the photos' GETs the proxy served (aimed less "
        f"rate-limited) per second while they went from {STEADY[0]:.0%} to {STEADY[1]:.0%} of the images, "
        "over the limit.",
        "",
        line,
    ]


def job_section(job: Job, clear: Job) -> list[str]:
    """A job's heading, table and blank line."""
    output, requests = job.output, job.requests
    rows = [
        ["driver runs", _runs(job)],
        ["images in OUTPUT, exactly once", f"{output.distinct:,}, {'yes' if output.exactly_once else 'no'}"],
        [
            "missing, duplicated, foreign rows",
            f"{output.missing}, {output.rows - output.distinct}, {output.foreign}",
        ],
        ["error rows", f"{output.errors}"],
        ["failed shards", f"{job.failed}"],
        ["images/s (processing)", f"{job.rate:.1f}"],
        ["vs clear", f"{job.rate / clear.rate:.2f}"],
        ["processing time, wall clock", f"{sum(r.processing_s for r in job.runs):.0f} s, {job.wall_s:.0f} s"],
        ["actor processes killed", f"{job.watch.kills}"],
        ["shards redone elsewhere", _kinds(job.runs[-1].record["redone_shards"]) or "0"],
        ["actor peak RSS", f"{job.peak_mb:.0f} MB"],
        ["client requests", _kinds({k: v for k, v in requests.items() if k not in ("RETRIED", "THROTTLED")})],
        ["client retries: RETRIED, THROTTLED", f"{requests['RETRIED']:,}, {requests['THROTTLED']:,}"],
    ]
    return [f"## {job.name.capitalize()}", "", *table(["figure", "value"], rows), ""]


def _runs(job: Job) -> str:
    """How many driver runs, and how the first of two ended."""
    if len(job.runs) == 1:
        return "1"
    first = job.runs[0]
    if first.exit_code is None:
        return f"2: the first killed after {first.wall_s:.0f} s with {first.images:,} images committed"
    return f"2: the first ended by itself (exit {first.exit_code}) after {first.wall_s:.0f} s, not killed"


FAULT_WORDS = {  # infra.fault_proxy.FAULTS, in the order
    "slowdown": "`503 SlowDown`",
    "internal": "`500 InternalError`",
    "reset_before": "connections reset before the response",
    "reset_during": "connections reset in the body",
    "cut_body": "bodies cut short",
    "stall": "responses held {stall_s:g} s",
}


def _faults(weather: Weather) -> str:
    """The weather's faults in words: `3% `503 SlowDown`, 1% ...`."""
    words = [
        f"{rate * 100:g}% {words.format(stall_s=weather.stall_s)}"
        for fault, words in FAULT_WORDS.items()
        if (rate := getattr(weather, fault))
    ]
    return ", ".join(words)


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/WEATHER.md")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between actor kills")
    parser.add_argument("--kill-driver-at", type=float, default=0.4, help="share of the images")
    parser.add_argument("--limit-share", type=float, default=0.5, help="of the clear job's GET rate")
    parser.add_argument("--input-size", default="160x160")
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--cpus-per-actor", type=int, default=1)
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--verbose", action="store_true", help="echo the jobs' stderr")
    args = parser.parse_args()
    lines = main_run(args)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(lines[-1])


if __name__ == "__main__":
    main()
