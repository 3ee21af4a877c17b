"""The entry points that must start light (show, export, eval, --help, the dry run) import neither Ray nor
OpenVINO; the driver's module no OpenCV or OpenVINO. (The wheel itself: tests/system/test_install.py.)"""

from __future__ import annotations

import ast
import subprocess
import sys


def loaded(modules: str, heavy: tuple[str, ...]) -> list[str]:
    """Which of `heavy` a fresh interpreter has loaded after importing `modules`."""
    code = f"import sys, {modules}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(shown.stdout)


def test_the_cli_the_readers_and_the_dry_run_start_without_ray_or_openvino() -> None:
    modules = (
        "facesweep, facesweep.cli, facesweep.report, facesweep.export, facesweep.workers.job.preparation"
    )
    assert loaded(modules, ("ray", "openvino")) == []
    helped = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "facesweep.cli", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in helped.stderr.splitlines()}
    assert not {"ray", "openvino"} & imported


def test_the_driver_loads_no_model_runtime_until_a_job_runs() -> None:
    assert loaded("facesweep.workers.job.driver", ("cv2", "openvino")) == []
