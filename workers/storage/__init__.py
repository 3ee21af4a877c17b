"""Object storage behind one small interface (list, get, put, exists): obstore for s3://, else local files.

S3 endpoint and credentials come the standard boto3 way (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, profiles...),
read by boto3 and used by obstore for the data requests (boto3 lists); this is the one place clients are
built.
Writes are atomic: an S3 PUT of the whole body, or a hidden temporary file renamed into place locally.
Every request is counted by kind (LIST, GET, PUT, HEAD, DELETE) in this process: `request_counts()`.
Longer than most modules because it is the one place that talks to a store: two backends (S3, local
files), the boto3 fallbacks for keys object_store cannot name, and the mapping of every failure to a
one-line error that says whether the object or the store is at fault.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import boto3
import obstore
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError
from obstore.auth.boto3 import Boto3CredentialProvider
from obstore.exceptions import (
    InvalidPathError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from facesweep.workers.errors import UserError, line_of

S3_SCHEME = "s3://"
PARTIAL = ".partial"
"""How a local write's temporary file ends (`_<name>.<pid>.<thread>.partial`, renamed once whole)."""


class StorageError(UserError, OSError):
    """A storage operation that failed; the message names the object and the reason in one line.

    Raised as is when the store itself failed (unreachable, still failing after boto3's retries): the
    work that needed it fails and is retried, never recorded as a bad image."""


class ObjectError(StorageError):
    """A problem with one object (missing, access denied): that image gets an error row."""


