"""`facesweep show`: a job's faces drawn on its images, in one self-contained HTML report.

`write_report` reads the output (local or s3://), draws each face's box, score and five landmarks with
OpenCV on the first `limit` images read without error (fetched from their uri, decoded upright as the job
decoded them, so the boxes line up), and writes into the report folder:

- `thumbs/NNNNNN-NAME.jpg`: 320 px wide thumbnails, `full/NNNNNN-NAME.jpg`: the whole images, both drawn,
  named by their place in the grid and their source's file name; lines, landmark dots and score labels
  sized by each face, so small faces in crowds stay visible under them;
- `full/NNNNNN-NAME.html`: the whole image with every face's score as its hover tooltip;
- `report.html`: totals, faces-per-image and score histograms (inline SVG), the table of error rows with
  their reasons, and the grid of thumbnails (each links to its full image). No script, nothing fetched.

For a job run with --anonymize (its `_job.json` says where the copies went) each tile also shows the
image's anonymized copy beside it, fetched from DEST as the job named it (`anonymized/thumbs/`,
`anonymized/full/`), or a note saying why it cannot be shown.

An image whose version (ETag, a local file's modification time) or size is no longer its row's changed
since it was detected: it is shown without its faces, marked as changed, and counted.

With ground truth (WIDER-style annotations, paired with the images by path suffix as `facesweep eval`
pairs them) the report also has `facesweep eval`'s APs, and the thumbnails show detections that match a
face at IoU >= 0.5 (greedy, best score first) in green, false detections in red and missed faces in yellow.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facesweep.workers.config import AnonymizeSettings, ContainerSettings
from facesweep.workers.errors import ImageError, UserError, line_of
from facesweep.workers.evaluation.annotations import read_ground_truth
from facesweep.workers.evaluation.evaluate import OMZ_HEIGHT_RANGE, evaluate
from facesweep.workers.evaluation.matching import match_by_suffix, match_faces
from facesweep.workers.faces import Faces
from facesweep.workers.inputs import videos
from facesweep.workers.inputs.containers import Member, fetch_members, parse_piece
from facesweep.workers.inputs.images import decode_image
from facesweep.workers.output.reader import faces_per_image, read_output
from facesweep.workers.output.record import read_record
from facesweep.workers.products.anonymize import copy_extension, copy_uri
from facesweep.workers.storage import StorageError, storage_for

THUMB_WIDTH = 320
FRAMES_SHOWN = 4
"""Frames of each video the grid draws."""
COPY_THUMBS, COPY_FULL = "anonymized/thumbs", "anonymized/full"
MATCH_IOU = 0.5
MAX_ERROR_ROWS = 500
# BGR
DETECTED = (80, 200, 40)
MATCHED = (60, 200, 60)
FALSE = (40, 40, 230)
MISSED = (0, 215, 255)
LANDMARK_COLORS = ((255, 80, 0), (0, 220, 255), (255, 0, 255), (0, 255, 0), (0, 80, 255))
LINE_PER = 40  # px of a face's shorter side per px of its line and landmark dots
DOTS_FROM = 24  # landmark dots only on faces whose shorter side is at least this many px (as drawn)


@dataclass(frozen=True)
class Tile:
    """One image of the grid: its drawn files (None when it could not be read now, `note` saying why)."""

    uri: str
    faces: int
    thumb: str | None = None
    full: str | None = None
    page: str | None = None  # the full image with each face's score on hover
    note: str | None = None
    changed: bool = False  # the image changed since it was detected: shown without its faces
    matched: int | None = None  # with ground truth: detections on a face, false ones, faces missed
    false: int | None = None
    missed: int | None = None
    copy_thumb: str | None = None  # with --anonymize: the image's anonymized copy, or why it is not shown
    copy_full: str | None = None
    copy_note: str | None = None


@dataclass(frozen=True)
class Report:
    """What `write_report` wrote: the page, the images it drew with their faces, those changed since they
    were detected (shown without them), those it could not fetch or decode now."""

    path: Path
    drawn: int
    unreadable: int
    first_reason: str | None
    changed: int = 0


class ReportError(UserError, OSError):
    """The report's folder cannot be written."""


