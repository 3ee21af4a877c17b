"""A face detector: a compiled OpenVINO model plus its output format's preprocessing and decoder."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np
import openvino as ov

from workers.faces import Faces, Geometry
from workers.formats import detect_format
from workers.formats.base import DecodeSettings, Format, Preprocess
from workers.formats.known import recognise
from workers.images import to_network_input
from workers.models import ModelError, resolve_model
from workers.runtime import compile_model, output_infos, read_model, run_in_flight, static_input_size


@dataclass(frozen=True)
class DetectorSettings:
    """Everything that decides which faces come out of an image. None means: the model's or format's value."""

    model: str
    device: str = "CPU"
    threads: int = 1
    score_threshold: float = 0.5
    nms_threshold: float | None = None
    format: str | None = None  # None: detected from the model's outputs
    resize: Literal["stretch", "letterbox"] | None = None
    input_size: tuple[int, int] | None = None  # (width, height)
    color: Literal["BGR", "RGB"] | None = None
    mean: tuple[float, float, float] | None = None
    scale: tuple[float, float, float] | None = None
    face_label: int | None = None
    batch: int = 1
    precision: str | None = None  # INFERENCE_PRECISION_HINT, e.g. "f32"; None: the device's default


@dataclass(frozen=True)
class Prepared:
    """An image ready for the network: the uint8 NHWC tensor and how it maps back."""

    tensor: np.ndarray
    geometry: Geometry


@dataclass
class Timings:
    """Seconds spent per stage, summed over images (thread-safe accumulation)."""

    seconds: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


@dataclass(frozen=True)
class ModelPlan:
    """What reading a model decides: its format, the outputs to decode, preprocessing, decode settings."""

    path: Path
    format: Format
    outputs: list[int]
    preprocess: Preprocess
    decode: DecodeSettings
    batch: int


def plan_model(settings: DetectorSettings) -> tuple[ov.Model, ModelPlan]:
    """Reads the model and decides how to run it; every mismatch is a one-line ModelError or format error."""
    path = resolve_model(settings.model)
    model = read_model(str(path), settings.model)
    fmt, outputs = detect_format(output_infos(model), settings.model, settings.format)
    known = recognise(path)
    known = known if known is not None and known.format == fmt.name else None
    if known is not None and known.preprocess is not None:
        base = known.preprocess
    else:
        base = replace(fmt.preprocess, input_size=static_input_size(model) or fmt.preprocess.input_size)
    preprocess = base.with_overrides(
        resize=settings.resize,
        input_size=settings.input_size,
        color=settings.color,
        mean=settings.mean,
        scale=settings.scale,
    )
    limits = [m for m in (fmt.max_batch, known.max_batch if known else None) if m is not None]
    if settings.batch > min(limits, default=settings.batch):
        raise ModelError(
            f"model {settings.model} ({fmt.name} format) runs batch {min(limits)} only: drop --batch"
        )
    if settings.batch > 1 and preprocess.input_size is None:
        raise ModelError(f"--batch {settings.batch} needs a fixed --input-size for model {settings.model}")
    face_label = settings.face_label
    if face_label is None and known is not None:
        face_label = known.face_label
    decode = DecodeSettings(
        score_threshold=settings.score_threshold,
        nms_threshold=fmt.default_nms_threshold if settings.nms_threshold is None else settings.nms_threshold,
        face_label=face_label,
    )
    return model, ModelPlan(path, fmt, outputs, preprocess, decode, settings.batch)


def inspect_model(settings: DetectorSettings) -> ModelPlan:
    """Reads the model and plans it without compiling (cheap; for early errors in the driver)."""
    return plan_model(settings)[1]


class Detector:
    """Compiles the model once; turns prepared images into faces in original-image pixels."""

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        model, self.plan = plan_model(settings)
        self.format = self.plan.format
        self._compiled = compile_model(
            model,
            self.plan.preprocess,
            settings.device,
            settings.threads,
            settings.precision,
            self.plan.batch,
        )

    def prepare(self, image: np.ndarray) -> Prepared:
        """Resizes a BGR image for the network; thread-safe, so fetch threads can do it in parallel."""
        tensor, geometry = to_network_input(image, self.plan.preprocess)
        return Prepared(tensor, geometry)

    def infer(self, prepared: Sequence[Prepared]) -> list[np.ndarray]:
        """The model's raw outputs for one batch, synchronously (for tests and one-off use)."""
        result = self._compiled(self._batch_tensor(prepared))
        return [result[output] for output in self._compiled.outputs]

    def decode(
        self, outputs: list[np.ndarray], prepared: Sequence[Prepared], settings: DecodeSettings | None = None
    ) -> list[Faces]:
        """Faces of each image of a batch from the model's raw outputs, in original pixels, best first.

        `settings` overrides the planned thresholds (to decode stored outputs at another threshold)."""
        picked = [outputs[i] for i in self.plan.outputs]
        per_image = self.format.split(picked, self.plan.batch)
        settings = settings or self.plan.decode
        return [
            image.geometry.to_original(
                self.format.decode(tensors, (image.tensor.shape[2], image.tensor.shape[1]), settings)
            )
            for tensors, image in zip(per_image, prepared, strict=False)
        ]

    def _batch_tensor(self, prepared: Sequence[Prepared]) -> np.ndarray:
        """The images stacked into one batch, padded with copies of the last to the compiled batch size."""
        if self.plan.batch == 1:
            return prepared[0].tensor
        padding = [prepared[-1].tensor] * (self.plan.batch - len(prepared))
        return np.concatenate([p.tensor for p in prepared] + padding)

    def detect(self, items: Iterable[tuple[object, Prepared]], timings: Timings) -> dict[object, Faces | str]:
        """Faces (or an error string) per key, running the model with several requests in flight."""
        results: dict[object, Faces | str] = {}

        def on_result(
            outputs: list[np.ndarray], infer_seconds: float, batch: list[tuple[object, Prepared]]
        ) -> None:
            started = time.perf_counter()
            try:
                for (key, _), faces in zip(batch, self.decode(outputs, [p for _, p in batch]), strict=True):
                    results[key] = faces
            except Exception as error:  # a decoder bug must not take the shard down with it
                for key, _ in batch:
                    results[key] = f"decode failed: {type(error).__name__}: {error}"
            timings.add("infer", infer_seconds)
            timings.add("decode_nms", time.perf_counter() - started)

        batches = _batched(iter(items), self.plan.batch)
        run_in_flight(
            self._compiled, ((self._batch_tensor([p for _, p in b]), b) for b in batches), on_result
        )
        return results


def _batched(items: Iterator[tuple[object, Prepared]], size: int) -> Iterator[list[tuple[object, Prepared]]]:
    while batch := list(islice(items, size)):
        yield batch