class MissingObjectError(ObjectError):
    """The object does not exist."""


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

    def head(self, uri: str) -> ObjectInfo:
        """The object's version tag and size (one HEAD)."""
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

    def remove_partials(self, prefix: str) -> int:
        """Removes the temporary files of writes cut short below `prefix` (local: a killed process's
        `.partial` files; S3: none, a PUT is atomic); how many."""
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
    """obstore (the Rust `object_store`) for the data requests: get, ranged get, head, put and delete,
    signed with boto3's credential chain (environment, profiles, SSO, instance metadata) through obstore's
    Boto3CredentialProvider, at the endpoint boto3 resolves (AWS_ENDPOINT_URL, a profile's settings) and
    the bucket's own region, so every request facesweep makes has one configuration. boto3 does what
    obstore cannot: the credentials check, one reachability probe, the bucket's region and existence,
    LIST (object_store fails a whole listing on one key it cannot name as a path: `a//b`, `.`, `..`,
    which S3 allows) and the GET of such a key. Measured client CPU per GET: docs/S3-CLIENTS.md."""

    def __init__(self, max_connections: int = 32) -> None:
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._boto: tuple[boto3.session.Session, object] | None = None
        self._stores: dict[str, S3Store] = {}

    @property
    def _client(self):
        """boto3's S3 client, created once credentials and the endpoint are checked."""
        return self._session()[1]

    def _session(self) -> tuple[boto3.session.Session, object]:
        with self._lock:
            if self._boto is None:
                session = boto3.session.Session()
                if session.get_credentials() is None:
                    raise StorageError(
                        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                        "AWS_PROFILE), and AWS_ENDPOINT_URL for an S3 store other than AWS"
                    )
                client = session.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 10}))
                _check_reachable(session, client.meta.endpoint_url)
                self._boto = session, client
            return self._boto

    def _store(self, bucket: str) -> S3Store:
        session, client = self._session()
        with self._lock:
            if bucket not in self._stores:
                endpoint = client.meta.endpoint_url
                aws = urlsplit(endpoint).hostname.endswith(".amazonaws.com")
                options = {"region": _bucket_region(client, bucket)}
                if not aws:  # other stores: their URL, path-style addressing
                    options.update(endpoint=endpoint, virtual_hosted_style_request=False)
                self._stores[bucket] = S3Store(
                    bucket,
                    credential_provider=Boto3CredentialProvider(session),
                    client_options={
                        "allow_http": endpoint.startswith("http://"),
                        "pool_max_idle_per_host": str(self._max_connections),
                    },
                    retry_config=RETRIES,
                    **options,
                )
            return self._stores[bucket]

    def list(self, prefix: str) -> Iterator[str]:
        return (info.uri for info in self.list_objects(prefix))

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        bucket, folder = _folder(prefix)
        for page in self._pages(prefix, Bucket=bucket, Prefix=folder):
            yield from (_listed(bucket, item) for item in page.get("Contents", ()))

    def list_level(self, prefix: str) -> tuple[list[ObjectInfo], list[str]]:
        bucket, folder = _folder(prefix)
        objects, folders = [], []
        for page in self._pages(prefix, Bucket=bucket, Prefix=folder, Delimiter="/"):
            objects += [_listed(bucket, item) for item in page.get("Contents", ())]
            folders += [f"{S3_SCHEME}{bucket}/{p['Prefix']}" for p in page.get("CommonPrefixes", ())]
        return objects, folders

    def _pages(self, prefix: str, **request: str) -> Iterator[dict]:
        """ListObjectsV2 pages, through boto3: object_store refuses a whole listing that holds one key
        it cannot name as a path (`a//b`, a `.` or `..` segment), which S3 allows."""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            **request, PaginationConfig={"PageSize": PAGE}
        )
        try:
            for page in pages:
                _count("LIST")
                yield page
        except ClientError as error:
            raise _error(prefix, error) from None
        except BotoCoreError as error:
            raise StorageError(_describe(prefix, error)) from None

    def get(self, uri: str) -> bytes:
        bucket, key = split_s3_uri(uri)
        _count("GET")
        try:
            return bytes(obstore.get(self._store(bucket), key).bytes())
        except (ValueError, InvalidPathError):  # a key object_store will not name: through boto3
            return self._boto_get(uri)
        except Exception as error:
            raise _obstore_error(uri, error) from None

    def get_range(self, uri: str, start: int, length: int) -> bytes:
        bucket, key = split_s3_uri(uri)
        _count("GET")
        try:
            return bytes(obstore.get_range(self._store(bucket), key, start=start, length=length))
        except (ValueError, InvalidPathError):
            return self._boto_get(uri, f"bytes={start}-{start + length - 1}")
        except Exception as error:
            raise _obstore_error(uri, error) from None

    def head(self, uri: str) -> ObjectInfo:
        bucket, key = split_s3_uri(uri)
        _count("HEAD")
        try:
            return _info(bucket, obstore.head(self._store(bucket), key))
        except (ValueError, InvalidPathError):
            return self._boto_head(uri)
        except Exception as error:
            raise _obstore_error(uri, error) from None

    def _boto_get(self, uri: str, byte_range: str = "") -> bytes:
        """A GET through boto3, for a key S3 allows and object_store cannot name (`a//b`, `./a`)."""
        bucket, key = split_s3_uri(uri)
        try:
            ranged = {"Range": byte_range} if byte_range else {}
            return self._client.get_object(Bucket=bucket, Key=key, **ranged)["Body"].read()
        except (ClientError, BotoCoreError) as error:
            raise _error(uri, error) from None

    def _boto_head(self, uri: str) -> ObjectInfo:
        bucket, key = split_s3_uri(uri)
        try:
            found = self._client.head_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as error:
            raise _error(uri, error) from None
        return ObjectInfo(uri, found.get("ETag"), found.get("ContentLength"))

    def size(self, uri: str) -> int:
        return self.head(uri).size

    def put(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3_uri(uri)
        _count("PUT")
        try:
            obstore.put(self._store(bucket), key, data)
        except Exception as error:
            raise _obstore_error(uri, error) from None

    def exists(self, uri: str) -> bool:
        try:
            self.size(uri)
            return True
        except MissingObjectError:
            return False

    def make_folder(self, uri: str) -> None:
        bucket, _ = split_s3_uri(uri)
        _count("HEAD")
        try:  # some servers create a bucket on the first PUT; AWS does not, so check explicitly
            self._client.head_bucket(Bucket=bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(_missing_bucket(uri)) from None
            raise _error(uri, error) from None
        except BotoCoreError as error:
            raise _error(uri, error) from None

    def remove_partials(self, prefix: str) -> int:
        return 0  # a PUT is atomic: nothing is left of one cut short

    def delete(self, uris: Iterable[str]) -> None:
        by_bucket: dict[str, list[str]] = {}
        for uri in uris:
            bucket, key = split_s3_uri(uri)
            by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            for start in range(0, len(keys), PAGE):  # one DeleteObjects request per 1,000 keys
                _count("DELETE")
                try:
                    obstore.delete(self._store(bucket), keys[start : start + PAGE])
                except Exception as error:
                    raise _obstore_error(f"{S3_SCHEME}{bucket}/", error) from None


PAGE = 1000
"""Keys per LIST page and per DeleteObjects request (S3's maximum for both)."""
RETRIES = {
    "max_retries": 15,
    "backoff": {"init_backoff": timedelta(milliseconds=200), "max_backoff": timedelta(seconds=5), "base": 4},
    "retry_timeout": timedelta(minutes=3),
}
"""object_store's jittered exponential backoff (each wait drawn between the first and `base` times the
last, so it roughly doubles, up to 5 s) over about a minute: a store down for half a minute is ridden
out, a dead one fails the work that needed it (which a re-run redoes)."""


def _folder(prefix: str) -> tuple[str, str]:
    bucket, key = split_s3_uri(prefix)
    return bucket, key if not key or key.endswith("/") else key + "/"


def _listed(bucket: str, item: dict) -> ObjectInfo:
    return ObjectInfo(f"{S3_SCHEME}{bucket}/{item['Key']}", item.get("ETag"), item.get("Size"))


def _info(bucket: str, meta: dict) -> ObjectInfo:
    return ObjectInfo(f"{S3_SCHEME}{bucket}/{meta['path']}", meta.get("e_tag"), meta.get("size"))


def _obstore_error(uri: str, error: Exception) -> StorageError:
    """The one-line error for an obstore failure: ObjectError when only this object is at fault."""
    text = str(error)
    if "<Code>NoSuchBucket</Code>" in text:
        return StorageError(_missing_bucket(uri))
    if isinstance(error, (FileNotFoundError, NotFoundError)):
        return MissingObjectError(f"{uri} does not exist")
    if isinstance(error, (PermissionDeniedError, UnauthenticatedError)):
        return ObjectError(f"access denied to {uri}: check AWS credentials and permissions")
    if isinstance(error, (ValueError, InvalidPathError)):  # a key object_store will not name ("..")
        return ObjectError(f"{uri}: not a valid object key ({line_of(error, limit=200)})")
    if isinstance(error, StorageError):
        return error
    return StorageError(f"{uri}: {line_of(error)}")


OBJECT_CODES = (
    *("NoSuchKey", "404", "AccessDenied", "403"),
    *("InvalidRequest", "InvalidArgument", "KeyTooLongError", "InvalidObjectState"),  # e.g. in Glacier
)
"""S3 error codes about the one object asked for: its row is an error, the work goes on."""


def _error(uri: str, error: Exception) -> StorageError:
    """The one-line error for a boto3 failure: ObjectError when only this object is at fault."""
    code = error.response.get("Error", {}).get("Code", "") if isinstance(error, ClientError) else ""
    cls = ObjectError if code in OBJECT_CODES else StorageError
    return cls(_describe(uri, error))


def _bucket_region(client, bucket: str) -> str:
    """The bucket's own region as the store says it (`x-amz-bucket-region`, one HEAD per bucket and
    process; boto3 follows AWS's redirect there, obstore does not), else the configured one."""
    _count("HEAD")
    try:
        headers = client.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]
    except ClientError as error:  # a refusal (403, 404) still names the region
        headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    except BotoCoreError:
        headers = {}
    return headers.get("x-amz-bucket-region") or client.meta.region_name or "us-east-1"


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
    return f"{uri}: {line_of(error)}"


def _missing_bucket(uri: str) -> str:
    return f"bucket {split_s3_uri(uri)[0]!r} does not exist ({uri}): create it or fix the URI"


def _local_error(uri: str, error: OSError) -> StorageError:
    """A local file that is missing, a folder or forbidden is the object's problem; anything else (a disk
    error) the store's."""
    one = isinstance(error, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError))
    return (ObjectError if one else StorageError)(f"{uri}: {error.strerror or error}")


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
        except OSError as error:
            raise _local_error(uri, error) from None

    def get_range(self, uri: str, start: int, length: int) -> bytes:
        _count("GET")
        try:
            with open(uri, "rb") as file:
                file.seek(start)
                return file.read(length)
        except OSError as error:
            raise _local_error(uri, error) from None

    def head(self, uri: str) -> ObjectInfo:
        _count("HEAD")
        try:
            stat = Path(uri).stat()
        except OSError as error:
            raise _local_error(uri, error) from None
        return ObjectInfo(uri, str(stat.st_mtime_ns), stat.st_size)

    def size(self, uri: str) -> int:
        return self.head(uri).size

    def put(self, uri: str, data: bytes) -> None:
        _count("PUT")
        path = Path(uri)
        partial = path.with_name(f"_{path.name}.{os.getpid()}.{threading.get_ident()}{PARTIAL}")
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

    def remove_partials(self, prefix: str) -> int:
        removed = 0
        for folder, _, names in os.walk(prefix):
            for name in names:
                if name.startswith("_") and name.endswith(PARTIAL):
                    Path(folder, name).unlink(missing_ok=True)
                    removed += 1
        return removed

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
