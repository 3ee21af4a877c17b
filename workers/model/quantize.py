"""Post-training INT8 quantization (NNCF) of any model facesweep runs, calibrated on images preprocessed
exactly as a job's detector preprocesses them (`image_views`, then the compiled model's in-graph steps in
NumPy). The result is an OpenVINO IR without those steps, which a job loads like any other `.xml` (and
bakes its preprocessing into again); it records its source model's checksum, so a job recognises it as
its source (`formats.known.recognise`) and preprocesses and decodes it the same way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import openvino as ov

from facesweep.workers.model.catalog import model_checksum
from facesweep.workers.model.plan import ModelPlan
from facesweep.workers.model.preprocess import Preprocess
from facesweep.workers.model.runtime import SOURCE_KEY, core, static_input_size
from facesweep.workers.model.views import image_views

T = TypeVar("T")
PRESETS = ("mixed", "performance")
"""NNCF's quantization presets. "mixed", the default: asymmetric activations, for the signed ones (a
mean-subtracted input, PReLU); on the default model WIDER easy / medium / hard moved -0.002 / -0.003 /
-0.000 with it, -0.010 / -0.009 / -0.005 with "performance" (docs/models.md#int8)."""


@dataclass(frozen=True)
class Quantized:
    """A quantized model written: its `.xml`, its checksum, the images it was calibrated on, seconds spent."""

    path: Path
    checksum: str
    images: int
    seconds: float


def network_input(tensor: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """What the compiled model's in-graph steps (`runtime.compile_model`) make of a uint8 NHWC BGR view:
    colour order, mean and scale applied, float32 NCHW, as the model file itself takes it."""
    pixels = tensor[..., ::-1] if preprocess.color == "RGB" else tensor
    values = (pixels.astype(np.float32) - np.float32(preprocess.mean)) / np.float32(preprocess.scale)
    return np.ascontiguousarray(values.transpose(0, 3, 1, 2))


def calibration_input(image: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """A decoded BGR image as the model sees it in a plain job (one view), in the model's own input form."""
    return network_input(image_views(image, preprocess).tensor, preprocess)


def quantize(
    plan: ModelPlan,
    samples: Sequence[T],
    to_input: Callable[[T], np.ndarray],
    out: Path,
    preset: str = PRESETS[0],
) -> Quantized:
    """The planned model quantized to INT8 on every sample (`to_input` makes each its model input, as
    `calibration_input` does, when NNCF asks: the samples may be encoded images) and saved to `out`
    (`.xml` and `.bin`, written whole or not at all). Its input is as dynamic as its source's (or as the
    plan's, a model run at each image's own size), at batch 1: a job reshapes it as it does its source.

    `preset` (PRESETS): NNCF's; "mixed" quantizes activations asymmetrically, "performance" symmetrically.
    """
    import nncf  # several seconds to import: only when quantizing

    started = time.perf_counter()
    # an ONNX file through the converter, whose graph simplifications a job's `read_model` skips: without
    # them NNCF quantizes a depthwise convolution's reshaped weights on the wrong axes (no INT8 kernel)
    model = (
        ov.convert_model(plan.path) if plan.path.suffix.lower() == ".onnx" else core().read_model(plan.path)
    )
    fixed = static_input_size(model) if plan.preprocess.input_size else None
    width, height = fixed or (-1, -1)  # a size only where the source fixes it and the job keeps it
    model.reshape({model.input(): ov.PartialShape([1, 3, height, width])})
    quantized = nncf.quantize(
        model,
        nncf.Dataset(samples, to_input),
        preset=nncf.QuantizationPreset(preset),
        subset_size=len(samples),
    )
    quantized.set_rt_info(plan.checksum, SOURCE_KEY)
    staging = Path(tempfile.mkdtemp(prefix=".quantize-", dir=out.parent))
    try:
        ov.save_model(quantized, staging / out.name, compress_to_fp16=False)
        os.replace(staging / out.with_suffix(".bin").name, out.with_suffix(".bin"))
        os.replace(staging / out.name, out)  # the .xml last: once it is there, so is its .bin
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - started
    return Quantized(out, model_checksum(out), len(samples), seconds)
