"""Throughput at the model's limit, side by side in one run: `make bench` writes docs/BENCHMARKS.md.

    .venv/bin/python benchmarks/throughput.py [--shared PATH] [--out docs/BENCHMARKS.md] [--quick]

For each model (face-detection-0204 FP16, the insightface mnet.25 IR, the default model and its INT8,
`facesweep quantize`'s on the WIDER photos, cached in .cache/frontier/ as `make frontier` makes it) and
each data set (WIDER val-subset-145 as it is, and the same photos re-encoded to 1920x1080 JPEG), all in
one run on one local SeaweedFS, with the images as objects and, for the default model, also as WebDataset
tar shards and as Parquet tables of image bytes:
- model_img_s: OpenVINO's own `benchmark_app -hint throughput`, same model, device and thread count, right
  before and right after each end-to-end run (their mean; the pair is measured again, with the run,
  when the two differ by more than MODEL_DRIFT);
- decode_s: single-threaded full-size `cv2.imdecode` per image of the set;
- limit_img_s = 1 / (1/model_img_s + decode_s/cores): one JPEG decode and one inference per image;
- limit_same_decode_img_s: the same with the decode the job did instead (`job_decode_seconds`: a JPEG
  decoded at 1/2..1/8 in libjpeg where the model's input allows, as the 1080p photos are), so that
  e2e_vs_same_decode is the pipeline's share of e2e_vs_limit and the rest is the reduced decode's;
- e2e: `facesweep run` from SeaweedFS to Parquet in SeaweedFS, images/s from the job's own clock
  (after start-up), with enough copies of the set for >= STEADY_S seconds of it;
- naive: the loop a user writes first (benchmarks/harness.py), same model and data;
- where the time goes: the job's per-stage CPU ms per image, and the machine's core-time by process;
- the trend with 1 and 2 cores, and what it predicts for 16;
- peak RSS of the driver and of each actor for 1,000 and 10,000 images.
The last lines printed are one `RATIO ...` line per model, data set and input kind.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
from harness import (
    DEFAULT,
    INT8_PRESET,
    MODELS,
    PARQUET_ROWS,
    REPO,
    ROLES,
    SUBSET,
    BenchModel,
    DataSet,
    JobRun,
    Store,
    benchmark_app,
    data_sets,
    decode_seconds,
    facesweep_run,
    generated_by,
    int8_model,
    naive,
    require_shared,
    table,
)

from facesweep.workers.config import DetectorSettings
from facesweep.workers.inputs.images import decode_reduced
from facesweep.workers.model.catalog import resolve_model
from facesweep.workers.model.plan import inspect_model
from facesweep.workers.model.views import reduction
from infra.local_s3 import start_local_s3

STEADY_S = 30.0  # seconds of steady state (after start-up) per end-to-end run, at least
EXPECTED_VS_LIMIT = 0.8  # the first try's images: STEADY_S at this fraction of the limit
NAIVE_S = 10.0  # seconds of the naive loop per model and set (its rate is steady from the first images)
MODEL_S = 8  # benchmark_app duration
MODEL_DRIFT = 0.10  # benchmark_app before and after a run differing by more: the run is measured again
MODEL_TRIES = 3
CONTAINER_INPUTS = ("tar", "parquet")  # besides objects, for the default model
MEMORY_COUNTS = (1_000, 10_000)
MEMORY_SIZE = (256, 170)  # thumbnails for the memory runs, so that 10,000 images take under a minute
MEMORY_INPUT = "160x160"
RATE_HEADER = (
    "cores",
    "model_img_s",
    "limit_img_s",
    "e2e_img_s",
    "naive_img_s",
    "e2e / limit",
    "e2e / naive",
)
THREAD_STAGES = ("fetch", "decode", "preprocess", "decode_nms", "write")  # thread CPU time in the job


@dataclass
class Run:
    """One model on one set on `cores` CPUs."""

    model: BenchModel
    data: DataSet
    cores: int
    input: str = "objects"  # objects | tar | parquet
    model_rates: list[float] = field(default_factory=list)  # benchmark_app right before and after the run
    job: JobRun | None = None
    naive_img_s: float = 0.0
    naive_images: int = 0
    same_decode_s: float = 0.0  # job_decode_seconds: the decode the job does, seconds per image

    @property
    def model_img_s(self) -> float:
        return sum(self.model_rates) / len(self.model_rates)

    def _limit(self, decode_s: float) -> float:
        return 1 / (1 / self.model_img_s + decode_s / self.cores)

    @property
    def limit_img_s(self) -> float:
        """One full-size decode and one inference per image."""
        return self._limit(self.data.decode_s)

    @property
    def limit_same_decode_img_s(self) -> float:
        """One inference and the decode the job did per image (reduced where the model allows)."""
        return self._limit(self.same_decode_s)

    @property
    def e2e_img_s(self) -> float:
        return self.job.img_s

    @property
    def core_ms(self) -> float:
        """The machine's core-milliseconds per image at the end-to-end rate."""
        return 1000 * self.cores / self.e2e_img_s

    @property
    def ceiling_img_s(self) -> float:
        """What the cores allow for the model, a full-size decode and the store's CPU per image."""
        model_ms, decode_ms = 1000 * self.cores / self.model_img_s, 1000 * self.data.decode_s
        return 1000 * self.cores / (model_ms + decode_ms + self.job.core_ms["s3"])

    def rate_cells(self) -> list[object]:
        """The cells under RATE_HEADER."""
        return [
            self.cores,
            *(
                f"{rate:.1f}"
                for rate in (self.model_img_s, self.limit_img_s, self.e2e_img_s, self.naive_img_s)
            ),
            f"{self.e2e_img_s / self.limit_img_s:.2f}",
            f"{self.e2e_img_s / self.naive_img_s:.2f}",
        ]

    def ratio_line(self) -> str:
        return (
            f"RATIO model={self.model.name} data={self.data.name} input={self.input} "
            f"e2e_img_s={self.e2e_img_s:.1f} model_img_s={self.model_img_s:.1f} "
            f"limit_img_s={self.limit_img_s:.1f} e2e_vs_limit={self.e2e_img_s / self.limit_img_s:.2f} "
            f"limit_same_decode_img_s={self.limit_same_decode_img_s:.1f} "
            f"e2e_vs_same_decode={self.e2e_img_s / self.limit_same_decode_img_s:.2f} "
            f"e2e_vs_ceiling={self.e2e_img_s / self.ceiling_img_s:.2f} "
            f"e2e_vs_naive={self.e2e_img_s / self.naive_img_s:.2f}"
        )


