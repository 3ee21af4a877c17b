"""Pairing images by path and faces by overlap: the one greedy one-to-one matcher that recall, the
report's colours and nothing else re-implements."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from facesweep.workers.evaluation.annotations import EvaluationError, Predictions
from facesweep.workers.model.nms import pairwise_iou


def match_by_suffix(
    predictions: Mapping[str, Predictions],
    ground_truth: Mapping[str, object],
    both_ways: bool = False,
) -> dict[str, Predictions]:
    """`relpath -> predictions` for each ground-truth image whose relpath ends some prediction's uri.

    The match is on whole path components: `images/a/b.jpg` matches `/data/images/a/b.jpg` and
    `s3://bucket/images/a/b.jpg`, never `/data/xximages/a/b.jpg`. Ground-truth images with no matching
    prediction are absent from the result (callers decide whether that is a miss or an error). Raises
    ValueError when a relpath matches more than one uri.

    With `both_ways`, a relpath that no uri ends with may also end with a prediction's key (the longest
    such key wins): predictions keyed `<event>/<name>.jpg`, as `read_wider_txt` gives them, then match
    ground truth listed as `images/<event>/<name>.jpg`. Raises ValueError when one prediction would so
    serve two images.
    """
    by_suffix: dict[str, list[str]] = {}
    for uri in predictions:
        parts = uri.replace("#", "/").split("/")  # a container's member path pairs too
        for start in range(len(parts)):
            by_suffix.setdefault("/".join(parts[start:]), []).append(uri)
    keys = {uri.strip("/"): uri for uri in predictions} if both_ways else {}
    served: dict[str, str] = {}
    matched: dict[str, Predictions] = {}
    for relpath in ground_truth:
        candidates = by_suffix.get(relpath.strip("/"), [])
        if len(candidates) > 1:
            raise EvaluationError(f"{relpath} matches several predictions: {', '.join(candidates[:3])}")
        if not candidates and keys:
            parts = relpath.strip("/").split("/")
            shorter = ("/".join(parts[start:]) for start in range(1, len(parts)))
            uri = next((keys[suffix] for suffix in shorter if suffix in keys), None)
            if uri is not None:
                if uri in served:
                    raise EvaluationError(
                        f"{uri} matches several ground-truth images: {served[uri]}, {relpath}"
                    )
                served[uri] = relpath
                candidates = [uri]
        if candidates:
            matched[relpath] = predictions[candidates[0]]
    return matched


def recall(
    pred_boxes: np.ndarray,
    gt_boxes: np.ndarray,
    iou: float = 0.5,
    min_height: float = 0,
    scores: np.ndarray | None = None,
) -> tuple[int, int]:
    """`(found, total)`: how many of the counted ground-truth faces the predictions find.

    Matching is greedy and one-to-one: predictions in descending score order (`scores`, else the given
    order, which facesweep writes best first) each take the unmatched counted face they overlap most,
    if that IoU is at least `iou`. A second prediction on an already-found face finds nothing.

    Faces less than `min_height` pixels high are ignored: left out of `total` and removed before
    matching, so they can never be found nor take a prediction away from a counted face. (This is
    COCO's rule for ignored ground truth: a prediction falls back to an ignored face only when no
    counted face is left for it, and such a match is not counted.)
    """
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    pred_boxes = np.asarray(pred_boxes, np.float32).reshape(-1, 4)
    counted = gt_boxes[(gt_boxes[:, 3] - gt_boxes[:, 1]) >= min_height]
    if scores is not None:
        pred_boxes = pred_boxes[np.argsort(-np.asarray(scores), kind="stable")]
    return int(match_faces(pred_boxes, counted, iou)[1].sum()), len(counted)


def match_faces(boxes: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """`(matched [N], found [M])`: greedy one-to-one matching of detections, in the given order (best
    first), each to the unmatched face it overlaps most, if that IoU (continuous areas) is at least `iou`
    and above 0. Sequential by nature; only detections that overlap some face enough take a step."""
    overlaps = pairwise_iou(boxes.astype(np.float64), truth.astype(np.float64), plus_one=False)
    overlaps[(overlaps < iou) | (overlaps <= 0)] = -1.0  # -1: not a candidate
    matched, found = np.zeros(len(boxes), bool), np.zeros(len(truth), bool)
    for i in np.flatnonzero((overlaps >= 0).any(axis=1)):
        free = np.where(found, -1.0, overlaps[i])
        best = int(np.argmax(free))
        if free[best] >= 0:
            matched[i] = found[best] = True
    return matched, found
