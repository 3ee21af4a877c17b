"""Credentials never leak into anything facesweep writes; output keys never come from input names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.demo import sample_photos
from infra.local_s3 import LocalS3


def test_credentials_never_written_and_keys_cannot_escape_output(
    local_s3: LocalS3, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    client = local_s3.client()
    client.create_bucket(Bucket="secure")
    photo = dict(sample_photos())["skimage/astronaut.png"]
    names = ["plain.png", "with space.png", "ünïcødé-顔.png"]
    for name in names:
        client.upload_file(str(photo), "secure", f"in/{name}")
    # S3 servers refuse keys with `..` segments; a manifest can still name such a path.
    (tmp_path / "deep").mkdir()
    (tmp_path / "escape.png").write_bytes(photo.read_bytes())
    dotted = f"{tmp_path}/deep/../../{tmp_path.name}/escape.png"
    manifest = "\n".join([*(f"s3://secure/in/{name}" for name in names), dotted])
    client.put_object(Bucket="secure", Key="manifest.txt", Body=manifest.encode())
    workdir = tmp_path_factory.mktemp("security-workdir")  # where facesweep and its Ray run
    result = subprocess.run(
        [sys.executable, "-m", "facesweep.cli", "run", "s3://secure/manifest.txt", "s3://secure/out"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **local_s3.env()},
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    assert "images: 4   faces: 4   errors: 0" in result.stdout
    written = sorted(o["Key"] for o in client.list_objects_v2(Bucket="secure")["Contents"])
    # Everything written is ours and below OUTPUT, named by shard number, whatever the input names were.
    inputs = [f"in/{name}" for name in names] + ["manifest.txt"]
    assert written == sorted([*inputs, "out/_job.json", "out/part-000000.parquet"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "escape.png"]
    assert not any(workdir.iterdir())
    secrets = [local_s3.credentials.access_key, local_s3.credentials.secret_key]
    blobs = [result.stdout.encode(), result.stderr.encode()]
    blobs += [
        client.get_object(Bucket="secure", Key=key)["Body"].read()
        for key in written
        if key.startswith("out/")
    ]
    for secret in secrets:
        assert all(secret.encode() not in blob for blob in blobs)
