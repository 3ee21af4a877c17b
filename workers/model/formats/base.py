"""What every output format declares: how to recognise its outputs, its preprocessing, its decoder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from facesweep.workers.faces import Faces
from facesweep.workers.model.nms import nms
from facesweep.workers.model.preprocess import Preprocess


@dataclass(frozen=True)
class OutputInfo:
    """One model output as format detection sees it: all its tensor names and its (partial) shape."""

    names: frozenset[str]
    shape: tuple[int | None, ...]  # None = dynamic dimension


@dataclass(frozen=True)
class DecodeSettings:
    """What a decoder needs besides the outputs: thresholds and, for multi-class outputs, the face label."""

    score_threshold: float
    nms_threshold: float
    face_label: int | None = None  # None: every label counts as a face


Decode = Callable[[Sequence[np.ndarray], tuple[int, int], DecodeSettings], Faces]
"""decode(outputs of one image in `Format.match` order, as `Format.split` cut them, (net_w, net_h),
settings) -> faces in network-input pixels, sorted by score descending."""

Split = Callable[[Sequence[np.ndarray], int], list[list[np.ndarray]]]
"""split(outputs of a batch in `Format.match` order, batch size) -> each image's outputs."""


def split_batch_axis(outputs: Sequence[np.ndarray], batch: int) -> list[list[np.ndarray]]:
    """Cuts every output along its first (batch) axis, keeping a batch axis of 1."""
    return [[o[i : i + 1] for o in outputs] for i in range(batch)]


@dataclass(frozen=True)
class NmsRule:
    """How a format's reference runs NMS: +1-pixel areas, and whether an IoU equal to the threshold
    suppresses. Decoders apply it, and so does merging an image's views (scales, tiles)."""

    plus_one: bool = False
    suppress_equal: bool = False

    def keep(self, faces: Faces, threshold: float, max_kept: int | None = None) -> np.ndarray:
        """Indices of the faces NMS keeps, best first."""
        return nms(
            faces.boxes,
            faces.scores,
            threshold,
            self.plus_one,
            max_kept=max_kept,
            suppress_equal=self.suppress_equal,
        )

    def apply(self, faces: Faces, threshold: float, max_kept: int | None = None) -> Faces:
        return faces.take(self.keep(faces, threshold, max_kept))


PLUS_ONE_NMS = NmsRule(plus_one=True)
"""The `py_cpu_nms` of insightface's and biubug6's references: +1-pixel areas, an IoU equal to the
threshold kept (RetinaFace, SSH, SCRFD, prior-box RetinaFace)."""


@dataclass(frozen=True)
class Format:
    """An output format: a matching rule over the model's outputs, default preprocessing, a decoder."""

    name: str
    description: str
    has_landmarks: bool
    preprocess: Preprocess
    match: Callable[[Sequence[OutputInfo]], list[int] | None]
    """Indices of the outputs the decoder takes, in its order, or None when these are not our outputs."""
    decode: Decode
    default_nms_threshold: float
    split: Split = split_batch_axis
    max_batch: int | None = None  # 1 when the outputs cannot tell a batch's images apart
    nms_rule: NmsRule = NmsRule()


def find_named(outputs: Sequence[OutputInfo], names: Sequence[str]) -> list[int] | None:
    """Indices of the outputs carrying each of `names` (a port may carry several names), or None."""
    found = []
    for name in names:
        hits = [i for i, out in enumerate(outputs) if name in out.names]
        if not hits:
            return None
        found.append(hits[0])
    return found


@lru_cache(maxsize=32)
def stride_grid(
    width: int, height: int, strides: tuple[int, ...], per_cell: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The cells (column, row) of each stride's feature map of a `width` x `height` input, each repeated
    `per_cell` times (anchors per cell), and their strides: float32 [P, 2] and [P] in the row order of
    anchor-free outputs (stride, row, column, anchor). Cached per input size: read-only."""
    cells, steps = [], []
    for stride in strides:
        rows, cols = np.mgrid[: height // stride, : width // stride]
        grid = np.stack([cols, rows], axis=-1).reshape(-1, 2)
        cells.append(np.repeat(grid, per_cell, axis=0))
        steps.append(np.full(len(grid) * per_cell, stride))
    return np.vstack(cells).astype(np.float32), np.concatenate(steps).astype(np.float32)
