"""Containers as INPUT: WebDataset tar shards and Parquet tables of image bytes, cut into pieces by byte
range, each image exactly once, broken members and cut files as error rows, resumed and incremental."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from facesweep.export import export
from facesweep.report import write_report
from facesweep.workers.config import ContainerSettings, DetectorSettings, JobConfig
from facesweep.workers.evaluation.evaluate import evaluate
from facesweep.workers.inputs.containers import expand, fetch_members, piece_uri, read_piece
from facesweep.workers.inputs.listing import list_images
from facesweep.workers.job.driver import run_job
from facesweep.workers.job.ledger import OutputConflictError
from facesweep.workers.output.schema import SCHEMA
from facesweep.workers.storage import request_counts
from infra.demo import sample_photos
from infra.local_s3 import LocalS3

PHOTOS = 8
LONG_NAME = "ünïcode-" + "x" * 120  # a pax header (non-ASCII, over 100 bytes) before its member


def photos() -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for _, path in sample_photos()[:PHOTOS]]


def webdataset_tar(path: Path, extra: bytes | None = None) -> dict[str, bytes]:
    """A WebDataset shard: each sample an image and a .json; one sample with a pax-long name and one
    broken image (`extra` bytes, when given). Returns the image members' paths and bytes."""
    images = {}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        samples = [(f"{i:06d}", name, data) for i, (name, data) in enumerate(photos())]
        samples[3] = (f"{LONG_NAME}/000003", samples[3][1], samples[3][2])
        if extra is not None:
            samples.append(("broken", "x.jpg", extra))
        for key, name, data in samples:
            image = f"{key}{Path(name).suffix}"
            for member, body in ((image, data), (f"{key}.json", json.dumps({"source": name}).encode())):
                info = tarfile.TarInfo(member)
                info.size = len(body)
                archive.addfile(info, io.BytesIO(body))
            images[image] = data
    return images


def members(container: str, size: int, piece_bytes: int, **settings: object) -> list:
    listing = expand(pa.table({"uri": [container], "etag": ["v1"], "size": [size]}), piece_bytes)
    pieces = listing["uri"].to_pylist()
    return [
        m for piece in pieces for m in read_piece(piece, size, ContainerSettings(piece_bytes, **settings))
    ]


@pytest.mark.parametrize("piece_bytes", [512, 4096, 100_000, 1 << 30])
def test_every_tar_member_is_read_by_exactly_one_piece(tmp_path: Path, piece_bytes: int) -> None:
    tar = tmp_path / "000000.tar"
    images = webdataset_tar(tar)
    found = members(str(tar), tar.stat().st_size, piece_bytes)
    assert sorted(m.name for m in found) == sorted(f"{tar}#{name}" for name in images)  # no .json rows
    for member in found:
        assert member.failure is None and member.data == images[member.name.split("#", 1)[1]]
    [long] = [m for m in found if LONG_NAME in m.name]
    assert long.key == f"{LONG_NAME}/000003"


def test_a_tar_on_s3_is_read_with_a_few_ranged_gets(s3_env: LocalS3, tmp_path: Path) -> None:
    tar = tmp_path / "shard.tar"
    images = webdataset_tar(tar)
    client = s3_env.client()
    client.create_bucket(Bucket="containers")
    client.upload_file(str(tar), "containers", "shards/000000.tar")
    [listed] = list(list_images("s3://containers/shards", settings=ContainerSettings(piece_bytes=1 << 20)))
    before = request_counts()["GET"]
    found = [
        m
        for uri in listed["uri"].to_pylist()
        for m in read_piece(uri, tar.stat().st_size, ContainerSettings())
    ]
    gets = request_counts()["GET"] - before
    assert sorted(m.name.split("#", 1)[1] for m in found) == sorted(images)
    assert gets <= 2 * listed.num_rows < len(images)  # one GET per piece, another for a member it cuts
    [alone] = list(
        list_images("s3://containers/shards/000000.tar", settings=ContainerSettings(piece_bytes=1 << 20))
    )
    assert alone.to_pylist() == listed.to_pylist()  # INPUT naming the tar: the same pieces, with its ETag
    assert None not in alone["etag"].to_pylist()


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, "a header"])
def test_a_cut_tar_gives_error_rows_for_what_is_missing(tmp_path: Path, keep: float | str) -> None:
    whole = tmp_path / "whole.tar"
    images = webdataset_tar(whole)
    data = whole.read_bytes()
    if keep == "a header":  # cut 100 bytes into the fifth member's header
        with tarfile.open(whole) as archive:
            length = archive.getmembers()[4].offset + 100
    else:
        length = int(len(data) * keep)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:length])
    found = members(str(cut), cut.stat().st_size, 100_000)
    good = [m for m in found if m.failure is None]
    bad = [m for m in found if m.failure is not None]
    assert good and all(m.data == images[m.name.split("#", 1)[1]] for m in good)
    assert len(bad) == 1 and "truncated tar" in bad[0].failure.message, [m.failure for m in bad]
    assert bad[0].failure.kind == "truncated"


