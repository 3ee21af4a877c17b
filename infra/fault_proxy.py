"""A loopback HTTP proxy in front of an S3 store that makes a cloud store's weather, for the tests and the
benchmarks: latency, `503 SlowDown` and `500 InternalError` answers with S3's XML error bodies,
connections reset before a response or during its body, bodies cut short, responses that stall, and a
per-prefix request-rate limit answered with `503 SlowDown`, each at a rate you set (`Weather`).

Every request pays `latency_ms` once. The faults hit only the requests `Weather.aim` matches (a regular
expression over `METHOD /bucket/key?query`; by default the GETs of objects). Which request gets which
fault is drawn from the seed, the request (method, target, Range) and how many times it was asked before,
so the same requests get the same faults whatever their interleaving, and a retry draws again. The
proxy keeps one store connection per client connection and streams bodies both ways; an injected error,
reset or stall never reaches the store. `GET /_weather` (no S3 bucket is named `_weather`) answers the
weather and the counts of requests and injected faults as JSON. Listens on 127.0.0.1 only.

    python -m infra.fault_proxy --port 46000 --target 127.0.0.1:8333 --latency-ms 30 --slowdown 0.03
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

HOST = "127.0.0.1"
CHUNK = 256 * 1024
HEAD_LIMIT = 1024 * 1024
IDLE_REUSE_S = 4.0
"""A store connection idle longer than this is replaced before the next request, so the store's own
idle timeout never closes one under a request."""
RESET_PAUSE_S = 0.05
"""How long a response cut by a reset waits after its first bytes, so the client has read them."""
OBJECT_GETS = r"^GET /[^/?]+/[^?]"
"""`Weather.aim` for the GETs (whole and ranged) of objects: not listings, not bucket requests."""
FAULTS = ("reset_before", "slowdown", "internal", "stall", "reset_during", "cut_body")
"""The drawn faults, in the order their rates are laid out on [0, 1)."""
COUNTS = ("requests", "aimed", "rate_limited", *FAULTS)
_CHUNKED, _TO_EOF = -1, -2  # body framings beside a Content-Length
_SLOWDOWN = ("503 Slow Down", "SlowDown", "Please reduce your request rate.")
_ERRORS = {
    "slowdown": _SLOWDOWN,
    "rate_limited": _SLOWDOWN,
    "internal": (
        "500 Internal Server Error",
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
}
"""The S3 error answers the proxy makes: status, code and message."""


@dataclass(frozen=True)
class Weather:
    """What the proxy does to requests: each fault's rate is the share of aimed requests that get it (the
    rates add up to at most 1); `prefix_rate_limit` is requests per second per bucket and first key
    segment (a token bucket holding one second of them, 0: none), the excess answered `503 SlowDown`."""

    latency_ms: float = 0.0
    """Added to every request, aimed or not."""
    slowdown: float = 0.0
    """`503 SlowDown`, S3's XML error body."""
    internal: float = 0.0
    """`500 InternalError`, S3's XML error body."""
    reset_before: float = 0.0
    """The connection reset (RST) once the request is read, before any response."""
    reset_during: float = 0.0
    """The response's head and half its body sent, then the connection reset. Like `cut_body`, only for
    a body of at least 2 bytes with a Content-Length; other responses pass whole, uncounted."""
    cut_body: float = 0.0
    """The response's head and half the body its Content-Length promises sent, then the connection
    closed cleanly (FIN)."""
    stall: float = 0.0
    """The response held `stall_s` seconds before its first byte, then sent whole."""
    stall_s: float = 60.0
    prefix_rate_limit: float = 0.0
    aim: str = OBJECT_GETS
    seed: int = 0

    def __post_init__(self) -> None:
        rates = [getattr(self, fault) for fault in FAULTS]
        if any(rate < 0 for rate in rates) or sum(rates) > 1:
            raise ValueError(
                f"fault rates must be >= 0 and add up to at most 1: {dict(zip(FAULTS, rates, strict=True))}"
            )
        re.compile(self.aim)

    def __str__(self) -> str:
        changed = [f for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in changed) or "fair"


@dataclass
class _Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    head: bytes  # as it goes to the store

    @classmethod
    def parse(cls, head: bytes) -> _Request:
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = _headers(lines[1:])
        if headers.get("expect", "").lower() == "100-continue":  # the proxy answers it
            head = b"\r\n".join(
                line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:")
            )
        return cls(method, target, headers, head)

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


