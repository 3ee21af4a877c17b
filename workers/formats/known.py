"""Models we know by name or checksum, with the preprocessing and face label their references use.

An unknown model gets its format's defaults, with the input size read from its IR when that is static;
flags override either. Checksums are the first 16 hex digits of the SHA-256 of the .xml / .onnx file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from workers.formats.base import Preprocess


@dataclass(frozen=True)
class KnownModel:
    name: str
    format: str
    sha256: tuple[str, ...] = ()
    preprocess: Preprocess | None = None  # None: the format's default, input size from the IR
    face_label: int | None = None
    max_batch: int | None = None


KNOWN_MODELS = (
    KnownModel("face-detection-0204", "ssd", ("b0a3e6c7bf98c0fb", "3d574abd39758aa6"), face_label=0),
    KnownModel("face-detection-0200", "ssd", ("4bd7170a21b53df4",), face_label=0),
    KnownModel("face-detection-adas-0001", "ssd", ("3b22c061a6992186",), face_label=1),
    KnownModel("face-detection-retail-0004", "ssd", face_label=1),
    KnownModel("face-detection-retail-0005", "ssd", ("b8faaf02020fc468",), face_label=1, max_batch=1),
    KnownModel("face-detection-0205", "boxes_labels", ("eb8a04e2d5648f16",), face_label=0),
    KnownModel("face-detection-0206", "boxes_labels", face_label=0),
    KnownModel("retinaface-resnet50", "retinaface"),
    KnownModel("retinaface-mnet025-bgr-640", "retinaface", ("e6c49b9b81c92e8f",)),
    KnownModel(
        "mnet.25",
        "retinaface",
        ("6683f0c04e85e17e",),
        preprocess=Preprocess(input_size=(640, 640), resize="letterbox", color="RGB"),
    ),
    KnownModel("ssh-mxnet", "ssh"),
    KnownModel("ssh-format-mnet025-bgr-640", "ssh", ("63bd162751850e02",)),
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


def recognise(path: Path) -> KnownModel | None:
    """The known model this file is, by checksum first, then by file name."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    by_checksum = [m for m in KNOWN_MODELS if digest in m.sha256]
    if by_checksum:
        return by_checksum[0]
    return next((m for m in KNOWN_MODELS if m.name == path.stem), None)
