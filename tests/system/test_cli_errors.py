"""Bad input gets one clear line on stderr and a non-zero exit, before any work starts."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from facesweep.workers.storage import StorageError
from facesweep.workers.storage.s3 import _check_reachable
from infra.demo import sample_photos
from infra.local_s3 import LocalS3
from tests.paths import MODELS


def facesweep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facesweep.cli", "run", *args], capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("facesweep: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("one-photo")
    (folder / "astronaut.png").write_bytes(dict(sample_photos())["skimage/astronaut.png"].read_bytes())
    return folder


def test_missing_bucket(s3_env: LocalS3, tmp_path: Path) -> None:
    result = facesweep("s3://no-such-bucket/photos", str(tmp_path / "out"))
    assert_one_line_error(result, "bucket 'no-such-bucket' does not exist")


def test_empty_prefix(s3_env: LocalS3, tmp_path: Path) -> None:
    s3_env.client().create_bucket(Bucket="cli-empty")
    s3_env.client().put_object(Bucket="cli-empty", Key="elsewhere/a.jpg", Body=b"x")
    result = facesweep("s3://cli-empty/photos", str(tmp_path / "out"))
    assert_one_line_error(result, "no images found in s3://cli-empty/photos")


def test_missing_model_file(photo: Path, tmp_path: Path) -> None:
    result = facesweep(str(photo), str(tmp_path / "out"), "--model", str(tmp_path / "nope.xml"))
    assert_one_line_error(result, "model not found", "nope.xml")


def test_model_without_weights_beside_it(photo: Path, tmp_path: Path) -> None:
    (tmp_path / "lonely.xml").write_text("<net/>")
    result = facesweep(str(photo), str(tmp_path / "out"), "--model", str(tmp_path / "lonely.xml"))
    assert_one_line_error(result, "lonely.xml", "lonely.bin")


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("notes.onnx", b"not a model at all", "the file is not an ONNX model"),
        ("broken.onnx", None, "Model can't be parsed"),  # an ONNX model's first 5,000 bytes
        ("page.xml", b"<html><body>404</body></html>", "the file is not an OpenVINO IR"),
    ],
)
def test_a_file_that_is_no_model_says_why_in_one_line(
    photo: Path, tmp_path: Path, name: str, data: bytes | None, reason: str
) -> None:
    model = tmp_path / name
    model.write_bytes(
        data if data is not None else (MODELS / "centerface/centerface.onnx").read_bytes()[:5000]
    )
    model.with_suffix(".bin").write_bytes(b"")
    result = facesweep(str(photo), str(tmp_path / "out"), "--model", str(model))
    assert_one_line_error(result, f"cannot read model {model}: {reason}")  # and nothing else on stderr


def test_output_under_a_file_is_not_writable(photo: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = facesweep(str(photo), str(tmp_path / "a-file" / "out"))
    assert_one_line_error(result, "cannot write", "a-file")


def test_output_bucket_missing(s3_env: LocalS3, photo: Path) -> None:
    result = facesweep(str(photo), "s3://no-output-bucket/run")
    assert_one_line_error(result, "bucket 'no-output-bucket' does not exist")


def test_input_that_does_not_exist(tmp_path: Path) -> None:
    result = facesweep(str(tmp_path / "missing"), str(tmp_path / "out"))
    assert_one_line_error(result, "does not exist", "missing")


def mystery_model(folder: Path) -> Path:
    """A real OpenVINO IR whose one output ([1, 3] channel means) is no face detector's."""
    import openvino as ov
    import openvino.opset13 as ops

    image = ops.parameter([1, 3, 64, 64], np.float32, name="image")
    means = ops.reduce_mean(image, np.array([2, 3]), keep_dims=False)
    means.output(0).get_tensor().set_names({"mystery_scores"})
    path = folder / "mystery.xml"
    ov.save_model(ov.Model([means], [image], "mystery"), path)
    return path


def test_model_with_unknown_outputs_fails_before_any_image_is_read(tmp_path: Path) -> None:
    # INPUT does not exist: the error must be about the model, so the model was checked first.
    result = facesweep(
        str(tmp_path / "no-input"), str(tmp_path / "out"), "--model", str(mystery_model(tmp_path))
    )
    assert_one_line_error(result, "mystery.xml", "mystery_scores [1, 3]", "match no known format")
    assert not (tmp_path / "out").exists()


def test_forced_format_that_does_not_fit(photo: Path, tmp_path: Path) -> None:
    result = facesweep(str(photo), str(tmp_path / "out"), "--format", "centerface")
    assert_one_line_error(result, "retinaface-mnet025", "not of format 'centerface'")


