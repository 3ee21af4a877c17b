"""Models we know by name or checksum, with the preprocessing and face label their references use.

An unknown model gets its format's defaults, with the input size read from its IR when that is static;
flags override either. Checksums are the first 16 hex digits of the model's checksum (`models.model_checksum`:
the SHA-256 of the .onnx file, or of an IR's .xml followed by its .bin).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facesweep.workers.model.preprocess import Preprocess


@dataclass(frozen=True)
class KnownModel:
    name: str
    format: str
    sha256: tuple[str, ...] = ()
    preprocess: Preprocess | None = None  # None: the format's default, input size from the IR
    face_label: int | None = None
    max_batch: int | None = None


KNOWN_MODELS = (
    KnownModel("face-detection-0204", "ssd", ("6192cbf734f15e8a", "770a1d3869c7cd57"), face_label=0),
    KnownModel("face-detection-0200", "ssd", ("8dd229d60edfda6c",), face_label=0),
    KnownModel("face-detection-adas-0001", "ssd", ("16fd78b35a03469b",), face_label=1),
    KnownModel("face-detection-retail-0004", "ssd", face_label=1),
    KnownModel("face-detection-retail-0005", "ssd", ("2ff14bfe22fa8841",), face_label=1, max_batch=1),
    KnownModel("face-detection-0205", "boxes_labels", ("3971312769e0f8c4",), face_label=0),
    KnownModel("face-detection-0206", "boxes_labels", face_label=0),
    KnownModel("retinaface-resnet50", "retinaface"),
    KnownModel("retinaface-mnet025-bgr-640", "retinaface", ("68b06b8ba2dcb3fa",)),
    KnownModel(
        "mnet.25",
        "retinaface",
        ("6683f0c04e85e17e",),
        preprocess=Preprocess(input_size=(640, 640), resize="letterbox", color="RGB"),
    ),
    KnownModel("ssh-mxnet", "ssh"),
    KnownModel("ssh-format-mnet025-bgr-640", "ssh", ("2173eb8b8f8c9556",)),
    KnownModel("retinaface-mnet025", "priorbox", ("b7a7acab55e104dc",)),
    KnownModel(
        "centerface",
        "centerface",
        ("09189deaaf8646c5",),
        preprocess=Preprocess(input_size=None, resize="stretch", color="RGB", size_multiple=32),
    ),
    # insightface's bnkps export: a fixed batch of 1 (its upsampling cannot be reshaped to batch > 1)
    KnownModel("scrfd_500m_bnkps", "scrfd", ("b467f878e26ff1e7",), max_batch=1),
)


def recognise(path: Path, checksum: str, source: str | None = None) -> KnownModel | None:
    """The known model this file is, by its checksum (`models.model_checksum`) first, then by the checksum
    of the model it was quantized from (`source`: `facesweep quantize` records it), then by file name."""
    for digest in (checksum, source):
        by_checksum = [m for m in KNOWN_MODELS if digest and digest[:16] in m.sha256]
        if by_checksum:
            return by_checksum[0]
    return next((m for m in KNOWN_MODELS if m.name == path.stem), None)
