"""Accuracy of a facesweep output against ground-truth face boxes (WIDER FACE's one-line-per-face format).

The building blocks: read the ground truth (with WIDER's easy/medium/hard flags when the file has them), read
a job's Parquet output or a folder of official WIDER txt predictions, pair images by path suffix, and count
the faces a set of predictions finds (`recall`) or score them with an average precision:

- `wider_ap`: the official WIDER FACE evaluation (easy / medium / hard), reproduced exactly;
- `omz_ap`: Open Model Zoo's accuracy checker on WIDER (faces outside [64, 1024) px high ignored);
- `voc_ap`: plain Pascal VOC AP at IoU 0.5 over all faces.

Boxes are `[N, 4]` arrays of `x1, y1, x2, y2` in original-image pixels, with `x2 = x + w` (no "+1" pixel
convention): float32, except `read_wider_txt`'s, which stay float64 as the official script reads them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workers.containers import parse_piece
from workers.nms import pairwise_intersection, pairwise_iou
from workers.output import read_rows
from workers.storage import is_s3_uri

Predictions = tuple[np.ndarray, np.ndarray]  # boxes [N, 4], scores [N]: float32 (float64 from WIDER txt)

SETTINGS = ("easy", "medium", "hard")
# the flags in `relpath x y w h blur expression illumination invalid occlusion pose easy medium hard`
SETTING_COLUMNS = (11, 12, 13)


class GroundTruth(NamedTuple):
    """One image's faces: `boxes [N, 4]` float32 and, when the file has the columns, `positives [N, 3]` bool:
    whether each face counts as a positive in the easy, medium and hard settings (else None)."""

    boxes: np.ndarray
    positives: np.ndarray | None


def read_ground_truth(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """`image_relpath -> boxes [N, 4]` from an annotations file (`relpath x y w h ...` per face), or
    one in the layout of WIDER FACE's own `wider_face_val_bbx_gt.txt` (relpath, count, then the faces).

    `#` starts a comment; columns after `h` are ignored; images keep the order they first appear in.
    """
    return {name: truth.boxes for name, truth in _read_annotations(path, with_settings=False).items()}


def read_ground_truth_with_settings(path: str | os.PathLike[str]) -> dict[str, GroundTruth]:
    """`image_relpath -> GroundTruth` from an annotations file, with the easy/medium/hard flags when present.

    The flags are columns 12-14 (`relpath x y w h blur expression illumination invalid occlusion pose easy
    medium hard`, 1 = a positive in that setting, 0 = ignored there); a file whose first face has fewer
    columns gives `positives=None` for every image. Otherwise as `read_ground_truth`.
    """
    return _read_annotations(path, with_settings=True)


def _read_annotations(path: str | os.PathLike[str], with_settings: bool) -> dict[str, GroundTruth]:
    text = Path(path).read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    order = None
    if _is_official_layout(lines):
        lines, order = _one_line_per_face(lines, path)
    if not lines:
        return {name: GroundTruth(np.zeros((0, 4), np.float32), None) for name in order or ()}
    settings = with_settings and len(lines[0].split()) > max(SETTING_COLUMNS)
    try:
        numbers = np.loadtxt(lines, np.float32, usecols=[1, 2, 3, 4, *(SETTING_COLUMNS if settings else ())])
    except ValueError as error:
        raise ValueError(f"{path}: not `relpath x y w h ...` on every line ({error})") from None
    numbers = numbers.reshape(len(lines), -1)
    xywh, flags = numbers[:, :4], (numbers[:, 4:] > 0 if settings else None)
    names_column = np.array([line.split(None, 1)[0] for line in lines])
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    names, first, inverse = np.unique(names_column, return_index=True, return_inverse=True)
    order_of_lines = np.argsort(inverse, kind="stable")
    splits = np.cumsum(np.bincount(inverse))[:-1]
    groups = np.split(boxes[order_of_lines], splits)
    flag_groups = np.split(flags[order_of_lines], splits) if flags is not None else [None] * len(names)
    found = {str(names[i]): GroundTruth(groups[i], flag_groups[i]) for i in np.argsort(first)}
    if order is None:
        return found
    none = GroundTruth(np.zeros((0, 4), np.float32), None)
    return {name: found.get(name, none) for name in order}


def _is_official_layout(lines: list[str]) -> bool:
    """WIDER FACE's own `wider_face_val_bbx_gt.txt`: an image's relpath alone on a line, then its number
    of faces, then one `x y w h blur expression illumination invalid occlusion pose` line per face."""
    return len(lines) > 1 and len(lines[0].split()) == 1 and lines[1].strip().isdigit()


def _one_line_per_face(lines: list[str], path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """The official layout as `relpath x y w h ...` lines, and every image's relpath in order (an image
    without faces has one line of zeros in the file, and no box)."""
    faces, names, i = [], [], 0
    while i < len(lines):
        name, count = lines[i].strip(), lines[i + 1].strip() if i + 1 < len(lines) else ""
        if len(name.split()) != 1 or not count.isdigit():
            raise ValueError(
                f"{path}: expected an image's relpath, then its number of faces, at {name!r} "
                "(the layout of WIDER FACE's wider_face_val_bbx_gt.txt)"
            )
        boxes = lines[i + 2 : i + 2 + int(count)]
        if len(boxes) < int(count):
            raise ValueError(f"{path}: {name} has {count} faces but the file ends after {len(boxes)}")
        names.append(name)
        faces += [f"{name} {box}" for box in boxes]
        i += 2 + int(count)
        if int(count) == 0 and i < len(lines) and len(lines[i].split()) > 1:
            i += 1  # the zeros line
    return faces, names


def read_wider_txt(folder: str | os.PathLike[str]) -> dict[str, Predictions]:
    """`<event>/<name>.jpg -> (boxes [N, 4], scores [N])` from official WIDER FACE prediction files.

    The layout the official evaluation reads: `folder/<event>/<name>.txt`, each holding the image name, the
    number of faces, then one `x y w h score` line per face. The relpath is the event folder and the image
    name from the file's first line (`.jpg` added when it has no extension). Boxes and scores stay float64
    as the official script parses them, so that `wider_ap` gives its figures to the last digit. Raises
    FileNotFoundError for a missing folder and ValueError for a malformed file or an empty folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: no such directory")
    predictions: dict[str, Predictions] = {}
    for file in sorted(root.glob("*/*.txt")):
        head, _, rest = file.read_text().partition("\n")
        count_line, _, body = rest.partition("\n")
        name = head.strip().rsplit("/", 1)[-1] or f"{file.stem}.jpg"
        if not Path(name).suffix:
            name += ".jpg"
        try:
            count = int(count_line)
        except ValueError:
            raise ValueError(f"{file}: second line {count_line.strip()!r} is not a face count") from None
        try:
            values = np.array(body.split(), np.float64)
        except ValueError as error:
            raise ValueError(f"{file}: {error}") from None
        if values.size != 5 * count:
            raise ValueError(f"{file}: expected {count} lines of `x y w h score`, got {values.size} numbers")
        values = values.reshape(count, 5)
        boxes = np.concatenate([values[:, :2], values[:, :2] + values[:, 2:4]], axis=1)
        predictions[f"{file.parent.name}/{name}"] = (boxes, values[:, 4].copy())
    if not predictions:
        raise ValueError(f"{folder}: no WIDER prediction files (<event>/<name>.txt)")
    return predictions


