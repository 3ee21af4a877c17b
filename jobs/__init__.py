"""`import facesweep`: the public Python API (`facesweep/api.py`, from the repository's `jobs/`).

The names load on first use, so `import facesweep.cli` (and `show`, `export`, `eval`, `--help`) never
pays for Ray or OpenVINO."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facesweep.api import (
        SCHEMA,
        ConfigError,
        FaceDetector,
        ImageResult,
        JobFailedError,
        JobProgress,
        UserError,
        job_config,
        run,
    )

__all__ = [
    "SCHEMA",
    "ConfigError",
    "FaceDetector",
    "ImageResult",
    "JobFailedError",
    "JobProgress",
    "UserError",
    "job_config",
    "run",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("facesweep.api"), name)
    raise AttributeError(f"module 'facesweep' has no attribute {name!r}")