def write_report(
    output: str,
    folder: str | os.PathLike[str],
    limit: int = 200,
    min_score: float = 0.0,
    ground_truth: str | os.PathLike[str] | None = None,
) -> Report:
    """Writes `folder/report.html` (and its images) for the facesweep output `output`.

    Totals and histograms cover every row; the grid the first `limit` images (by uri) that the job read,
    with their faces scoring at least `min_score`. An image that cannot be fetched or decoded now gets a
    placeholder saying why; one that changed since it was detected is shown without its faces. Raises a
    UserError (OutputError, StorageError, EvaluationError, ReportError) for a bad `output`, ground truth or
    folder.
    """
    table = read_output(output)
    evaluation, truth = None, {}
    if ground_truth is not None:
        evaluation = evaluate(output, ground_truth)
        boxes = read_ground_truth(ground_truth)
        paired = match_by_suffix({uri: uri for uri in table["uri"].to_pylist()}, boxes, both_ways=True)
        truth = {uri: boxes[relpath] for relpath, uri in paired.items()}
    folder = Path(folder)
    record = read_record(output)
    copies = record.anonymizer if record else None
    try:
        for sub in ("thumbs", "full", *((COPY_THUMBS, COPY_FULL) if copies else ())):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file in the way, no permission
        file = next((path for path in (folder, *folder.parents) if path.is_file()), None)
        problem = f"{file} is a file: give a folder for the report" if file else error.strerror or error
        raise ReportError(f"show --out {folder}: {problem}") from None
    faces = faces_per_image(table)
    drawn = _drawn(table, limit)
    uris, etags, sizes = (table[column].to_pylist() for column in ("uri", "etag", "size"))
    rows = table.take(drawn)
    held = _container_images(rows, record.containers if record else ContainerSettings())
    blurred = _blurred_frames(rows, copies) if copies else {}
    moved = _moved_members(rows)

    def render(position: int, row: int) -> Tile:
        uri = uris[row]
        name = picture_name(position, uri)
        try:
            data, changed = _fetch(uri, held.get(uri), etags[row], sizes[row], uri in moved)
        except (StorageError, ImageError) as error:
            return Tile(uri, 0, note=line_of(error))
        tile = _render(uri, data, changed, faces[row], truth.get(uri), folder, name, min_score)
        if not copies or not tile.thumb:
            return tile
        return _with_copy(tile, held.get(uri), copies, folder, name, blurred.get(uri))

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        tiles = list(pool.map(render, range(len(drawn)), drawn.tolist()))
    path = folder / "report.html"
    path.write_text(_html(output, table, tiles, min_score, evaluation, ground_truth))
    failed = [tile.note for tile in tiles if tile.thumb is None]
    changed = sum(tile.changed for tile in tiles)
    return Report(
        path, len(tiles) - len(failed) - changed, len(failed), failed[0] if failed else None, changed
    )


def _drawn(table: pa.Table, limit: int) -> np.ndarray:
    """The rows the grid draws: the first `limit` read ones by uri, a video by FRAMES_SHOWN of its frames
    spread over its length (its earliest, its latest and evenly between)."""
    read = pc.is_valid(table["faces"]).to_numpy(zero_copy_only=False)
    times = table["frame_time"].to_numpy(zero_copy_only=False).astype(float)
    frames = np.flatnonzero(read & ~np.isnan(times))
    chosen = read & np.isnan(times)
    if len(frames):
        videos_of = pc.replace_substring_regex(table["uri"], r"#t=[\d.]+$", "").to_numpy(zero_copy_only=False)
        order = frames[np.lexsort((times[frames], videos_of[frames]))]
        names = videos_of[order]
        starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
        for start, end in zip(starts, [*starts[1:], len(order)], strict=True):
            spread = np.linspace(start, end - 1, min(FRAMES_SHOWN, end - start)).round().astype(int)
            chosen[order[spread]] = True
    return np.flatnonzero(chosen)[:limit]


def picture_name(position: int, uri: str) -> str:
    """`000012-0_Parade_Parade_0_102.jpg`: the grid position, then the source's file name (characters
    other than letters, digits, `.`, `-` and `_` as `_`); a video's frame: `000013-walk.mp4_t_1.500.jpg`."""
    name = PurePosixPath(uri).name
    stem = re.sub(r"[^\w.-]+", "_", name if "#t=" in name else PurePosixPath(uri).stem)[:100]
    return f"{position:06d}-{stem}.jpg"


