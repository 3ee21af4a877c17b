"""Pairing images by path and faces by overlap: the one greedy one-to-one matcher that recall, the
report's colours and nothing else re-implements."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple, TypeVar

import numpy as np

from facesweep.workers.model.nms import pairwise_iou

T = TypeVar("T")

PAIRING_RULE = "images pair by the longest ending their paths share, whole names, at least the file name"


class Pairing(NamedTuple):
    """`pairs`: ground-truth relpath -> the uri it pairs with; `ambiguous`: ground-truth relpath left
    unpaired -> a sentence naming the paths that pair with it (or with its match) equally well."""

    pairs: dict[str, str]
    ambiguous: dict[str, str]


def pair_paths(uris: Iterable[str], relpaths: Iterable[str]) -> Pairing:
    """Pairs images by the longest common suffix of their path segments, the file name at least.

    Each path's key is its longest suffix that some path of the other side ends with too
    (`/data/0--Parade/x.jpg` and `images/0--Parade/x.jpg`: `0--Parade/x.jpg`; a container's member path
    counts, `t.parquet#0--Parade/x.jpg`). A key held by one uri and one relpath pairs them; one held by
    several on either side is ambiguous: its relpaths stay unpaired, and `ambiguous` says why. Dicts of
    suffixes, linear in the number of paths.
    """
    uris, relpaths = list(uris), list(relpaths)
    uri_parts, rel_parts = [_segments(u) for u in uris], [_segments(r) for r in relpaths]
    uri_keys = _keys(uri_parts, _suffixes(rel_parts))
    rel_keys = _keys(rel_parts, _suffixes(uri_parts))
    by_key: dict[tuple[str, ...], tuple[list[str], list[str]]] = {}
    for uri, key in zip(uris, uri_keys, strict=True):
        if key:
            by_key.setdefault(key, ([], []))[0].append(uri)
    for relpath, key in zip(relpaths, rel_keys, strict=True):
        if key and key in by_key:
            by_key[key][1].append(relpath)
    pairs, ambiguous = {}, {}
    for found, truth in by_key.values():
        if len(found) == len(truth) == 1:
            pairs[truth[0]] = found[0]
        elif truth:
            one, others = (truth[0], found) if len(found) > 1 else (found[0], truth)
            more = f" and {len(others) - 2} more" if len(others) > 2 else ""
            why = f"{one} pairs equally well with {others[0]} and {others[1]}{more}"
            ambiguous |= dict.fromkeys(truth, why)
    return Pairing({r: pairs[r] for r in relpaths if r in pairs}, ambiguous)


def _segments(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.replace("#", "/").split("/") if part)


def _suffixes(paths: list[tuple[str, ...]]) -> set[tuple[str, ...]]:
    return {parts[start:] for parts in paths for start in range(len(parts))}


def _keys(paths: list[tuple[str, ...]], other: set[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Each path's longest suffix in `other` (`()` when not even its file name is there)."""
    return [next((parts[i:] for i in range(len(parts)) if parts[i:] in other), ()) for parts in paths]


def match_by_suffix(
    predictions: Mapping[str, T], ground_truth: Iterable[str], both_ways: bool = False
) -> dict[str, T]:
    """`relpath -> predictions[uri]` for each ground-truth image `pair_paths` pairs with a prediction.

    With `both_ways`, every pair `pair_paths` makes (what `facesweep eval` scores); without, only those
    whose whole relpath ends the uri (`images/a/b.jpg` and `/data/images/a/b.jpg`). Unpaired and
    ambiguous images are absent from the result.
    """
    pairs = pair_paths(predictions, ground_truth).pairs
    whole = {
        r: u for r, u in pairs.items() if both_ways or _segments(u)[-len(_segments(r)) :] == _segments(r)
    }
    return {relpath: predictions[uri] for relpath, uri in whole.items()}


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
