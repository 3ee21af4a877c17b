"""Object storage behind one small interface (list, get, put, exists), one store per URI scheme: s3://
(`s3.py`), az:// (`az.py`), and local paths (`local.py`); `storage_for(uri)` picks it.

Every other module handles URIs through the helpers here (`is_remote`, `join`, `absolute`, `as_folder`,
`parent`, `is_below`, `split_uri`), so none knows a scheme: a new store is one module and one line in
STORES. Writes are atomic: a store's PUT of the whole body, or a hidden temporary file renamed into place
locally. Every request is counted by kind (LIST, GET, PUT, HEAD, DELETE) in this process:
`request_counts()`.
"""

from __future__ import annotations

import io
import re
from functools import cache
from pathlib import Path

from facesweep.workers.storage.az import AzureStorage
from facesweep.workers.storage.base import (
    MissingObjectError,
    ObjectError,
    ObjectInfo,
    ObjectStore,
    Storage,
    StorageError,
    request_counts,
    trust_the_endpoints,
)
from facesweep.workers.storage.local import LocalStorage
from facesweep.workers.storage.s3 import S3Storage

__all__ = [
    "STORES",
    "URI_PATTERN",
    "AzureStorage",
    "LocalStorage",
    "MissingObjectError",
    "ObjectError",
    "ObjectInfo",
    "RangedFile",
    "S3Storage",
    "Storage",
    "StorageError",
    "absolute",
    "as_folder",
    "is_below",
    "is_remote",
    "join",
    "parent",
    "request_counts",
    "scheme_of",
    "split_uri",
    "storage_for",
    "trust_the_endpoints",
]

STORES: dict[str, type[ObjectStore]] = {store.SCHEME: store for store in (S3Storage, AzureStorage)}
"""The object stores by URI scheme; anything else is a local path."""
URI_PATTERN = rf"^({'|'.join(map(re.escape, STORES))})://"
"""A regular expression that matches the start of a store's URI (for checks over Arrow arrays)."""


def scheme_of(uri: str) -> str | None:
    """The store's scheme of `uri` (`s3`, `az`), None for a local path."""
    scheme, separator, _ = uri.partition("://")
    return scheme if separator and scheme in STORES else None


def is_remote(uri: str) -> bool:
    """Whether `uri` names an object in a store rather than a local path."""
    return scheme_of(uri) is not None


def storage_for(uri: str) -> Storage:
    """The backend for `uri`; one per process and scheme (clients are created lazily per process)."""
    return _store(scheme_of(uri))


@cache
def _store(scheme: str | None) -> Storage:
    return STORES[scheme]() if scheme else LocalStorage()


def split_uri(uri: str) -> tuple[str, str, str]:
    """('s3://', 'bucket', 'key') of a store's URI 's3://bucket/key': joined with a `/` before the key,
    they are the URI again."""
    scheme = scheme_of(uri)
    if scheme is None:
        raise ValueError(f"{uri} is a local path, not a store's URI")
    container, key = _store(scheme).split(uri)
    return f"{scheme}://", container, key


def join(base: str, name: str) -> str:
    """`name` inside the folder `base` (a URI or a local path)."""
    return f"{base.rstrip('/')}/{name}" if is_remote(base) else str(Path(base) / name)


def absolute(uri: str) -> str:
    """A local path made absolute (actors run in other working directories); a store's URI as it is."""
    return uri if is_remote(uri) else str(Path(uri).absolute())


def as_folder(uri: str) -> str:
    """The folder `uri` as the prefix of every object below it: absolute, ending in one `/`."""
    return absolute(uri).rstrip("/") + "/"


def parent(uri: str) -> str:
    """The folder that holds `uri` (absolute when local), without a final `/`."""
    return uri.rsplit("/", 1)[0] if is_remote(uri) else str(Path(uri).absolute().parent)


def is_below(uri: str, base: str) -> bool:
    """Whether `uri` is the folder `base` or inside it, in the same store (local paths once resolved)."""
    if scheme_of(uri) != scheme_of(base):
        return False
    if is_remote(base):
        uri, base = uri.rstrip("/"), base.rstrip("/")
        return uri == base or uri.startswith(base + "/")
    return Path(uri).resolve().is_relative_to(Path(base).resolve())


class RangedFile(io.RawIOBase):
    """A read-only, seekable file over an object, read with ranged GETs: Parquet readers fetch the footer
    and only the column chunks they need. The object's last TAIL bytes come with the first read."""

    TAIL = 64 * 1024

    def __init__(self, uri: str, size: int | None = None) -> None:
        self.uri = uri
        self._storage = storage_for(uri)
        self._size = self._storage.size(uri) if size is None else size
        self._position = 0
        self._tail_start = max(0, self._size - self.TAIL)
        self._tail: bytes | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def read(self, size: int = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._position + size)
        if end <= self._position:
            return b""
        if self._position >= self._tail_start:
            if self._tail is None:
                self._tail = self._storage.get_range(
                    self.uri, self._tail_start, self._size - self._tail_start
                )
            data = self._tail[self._position - self._tail_start : end - self._tail_start]
        else:
            data = self._storage.get_range(self.uri, self._position, end - self._position)
        self._position += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