def _container_images(rows: pa.Table, settings: ContainerSettings) -> dict[str, Member]:
    """The drawn images that live in containers or are a video's frames, each piece read once, with the
    job's container settings."""
    pieces = {
        uri: piece
        for uri, piece in zip(rows["uri"].to_pylist(), rows["container"].to_pylist(), strict=True)
        if piece is not None
    }
    frames = {uri: piece for uri, piece in pieces.items() if videos.parse_piece(piece)}
    members = {uri: piece for uri, piece in pieces.items() if uri not in frames}
    return (fetch_members(members, settings) if members else {}) | videos.fetch_frames(frames)


def _moved_members(rows: pa.Table) -> set[str]:
    """The uris of `rows` in a container whose version now (one HEAD each) is not the one of their row."""
    versions: dict[str, str | None] = {}
    moved = set()
    columns = (rows[column].to_pylist() for column in ("uri", "container", "etag"))
    for uri, piece, etag in zip(*columns, strict=True):
        if piece is None or etag is None:
            continue
        container = (parse_piece(piece) or videos.parse_piece(piece) or (piece,))[0]
        if container not in versions:
            try:
                versions[container] = storage_for(container).head(container).etag
            except StorageError:  # its members cannot be read either, and say why
                versions[container] = etag
        if versions[container] != etag:
            moved.add(uri)
    return moved


def _fetch(
    uri: str, held: Member | None, etag: str | None, size: int | None, moved: bool
) -> tuple[bytes, bool]:
    """The image's bytes now, and whether it changed since its row was written: its version (ETag, a local
    file's modification time; a container member: `moved`, its container's) or its size is not the row's.
    `held`: the image's bytes when it is in a container (read already)."""
    if held is not None:
        if held.failure is not None:
            raise ImageError(held.failure.message, held.failure.kind)
        return held.data, moved or _differs(size, held.size)
    storage = storage_for(uri)
    version = storage.head(uri).etag
    data = storage.get(uri)
    return data, _differs(etag, version) or _differs(size, len(data))


def _differs(then: object, now: object) -> bool:
    """A row's value (null: not known) is not what the object has now."""
    return then is not None and then != now


def _render(
    uri: str,
    data: bytes,
    changed: bool,
    faces: Faces,
    truth: np.ndarray | None,
    folder: Path,
    name: str,
    min_score: float,
) -> Tile:
    """Draws one image's faces on it and on its thumbnail, writes both and the page of the full image with
    each face's score; a changed image without its faces, a placeholder tile when it cannot be decoded."""
    try:
        image = decode_image(data)
    except ImageError as error:
        return Tile(uri, 0, note=line_of(error))
    shown = faces.take(faces.scores >= min_score)
    if changed:
        _save(image, folder / "full" / name)
        _save(_thumbnail(image)[0], folder / "thumbs" / name)
        return Tile(uri, len(shown), f"thumbs/{name}", f"full/{name}", changed=True)
    colors = np.tile(np.array(DETECTED), (len(shown), 1))
    titles = [f"score {score:.2f}" for score in shown.scores.tolist()]
    missed = np.zeros((0, 4), np.float32)
    counts: dict[str, int] = {}
    if truth is not None:
        truth = truth[(truth[:, 2] > truth[:, 0]) & (truth[:, 3] > truth[:, 1])]  # WIDER's `0 0 0 0`: none
        matched, found = match_faces(shown.boxes, truth, MATCH_IOU)
        colors = np.where(matched[:, None], np.array(MATCHED), np.array(FALSE))
        titles = [
            f"{'on a face' if hit else 'false detection'}, {title}"
            for hit, title in zip(matched.tolist(), titles, strict=True)
        ]
        missed = truth[~found]
        counts = {"matched": int(matched.sum()), "false": int((~matched).sum()), "missed": len(missed)}
    page = name.removesuffix(".jpg") + ".html"
    (folder / "full" / page).write_text(_face_page(uri, name, image.shape, shown.boxes, titles, missed))
    thumb, scale = _thumbnail(image)
    for picture, factor, sub in ((image, 1.0, "full"), (thumb, scale, "thumbs")):
        draw_faces(picture, shown, colors, missed, factor)
        _save(picture, folder / sub / name)
    return Tile(uri, len(shown), f"thumbs/{name}", f"full/{name}", f"full/{page}", **counts)