def job_decode_seconds(data: DataSet, model: str) -> float:
    """Single-threaded seconds per image of the decode `facesweep run MODEL` does with default options
    (--reduced-decode, no --tile): each JPEG at the reduction `views.reduction` allows for the model's
    input, by the job's own `decode_reduced`."""
    settings = DetectorSettings(model=model)
    reduction_for = partial(reduction, inspect_model(settings).preprocess, settings.scales)
    return decode_seconds(data.photos, decode=partial(decode_reduced, reduction_for=reduction_for))


def measure(store: Store, run: Run, shared: Path, tag: str, model_rate: Callable[[], float]) -> None:
    """The e2e run between two benchmark_app runs (`model_rate`), repeated with more images if its steady
    state came out shorter than STEADY_S, or when the model's rate drifted; then the naive loop."""
    model = run.model.argument(shared)
    run.same_decode_s = job_decode_seconds(run.data, model)
    run.model_rates = [model_rate()]
    count = math.ceil(STEADY_S * EXPECTED_VS_LIMIT * run.limit_img_s)
    for _ in range(MODEL_TRIES):
        manifest = (
            store.manifest(run.data, count)
            if run.input == "objects"
            else store.containers(run.data, count, run.input)
        )
        run.job = facesweep_run(store, manifest, f"s3://bench/out/{tag}/", model, run.cores)
        run.model_rates.append(model_rate())
        before, after = run.model_rates[-2:]
        steady = run.job.record["this_run"]["images"] / run.e2e_img_s
        if steady < STEADY_S:
            count = math.ceil(count * 1.1 * STEADY_S / steady)
            print(f"  {steady:.0f} s of steady state: again with {count} images", file=sys.stderr)
        elif abs(before - after) > MODEL_DRIFT * max(before, after):
            print(f"  benchmark_app {before:.1f} then {after:.1f} FPS: again", file=sys.stderr)
        else:
            break
        run.model_rates = [after]
    run.model_rates = run.model_rates[-2:]
    run.naive_images, run.naive_img_s = naive(store, model, manifest, run.cores, NAIVE_S)
    print(f"  {run.ratio_line()}", file=sys.stderr, flush=True)


