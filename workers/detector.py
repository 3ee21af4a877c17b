"""A face detector: a compiled OpenVINO model plus its output format's preprocessing and decoder."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from workers.faces import Faces, Geometry
from workers.formats import detect_format
from workers.formats.base import Format, Preprocess
from workers.images import to_network_input
from workers.models import resolve_model
from workers.runtime import compile_model, output_infos, read_model, run_in_flight


@dataclass(frozen=True)
class DetectorSettings:
    """Everything that decides which faces come out of an image."""

    model: str
    device: str = "CPU"
    threads: int = 1
    score_threshold: float = 0.5
    nms_threshold: float | None = None  # None: the format's reference value
    format: str | None = None  # None: detected from the model's outputs
    resize: Literal["stretch", "letterbox"] | None = None  # None: the format's default
    input_size: tuple[int, int] | None = None  # (width, height); None: the format's default
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


def inspect_model(settings: DetectorSettings) -> tuple[str, Format]:
    """Resolves and reads the model and finds its format, without compiling (cheap; for early errors)."""
    path = resolve_model(settings.model)
    model = read_model(str(path), settings.model)
    fmt, _ = detect_format(output_infos(model), settings.model, settings.format)
    return str(path), fmt


class Detector:
    """Compiles the model once; turns prepared images into faces in original-image pixels."""

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        model = read_model(str(resolve_model(settings.model)), settings.model)
        self.format, self._outputs = detect_format(output_infos(model), settings.model, settings.format)
        self.preprocess: Preprocess = self.format.preprocess.with_overrides(
            resize=settings.resize, input_size=settings.input_size
        )
        self.nms_threshold = (
            self.format.default_nms_threshold if settings.nms_threshold is None else settings.nms_threshold
        )
        self._compiled = compile_model(
            model, self.preprocess, settings.device, settings.threads, settings.precision
        )

    def prepare(self, image: np.ndarray) -> Prepared:
        """Resizes a BGR image for the network; thread-safe, so fetch threads can do it in parallel."""
        tensor, geometry = to_network_input(image, self.preprocess)
        return Prepared(tensor, geometry)

    def infer(self, prepared: Prepared) -> list[np.ndarray]:
        """The model's raw outputs for one image, synchronously (for tests and one-off use)."""
        result = self._compiled(prepared.tensor)
        return [result[output] for output in self._compiled.outputs]

    def decode(self, outputs: list[np.ndarray], prepared: Prepared) -> Faces:
        """Faces of one image from the model's raw outputs, in original-image pixels, best first."""
        net_size = (prepared.tensor.shape[2], prepared.tensor.shape[1])
        picked = [outputs[i] for i in self._outputs]
        faces = self.format.decode(picked, net_size, self.settings.score_threshold, self.nms_threshold)
        return prepared.geometry.to_original(faces)

    def detect(self, items: Iterable[tuple[object, Prepared]], timings: Timings) -> dict[object, Faces | str]:
        """Faces (or an error string) per key, running the model with several requests in flight."""
        results: dict[object, Faces | str] = {}

        def on_result(
            outputs: list[np.ndarray], infer_seconds: float, userdata: tuple[object, Prepared]
        ) -> None:
            key, prepared = userdata
            started = time.perf_counter()
            try:
                results[key] = self.decode(outputs, prepared)
            except Exception as error:  # a decoder bug must not take the shard down with it
                results[key] = f"decode failed: {type(error).__name__}: {error}"
            finished = time.perf_counter()
            timings.add("infer", infer_seconds)
            timings.add("decode_nms", finished - started)

        run_in_flight(
            self._compiled,
            ((prepared.tensor, (key, prepared)) for key, prepared in items),
            on_result,
        )
        return results