def test_piece_names_hold_when_a_container_grows(tmp_path: Path) -> None:
    def names(uri: str, size: int) -> list[str]:
        listing = pa.table({"uri": [uri], "etag": ["v"], "size": [size]})
        return expand(listing, 1000)["uri"].to_pylist()

    small, grown = names("s3://b/x.tar", 1500), names("s3://b/x.tar", 2500)
    assert small == [piece_uri("s3://b/x.tar", 0, 1000), piece_uri("s3://b/x.tar", 1000, 2000)]
    assert grown[:2] == small and len(grown) == 3  # the old pieces keep their names: changed, not gone
    assert names("s3://b/x.tar.gz", 10) == names("s3://b/x.tar.gz", 10**9)  # one piece, one name
    tar = tmp_path / "x.tar"
    images = webdataset_tar(tar)
    assert len(members(str(tar), tar.stat().st_size, 4096)) == len(images)  # the last piece ends early


def test_a_container_that_cannot_be_read_is_one_error_row(tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    webdataset_tar(good)
    packed = gzip.compress(good.read_bytes())
    table = tmp_path / "table.parquet"
    pq.write_table(pa.table({"image": [b"x"]}), table)
    cases = {
        "junk.tar.gz": (b"not gzip at all" * 10, "corrupt"),
        "cut.tar.gz": (packed[: len(packed) // 2], "truncated"),
        "flipped.tar.gz": (packed[:20] + bytes(b ^ 0xFF for b in packed[20:60]) + packed[60:], "corrupt"),
        "junk.parquet": (b"PAR1 but no footer" * 100, "corrupt"),
    }
    for name, (data, kind) in cases.items():
        (tmp_path / name).write_bytes(data)
        [row] = members(str(tmp_path / name), len(data), 1 << 30)
        assert row.failure.kind == kind and name in row.failure.message, (name, row.failure)
        assert row.name.startswith(f"{tmp_path / name}#bytes="), row.name
    [no_id] = members(str(table), table.stat().st_size, 1 << 30, id_column="id")
    assert "no column 'id' (--id-column)" in no_id.failure.message
    gone = piece_uri(str(tmp_path / "gone.tar"), 0, 1000)
    [missing] = read_piece(gone, 1000, ContainerSettings())
    assert missing.failure.kind == "fetch" and "gone.tar" in missing.failure.message
    fetched = fetch_members({f"{tmp_path}/gone.tar#0.jpg": gone}, ContainerSettings())
    assert fetched[f"{tmp_path}/gone.tar#0.jpg"].failure.kind == "fetch"


def test_tar_headers_that_are_not_utf8_or_not_octal(tmp_path: Path) -> None:
    data = photos()[0][1]
    tar = tmp_path / "latin1.tar"
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as archive:
        info = tarfile.TarInfo("café.jpg")  # its name in Latin-1: not UTF-8
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    [member] = members(str(tar), tar.stat().st_size, 1 << 30)
    assert member.data == data and member.name == f"{tar}#caf\ufffd.jpg"
    member.name.encode()  # a surrogate would fail here, and in the output's string column
    fake = bytearray(512)  # a block with the magic and a checksum that is no number, then the real tar
    fake[257:262], fake[148:156] = b"ustar", b"9x9x9x9\0"
    noisy = tmp_path / "noisy.tar"
    noisy.write_bytes(bytes(fake) + tar.read_bytes())
    [found] = members(str(noisy), noisy.stat().st_size, 1 << 30)
    assert found.data == data


def test_parquet_image_bytes_by_row_group_with_ids(tmp_path: Path) -> None:
    table = tmp_path / "images.parquet"
    data = photos()
    structs = [{"bytes": body, "path": name} for name, body in data]
    pq.write_table(
        pa.table({"id": [100 + i for i in range(PHOTOS)], "image": structs}), table, row_group_size=3
    )
    size = table.stat().st_size
    for piece_bytes in (1000, 200_000, 1 << 30):
        found = members(str(table), size, piece_bytes, id_column="id")
        assert [m.name for m in found] == [f"{table}#row={i}" for i in range(PHOTOS)]
        assert [m.key for m in found] == [str(100 + i) for i in range(PHOTOS)]
        assert [m.data for m in found] == [body for _, body in data]
    by_path = members(str(table), size, 1 << 30)
    assert [m.key for m in by_path] == [name for name, _ in data]  # the Hugging Face struct's path
    two = tmp_path / "two.parquet"
    pq.write_table(pa.table({"a": [b"x"], "b": [b"y"]}), two)
    [refused] = members(str(two), two.stat().st_size, 1 << 30)
    assert "no single image-bytes column (several: a, b): give --image-column" in refused.failure.message
    [chosen] = members(str(two), two.stat().st_size, 1 << 30, image_column="b")
    assert chosen.data == b"y"


def job(input_: str, output: Path, piece_bytes: int) -> JobConfig:
    return JobConfig(
        input_,
        str(output),
        DetectorSettings(model="retinaface-mnet025", precision="f32"),
        actors=1,
        cpus_per_actor=1,
        containers=ContainerSettings(piece_bytes=piece_bytes),
    )


def rows(output: Path) -> dict[str, dict]:
    table = ds.dataset(output, format="parquet").to_table()
    assert table.schema.equals(SCHEMA)
    found = {row["uri"]: row for row in table.to_pylist()}
    assert len(found) == table.num_rows, "an image twice"
    return found


def test_tar_and_parquet_jobs_resume_and_grow(ray_local: None, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    images = webdataset_tar(folder / "000000.tar", extra=b"\xff\xd8\xff\xe0 not a JPEG")
    data = photos()
    pq.write_table(
        pa.table({"image": [body for _, body in data]}), folder / "bytes.parquet", row_group_size=2
    )
    output = tmp_path / "out"
    first = run_job(job(str(folder), output, 400_000))
    expected = {f"{folder}/000000.tar#{name}" for name in images} | {
        f"{folder}/bytes.parquet#row={i}" for i in range(PHOTOS)
    }
    found = rows(output)
    assert set(found) == expected and first.images == len(expected) and not first.failed_shards
    broken = found[f"{folder}/000000.tar#broken.jpg"]
    assert broken["status"] == "error" and broken["key"] == "broken"
    [same] = [uri for uri in found if "#000000." in uri]  # the same photo in two containers
    assert found[same]["faces"] == found[f"{folder}/bytes.parquet#row=0"]["faces"]
    assert all(row["container"].startswith(row["uri"].split("#")[0] + "#bytes=") for row in found.values())
    report = write_report(str(output), tmp_path / "report")
    assert (report.drawn, report.unreadable) == (len(expected) - 1, 0)  # every image but the broken one
    coco = json.loads(Path(export(str(output), "coco", str(tmp_path / "faces.json")).path).read_text())
    assert len(coco["images"]) == len(expected) - 1 and coco["errors"][0]["file_name"].endswith("#broken.jpg")
    truth = tmp_path / "truth.txt"  # the tar's detections as ground truth, by member path: AP 1
    lines = [
        f"{uri.split('#')[1]} {f['x1']} {f['y1']} {f['x2'] - f['x1']} {f['y2'] - f['y1']}"
        for uri, row in found.items()
        if ".tar#" in uri
        for f in row["faces"] or []
    ]
    truth.write_text("\n".join(lines) + "\n")
    scored = evaluate(str(output), truth)
    assert scored["images"]["matched"] == len({line.split()[0] for line in lines}) and scored["voc_ap"] > 0.99
    again = run_job(job(str(folder), output, 400_000))
    assert again.already_complete and again.images == 0
    webdataset_tar(folder / "000001.tar")
    grown = run_job(job(str(folder), output, 400_000))
    assert grown.images == PHOTOS and grown.resumed.images == len(expected)
    assert len(rows(output)) == len(expected) + PHOTOS


def test_a_container_job_refuses_another_piece_size(ray_local: None, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    webdataset_tar(folder / "000000.tar")
    run_job(job(str(folder), tmp_path / "out", 1 << 20))
    with pytest.raises(OutputConflictError, match="piece_bytes"):
        run_job(job(str(folder), tmp_path / "out", 1 << 21))
    assert piece_uri("s3://b/x.tar", 0, 5).endswith("#bytes=000000000000-000000000005")


def test_tar_and_parquet_containers_on_s3(ray_local: None, s3_env: LocalS3, tmp_path: Path) -> None:
    tar = tmp_path / "000000.tar"
    images = webdataset_tar(tar)
    table = tmp_path / "hf.parquet"
    data = photos()
    structs = [{"bytes": body, "path": f"photos/{name}"} for name, body in data]
    pq.write_table(pa.table({"image": structs}), table, row_group_size=3)
    client = s3_env.client()
    client.create_bucket(Bucket="container-job")
    for path in (tar, table):
        client.upload_file(str(path), "container-job", f"in/{path.name}")
    result = run_job(job("s3://container-job/in", "s3://container-job/out", 500_000))
    expected = {f"s3://container-job/in/000000.tar#{name}" for name in images} | {
        f"s3://container-job/in/hf.parquet#row={i}" for i in range(PHOTOS)
    }
    found = ds.dataset("container-job/out", format="parquet", filesystem=s3_env.arrow_filesystem()).to_table(
        columns=["uri", "key", "status"]
    )
    assert sorted(found["uri"].to_pylist()) == sorted(expected) and result.images == len(expected)
    assert set(found["status"].to_pylist()) == {"ok"}
    keys = dict(zip(found["uri"].to_pylist(), found["key"].to_pylist(), strict=True))
    assert keys["s3://container-job/in/hf.parquet#row=2"] == f"photos/{data[2][0]}"
    report = write_report("s3://container-job/out", tmp_path / "report")
    assert (report.drawn, report.unreadable) == (len(expected), 0)
