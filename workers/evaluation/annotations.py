"""The two sides of an evaluation, read into arrays: ground truth (WIDER FACE's one-line-per-face
annotations, or its own `wider_face_val_bbx_gt.txt` layout) and predictions (a facesweep output, read
by `workers/output/reader.py`, or a folder of official WIDER txt predictions).

Boxes are `[N, 4]` arrays of `x1, y1, x2, y2` in original-image pixels, with `x2 = x + w` (no "+1" pixel
convention): float32, except `read_wider_txt`'s, which stay float64 as the official script reads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facesweep.workers.errors import UserError
from facesweep.workers.output.reader import faces_per_image, read_rows
from facesweep.workers.storage import is_remote

Predictions = tuple[np.ndarray, np.ndarray]  # boxes [N, 4], scores [N]: float32 (float64 from WIDER txt)

SETTINGS = ("easy", "medium", "hard")
# the flags in `relpath x y w h blur expression illumination invalid occlusion pose easy medium hard`
SETTING_COLUMNS = (11, 12, 13)
LINE_LAYOUT = "`image_relpath x y w h [blur expression illumination invalid occlusion pose easy medium hard]`"


class EvaluationError(UserError, ValueError):
    """Ground truth or predictions that cannot be read or paired; the message names the file."""


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
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise EvaluationError(f"{path}: not a text file; expected {LINE_LAYOUT} per face") from None
    numbered = [
        (number, line)
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    order = None
    if _is_official_layout(numbered):
        numbered, order = _one_line_per_face(numbered, path)
    if not numbered:
        return {name: GroundTruth(np.zeros((0, 4), np.float32), None) for name in order or ()}
    lines = [line for _, line in numbered]
    settings = with_settings and len(lines[0].split()) > max(SETTING_COLUMNS)
    columns = [1, 2, 3, 4, *(SETTING_COLUMNS if settings else ())]
    try:
        numbers = np.loadtxt(lines, np.float32, usecols=columns, comments=None)
    except ValueError:
        raise _bad_line(path, text, numbered, columns) from None
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


def _bad_line(
    path: str | os.PathLike[str], text: str, numbered: list[tuple[int, str]], columns: list[int]
) -> EvaluationError:
    """The error naming the first line whose `columns` `np.loadtxt` cannot read, as the file has it."""
    for number, line in numbered:
        try:
            np.loadtxt([line], np.float32, usecols=columns, comments=None)
        except ValueError:
            shown = text.splitlines()[number - 1].strip()
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            why = "too few fields" if len(line.split()) <= max(columns) else "a field that is not a number"
            return EvaluationError(
                f"{path}, line {number}: not a face ({why}: {shown!r}); expected {LINE_LAYOUT} per "
                "face, or the layout of WIDER FACE's wider_face_val_bbx_gt.txt"
            )
    return EvaluationError(f"{path}: expected {LINE_LAYOUT} per face")


def _is_official_layout(numbered: list[tuple[int, str]]) -> bool:
    """WIDER FACE's own `wider_face_val_bbx_gt.txt`: an image's relpath alone on a line, then its number
    of faces, then one `x y w h blur expression illumination invalid occlusion pose` line per face."""
    return len(numbered) > 1 and len(numbered[0][1].split()) == 1 and numbered[1][1].strip().isdigit()


def _one_line_per_face(
    numbered: list[tuple[int, str]], path: str | os.PathLike[str]
) -> tuple[list[tuple[int, str]], list[str]]:
    """The official layout as numbered `relpath x y w h ...` lines (each numbered as its face's line), and
    every image's relpath in order (an image without faces has one line of zeros in the file, and no box)."""
    lines = [line for _, line in numbered]
    faces, names, i = [], [], 0
    while i < len(lines):
        name, count = lines[i].strip(), lines[i + 1].strip() if i + 1 < len(lines) else ""
        if len(name.split()) != 1 or not count.isdigit():
            raise EvaluationError(
                f"{path}, line {numbered[i][0]}: expected an image's relpath, then its number of faces, at "
                f"{name!r} (the layout of WIDER FACE's wider_face_val_bbx_gt.txt)"
            )
        boxes = numbered[i + 2 : i + 2 + int(count)]
        if len(boxes) < int(count):
            raise EvaluationError(f"{path}: {name} has {count} faces but the file ends after {len(boxes)}")
        names.append(name)
        faces += [(number, f"{name} {box}") for number, box in boxes]
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
        raise EvaluationError(f"{folder}: no such directory")
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
            raise EvaluationError(f"{file}: second line {count_line.strip()!r} is not a face count") from None
        try:
            values = np.array(body.split(), np.float64)
        except ValueError as error:
            raise EvaluationError(f"{file}: {error}") from None
        if values.size != 5 * count:
            raise EvaluationError(
                f"{file}: expected {count} lines of `x y w h score`, got {values.size} numbers"
            )
        values = values.reshape(count, 5)
        boxes = np.concatenate([values[:, :2], values[:, :2] + values[:, 2:4]], axis=1)
        predictions[f"{file.parent.name}/{name}"] = (boxes, values[:, 4].copy())
    if not predictions:
        raise EvaluationError(f"{folder}: no WIDER prediction files (<event>/<name>.txt)")
    return predictions


def read_predictions(output: str) -> dict[str, Predictions]:
    """`uri -> (boxes [N, 4], scores [N])` for every image a facesweep job wrote to `output`.

    `output` is a local directory or `s3://bucket/prefix` (an empty one gives `{}`), read with the job's
    own storage client (`output.read_rows`).
    Files whose names start with `_` or `.` (the job file, partial writes) are skipped. Rows with status
    `error` (null faces) are left out, so those images show up as unpaired in `pair_paths` rather
    than as images without faces. Raises ValueError if a uri appears twice.
    """
    table = read_rows(output, ["uri", "faces", "key", "container"])
    if table is None:
        return {}
    table = table.filter(pc.is_valid(table["faces"]))
    uris = _names(table)
    if len(set(uris)) != len(uris):
        raise EvaluationError(
            f"{output}: some images appear more than once (an output written by several jobs?)"
        )
    return {uri: (faces.boxes, faces.scores) for uri, faces in zip(uris, faces_per_image(table), strict=True)}


def _names(table: pa.Table) -> list[str]:
    """The rows' uris; a Parquet container's row named by its key instead of its row number
    (`table.parquet#0--Parade/x.jpg`, a Hugging Face image's path), so it pairs with ground truth."""
    row = r"#row=\d+$"
    by_row = pc.and_(pc.is_valid(table["key"]), pc.match_substring_regex(table["uri"], row))
    container = pc.replace_substring_regex(table["uri"], row, "")
    keyed = pc.binary_join_element_wise(container, table["key"], "#")
    return pc.if_else(by_row, keyed, table["uri"]).to_pylist()


def load_predictions(source: str) -> dict[str, Predictions]:
    """A facesweep output (local directory or s3://) or a folder of official WIDER txt predictions."""
    if is_remote(source):
        return read_predictions(source)
    path = Path(source)
    if not path.exists():
        raise EvaluationError(f"{source}: no such file or directory")
    if not path.is_dir():
        raise EvaluationError(f"{source}: not a directory (a facesweep output, or WIDER txt predictions)")
    if next(path.rglob("*.parquet"), None) is not None:
        return read_predictions(source)
    if next(path.glob("*/*.txt"), None) is not None:
        return read_wider_txt(path)
    raise EvaluationError(
        f"{source}: neither a facesweep output (*.parquet) nor WIDER txt predictions (*/*.txt)"
    )
