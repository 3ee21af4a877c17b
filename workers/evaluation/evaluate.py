"""Accuracy of a facesweep output against ground-truth face boxes: average precision and the
`facesweep eval` report (inputs read by `annotations.py`, images paired and faces counted by `matching.py`):

- `wider_ap`: the official WIDER FACE evaluation (easy / medium / hard), reproduced exactly;
- `omz_ap`: Open Model Zoo's accuracy checker on WIDER (faces outside [64, 1024) px high ignored);
- `voc_ap`: plain Pascal VOC AP at IoU 0.5 over all faces.

Boxes are `[N, 4]` arrays of `x1, y1, x2, y2` in original-image pixels (`annotations.py`). Three
protocols, each reproduced to the reference's last digit with its own documented quirks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facesweep.workers.evaluation.annotations import (
    SETTINGS,
    EvaluationError,
    GroundTruth,
    Predictions,
    load_predictions,
    read_ground_truth,
    read_ground_truth_with_settings,
)
from facesweep.workers.evaluation.matching import PAIRING_RULE, pair_paths
from facesweep.workers.inputs import videos
from facesweep.workers.inputs.containers import parse_piece
from facesweep.workers.model.nms import pairwise_intersection, pairwise_iou
from facesweep.workers.output.record import read_record

# --- average precision -----------------------------------------------------------------------------------


def wider_ap(
    predictions: Mapping[str, Predictions],
    ground_truth: Mapping[str, GroundTruth],
    iou: float = 0.5,
    thresholds: int = 1000,
) -> dict[str, float]:
    """`{"easy": ap, "medium": ap, "hard": ap}`: the official WIDER FACE evaluation, exactly.

    That is `widerface_evaluate/evaluation.py` (the Python port every RetinaFace repository ships):
    - scores are normalized over the whole set, `(s - min) / (max - min)` with `min <= 1` and `max >= 0`;
    - in each image a prediction (in the given order, not sorted) looks at the face it overlaps most (IoU with
      +1 pixel areas). At IoU >= `iou` with a face outside the setting's positives, the prediction is dropped
      from the proposals (it counts neither way); with a positive face, that face is recalled (once);
    - at each of `thresholds` score thresholds `1 - (t + 1) / thresholds`, an image contributes its
      proposals and recalled faces up to its *last* prediction scoring at least the threshold;
    - precision = recalled / proposals and recall = recalled / positives, summed over the set, then the
      all-point VOC AP of that curve. Images without faces or without predictions are skipped (their
      predictions count nowhere); their positive faces still count.

    `predictions` are keyed like `ground_truth` (see `pair_paths`); images absent from it have none.
    Raises ValueError when the ground truth has no easy/medium/hard flags.
    """
    images = list(ground_truth.items())
    if any(truth.positives is None for _, truth in images):
        raise EvaluationError("WIDER AP needs the easy/medium/hard columns in the ground truth")
    # one row per ground-truth face (all images, in order) and one per prediction that takes part
    positives = np.concatenate([truth.positives for _, truth in images] or [np.zeros((0, 3), bool)])
    scored = [predictions[name] for name, _ in images if name in predictions]
    all_scores = np.concatenate([np.asarray(scores, np.float64) for _, scores in scored] or [np.zeros(0)])
    low = min(1.0, all_scores.min(initial=np.inf))  # the official script starts from min 1, max 0
    high = max(0.0, all_scores.max(initial=-np.inf))
    spread = high - low if high > low else 1.0
    faces, hits, levels = [], [], []
    offset = 0
    for name, truth in images:
        found = predictions.get(name)
        if found is not None and len(truth.boxes) and len(found[1]):
            boxes = np.asarray(found[0], np.float64).reshape(-1, 4)
            overlaps = pairwise_iou(boxes, truth.boxes.astype(np.float64), plus_one=True)
            best = overlaps.argmax(axis=1)
            hits.append(overlaps[np.arange(len(best)), best] >= iou)
            faces.append(offset + best)
            normalized = (np.asarray(found[1], np.float64) - low) / spread
            # the image's state at a threshold is that after its last prediction at or above it: each
            # prediction therefore counts from the highest score at or after it (a suffix maximum) down
            levels.append(np.maximum.accumulate(normalized[::-1])[::-1])
        offset += len(truth.boxes)
    face = np.concatenate(faces or [np.zeros(0, np.int64)])
    hit = np.concatenate(hits or [np.zeros(0, bool)])
    level = np.concatenate(levels or [np.zeros(0)])
    cuts = 1 - np.arange(1, thresholds + 1) / thresholds  # descending, as the official loop runs
    order = np.argsort(level, kind="stable")
    below = np.searchsorted(level[order], cuts, side="left")  # predictions under each threshold
    result = {}
    for column, setting in enumerate(SETTINGS):
        positive = positives[:, column]
        ignored_hit = hit & ~positive[face]
        recalled = np.zeros(len(face), bool)
        candidates = np.flatnonzero(hit & positive[face])
        recalled[candidates[np.unique(face[candidates], return_index=True)[1]]] = True  # first per face
        proposals = _count_from(~ignored_hit, order, below)
        found_faces = _count_from(recalled, order, below)
        precision = np.divide(found_faces, proposals, out=np.zeros(thresholds), where=proposals > 0)
        recall_ = found_faces / positive.sum() if positive.any() else np.zeros(thresholds)
        result[setting] = _all_point_ap(recall_, precision)
    return result


def _count_from(flags: np.ndarray, order: np.ndarray, below: np.ndarray) -> np.ndarray:
    """For each threshold, how many flagged predictions are at or above it (`below`: how many are under)."""
    cumulative = np.concatenate([[0], np.cumsum(flags[order])])
    return (cumulative[-1] - cumulative[below]).astype(np.float64)


def _all_point_ap(recall_: np.ndarray, precision: np.ndarray) -> float:
    """VOC's all-point AP: the area under the precision envelope, recall from 0 to the last point."""
    recall_ = np.concatenate([[0.0], recall_, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall_[1:] != recall_[:-1])
    return float(np.sum((recall_[steps + 1] - recall_[steps]) * envelope[steps + 1]))


OMZ_HEIGHT_RANGE = (64.0, 1024.0)
OMZ_CLIP = 1024.0


def omz_difficult(boxes: np.ndarray, height_range: tuple[float, float] = OMZ_HEIGHT_RANGE) -> np.ndarray:
    """Faces OMZ's WIDER configs mark difficult: height outside `[low, high)` px, or an empty box."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return (height < height_range[0]) | (height >= height_range[1]) | (width <= 0) | (height <= 0)


def omz_faces(boxes: np.ndarray, clip: float | None = OMZ_CLIP) -> np.ndarray:
    """Ground-truth boxes as OMZ's WIDER configs prepare them: rounded, then clipped to `[0, clip]` on both
    axes (`cast_to_int`, `clip_boxes size: 1024`), before `omz_difficult` looks at their height."""
    boxes = np.rint(np.asarray(boxes, np.float64).reshape(-1, 4))
    return boxes if clip is None else np.clip(boxes, 0, clip)


def omz_ap(
    predictions: Mapping[str, Predictions],
    ground_truth: Mapping[str, np.ndarray | GroundTruth],
    iou: float = 0.5,
    height_range: tuple[float, float] = OMZ_HEIGHT_RANGE,
    clip: float | None = OMZ_CLIP,
) -> float:
    """Open Model Zoo's accuracy-checker AP on WIDER FACE (the face-detection model cards' single figure).

    The pipeline of face-detection-0204's `accuracy-check.yml`: predictions and faces rounded to whole
    pixels (`cast_to_int`), faces clipped to `[0, clip]` (`clip_boxes`, annotation only), faces outside
    `height_range` or empty marked difficult (`filter`), then the `map` metric with `ignore_difficult`,
    `include_boundaries: False` and `allow_multiple_matches_per_ignored`. That metric takes the predictions
    of the whole set in descending score order; each looks at its best normal face (IoU, continuous areas)
    and, when that is under `iou`, at its best difficult face instead, measured by intersection over the
    prediction's own area. A normal face reached at >= `iou` makes a true positive the first time and a
    false positive after; a difficult one makes the prediction count neither way; anything else is a false
    positive (so is every prediction on an image without faces). AP: VOC all-point.
    """

    def prepare(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        faces = omz_faces(boxes, clip)
        return faces, omz_difficult(faces, height_range)

    rounded = {
        name: (np.rint(np.asarray(boxes, np.float64)), scores)
        for name, (boxes, scores) in predictions.items()
    }
    return _greedy_ap(rounded, ground_truth, iou, prepare)


def voc_ap(
    predictions: Mapping[str, Predictions],
    ground_truth: Mapping[str, np.ndarray | GroundTruth],
    iou: float = 0.5,
) -> float:
    """Plain Pascal VOC AP over all faces: `omz_ap`'s matching with no difficult faces but empty boxes
    (WIDER's `0 0 0 0` placeholder of an image without faces is no face)."""

    def prepare(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return boxes, (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])

    return _greedy_ap(predictions, ground_truth, iou, prepare)


def _greedy_ap(
    predictions: Mapping[str, Predictions],
    ground_truth: Mapping[str, np.ndarray | GroundTruth],
    iou: float,
    prepare: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> float:
    """AP of OMZ's `bbox_match`: each prediction's target face is fixed by its overlaps alone (no fallback to
    a second-best free face), so "true positive" is "first prediction, in score order, on its target"."""
    positives = 0
    scores, faces, outcomes = [], [], []  # outcome: 0 false positive, 1 target face, 2 neither way
    offset = 0
    for name, entry in ground_truth.items():
        boxes = entry.boxes if isinstance(entry, GroundTruth) else entry
        truth, difficult = prepare(np.asarray(boxes, np.float64).reshape(-1, 4))
        positives += int((~difficult).sum())
        found = predictions.get(name)
        if found is not None and len(found[1]):
            boxes = np.asarray(found[0], np.float64).reshape(-1, 4)
            target, outcome = _omz_targets(boxes, truth, difficult, iou)
            scores.append(np.asarray(found[1]))
            faces.append(offset + target)
            outcomes.append(outcome)
        offset += len(truth)
    if not scores:
        return 0.0
    order = np.argsort(-np.concatenate(scores))  # OMZ's own (unstable) sort, on the same concatenation
    face, outcome = np.concatenate(faces)[order], np.concatenate(outcomes)[order]
    candidates = np.flatnonzero(outcome == 1)
    true = np.zeros(len(order), bool)
    true[candidates[np.unique(face[candidates], return_index=True)[1]]] = True
    false = (outcome == 0) | ((outcome == 1) & ~true)
    tp, fp = np.cumsum(true), np.cumsum(false)
    eps = np.finfo(np.float64).eps
    return _all_point_ap(tp / max(positives, eps), tp / np.maximum(tp + fp, eps))


def _omz_targets(
    boxes: np.ndarray, truth: np.ndarray, difficult: np.ndarray, iou: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction of one image: its target face and outcome (0 false positive, 1 that face, 2 ignored)."""
    if not len(truth):
        return np.zeros(len(boxes), np.int64), np.zeros(len(boxes), np.int8)
    normal, hard = np.flatnonzero(~difficult), np.flatnonzero(difficult)
    nothing = np.full(len(boxes), -np.inf)
    overlaps = pairwise_iou(boxes, truth[normal], plus_one=False)
    covered = _intersection_over_own_area(boxes, truth[hard])
    best_normal = overlaps.max(axis=1) if len(normal) else nothing
    best = np.where(
        (best_normal < iou) & bool(len(hard)), covered.max(axis=1) if len(hard) else nothing, best_normal
    )
    # OMZ takes every face at the best overlap: any difficult one among them makes the prediction ignored
    to_hard = (covered == best[:, None]).any(axis=1)
    outcome = np.where(best < iou, 0, np.where(to_hard, 2, 1)).astype(np.int8)
    target = (
        normal[np.argmax(overlaps == best[:, None], axis=1)] if len(normal) else np.zeros(len(boxes), int)
    )
    return target, outcome


def _intersection_over_own_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`[len(a), len(b)]`: area of `a_i & b_j` over the area of `a_i` (0 where `a_i` is empty), continuous.

    OMZ's IOA. Not an IoU, and not derivable from one exactly: `iou * (a + b) / (1 + iou)` lands a hair
    under 0.5 where the true ratio is 0.5, which whole-pixel boxes often hit (it moves the reference
    predictions' full-val AP from 0.90726 to 0.90725).
    """
    inter, area, _ = pairwise_intersection(a, b, plus_one=False)
    return np.divide(inter, area[:, None], out=np.zeros_like(inter), where=area[:, None] != 0)


# --- the `facesweep eval` report -------------------------------------------------------------------------

AP_SCORE_THRESHOLD = 0.02  # the detections published APs keep (jobs/evaluate-wider.yaml runs with it)
FULL_CURVE_THRESHOLD = 0.05  # an output kept above it lacks the low end of the precision-recall curve


def check_pairing(windows: Iterable[Sequence[str]], ground_truth: str | os.PathLike[str]) -> None:
    """Before a job: a ValueError unless some image of the listing (`windows` of uris, read until one
    pairs) pairs with an image of `ground_truth` as `evaluate` will pair them (`pair_paths`)."""
    truth = read_ground_truth(ground_truth)
    example = None
    for uris in windows:
        if any(parse_piece(uri) or videos.parse_piece(uri) for uri in uris):
            return  # a container's images and a video's frames are known only once it is read
        if pair_paths(uris, truth).pairs:
            return
        example = example or (uris[0] if uris else None)
    raise EvaluationError(
        f"--ground-truth {ground_truth}: none of its {len(truth)} images pairs with an image of INPUT "
        f"(e.g. INPUT {example}, ground truth {next(iter(truth), '-')}); {PAIRING_RULE}"
    )


def evaluate(predictions: str, ground_truth: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything `facesweep eval` reports, as a JSON-ready dict.

    Images pair by the longest common ending of their paths (`pair_paths`); the APs cover the paired
    images only, and the report says how many ground-truth images had no predictions and which were left
    out as ambiguous. With easy/medium/hard columns in the ground truth: the WIDER APs and the OMZ AP;
    without: the plain VOC AP and the OMZ AP. `score_threshold` is the one a facesweep output was
    written with (None for WIDER txt predictions). Raises EvaluationError for a missing input and when
    nothing pairs.
    """
    started = time.perf_counter()
    if not Path(ground_truth).is_file():
        raise EvaluationError(f"{ground_truth}: no such file")
    truth = read_ground_truth_with_settings(ground_truth)
    found = load_predictions(predictions)
    pairing = pair_paths(found, truth)
    matched = {relpath: found[uri] for relpath, uri in pairing.pairs.items()}
    if not matched:
        why = next(iter(pairing.ambiguous.values()), None)
        tied = f"; {len(pairing.ambiguous)} ambiguous, e.g. {why}" if why else ""
        raise EvaluationError(
            f"no image of {predictions} ({len(found)} images) pairs with one of {ground_truth} "
            f"({len(truth)} images): e.g. prediction {next(iter(found), '-')}, ground truth "
            f"{next(iter(truth), '-')}; {PAIRING_RULE}{tied}"
        )
    scored = {name: truth[name] for name in matched}
    report: dict[str, Any] = {
        "predictions": predictions,
        "ground_truth": str(ground_truth),
        "score_threshold": _score_threshold(predictions),
        "images": {
            "matched": len(matched),
            "missing": len(truth) - len(matched) - len(pairing.ambiguous),
            "not_in_ground_truth": len(found) - len(matched),
        },
        "ambiguous": pairing.ambiguous,
        "faces": sum(len(entry.boxes) for entry in scored.values()),
        "detections": sum(len(scores) for _, scores in matched.values()),
    }
    if all(entry.positives is not None for entry in scored.values()):
        positives = np.concatenate([entry.positives for entry in scored.values()]).sum(axis=0)
        report["wider_ap"] = wider_ap(matched, scored)
        report["wider_positives"] = dict(zip(SETTINGS, positives.tolist(), strict=True))
    else:
        report["voc_ap"] = voc_ap(matched, scored)
    report["omz_ap"] = omz_ap(matched, scored)
    report["omz_positives"] = sum(int((~omz_difficult(omz_faces(e.boxes))).sum()) for e in scored.values())
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _score_threshold(predictions: str) -> float | None:
    """The score threshold of the job that wrote the facesweep output `predictions`, from its job record."""
    record = read_record(predictions)
    detector = ((record.config if record else None) or {}).get("detector") or {}
    return detector.get("score_threshold")


def format_report(report: Mapping[str, Any]) -> str:
    """The few lines `facesweep eval` prints."""
    images = report["images"]
    lines = [
        f"images: {images['matched']} matched, {images['missing']} in the ground truth without predictions, "
        f"{images['not_in_ground_truth']} predicted but not in the ground truth",
        f"faces: {report['faces']}   detections: {report['detections']}",
    ]
    if "wider_ap" in report:
        aps = "   ".join(f"{setting} {ap:.4f}" for setting, ap in report["wider_ap"].items())
        lines.append(f"WIDER AP (official protocol): {aps}")
    if "voc_ap" in report:
        lines.append(f"VOC AP (IoU 0.5, all faces): {report['voc_ap']:.4f}")
    low, high = OMZ_HEIGHT_RANGE
    counted = f"{report['omz_positives']} faces {low:.0f} to {high:.0f} px high"
    lines.append(f"OMZ AP (accuracy checker, {counted}): {report['omz_ap']:.4f}")
    if report["ambiguous"]:
        example = next(iter(report["ambiguous"].values()))
        lines.append(f"{len(report['ambiguous'])} ground-truth images left out as ambiguous, e.g. {example}")
    if images["missing"] or report["ambiguous"]:
        lines.append(f"(the APs cover the {images['matched']} matched images only)")
    threshold = report["score_threshold"]
    if threshold is not None and threshold > FULL_CURVE_THRESHOLD:
        lines.append(
            f"note: {report['predictions']} kept faces scoring {threshold} or more only; AP counts the "
            f"low-scoring ones too: run with --score-threshold {AP_SCORE_THRESHOLD} (into a new OUTPUT, or "
            "with --overwrite) for figures comparable with published APs"
        )
    lines.append(f"time: {report['seconds']:.1f} s")
    return "\n".join(lines)
