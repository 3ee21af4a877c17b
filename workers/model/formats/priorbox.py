"""Prior-box RetinaFace (biubug6/Pytorch_Retinaface), the default model's format.

Outputs `loc` [B,P,4], `conf` [B,P,2] (softmaxed), `landmarks` [B,P,10]. Priors at strides 8/16/32 with
sizes (16,32)/(64,128)/(256,512), ordered (row, column, size); variances 0.1 / 0.2. The reference
(`detect.py`, `box_utils.decode`): threshold, top 5000 by score, NMS with +1 areas, keep top 750.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from facesweep.workers.faces import Faces
from facesweep.workers.model.formats.base import PLUS_ONE_NMS, DecodeSettings, Format, OutputInfo, find_named
from facesweep.workers.model.preprocess import Preprocess

STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
TOP_K_BEFORE_NMS = 5000
KEEP_TOP_K = 750
OUTPUTS = ("loc", "conf", "landmarks")


@lru_cache(maxsize=64)  # native resolution: one size per photo shape
def priors(width: int, height: int) -> np.ndarray:
    """Priors [P, 4] as (cx, cy, w, h) in pixels of a `width` x `height` network input."""
    per_step = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        fh, fw = -(-height // step), -(-width // step)
        ys, xs, size = np.meshgrid(np.arange(fh), np.arange(fw), np.array(sizes), indexing="ij")
        centers = np.stack([(xs + 0.5) * step, (ys + 0.5) * step], axis=-1).reshape(-1, 2)
        per_step.append(np.hstack([centers, np.repeat(size.reshape(-1, 1), 2, axis=1)]))
    return np.vstack(per_step).astype(np.float32)


def match(outputs: Sequence[OutputInfo]) -> list[int] | None:
    return find_named(outputs, OUTPUTS)


def decode(outputs: Sequence[np.ndarray], net_size: tuple[int, int], settings: DecodeSettings) -> Faces:
    loc, conf, landmarks = (o.reshape(o.shape[-2:]) for o in outputs)
    prior = priors(*net_size)
    candidates = np.flatnonzero(conf[:, 1] > settings.score_threshold)
    candidates = candidates[np.argsort(-conf[candidates, 1], kind="stable")[:TOP_K_BEFORE_NMS]]
    p, d = prior[candidates], loc[candidates]
    centers = p[:, :2] + d[:, :2] * VARIANCES[0] * p[:, 2:]
    sizes = p[:, 2:] * np.exp(d[:, 2:] * VARIANCES[1])
    boxes = np.hstack([centers - sizes / 2, centers + sizes / 2])
    points = p[:, None, :2] + landmarks[candidates].reshape(-1, 5, 2) * VARIANCES[0] * p[:, None, 2:]
    faces = Faces(boxes, conf[candidates, 1], points)
    return PLUS_ONE_NMS.apply(faces, settings.nms_threshold, max_kept=KEEP_TOP_K)


FORMAT = Format(
    name="priorbox",
    description="prior-box RetinaFace (biubug6): loc/conf/landmarks",
    has_landmarks=True,
    preprocess=Preprocess(
        input_size=(640, 640),
        resize="letterbox",
        color="BGR",
        mean=(104.0, 117.0, 123.0),
        pad=(104, 117, 123),
    ),
    match=match,
    decode=decode,
    nms_rule=PLUS_ONE_NMS,
    default_nms_threshold=0.4,
)
