"""Listing at scale: sub-folders listed concurrently in key order, S3 Inventory reports (CSV and Parquet)
as INPUT, unsorted manifests sorted through disk, and what a dry run decides from them."""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facesweep.workers.config import DetectorSettings, JobConfig
from facesweep.workers.inputs import listing as inputs
from facesweep.workers.inputs import sorted_runs
from facesweep.workers.inputs.listing import InputError, list_images, list_uris
from facesweep.workers.job.preparation import dry_run
from facesweep.workers.storage import ObjectError, request_counts, storage_for
from infra.local_s3 import LocalS3


def put(client, bucket: str, keys: list[str]) -> None:
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())


def test_s3_prefix_is_listed_by_sub_folder_in_key_order(
    s3_env: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_env.client()
    client.create_bucket(Bucket="listing")
    folders = [f"in/p{i:02d}/" for i in range(20)]  # more sub-folders than listers at once
    keys = ["in/a.jpg", "in/b-c.jpg", "in/b/1.jpg", "in/b/2/3.JPG", "in/c/y.txt", "in/z.png"]
    keys += [f"{folder}{name}" for folder in folders for name in ("1.jpg", "2/x.png", "notes.md")]
    put(client, "listing", keys)
    monkeypatch.setattr(inputs, "LISTERS", 4)
    monkeypatch.setattr(inputs, "PAGE", 2)  # many pages per sub-folder, each queue filled ahead
    storage_for("s3://listing/").exists("s3://listing/in/a.jpg")  # the client (and its probe) exists
    before = request_counts()["LIST"]
    tables = list(list_images("s3://listing/in"))
    listed = pa.concat_tables(tables)
    images = sorted(f"s3://listing/{k}" for k in keys if k.lower().endswith((".jpg", ".png")))
    assert listed["uri"].to_pylist() == images
    sizes = listed["size"].to_pylist()  # each object's body is its key
    assert sizes == [len(uri.removeprefix("s3://listing/")) for uri in images]
    assert all(etag.startswith('"') for etag in listed["etag"].to_pylist())
    # one delimited LIST of the prefix, then one LIST per sub-folder (each fits a 1,000-key page)
    assert request_counts()["LIST"] - before == 1 + len(folders) + 2  # and in/b/, in/c/


def test_keys_object_store_cannot_name_are_listed_and_read_through_boto3(s3_env: LocalS3) -> None:
    """S3 allows `a//b` and `.` segments; object_store refuses them (a whole listing with one of them).
    SeaweedFS stores `in//x.jpg` as `in/x.jpg` and refuses `.` segments, so the GETs below can only show
    that such a key reaches the store (and what it answers) instead of failing in the client."""
    client = s3_env.client()
    client.create_bucket(Bucket="odd-keys")
    put(client, "odd-keys", ["in//x.jpg", "in/y.jpg"])
    storage = storage_for("s3://odd-keys/")
    assert storage.get("s3://odd-keys/in//x.jpg") == b"in//x.jpg"
    assert storage.get_range("s3://odd-keys/in//x.jpg", 3, 2) == b"/x"
    assert storage.head("s3://odd-keys/in//x.jpg").size == len("in//x.jpg")
    with pytest.raises(ObjectError, match=r"s3://odd-keys/in/\./y\.jpg: InvalidRequest"):
        storage.get("s3://odd-keys/in/./y.jpg")  # an error row for this image, not a failed shard
    assert [info.uri for info in storage.list_objects("s3://odd-keys/in/")] == [
        "s3://odd-keys/in/x.jpg",
        "s3://odd-keys/in/y.jpg",
    ]


def test_local_directory_lists_in_path_order(tmp_path: Path) -> None:
    for name in ("a/x.jpg", "a-b/y.jpg", "a.jpg", "a/b/z.png", "B.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    uris = list(list_uris(str(tmp_path)))
    assert uris == sorted(uris) and len(uris) == 5


def csv_inventory(rows: list[list[str]]) -> bytes:
    text = "".join(",".join(f'"{v}"' for v in row) + "\n" for row in rows)
    return gzip.compress(text.encode())


def test_s3_inventory_csv_and_parquet(s3_env: LocalS3) -> None:
    client = s3_env.client()
    client.create_bucket(Bucket="inventory")
    schema = "Bucket, Key, Size, ETag, IsLatest, IsDeleteMarker"
    first = [
        ["photos", "2026/b+c.jpg", "11", "e1", "true", "false"],  # CSV keys are URL-encoded: "b c.jpg"
        ["photos", "2026/a%2Bb.jpg", "12", "e2", "true", "false"],  # "a+b.jpg"
        ["photos", "2026/old.jpg", "13", "e3", "false", "false"],  # a non-current version
        ["photos", "2026/gone.jpg", "0", "", "true", "true"],  # a delete marker
        ["photos", "2026/notes.txt", "5", "e5", "true", "false"],
    ]
    second = [
        ["photos", "2026/a%2Bb.jpg", "12", "e2", "true", "false"],  # in two files: listed once
        ["photos", "2025/z.png", "9", "e9", "true", "false"],
    ]
    for name, rows in (("one", first), ("two", second)):
        client.put_object(Bucket="inventory", Key=f"inv/data/{name}.csv.gz", Body=csv_inventory(rows))
    manifest = {
        "sourceBucket": "photos",
        "destinationBucket": "arn:aws:s3:::inventory",
        "fileFormat": "CSV",
        "fileSchema": schema,
        "files": [{"key": "inv/data/one.csv.gz"}, {"key": "inv/data/two.csv.gz"}],
    }
    client.put_object(Bucket="inventory", Key="inv/manifest.json", Body=json.dumps(manifest).encode())
    listed = pa.concat_tables(list_images("s3://inventory/inv/manifest.json"))
    assert listed.to_pydict() == {
        "uri": ["s3://photos/2025/z.png", "s3://photos/2026/a+b.jpg", "s3://photos/2026/b c.jpg"],
        "etag": ["e9", "e2", "e1"],
        "size": [9, 12, 11],
    }
    parquet = pa.table(
        {
            "bucket": ["photos", "photos"],
            "key": ["x/2.jpg", "x/1 a+b.jpg"],  # Parquet inventories do not encode keys
            "size": pa.array([2, 1], pa.int64()),
            "e_tag": ["p2", "p1"],
            "is_latest": [True, True],
        }
    )
    buffer = io.BytesIO()
    pq.write_table(parquet, buffer)
    client.put_object(Bucket="inventory", Key="pq/data/one.parquet", Body=buffer.getvalue())
    manifest["fileFormat"], manifest["fileSchema"] = "Parquet", "message s3.inventory {}"
    manifest["files"] = [{"key": "pq/data/one.parquet"}]
    client.put_object(Bucket="inventory", Key="pq/manifest.json", Body=json.dumps(manifest).encode())
    assert list(list_uris("s3://inventory/pq/manifest.json", include="x/1*")) == ["s3://photos/x/1 a+b.jpg"]
    settings = DetectorSettings(model="retinaface-mnet025")
    config = JobConfig("s3://inventory/pq/manifest.json", "s3://inventory/out/", settings)
    plan = dry_run(config)
    assert plan.counts.new == 2 and plan.counts.shards == 1 and plan.files == 1


def test_inventory_must_be_on_s3_and_readable(tmp_path: Path, s3_env: LocalS3) -> None:
    local = tmp_path / "manifest.json"
    local.write_text("{}")
    with pytest.raises(InputError, match="read from S3"):
        list(list_images(str(local)))
    s3_env.client().create_bucket(Bucket="inventory-bad")
    s3_env.client().put_object(Bucket="inventory-bad", Key="manifest.json", Body=b"{}")
    with pytest.raises(InputError, match=r"is not an S3 Inventory manifest\.json"):
        list(list_images("s3://inventory-bad/manifest.json"))


def test_unsorted_manifest_is_sorted_through_disk_and_duplicates_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sorted_runs, "RUN_ROWS", 7)  # several sorted runs spilled and merged
    names = [f"{i:03d}.jpg" for i in range(40)]
    shuffled = names + names[:5]
    random.Random(3).shuffle(shuffled)
    manifest = tmp_path / "images.txt"
    manifest.write_text("\n".join(shuffled) + "\n")
    assert list(list_uris(str(manifest))) == [str(tmp_path / name) for name in names]