def read_predictions(output: str) -> dict[str, Predictions]:
    """`uri -> (boxes [N, 4], scores [N])` for every image a facesweep job wrote to `output`.

    `output` is a local directory or `s3://bucket/prefix` (an empty one gives `{}`), read with the job's
    own storage client (`output.read_rows`).
    Files whose names start with `_` or `.` (the job file, partial writes) are skipped. Rows with status
    `error` (null faces) are left out, so those images show up as unmatched in `match_by_suffix` rather
    than as images without faces. Raises ValueError if a uri appears twice.
    """
    table = read_rows(output, ["uri", "faces", "key", "container"])
    if table is None:
        return {}
    table = table.filter(pc.is_valid(table["faces"]))
    if not table.num_rows:
        return {}
    uris = _names(table)
    if len(set(uris)) != len(uris):
        raise ValueError(f"{output}: some images appear more than once (an output written by several jobs?)")
    faces = table["faces"].combine_chunks()
    values = faces.flatten()
    boxes = np.stack([_floats(values.field(name)) for name in ("x1", "y1", "x2", "y2")], axis=1)
    scores = _floats(values.field("score"))
    splits = np.cumsum(pc.list_value_length(faces).to_numpy(zero_copy_only=False))[:-1]
    return dict(zip(uris, zip(np.split(boxes, splits), np.split(scores, splits), strict=True), strict=True))


def _names(table: pa.Table) -> list[str]:
    """The rows' uris; a Parquet container's row named by its key instead of its row number
    (`table.parquet#0--Parade/x.jpg`, a Hugging Face image's path), so it pairs with ground truth."""
    row = r"#row=\d+$"
    by_row = pc.and_(pc.is_valid(table["key"]), pc.match_substring_regex(table["uri"], row))
    container = pc.replace_substring_regex(table["uri"], row, "")
    keyed = pc.binary_join_element_wise(container, table["key"], "#")
    return pc.if_else(by_row, keyed, table["uri"]).to_pylist()


