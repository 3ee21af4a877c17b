"""Object storage behind one small interface (list, get, put, exists): boto3 for s3://, else local files.

S3 endpoint and credentials come the standard boto3 way (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, profiles...).
Writes are atomic: an S3 PUT of the whole body, or a hidden temporary file renamed into place locally.
Every request is counted by kind (LIST, GET, PUT, HEAD, DELETE) in this process: `request_counts()`.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError

S3_SCHEME = "s3://"


class StorageError(OSError):
    """A storage operation that failed; the message names the object and the reason in one line.

    Raised as is when the store itself failed (unreachable, still failing after boto3's retries): the
    work that needed it fails and is retried, never recorded as a bad image."""


class ObjectError(StorageError):
    """A problem with one object (missing, access denied): that image gets an error row."""


REQUEST_KINDS = ("LIST", "GET", "PUT", "HEAD", "DELETE")
_requests: Counter[str] = Counter()
_requests_lock = threading.Lock()


def _count(kind: str, n: int = 1) -> None:
    with _requests_lock:
        _requests[kind] += n


def request_counts() -> dict[str, int]:
    """Requests this process has made so far, by kind (local files count as the same operations)."""
    with _requests_lock:
        return {kind: _requests[kind] for kind in REQUEST_KINDS}


@dataclass(frozen=True)
class ObjectInfo:
    """A listed object: its URI, its version tag (S3 ETag; locally the modification time) and size."""

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

    def size(self, uri: str) -> int: ...

    def put(self, uri: str, data: bytes) -> None: ...

    def exists(self, uri: str) -> bool: ...

    def delete(self, uris: Iterable[str]) -> None:
        """Deletes the objects (missing ones are fine)."""
        ...

    def make_folder(self, uri: str) -> None:
        """Makes sure objects can be written below `uri` (S3: its bucket exists; local: the folder)."""
        ...


def is_s3_uri(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """('bucket', 'key') of 's3://bucket/key'."""
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"{uri} names no bucket: write s3://BUCKET/PREFIX")
    return bucket, key


def join(base: str, name: str) -> str:
    """`name` inside the folder `base` (a URI or a local path)."""
    return f"{base.rstrip('/')}/{name}" if is_s3_uri(base) else str(Path(base) / name)


def storage_for(uri: str) -> Storage:
    """The backend for `uri`; one per process and scheme (boto3 clients are created lazily per process)."""
    return _s3() if is_s3_uri(uri) else _local()


@cache
def _s3() -> S3Storage:
    return S3Storage()


@cache
def _local() -> LocalStorage:
    return LocalStorage()


class S3Storage:
    """boto3 with standard-mode retries and a connection pool sized for concurrent GETs."""

    def __init__(self, max_connections: int = 32) -> None:
        # standard mode: exponential backoff with jitter (up to 20 s a wait); 10 attempts ride out a
        # store that is down for about half a minute before the work that needed it fails.
        self._config = Config(
            retries={"mode": "standard", "max_attempts": 10}, max_pool_connections=max_connections
        )
        self._lock = threading.Lock()
        self._client_obj = None

    @property
    def _client(self):
        with self._lock:
            if self._client_obj is None:
                session = boto3.session.Session()
                if session.get_credentials() is None:
                    raise StorageError(
                        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                        "AWS_PROFILE), and AWS_ENDPOINT_URL for an S3 store other than AWS"
                    )
                client = session.client("s3", config=self._config)
                _check_reachable(session, client.meta.endpoint_url)
                self._client_obj = client
            return self._client_obj

    def list(self, prefix: str) -> Iterator[str]:
        return (info.uri for info in self.list_objects(prefix))

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        for page in self._pages(prefix):
            yield from page[0]

    def list_level(self, prefix: str) -> tuple[list[ObjectInfo], list[str]]:
        objects: list[ObjectInfo] = []
        folders: list[str] = []
        for page_objects, page_folders in self._pages(prefix, delimiter="/"):
            objects += page_objects
            folders += page_folders
        return objects, folders

    def _pages(self, prefix: str, delimiter: str = "") -> Iterator[tuple[list[ObjectInfo], list[str]]]:
        bucket, key = split_s3_uri(prefix)
        folder = key if not key or key.endswith("/") else key + "/"
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=folder, Delimiter=delimiter
        )
        try:
            for page in pages:
                _count("LIST")
                objects = [
                    ObjectInfo(f"{S3_SCHEME}{bucket}/{obj['Key']}", obj.get("ETag"), obj.get("Size"))
                    for obj in page.get("Contents", ())
                ]
                folders = [f"{S3_SCHEME}{bucket}/{p['Prefix']}" for p in page.get("CommonPrefixes", ())]
                yield objects, folders
        except (ClientError, BotoCoreError) as error:
            raise _error(prefix, error) from None

    def get(self, uri: str) -> bytes:
        bucket, key = split_s3_uri(uri)
        _count("GET")
        try:
            return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as error:
            raise _error(uri, error) from None

    def get_range(self, uri: str, start: int, length: int) -> bytes:
        bucket, key = split_s3_uri(uri)
        _count("GET")
        try:
            body = self._client.get_object(
                Bucket=bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
            )
            return body["Body"].read()
        except (ClientError, BotoCoreError) as error:
            raise _error(uri, error) from None

    def size(self, uri: str) -> int:
        bucket, key = split_s3_uri(uri)
        _count("HEAD")
        try:
            return self._client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except (ClientError, BotoCoreError) as error:
            raise _error(uri, error) from None

    def put(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3_uri(uri)
        _count("PUT")
        try:
            self._client.put_object(Bucket=bucket, Key=key, Body=data)
        except (ClientError, BotoCoreError) as error:
            raise _error(uri, error) from None

    def exists(self, uri: str) -> bool:
        bucket, key = split_s3_uri(uri)
        _count("HEAD")
        try:
            self._client.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _error(uri, error) from None
        except BotoCoreError as error:
            raise _error(uri, error) from None

    def make_folder(self, uri: str) -> None:
        bucket, _ = split_s3_uri(uri)
        _count("HEAD")
        try:  # some servers create a bucket on the first PUT; AWS does not, so check explicitly
            self._client.head_bucket(Bucket=bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(
                    f"bucket {bucket!r} does not exist ({uri}): create it or fix the URI"
                ) from None
            raise _error(uri, error) from None
        except BotoCoreError as error:
            raise _error(uri, error) from None

    def delete(self, uris: Iterable[str]) -> None:
        by_bucket: dict[str, list[str]] = {}
        for uri in uris:
            bucket, key = split_s3_uri(uri)
            by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            for start in range(0, len(keys), 1000):  # the most one DeleteObjects call takes
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                _count("DELETE")
                try:
                    self._client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
                except (ClientError, BotoCoreError) as error:
                    raise _error(f"{S3_SCHEME}{bucket}/", error) from None


def _error(uri: str, error: Exception) -> StorageError:
    """The one-line error for a boto3 failure: ObjectError when only this object is at fault."""
    code = error.response.get("Error", {}).get("Code", "") if isinstance(error, ClientError) else ""
    cls = ObjectError if code in ("NoSuchKey", "404", "AccessDenied", "403") else StorageError
    return cls(_describe(uri, error))


def _check_reachable(session: boto3.session.Session, endpoint: str) -> None:
    """Fails in seconds, naming the endpoint, when nothing answers there (instead of ten retries)."""
    probe = session.client(
        "s3", config=Config(connect_timeout=5, retries={"mode": "standard", "max_attempts": 1})
    )
    _count("LIST")
    try:
        probe.list_buckets()
    except ClientError:
        return  # an answer, even a refusal: the store is there
    except (EndpointConnectionError, ConnectTimeoutError) as error:
        where = os.environ.get("AWS_ENDPOINT_URL") or "unset, so AWS S3"
        raise StorageError(
            f"cannot reach the S3 endpoint {endpoint} ({type(error).__name__}): check AWS_ENDPOINT_URL "
            f"({where}) and the network"
        ) from None


def _describe(uri: str, error: Exception) -> str:
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return _missing_bucket(uri)
        if code in ("NoSuchKey", "404"):
            return f"{uri} does not exist"
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return f"access denied to {uri} ({code}): check AWS credentials and permissions"
        return f"{uri}: {code or 'error'}: {error.response.get('Error', {}).get('Message', '')}".rstrip(": ")
    return f"{uri}: {str(error).splitlines()[0]}"


def _missing_bucket(uri: str) -> str:
    return f"bucket {split_s3_uri(uri)[0]!r} does not exist ({uri}): create it or fix the URI"


class LocalStorage:
    """The local filesystem; URIs are paths."""

    def list(self, prefix: str) -> Iterator[str]:
        return (info.uri for info in self.list_objects(prefix))

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Depth first, each folder's entries sorted with sub-folders as `name/`: exactly the order of
        the full paths as strings (as S3 lists keys)."""
        objects, folders = self.list_level(prefix)
        entries = sorted([(o.uri, o) for o in objects] + [(f, None) for f in folders])
        for path, info in entries:
            if info is None:
                yield from self.list_objects(path)
            else:
                yield info

    def list_level(self, prefix: str) -> tuple[list[ObjectInfo], list[str]]:
        root = Path(prefix).absolute()
        _count("LIST")
        objects, folders = [], []
        try:
            with os.scandir(root) as entries:
                for entry in entries:
                    if entry.is_dir():
                        folders.append(f"{entry.path}/")
                    elif entry.is_file():
                        stat = entry.stat()
                        objects.append(ObjectInfo(entry.path, str(stat.st_mtime_ns), stat.st_size))
        except OSError as error:
            if not root.is_dir():
                raise StorageError(f"{prefix} is not a directory") from None
            raise StorageError(f"cannot list {error.filename}: {error.strerror}") from None
        return objects, folders

    def get(self, uri: str) -> bytes:
        _count("GET")
        try:
            return Path(uri).read_bytes()
        except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
            raise ObjectError(f"{uri}: {error.strerror or error}") from None
        except OSError as error:
            raise StorageError(f"{uri}: {error.strerror or error}") from None

    def get_range(self, uri: str, start: int, length: int) -> bytes:
        _count("GET")
        try:
            with open(uri, "rb") as file:
                file.seek(start)
                return file.read(length)
        except OSError as error:
            raise StorageError(f"{uri}: {error.strerror or error}") from None

    def size(self, uri: str) -> int:
        _count("HEAD")
        try:
            return Path(uri).stat().st_size
        except OSError as error:
            raise StorageError(f"{uri}: {error.strerror or error}") from None

    def put(self, uri: str, data: bytes) -> None:
        _count("PUT")
        path = Path(uri)
        partial = path.with_name(f"_{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            partial.replace(path)
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise StorageError(f"cannot write {uri}: {error.strerror or error}") from None

    def exists(self, uri: str) -> bool:
        _count("HEAD")
        return Path(uri).exists()

    def delete(self, uris: Iterable[str]) -> None:
        for uri in uris:
            _count("DELETE")
            try:
                Path(uri).unlink(missing_ok=True)
            except OSError as error:
                raise StorageError(f"cannot delete {uri}: {error.strerror or error}") from None

    def make_folder(self, uri: str) -> None:
        try:
            Path(uri).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot write {uri}: {error.strerror or error}") from None


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
