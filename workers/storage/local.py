"""Local files: a path is the object's URI. A write is atomic: a hidden temporary file renamed into place."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from facesweep.workers.storage.base import ObjectError, ObjectInfo, StorageError, count

PARTIAL = ".partial"
"""How a local write's temporary file ends (`_<name>.<pid>.<thread>.partial`, renamed once whole)."""


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
