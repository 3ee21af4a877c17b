"""Anchor-based RPN outputs per FPN stride: insightface RetinaFace (`face_rpn_*`) and SSH (`rpn_*`).

Per stride s in (32, 16, 8), A = 2 anchors per cell: scores [B,2A,H,W] (channels [A:2A] are the face
probability), deltas [B,4A,H,W] (channel a*4+j, j = dx,dy,dw,dh) and, RetinaFace only, landmarks
[B,10A,H,W] (channel a*10+2k+{x,y}). Anchors follow insightface's `generate_anchors_fpn`/`anchors_plane`:
base size 16, ratio 1, scales (32,16)/(8,4)/(2,1), shifted by (w*s, h*s), flattened as (h*W + w)*A + a.
Boxes decode with the +1 pixel convention (`bbox_pred`) and are clipped to 0..W-1 / 0..H-1
(`clip_boxes`); landmarks are relative to the (unclipped) anchor: x = lx*w + cx.

References: insightface `RetinaFace.detect` keeps scores >= threshold per stride, then one global NMS
(0.4); mxnet-SSH `SSHDetector.detect` keeps the top 1000 per stride, one global NMS (0.3), then scores
>= threshold (the same set as thresholding first: a box's fate in greedy NMS depends only on
higher-scoring boxes). Both NMS use +1 areas. insightface's default NMS (the GPU kernel, ctx_id 0, which
both references use) suppresses IoU > threshold; its Cython CPU fallback suppresses IoU >= threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from facesweep.workers.faces import Faces
from facesweep.workers.model.formats.base import PLUS_ONE_NMS, DecodeSettings, Format, OutputInfo, find_named
from facesweep.workers.model.preprocess import Preprocess

STRIDES = (32, 16, 8)
SCALES = {32: (32, 16), 16: (8, 4), 8: (2, 1)}
BASE_SIZE = 16
KINDS = ("cls", "bbox", "landmark")
CHANNELS_PER_ANCHOR = {"cls": 2, "bbox": 4, "landmark": 10}


@lru_cache(maxsize=32)
def anchors(stride: int, width: int, height: int) -> np.ndarray:
    """Anchors [height*width*A, 4] (x1,y1,x2,y2) of a `width` x `height` feature map at `stride`."""
    center = 0.5 * (BASE_SIZE - 1)  # generate_anchors: the base box [0, 0, 15, 15], scaled about its centre
    half = 0.5 * (BASE_SIZE * np.array(SCALES[stride], np.float32) - 1)
    base = np.stack([center - half, center - half, center + half, center + half], axis=1)  # [A, 4]
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4) * stride
    return (shifts + base[None]).reshape(-1, 4).astype(np.float32)


@dataclass(frozen=True)
class AnchorDecoder:
    """RetinaFace's and SSH's matcher and decoder, and what tells them apart: names, landmarks, top-k."""

    prefix: str
    landmarks: bool
    top_k_per_stride: int | None

    @property
    def kinds(self) -> tuple[str, ...]:
        return KINDS if self.landmarks else KINDS[:2]

    def names(self) -> list[str]:
        """Output names in decoder order: per stride 32, 16, 8, the scores, deltas (and landmarks)."""
        suffix = {"cls": "cls_prob_reshape", "bbox": "bbox_pred", "landmark": "landmark_pred"}
        return [f"{self.prefix}_{suffix[k]}_stride{s}" for s in STRIDES for k in self.kinds]

    def match(self, outputs: Sequence[OutputInfo]) -> list[int] | None:
        """By name; else, like the OMZ wrapper, outputs named *cls*/*bbox*/*landmark* sorted by H."""
        found = find_named(outputs, self.names())
        if found is None:
            return self._match_by_shape(outputs)
        wanted = [CHANNELS_PER_ANCHOR[k] * len(SCALES[s]) for s in STRIDES for k in self.kinds]
        if any(outputs[i].shape[1:2] not in ((c,), (None,)) for i, c in zip(found, wanted, strict=True)):
            return None  # other anchor settings (e.g. ratios (1, 1.5): 3 anchors per cell) decode wrongly
        return found

    def _match_by_shape(self, outputs: Sequence[OutputInfo]) -> list[int] | None:
        def of_kind(kind: str) -> list[int]:
            channels = CHANNELS_PER_ANCHOR[kind] * len(SCALES[STRIDES[0]])
            return [
                i
                for i, o in enumerate(outputs)
                if any(kind in n for n in o.names) and len(o.shape) == 4 and o.shape[1] == channels
            ]

        if not self.landmarks and of_kind("landmark"):
            return None  # a model with landmark outputs is RetinaFace's
        groups = []
        for kind in self.kinds:
            hits = of_kind(kind)
            heights = [outputs[i].shape[2] for i in hits]
            if len(hits) != len(STRIDES) or None in heights or len(set(heights)) != len(STRIDES):
                return None
            groups.append(sorted(hits, key=lambda i: outputs[i].shape[2]))  # H ascending: stride 32 first
        levels = list(zip(*groups, strict=True))
        if any(len({outputs[i].shape[2:] for i in level}) != 1 for level in levels):
            return None
        return [i for level in levels for i in level]

    def decode(
        self, outputs: Sequence[np.ndarray], net_size: tuple[int, int], settings: DecodeSettings
    ) -> Faces:
        net_w, net_h = net_size
        per_stride = len(self.kinds)
        bases, deltas, scores, points = [], [], [], []  # the candidates of every stride
        for level, stride in enumerate(STRIDES):
            cls, delta, *landmarks = (o[0] for o in outputs[level * per_stride : (level + 1) * per_stride])
            a = len(SCALES[stride])
            height, width = delta.shape[1:]
            face = cls[a:].reshape(a, -1)  # [anchor, cell]
            anchor, cell = np.nonzero(face >= settings.score_threshold)
            if not len(cell):
                continue
            keep = cell * a + anchor  # the reference's index: (h*W + w)*A + a
            order = np.argsort(keep, kind="stable")
            keep, cell, anchor = keep[order], cell[order], anchor[order]
            score = face[anchor, cell]
            if self.top_k_per_stride is not None and len(keep) > self.top_k_per_stride:
                top = np.argsort(-score, kind="stable")[: self.top_k_per_stride]
                keep, cell, anchor, score = keep[top], cell[top], anchor[top], score[top]
            bases.append(anchors(stride, width, height)[keep])
            deltas.append(delta.reshape(a, 4, -1)[anchor, :, cell])  # [n, 4] = dx, dy, dw, dh
            scores.append(score)
            if landmarks:
                points.append(landmarks[0].reshape(a, 5, 2, -1)[anchor, :, :, cell])  # [n, 5, 2]
        if not bases:
            return Faces.empty(self.landmarks)
        base, d = np.concatenate(bases), np.concatenate(deltas)
        w = base[:, 2] - base[:, 0] + 1
        h = base[:, 3] - base[:, 1] + 1
        cx = base[:, 0] + 0.5 * (w - 1)
        cy = base[:, 1] + 0.5 * (h - 1)
        pcx, pcy = d[:, 0] * w + cx, d[:, 1] * h + cy
        half_w, half_h = 0.5 * (np.exp(d[:, 2]) * w - 1), 0.5 * (np.exp(d[:, 3]) * h - 1)
        box = np.stack([pcx - half_w, pcy - half_h, pcx + half_w, pcy + half_h], axis=1)
        np.maximum(np.minimum(box, [net_w - 1, net_h - 1] * 2, out=box), 0, out=box)
        landmarks = None
        if self.landmarks:
            size, center = np.stack([w, h], 1)[:, None], np.stack([cx, cy], 1)[:, None]
            landmarks = (np.concatenate(points) * size + center).astype(np.float32)
        faces = Faces(box.astype(np.float32), np.concatenate(scores).astype(np.float32), landmarks)
        return PLUS_ONE_NMS.apply(faces, settings.nms_threshold)


RETINAFACE_DECODER = AnchorDecoder(prefix="face_rpn", landmarks=True, top_k_per_stride=None)
SSH_DECODER = AnchorDecoder(prefix="rpn", landmarks=False, top_k_per_stride=1000)
# BGR raw 0..255 (the OMZ IRs carry their means). Aspect kept, as insightface does: on WIDER photos a
# plain 640x640 resize (as OMZ evaluates; --resize stretch) makes boxes too wide and too short and loses
# recall of faces >= 64 px (0.864 against 0.916 at score 0.05 on the 73 photos of tests/test_shared_models).
PREPROCESS = Preprocess(input_size=(640, 640), resize="letterbox", color="BGR")

RETINAFACE = Format(
    name="retinaface",
    description="insightface RetinaFace: face_rpn_cls/bbox/landmark per stride 32/16/8, 2 anchors per cell",
    has_landmarks=True,
    preprocess=PREPROCESS,
    match=RETINAFACE_DECODER.match,
    decode=RETINAFACE_DECODER.decode,
    nms_rule=PLUS_ONE_NMS,
    default_nms_threshold=0.4,
)

SSH = Format(
    name="ssh",
    description="SSH: rpn_cls/bbox per stride 32/16/8, 2 anchors per cell, top 1000 per stride",
    has_landmarks=False,
    preprocess=PREPROCESS,
    match=SSH_DECODER.match,
    decode=SSH_DECODER.decode,
    nms_rule=PLUS_ONE_NMS,
    default_nms_threshold=0.3,
)
