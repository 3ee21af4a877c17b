"""ATSS/FCOS boxes + labels (OMZ face-detection-0205/0206).

Outputs `boxes` [N,5] = `x_min, y_min, x_max, y_max, conf` in network-input pixels and `labels` [N]
(0 = face); N varies (0205) or is padded (0206: 750). There is no batch dimension, so a batch's images
cannot be told apart: batch 1 only. NMS already ran in the graph, so there is none here and
`nms_threshold` is unused. Reference (OMZ model_api `ssd.py` BoxesLabelsParser, `detection_model.py`
resize_detections): a detection is a row with conf > threshold (conf > 0 marks a valid row; here also
label == the face label); x / input width and y / input height times the original size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facesweep.workers.faces import Faces
from facesweep.workers.model.formats.base import DecodeSettings, Format, OutputInfo, find_named
from facesweep.workers.model.preprocess import Preprocess

OUTPUTS = ("boxes", "labels")


def _is_boxes(info: OutputInfo) -> bool:
    return len(info.shape) == 2 and info.shape[1] == 5


def _is_labels(info: OutputInfo) -> bool:
    return len(info.shape) == 1


def match(outputs: Sequence[OutputInfo]) -> list[int] | None:
    """Outputs named `boxes` [N,5] and `labels` [N] (other outputs, e.g. OTX's saliency_map, are ignored);
    without those names, the model's only two outputs when they are one [N,5] and one [N]."""
    named = find_named(outputs, OUTPUTS)
    if named is not None:
        boxes, labels = (outputs[i] for i in named)
        return named if _is_boxes(boxes) and _is_labels(labels) else None
    if len(outputs) != 2:
        return None
    boxes = [i for i, o in enumerate(outputs) if _is_boxes(o)]
    labels = [i for i, o in enumerate(outputs) if _is_labels(o)]
    return [boxes[0], labels[0]] if len(boxes) == len(labels) == 1 else None


def split(outputs: Sequence[np.ndarray], batch: int) -> list[list[np.ndarray]]:
    """The outputs of the one image (no batch axis to cut)."""
    if batch != 1:
        raise ValueError(f"boxes_labels outputs hold one image, not a batch of {batch}")
    return [list(outputs)]


def decode(outputs: Sequence[np.ndarray], net_size: tuple[int, int], settings: DecodeSettings) -> Faces:
    boxes, labels = outputs[0].reshape(-1, 5), outputs[1].reshape(-1)
    scores = boxes[:, 4]
    keep = (scores > 0) & (scores > settings.score_threshold)
    if settings.face_label is not None:
        keep &= labels == settings.face_label
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(-scores[kept], kind="stable")]
    return Faces(boxes[kept, :4].astype(np.float32), scores[kept].astype(np.float32), None)


FORMAT = Format(
    name="boxes_labels",
    description="ATSS/FCOS boxes [N,5] (pixel box + conf) + labels [N]; NMS done in the graph; batch 1",
    has_landmarks=False,
    # BGR raw 0..255 (mean/scale are inside the OMZ IRs); the input size comes from the IR, else 640x640.
    preprocess=Preprocess(input_size=(640, 640), resize="stretch", color="BGR"),
    match=match,
    decode=decode,
    # Unused (the graph did NMS); 0.45 is the IoU threshold of face-detection-0205's NonMaxSuppression.
    default_nms_threshold=0.45,
    split=split,
    max_batch=1,
)
