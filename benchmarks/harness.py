"""What the throughput benchmarks share (`benchmarks/throughput.py`, `benchmarks/levers.py`): the data sets
in a local SeaweedFS, OpenVINO's `benchmark_app`, `facesweep run` under a CPU and memory watch, and the
naive loop a user writes first.

    .venv/bin/python benchmarks/harness.py naive MODEL MANIFEST SECONDS   # the naive loop (a subprocess)
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # infra/ is the checkout's, not installed
from infra.local_s3 import LocalS3

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "bench"
SUBSET = Path("data/widerface/val-subset-145/images")
CLOCK_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
# facesweep.progress.LogProgress, one line per finished shard: `shard 3: 192/435 images, ...`, or for
# containers, whose images are counted as they are read, `shard 3 of 7+: 192 images, ...`
SHARD_LINE = re.compile(r"^shard \d+(?: of \d+\+?)?: (\d+)[/ ]")
PARQUET_ROWS = 16  # images per row group of the benchmark's Parquet tables (about 2 MB of WIDER photos)
ROLES = ("actor", "s3", "driver", "other", "idle")  # where the machine's core-time goes during a run


@dataclass(frozen=True)
class BenchModel:
    name: str
    model: str  # a built-in name, or a path below ../shared
    shared: bool = True

    def argument(self, shared: Path) -> str:
        return str(shared / self.model) if self.shared else self.model


MODELS = (
    BenchModel("face-detection-0204", "models/face-detection-0204/FP16/face-detection-0204.xml"),
    BenchModel("mnet25-ir", "models/retinaface-mnet025-insightface/retinaface-mnet025-bgr-640.xml"),
    BenchModel("retinaface-mnet025", "retinaface-mnet025", shared=False),
)
DEFAULT = MODELS[-1]


INT8_CACHE = REPO / ".cache" / "frontier"
INT8_PRESET = "mixed"  # `facesweep quantize`'s default


class QuantizeFailed(RuntimeError):
    """`facesweep quantize` exited with an error (its last line)."""


def int8_model(model: str, calibration: Path) -> tuple[Path, float]:
    """The INT8 IR of MODEL (a built-in name or a path) and the seconds this call spent making it (0 when
    cached): `facesweep quantize MODEL --calibration CALIBRATION --preset mixed --seconds 0`, made once and
    kept under .cache/frontier/ by MODEL's SHA-256 (`make frontier` and `make bench` share it)."""
    from facesweep.workers.model.catalog import model_checksum, resolve_model

    source = resolve_model(model)
    folder = INT8_CACHE / f"{model_checksum(source)[:16]}-{INT8_PRESET}"
    out = folder / f"{source.stem}-int8.xml"
    if out.is_file():
        return out, 0.0
    INT8_CACHE.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{folder.name}.", dir=INT8_CACHE))
    command = [
        facesweep_command(),
        *("quantize", model, "--calibration", str(calibration), "--out", str(partial / out.name)),
        *("--preset", INT8_PRESET, "--seconds", "0"),
    ]
    print(f"  quantizing {model} (cached in {folder})", file=sys.stderr, flush=True)
    clock = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise QuantizeFailed((done.stderr.strip().splitlines() or ["no output"])[-1][:300])
    seconds = time.perf_counter() - clock
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)  # whole or not at all: a run killed while quantizing leaves no half IR
    return out, seconds


def table(header: list[str], rows: list[list[object]]) -> list[str]:
    """A Markdown table's lines; cells as given (format numbers before)."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(map(str, row)) + " |" for row in rows),
    ]


def facesweep_command() -> str:
    """The `facesweep` beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("facesweep")
    found = str(beside) if beside.is_file() else shutil.which("facesweep")
    if not found:
        sys.exit("benchmark: no `facesweep` command: run with the project's venv (.venv/bin/python)")
    return found


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def generated_by(target: str, script: str, started: float) -> str:
    """The line that says which command wrote a document, when, on what, and how long it took."""
    return (
        f"Generated by `make {target}` (`benchmarks/{script}`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; the whole run "
        f"took {(time.monotonic() - started) / 60:.1f} minutes."
    )


def require_shared(shared: Path, script: str) -> None:
    if not (shared / SUBSET).is_dir():
        raise SystemExit(f"{script}: {shared / SUBSET} is missing: run it with ../shared beside the checkout")