def _blurred_frames(rows: pa.Table, copies: AnonymizeSettings) -> dict[str, Member]:
    """The drawn video frames' counterparts in their blurred copies (same times), by the frame's uri."""
    wanted: dict[str, tuple[str, str]] = {}
    for uri, piece in zip(rows["uri"].to_pylist(), rows["container"].to_pylist(), strict=True):
        parsed = videos.parse_piece(piece) if piece else None
        if parsed is not None:
            video, copy = parsed[0], copy_uri(parsed[0], copies)
            wanted[uri] = (copy + uri.removeprefix(video), copy + piece.removeprefix(video))
    found = videos.fetch_frames(dict(wanted.values()))
    return {uri: found[frame] for uri, (frame, _) in wanted.items()}


def _with_copy(
    tile: Tile,
    held: Member | None,
    copies: AnonymizeSettings,
    folder: Path,
    name: str,
    blurred: Member | None = None,
) -> Tile:
    """`tile` with the image's anonymized copy beside it (fetched from DEST as the job named it; a video's
    frame: `blurred`, the same frame of the video's copy), or a note saying why it cannot be shown."""
    try:
        if blurred is not None:
            if blurred.failure is not None:
                raise ImageError(blurred.failure.message, blurred.failure.kind)
            copy = decode_image(blurred.data)
        else:
            suffix = copy_extension(held.data) if held is not None and held.data is not None else ""
            where = copy_uri(tile.uri, copies, suffix)
            copy = decode_image(storage_for(where).get(where))
    except (StorageError, ImageError) as error:
        return replace(tile, copy_note=line_of(error))
    _save(copy, folder / COPY_FULL / name)
    _save(_thumbnail(copy)[0], folder / COPY_THUMBS / name)
    return replace(tile, copy_thumb=f"{COPY_THUMBS}/{name}", copy_full=f"{COPY_FULL}/{name}")


def _thumbnail(image: np.ndarray) -> tuple[np.ndarray, float]:
    """`image` THUMB_WIDTH pixels wide, and its scale."""
    scale = THUMB_WIDTH / image.shape[1]
    size = (THUMB_WIDTH, max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR), scale


def _save(picture: np.ndarray, path: Path) -> None:
    if not cv2.imwrite(str(path), picture, [cv2.IMWRITE_JPEG_QUALITY, 85]):
        raise ReportError(f"cannot write {path}: check the folder's free space and permissions")


def draw_faces(
    image: np.ndarray, faces: Faces, colors: np.ndarray, missed: np.ndarray, scale: float = 1.0
) -> None:
    """Draws boxes (in `colors`, BGR per face), scores and landmarks of `faces` and the `missed` boxes on
    `image` in place; coordinates are multiplied by `scale` (the image's size over the original's).

    Each face's lines and landmark dots are 1 px per LINE_PER px of its shorter side (at least 1, at most
    2 or 1 per 500 px of the image's longer side); dots only on faces of DOTS_FROM px or more; the score in a
    font as thick as the lines, above the box (inside at the image's top) when the box is as wide as it."""
    most = max(2, round(max(image.shape[:2]) / 500))
    missing = np.round(missed * scale).astype(int)
    for box, width in zip(missing, line_widths(missing, most).tolist(), strict=True):
        cv2.rectangle(image, box[:2], box[2:], MISSED, width, cv2.LINE_AA)
    boxes = np.round(faces.boxes * scale).astype(int)
    widths = line_widths(boxes, most)
    for box, score, color, width in zip(boxes, faces.scores, colors.tolist(), widths.tolist(), strict=True):
        cv2.rectangle(image, box[:2], box[2:], color, width, cv2.LINE_AA)
        label, font = f"{score:.2f}", 0.4 * width
        (text_width, text_height), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, width)
        if box[2] - box[0] >= text_width:
            above = box[1] - 2 * width - 1
            origin = (int(box[0]), int(above if above >= text_height else box[1] + text_height + 2 * width))
            cv2.putText(image, label, origin, cv2.FONT_HERSHEY_SIMPLEX, font, color, width)
    if faces.landmarks is not None:
        points = np.round(faces.landmarks * scale).astype(int)
        dotted = np.isfinite(faces.landmarks).all(axis=(1, 2)) & (_shorter_sides(boxes) >= DOTS_FROM)
        for face, radius in zip(points[dotted], widths[dotted].tolist(), strict=True):
            for point, color in zip(face, LANDMARK_COLORS, strict=True):
                cv2.circle(image, point, radius, color, -1, cv2.LINE_AA)


