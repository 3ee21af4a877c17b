"""`facesweep show` on real outputs: the report's numbers, drawn boxes that line up, every face's score,
images changed since they were detected, ground truth, and the page itself in headless Chromium."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pyarrow.compute as pc
import pytest

from facesweep.cli import main
from facesweep.report import DETECTED, draw_faces, write_report
from facesweep.workers.evaluation.annotations import read_ground_truth
from facesweep.workers.evaluation.evaluate import evaluate
from facesweep.workers.faces import Faces
from facesweep.workers.inputs.images import decode_image
from facesweep.workers.output.reader import read_output
from facesweep.workers.output.writer import write_parquet
from facesweep.workers.storage import storage_for
from infra.local_s3 import LocalS3
from tests.browser import CHROMIUM, chromium
from tests.outputs import BROKEN, SUBSET_ANNOTATIONS, photo_folder, run_small_job

TILE = re.compile(r"<figure class=tile title='([^']*)'([^>]*)>(.*?)</figure>", re.DOTALL)
needs_shared = pytest.mark.skipif(
    not SUBSET_ANNOTATIONS.is_file(), reason="needs ../shared (WIDER FACE subset)"
)


@pytest.fixture(scope="module")
def report(output: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(str(output), tmp_path_factory.mktemp("report")).path


def tiles(report: Path) -> dict[str, tuple[dict[str, int], str]]:
    """uri -> (the tile's data-* counts, its inner HTML), in grid order."""
    found = {}
    for uri, attributes, inner in TILE.findall(report.read_text()):
        found[uri] = ({k: int(v) for k, v in re.findall(r"data-(\w+)=(\d+)", attributes)}, inner)
    return found


def test_totals_errors_and_one_thumbnail_per_image(output: Path, report: Path) -> None:
    table = read_output(str(output))
    rows = {row["uri"]: row for row in table.to_pylist()}
    ok = sorted(uri for uri, row in rows.items() if row["status"] == "ok")
    text = report.read_text()
    grid = tiles(report)
    assert list(grid) == ok
    assert text.count("<img class=thumb") == len(ok)
    for uri, (counts, inner) in grid.items():
        assert counts["faces"] == len(rows[uri]["faces"])
        thumb, full = re.search(r"href='(full/[^']+)'>.*src='(thumbs/[^']+)'", inner).group(2, 1)
        assert full.startswith("full/0") and full.endswith(f"-{Path(uri).stem}.jpg")  # its source's name
        assert cv2.imread(str(report.parent / thumb)).shape[1] == 320
        height, width = cv2.imread(str(report.parent / full)).shape[:2]
        assert (width, height) == (rows[uri]["width"], rows[uri]["height"])
    [broken] = [uri for uri in rows if uri.endswith(BROKEN)]
    assert f"<td>{broken}</td><td>{rows[broken]['error']}</td>" in text
    faces = sum(len(rows[uri]["faces"]) for uri in ok)
    assert f"<tr><td>images</td><td class=n>{len(rows)}</td></tr>" in text
    assert f"<tr><td>faces</td><td class=n>{faces}</td></tr>" in text
    assert text.count("<svg class=chart") == 2
    assert "http" not in text and "<script" not in text  # self-contained


def test_boxes_are_drawn_where_the_faces_are(output: Path, report: Path) -> None:
    [(uri, (_, inner))] = [
        (uri, tile) for uri, tile in tiles(report).items() if uri.endswith("astronaut.png")
    ]
    drawn = cv2.imread(str(report.parent / re.search(r"href='([^']+)'", inner).group(1))).astype(int)
    original = decode_image(Path(uri).read_bytes()).astype(int)
    [row] = [row for row in read_output(str(output)).to_pylist() if row["uri"] == uri]
    x1, y1, y2 = (round(row["faces"][0][key]) for key in ("x1", "y1", "y2"))

    def greenness(image: np.ndarray) -> float:  # along the box's left edge: DETECTED is green
        edge = image[y1 + 10 : y2 - 10, x1 - 1 : x1 + 2].reshape(-1, 3)
        return float((edge[:, 1] - edge[:, [0, 2]].max(axis=1)).mean())

    assert greenness(drawn) > 60 and greenness(original) < 20
    assert np.abs(drawn[400:, 400:] - original[400:, 400:]).mean() < 3  # nothing drawn far from the face


def test_every_face_has_its_score_on_its_page(output: Path, report: Path) -> None:
    """Each tile's face count links to the full image's page, where each face's box carries its score."""
    rows = {row["uri"]: row for row in read_output(str(output)).to_pylist()}
    rect = r"<rect x='([\d.]+)' y='([\d.]+)' width='[\d.]+' height='[\d.]+'><title>score ([\d.]+)</title>"
    for uri, (_, inner) in tiles(report).items():
        full, page = re.search(r"href='(full/[^']+)'>.*<a href='(full/[^']+)'>\d+ faces?</a>", inner).groups()
        text = (report.parent / page).read_text()
        assert f"<image href='{Path(full).name}'" in text
        faces = [(f"{f['x1']:.1f}", f"{f['y1']:.1f}", f"{f['score']:.2f}") for f in rows[uri]["faces"]]
        assert re.findall(rect, text) == faces


def test_small_faces_get_thin_lines_and_no_dots() -> None:
    """A 16 px face in a crowd keeps its face visible: a 1 px box, no landmark dots, no score on it; a
    200 px face gets a thicker box, its dots and its score above it."""
    image = np.zeros((1000, 1000, 3), np.uint8)
    boxes = np.array([[100, 100, 116, 116], [400, 400, 600, 600]], np.float32)
    landmarks = boxes[:, None, :2] + (boxes[:, None, 2:] - boxes[:, None, :2]) * np.array(
        [[0.3, 0.4], [0.7, 0.4], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]], np.float32
    )
    faces = Faces(boxes, np.array([0.91, 0.87], np.float32), landmarks)
    draw_faces(image, faces, np.array([DETECTED, DETECTED]), np.zeros((0, 4), np.float32))
    drawn = image.any(axis=2)
    assert not drawn[102:115, 102:115].any()  # inside the small box: nothing (the line is 1 px)
    assert drawn[100, 100:117].all() and not drawn[80:98, 90:130].any()  # its box, no score above
    assert (drawn[400:600, 398:403].sum(axis=1) >= 2).all()  # the large box's line: 2 px
    assert all(drawn[y, x] for x, y in landmarks[1].astype(int))  # its dots
    assert drawn[370:396, 400:450].sum() > 50  # its score, above it