@dataclass
class DataSet:
    name: str
    description: str
    photos: dict[str, bytes]  # relative key -> JPEG bytes
    decode_s: float = 0.0  # single-threaded full-size cv2.imdecode seconds per image

    def keys(self, count: int) -> list[str]:
        """The first `count` object keys of this set's copies (copy-major, so any prefix is balanced)."""
        names = sorted(self.photos)
        return [f"{self.name}/c{i // len(names):03d}/{names[i % len(names)]}" for i in range(count)]

    @property
    def mean_kb(self) -> float:
        return sum(map(len, self.photos.values())) / len(self.photos) / 1024


def data_sets(shared: Path) -> list[DataSet]:
    """WIDER val-subset-145 as it is, and the same photos re-encoded to 1920x1080 JPEG (quality 90)."""
    paths = sorted((shared / SUBSET).rglob("*.jpg"))
    wider = {str(p.relative_to(shared / SUBSET)): p.read_bytes() for p in paths}
    full_hd = {}
    for key, data in wider.items():
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        resized = cv2.resize(image, (1920, 1080), interpolation=cv2.INTER_LINEAR)
        full_hd[key] = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    sets = [
        DataSet("wider", f"val-subset-145 as it is ({len(wider)} JPEGs, 1024 px wide)", wider),
        DataSet(
            "1080p", f"the same {len(full_hd)} photos re-encoded to 1920x1080 JPEG (quality 90)", full_hd
        ),
    ]
    for data in sets:
        data.description += f", {data.mean_kb:.0f} KB on average"
        data.decode_s = decode_seconds(data.photos)
    return sets


