"""Local files: a path is the object's URI. A write is atomic: a hidden temporary file renamed into place."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from facesweep.workers.storage.base import MissingObjectError, ObjectError, ObjectInfo, StorageError, count

PARTIAL = ".partial"
"""How a local write's temporary file ends (`_<name>.<pid>.<thread>.partial`, renamed once whole)."""


def _local_error(uri: str, error: OSError) -> StorageError:
    """A local file that is missing, a folder or forbidden is the object's problem; anything else (a disk
    error) the store's."""
    one = isinstance(error, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError))
    return (ObjectError if one else StorageError)(f"{uri}: {error.strerror or error}")


def _write(uri: str, data: bytes) -> str:
    """Writes the file whole (a temporary file renamed into place); its version."""
    path = Path(uri)
    partial = path.with_name(f"_{path.name}.{os.getpid()}.{threading.get_ident()}{PARTIAL}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        version = _version(partial.stat())
        partial.replace(path)
        return version
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise StorageError(f"cannot write {uri}: {error.strerror or error}") from None


def _version(stat: os.stat_result) -> str:
    """A conditional write's version of a file: each write is a new file (inode) at a new time."""
    return f"{stat.st_ino}-{stat.st_mtime_ns}"


@contextlib.contextmanager
def _folder_locked(uri: str) -> Iterator[None]:
    """An exclusive flock on the folder of `uri` (made if missing) while a conditional write compares and
    writes: one at a time across processes, and the kernel drops it with its process."""
    folder = Path(uri).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise StorageError(f"cannot write {uri}: {error.strerror or error}") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError as error:
            raise StorageError(f"cannot lock {folder} to write {uri}: {error.strerror or error}") from None
        yield
    finally:
        os.close(descriptor)


class LocalStorage:
    """The local filesystem; URIs are paths."""

    def list(self, prefix: str) -> Iterator[str]:
        return (info.uri for info in self.list_objects(prefix))

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Depth first, each folder's entries sorted with sub-folders as `name/`: exactly the order of
        the full paths as strings (as object stores list keys)."""
        objects, folders = self.list_level(prefix)
        entries = sorted([(o.uri, o) for o in objects] + [(f, None) for f in folders])
        for path, info in entries:
            if info is None:
                yield from self.list_objects(path)
            else:
                yield info

    def list_level(self, prefix: str) -> tuple[list[ObjectInfo], list[str]]:
        root = Path(prefix).absolute()
        count("LIST")
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
        count("GET")
        try:
            return Path(uri).read_bytes()
        except OSError as error:
            raise _local_error(uri, error) from None

    def get_range(self, uri: str, start: int, length: int) -> bytes:
        count("GET")
        try:
            with open(uri, "rb") as file:
                file.seek(start)
                return file.read(length)
        except OSError as error:
            raise _local_error(uri, error) from None

    def head(self, uri: str) -> ObjectInfo:
        count("HEAD")
        try:
            stat = Path(uri).stat()
        except OSError as error:
            raise _local_error(uri, error) from None
        return ObjectInfo(uri, str(stat.st_mtime_ns), stat.st_size)

    def size(self, uri: str) -> int:
        return self.head(uri).size

    def put(self, uri: str, data: bytes) -> None:
        count("PUT")
        _write(uri, data)

    def create(self, uri: str, data: bytes) -> str | None:
        count("PUT")
        with _folder_locked(uri):
            return None if os.path.lexists(uri) else _write(uri, data)

    def replace(self, uri: str, data: bytes, version: str) -> str | None:
        count("PUT")
        with _folder_locked(uri):
            try:
                current = _version(os.stat(uri))
            except FileNotFoundError:
                return None
            return _write(uri, data) if current == version else None

    def get_versioned(self, uri: str) -> tuple[bytes, str]:
        count("GET")
        try:
            with open(uri, "rb") as file:
                return file.read(), _version(os.fstat(file.fileno()))
        except FileNotFoundError:
            raise MissingObjectError(f"{uri} does not exist") from None
        except OSError as error:
            raise _local_error(uri, error) from None

    def exists(self, uri: str) -> bool:
        count("HEAD")
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
            count("DELETE")
            try:
                Path(uri).unlink(missing_ok=True)
            except OSError as error:
                raise StorageError(f"cannot delete {uri}: {error.strerror or error}") from None

    def make_folder(self, uri: str) -> None:
        try:
            Path(uri).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot write {uri}: {error.strerror or error}") from None

    def check_writable(self, uri: str) -> None:
        """A folder made and removed in `uri`, or in its nearest existing parent (permission bits alone
        would pass root, and /proc)."""
        existing = Path(uri)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            os.rmdir(tempfile.mkdtemp(prefix="_facesweep-check-", dir=existing))
        except OSError as error:
            reason = error.strerror or error
            raise StorageError(f"cannot write {uri}: {existing}: {reason}: give a writable OUTPUT") from None