def line_widths(boxes: np.ndarray, most: int) -> np.ndarray:
    """The line width of each box [N,4] (x1,y1,x2,y2 in px): 1 per LINE_PER px of its shorter side,
    between 1 and `most`."""
    return np.clip(_shorter_sides(boxes) // LINE_PER, 1, most).astype(int)


def _shorter_sides(boxes: np.ndarray) -> np.ndarray:
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def _face_page(
    uri: str, name: str, shape: tuple[int, ...], boxes: np.ndarray, titles: Sequence[str], missed: np.ndarray
) -> str:
    """`full/NAME.html`: the drawn image `name` (beside it) with each face's title (its score) shown on
    hover over its box, and the missed faces' boxes titled as such."""
    height, width = shape[:2]
    areas = [*zip(boxes.tolist(), titles, strict=True), *((box, "missed face") for box in missed.tolist())]
    rects = "".join(
        f"<rect x='{x1:.1f}' y='{y1:.1f}' width='{x2 - x1:.1f}' height='{y2 - y1:.1f}'>"
        f"<title>{_e(title)}</title></rect>"
        for (x1, y1, x2, y2), title in areas
    )
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(uri.rsplit('/', 1)[-1])}</title><style>{PAGE_CSS}</style></head><body>\n"
        f"<p><a href='../report.html'>report</a> · {_e(uri)} · {len(boxes)} faces: point at one for "
        f"its score</p>\n<svg viewBox='0 0 {width} {height}' width='{width}' height='{height}' role=img>"
        f"<image href='{name}' width='{width}' height='{height}'/>{rects}</svg>\n</body></html>\n"
    )


