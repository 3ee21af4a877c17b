"""OUTPUT/_lease.json: one job at a time writes OUTPUT.

A job takes the lease before it changes anything under OUTPUT and gives it back at its end. The lease
names its holder (host, pid and PID namespace, a random token), when it started, its last heartbeat and
when it expires (heartbeat + TTL_SECONDS); a daemon thread renews it every TTL_SECONDS /
HEARTBEATS_PER_TTL. Taking it is a conditional create (S3 and Azure `If-None-Match: *`; locally under an
flock of the folder). A lease that expired, or whose holder on this host is gone, is taken over by a
conditional replace of the version read (S3 and Azure `If-Match: ETag`), so of two jobs taking it over
one wins; a live one refuses the job in one line naming its holder. Every outcome is read from the token,
so a retried request whose first attempt landed is still ours. Expiry compares the holder's clock with
the reader's: hosts' clocks must agree to well within the TTL.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType

from facesweep.workers.errors import JobError
from facesweep.workers.output.layout import LEASE_FILE
from facesweep.workers.storage import MissingObjectError, ObjectError, StorageError, join, storage_for

log = logging.getLogger("facesweep")

TTL_SECONDS = 60.0
"""How long a lease lives without a heartbeat."""
HEARTBEATS_PER_TTL = 4
TAKE_ATTEMPTS = 3
"""Rounds of create, read and takeover before a lease that keeps changing is given up on."""

_held: set[str] = set()
"""Tokens of the leases this process holds or is taking now."""


class OutputInUseError(JobError):
    """OUTPUT is held by another job's live lease."""


class LeaseLostError(JobError):
    """Another job took this job's lease on OUTPUT: this job must stop writing there."""


@dataclass(frozen=True)
class Holder:
    """A lease as stored."""

    host: str
    pid: int
    pid_namespace: str
    token: str
    started_at: str
    heartbeat_at: datetime
    expires_at: datetime

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        """The holder `data` names; None when it is not a lease (cut or foreign: anyone may take it)."""
        try:
            fields = json.loads(data)
            return cls(
                str(fields["host"]),
                int(fields["pid"]),
                str(fields.get("pid_namespace", "")),
                str(fields["token"]),
                str(fields["started_at"]),
                _aware(fields["heartbeat_at"]),
                _aware(fields["expires_at"]),
            )
        except (ValueError, TypeError, KeyError):
            return None

    def stale(self, at: datetime) -> bool:
        """Expired at `at`, or held by a process of this host (and PID namespace) that is gone, or by this
        process through a lease it no longer holds."""
        if at >= self.expires_at:
            return True
        if (self.host, self.pid_namespace) != (socket.gethostname(), _pid_namespace()):
            return False
        if self.pid == os.getpid():
            return self.token not in _held
        return not _running(self.pid)

    def describe(self, at: datetime) -> str:
        ago = max(0, round((at - self.heartbeat_at).total_seconds()))
        return f"host {self.host}, pid {self.pid}, started {self.started_at}, last heartbeat {ago} s ago"


def live_holder(output: str) -> str | None:
    """Who holds a live lease on OUTPUT now (`describe`'s words), or None; one GET, nothing taken (the
    dry run's question)."""
    try:
        data = storage_for(output).get(join(output, LEASE_FILE))
    except ObjectError:
        return None
    holder, at = Holder.parse(data), datetime.now(UTC)
    return holder.describe(at) if holder is not None and not holder.stale(at) else None


