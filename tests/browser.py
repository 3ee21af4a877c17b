"""Headless Chromium (Debian's package, `make browser`) for the tests of the HTML report."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium")


def chromium(page: Path, *args: str, cwd: Path) -> str:
    """Runs headless Chromium on `page` with a fresh profile, nothing reached but the file; its stdout."""
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={cwd / 'profile'}",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