def _floats(array: pa.Array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)


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
            raise ValueError(f"{relpath} matches several predictions: {', '.join(candidates[:3])}")
        if not candidates and keys:
            parts = relpath.strip("/").split("/")
            shorter = ("/".join(parts[start:]) for start in range(1, len(parts)))
            uri = next((keys[suffix] for suffix in shorter if suffix in keys), None)
            if uri is not None:
                if uri in served:
                    raise ValueError(f"{uri} matches several ground-truth images: {served[uri]}, {relpath}")
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
    overlaps = pairwise_iou(pred_boxes.astype(np.float64), counted.astype(np.float64), plus_one=False)
    overlaps[(overlaps < iou) | (overlaps <= 0)] = -1.0  # -1: not a candidate
    taken = np.zeros(len(counted), bool)
    for row in overlaps[(overlaps >= 0).any(axis=1)]:  # only predictions with a candidate, in order
        free = np.where(taken, -1.0, row)
        best = int(np.argmax(free))
        if free[best] >= 0:
            taken[best] = True
    return int(taken.sum()), len(counted)


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

    `predictions` are keyed like `ground_truth` (see `match_by_suffix`); images absent from it have none.
    Raises ValueError when the ground truth has no easy/medium/hard flags.
    """
    images = list(ground_truth.items())
    if any(truth.positives is None for _, truth in images):
        raise ValueError("WIDER AP needs the easy/medium/hard columns in the ground truth")
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


def load_predictions(source: str) -> dict[str, Predictions]:
    """A facesweep output (local directory or s3://) or a folder of official WIDER txt predictions."""
    if is_s3_uri(source):
        return read_predictions(source)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such file or directory")
    if not path.is_dir():
        raise ValueError(f"{source}: not a directory (a facesweep output, or WIDER txt predictions)")
    if next(path.rglob("*.parquet"), None) is not None:
        return read_predictions(source)
    if next(path.glob("*/*.txt"), None) is not None:
        return read_wider_txt(path)
    raise ValueError(f"{source}: neither a facesweep output (*.parquet) nor WIDER txt predictions (*/*.txt)")


def check_pairing(windows: Iterable[Sequence[str]], ground_truth: str | os.PathLike[str]) -> None:
    """Before a job: a ValueError unless some image of the listing (`windows` of uris, read until one
    pairs) pairs with an image of `ground_truth` as `evaluate` will pair them."""
    truth = read_ground_truth(ground_truth)
    example = None
    for uris in windows:
        if any(parse_piece(uri) for uri in uris):
            return  # a container's images are known only once it is read
        if match_by_suffix(dict.fromkeys(uris), truth, both_ways=True):
            return
        example = example or (uris[0] if uris else None)
    raise ValueError(
        f"--ground-truth {ground_truth}: none of its {len(truth)} images pairs with an image of INPUT "
        f"(e.g. {next(iter(truth), '-')} and {example}); an image pairs when one path ends with the other, "
        "whole folder names"
    )


def evaluate(predictions: str, ground_truth: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything `facesweep eval` reports, as a JSON-ready dict.

    Images pair by path suffix (`match_by_suffix`, both ways); the APs cover the matched images only, and
    the report says how many ground-truth images had no predictions. With easy/medium/hard columns in the
    ground truth: the WIDER APs and the OMZ AP; without: the plain VOC AP and the OMZ AP. Raises
    FileNotFoundError for a missing input and ValueError when nothing matches.
    """
    started = time.perf_counter()
    if not Path(ground_truth).is_file():
        raise FileNotFoundError(f"{ground_truth}: no such file")
    truth = read_ground_truth_with_settings(ground_truth)
    found = load_predictions(predictions)
    matched = match_by_suffix(found, truth, both_ways=True)
    if not matched:
        raise ValueError(
            f"no image of {predictions} ({len(found)} images) is in {ground_truth} ({len(truth)} images); "
            "images pair when the ground truth's path ends the prediction's (or the other way round)"
        )
    scored = {name: truth[name] for name in matched}
    report: dict[str, Any] = {
        "predictions": predictions,
        "ground_truth": str(ground_truth),
        "images": {
            "matched": len(matched),
            "missing": len(truth) - len(matched),
            "not_in_ground_truth": max(0, len(found) - len(matched)),
        },
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
    if images["missing"]:
        lines.append(f"(the APs cover the {images['matched']} matched images only)")
    lines.append(f"time: {report['seconds']:.1f} s")
    return "\n".join(lines)