def full_size_decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def decode_seconds(
    photos: dict[str, bytes], repeats: int = 3, decode: Callable[[bytes], object] = full_size_decode
) -> float:
    """Single-threaded seconds per image of `decode` (a full-size cv2.imdecode unless told), best of
    `repeats` passes."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for data in photos.values():
            decode(data)
        best = min(best, (time.perf_counter() - started) / len(photos))
    cv2.setNumThreads(threads)
    return best


class Store:
    """The bucket the benchmarks read and write: copies of the data sets, uploaded on demand, and
    manifests of their first N keys."""

    def __init__(self, server: LocalS3, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.client = server.client()
        self.client.create_bucket(Bucket=BUCKET)
        self._copies: dict[str, int] = {}

    def manifest(self, data: DataSet, count: int) -> Path:
        """A manifest of `count` images of the set, uploading the copies it needs."""
        names = sorted(data.photos)
        wanted = math.ceil(count / len(names))
        objects = {
            f"{data.name}/c{copy:03d}/{name}": data.photos[name]
            for copy in range(self._copies.get(data.name, 0), wanted)
            for name in names
        }
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda item: self.client.put_object(Bucket=BUCKET, Key=item[0], Body=item[1]),
                    objects.items(),
                )
            )
        self._copies[data.name] = max(self._copies.get(data.name, 0), wanted)
        path = self.folder / f"{data.name}-{count}.txt"
        path.write_text("".join(f"s3://{BUCKET}/{key}\n" for key in data.keys(count)))
        return path

    def containers(self, data: DataSet, count: int, kind: str) -> Path:
        """A manifest of the containers (`tar`: WebDataset shards; `parquet`: tables of image bytes) holding
        at least `count` images of the set, one copy of the set per container."""
        copies = math.ceil(count / len(data.photos))
        keys = [f"{data.name}/{kind}/c{copy:03d}.{kind}" for copy in range(copies)]
        body = self._container(data, kind)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda key: self.client.put_object(Bucket=BUCKET, Key=key, Body=body), keys))
        path = self.folder / f"{data.name}-{kind}-{count}.txt"
        path.write_text("".join(f"s3://{BUCKET}/{key}\n" for key in keys))
        return path

    @staticmethod
    def _container(data: DataSet, kind: str) -> bytes:
        """The set as one container: a WebDataset tar (each sample an image and its .json) or a Parquet
        table of `key` and `image` bytes in row groups of PARQUET_ROWS."""
        names = sorted(data.photos)
        sink = io.BytesIO()
        if kind == "parquet":
            table = pa.table({"key": names, "image": [data.photos[n] for n in names]})
            pq.write_table(table, sink, row_group_size=PARQUET_ROWS)
            return sink.getvalue()
        with tarfile.open(fileobj=sink, mode="w") as archive:
            for i, name in enumerate(names):
                for member, body in ((f"{i:06d}.jpg", data.photos[name]), (f"{i:06d}.json", b"{}")):
                    info = tarfile.TarInfo(member)
                    info.size = len(body)
                    archive.addfile(info, io.BytesIO(body))
        return sink.getvalue()

    def json(self, output: str, name: str) -> dict:
        prefix = output.removeprefix(f"s3://{BUCKET}/").rstrip("/")
        return json.loads(self.client.get_object(Bucket=BUCKET, Key=f"{prefix}/{name}")["Body"].read())


def pinned(cores: int) -> list[str]:
    """A command prefix that keeps a process (and its children) on the first `cores` CPUs."""
    return [] if cores >= (os.cpu_count() or 1) else ["taskset", "-c", ",".join(map(str, range(cores)))]


def benchmark_app(
    model_path: str, input_size: tuple[int, int], cores: int, seconds: int, precision: str = ""
) -> float:
    """OpenVINO benchmark_app's throughput (FPS): THROUGHPUT hint, `cores` threads, pinning off."""
    config = {"INFERENCE_NUM_THREADS": str(cores), "ENABLE_CPU_PINNING": "NO"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump({"CPU": config}, file)
        file.flush()
        width, height = input_size
        command = [
            *pinned(cores),
            str(BIN / "benchmark_app"),
            *("-m", model_path, "-d", "CPU", "-hint", "throughput", "-load_config", file.name),
            *("-t", str(seconds), "-shape", f"[1,3,{height},{width}]"),
        ]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if "Throughput:" in line]
    return float(lines[-1].split("Throughput:")[1].split()[0])


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _machine_ticks() -> tuple[int, int]:
    """(busy, idle) clock ticks of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq + steal, idle + iowait


@dataclass
class Snapshot:
    images: int
    seconds: float
    ticks: dict[str, int]  # by role


class Watch:
    """Watches one `facesweep run`: the peak RSS (VmHWM) of its driver and of each actor (ray::ShardWorker),
    and snapshots of where the machine's CPU time went (by role) each time a shard finishes."""

    def __init__(self, driver_pid: int, s3_pid: int) -> None:
        self.driver_pid, self.s3_pid = driver_pid, s3_pid
        self.peak_kib: dict[int, int] = {}
        self.actors: set[int] = set()
        self.snapshots: list[Snapshot] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for pid_dir in Path("/proc").iterdir():
                if not pid_dir.name.isdigit():
                    continue
                pid = int(pid_dir.name)
                try:
                    if pid != self.driver_pid:
                        if not (pid_dir / "cmdline").read_bytes().startswith(b"ray::ShardWorker"):
                            continue
                        self.actors.add(pid)
                    status = (pid_dir / "status").read_text()
                except OSError:
                    continue
                hwm = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
                if hwm:
                    self.peak_kib[pid] = max(self.peak_kib.get(pid, 0), int(hwm.split()[1]))

    def snapshot(self, images: int) -> None:
        busy, idle = _machine_ticks()
        ticks = {
            "actor": sum(map(cpu_ticks, self.actors)),
            "s3": cpu_ticks(self.s3_pid),
            "driver": cpu_ticks(self.driver_pid),
            "idle": idle,
        }
        ticks["other"] = busy - ticks["actor"] - ticks["s3"] - ticks["driver"]
        self.snapshots.append(Snapshot(images, time.monotonic(), ticks))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class JobRun:
    """One `facesweep run` as the benchmarks see it."""

    record: dict  # its _job.json
    driver_mb: float
    actor_mb: list[float]
    window_images: int  # between the first and the last finished shard
    window_seconds: float
    core_ms: dict[str, float] = field(default_factory=dict)  # per image in that window, by role

    @property
    def img_s(self) -> float:
        """The job's own clock: images per second once the actors were ready."""
        return self.record["this_run"]["processing_images_per_second"]

    def stage_ms(self) -> dict[str, float]:
        return self.record["this_run"]["stage_ms_per_image"]


