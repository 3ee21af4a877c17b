"""Start and stop a real, local Azure Blob Storage (Azurite, Microsoft's emulator) for tests and demos.

The server is one child process (``azurite-blob``, installed by ``make setup`` into ``.cache/azurite``)
that listens on 127.0.0.1 only, on a free port picked at start, with telemetry off, in its own data folder
(a temporary one unless the caller gives one), and one storage account with a random key (Azurite's
well-known account is then off). "Ready" means a container create and a put succeed through Azure's own
SDK (not merely that the port answers).

Usage::

    with start_azurite() as azurite:
        azurite.client().create_container("photos")

or from a shell (prints an ``export AZURE_STORAGE_CONNECTION_STRING=...`` line to ``eval``; stops on
Ctrl-C/SIGTERM)::

    python -m infra.azurite
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from infra.servers import LocalServer, serve

__all__ = ["Azurite", "AzuriteError", "find_azurite", "start_azurite"]

HOST = "127.0.0.1"
ACCOUNT = "facesweep"
INSTALLED = (
    Path(__file__).resolve().parent.parent / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
)
"""Where `make setup` installs Azurite's blob server."""
LOG_NAME = "azurite.log"
_PROBE_CONTAINER = "azurite-ready-probe"
_START_ATTEMPTS = 3  # a picked port can be taken by someone else before Azurite binds it
_PORT_TAKEN = re.compile(r"EADDRINUSE", re.IGNORECASE)


class AzuriteError(RuntimeError):
    """Azurite failed to start or to become ready."""


def find_azurite() -> Path:
    """Path of Azurite's ``azurite-blob``: the one `make setup` installs, else on PATH."""
    if INSTALLED.is_file():
        return INSTALLED
    found = shutil.which("azurite-blob")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "Azurite's azurite-blob not found: run `make setup` (installs it into .cache/azurite)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Azurite(LocalServer):
    """A running Azurite blob server; a context manager that stops it on exit (and removes its data
    folder when it made one). Create it with :func:`start_azurite`."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, key: str, data_dir: Path) -> None:
        super().__init__(process, data_dir, data_dir / LOG_NAME)
        self.port = port
        self.account = ACCOUNT
        self.key = key
        self.remove_data = False
        """Whether stop() removes `data_dir` (a temporary folder start_azurite made)."""
        self.endpoint_url = f"http://{HOST}:{port}/{ACCOUNT}"
        """The blob endpoint (path-style: the account is the URL's first segment)."""

    @property
    def connection_string(self) -> str:
        """The account's connection string, as Azure's tools and SDKs take it."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
            f"BlobEndpoint={self.endpoint_url};"
        )

    def env(self) -> dict[str, str]:
        """The environment variable that points Azure's tools (and facesweep's az://) at this server."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def client(self, **options: Any) -> Any:
        """An azure-storage-blob BlobServiceClient for this server."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string, **options)

    def _after_stop(self) -> None:
        if self.remove_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _probe(server: Azurite) -> None:
    """Create a container, put a blob, drop the container: raises until the server can."""
    from azure.core.exceptions import ResourceExistsError

    client = server.client(retry_total=0, connection_timeout=2, read_timeout=5)
    with contextlib.suppress(ResourceExistsError):
        client.create_container(_PROBE_CONTAINER)
    client.get_blob_client(_PROBE_CONTAINER, "probe").upload_blob(b"ok", overwrite=True)
    client.delete_container(_PROBE_CONTAINER)


def _launch(azurite: Path, data_dir: Path, key: str) -> Azurite:
    port = _free_port()
    cmd = [
        str(azurite),
        *("--blobHost", HOST, "--blobPort", str(port), "--location", str(data_dir)),
        *("--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"),
    ]
    env = {**os.environ, "AZURITE_ACCOUNTS": f"{ACCOUNT}:{key}"}
    with (data_dir / LOG_NAME).open("wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir, env=env
        )
    return Azurite(process, port, key, data_dir)


def start_azurite(data_dir: Path | None = None, timeout_s: float = 60.0) -> Azurite:
    """Start Azurite's blob server on loopback and wait until a container create and a put succeed.

    Data goes to ``data_dir``, else to a temporary folder removed when the server stops. Raises
    :class:`FileNotFoundError` if Azurite is not installed and :class:`AzuriteError` (server stopped,
    last log lines in the message) if it is not ready in ``timeout_s`` seconds or exits early.
    """
    azurite = find_azurite()
    temporary = data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="azurite-")) if temporary else Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = base64.b64encode(secrets.token_bytes(64)).decode()
    deadline = time.monotonic() + timeout_s
    try:
        for attempt in range(1, _START_ATTEMPTS + 1):
            server = _launch(azurite, data_dir, key)
            try:
                ready = _ready(server, attempt, timeout_s, deadline)
            except BaseException:
                server.stop()
                raise
            if ready:
                server.remove_data = temporary
                return server
            server.stop()
    except BaseException:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    raise AzuriteError(f"could not start Azurite in {_START_ATTEMPTS} attempts: its port kept being taken")


def _ready(server: Azurite, attempt: int, timeout_s: float, deadline: float) -> bool:
    """Waits until the server takes a container create and a put (True), or until it exited having lost
    its port to someone else (False: try again); raises when it fails otherwise or times out."""
    last_error = "no attempt made"
    while True:
        code = server._process.poll()
        if code is not None:
            tail = server.log_tail()
            if _PORT_TAKEN.search(tail) and attempt < _START_ATTEMPTS:
                return False
            raise AzuriteError(
                f"Azurite exited with code {code} before it was ready (data dir {server.data_dir}); "
                f"last log lines: {tail}"
            )
        try:
            _probe(server)
            return True
        except Exception as exc:  # not ready yet: connection refused, 5xx, ...
            last_error = f"container create + put failed: {type(exc).__name__}: {exc}".replace("\n", " ")
        if time.monotonic() >= deadline:
            raise AzuriteError(
                f"Azurite at {server.endpoint_url} not ready after {timeout_s:g}s ({last_error}); "
                f"last log lines: {server.log_tail()}"
            )
        time.sleep(0.25)


def main(argv: list[str] | None = None) -> int:
    """Run a server in the foreground, print the ``export`` line, stop on Ctrl-C/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.azurite",
        description="Run Azurite (Azure Blob Storage) on 127.0.0.1 until Ctrl-C; "
        "eval the printed line in another shell to use it.",
    )
    parser.add_argument("--dir", type=Path, help="data directory (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=60.0, help="start-up timeout in seconds")
    args = parser.parse_args(argv)

    return serve(
        "Azurite", lambda: start_azurite(args.dir, timeout_s=args.timeout), (AzuriteError, FileNotFoundError)
    )


if __name__ == "__main__":
    sys.exit(main())
