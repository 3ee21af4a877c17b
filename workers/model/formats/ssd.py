"""SSD DetectionOutput (OMZ face-detection-0200/0204, adas-0001, retail-0004/0005).

One output [1,1,N,7] for the whole batch: rows `image_id, label, conf, x_min, y_min, x_max, y_max`, the
coordinates normalized to [0,1] of the network input. The graph's DetectionOutput has already run NMS and
kept the top rows, so there is no NMS here and `nms_threshold` is unused. Rows belong to an image by their
`image_id` (not by position); the first row with `image_id == -1` ends the valid rows (padding after it).
Reference (OMZ model_api `ssd.py` SingleOutputParser, `detection_model.py` resize_detections, accuracy
checker `ssd.py`): a detection is a row with conf > threshold (here also label == the face label), box =
coordinates * input size, which for a plain resize is coordinates * original width / height.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facesweep.workers.faces import Faces
from facesweep.workers.model.formats.base import DecodeSettings, Format, OutputInfo
from facesweep.workers.model.preprocess import Preprocess

COLUMNS = 7  # image_id, label, conf, x_min, y_min, x_max, y_max


def match(outputs: Sequence[OutputInfo]) -> list[int] | None:
    """The model's only output, shaped [1,1,N,7] (OMZ's parser also insists on a single output: a second
    one would be something this decoder silently ignores, e.g. another format's tensors)."""
    if len(outputs) != 1:
        return None
    shape = outputs[0].shape
    if len(shape) == 4 and shape[0] in (1, None) and shape[1] == 1 and shape[3] == COLUMNS:
        return [0]
    return None


def valid_rows(detections: np.ndarray) -> np.ndarray:
    """The rows [M,7] before the first `image_id == -1` row (all rows when there is none)."""
    rows = detections.reshape(-1, COLUMNS)
    end = np.flatnonzero(rows[:, 0] == -1)
    return rows[: end[0]] if len(end) else rows


def split(outputs: Sequence[np.ndarray], batch: int) -> list[list[np.ndarray]]:
    """Each image's rows [M,7], picked by the `image_id` column."""
    rows = valid_rows(outputs[0])
    return [[rows[rows[:, 0] == i]] for i in range(batch)]


def decode(outputs: Sequence[np.ndarray], net_size: tuple[int, int], settings: DecodeSettings) -> Faces:
    rows = valid_rows(outputs[0])
    keep = rows[:, 2] > settings.score_threshold
    if settings.face_label is not None:
        keep &= rows[:, 1] == settings.face_label
    rows = rows[keep]
    rows = rows[np.argsort(-rows[:, 2], kind="stable")]
    net_w, net_h = net_size
    boxes = rows[:, 3:7] * np.array([net_w, net_h, net_w, net_h], np.float32)
    return Faces(boxes.astype(np.float32), rows[:, 2].astype(np.float32), None)


FORMAT = Format(
    name="ssd",
    description="SSD DetectionOutput [1,1,N,7]: image_id, label, conf, normalized box; NMS done in the graph",
    has_landmarks=False,
    # BGR raw 0..255 (mean/scale are inside the OMZ IRs); the input size comes from the IR, else 300x300.
    preprocess=Preprocess(input_size=(300, 300), resize="stretch", color="BGR"),
    match=match,
    decode=decode,
    # Unused (the graph's DetectionOutput did NMS); 0.45 is the nms_threshold the OMZ IRs carry.
    default_nms_threshold=0.45,
    split=split,
)