def _headers(lines: Iterable[str]) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in lines if line)
    return {name.strip().lower(): value.strip() for name, value in pairs}


def _body_length(headers: dict[str, str], unframed: int) -> int:
    """The framing of a body: its length, _CHUNKED, or `unframed` when the headers give none (a request:
    no body; a response: _TO_EOF)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _CHUNKED
    if "content-length" in headers:
        return int(headers["content-length"])
    return unframed


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, length: int) -> None:
    """Copies a body of `length` (or its framing) from `reader` to `writer` (None: reads it away)."""

    def write(data: bytes) -> None:
        if writer is not None:
            writer.write(data)

    if length == _CHUNKED:
        while True:
            line = await reader.readuntil(b"\r\n")
            write(line)
            size = int(line.split(b";")[0], 16)
            if size == 0:  # then trailers, up to an empty line
                while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                    write(line)
                write(line)
                break
            await _relay(reader, writer, size + 2)
    elif length == _TO_EOF:
        while data := await reader.read(CHUNK):
            write(data)
            if writer is not None:
                await writer.drain()
    else:
        while length > 0:
            data = await reader.read(min(CHUNK, length))
            if not data:
                raise asyncio.IncompleteReadError(b"", length)
            length -= len(data)
            write(data)
            if writer is not None:
                await writer.drain()
    if writer is not None:
        await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes the connection with a TCP RST, as a store or a load balancer dropping it does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Store:
    """One connection to the store, opened when a request needs it, replaced when it idled too long."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.used = 0.0

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.streams is not None and time.monotonic() - self.used > IDLE_REUSE_S:
            self.close()
        if self.streams is None:
            self.streams = await asyncio.open_connection(*self.target, limit=HEAD_LIMIT)
        return self.streams

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].transport.abort()
            self.streams = None


