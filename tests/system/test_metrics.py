"""The job report in OUTPUT/_job.json (errors by kind, stage times, nodes) and the Ray metrics a
Prometheus scrape of the node's metrics agent sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from facesweep.workers.errors import ErrorKind, internal_failure, take_tracebacks
from facesweep.workers.inputs.images import ImageError, decode_image
from facesweep.workers.job.metrics import error_kinds
from infra.demo import sample_photos


def image_error(data: bytes) -> ImageError:
    with pytest.raises(ImageError) as caught:
        decode_image(data)
    return caught.value


def test_error_kinds_are_typed_values_carried_with_the_result() -> None:
    png = sample_photos()[0][1].read_bytes()
    errors = [image_error(b""), image_error(b"not an image at all"), image_error(png[: len(png) // 2])]
    errors.append(image_error(png[:8] + b"\x00" * 64))
    assert [(str(e), e.kind) for e in errors] == [
        ("empty file", ErrorKind.NOT_AN_IMAGE),
        ("not an image (unrecognised format)", ErrorKind.NOT_AN_IMAGE),
        ("truncated PNG", ErrorKind.TRUNCATED),
        ("corrupt PNG (no IHDR)", ErrorKind.CORRUPT),
    ]
    try:
        np.zeros(3).reshape(2, 2)
    except ValueError as error:
        bug = internal_failure("face decoding", error)
    assert bug.kind == ErrorKind.INTERNAL and bug.message.startswith("face decoding failed: ValueError")
    traceback = take_tracebacks()["face decoding"]
    assert "Traceback" in traceback and "reshape" in traceback and take_tracebacks() == {}
    kinds = [e.kind for e in errors] + [ErrorKind.FETCH, bug.kind, None]
    assert error_kinds(pa.array(kinds, pa.string())) == {
        "not_an_image": 2,
        "truncated": 1,
        "corrupt": 1,
        "fetch": 1,
        "internal": 1,
    }
    assert error_kinds(pa.chunked_array([pa.array([None, None], pa.string())])) == {}


# A fresh Ray (the session's ray_local has no metrics port) with its metrics agent on a known port and a
# short report interval; the job runs on it, then the agent's Prometheus endpoint is read as a scraper would.
METRICS_JOB = """
import json, re, socket, sys, time, urllib.request
import ray
from facesweep.workers.model.plan import DetectorSettings
from facesweep.workers.job.driver import JobConfig, run_job

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
         _metrics_export_port=port, object_store_memory=100 * 1024 * 1024, logging_level="WARNING")
settings = DetectorSettings(model="retinaface-mnet025")
run_job(JobConfig(sys.argv[1], sys.argv[2], settings, 1, 1.0, shard_size=4))
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    if re.search(r"^ray_facesweep_shards_total{.*} 2.0$", text, re.MULTILINE):  # both shards exported
        break
    time.sleep(1)
print(json.dumps(text))
ray.shutdown()
"""


def samples(text: str, name: str) -> dict[str, float]:
    """`name`'s samples in Prometheus text: the `kind`/`stage` label (or "") -> value, summed over workers."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            tags = dict(part.split("=", 1) for part in labels.split(",") if "=" in part)
            key = tags.get("kind", tags.get("stage", "")).strip('"')
            values[key] = values.get(key, 0.0) + float(value)
    return values


@pytest.mark.slow
def test_job_report_and_prometheus_metrics(tmp_path: Path) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    originals = [path for _, path in sample_photos()][:6]
    for path in originals:
        (photos / path.name).write_bytes(path.read_bytes())
    (photos / "junk.jpg").write_bytes(b"junk")
    (photos / "cut.jpg").write_bytes(originals[0].read_bytes()[:3000])
    output = tmp_path / "out"
    env = {**os.environ, "RAY_metrics_report_interval_ms": "500"}
    job = subprocess.run(
        [sys.executable, "-c", METRICS_JOB, str(photos), str(output)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # where its Ray runs: not the checkout
        timeout=240,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    prometheus = json.loads(job.stdout.strip().splitlines()[-1])

    report = json.loads((output / "_job.json").read_text())["this_run"]
    assert (report["images"], report["errors"]) == (8, 2)
    assert report["errors_by_kind"] == {"not_an_image": 1, "truncated": 1}
    assert report["shards"] == 2 and report["device"] == "CPU"
    [node] = report["nodes"].values()
    assert node == {
        "ip": "127.0.0.1",
        "actors": 1,
        "shards": 2,
        "images": 8,
        "versions": [version("facesweep")],
    }
    assert set(report["stage_ms_per_image"]) >= {"fetch", "decode", "infer", "write"}
    assert report["stage_ms_per_image"]["infer"] > 0
    # the actor's process CPU covers at least what its threads spent in the stages measured as CPU time
    # (infer is the requests' latency, run in OpenVINO's threads)
    thread_stages = sum(v for k, v in report["stage_seconds"].items() if k != "infer")
    assert report["actor_cpu_seconds"] >= thread_stages > 0
    assert report["actor_cpu_ms_per_image"] == pytest.approx(1000 * report["actor_cpu_seconds"] / 8, abs=0.1)

    assert samples(prometheus, "ray_facesweep_images_total") == {"": 8.0}
    assert samples(prometheus, "ray_facesweep_faces_total") == {"": float(report["faces"])}
    assert samples(prometheus, "ray_facesweep_shards_total") == {"": 2.0}
    assert samples(prometheus, "ray_facesweep_errors_total") == {"not_an_image": 1.0, "truncated": 1.0}
    stages = samples(prometheus, "ray_facesweep_stage_seconds_count")
    assert stages.keys() == report["stage_seconds"].keys() and set(stages.values()) == {2.0}