def test_too_many_error_rows_exit_1_and_the_summary_says_how_to_find_them(
    photo: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "astronaut.png").write_bytes((photo / "astronaut.png").read_bytes())
    (folder / "empty.jpg").write_bytes(b"")  # one image of two is an error row: 50%
    options = ("--actors", "1", "--cpus-per-actor", "1")
    failed = facesweep(str(folder), str(tmp_path / "strict"), *options)
    assert failed.returncode == 1, failed.stderr
    assert "more than --max-error-rate 0.1" in failed.stderr.strip().splitlines()[-1]
    assert "errors by kind: not_an_image 1\n" in failed.stdout
    [command] = re.findall(r"^error rows: (.+)$", failed.stdout, re.M)  # run as printed
    assert command == f"facesweep errors {tmp_path / 'strict'}"
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # where the project installs `facesweep`
    listed = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, env={**os.environ, "PATH": path}
    )
    assert listed.returncode == 0, listed.stderr
    [header, row] = listed.stdout.splitlines()
    assert header == "uri\terror_kind\terror" and row.startswith(f"{folder / 'empty.jpg'}\tnot_an_image\t")
    tolerated = facesweep(str(folder), str(tmp_path / "lenient"), *options, "--max-error-rate", "0.5")
    assert tolerated.returncode == 0, tolerated.stderr
    lines = tolerated.stdout.strip().splitlines()
    assert f"next: facesweep show {tmp_path / 'lenient'}" in tolerated.stdout
    short = [line.replace(str(tmp_path / "lenient"), "OUT") for line in lines]
    assert len(lines) <= 8 and all(len(line) <= 100 for line in short), short  # fits a terminal


def test_actors_that_cannot_be_placed_are_refused_at_once(photo: Path, tmp_path: Path) -> None:
    """A local Ray of this machine's 2 CPUs: asking for more says so in one line instead of waiting."""
    big = facesweep(str(photo), str(tmp_path / "a"), "--cpus-per-actor", "64")
    assert big.returncode == 1, big.stderr
    assert (
        big.stderr.strip()
        .splitlines()[-1]
        .startswith("facesweep: error: --cpus-per-actor 64: no node has that many CPUs (the largest has")
    )
    many = facesweep(str(photo), str(tmp_path / "b"), "--actors", "64", "--cpus-per-actor", "1")
    assert many.returncode == 1, many.stderr
    last = many.stderr.strip().splitlines()[-1]
    assert last.startswith("facesweep: error: 64 actors x 1 CPU do not fit: the cluster has"), last
    assert "facesweep: starting a local Ray" in many.stderr
    assert not (tmp_path / "b" / "_job.json").exists(), "a job that processed nothing writes nothing"
    other = facesweep(str(photo), str(tmp_path / "b"), "--actors", "1", "--cpus-per-actor", "1", "--tile")
    assert other.returncode == 0, other.stderr  # the same OUTPUT takes another job: no identity held it