class FaultProxy:
    """The proxy in front of the store at `target` (`http://HOST:PORT` or `HOST:PORT`, on loopback),
    listening on `port` (0: a free one). A context manager that serves from a background thread; `run()`
    serves in the calling thread. `weather` can be changed at any time; `counts()` says what was done."""

    def __init__(self, target: str, weather: Weather = Weather(), port: int = 0) -> None:
        host, _, port_text = urlsplit(target if "://" in target else f"http://{target}").netloc.rpartition(
            ":"
        )
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"fault_proxy: the target must be on the loopback interface, not {target}")
        self.target = (host, int(port_text))
        self.weather = weather
        self.port = port
        self._counts: Counter[str]
        self._seen: Counter[str]  # aimed requests by identity, for the draws
        self._tokens: dict[str, tuple[float, float]]  # prefix -> (tokens, when)
        self.reset()
        self._listening = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def counts(self) -> dict[str, int]:
        """Requests seen, aimed, and each injected fault (`rate_limited`: the rate limit's 503s)."""
        return dict(self._counts)

    def reset(self) -> None:
        """Counts from zero, and draws and token buckets as new: the same requests get the same faults
        again."""
        self._counts, self._seen, self._tokens = Counter(dict.fromkeys(COUNTS, 0)), Counter(), {}

    def run(self) -> None:
        """Serves until `stop()` (from another thread)."""
        asyncio.run(self._serve())

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self.run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._listening.wait(10):
            raise RuntimeError("fault_proxy did not start listening within 10 s")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        connections: set[asyncio.Task] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            connections.add(task)
            try:
                await self._connection(reader, writer)
            except asyncio.CancelledError:
                pass  # the proxy stops: its task ends here, quietly
            finally:
                connections.discard(task)

        server = await asyncio.start_server(handle, HOST, self.port, backlog=1024, limit=HEAD_LIMIT)
        self.port = server.sockets[0].getsockname()[1]
        self._listening.set()
        async with server:
            await self._stop.wait()
            for task in list(connections):  # stalled responses and idle keep-alive connections
                task.cancel()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        store = _Store(self.target)
        try:
            while not reader.at_eof():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break  # the client closed its connection between requests
                if not await self._exchange(_Request.parse(head), reader, writer, store):
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            _reset(writer)  # a client or store that broke off, or bytes that are not HTTP
        finally:
            store.close()
            writer.close()

    async def _exchange(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, store: _Store
    ) -> bool:
        """One request and its response, with the weather's faults; whether the connection goes on."""
        weather, length = self.weather, _body_length(request.headers, 0)
        if request.target.startswith("/_weather"):
            await _relay(reader, None, length)
            body = json.dumps({"weather": dataclasses.asdict(weather), "counts": self.counts()}).encode()
            writer.write(_response("200 OK", {"Content-Type": "application/json"}, body))
            await writer.drain()
            return request.keep_alive
        self._counts["requests"] += 1
        await asyncio.sleep(weather.latency_ms / 1000)
        fault = self._fault(weather, request)
        if "expect" in request.headers:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if fault in ("reset_before", "slowdown", "internal", "rate_limited"):
            await _relay(reader, None, length)
            self._counts[fault] += 1
            if fault == "reset_before":
                _reset(writer)
                return False
            writer.write(_s3_error(*_ERRORS[fault], request, self._counts["requests"]))
            await writer.drain()
            return request.keep_alive
        store_reader, store_writer = await store.open()
        store_writer.write(request.head)
        await _relay(reader, store_writer, length)
        while True:  # informational answers (1xx) go through as they are
            head = await store_reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            if status >= 200:
                break
            writer.write(head)
        headers = _headers(lines)
        body = 0 if request.method == "HEAD" or status in (204, 304) else _body_length(headers, _TO_EOF)
        if fault == "stall":
            self._counts["stall"] += 1
            await asyncio.sleep(weather.stall_s)
        writer.write(head)
        if fault in ("reset_during", "cut_body") and body >= 2:
            self._counts[fault] += 1
            await _relay(store_reader, writer, body // 2)
            store.close()  # the rest of the body is never read
            if fault == "reset_during":
                await asyncio.sleep(RESET_PAUSE_S)
                _reset(writer)
            return False
        await _relay(store_reader, writer, body)
        store.used = time.monotonic()
        if body == _TO_EOF or headers.get("connection", "").lower() == "close":
            return False
        return request.keep_alive

    def _fault(self, weather: Weather, request: _Request) -> str | None:
        """The fault this request gets: the rate limit's, else one drawn, else none."""
        if not re.search(weather.aim, f"{request.method} {request.target}"):
            return None
        self._counts["aimed"] += 1
        if weather.prefix_rate_limit > 0 and not self._take_token(weather.prefix_rate_limit, request.target):
            return "rate_limited"
        if not any(getattr(weather, fault) for fault in FAULTS):
            return None
        identity = f"{request.method} {request.target} {request.headers.get('range', '')}"
        draw = random.Random(f"{weather.seed}|{identity}|{self._seen[identity]}").random()
        self._seen[identity] += 1
        for fault in FAULTS:
            rate = getattr(weather, fault)
            if draw < rate:
                return fault
            draw -= rate
        return None

    def _take_token(self, rate: float, target: str) -> bool:
        """Whether the request's prefix (bucket and first key segment) has a token left; takes it."""
        prefix = "/".join(target.split("?", 1)[0].split("/")[1:3])
        now = time.monotonic()
        capacity = max(rate, 1.0)
        tokens, then = self._tokens.get(prefix, (capacity, now))
        tokens = min(capacity, tokens + (now - then) * rate)
        self._tokens[prefix] = (tokens - 1 if tokens >= 1 else tokens, now)
        return tokens >= 1


def _response(status: str, headers: dict[str, str], body: bytes, send_body: bool = True) -> bytes:
    """An answer of the proxy's own: `status` (`503 Slow Down`), `headers`, and `body` unless a HEAD's."""
    headers = {**headers, "Content-Length": str(len(body)), "Date": formatdate(usegmt=True)}
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + (body if send_body else b"")


def _s3_error(status: str, code: str, message: str, request: _Request, number: int) -> bytes:
    """S3's error answer: its XML body (none for a HEAD) and request id."""
    request_id = f"{number:016X}"
    resource = escape(request.target.split("?", 1)[0])
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{resource}</Resource>"
        f"<RequestId>{request_id}</RequestId></Error>"
    ).encode()
    headers = {"Content-Type": "application/xml", "x-amz-request-id": request_id, "Server": "AmazonS3"}
    return _response(status, headers, body, request.method != "HEAD")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--target", required=True, help="HOST:PORT of the store (loopback)")
    for field in dataclasses.fields(Weather):
        default = field.default
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", type=type(default), default=default, help=f"({default})"
        )
    args = vars(parser.parse_args())
    port, target = args.pop("port"), args.pop("target")
    weather = Weather(**args)
    proxy = FaultProxy(target, weather, port)
    print(f"proxy {proxy.endpoint} -> {target}: {weather}", flush=True)
    proxy.run()


if __name__ == "__main__":
    main()
