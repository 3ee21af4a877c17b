"""`facesweep quantize`: the built-in model to INT8 on 20 real WIDER photos, loaded back through the job's own
path; the command's one-line refusals. Needs ../shared (the photos); skipped without it."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from facesweep.api import FaceDetector
from facesweep.cli import main
from facesweep.workers.config import DetectorSettings
from facesweep.workers.model.catalog import checked_model
from facesweep.workers.model.formats.known import recognise
from facesweep.workers.model.nms import pairwise_iou
from facesweep.workers.model.plan import inspect_model
from facesweep.workers.model.preprocess import Preprocess
from facesweep.workers.model.quantize import network_input
from facesweep.workers.model.runtime import compile_model, read_model, source_checksum
from tests.paths import WIDER_SUBSET
from tests.photos import ASTRONAUT_FACE, astronaut

PHOTOS = WIDER_SUBSET / "images"

pytestmark = pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"WIDER FACE photos not available under {PHOTOS}")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The default model quantized on a manifest of 20 photos: the IR's path and what the command said."""
    folder = tmp_path_factory.mktemp("quantize")
    manifest = folder / "photos.txt"
    manifest.write_text("".join(f"{path}\n" for path in sorted(PHOTOS.rglob("*.jpg"))[:20]))
    out = folder / "mnet-int8.xml"
    arguments = ["--calibration", str(manifest), "--out", str(out), "--seconds", "0"]
    with redirect_stdout(io.StringIO()) as said:
        assert main(["quantize", "retinaface-mnet025", *arguments]) == 0
    return out, said.getvalue()


def test_the_int8_model_runs_as_any_model_and_finds_the_face(quantized: tuple[Path, str]) -> None:
    out, said = quantized
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert "on 20 images" in said and f"--model {out}" in said
    fp, int8 = (inspect_model(DetectorSettings(model)) for model in ("retinaface-mnet025", str(out)))
    # recognised as its source by the checksum it records: the same format, preprocessing and decoding
    assert source_checksum(read_model(str(out), "int8")) == fp.checksum
    assert recognise(out, int8.checksum, fp.checksum) == recognise(fp.path, fp.checksum)
    assert (int8.format.name, int8.preprocess, int8.decode) == (fp.format.name, fp.preprocess, fp.decode)
    assert checked_model(str(out))[1] == int8.checksum != fp.checksum  # a job's identity names the INT8 bytes
    boxes = []
    for model in ("retinaface-mnet025", str(out)):
        [result] = FaceDetector(model, threads=2).detect([astronaut()])
        assert result.faces is not None and len(result.faces.scores) >= 1
        boxes.append(result.faces.boxes[:1])
    assert pairwise_iou(boxes[0], ASTRONAUT_FACE, plus_one=False)[0, 0] >= 0.5
    assert pairwise_iou(boxes[1], boxes[0], plus_one=False)[0, 0] >= 0.8


@pytest.mark.parametrize(
    ("calibration", "out", "reason"),
    [
        ("missing-folder", "x.xml", "INPUT"),
        (str(PHOTOS), "no-such-folder/x.xml", "cannot write in"),
        (str(PHOTOS), "x.onnx", "give a path ending in .xml"),
    ],
)
def test_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], calibration: str, out: str, reason: str
) -> None:
    source = tmp_path / calibration if calibration == "missing-folder" else Path(calibration)
    arguments = ["quantize", "retinaface-mnet025", "--calibration", str(source), "--out", str(tmp_path / out)]
    assert main(arguments) == 1
    err = capsys.readouterr().err
    assert err.startswith("facesweep: error: ") and reason in err and err.count("\n") == 1
    assert not list(tmp_path.rglob("*.xml"))


def test_calibration_input_is_what_the_compiled_model_computes() -> None:
    """The NumPy preprocessing NNCF sees equals a job's compiled in-graph steps (RGB, mean, scale, layout)."""
    preprocess = Preprocess((8, 6), "stretch", "RGB", mean=(1.0, 2.0, 3.0), scale=(2.0, 4.0, 8.0))
    parameter = ov.op.Parameter(ov.Type.f32, ov.PartialShape([1, 3, -1, -1]))
    compiled = compile_model(ov.Model([parameter], [parameter]), preprocess, "CPU", 1, "f32")
    view = np.random.default_rng(0).integers(0, 256, (1, 6, 8, 3), np.uint8)
    np.testing.assert_allclose(network_input(view, preprocess), compiled(view)[0], rtol=1e-6)