# --- HTML ------------------------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 24px 0 8px; }
.sub { color: #666; margin-bottom: 16px; word-break: break-all; }
table { border-collapse: collapse; background: #fff; } td, th { border: 1px solid #ddd; padding: 4px 8px; }
th { background: #f0f0f0; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: flex; gap: 24px; flex-wrap: wrap; } svg { background: #fff; border: 1px solid #ddd; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 12px; }
.tile { margin: 0; background: #fff; border: 1px solid #ddd; padding: 6px; }
.tile:has(.pair) { grid-column: span 2; } .pair { display: grid; grid-template-columns: 1fr 1fr; gap: 4px; }
.tile img, .missing { width: 100%; height: 200px; object-fit: contain; background: #222; display: block; }
.missing { color: #eee; display: flex; align-items: center; justify-content: center; text-align: center;
  padding: 8px; box-sizing: border-box; }
figcaption { font-size: 12px; margin-top: 4px; word-break: break-all; }
.key span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: -1px; }
.tile[data-changed] { border-color: #c33; } .stale { color: #c33; font-weight: bold; }
"""
PAGE_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 12px; color: #222; background: #fafafa; }
svg { max-width: 100%; height: auto; display: block; }
rect { fill: transparent; pointer-events: all; } rect:hover { fill: rgba(255, 255, 255, 0.35); }
"""


def _html(
    output: str,
    table: pa.Table,
    tiles: Sequence[Tile],
    min_score: float,
    evaluation: dict[str, Any] | None,
    ground_truth: str | os.PathLike[str] | None,
) -> str:
    counts = pc.list_value_length(table["faces"]).drop_null().to_numpy()
    scores = pc.struct_field(pc.list_flatten(table["faces"]), "score").to_numpy()
    errors = table.filter(pc.equal(table["status"], "error"))
    models = ", ".join(pc.unique(table["model"]).to_pylist())
    totals = [
        ("images", table.num_rows),
        ("read", len(counts)),
        ("errors", errors.num_rows),
        ("faces", int(counts.sum())),
        (f"faces scoring ≥ {min_score:g} (drawn)", int((scores >= min_score).sum())),
        ("images with faces", int((counts > 0).sum())),
        ("most faces in one image", int(counts.max(initial=0))),
        ("images drawn below", len(tiles)),
    ]
    changed = sum(tile.changed for tile in tiles)
    if changed:
        totals.append(("of them changed since detected (faces not drawn)", changed))
    per_image = np.bincount(np.minimum(counts, 20), minlength=21)
    score_bins = np.histogram(scores, bins=20, range=(0.0, 1.0))[0]
    parts = [
        f"<h1>facesweep report</h1><div class=sub>{_e(output)} · model {_e(models)}</div>",
        "<h2>Totals</h2>" + _table(["", "count"], [(_e(k), _number(v)) for k, v in totals], "totals"),
    ]
    if evaluation is not None:
        parts.append(_evaluation(evaluation, ground_truth))
    parts.append(
        "<h2>Distributions</h2><div class=charts>"
        + _bars("faces per image", [*map(str, range(20)), "20+"], per_image)
        + _bars("face scores", [f"{b / 20:.2f}" for b in range(20)], score_bins)
        + "</div>"
    )
    if errors.num_rows:
        rows = zip(errors["uri"].to_pylist()[:MAX_ERROR_ROWS], errors["error"].to_pylist(), strict=False)
        more = (
            f"<p>and {errors.num_rows - MAX_ERROR_ROWS} more</p>" if errors.num_rows > MAX_ERROR_ROWS else ""
        )
        parts.append(
            f"<h2>Errors ({errors.num_rows})</h2>"
            + _table(
                ["image", "reason"],
                [(_e(uri), _e(error or "")) for uri, error in rows],
                "errors",
                numeric=False,
            )
            + more
        )
    key = (
        f"<span style='background:{_css(MATCHED)}'></span>detection on a face"
        f"<span style='background:{_css(FALSE)}'></span>false detection"
        f"<span style='background:{_css(MISSED)}'></span>missed face"
        if evaluation is not None
        else f"<span style='background:{_css(DETECTED)}'></span>face"
    )
    shown = (
        f"the first {len(tiles)} of {len(counts)} images read, by uri; click one for the full image, its "
        "count of faces for the full image with each face's score when pointed at. Lines are thinner and "
        f"landmark dots (on faces of {DOTS_FROM} px or more) smaller on smaller faces; a score is written "
        "on a box wide enough for it"
    )
    if any(tile.copy_thumb or tile.copy_note for tile in tiles):
        shown += "; each beside its anonymized copy (as written to --anonymize DEST, faces hidden)"
    parts.append(f"<h2>Images</h2><p class=key>{shown}. {key}</p><div class=grid>")
    parts += [_tile(tile) for tile in tiles]
    parts.append("</div>")
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>facesweep report</title>"
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def _tile(tile: Tile) -> str:
    name = _e(tile.uri.rsplit("/", 1)[-1])
    if tile.thumb is None:
        picture = f"<div class=missing>cannot show this image: {_e(tile.note or '')}</div>"
        caption = name
    else:
        picture = f"<a href='{tile.full}'><img class=thumb src='{tile.thumb}' alt='{name}'></a>"
        faces = f"{tile.faces} face{'s' * (tile.faces != 1)}"
        if tile.changed:
            faces = (
                f"<span class=stale>changed since detected: its {faces} not drawn</span> "
                "(re-run the job with --reprocess-changed)"
            )
        else:
            faces = f"<a href='{tile.page}'>{faces}</a>"
        caption = f"{name}<br>{faces}"
        if tile.matched is not None:
            caption += f": {tile.matched} on a face, {tile.false} false; {tile.missed} missed"
    if tile.copy_thumb is not None:
        copy = f"<a href='{tile.copy_full}'><img class=copy src='{tile.copy_thumb}' alt='anonymized'></a>"
        picture = f"<div class=pair>{picture}{copy}</div>"
    elif tile.copy_note is not None:
        note = f"<div class=missing>no anonymized copy: {_e(tile.copy_note)}</div>"
        picture = f"<div class=pair>{picture}{note}</div>"
    counts = {"faces": tile.faces, "matched": tile.matched, "false": tile.false, "missed": tile.missed}
    data = "".join(f" data-{key}={value}" for key, value in counts.items() if value is not None)
    data += " data-changed=1" * tile.changed
    caption = f"<figcaption>{caption}</figcaption>"
    return f"<figure class=tile title='{_e(tile.uri)}'{data}>{picture}{caption}</figure>"


def _evaluation(report: dict[str, Any], ground_truth: str | os.PathLike[str] | None) -> str:
    """The figures `facesweep eval` prints, as a table."""
    rows = []
    if "wider_ap" in report:
        positives = report["wider_positives"]
        rows += [
            (f"WIDER {setting} (official protocol)", f"{ap:.4f}", _number(positives[setting]))
            for setting, ap in report["wider_ap"].items()
        ]
    if "voc_ap" in report:
        rows.append(("VOC (IoU 0.5, all faces)", f"{report['voc_ap']:.4f}", _number(report["faces"])))
    low, high = OMZ_HEIGHT_RANGE
    rows.append(
        (
            f"OMZ (faces {low:.0f} to {high:.0f} px high)",
            f"{report['omz_ap']:.4f}",
            _number(report["omz_positives"]),
        )
    )
    images = report["images"]
    note = (
        f"{_e(ground_truth)}: {images['matched']} images matched, {images['missing']} in the ground truth "
        f"without predictions, {images['not_in_ground_truth']} predicted but not in it; "
        f"{report['faces']} faces, {report['detections']} detections"
    )
    return f"<h2>Accuracy</h2><p>{note}</p>" + _table(["AP", "value", "faces counted"], rows, "ap")


def _table(
    head: Sequence[str], rows: Sequence[Sequence[object]], css_class: str, numeric: bool = True
) -> str:
    """An HTML table of already escaped cells; with `numeric`, the columns after the first align right."""
    header = "".join(f"<th>{h}</th>" for h in head)
    cell = "<td class=n>{}</td>" if numeric else "<td>{}</td>"
    body = "".join(
        f"<tr><td>{row[0]}</td>" + "".join(cell.format(c) for c in row[1:]) + "</tr>" for row in rows
    )
    return f"<table class={css_class}><tr>{header}</tr>{body}</table>"


def _bars(title: str, labels: Sequence[str], counts: np.ndarray) -> str:
    """An inline SVG bar chart of `counts`, one bar per label."""
    width, height, left, bottom, top = 520, 220, 8, 36, 34
    step = (width - 2 * left) / len(counts)
    peak = max(int(counts.max(initial=0)), 1)
    heights = counts / peak * (height - bottom - top)
    bars = "".join(
        f"<rect x='{left + i * step + 1:.1f}' y='{height - bottom - h:.1f}' width='{step - 2:.1f}' "
        f"height='{h:.1f}' fill='#4a7fd4'><title>{_e(label)}: {c}</title></rect>"
        + (
            f"<text x='{left + (i + 0.5) * step:.1f}' y='{height - bottom - h - 3:.1f}' font-size='10' "
            f"text-anchor='middle'>{c}</text>"
            if c
            else ""
        )
        for i, (label, c, h) in enumerate(zip(labels, counts.tolist(), heights.tolist(), strict=True))
    )
    every = max(1, len(labels) // 10)
    ticks = "".join(
        f"<text x='{left + (i + 0.5) * step:.1f}' y='{height - bottom + 14}' font-size='10' "
        f"text-anchor='middle'>{_e(label)}</text>"
        for i, label in enumerate(labels)
        if i % every == 0
    )
    return (
        f"<svg class=chart width='{width}' height='{height}' viewBox='0 0 {width} {height}' role=img>"
        f"<text x='{left}' y='18' font-size='13' font-weight='bold'>{_e(title)}</text>{bars}{ticks}</svg>"
    )


def _number(value: int) -> str:
    return f"{value:,}"


def _css(bgr: tuple[int, int, int]) -> str:
    return f"rgb({bgr[2]},{bgr[1]},{bgr[0]})"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
