"""OpenVINO: read a model, bake preprocessing into it, compile it once, and run many requests in flight.

Knows nothing about faces: it turns uint8 NHWC images into the model's raw outputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from openvino.frontend import FrontEndManager
from openvino.preprocess import ColorFormat, PrePostProcessor

from facesweep.workers.errors import line_of
from facesweep.workers.model.catalog import ModelError, cache_dir
from facesweep.workers.model.formats.base import OutputInfo
from facesweep.workers.model.preprocess import Preprocess

_core: ov.Core | None = None
_DEVICE = r"(CPU|GPU(\.\d+)?)"
DEVICES = re.compile(rf"{_DEVICE}|AUTO(:{_DEVICE}(,{_DEVICE})*)?", re.IGNORECASE)


def check_device(device: str) -> str:
    """`device` upper-cased when it is CPU, GPU, GPU.N, AUTO or AUTO:D,D,... (each D: CPU or GPU[.N]);
    a one-line ValueError otherwise."""
    if not DEVICES.fullmatch(device):
        raise ValueError(f"unknown --device {device!r}: use CPU, GPU, GPU.N, AUTO or AUTO:GPU,CPU")
    return device.upper()


def core() -> ov.Core:
    """The process's one OpenVINO Core, caching compiled models on this node's disk (`cache/openvino`).

    Measured on 2 CPUs, compile cold / warm: default model 0.27 / 0.21 s, face-detection-0204 0.30 / 0.11 s,
    face-detection-0205 0.94 / 0.30 s (a GPU's kernel compilation, not measured here, saves more)."""
    global _core
    if _core is None:
        _core = ov.Core()
        _core.set_property({"CACHE_DIR": str(cache_dir() / "openvino")})
    return _core


FRONTENDS = {".xml": "ir", ".onnx": "onnx"}
"""OpenVINO's frontend for each model suffix: asked first whether the file is one, so a file that is not
never reaches OpenVINO's guessing, which tries every frontend (TensorFlow's prints protobuf errors)."""
_NOT_A_REASON = re.compile(r"Exception from |Check '.*' failed at |FrontEnd API failed")


def read_model(path: str, display_name: str) -> ov.Model:
    """The model at `path`; a one-line ModelError when OpenVINO cannot read it or it has several inputs."""
    suffix = Path(path).suffix.lower()
    frontend = FrontEndManager().load_by_framework(FRONTENDS[suffix]) if suffix in FRONTENDS else None
    if frontend is not None and not frontend.supported(path):
        kind = "an OpenVINO IR" if suffix == ".xml" else "an ONNX model"
        raise ModelError(f"cannot read model {display_name}: the file is not {kind}")
    try:
        model = core().read_model(path)
    except RuntimeError as error:
        raise ModelError(f"cannot read model {display_name}: {openvino_reason(error)}") from None
    if len(model.inputs) != 1:
        raise ModelError(
            f"model {display_name} has {len(model.inputs)} inputs; a face detector takes one image"
        )
    return model


def openvino_reason(error: Exception) -> str:
    """The reason in an OpenVINO error, without the lines naming its C++ sources."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [line for line in lines if not _NOT_A_REASON.match(line)]
    return " ".join(reasons or lines)[:300] or type(error).__name__


def output_infos(model: ov.Model) -> list[OutputInfo]:
    """Names and partial shapes of the model's outputs (dynamic dimensions as None)."""
    return [
        OutputInfo(
            frozenset(out.get_names()),
            tuple(d.get_length() if d.is_static else None for d in out.get_partial_shape()),
        )
        for out in model.outputs
    ]


SOURCE_KEY = ["facesweep", "source_sha256"]
"""Where an IR made by `facesweep quantize` keeps the SHA-256 of the model it was quantized from."""


def source_checksum(model: ov.Model) -> str | None:
    """The checksum of the model a quantized IR was made from (`quantize.quantize`), else None."""
    return model.get_rt_info(SOURCE_KEY).astype(str) if model.has_rt_info(SOURCE_KEY) else None


def static_input_size(model: ov.Model) -> tuple[int, int] | None:
    """(width, height) of the model's NCHW image input when the IR fixes it, else None."""
    shape = model.input().get_partial_shape()
    if shape.rank.is_static and len(shape) == 4 and shape[2].is_static and shape[3].is_static:
        return shape[3].get_length(), shape[2].get_length()
    return None


def compile_model(
    model: ov.Model,
    preprocess: Preprocess,
    device: str,
    threads: int,
    precision: str | None,
    batch: int = 1,
    pinning: bool = False,
) -> ov.CompiledModel:
    """Compiles `model` for uint8 NHWC BGR input batches: colour order, mean and scale run in the graph."""
    height, width = (-1, -1) if preprocess.input_size is None else preprocess.input_size[::-1]
    try:
        model.reshape({model.input(): ov.PartialShape([batch, 3, height, width])})
    except RuntimeError as error:
        reason = line_of(error, limit=160)
        raise ModelError(f"model cannot take batch {batch} of {width}x{height} images: {reason}") from None
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(
        ColorFormat.BGR
    )
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    steps = ppp.input().preprocess()
    if preprocess.color == "RGB":
        steps.convert_color(ColorFormat.RGB)
    steps.convert_element_type(ov.Type.f32)
    if any(preprocess.mean):
        steps.mean(list(preprocess.mean))
    if any(s != 1 for s in preprocess.scale):
        steps.scale(list(preprocess.scale))
    config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT"}
    if device.upper().startswith("CPU"):
        config |= {"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": pinning}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    return core().compile_model(ppp.build(), device, config)


def infer(compiled: ov.CompiledModel, tensor: np.ndarray) -> list[np.ndarray]:
    """The model's outputs for one input, synchronously (one-off runs; jobs use `run_in_flight`)."""
    result = compiled(tensor)
    return [result[output] for output in compiled.outputs]


def run_in_flight(
    compiled: ov.CompiledModel,
    inputs: Iterable[tuple[np.ndarray, Any]],
    on_result: Callable[[list[np.ndarray], float, Any], None],
    requests_per_stream: int = 2,
) -> None:
    """Runs every (tensor, userdata), `requests_per_stream` times the device's optimal number of requests
    in flight (`Tuning.requests_per_stream`); returns once every result has been delivered.

    `on_result(outputs, seconds, userdata)` is called from OpenVINO's threads with the request's output
    arrays, valid only during the call (decode them there, keep nothing that points into them), and the
    request's inference time. Inputs are shared with the request, not copied: each tensor is kept alive
    until its result is in. Consuming `inputs` lazily lets the caller overlap fetching and decoding with
    inference (a full queue blocks the next submission).
    """
    requests = requests_per_stream * compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    queue = ov.AsyncInferQueue(compiled, requests)
    queue.set_callback(
        lambda request, job: on_result(
            [t.data for t in request.output_tensors], request.latency / 1000, job[1]
        )
    )
    for tensor, userdata in inputs:
        queue.start_async({0: tensor}, (tensor, userdata), share_inputs=True)
    queue.wait_all()


def warm_up(compiled: ov.CompiledModel, tensor: np.ndarray) -> None:
    """One request through `run_in_flight`, before anything runs concurrently. The first request of a
    process initializes the bindings' NumPy glue (function-local statics); two threads doing that at once
    can deadlock on the GIL (seen once in about a hundred jobs: a threaded actor's two first shards)."""
    run_in_flight(compiled, [(tensor, None)], lambda outputs, seconds, userdata: None)