def test_ctrl_c_stops_the_job_and_says_how_to_resume(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    photos = [path for _, path in sample_photos()]
    for i in range(24):
        (folder / f"{i:02d}-{photos[i % len(photos)].name}").write_bytes(photos[i % len(photos)].read_bytes())
    command = [
        sys.executable,
        "-m",
        "facesweep.cli",
        "run",
        str(folder),
        str(tmp_path / "out"),
        "--shard-size=1",
    ]
    job = subprocess.Popen(
        [*command, "--actors=1", "--cpus-per-actor=1"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        # a suite started as a background job of a shell inherits SIGINT ignored, and Python then sets
        # no KeyboardInterrupt handler: the job gets Ctrl-C's default, as at a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in job.stderr:
        if line.startswith("shard "):
            break
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 130, err
    said = re.search(r"^interrupted: (\d+) images? committed; re-run the same command to resume$", err, re.M)
    assert said, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "(raylet)" not in err
    out = tmp_path / "out"
    committed = pq.ParquetDataset(sorted(out.rglob("*.parquet"))).read().column("uri").to_pylist()
    assert int(said.group(1)) == len(committed) > 0, "the count is what OUTPUT holds, not what was reported"
    assert json.loads((out / "_job.json").read_text())["images"] == len(committed)
    assert not list(out.glob("part-*.parquet")), "interrupted before the job's one compaction"

    # Only what was committed left in INPUT: the re-run has no image to detect, only the shards to merge.
    for photo in folder.iterdir():
        if str(photo) not in committed:
            photo.unlink()
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"nothing new to detect: merged {len(committed)} shard file"), again.stdout
    assert "starting a local Ray" not in again.stderr, "compaction alone starts no Ray"
    assert pq.read_table(out / "part-000000.parquet").num_rows == len(committed)
    assert not (out / "_shards").exists(), "the emptied _shards folder is removed"


def test_bad_flags_get_one_line_and_exit_1(photo: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    for args, fragment in (
        (("--score-threshold", "2"), "argument --score-threshold: must be between 0 and 1, got 2.0"),
        (("--shard-size", "0"), "argument --shard-size: must be at least 1, got 0"),
        (("--actors", "0"), "argument --actors: must be at least 1, got 0"),
        (("--scor", "0.3"), "unrecognized arguments: --scor 0.3"),  # abbreviations are not guessed
        (("--score-treshold", "0.3"), "--score-treshold 0.3 (did you mean --score-threshold?)"),
    ):
        assert_one_line_error(facesweep(str(photo), out, *args), fragment)
    assert not (tmp_path / "out").exists()
    shown = subprocess.run(
        [sys.executable, "-m", "facesweep.cli", "--version"], capture_output=True, text=True
    )
    assert shown.returncode == 0 and re.fullmatch(r"facesweep \d+\.\d+\.\d+\n", shown.stdout)


def test_output_that_is_a_file_or_inside_input_is_refused(photo: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    assert_one_line_error(facesweep(str(photo), str(tmp_path / "taken")), "is a file: give a directory")
    assert_one_line_error(facesweep(str(photo), str(photo / "detections")), "is inside INPUT")
    assert not (photo / "detections").exists()


def test_a_parquet_manifest_without_a_uri_column_is_refused(photo: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "images.parquet"
    pq.write_table(pa.table({"path": [str(photo / "astronaut.png")]}), manifest)
    for extra in ((), ("--dry-run",)):
        refused = facesweep(str(manifest), str(tmp_path / "out"), *extra)
        assert_one_line_error(refused, f"manifest {manifest} needs a 'uri' column (found: path)")
    assert not (tmp_path / "out").exists()


def test_a_tar_is_counted_as_a_container_and_a_lone_positional_beside_a_spec_is_input(
    photo: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "tars"
    folder.mkdir()
    with tarfile.open(folder / "000000.tar", "w") as tar:
        for i in range(3):
            tar.add(photo / "astronaut.png", arcname=f"{i:04d}.png")
    planned = facesweep(str(folder), str(tmp_path / "out"), "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "listed: 0 images and 1 container piece; already done: 0; new: 0 images and 1 container piece" in (
        planned.stdout
    )
    spec = tmp_path / "job.yaml"
    spec.write_text(f"input: {photo}\noutput: {tmp_path / 'spec-out'}\n")
    noted = facesweep("--config", str(spec), str(folder), "--dry-run")
    assert noted.returncode == 0, noted.stderr
    assert f"note: {folder} is taken as INPUT (OUTPUT from {spec}); to override OUTPUT, give both" in (
        noted.stderr
    )
    assert "listed: 0 images and 1 container piece" in noted.stdout


def test_s3_without_credentials_or_a_store_says_which_variables_to_set(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = facesweep(str(photo), "s3://bucket/out")
    assert_one_line_error(result, "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    with socket.socket() as closed:  # a loopback port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    result = facesweep(str(photo), "s3://bucket/out")
    assert_one_line_error(
        result, f"cannot reach the S3 endpoint http://127.0.0.1:{port}", "check AWS_ENDPOINT_URL"
    )
    # What makes that answer fast (the data client's ten retries with backoff took 28 s): one probe
    # request, sent once, with a connect timeout of seconds. Each try is one `before-send` event.
    session = boto3.session.Session()
    tries: list[str] = []
    configs: list[Config] = []
    session.events.register("before-send.s3.ListBuckets", lambda request, **_: tries.append(request.url))
    session.events.register(
        "before-call.s3.ListBuckets", lambda context, **_: configs.append(context["client_config"])
    )
    retrying = session.client("s3", config=Config(retries={"mode": "standard", "total_max_attempts": 2}))
    with pytest.raises(EndpointConnectionError):
        retrying.list_buckets()
    assert len(tries) == 2  # the events see every try
    tries.clear()
    configs.clear()
    with pytest.raises(StorageError, match=f"cannot reach the S3 endpoint http://127.0.0.1:{port}"):
        _check_reachable(session, f"http://127.0.0.1:{port}")
    assert len(tries) == 1 and tries[0].startswith(f"http://127.0.0.1:{port}")
    assert len(configs) == 1 and configs[0].connect_timeout <= 5


def test_ground_truth_that_pairs_with_no_input_image_is_refused_before_the_job(
    photo: Path, tmp_path: Path
) -> None:
    truth = tmp_path / "wider_face_val_bbx_gt.txt"
    truth.write_text("0--Parade/0_Parade_marchingband_1_465.jpg\n1\n345 211 4 4 2 0 0 0 2 0 \n")
    result = facesweep(str(photo), str(tmp_path / "out"), "--ground-truth", str(truth))
    assert_one_line_error(
        result, f"--ground-truth {truth}: none of its 1 images pairs with an image of INPUT", "astronaut.png"
    )
    assert not (tmp_path / "out").exists()
    missing = facesweep(str(photo), str(tmp_path / "out"), "--ground-truth", str(tmp_path / "nothing.txt"))
    assert_one_line_error(missing, "nothing.txt")
    assert not (tmp_path / "out").exists()
