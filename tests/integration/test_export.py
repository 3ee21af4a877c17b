"""`facesweep export` on real outputs: COCO, CSV and flat Parquet hold exactly the Parquet output's faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from facesweep.cli import main
from facesweep.export import DEFAULT_FILES, export
from facesweep.workers.faces import Faces
from facesweep.workers.output.reader import FLAT_SCHEMA, LANDMARK_NAMES, faces_per_image, read_output
from facesweep.workers.output.schema import ImageResult, results_table
from facesweep.workers.output.writer import write_parquet
from facesweep.workers.storage import storage_for
from infra.local_s3 import LocalS3
from tests.outputs import BROKEN


def rows_of(output: Path) -> list[dict]:
    """The output's rows by uri, read independently of facesweep.workers.output.reader."""
    return sorted(ds.dataset(output, format="parquet").to_table().to_pylist(), key=lambda row: row["uri"])


IMAGE_KEYS = ("uri", "width", "height", "model", "status", "error", "error_kind")
FACE_KEYS = FLAT_SCHEMA.names[len(IMAGE_KEYS) :]


def expected_flat_rows(rows: list[dict], min_score: float = 0.0) -> list[dict]:
    """One dict per face scoring at least `min_score` in FLAT_SCHEMA's columns, and one with null face
    columns per image left without a face, built row by row from the Parquet output."""
    flat = []
    for row in rows:
        image = {key: row[key] for key in IMAGE_KEYS}
        faces = [face for face in row["faces"] or [] if face["score"] >= np.float32(min_score)]
        for rank, face in enumerate(faces):
            points = face["landmarks"] or [None] * 10
            flat.append(
                {
                    **image,
                    "face": rank,
                    **{key: face[key] for key in ("x1", "y1", "x2", "y2", "score")},
                    **dict(zip(FLAT_SCHEMA.names[-10:], points, strict=True)),
                }
            )
        if not faces:
            flat.append({**image, **dict.fromkeys(FACE_KEYS)})
    return flat