def facesweep_run(
    store: Store,
    manifest: Path,
    output: str,
    model: str,
    cores: int,
    *options: str,
) -> JobRun:
    """Runs the real CLI on `cores` CPUs: one actor with them, unless `options` say
    otherwise."""
    command = [
        *pinned(cores),
        str(BIN / "facesweep"),
        *("run", str(manifest), output, f"--model={model}", "--actors=1", f"--cpus-per-actor={cores}"),
        "--overwrite",
        *options,
    ]
    env = {
        **os.environ,
        **store.server.env(),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watch = Watch(process.pid, store.server.pid)
    log = []
    for line in process.stderr:
        log.append(line)
        if match := SHARD_LINE.match(line):
            watch.snapshot(int(match.group(1)))
    process.wait()
    watch.stop()
    if process.returncode != 0:
        raise SystemExit(
            f"facesweep run failed ({process.returncode}): {' '.join(command)}\n{''.join(log[-30:])}"
        )
    first, last = watch.snapshots[0], watch.snapshots[-1]
    images = last.images - first.images
    core_ms = {
        role: (last.ticks[role] - first.ticks[role]) * CLOCK_TICK_MS / max(images, 1) for role in ROLES
    }
    return JobRun(
        store.json(output, "_job.json"),
        watch.peak_kib.get(process.pid, 0) / 1024,
        [watch.peak_kib[pid] / 1024 for pid in sorted(watch.actors) if pid in watch.peak_kib],
        images,
        last.seconds - first.seconds,
        core_ms,
    )


def naive(store: Store, model: str, manifest: Path, cores: int, seconds: float) -> tuple[int, float]:
    """(images, images/s) of the naive loop, run in a subprocess on `cores` CPUs for about `seconds`."""
    command = [*pinned(cores), sys.executable, __file__, "naive", model, str(manifest), str(seconds)]
    out = subprocess.run(command, env={**os.environ, **store.server.env()}, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"naive loop failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["images"], result["img_s"]


def naive_loop(model: str, uris: list[str], seconds: float) -> dict:
    """The loop a user writes first: per image download, cv2.imdecode, resize, NumPy to NCHW float,
    synchronous infer (compile_model's defaults), decode, append; then one Parquet write."""
    import boto3
    import openvino as ov

    from facesweep.workers.config import DetectorSettings
    from facesweep.workers.model.plan import inspect_model
    from facesweep.workers.model.runtime import infer, read_model
    from facesweep.workers.model.views import image_views
    from facesweep.workers.output.schema import ImageResult, results_table

    plan = inspect_model(DetectorSettings(model=model))  # our resize rule and our decoder, no more
    preprocess = plan.preprocess
    network = read_model(str(plan.path), model)
    width, height = preprocess.input_size
    network.reshape({network.input(): ov.PartialShape([1, 3, height, width])})
    compiled = ov.Core().compile_model(network, "CPU")
    mean = np.array(preprocess.mean, np.float32)
    scale = np.array(preprocess.scale, np.float32)
    s3 = boto3.client("s3")
    results = []
    started = time.perf_counter()
    for uri, data in naive_images(s3, uris):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        prepared = image_views(image, preprocess)
        pixels = prepared.views[0].tensor
        if preprocess.color == "RGB":
            pixels = pixels[..., ::-1]
        blob = ((pixels.astype(np.float32) - mean) / scale).transpose(0, 3, 1, 2)
        outputs = infer(compiled, blob)
        (tensors,) = plan.format.split([outputs[i] for i in plan.outputs], 1)
        faces = prepared.geometry.to_original(
            plan.format.decode(tensors, prepared.views[0].net_size, plan.decode)
        )
        results.append(ImageResult(uri, image.shape[1], image.shape[0], faces=faces))
        if time.perf_counter() - started > seconds:
            break
    sink = pa.BufferOutputStream()
    pq.write_table(results_table(results, model), sink)
    s3.put_object(Bucket=BUCKET, Key="naive/out.parquet", Body=sink.getvalue().to_pybytes())
    elapsed = time.perf_counter() - started
    return {"images": len(results), "img_s": len(results) / elapsed}


def naive_images(s3, uris: list[str]) -> Iterator[tuple[str, bytes]]:
    """Each image as a user's loop reads it: an object by its GET; a container by one GET of all of it,
    then its members (tarfile) or its `image` column (pyarrow)."""
    for uri in uris:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if uri.endswith(".tar"):
            with tarfile.open(fileobj=io.BytesIO(data)) as archive:
                for member in archive:
                    if member.name.endswith(".jpg"):
                        yield f"{uri}#{member.name}", archive.extractfile(member).read()
        elif uri.endswith(".parquet"):
            images = pq.read_table(io.BytesIO(data), columns=["image"])["image"].to_pylist()
            yield from ((f"{uri}#row={n}", image) for n, image in enumerate(images))
        else:
            yield uri, data


if __name__ == "__main__" and sys.argv[1:2] == ["naive"]:
    print(json.dumps(naive_loop(sys.argv[2], Path(sys.argv[3]).read_text().split(), float(sys.argv[4]))))
