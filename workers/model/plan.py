"""Model planning: which model file, its output format, preprocessing and decode settings, checked
before anything compiles (the driver plans once for its early errors, each actor again for its copy)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import openvino as ov

from facesweep.workers.config import DetectorSettings
from facesweep.workers.model.catalog import ModelError, checked_model
from facesweep.workers.model.formats import detect_format
from facesweep.workers.model.formats.base import DecodeSettings, Format
from facesweep.workers.model.formats.known import KnownModel, recognise
from facesweep.workers.model.preprocess import Preprocess
from facesweep.workers.model.runtime import output_infos, read_model, source_checksum, static_input_size

NATIVE_MULTIPLE = 32
"""What an image's own size is rounded up to at native resolution: the coarsest stride of every anchor
format (8/16/32), so each feature map covers the whole image."""


@dataclass(frozen=True)
class ModelPlan:
    """What reading a model decides: its format, the outputs to decode, preprocessing, decode settings."""

    path: Path
    checksum: str  # models.model_checksum
    format: Format
    outputs: list[int]
    preprocess: Preprocess
    decode: DecodeSettings
    batch: int
    tile: bool  # native-resolution tiles: --tile, or --resolution native on a fixed input


def plan_model(settings: DetectorSettings) -> tuple[ov.Model, ModelPlan]:
    """Reads the model and decides how to run it; every mismatch is a one-line ModelError or format error."""
    path, checksum = checked_model(settings.model, settings.model_sha256)
    model = read_model(str(path), settings.model)
    fmt, outputs = detect_format(output_infos(model), settings.model, settings.format)
    known = recognise(path, checksum, source_checksum(model))
    known = known if known is not None and known.format == fmt.name else None
    preprocess = _preprocess(settings, fmt, known, static_input_size(model))
    _check_runnable(settings, fmt, known, preprocess)
    tile = settings.tile or (settings.resolution == "native" and preprocess.input_size is not None)
    face_label = settings.face_label
    if face_label is None and known is not None:
        face_label = known.face_label
    decode = DecodeSettings(
        score_threshold=settings.score_threshold,
        nms_threshold=fmt.default_nms_threshold if settings.nms_threshold is None else settings.nms_threshold,
        face_label=face_label,
    )
    return model, ModelPlan(path, checksum, fmt, outputs, preprocess, decode, settings.batch, tile)


def inspect_model(settings: DetectorSettings) -> ModelPlan:
    """Reads the model and plans it without compiling (cheap; for early errors in the driver)."""
    return plan_model(settings)[1]


def _preprocess(
    settings: DetectorSettings, fmt: Format, known: KnownModel | None, ir_size: tuple[int, int] | None
) -> Preprocess:
    """The known model's preprocessing, else the format's with the IR's input size; then the flags.
    `--resolution native`: an IR that takes any size (no --input-size) runs each image at its own size
    rounded up to NATIVE_MULTIPLE; either way within `--max-side`."""
    if known is not None and known.preprocess is not None:
        base = known.preprocess
    else:
        base = replace(fmt.preprocess, input_size=ir_size or fmt.preprocess.input_size)
    preprocess = base.with_overrides(
        resize=settings.resize,
        input_size=settings.input_size,
        color=settings.color,
        mean=settings.mean,
        scale=settings.scale,
    )
    if settings.resolution != "native":
        return preprocess
    if ir_size is None and settings.input_size is None:
        multiple = max(preprocess.size_multiple, NATIVE_MULTIPLE)
        preprocess = replace(preprocess, input_size=None, size_multiple=multiple)
    return replace(preprocess, max_side=settings.native_max_side)


def _check_runnable(
    settings: DetectorSettings, fmt: Format, known: KnownModel | None, preprocess: Preprocess
) -> None:
    """One-line ModelErrors for settings this model cannot run: tiles or batches without a fixed input,
    a batch the format or model cannot take, scales that are not positive, a cap without native
    resolution."""
    if settings.tile and preprocess.input_size is None:
        raise ModelError(
            f"--tile needs a fixed network input: model {settings.model} already runs each image at its "
            "own size (native resolution); pass --input-size WxH to tile"
        )
    if settings.max_side is not None and settings.resolution != "native":
        raise ModelError(f"--max-side {settings.max_side} needs --resolution native")
    if not settings.scales or min(settings.scales) <= 0:
        raise ModelError(f"--scales must be positive numbers, got {settings.scales}")
    limits = [m for m in (fmt.max_batch, known.max_batch if known else None) if m is not None]
    if settings.batch > min(limits, default=settings.batch):
        raise ModelError(
            f"model {settings.model} ({fmt.name} format) runs batch {min(limits)} only: drop --batch"
        )
    if settings.batch > 1 and preprocess.input_size is None:
        raise ModelError(f"--batch {settings.batch} needs a fixed --input-size for model {settings.model}")