class OutputLease:
    """The lease on one OUTPUT: `acquire` it, `check` it while writing, `release` it at the end. As a
    context manager it is acquired on entry (unless held already) and released on exit."""

    def __init__(self, output: str, ttl: float | None = None) -> None:
        self.output, self.uri, self.ttl = output, join(output, LEASE_FILE), ttl or TTL_SECONDS
        self.storage = storage_for(output)
        self.token = secrets.token_hex(16)
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._version: str | None = None  # of our last write while held
        self._lost: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # a heartbeat and the release, one at a time

    def __enter__(self) -> OutputLease:
        if self._version is None:
            self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()

    def acquire(self) -> None:
        """Takes the lease, or raises OutputInUseError naming the live holder."""
        self.storage.make_folder(self.output)  # a missing bucket is refused, never made by a PUT
        _held.add(self.token)  # from now on, not a leftover of this process
        try:
            self._version = self._take()
        except BaseException:
            _held.discard(self.token)
            raise
        threading.Thread(target=self._beat, name="output-lease", daemon=True).start()

    def _take(self) -> str:
        """The version of the lease this job now holds: created, or taken over from a stale holder."""
        for _ in range(TAKE_ATTEMPTS):
            version = self.storage.create(self.uri, self._body())
            if version is not None:
                return version
            try:
                data, found = self.storage.get_versioned(self.uri)
            except MissingObjectError:
                continue  # given back meanwhile: create again
            holder, at = Holder.parse(data), datetime.now(UTC)
            if holder is not None and holder.token == self.token:
                return found  # our own write landed on a retry
            if holder is not None and not holder.stale(at):
                left = max(0, round((holder.expires_at - at).total_seconds()))
                raise OutputInUseError(
                    f"OUTPUT {self.output} is in use by another facesweep job ({holder.describe(at)}): "
                    f"wait for it, or remove {self.uri} if that job is gone (without a heartbeat its "
                    f"lease expires in {left} s)"
                )
            version = self.storage.replace(self.uri, self._body(), found)
            if version is not None:
                gone = holder.describe(at) if holder else "an unreadable lease"
                log.warning("took over the lease on OUTPUT %s from a job gone (%s)", self.output, gone)
                return version
            # another job took it first (or our write landed): read it again
        raise OutputInUseError(
            f"OUTPUT {self.output}: its lease {self.uri} changed {TAKE_ATTEMPTS} times while this job "
            "took it: another job is starting there; try again"
        )

    def check(self) -> None:
        """Raises LeaseLostError once a heartbeat has found the lease taken by another job."""
        if self._lost:
            raise LeaseLostError(self._lost)

    def release(self) -> None:
        """Stops the heartbeat and deletes the lease if it is still ours with time to spare (a lease
        that has nearly expired is left to expire: a job may be taking it over)."""
        if self._version is None:
            return
        self._stop.set()
        with self._lock:
            _held.discard(self.token)
            self._version = None
            try:
                data, _ = self.storage.get_versioned(self.uri)
                holder = Holder.parse(data)
                if holder is not None and holder.token == self.token:
                    left = (holder.expires_at - datetime.now(UTC)).total_seconds()
                    if left > self.ttl / HEARTBEATS_PER_TTL:
                        self.storage.delete([self.uri])
            except MissingObjectError:
                pass
            except StorageError as error:
                log.warning("could not give back the lease on OUTPUT %s (%s): it expires", self.output, error)

    def _body(self) -> bytes:
        """The lease as this job writes it now."""
        beat = datetime.now(UTC)
        lease = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_namespace": _pid_namespace(),
            "token": self.token,
            "started_at": self.started_at,
            "heartbeat_at": beat.isoformat(timespec="milliseconds"),
            "expires_at": (beat + timedelta(seconds=self.ttl)).isoformat(timespec="milliseconds"),
        }
        return json.dumps(lease, indent=2).encode()

    def _beat(self) -> None:
        """Renews the lease until released or lost; a store that fails is logged and tried again."""
        while not self._stop.wait(self.ttl / HEARTBEATS_PER_TTL):
            with self._lock:
                if self._version is None:
                    return
                try:
                    self._renew(self._version)
                except StorageError as error:
                    log.warning("could not renew the lease on OUTPUT %s: %s", self.output, error)

    def _renew(self, version: str) -> None:
        """Rewrites the lease if it is still at `version`; else it is ours still (a retried write that
        landed), removed (written again, unless another job was quicker: the next beat sees it), or lost."""
        renewed = self.storage.replace(self.uri, self._body(), version)
        if renewed is None:
            try:
                data, renewed = self.storage.get_versioned(self.uri)
            except MissingObjectError:
                self._version = self.storage.create(self.uri, self._body()) or version
                return
            holder = Holder.parse(data)
            if holder is None or holder.token != self.token:
                taker = holder.describe(datetime.now(UTC)) if holder else "an unreadable lease"
                self._lost = (
                    f"OUTPUT {self.output} was taken by another job while this one ran ({taker}): this job "
                    "stopped writing there; run it again once the other has ended"
                )
                log.error(self._lost)
                self._version = None
                _held.discard(self.token)
                return
        self._version = renewed


def _aware(text: str) -> datetime:
    """An ISO 8601 time with its offset (one without is no lease's)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text} has no UTC offset")
    return moment


def _pid_namespace() -> str:
    """This process's PID namespace (Linux), so pids are compared only within one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
