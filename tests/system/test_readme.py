"""The README's commands run as written: each fenced block with `<!-- test: run -->` on the line before
its fence runs as a user would paste it from the checkout, `python` blocks with the project's Python and
`bash` blocks with `bash -e`, in a fresh folder that has the checkout's `.venv` and, beside it, `../shared`
(so `.venv/bin/facesweep` and `../shared/...` resolve as from the checkout, and nothing is written there).

Blocks without the mark, and why:
- Quick start's `make setup/demo/test`: a fresh setup, a SeaweedFS and the whole suite
  (`tests/system/test_demo.py` runs the demo);
- Installing's `python -m build` and `ray job submit`: a Ray cluster (`tests/system/test_cluster.py`);
- Running a job, the Python API's jobs (`facesweep.run`), Seeing the faces: S3 buckets and credentials;
- the `evaluate-wider.yaml` run: 145 photos at score threshold 0.02 in f32, longer than this test's
  time (`tests/integration/test_config.py` runs it on 6 of them);
- Evaluating accuracy's `facesweep eval OUTPUT ...`: OUTPUT stands for a job's output
  (`tests/integration/test_wider_ap.py`);
- the SQL queries: they read outputs named in them, `detections/` and `out/` (DuckDB's SQL is not a
  shell's; `facesweep errors`, which the local job runs, queries the error rows);
- blocks without a language: a run's output, the architecture map.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.paths import ROOT, SHARED

MARK = "<!-- test: run -->"
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>\S*)\s*$")
COMMANDS = {"python": [sys.executable], "bash": ["bash", "-e", "-o", "pipefail"]}
"""How each language's block runs: the block's file is the last argument."""
BLOCK_SECONDS = 240


@dataclass(frozen=True)
class Block:
    """A fenced block of the README: where it starts (1-based line of its fence), its language, its text."""

    line: int
    language: str
    code: str
    marked: bool


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown text, its lines dedented by its fence's indentation."""
    blocks, lines, start = [], text.splitlines(), None
    for number, line in enumerate(lines):
        fence = FENCE.match(line)
        if fence is None:
            continue
        if start is None:
            start, indent, language = number, len(fence["indent"]), fence["language"]
            continue
        code = "".join(f"{body[indent:]}\n" for body in lines[start + 1 : number])
        marked = start > 0 and lines[start - 1].strip() == MARK
        blocks.append(Block(start + 1, language, code, marked))
        start = None
    return blocks


RUNNABLE = [block for block in readme_blocks((ROOT / "README.md").read_text()) if block.marked]


def test_the_marked_blocks_are_the_examples_people_copy() -> None:
    """The mark is on the API's detector, the Ray Data stage and a local job with show, export and errors,
    and only on blocks this test knows how to run."""
    assert all(block.language in COMMANDS for block in RUNNABLE), RUNNABLE
    codes = [block.code for block in RUNNABLE]
    needles = ("detector.detect(", "map_batches(", "facesweep run ", "facesweep show ", "facesweep errors ")
    for needle in needles:
        assert any(needle in code for code in codes), f"no marked README block runs {needle!r}"


def run_block(block: Block, folder: Path) -> tuple[int | None, str]:
    """Runs `block` in `folder` as it would run from the checkout (`.venv` and `../shared` are there): its
    exit status, None when it ran past BLOCK_SECONDS (then it and every process it started are killed),
    and its output."""
    folder.mkdir()
    (folder / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    (folder.parent / "shared").symlink_to(SHARED, target_is_directory=True)
    script = folder.parent / f"readme-line-{block.line}.{block.language}"
    script.write_text(block.code)
    env = {**os.environ, "PATH": f"{Path(sys.prefix) / 'bin'}:{os.environ['PATH']}"}
    if block.language == "python":
        # Ray Data starts a local Ray of its own: a new one (not a cluster `ray start` left running), its
        # object store small.
        env.update(RAY_ADDRESS="local", RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES=str(256 * 1024 * 1024))
    log = folder.parent / "output.log"
    with (
        log.open("w") as output,
        subprocess.Popen(
            [*COMMANDS[block.language], str(script)],
            cwd=folder,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ) as process,
    ):
        try:
            status = process.wait(BLOCK_SECONDS)
        except subprocess.TimeoutExpired:
            kill_session(process.pid)
            status = None
    return status, log.read_text()


def kill_session(session: int) -> None:
    """SIGKILLs every process of `session`: a block's, with what it started (Ray's processes, which make
    process groups of their own, included)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == session:
                    os.kill(int(entry.name), signal.SIGKILL)


def check_outputs(folder: Path) -> None:
    """What the marked blocks leave behind, where they say they leave it."""
    if (folder / "faces-raydata").is_dir():  # the Ray Data stage: a row per photo of its folder, read
        rows = ds.dataset(folder / "faces-raydata", format="parquet").to_table().to_pylist()
        photos = {str(path) for path in Path(rows[0]["path"]).parent.glob("*.jpg")}
        assert sorted(row["path"] for row in rows) == sorted(photos)
        assert all(row["status"] == "ok" and row["faces"] for row in rows)
    if (folder / "faces").is_dir():  # the local job, its report and CSV
        assert (folder / "faces-report" / "report.html").is_file()
        assert (folder / "faces.csv").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[f"line-{block.line}" for block in RUNNABLE])
def test_a_marked_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    if "../shared" in block.code and not SHARED.is_dir():
        pytest.skip(f"README line {block.line} reads ../shared, which is not beside the checkout")
    folder = tmp_path / "checkout"
    status, output = run_block(block, folder)
    ended = f"ran past {BLOCK_SECONDS} s" if status is None else f"exited {status}"
    assert status == 0, f"README line {block.line} ({block.language}) {ended}:\n{output[-6000:]}"
    check_outputs(folder)