def memory_runs(store: Store, shared: Path) -> list[tuple[int, JobRun]]:
    paths = sorted((shared / SUBSET).rglob("*.jpg"))
    small = {}
    for path in paths:
        image = cv2.resize(cv2.imread(str(path)), MEMORY_SIZE, interpolation=cv2.INTER_AREA)
        small[str(path.relative_to(shared / SUBSET))] = cv2.imencode(".jpg", image)[1].tobytes()
    data = DataSet("small", "", small)
    rows = []
    for count in MEMORY_COUNTS:
        manifest = store.manifest(data, count)
        job = facesweep_run(
            store,
            manifest,
            f"s3://bench/out/memory-{count}/",
            DEFAULT.model,
            2,
            f"--input-size={MEMORY_INPUT}",
        )
        rows.append((count, job))
        print(
            f"  memory: {count} images, driver {job.driver_mb:.0f} MB, actors {job.actor_mb}", file=sys.stderr
        )
    return rows


def ratio_table(runs: list[Run]) -> list[str]:
    header = ["model", "data", "input", *RATE_HEADER, "model before / after", "e2e images (s)"]
    header += ["start-up s", "faces"]
    rows = []
    for r in runs:
        this = r.job.record["this_run"]
        steady = this["seconds"] - this["startup_seconds"]
        rows.append(
            [
                r.model.name,
                r.data.name,
                r.input,
                *r.rate_cells(),
                " / ".join(f"{rate:.1f}" for rate in r.model_rates),
                f"{this['images']} ({steady:.0f})",
                f"{this['startup_seconds']:.1f}",
                this["faces"],
            ]
        )
    return table(header, rows)


def int8_table(runs: list[Run]) -> list[str]:
    """The default model's INT8 runs beside its FP ones on the same set (objects input)."""
    fp = {r.data.name: r for r in runs if r.model is DEFAULT and r.input == "objects"}
    rows = []
    for r in runs:
        if r.model.name == f"{DEFAULT.name}-int8" and r.data.name in fp:
            f = fp[r.data.name]
            actor = [run.job.record["this_run"]["actor_cpu_ms_per_image"] for run in (f, r)]
            rows.append(
                [
                    r.data.name,
                    *(f"{rate:.1f}" for rate in (f.model_img_s, r.model_img_s)),
                    f"{r.model_img_s / f.model_img_s:.2f}",
                    *(f"{rate:.1f}" for rate in (f.e2e_img_s, r.e2e_img_s)),
                    f"{r.e2e_img_s / f.e2e_img_s:.2f}",
                    *(f"{ms:.2f}" for ms in actor),
                    f"{actor[0] / actor[1]:.2f}",
                ]
            )
    header = ["data", "model_img_s FP", "INT8", "INT8 / FP", "e2e_img_s FP", "INT8", "INT8 / FP"]
    return table([*header, "actor CPU ms FP", "INT8", "FP / INT8"], rows)


