"""Tests for infra.local_s3 against a real SeaweedFS server (no mocks)."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from infra import local_s3 as local_s3_module
from infra.local_s3 import LocalS3, LocalS3Error, S3Credentials, start_local_s3
from tests.paths import ROOT

REFUSED_CODES = {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId"}


def _bucket() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _descendants(pid: int) -> set[int]:
    """``pid`` and every process below it."""
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:  # thread gone, or a kernel without CONFIG_PROC_CHILDREN
                continue
            todo.extend(int(child) for child in children if int(child) not in found)
    return found


def _decode_address(hex_addr: str) -> str:
    """An address from /proc/net/{tcp,udp}[6] (groups of 4 bytes in host = little-endian order)."""
    raw = bytes.fromhex(hex_addr)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw))


def _bound_inet_sockets(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, address, port) of each listening TCP and each UDP socket of ``pid`` and its children."""
    inodes: set[str] = set()
    for proc in _descendants(pid):
        for fd in Path(f"/proc/{proc}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode not in inodes or (proto.startswith("tcp") and state != "0A"):  # 0A = LISTEN
                continue
            addr, port = local.split(":")
            found.append((proto, _decode_address(addr), int(port, 16)))
    return found


def _port_closed(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _weed_processes_for(data_dir: Path) -> list[int]:
    """Pids of live processes whose command line names ``data_dir`` as weed's -dir."""
    needle = f"-dir={data_dir}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "cmdline").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_put_get_round_trip(local_s3: LocalS3) -> None:
    client = local_s3.client()
    bucket = _bucket()
    client.create_bucket(Bucket=bucket)
    small = b"\x00\xffhello\n" + os.urandom(1000)
    large = os.urandom(5 * 1024 * 1024 + 17)  # above the filer's 4 MiB chunk size
    client.put_object(Bucket=bucket, Key="dir/small.bin", Body=small)
    client.put_object(Bucket=bucket, Key="large.bin", Body=large)
    assert client.get_object(Bucket=bucket, Key="dir/small.bin")["Body"].read() == small
    assert client.get_object(Bucket=bucket, Key="large.bin")["Body"].read() == large
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    sizes = {obj["Key"]: obj["Size"] for obj in listed}
    assert sizes == {"dir/small.bin": len(small), "large.bin": len(large)}


def test_readiness_probe_leaves_no_bucket(local_s3: LocalS3) -> None:
    names = [b["Name"] for b in local_s3.client().list_buckets()["Buckets"]]
    assert local_s3_module._PROBE_BUCKET not in names


def test_env_points_default_boto3_client_at_server(s3_env: LocalS3) -> None:
    env = s3_env.env()
    assert env["AWS_ENDPOINT_URL"] == s3_env.endpoint_url
    assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"] == "us-east-1"
    assert os.environ["AWS_ACCESS_KEY_ID"] == s3_env.credentials.access_key
    client = boto3.client("s3")  # everything from the environment
    bucket = _bucket()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="k", Body=b"via env")
    assert s3_env.client().get_object(Bucket=bucket, Key="k")["Body"].read() == b"via env"


@pytest.mark.parametrize("which", ["wrong secret", "unknown key", "unsigned"])
def test_bad_credentials_are_refused(local_s3: LocalS3, which: str) -> None:
    bucket = _bucket()
    local_s3.client().create_bucket(Bucket=bucket)
    good = local_s3.credentials
    kwargs: dict[str, object] = {"endpoint_url": local_s3.endpoint_url, "region_name": "us-east-1"}
    if which == "wrong secret":
        kwargs |= {"aws_access_key_id": good.access_key, "aws_secret_access_key": good.secret_key + "x"}
    elif which == "unknown key":
        kwargs |= {"aws_access_key_id": "AKIANOTAREALKEY00000", "aws_secret_access_key": good.secret_key}
    else:
        kwargs["config"] = Config(signature_version=UNSIGNED)
    bad = boto3.client("s3", **kwargs)
    with pytest.raises(ClientError) as excinfo:
        bad.put_object(Bucket=bucket, Key="intruder", Body=b"x")
    assert excinfo.value.response["Error"]["Code"] in REFUSED_CODES
    with pytest.raises(ClientError) as excinfo:
        bad.list_buckets()
    assert excinfo.value.response["Error"]["Code"] in REFUSED_CODES
    assert "Contents" not in local_s3.client().list_objects_v2(Bucket=bucket)


def test_listens_only_on_loopback_on_chosen_ports(local_s3: LocalS3) -> None:
    sockets = _bound_inet_sockets(local_s3.pid)
    assert sockets, "found no listening sockets for the weed process"
    assert {(proto, addr) for proto, addr, _ in sockets} == {("tcp", "127.0.0.1")}, sockets
    # Every listener is one we picked (nothing on a default port), and all ports are below 50000.
    assert sorted(port for _, _, port in sockets) == sorted(local_s3.ports.values())
    assert max(local_s3.ports.values()) < 50000
    assert local_s3.endpoint_url == f"http://127.0.0.1:{local_s3.ports['s3.port']}"


@pytest.mark.timeout(120)
def test_stop_ends_process_and_closes_ports(tmp_path: Path) -> None:
    credentials = S3Credentials("AKIALOCALTEST0000001", "local-test-secret")
    with start_local_s3(tmp_path / "data", credentials) as server:
        assert server.credentials == credentials
        assert server.running
        pid = server.pid
        ports = list(server.ports.values())
        assert not any(_port_closed(port) for port in ports)
        server.client().create_bucket(Bucket="kept")
        server.client().put_object(Bucket="kept", Key="k", Body=b"persisted")
        server.stop()
        assert not server.running
        assert not Path(f"/proc/{pid}").exists()
        assert all(_port_closed(port) for port in ports)
        server.stop()  # idempotent; __exit__ calls it a third time
    log = (tmp_path / "data" / "weed.log").read_text()
    assert "Starting SeaweedFS Mini" in log  # server output went to the log file
    # Same directory again: the data is still there.
    with start_local_s3(tmp_path / "data", credentials) as again:
        assert again.client().get_object(Bucket="kept", Key="k")["Body"].read() == b"persisted"


@pytest.mark.timeout(60)
def test_start_timeout_stops_server_and_reports_log(tmp_path: Path) -> None:
    data_dir = tmp_path / "slow"
    with pytest.raises(LocalS3Error) as excinfo:
        start_local_s3(data_dir, timeout_s=0.001)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "not ready after" in message and "last log lines:" in message
    assert _weed_processes_for(data_dir.resolve()) == []


def test_missing_binary_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(local_s3_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(local_s3_module.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(FileNotFoundError, match=r"SeaweedFS binary 'weed' not found: run `make setup`"):
        start_local_s3(tmp_path / "data")


def test_random_credentials_differ_and_hide_secret() -> None:
    first, second = S3Credentials.random(), S3Credentials.random()
    assert first != second
    assert len(first.access_key) == 20 and len(first.secret_key) == 40
    assert first.secret_key not in repr(first)


@pytest.mark.timeout(120)
def test_cli_prints_exports_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.local_s3", "--dir", str(tmp_path / "cli")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        env: dict[str, str] = {}
        weed_pid = None
        for line in proc.stdout:
            if match := re.fullmatch(r"export (AWS_[A-Z_]+)=(\S+)\n", line):
                env[match[1]] = match[2]
            elif line.startswith("# local S3 ready"):
                weed_pid = int(re.search(r"pid (\d+)", line)[1])  # type: ignore[index]
                break
        assert weed_pid is not None, proc.stderr.read() if proc.stderr else ""
        assert set(env) == {
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_REGION",
        }
        client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )
        client.create_bucket(Bucket="from-cli")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not Path(f"/proc/{weed_pid}").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(120)
def test_port_taken_before_weed_binds_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pick = local_s3_module._pick_ports
    calls: list[dict[str, int]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()

        def pick_with_one_taken() -> dict[str, int]:
            ports = pick()
            if not calls:
                ports["filer.port"] = blocker.getsockname()[1]
            calls.append(ports)
            return ports

        monkeypatch.setattr(local_s3_module, "_pick_ports", pick_with_one_taken)
        with start_local_s3(tmp_path / "data") as server:
            assert len(calls) == 2
            assert server.ports == calls[1]
            server.client().list_buckets()


def test_port_always_taken_fails_with_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pick = local_s3_module._pick_ports
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        monkeypatch.setattr(
            local_s3_module, "_pick_ports", lambda: pick() | {"filer.port": blocker.getsockname()[1]}
        )
        with pytest.raises(LocalS3Error, match=r"exited with code \d+ before S3 was ready.*last log lines: "):
            start_local_s3(tmp_path / "data")
    assert _weed_processes_for((tmp_path / "data").resolve()) == []
