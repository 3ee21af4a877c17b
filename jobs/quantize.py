"""`facesweep quantize`: INT8 for any model facesweep runs. NNCF's post-training quantization of MODEL on
INPUT's own images, preprocessed as a job preprocesses them (`workers/model/quantize.py`); then, given a
ground truth, both models' APs on its images (the job's own detector at the WIDER protocol's score
threshold), and both models' speed by OpenVINO's `benchmark_app`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesweep.api import FaceDetector
from facesweep.workers.config import ContainerSettings, DetectorSettings
from facesweep.workers.errors import ImageError, UserError
from facesweep.workers.evaluation.annotations import read_ground_truth_with_settings
from facesweep.workers.evaluation.evaluate import AP_SCORE_THRESHOLD, omz_ap, voc_ap, wider_ap
from facesweep.workers.evaluation.matching import PAIRING_RULE, pair_paths
from facesweep.workers.inputs.containers import parse_piece, read_piece
from facesweep.workers.inputs.images import decode_reduced
from facesweep.workers.inputs.listing import list_images
from facesweep.workers.model.plan import ModelPlan, inspect_model
from facesweep.workers.model.quantize import PRESETS, Quantized, calibration_input, quantize
from facesweep.workers.model.views import reduction
from facesweep.workers.storage import ObjectError, storage_for

DEFAULT_IMAGES = 300


class QuantizeError(UserError, ValueError):
    """A quantization that cannot be made as asked."""


@dataclass(frozen=True)
class Calibrated:
    """What `quantize_model` did: the model written, the source's plan, and the network input (w, h) most
    of the calibration images had (the size to time both models at)."""

    quantized: Quantized
    plan: ModelPlan
    network_size: tuple[int, int]


def checked_out(out: str) -> Path:
    """OUT as a path, refused in one line unless it is a local `.xml` in a writable folder."""
    path = Path(out).expanduser().resolve()
    if path.suffix.lower() != ".xml":
        raise QuantizeError(f"--out {out}: give a path ending in .xml (the IR's .bin is written beside it)")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK | os.X_OK):
        raise QuantizeError(f"--out {out}: cannot write in {path.parent}: give a writable folder")
    if path.is_dir():
        raise QuantizeError(f"--out {out}: is a folder: give a file name ending in .xml")
    return path


def quantize_model(
    model: str, input: str, out: Path, images: int = DEFAULT_IMAGES, preset: str = PRESETS[0]
) -> Calibrated:
    """MODEL quantized to INT8 with NNCF's `preset` on INPUT's first `images` readable images (URI order,
    as a job orders them; members of containers too) and written to `out`."""
    plan = inspect_model(DetectorSettings(model))

    def decoded(data: bytes) -> np.ndarray:
        return decode_reduced(data, lambda w, h: reduction(plan.preprocess, (1.0,), w, h))[0]

    samples: list[bytes] = []
    sizes: Counter[tuple[int, int]] = Counter()
    for data in _images(input):
        try:
            image = decoded(data)
        except ImageError:
            continue
        samples.append(data)
        sizes[plan.preprocess.fit(image.shape[1], image.shape[0])[0]] += 1
        if len(samples) == images:
            break
    if not samples:
        raise QuantizeError(
            f"--calibration {input}: none of its images could be read: give a few hundred photos"
        )

    def network_input(data: bytes) -> np.ndarray:
        return calibration_input(decoded(data), plan.preprocess)

    with redirect_stdout(sys.stderr):  # NNCF's progress bars, beside facesweep's own
        quantized = quantize(plan, samples, network_input, out, preset)
    return Calibrated(quantized, plan, sizes.most_common(1)[0][0])


def _images(input: str) -> Iterator[bytes]:
    """The bytes of INPUT's images in URI order, a container's members included; an object that cannot
    be fetched is passed over."""
    for table in list_images(input):
        for uri, size in zip(table["uri"].to_pylist(), table["size"].to_pylist(), strict=True):
            piece = parse_piece(uri)
            if piece is not None:
                size = storage_for(piece[0]).size(piece[0]) if size is None else size
                members = read_piece(uri, size, ContainerSettings())
                yield from (member.data for member in members if member.data is not None)
                continue
            try:
                yield storage_for(uri).get(uri)
            except ObjectError:
                continue


def accuracy(model: str, input: str, ground_truth: str) -> tuple[int, dict[str, float]]:
    """How many of `ground_truth`'s images INPUT holds (paired as `facesweep eval` pairs them; images in
    containers are not looked at), and the model's APs on them: WIDER easy / medium / hard (VOC with a
    ground truth without those columns) and OMZ, detections kept from score 0.02 as the protocol wants."""
    truth = read_ground_truth_with_settings(ground_truth)
    uris = [uri for table in list_images(input) for uri in table["uri"].to_pylist() if not parse_piece(uri)]
    pairs = pair_paths(uris, truth).pairs
    if not pairs:
        raise QuantizeError(
            f"--ground-truth {ground_truth}: none of its {len(truth)} images is in {input} "
            f"(e.g. {next(iter(truth), '-')}); {PAIRING_RULE}"
        )
    detector = FaceDetector(model, score_threshold=AP_SCORE_THRESHOLD)
    results = detector.detect(list(pairs.values()))
    found = {
        name: (result.faces.boxes, result.faces.scores)
        for name, result in zip(pairs, results, strict=True)
        if result.faces is not None
    }
    scored = {name: truth[name] for name in found}
    if all(entry.positives is not None for entry in scored.values()):
        aps = wider_ap(found, scored)
    else:
        aps = {"voc": voc_ap(found, scored)}
    return len(found), aps | {"omz": omz_ap(found, scored)}


def benchmark(model: Path, size: tuple[int, int], seconds: int) -> float:
    """Images/s of OpenVINO's `benchmark_app -d CPU -hint throughput` on `model` at batch 1, `size`."""
    app = Path(sys.executable).with_name("benchmark_app")
    command = str(app) if app.is_file() else shutil.which("benchmark_app")
    if command is None:
        raise QuantizeError("no benchmark_app (OpenVINO's) beside this Python or on PATH: give --seconds 0")
    width, height = size
    arguments = ["-m", str(model), "-d", "CPU", "-hint", "throughput", "-t", str(seconds)]
    done = subprocess.run(
        [command, *arguments, "-shape", f"[1,3,{height},{width}]"],
        capture_output=True,
        text=True,
    )
    lines = [line for line in done.stdout.splitlines() if "Throughput:" in line]
    if done.returncode or not lines:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise QuantizeError(f"benchmark_app failed on {model}: {reason[0][:200]}")
    return float(lines[-1].split("Throughput:")[1].split()[0])