def test_limit_and_min_score(output: Path, tmp_path: Path) -> None:
    report = write_report(str(output), tmp_path, limit=3, min_score=0.9).path
    table = read_output(str(output))
    grid = tiles(report)
    assert len(grid) == 3
    rows = {row["uri"]: row for row in table.to_pylist()}
    for uri, (counts, _) in grid.items():
        assert counts["faces"] == sum(face["score"] >= 0.9 for face in rows[uri]["faces"])
    assert f"<tr><td>images</td><td class=n>{table.num_rows}</td></tr>" in report.read_text()


@needs_shared
def test_ground_truth_gives_the_aps_and_marks_misses_and_false_detections(
    output: Path, tmp_path: Path
) -> None:
    report = write_report(str(output), tmp_path, ground_truth=SUBSET_ANNOTATIONS).path
    text = report.read_text()
    figures = evaluate(str(output), SUBSET_ANNOTATIONS)
    for setting, ap in figures["wider_ap"].items():
        assert f"<td>WIDER {setting} (official protocol)</td><td class=n>{ap:.4f}</td>" in text
    assert f"{figures['omz_ap']:.4f}" in text
    truth = read_ground_truth(SUBSET_ANNOTATIONS)
    marked = 0
    for uri, (counts, _) in tiles(report).items():
        relpath = uri[uri.index("images/") :] if "/images/" in uri else None
        if relpath not in truth:
            assert "matched" not in counts
            continue
        boxes = truth[relpath]
        faces = int(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).sum())
        assert counts["matched"] + counts["missed"] == faces
        assert counts["matched"] + counts["false"] == counts["faces"]
        marked += counts["matched"] > 0
    assert marked >= 2