def stage_table(runs: list[Run]) -> list[str]:
    header = ["model", "data", "input", *THREAD_STAGES, "inference and the rest", "actor total"]
    header += ["infer latency"]
    rows = []
    for r in runs:
        stages = r.job.stage_ms()
        actor = r.job.record["this_run"]["actor_cpu_ms_per_image"]
        rest = actor - sum(stages.get(s, 0.0) for s in THREAD_STAGES)
        share = stages.get("decode_nms", 0.0) / r.core_ms
        rows.append(
            [
                r.model.name,
                r.data.name,
                r.input,
                *(f"{stages.get(s, 0.0):.2f}" for s in THREAD_STAGES),
                f"{rest:.2f}",
                f"{actor:.2f}",
                f"{stages.get('infer', 0.0):.1f}",
                f"{share:.2%}",
            ]
        )
    return table([*header, "decode+NMS share"], rows)


def machine_table(runs: list[Run]) -> list[str]:
    header = ["model", "data", "input", "cores", "core-ms per image", "model alone", "full-size JPEG decode"]
    header += [*ROLES, "window images (s)", "ceiling img/s", "e2e / ceiling"]
    rows = []
    for r in runs:
        model_ms, decode_ms = 1000 * r.cores / r.model_img_s, 1000 * r.data.decode_s
        rows.append(
            [
                *(r.model.name, r.data.name, r.input, r.cores, f"{r.core_ms:.2f}", f"{model_ms:.2f}"),
                f"{decode_ms:.2f}",
                *(f"{r.job.core_ms[role]:.2f}" for role in ROLES),
                f"{r.job.window_images} ({r.job.window_seconds:.0f})",
                f"{r.ceiling_img_s:.1f}",
                f"{r.e2e_img_s / r.ceiling_img_s:.2f}",
            ]
        )
    return table(header, rows)


def trend_lines(one: Run, two: Run) -> list[str]:
    rows = [r.rate_cells() for r in (one, two)]
    # the naive loop runs one image at a time: only its inference uses more cores (Amdahl's law)
    t1, t2 = 1 / one.naive_img_s, 1 / two.naive_img_s
    parallel = max(2 * (t1 - t2), 0.0)
    serial = t1 - parallel
    naive_16 = 1 / (serial + parallel / 16)
    actors_16 = 16 // two.cores
    e2e_16 = actors_16 * two.e2e_img_s
    limit_16 = 1 / (1 / (actors_16 * two.model_img_s) + two.data.decode_s / 16)
    return [
        *table(RATE_HEADER, rows),
        "",
        f"The prediction for 16 cores. facesweep: {actors_16} actors of {two.cores} CPUs, which share "
        f"nothing but the store, each at the measured 2-core rate: {actors_16} x {two.e2e_img_s:.1f} = "
        f"**{e2e_16:.0f} images/s** (limit {limit_16:.0f}, with benchmark_app's 2-core rate per 2 cores). "
        "The naive loop: fitting t(n) = serial + parallel/n to its 1- and 2-core times "
        f"({1000 * t1:.2f} and {1000 * t2:.2f} ms per image) gives serial {1000 * serial:.2f} ms and "
        f"parallel {1000 * parallel:.2f} ms, so at 16 cores **{naive_16:.0f} images/s**: e2e / naive "
        f"would be **{e2e_16 / naive_16:.1f}** (against {two.e2e_img_s / two.naive_img_s:.2f} measured at "
        f"2 cores and {one.e2e_img_s / one.naive_img_s:.2f} at 1). A prediction from two measured points, "
        "not a measurement: this machine has 2 cores, and at 16 the store would have to serve 16 cores' "
        "worth of GETs (here SeaweedFS shares the 2 cores).",
    ]


def memory_table(memory: list[tuple[int, JobRun]]) -> list[str]:
    rows = [
        [
            f"{count:,}",
            f"{job.driver_mb:.0f}",
            ", ".join(f"{mb:.0f}" for mb in job.actor_mb) or "not seen",
            f"{job.img_s:.1f}",
        ]
        for count, job in memory
    ]
    return table(["images", "driver peak MB", "actor peak MB", "images/s"], rows)


