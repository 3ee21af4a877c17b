"""What every store shares: the errors, the request counts, a listed object, the Storage protocol, and
ObjectStore, the part of an object store's backend that obstore serves the same way for every store (get,
ranged get, head, put, conditional put, delete) with the mapping of its failures to one-line errors."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    InvalidPathError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)

from facesweep.workers.errors import UserError, line_of
from facesweep.workers.storage.pacing import Pacer

T = TypeVar("T")


class StorageError(UserError, OSError):
    """A storage operation that failed; the message names the object and the reason in one line.

    Raised as is when the store itself failed (unreachable, still failing after the client's retries): the
    work that needed it fails and is retried, never recorded as a bad image."""


class ObjectError(StorageError):
    """A problem with one object (missing, access denied): that image gets an error row."""


class MissingObjectError(ObjectError):
    """The object does not exist."""


_PROBING = [True]


def probing() -> bool:
    """Whether a process's first request to a store probes it once, to refuse an endpoint where nothing
    answers in seconds instead of retrying for a minute."""
    return _PROBING[0]


def trust_the_endpoints() -> None:
    """In a job's workers (actors, compaction tasks): the driver already found every store, so one that
    does not answer now is an outage to retry through, not a wrong endpoint to refuse at once."""
    _PROBING[0] = False


REQUEST_KINDS = ("LIST", "GET", "PUT", "HEAD", "DELETE", "THROTTLED", "RETRIED")
"""The kinds of request counted; THROTTLED and RETRIED count the attempts (of the others) that followed
a throttling answer or a transient failure (`pacing.py`)."""
_requests: Counter[str] = Counter()
_requests_lock = threading.Lock()


def count(kind: str, n: int = 1) -> None:
    """Counts `n` requests of `kind` (one of REQUEST_KINDS) made by this process."""
    with _requests_lock:
        _requests[kind] += n


def request_counts() -> dict[str, int]:
    """Requests this process has made so far, by kind (local files count as the same operations)."""
    with _requests_lock:
        return {kind: _requests[kind] for kind in REQUEST_KINDS}


@dataclass(frozen=True)
class ObjectInfo:
    """A listed object: its URI, its version tag (the store's ETag; locally the modification time) and
    size."""

    uri: str
    etag: str | None
    size: int | None


class Storage(Protocol):
    def list(self, prefix: str) -> Iterator[str]:
        """Full URIs of every object under `prefix` (a folder), in lexicographic order, lazily."""
        ...

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """`list`, with each object's version tag and size."""
        ...

    def list_level(self, prefix: str) -> tuple[list[ObjectInfo], list[str]]:
        """The objects directly in the folder `prefix` and its sub-folders (URIs ending in `/`)."""
        ...

    def get(self, uri: str) -> bytes: ...

    def get_range(self, uri: str, start: int, length: int) -> bytes:
        """`length` bytes of the object from offset `start` (fewer at its end)."""
        ...

    def head(self, uri: str) -> ObjectInfo:
        """The object's version tag and size (one HEAD)."""
        ...

    def size(self, uri: str) -> int: ...

    def put(self, uri: str, data: bytes) -> None: ...

    def create(self, uri: str, data: bytes) -> str | None:
        """A PUT only if nothing is at `uri` (S3 and Azure `If-None-Match: *`): the object's version for
        `replace`, None when an object is there."""
        ...

    def replace(self, uri: str, data: bytes, version: str) -> str | None:
        """A PUT only if the object is still at `version` (S3 and Azure `If-Match`): its new version, None
        when it changed or is gone."""
        ...

    def get_versioned(self, uri: str) -> tuple[bytes, str]:
        """The object's bytes and their version for `replace`, in one GET."""
        ...

    def exists(self, uri: str) -> bool: ...

    def delete(self, uris: Iterable[str]) -> None:
        """Deletes the objects (missing ones are fine)."""
        ...

    def make_folder(self, uri: str) -> None:
        """Makes sure objects can be written below `uri` (a store: its bucket or container exists; local:
        the folder)."""
        ...

    def check_writable(self, uri: str) -> None:
        """make_folder's check for a dry run, leaving nothing behind (a local folder is not made); a
        StorageError naming `uri` when nothing could be written there."""
        ...

    def remove_partials(self, prefix: str) -> int:
        """Removes the temporary files of writes cut short below `prefix` (local: a killed process's
        `.partial` files; a store: none, a PUT is atomic); how many."""
        ...


CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
"""Seconds a request may wait for its next byte (its answer's first, or the next of a body): a stalled
request is given up and retried. A PUT's upload counts as waiting too, so each PUT (a multipart upload's
part: 5 MiB) must go in this long."""
REQUEST_TIMEOUT_S = 600
"""Seconds a request may last while bytes keep coming: a 64 MiB container piece at 110 KB/s and up."""
TIMEOUTS = {
    "connect_timeout": f"{CONNECT_TIMEOUT_S}s",
    "read_timeout": f"{READ_TIMEOUT_S}s",
    "timeout": f"{REQUEST_TIMEOUT_S}s",
}
"""obstore's client options for every data request (its default, 30 s for a whole request, failed a
64 MiB ranged GET below 2.2 MB/s however steadily its bytes came)."""


class ObjectStore(ABC):
    """A store of `SCHEME://CONTAINER/key` objects whose data requests go through obstore: each store
    says how to build obstore's client for a container, how it lists, and how its errors read."""

    SCHEME: ClassVar[str]
    """The URI scheme, without `://`."""
    CONTAINER: ClassVar[str]
    """What the store calls the first part of a URI: bucket, container."""
    CREDENTIALS: ClassVar[str]
    """What to check when access is denied."""
    MISSING_CONTAINER: ClassVar[tuple[str, ...]]
    """Texts found in the store's answer when the container does not exist."""
    DELETE_BATCH: ClassVar[int]
    """Keys per delete request (obstore sends each call's keys as one batch up to this many)."""

    def __init__(self) -> None:
        self._pacers: dict[str, Pacer] = {}
        self._pacers_lock = threading.Lock()

    def pacer(self, container: str) -> Pacer:
        """This client's pacer of one bucket or container (a store throttles per prefix at most)."""
        with self._pacers_lock:
            if container not in self._pacers:
                self._pacers[container] = Pacer()
            return self._pacers[container]

    @abstractmethod
    def _store(self, container: str) -> Any:
        """obstore's client for `container` (created once per process and container)."""

    @abstractmethod
    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def list_level(self, prefix: str) -> tuple[list[ObjectInfo], list[str]]: ...

    @abstractmethod
    def make_folder(self, uri: str) -> None: ...

    def check_writable(self, uri: str) -> None:
        self.make_folder(uri)  # a store's make_folder only asks whether the bucket or container exists

    def split(self, uri: str) -> tuple[str, str]:
        """(container, key) of `SCHEME://container/key`."""
        container, _, key = uri.removeprefix(f"{self.SCHEME}://").partition("/")
        if not container:
            raise StorageError(
                f"{uri} names no {self.CONTAINER}: write {self.SCHEME}://{self.CONTAINER.upper()}/PREFIX"
            )
        return container, key

    def uri(self, container: str, key: str) -> str:
        return f"{self.SCHEME}://{container}/{key}"

    def folder(self, prefix: str) -> tuple[str, str]:
        """(container, key) of the folder `prefix`, the key ending in `/` unless it is the container's
        root."""
        container, key = self.split(prefix)
        return container, key if not key or key.endswith("/") else key + "/"

    def list(self, prefix: str) -> Iterator[str]:
        return (info.uri for info in self.list_objects(prefix))

    def get(self, uri: str) -> bytes:
        return self._request(uri, "GET", lambda store, key: bytes(obstore.get(store, key).bytes()))

    def get_range(self, uri: str, start: int, length: int) -> bytes:
        return self._request(
            uri,
            "GET",
            lambda store, key: bytes(obstore.get_range(store, key, start=start, length=length)),
            (start, length),
        )

    def head(self, uri: str) -> ObjectInfo:
        container, _ = self.split(uri)
        return self._request(uri, "HEAD", lambda store, key: self.info(container, obstore.head(store, key)))

    def size(self, uri: str) -> int:
        return self.head(uri).size

    def put(self, uri: str, data: bytes) -> None:
        self._request(uri, "PUT", lambda store, key: obstore.put(store, key, data))

    def create(self, uri: str, data: bytes) -> str | None:
        return self._conditional_put(uri, data, "create")

    def replace(self, uri: str, data: bytes, version: str) -> str | None:
        return self._conditional_put(uri, data, {"e_tag": version})

    def _conditional_put(self, uri: str, data: bytes, mode: str | dict) -> str | None:
        """obstore's PUT with `mode`: the new ETag, None when the store refused the condition (412; AWS
        answers a missing object's If-Match with 404)."""

        def put(store: Any, key: str) -> str | None:
            try:
                return obstore.put(store, key, data, mode=mode)["e_tag"] or ""
            except (AlreadyExistsError, PreconditionError, NotFoundError):
                return None

        return self._request(uri, "PUT", put)

    def get_versioned(self, uri: str) -> tuple[bytes, str]:
        def get(store: Any, key: str) -> tuple[bytes, str]:
            result = obstore.get(store, key)
            return bytes(result.bytes()), result.meta["e_tag"] or ""

        return self._request(uri, "GET", get)

    def exists(self, uri: str) -> bool:
        try:
            self.size(uri)
            return True
        except MissingObjectError:
            return False

    def remove_partials(self, prefix: str) -> int:
        return 0  # a PUT is atomic: nothing is left of one cut short

    def delete(self, uris: Iterable[str]) -> None:
        by_container: dict[str, list[str]] = {}
        for uri in uris:
            container, key = self.split(uri)
            by_container.setdefault(container, []).append(key)
        for container, keys in by_container.items():
            for start in range(0, len(keys), self.DELETE_BATCH):
                batch = keys[start : start + self.DELETE_BATCH]

                def attempt(batch: list[str] = batch, container: str = container) -> None:
                    count("DELETE")
                    obstore.delete(self._store(container), batch)

                try:
                    self.pacer(container).send(attempt, count)
                except Exception as error:  # a batch's missing object (Azure names them) is fine
                    failure = self.error(self.uri(container, ""), error)
                    if not isinstance(failure, MissingObjectError):
                        raise failure from None

    def _request(
        self, uri: str, kind: str, call: Callable[[Any, str], T], byte_range: tuple[int, int] | None = None
    ) -> T:
        """`call(client, key)`, each attempt counted as one `kind` request and paced as the store allows
        (`pacing.py`), its failure as a one-line error."""
        container, key = self.split(uri)

        def attempt() -> T:
            count(kind)
            return call(self._store(container), key)

        try:
            return self.pacer(container).send(attempt, count)
        except (ValueError, InvalidPathError) as error:  # a key object_store will not name as a path
            return self._unnamed(uri, kind, byte_range, error)
        except Exception as error:
            raise self.error(uri, error) from None

    def _unnamed(self, uri: str, kind: str, byte_range: tuple[int, int] | None, error: Exception) -> Any:
        """A request for a key object_store will not name as a path (`a//b`, a `.` or `..` segment): the
        object's error, unless the store has another client for it."""
        raise self.error(uri, error) from None

    def info(self, container: str, meta: dict) -> ObjectInfo:
        """The ObjectInfo of obstore's object metadata."""
        return ObjectInfo(
            self.uri(container, meta["path"]), self.version(meta.get("e_tag")), meta.get("size")
        )

    def version(self, etag: str | None) -> str | None:
        """The version tag as the store lists it."""
        return etag

    def error(self, uri: str, error: Exception) -> StorageError:
        """The one-line error for an obstore failure: ObjectError when only this object is at fault."""
        text = str(error)
        if any(marker in text for marker in self.MISSING_CONTAINER):
            return StorageError(self.missing_container(uri))
        if isinstance(error, (FileNotFoundError, NotFoundError)):
            return MissingObjectError(f"{uri} does not exist")
        if isinstance(error, (PermissionDeniedError, UnauthenticatedError)):
            return ObjectError(f"access denied to {uri}: check {self.CREDENTIALS} and permissions")
        if isinstance(error, (ValueError, InvalidPathError)):  # a key object_store will not name ("..")
            return ObjectError(f"{uri}: not a valid object key ({line_of(error, limit=200)})")
        if isinstance(error, StorageError):
            return error
        return StorageError(f"{uri}: {line_of(error)}")

    def missing_container(self, uri: str) -> str:
        return f"{self.CONTAINER} {self.split(uri)[0]!r} does not exist ({uri}): create it or fix the URI"
