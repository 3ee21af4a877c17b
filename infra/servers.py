"""What the local servers the tests and the demo start (SeaweedFS's S3, Azurite) have in common: one child
process on loopback that is stopped on exit (SIGTERM, then SIGKILL) and never left behind, its log's
tail for error messages, and a foreground command that prints the `export` lines until Ctrl-C."""

from __future__ import annotations

import atexit
import contextlib
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

LOG_TAIL_LINES = 10
STOP_TIMEOUT_S = 10.0


def log_tail(path: Path, start: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """The last non-empty lines of the log from byte offset `start` on, joined into one line."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail) if tail else "(log empty)"


class LocalServer:
    """A running server process; a context manager that stops it on exit. Subclasses set
    `endpoint_url`, give `env()` and may clean up after the process in `_after_stop`."""

    endpoint_url: str

    def __init__(
        self, process: subprocess.Popen[bytes], data_dir: Path, log_path: Path, log_start: int = 0
    ) -> None:
        self._process = process
        self.data_dir = data_dir
        self.log_path = log_path
        self._log_start = log_start
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines this server wrote to its log, joined into one line."""
        return log_tail(self.log_path, self._log_start, lines)

    def env(self) -> dict[str, str]:
        """The environment variables that point clients at this server."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server: SIGTERM, wait up to 10 s, then SIGKILL. Safe to call more than once."""
        _LIVE.discard(self)
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
                self._process.wait()
        self._after_stop()

    def _after_stop(self) -> None:
        """What to remove once the process is gone."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        name = type(self).__name__
        return f"{name}({self.endpoint_url}, pid={self.pid}, {state}, data_dir={str(self.data_dir)!r})"


_LIVE: set[LocalServer] = set()


@atexit.register
def _stop_all() -> None:
    """Do not leave servers behind when the interpreter exits normally."""
    for server in list(_LIVE):
        server.stop()


def serve(name: str, start: Callable[[], LocalServer], errors: tuple[type[Exception], ...]) -> int:
    """Runs the server `start` starts in the foreground: prints its `export` lines, stops on Ctrl-C or
    SIGTERM (also when started with SIGINT ignored); the exit status."""

    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server = start()
    except KeyboardInterrupt:
        return 130
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with server:
        for variable, value in server.env().items():
            print(f"export {variable}={shlex.quote(value)}")
        print(
            f"# {name} ready at {server.endpoint_url} (pid {server.pid}, log {server.log_path}); "
            "Ctrl-C to stop",
            flush=True,
        )
        try:
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        else:
            print(f"error: server exited; last log lines: {server.log_tail()}", file=sys.stderr)
            return 1
    print(f"# {name} stopped", file=sys.stderr)
    return 0