def test_coco_boxes_scores_and_keypoints_equal_the_parquet_faces(output: Path, tmp_path: Path) -> None:
    done = export(str(output), "coco", str(tmp_path / "faces.json"))
    coco = json.loads((tmp_path / "faces.json").read_text())
    rows = rows_of(output)
    ok = [row for row in rows if row["status"] == "ok"]
    assert (done.images, done.errors, done.faces) == (len(rows), 1, sum(len(r["faces"]) for r in ok))
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        (r["uri"], r["width"], r["height"]) for r in ok
    ]
    [error] = [row for row in rows if row["status"] == "error"]
    assert error["uri"].endswith(BROKEN)
    assert coco["errors"] == [{"file_name": error["uri"], "error": error["error"]}]
    assert coco["categories"] == [
        {"id": 1, "name": "face", "supercategory": "face", "keypoints": list(LANDMARK_NAMES), "skeleton": []}
    ]
    assert [a["id"] for a in coco["annotations"]] == list(range(1, done.faces + 1))
    by_image = {image["id"]: [] for image in coco["images"]}
    for annotation in coco["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    assert done.faces > 5
    for image, row in zip(coco["images"], ok, strict=True):
        annotations = by_image[image["id"]]
        assert len(annotations) == len(row["faces"])
        for annotation, face in zip(annotations, row["faces"], strict=True):
            x, y, w, h = annotation["bbox"]
            corners = np.float32([x, y, x + w, y + h])
            assert corners.tolist() == [face["x1"], face["y1"], face["x2"], face["y2"]]
            assert annotation["segmentation"] == [[x, y, x + w, y, x + w, y + h, x, y + h]]
            assert annotation["area"] == pytest.approx(w * h)
            assert np.float32(annotation["score"]) == np.float32(face["score"])
            keypoints = annotation["keypoints"]
            assert np.float32(keypoints[0::3] + keypoints[1::3]).tolist() == (
                face["landmarks"][0::2] + face["landmarks"][1::2]
            )
            assert keypoints[2::3] == [2] * 5 and annotation["num_keypoints"] == 5
            assert (annotation["category_id"], annotation["iscrowd"]) == (1, 0)


@pytest.mark.parametrize("min_score", [0.0, 0.9])
def test_csv_and_flat_parquet_have_a_row_per_face_and_per_image_without_one(
    output: Path, tmp_path: Path, min_score: float
) -> None:
    expected = expected_flat_rows(rows_of(output), min_score)
    assert {row["status"] for row in expected if row["face"] is None} == {"ok", "error"}
    export(str(output), "csv", str(tmp_path / "faces.csv"), min_score)
    export(str(output), "flat-parquet", str(tmp_path / "faces.parquet"), min_score)
    options = pacsv.ConvertOptions(column_types=FLAT_SCHEMA, strings_can_be_null=True)
    from_csv = pacsv.read_csv(tmp_path / "faces.csv", convert_options=options)
    from_parquet = pq.read_table(tmp_path / "faces.parquet")
    assert from_parquet.schema.equals(FLAT_SCHEMA) and from_csv.schema.equals(FLAT_SCHEMA)
    assert from_parquet.to_pylist() == expected
    assert from_csv.to_pylist() == expected


def test_a_model_without_landmarks_exports_null_landmarks(output: Path, tmp_path: Path) -> None:
    """The real sink's table for the same faces without landmarks: COCO keypoints all 0, flat ones null."""
    table = read_output(str(output))
    results = [
        ImageResult(
            uri, width, height, None if faces is None else Faces(faces.boxes, faces.scores, None), error
        )
        for uri, width, height, error, faces in zip(
            *(table[name].to_pylist() for name in ("uri", "width", "height", "error")),
            faces_per_image(table),
            strict=True,
        )
    ]
    bare = tmp_path / "bare"
    write_parquet(
        results_table(results, "no-landmarks"), storage_for(str(bare)), str(bare / "part-0.parquet")
    )
    export(str(bare), "coco", str(tmp_path / "faces.json"))
    export(str(bare), "flat-parquet", str(tmp_path / "faces.parquet"))
    annotations = json.loads((tmp_path / "faces.json").read_text())["annotations"]
    assert annotations and all(a["keypoints"] == [0] * 15 and a["num_keypoints"] == 0 for a in annotations)
    flat = pq.read_table(tmp_path / "faces.parquet")
    flat = flat.filter(pc.is_valid(flat["face"]))
    assert flat.num_rows == len(annotations)
    assert all(flat[name].null_count == flat.num_rows for name in FLAT_SCHEMA.names[-10:])
    assert flat["x1"].null_count == 0


def test_s3_output_to_s3_and_the_default_file(
    output: Path, s3_env: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_env.client()
    client.create_bucket(Bucket="export-test")
    for part in output.glob("*.parquet"):
        client.upload_file(str(part), "export-test", f"run/{part.name}")
    assert (
        main(["export", "s3://export-test/run", "--format", "flat-parquet", "--out", "s3://export-test/f.pq"])
        == 0
    )
    body = client.get_object(Bucket="export-test", Key="f.pq")["Body"].read()
    from_s3 = pq.read_table(pa.BufferReader(body))
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(output), "--format", "flat-parquet"]) == 0
    assert from_s3.equals(pq.read_table(tmp_path / DEFAULT_FILES["flat-parquet"]))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["/no/such/output"], "/no/such/output: no such directory"),
        (["s3://no-such-export-bucket/run"], "bucket 'no-such-export-bucket' does not exist"),
    ],
)
def test_bad_output_is_one_line(
    args: list[str], fragment: str, s3_env: LocalS3, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", *args, "--format", "csv"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("facesweep: error: ") and fragment in line, line


def test_a_folder_without_parquet_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "photo.jpg").write_bytes(b"x")
    assert main(["export", str(tmp_path), "--format", "coco"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert (
        line
        == f"facesweep: error: {tmp_path}: no Parquet files: give the OUTPUT of a `facesweep run` "
        + ("that has started")
    )


def test_coco_min_score_image_root_and_an_out_folder(output: Path, tmp_path: Path) -> None:
    rows = rows_of(output)
    folder = tmp_path / "exports"
    folder.mkdir()
    done = export(str(output), "coco", f"{folder}", min_score=0.9, image_root=str(output.parent))
    assert done.path == str(folder / DEFAULT_FILES["coco"])
    coco = json.loads(Path(done.path).read_text())
    ok = [row for row in rows if row["status"] == "ok"]
    assert [image["file_name"] for image in coco["images"]] == [
        str(Path(row["uri"]).relative_to(output.parent)) for row in ok
    ]
    scores = [face["score"] for row in ok for face in row["faces"]]
    assert 0 < len(coco["annotations"]) == sum(score >= np.float32(0.9) for score in scores) < len(scores)
    assert min(a["score"] for a in coco["annotations"]) >= np.float32(0.9)
    with pytest.raises(ValueError, match=r"--image-root /elsewhere: image .* is not below it"):
        export(str(output), "coco", str(tmp_path / "x.json"), image_root="/elsewhere")
    fresh = tmp_path / "new-folder/"
    assert export(str(output), "csv", f"{fresh}/").path == str(fresh / DEFAULT_FILES["csv"])
    assert (fresh / DEFAULT_FILES["csv"]).is_file()


def test_coco_names_the_landmarks_by_the_persons_side(output: Path, tmp_path: Path) -> None:
    """The astronaut faces the camera: her right eye and mouth corner are on the image's left."""
    export(str(output), "coco", str(tmp_path / "faces.json"))
    coco = json.loads((tmp_path / "faces.json").read_text())
    names = coco["categories"][0]["keypoints"]
    [image] = [i["id"] for i in coco["images"] if i["file_name"].endswith("astronaut.png")]
    face = max((a for a in coco["annotations"] if a["image_id"] == image), key=lambda a: a["score"])
    x = {name: face["keypoints"][3 * k] for k, name in enumerate(names)}
    assert x["right_eye"] < x["nose"] < x["left_eye"] and x["mouth_right"] < x["mouth_left"]
