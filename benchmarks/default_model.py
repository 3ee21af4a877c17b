"""Accuracy and speed of the built-in models on the 145-image WIDER FACE subset, through `facesweep run`.

    .venv/bin/python benchmarks/default_model.py [--shared PATH] [--out FILE]

For each built-in model (at its reference preprocessing and at the other's input size) this runs
the real command line (one local Ray actor, `--cpus-per-actor 2`, the
default score threshold 0.5) from the subset's images into a temporary directory, then reads the Parquet
output back and prints a Markdown table: recall at IoU 0.5 of faces at least 32 (and 64) pixels high,
the number of detections, and throughput measured two ways (see `DEFINITIONS`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
from harness import cpu_name, facesweep_command

from facesweep.workers.evaluation.annotations import read_ground_truth, read_predictions
from facesweep.workers.evaluation.matching import match_by_suffix, recall

REPO = Path(__file__).resolve().parents[1]

SUBSET = Path("data/widerface/val-subset-145")
SCORE_THRESHOLD = 0.5
IOU = 0.5
MIN_HEIGHTS = (32, 64)
ACTORS = 1
CPUS_PER_ACTOR = 2
EDGE_TOLERANCE_PX = 0.5
# Each built-in model at its reference preprocessing, and at the other's input size for comparison.
VARIANTS = (
    ("retinaface-mnet025",),
    ("retinaface-mnet025", "--input-size=1024x1024"),
    ("centerface",),
    ("centerface", "--input-size=640x640", "--resize=letterbox"),
)

DEFINITIONS = f"""\
- recall: ground-truth faces at least N px high (box height in the original image) found by a detection
  with IoU >= {IOU}; greedy one-to-one matching in score order; smaller faces are ignored (neither counted
  nor found). Images the job failed on count as all-missed.
- detections: faces written to the output (score > {SCORE_THRESHOLD}).
- job images/s: `images_per_second` from the job's `_job.json`: images / seconds from the job's start
  (before Ray starts) to its last shard, so it includes starting Ray, the actor and compiling the model.
- after start-up images/s: `processing_images_per_second` from `_job.json`: images / seconds from the
  moment every actor had compiled its model to the last shard.
- wall s: the whole `facesweep run` command, process start to exit."""


@dataclass(frozen=True)
class Run:
    """One `facesweep run` and what its output says."""

    model: str
    wall_seconds: float
    job: dict


def run_model(variant: tuple[str, ...], images: Path, output: Path) -> Run:
    model, *options = variant
    command = [
        facesweep_command(),
        "run",
        str(images),
        str(output),
        f"--model={model}",
        *options,
        f"--score-threshold={SCORE_THRESHOLD}",
        f"--actors={ACTORS}",
        f"--cpus-per-actor={CPUS_PER_ACTOR}",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"benchmark: {' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return Run(model=" ".join(variant), wall_seconds=wall, job=json.loads((output / "_job.json").read_text()))


def accuracy(output: Path, truth: dict[str, np.ndarray]) -> tuple[dict[int, tuple[int, int]], int, int]:
    """({min_height: (found, total)}, detections, ground-truth images with no prediction)."""
    predictions = read_predictions(str(output))
    matched = match_by_suffix(predictions, truth)
    no_faces = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    counts = np.zeros((len(MIN_HEIGHTS), 2), np.int64)
    for name, faces in truth.items():
        boxes, scores = matched.get(name, no_faces)
        counts += [recall(boxes, faces, IOU, min_height, scores) for min_height in MIN_HEIGHTS]
    results = {h: (int(found), int(total)) for h, (found, total) in zip(MIN_HEIGHTS, counts, strict=True)}
    detections = sum(len(scores) for _, scores in predictions.values())
    return results, detections, len(truth) - len(matched)


def box_checks(output: Path) -> str:
    """One line on odd boxes: past the image edge, empty, or scoring at most the threshold."""
    table = ds.dataset(output, format="parquet").to_table(columns=["width", "height", "faces"])
    table = table.filter(table["faces"].is_valid())
    counts = table["faces"].combine_chunks().value_lengths().to_numpy(zero_copy_only=False)
    faces = table["faces"].combine_chunks().flatten()
    x1, y1, x2, y2, score = (faces.field(k).to_numpy() for k in ("x1", "y1", "x2", "y2", "score"))
    width = np.repeat(table["width"].to_numpy(), counts)
    height = np.repeat(table["height"].to_numpy(), counts)
    tol = EDGE_TOLERANCE_PX
    outside = (x1 < -tol) | (y1 < -tol) | (x2 > width + tol) | (y2 > height + tol)
    empty = (x2 <= x1) | (y2 <= y1)
    box_heights = y2 - y1
    parts = [
        f"{int(outside.sum())} past the image edge (> {tol} px)",
        f"{int(empty.sum())} empty (x2 <= x1 or y2 <= y1)",
        f"{int((score <= SCORE_THRESHOLD).sum())} scoring <= {SCORE_THRESHOLD}",
        f"{int(np.isnan(np.stack([x1, y1, x2, y2, score])).any(axis=0).sum())} with NaN",
    ]
    if len(score):
        parts.append(f"scores {score.min():.3f}..{score.max():.3f}")
        parts.append(f"box heights {box_heights.min():.1f}..{box_heights.max():.1f} px")
    return ", ".join(parts)


def percent(found: int, total: int) -> str:
    return f"{100 * found / total:.1f}% ({found}/{total})" if total else "n/a"


def report(shared: Path) -> str:
    subset = shared / SUBSET
    truth = read_ground_truth(subset / "annotations.txt")
    header = (
        "| model | recall, faces ≥32 px | recall, faces ≥64 px | detections "
        "| job images/s | after start-up images/s | wall s |"
    )
    rows = [header, "|" + "---|" * header.count(" | ") + "---|"]
    notes = []
    for variant in VARIANTS:
        model = " ".join(variant)
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="facesweep-bench-") as folder:
            output = Path(folder) / "out"
            run = run_model(variant, subset / "images", output)
            found, detections, unmatched = accuracy(output, truth)
            checks = box_checks(output)
        rows.append(
            f"| {model} | {percent(*found[32])} | {percent(*found[64])} | {detections} "
            f"| {run.job['images_per_second']:.1f} "
            f"| {run.job['processing_images_per_second']:.1f} "
            f"| {run.wall_seconds:.1f} |"
        )
        notes.append(
            f"- {model}: {run.job['images']} images, {run.job['errors']} errors, "
            f"{unmatched} ground-truth images without output; 1-min load average before the run {load:.1f}; "
            f"job {run.job['seconds']:.1f} s, start-up {run.job['startup_seconds']:.1f} s; "
            f"stage seconds (summed over threads): "
            f"{json.dumps(run.job['stage_seconds'])}\n  boxes: {checks}"
        )
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()}), Python {platform.python_version()}"
    )
    return "\n".join(
        [
            f"## Built-in models on WIDER FACE val-subset-145 ({len(truth)} images, "
            f"{sum(len(faces) for faces in truth.values())} faces)",
            "",
            f"`facesweep run` with --score-threshold {SCORE_THRESHOLD} --actors {ACTORS} "
            f"--cpus-per-actor {CPUS_PER_ACTOR}, local files; {machine}.",
            "",
            *rows,
            "",
            DEFINITIONS,
            "",
            "Per run:",
            *notes,
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=REPO.parent / "shared",
        help="the shared folder holding data/widerface/val-subset-145 (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    if not (args.shared / SUBSET / "annotations.txt").is_file():
        parser.error(f"no {SUBSET}/annotations.txt under {args.shared}: pass --shared")
    text = report(args.shared)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