def report(runs: list[Run], one: Run, memory: list, started: float, sets: list[DataSet]) -> str:
    cores = runs[0].cores
    lines = [
        "# Throughput",
        "",
        generated_by("bench", "throughput.py", started) + " Every figure below comes from this one run.",
        "",
        "Data sets, in a local SeaweedFS on this machine:",
        *[
            f"- `{d.name}`: {d.description}; full-size `cv2.imdecode` {d.decode_s * 1000:.2f} ms per image"
            for d in sets
        ],
        "",
        "Inputs: `objects` (one S3 object per image, listed in a manifest); for the default model also "
        "`tar` (WebDataset shards, one copy of the set per `.tar`, each sample a `.jpg` and a `.json`) and "
        "`parquet` (one copy of the set per table, the JPEG bytes in an `image` column, row groups of "
        f"{PARQUET_ROWS}); the containers are listed in a manifest and read by piece with ranged GETs.",
        f"`{DEFAULT.name}-int8`: the default model quantized to INT8 (`facesweep quantize {DEFAULT.name} "
        f"--calibration ../shared/{SUBSET} --preset {INT8_PRESET}`, cached in .cache/frontier/ as "
        "`make frontier` makes it; its WIDER AP: docs/FRONTIER.md), objects input, each run right after the "
        "FP one on the same set.",
        "",
        f"- model_img_s: `benchmark_app -d CPU -hint throughput -t {MODEL_S}` with `INFERENCE_NUM_THREADS` = "
        "the cores and pinning off (as the actors run), same model and input size, right before and right "
        "after each e2e run (both shown; the figure is their mean, and a run whose two differ by more than "
        f"{MODEL_DRIFT:.0%} is measured again);",
        "- limit_img_s = 1 / (1/model_img_s + decode_s/cores): one full-size JPEG decode and one inference "
        "per image (decoding at reduced scale, which facesweep does for big photos, can beat it);",
        f"- e2e: `facesweep run MANIFEST s3://bench/out/... --actors=1 --cpus-per-actor={cores}` (default "
        "options, score threshold 0.5), images/s from the job's own clock after start-up, at least "
        f"{STEADY_S:.0f} s of it;",
        "- naive: per image a boto3 GET (a container: one GET of all of it, then `tarfile` or pyarrow), "
        "`cv2.imdecode`, the same resize, NumPy to NCHW float, synchronous infer (`compile_model` "
        f"defaults), the same decode, append; one Parquet write at the end ({NAIVE_S:.0f} s of it).",
        "",
        *ratio_table(runs),
        "",
        "The default model's INT8 beside its FP (objects; INT8 / FP of each rate, and the actor's CPU "
        "milliseconds per image from `_job.json`):",
        "",
        *int8_table(runs),
        "",
        "## Where the time goes",
        "",
        "Per image, from the e2e runs' `_job.json`: CPU milliseconds of the actor's threads in each stage "
        "(fetch = the GET, or a container piece's ranged GETs and its members' parsing; decode = JPEG "
        "decode, at reduced scale where the photo allows; preprocess = "
        "resize into the input tensor; decode+NMS = the raw outputs to faces; write = the shard's "
        "Parquet); the inference and the rest (the actor's CPU time less those stages: OpenVINO's "
        "threads, Ray, thread switches); the actor's total; the inference latency (ms per request; "
        "several run at once). decode+NMS share = its CPU ms over the machine's core-ms per image (cores x "
        "wall ms).",
        "",
        *stage_table(runs),
        "",
        "The machine's core-milliseconds per image between the first and the last finished shard, by process "
        "(from /proc): the actor, the SeaweedFS server answering the GETs and PUTs, the `facesweep run` "
        "driver, other (Ray's own processes, the kernel's interrupts, everything else) and idle; beside them "
        "what the model alone needs (benchmark_app) and a full-size JPEG decode. The ceiling is what the "
        "cores allow if the actor did nothing but the model and the decode while the store on the same "
        "cores answered: cores / (model alone + decode + s3).",
        "",
        *machine_table(runs),
        "",
        "## 1 core and 2 cores",
        "",
        f"The default model on the `{one.data.name}` set; 1 core = `taskset -c 0` around benchmark_app, the "
        "job (Ray and its actor) and the naive loop; SeaweedFS keeps both cores.",
        "",
        *trend_lines(
            one, next(r for r in runs if (r.model, r.data, r.input) == (one.model, one.data, "objects"))
        ),
    ]
    if memory:
        lines += [
            "",
            "## Memory",
            "",
            "Peak RSS (VmHWM, sampled every 0.2 s) of the `facesweep run` driver process and of each actor "
            f"for {' and '.join(f'{c:,}' for c in MEMORY_COUNTS)} images ({MEMORY_SIZE[0]}x{MEMORY_SIZE[1]} "
            f"JPEG thumbnails of the WIDER photos, default model at `--input-size={MEMORY_INPUT}`, so that "
            "10,000 images take under a minute; the driver holds per-shard counts, never images).",
            "",
            *memory_table(memory),
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true", help="the default model on one set, no memory runs")
    parser.add_argument(
        "--section", action="append", default=[], metavar="TITLE=FILE", help="a table to add as a section"
    )
    args = parser.parse_args()
    require_shared(args.shared, "benchmarks/throughput.py")
    started = time.monotonic()
    cores = os.cpu_count() or 1
    sets = data_sets(args.shared)
    models = (DEFAULT,) if args.quick else MODELS
    # the default model's INT8, beside its FP rows (objects input, each set, right after the FP run)
    int8 = BenchModel(f"{DEFAULT.name}-int8", str(int8_model(DEFAULT.model, args.shared / SUBSET)[0]), False)

    def model_rate(model: BenchModel, n: int) -> Callable[[], float]:
        plan = inspect_model(DetectorSettings(model=model.argument(args.shared)))
        path = str(resolve_model(model.argument(args.shared)))

        def rate() -> float:
            fps = benchmark_app(path, plan.preprocess.input_size, n, MODEL_S)
            print(f"benchmark_app {model.name} {n} cores: {fps:.1f} FPS", file=sys.stderr)
            return fps

        return rate

    with (
        tempfile.TemporaryDirectory(prefix="facesweep-bench-") as tmp,
        start_local_s3(Path(tmp) / "s3") as server,
    ):
        store = Store(server, Path(tmp))
        runs = []
        for model in models:
            rate = model_rate(model, cores)
            int8_rate = model_rate(int8, cores) if model is DEFAULT else None
            inputs = ("objects", *CONTAINER_INPUTS) if model is DEFAULT else ("objects",)
            for data in sets[:1] if args.quick else sets:
                for kind in inputs:
                    run = Run(model, data, cores, kind)
                    measure(store, run, args.shared, f"{model.name}/{data.name}/{kind}", rate)
                    runs.append(run)
                    if int8_rate and kind == "objects":
                        run = Run(int8, data, cores, kind)
                        measure(store, run, args.shared, f"{int8.name}/{data.name}/{kind}", int8_rate)
                        runs.append(run)
        one = Run(DEFAULT, sets[0], 1)
        measure(store, one, args.shared, f"{DEFAULT.name}/{sets[0].name}-1core", model_rate(DEFAULT, 1))
        memory = [] if args.quick else memory_runs(store, args.shared)
    text = report(runs, one, memory, started, sets)
    for section in args.section:
        title, _, path = section.partition("=")
        body = Path(path).read_text()
        body = body.split("\n", 1)[1].lstrip() if body.startswith("# ") else body  # its own title
        text += f"\n## {title}\n\n{body}"
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    for run in runs:
        print(run.ratio_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
