"""Each throughput lever of issue 5, measured against the same baseline in one run: `make levers` writes
docs/LEVERS.md.

    .venv/bin/python benchmarks/levers.py [--shared PATH] [--out docs/LEVERS.md] [--only TEXT,...]
                                          [--rounds N]

`--rounds N` runs the (selected) levers N times in turn, so that a lever and its baseline alternate:
the way to tell a lever's gain from the machine's drift.

Every row is a real `facesweep run` from a local SeaweedFS to Parquet in it (benchmarks/harness.py), on
all cores with one actor unless the row says otherwise. Every lever is one of the CLI's options (`--batch`,
`--precision`, `--full-decode`, `--actors`, and the throughput levers `--requests-per-stream`,
`--shards-at-once`, `--fetch-threads`, `--cpu-pinning`: `workers/tuning.py`). The S3 clients are compared
by benchmarks/s3_clients.py (`make bench`).
Where a lever can change the faces found, the row also has the AP on val-subset-145 (official WIDER
protocol, score threshold 0.02, from a `facesweep run --ground-truth` of the 145 photos with that lever).
The preprocessing lever (resize in the OpenVINO graph against cv2.resize) is not in facesweep's code; it
is measured on its own, as model-plus-preprocessing throughput on the decoded photos.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness import (
    BIN,
    DEFAULT,
    MODELS,
    REPO,
    SUBSET,
    BenchModel,
    DataSet,
    JobRun,
    Store,
    data_sets,
    facesweep_run,
    generated_by,
    require_shared,
    table,
)

COPIES = {"wider": 20, "1080p": 16}  # of the 145 photos per run: about 20 s each at the baseline's rate
ZERO_FOUR = MODELS[0]
ZERO_FOUR_INPUT = (448, 448)
ZERO_FOUR_INT8 = BenchModel(
    "face-detection-0204 INT8", "models/face-detection-0204/FP16-INT8/face-detection-0204.xml"
)


@dataclass(frozen=True)
class Lever:
    group: str
    label: str
    model: BenchModel = DEFAULT
    data: str = "wider"
    options: tuple[str, ...] = ()
    accuracy: bool = False  # also measure AP on val-subset-145
    reference: str = "baseline (as shipped)"  # the label of the rows it is compared with


BASELINE = "baseline (as shipped)"
ZERO_FOUR_BASELINE = "face-detection-0204 FP16, as shipped"
FULL_HD_BASELINE = "1080p photos, as shipped"
LEVERS = (  # the baseline first, in the middle and last: its spread is the noise
    Lever("noise", BASELINE, accuracy=True),
    Lever("requests in flight", "1x the optimal number", options=("--requests-per-stream=1",)),
    Lever("requests in flight", "4x the optimal number", options=("--requests-per-stream=4",)),
    Lever("shards per actor", "1 shard at a time", options=("--shards-at-once=1",)),
    Lever("fetch threads per actor", "1 fetch thread", options=("--fetch-threads=1",)),
    Lever("fetch threads per actor", "4 fetch threads", options=("--fetch-threads=4",)),
    Lever("actors and pinning", "2 actors x 1 CPU", options=("--actors=2", "--cpus-per-actor=1")),
    Lever("noise", BASELINE),
    Lever("actors and pinning", "CPU pinning on", options=("--cpu-pinning",)),
    Lever("batching", "--batch 2", options=("--batch=2",)),
    Lever("batching", "--batch 4", options=("--batch=4",)),
    Lever(
        "precision",
        "--precision f32 (bf16 is this CPU's default)",
        options=("--precision=f32",),
        accuracy=True,
    ),
    Lever("precision", ZERO_FOUR_BASELINE, ZERO_FOUR, accuracy=True, reference=ZERO_FOUR_BASELINE),
    Lever(
        "precision",
        "face-detection-0204 FP16-INT8",
        ZERO_FOUR_INT8,
        accuracy=True,
        reference=ZERO_FOUR_BASELINE,
    ),
    Lever(
        "reduced JPEG decode",
        "face-detection-0204 --full-decode",
        ZERO_FOUR,
        options=("--full-decode",),
        accuracy=True,
        reference=ZERO_FOUR_BASELINE,
    ),
    Lever("reduced JPEG decode", FULL_HD_BASELINE, data="1080p", reference=FULL_HD_BASELINE),
    Lever(
        "reduced JPEG decode",
        "1080p photos --full-decode",
        data="1080p",
        options=("--full-decode",),
        reference=FULL_HD_BASELINE,
    ),
    Lever("noise", BASELINE),
)


def accuracy(lever: Lever, shared: Path) -> dict:
    """WIDER easy / medium / hard AP of the lever's `facesweep run` on val-subset-145 (local files)."""
    subset = shared / SUBSET.parent
    with tempfile.TemporaryDirectory(prefix="facesweep-levers-") as folder:
        figures = Path(folder) / "eval.json"
        command = [
            str(BIN / "facesweep"),
            *(
                "run",
                str(subset / "images"),
                str(Path(folder) / "out"),
                f"--model={lever.model.argument(shared)}",
            ),
            *(
                "--score-threshold=0.02",
                f"--ground-truth={subset / 'annotations.txt'}",
                f"--eval-json={figures}",
            ),
            *lever.options,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"levers: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
        return json.loads(figures.read_text())["wider_ap"]


@dataclass
class Row:
    lever: Lever
    job: JobRun
    ap: dict | None


def preprocessing_lever(shared: Path, count: int = 1200) -> list[tuple[str, float, float]]:
    """face-detection-0204 throughput and CPU per image with the resize as cv2.resize in 4 threads before
    the model, or as a PrePostProcessor resize step in the graph (u8 NHWC of any size in)."""
    import cv2
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor, ResizeAlgorithm

    cv2.setNumThreads(1)
    images = [cv2.imread(str(p)) for p in sorted((shared / SUBSET).rglob("*.jpg"))]
    core = ov.Core()
    cores = os.cpu_count() or 1
    results = []
    for in_graph in (False, True, False, True):
        model = core.read_model(str(shared / ZERO_FOUR.model))
        ppp = PrePostProcessor(model)
        tensor = ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        tensor.set_color_format(ColorFormat.BGR)
        if in_graph:
            tensor.set_spatial_dynamic_shape()
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        ppp.input().preprocess().convert_element_type(ov.Type.f32)
        if in_graph:
            ppp.input().preprocess().resize(ResizeAlgorithm.RESIZE_LINEAR)
        config = {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "INFERENCE_NUM_THREADS": cores,
            "ENABLE_CPU_PINNING": False,
        }
        compiled = core.compile_model(ppp.build(), "CPU", config)
        queue = ov.AsyncInferQueue(compiled, 2 * compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        queue.set_callback(lambda request, userdata: None)

        def prepare(image, resize=not in_graph):
            return (cv2.resize(image, ZERO_FOUR_INPUT) if resize else image)[None]

        started, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(4) as pool:
            for tensor_in in pool.map(prepare, (images[i % len(images)] for i in range(count))):
                queue.start_async({0: tensor_in}, tensor_in, share_inputs=True)
            queue.wait_all()
        seconds = time.perf_counter() - started
        label = "resize in the graph (PrePostProcessor)" if in_graph else "cv2.resize, then the model"
        results.append((label, count / seconds, 1000 * (time.process_time() - cpu) / count))
        print(f"  {label}: {count / seconds:.1f} img/s", file=sys.stderr, flush=True)
    return results


def measure(levers: tuple[Lever, ...], shared: Path, sets: dict[str, DataSet], store: Store) -> list[Row]:
    rows = []
    for index, lever in enumerate(levers):
        data = sets[lever.data]
        manifest = store.manifest(data, COPIES[lever.data] * len(data.photos))
        output = f"s3://bench/out/lever-{index}/"
        job = facesweep_run(
            store,
            manifest,
            output,
            lever.model.argument(shared),
            os.cpu_count() or 1,
            *lever.options,
        )
        measured = any(row.ap is not None and row.lever == lever for row in rows)
        ap = accuracy(lever, shared) if lever.accuracy and not measured else None  # once per lever
        rows.append(Row(lever, job, ap))
        print(f"  {lever.group}: {lever.label}: {job.img_s:.1f} img/s", file=sys.stderr, flush=True)
    return rows


def report(rows_in: list[Row], preprocessing: list, sets: dict[str, DataSet], started: float) -> str:
    rates: dict[str, list[float]] = {}
    for row in rows_in:
        rates.setdefault(row.lever.label, []).append(row.job.img_s)
    baselines = rates.get(BASELINE, [])
    spread = (max(baselines) - min(baselines)) / (sum(baselines) / len(baselines)) if baselines else 0.0
    lines = [
        "# Levers",
        "",
        generated_by("levers", "levers.py", started),
        "",
        "Each row is one `facesweep run` from the local SeaweedFS to Parquet in it, one actor on all cores "
        "unless the row says otherwise, images/s from the job's own clock after start-up; data sets as in "
        "[BENCHMARKS.md](BENCHMARKS.md):",
        *[f"- `{d.name}`: {d.description}" for d in sets.values()],
        "",
        f"The baseline ran {len(baselines)} times, spread through the run: its spread (max - min over "
        f"mean) is **{spread:.0%}**, so differences smaller than that are noise. vs = images/s over the "
        "mean of the row's reference (the baseline, or the shipped run of the same model and data). AP: "
        "official WIDER easy / medium / hard on val-subset-145 at score threshold 0.02, a `facesweep run` "
        "of the 145 photos with the same lever.",
        "",
    ]
    rows = []
    for row in rows_in:
        this = row.job.record["this_run"]
        reference = rates.get(row.lever.reference) or [row.job.img_s]  # (--only may leave it out)
        versus = row.job.img_s / (sum(reference) / len(reference))
        ap = f"{row.ap['easy']:.4f} / {row.ap['medium']:.4f} / {row.ap['hard']:.4f}" if row.ap else ""
        rows.append(
            [
                row.lever.group,
                row.lever.label,
                row.lever.model.name,
                row.lever.data,
                this["images"],
                f"{row.job.img_s:.1f}",
                f"{versus:.2f}",
                f"{this['actor_cpu_ms_per_image']:.2f}",
                ap,
            ]
        )
    header = ["lever", "run", "model", "data", "images", "images/s", "vs", "actor CPU ms/image"]
    lines += table([*header, "AP easy / medium / hard"], rows)
    if len(rates) < len(rows_in):  # some ran more than once (--rounds)
        base = sum(baselines) / len(baselines) if baselines else math.nan
        means = {label: sum(r) / len(r) for label, r in rates.items()}
        rows = [
            [
                label,
                len(r),
                f"{means[label]:.1f}",
                f"{min(r):.1f} - {max(r):.1f}",
                f"{means[label] / base:.2f}",
            ]
            for label, r in rates.items()
        ]
        lines += [
            "",
            "## Means over the runs of each",
            "",
            *table(["run", "runs", "mean images/s", "min - max", "vs baseline"], rows),
        ]
    lines += [
        "",
        "## Preprocessing in the graph",
        "",
        "face-detection-0204 on the 145 decoded photos (1,200 images, repeated in turn), u8 NHWC BGR input, "
        "THROUGHPUT hint, 2x the optimal requests: either cv2.resize to 448x448 in 4 threads and the model, "
        "or the photo as it is with the resize as a PrePostProcessor step in the graph.",
        "",
        *table(
            ["preprocessing", "images/s", "CPU ms/image"],
            [[label, f"{rate:.1f}", f"{cpu:.2f}"] for label, rate, cpu in preprocessing],
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "LEVERS.md")
    parser.add_argument("--only", help="only the levers whose group or label contains one of these texts")
    parser.add_argument("--rounds", type=int, default=1, help="run the levers this many times in turn (1)")
    args = parser.parse_args()
    require_shared(args.shared, "benchmarks/levers.py")
    started = time.monotonic()
    from infra.local_s3 import start_local_s3

    sets = {data.name: data for data in data_sets(args.shared)}
    texts = args.only.split(",") if args.only else [""]
    levers = tuple(lv for lv in LEVERS if any(t in lv.group or t in lv.label for t in texts)) * args.rounds
    preprocessing = preprocessing_lever(args.shared)
    with (
        tempfile.TemporaryDirectory(prefix="facesweep-levers-") as tmp,
        start_local_s3(Path(tmp) / "s3") as server,
    ):
        rows = measure(levers, args.shared, sets, Store(server, Path(tmp)))
    args.out.write_text(report(rows, preprocessing, sets, started))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
