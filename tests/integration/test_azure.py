"""az:// against a real Azure Blob Storage (Azurite): the store's requests, counts and one-line errors, and a
real job from az:// INPUT to az:// OUTPUT that resumes and grows, read back through facesweep's reader.
Blobs are put with Azure's own SDK, as Azure's tools would put them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from facesweep.workers.config import DEFAULT_MODEL, DetectorSettings, JobConfig
from facesweep.workers.job.driver import run_job
from facesweep.workers.output.reader import read_output
from facesweep.workers.storage import (
    AzureStorage,
    MissingObjectError,
    StorageError,
    request_counts,
    storage_for,
)
from infra.azurite import Azurite
from tests.outputs import BROKEN, photo_folder


def upload(azurite: Azurite, container: str, files: dict[str, bytes]) -> None:
    """Puts `files` (by blob name) into `container`, creating it first when it is missing."""
    client = azurite.client()
    if not client.get_container_client(container).exists():
        client.create_container(container)
    for name, data in files.items():
        client.get_blob_client(container, name).upload_blob(data, overwrite=True)


def counted(before: dict[str, int]) -> dict[str, int]:
    """The requests this process made since `before`, by kind, leaving out kinds it made none of."""
    return {kind: n - before[kind] for kind, n in request_counts().items() if n != before[kind]}


def test_store_lists_reads_writes_and_deletes_with_each_request_counted(az_env: Azurite) -> None:
    upload(az_env, "store", {"in/b.jpg": b"bee", "in/sub/c.jpg": b"sea", "out.txt": b"x"})
    storage = storage_for("az://store/in/")
    assert isinstance(storage, AzureStorage)
    storage.make_folder("az://store/")  # the process's first request to Azurite (a probe) is behind us
    before = request_counts()
    storage.put("az://store/in/a b+c#1.jpg", b"written by facesweep")
    listed = list(storage.list_objects("az://store/in"))
    objects, folders = storage.list_level("az://store/in/")
    assert counted(before) == {"PUT": 1, "LIST": 2}
    names = ["a b+c#1.jpg", "b.jpg", "sub/c.jpg"]
    assert [o.uri for o in listed] == [f"az://store/in/{name}" for name in names]
    assert [o.uri for o in objects] == [o.uri for o in listed[:2]] and folders == ["az://store/in/sub/"]
    blob = az_env.client().get_blob_client("store", "in/b.jpg").get_blob_properties()
    assert listed[1].etag == blob.etag.strip('"') and listed[1].size == 3  # the version tag Azure gives

    before = request_counts()
    assert storage.head("az://store/in/b.jpg") == listed[1]  # the same tag as the listing's
    assert storage.get("az://store/in/a b+c#1.jpg") == b"written by facesweep"
    assert storage.get_range("az://store/in/sub/c.jpg", 1, 5) == b"ea"
    storage.delete(["az://store/in/b.jpg", "az://store/in/never-there.jpg", "az://store/out.txt"])
    assert counted(before) == {"HEAD": 1, "GET": 2, "DELETE": 1}  # one Blob Batch for the three
    assert not storage.exists("az://store/in/b.jpg") and not storage.exists("az://store/out.txt")
    with pytest.raises(MissingObjectError, match=r"^az://store/in/b\.jpg does not exist$"):
        storage.get("az://store/in/b.jpg")


def test_a_missing_container_names_it_and_what_to_do(az_env: Azurite) -> None:
    storage = storage_for("az://no-such-container/out/")
    message = r"^container 'no-such-container' does not exist \(az://no-such-container/{}\): create it or fix"
    with pytest.raises(StorageError, match=message.format("out/")):
        storage.make_folder("az://no-such-container/out/")
    with pytest.raises(StorageError, match=message.format("x.jpg")):
        storage.put("az://no-such-container/x.jpg", b"x")
    with pytest.raises(StorageError, match=r"^az:///x names no container: write az://CONTAINER/PREFIX$"):
        storage.get("az:///x")


def test_no_account_or_no_answer_fails_in_one_line(az_env: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port where nothing listens once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    nowhere = az_env.connection_string.replace(f":{az_env.port}/", f":{port}/")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", nowhere)
    with pytest.raises(
        StorageError, match=rf"^cannot reach Azure Blob Storage \(.*127\.0\.0\.1:{port}/.*\): check"
    ):
        AzureStorage().get("az://store/in/b.jpg")
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_USE_EMULATOR", raising=False)
    with pytest.raises(
        StorageError, match=r"^cannot use Azure Blob Storage \(.*\): set AZURE_STORAGE_CONNECTION"
    ):
        AzureStorage().get("az://store/in/b.jpg")


@pytest.mark.slow
def test_job_from_az_to_az_resumes_and_grows(ray_local: None, az_env: Azurite, tmp_path: Path) -> None:
    photos = photo_folder(tmp_path / "photos")
    files = {f"photos/{p.relative_to(photos)}": p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    upload(az_env, "job-in", files)
    upload(az_env, "job-out", {})
    config = JobConfig(
        input="az://job-in/photos/",
        output="az://job-out/run/",
        detector=DetectorSettings(model=DEFAULT_MODEL),
        actors=1,
        cpus_per_actor=1,
        shard_size=4,
    )
    expected = {f"az://job-in/{name}" for name in files}

    first = run_job(config)
    assert (first.images, first.errors, first.failed_shards) == (len(expected), 1, [])
    assert first.requests["GET"] >= len(expected)  # the actor fetched each image through az://, counted
    rows = {row["uri"]: row for row in read_output(config.output).to_pylist()}
    assert set(rows) == expected
    assert rows[f"az://job-in/photos/{BROKEN}"]["status"] == "error"
    assert len(rows["az://job-in/photos/skimage/astronaut.png"]["faces"]) >= 1
    assert all(row["status"] == "ok" for uri, row in rows.items() if not uri.endswith(BROKEN))

    again = run_job(config)  # the same command: nothing is redone
    assert again.already_complete and again.images == 0
    assert {row["uri"]: row for row in read_output(config.output).to_pylist()} == rows

    upload(az_env, "job-in", {"photos/new/astronaut.png": files["photos/skimage/astronaut.png"]})
    grown = run_job(config)  # only the new image is processed
    assert (grown.images, grown.resumed.images) == (1, len(expected))
    now = {row["uri"]: row for row in read_output(config.output).to_pylist()}
    new = now.pop("az://job-in/photos/new/astronaut.png")
    assert now == rows and new["faces"] == rows["az://job-in/photos/skimage/astronaut.png"]["faces"]