def test_an_unreadable_image_gets_a_placeholder(output: Path, tmp_path: Path) -> None:
    """The images of two rows are gone or garbage by the time of the report: their tiles say so."""
    table = read_output(str(output)).slice(0, 4)
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 nothing")
    uris = [str(tmp_path / "gone.jpg"), str(tmp_path / "garbage.jpg"), *table["uri"].to_pylist()[2:]]
    table = table.set_column(0, "uri", [uris])
    folder = tmp_path / "out"
    write_parquet(table, storage_for(str(folder)), str(folder / "part-000000.parquet"))
    report = write_report(str(folder), tmp_path / "report")
    assert (report.drawn, report.unreadable) == (2, 2) and report.first_reason
    grid = tiles(report.path)
    assert list(grid) == sorted(uris)
    gone, garbage = grid[uris[0]][1], grid[uris[1]][1]
    assert "<div class=missing>cannot show this image: " in gone and "gone.jpg" in gone
    assert "<div class=missing>cannot show this image: " in garbage and "<img" not in garbage
    assert all("<img class=thumb" in grid[uri][1] for uri in uris[2:])


def test_an_image_changed_since_it_was_detected_is_shown_without_its_faces(
    ray_local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One photo is overwritten with other bytes, one only touched (a new version, as --reprocess-changed
    sees it) after the job: `show` shows both without their old boxes, marked and counted."""
    photos = photo_folder(tmp_path / "photos") / "skimage"
    run_small_job(str(photos), str(tmp_path / "out"))
    astronaut, camera = photos / "astronaut.png", photos / "camera.png"
    flipped = cv2.flip(cv2.imread(str(astronaut)), 1)
    cv2.imwrite(str(astronaut), flipped)
    os.utime(camera, ns=(camera.stat().st_atime_ns, camera.stat().st_mtime_ns + 10**9))
    assert main(["show", str(tmp_path / "out"), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "(4 images drawn)" in out
    assert (
        "facesweep: 2 images changed since they were detected (shown, their faces not drawn): re-run " in out
    )
    assert "--reprocess-changed" in out
    report = tmp_path / "report" / "report.html"
    grid = tiles(report)
    assert {uri for uri, (counts, _) in grid.items() if counts.get("changed")} == {
        str(astronaut),
        str(camera),
    }
    for uri, (_, inner) in grid.items():
        changed = uri in (str(astronaut), str(camera))
        assert ("changed since detected: its " in inner) == changed
        assert (".html'>" in inner) != changed  # no page of scores for boxes that are not drawn
    assert "<td>of them changed since detected (faces not drawn)</td><td class=n>2</td>" in report.read_text()
    full = re.search(r"href='(full/[^']+)'", grid[str(astronaut)][1]).group(1)
    shown = cv2.imread(str(report.parent / full)).astype(int)
    assert np.abs(shown - flipped).mean() < 3  # the image as it is now, nothing drawn on it


def test_out_that_is_a_file_is_one_line(
    output: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "report.txt"
    notes.write_text("notes")
    for out in (notes, notes / "report"):
        assert main(["show", str(output), "--out", str(out)]) == 1
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line == f"facesweep: error: show --out {out}: {notes} is a file: give a folder for the report"


def test_show_exits_1_when_no_image_can_be_fetched_and_writes_to_its_default_folder(
    output: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    table = read_output(str(output)).slice(0, 2)
    table = table.set_column(0, "uri", [[str(tmp_path / "gone-1.jpg"), str(tmp_path / "gone-2.jpg")]])
    folder = tmp_path / "out"
    write_parquet(table, storage_for(str(folder)), str(folder / "part-000000.parquet"))
    monkeypatch.chdir(tmp_path)
    assert main(["show", str(folder)]) == 1
    captured = capsys.readouterr()
    assert "none of the 2 images could be fetched or decoded now (first: " in captured.err
    assert "gone-1.jpg" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert (tmp_path / "facesweep-report" / "report.html").is_file()


def test_s3_output_of_s3_photos(ray_local: None, s3_env: LocalS3, tmp_path: Path) -> None:
    client = s3_env.client()
    client.create_bucket(Bucket="report-test")
    photos = photo_folder(tmp_path / "photos")
    for path in sorted((photos / "skimage").glob("*.png")):
        client.upload_file(str(path), "report-test", f"photos/{path.name}")
    run_small_job("s3://report-test/photos", "s3://report-test/out")
    assert main(["show", "s3://report-test/out", "--out", str(tmp_path / "report")]) == 0
    grid = tiles(tmp_path / "report" / "report.html")
    assert sorted(grid) == [
        f"s3://report-test/photos/{p.name}" for p in sorted((photos / "skimage").glob("*.png"))
    ]
    assert all("<img class=thumb" in inner for _, inner in grid.values())
    assert not any(counts.get("changed") for counts, _ in grid.values())  # ETags as listed
    # Another photo put under one key: its ETag (and size) are no longer its row's.
    client.upload_file(str(photos / "skimage" / "camera.png"), "report-test", "photos/astronaut.png")
    assert main(["show", "s3://report-test/out", "--out", str(tmp_path / "again")]) == 0
    grid = tiles(tmp_path / "again" / "report.html")
    changed = [uri for uri, (counts, _) in grid.items() if counts.get("changed")]
    assert changed == ["s3://report-test/photos/astronaut.png"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["/no/such/output"], "/no/such/output: no such directory"),
        (["s3://no-such-report-bucket/out"], "bucket 'no-such-report-bucket' does not exist"),
        (["OUTPUT", "--ground-truth", "/no/such/annotations.txt"], "/no/such/annotations.txt: no such file"),
    ],
)
def test_bad_input_is_one_line(
    args: list[str],
    fragment: str,
    output: Path,
    s3_env: LocalS3,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [str(output) if arg == "OUTPUT" else arg for arg in args]
    assert main(["show", *args, "--out", str(tmp_path)]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("facesweep: error: ") and fragment in line, line


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`make test` installs it)")
def test_the_report_opens_in_headless_chromium(output: Path, report: Path, tmp_path: Path) -> None:
    images = read_output(str(output))
    read = int(pc.sum(pc.equal(images["status"], "ok")).as_py())
    dom = chromium(report, "--dump-dom", cwd=tmp_path)
    assert len(re.findall(r'<img class="thumb"', dom)) == read
    assert len(re.findall(r'<figure class="tile"', dom)) == read
    shot = tmp_path / "shot.png"
    chromium(report, f"--screenshot={shot}", "--window-size=1280,2000", cwd=tmp_path)
    pixels = cv2.imread(str(shot))
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 30
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 5000  # photos, not just text on white
    # The page of the image with the most faces: its photo shown, and a score for every face.
    counts, inner = max(tiles(report).values(), key=lambda tile: tile[0]["faces"])
    page = report.parent / re.search(r"<a href='(full/[^']+\.html)'>", inner).group(1)
    dom = chromium(page, "--dump-dom", cwd=tmp_path)
    assert len(re.findall(r"<rect [^>]*><title>score \d\.\d\d</title></rect>", dom)) == counts["faces"] > 0
    chromium(page, f"--screenshot={shot}", "--window-size=1280,1000", cwd=tmp_path)
    assert len(np.unique(cv2.imread(str(shot)).reshape(-1, 3), axis=0)) > 5000  # the photo is there
