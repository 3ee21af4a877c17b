"""What INPUT names, as a lazy stream of image URIs: an s3:// prefix, a local directory, or a manifest.

A manifest is a `.txt`/`.lst` file (one URI or path per line; blank lines and `#` comments skipped) or a
`.parquet` file with a `uri` column, local or on S3; relative paths are taken from the manifest's folder.
Prefixes and directories yield only image files: by extension (case-insensitive), or by `include`, a
glob matched case-insensitively against the path below the prefix.
"""

from __future__ import annotations

import fnmatch
import io
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq

from workers.images import IMAGE_EXTENSIONS
from workers.storage import is_s3_uri, storage_for

TEXT_MANIFESTS = (".txt", ".lst")
PARQUET_MANIFESTS = (".parquet",)


class InputError(ValueError):
    """INPUT that names nothing usable; the message says what to give instead."""


def is_manifest(source: str) -> bool:
    return source.lower().endswith(TEXT_MANIFESTS + PARQUET_MANIFESTS)


def list_inputs(source: str, include: str | None = None) -> Iterator[str]:
    """Every image URI that `source` names, lazily, in a deterministic order."""
    if is_manifest(source):
        return _read_manifest(source)
    if not is_s3_uri(source) and Path(source).is_file():
        return iter([str(Path(source).absolute())])
    if not is_s3_uri(source) and not Path(source).is_dir():
        raise InputError(
            f"INPUT {source} does not exist: give an s3://bucket/prefix, a directory, "
            f"or a manifest ({', '.join(TEXT_MANIFESTS + PARQUET_MANIFESTS)})"
        )
    return _filtered(source, include)


def _filtered(source: str, include: str | None) -> Iterator[str]:
    root = source.rstrip("/") + "/"
    for uri in storage_for(source).list(source):
        relative = uri[len(root) :] if uri.startswith(root) else PurePosixPath(uri).name
        if include is None:
            if PurePosixPath(relative).suffix.lower() in IMAGE_EXTENSIONS:
                yield uri
        elif fnmatch.fnmatch(relative.lower(), include.lower()):
            yield uri


def _read_manifest(source: str) -> Iterator[str]:
    if not is_s3_uri(source) and not Path(source).is_file():
        raise InputError(f"manifest {source} does not exist")
    data = storage_for(source).get(source)
    base = source.rsplit("/", 1)[0] if is_s3_uri(source) else str(Path(source).absolute().parent)
    if source.lower().endswith(PARQUET_MANIFESTS):
        file = pq.ParquetFile(io.BytesIO(data))
        if "uri" not in file.schema_arrow.names:
            raise InputError(
                f"manifest {source} has no `uri` column (it has: {', '.join(file.schema_arrow.names)})"
            )
        entries = (
            u for batch in file.iter_batches(columns=["uri"]) for u in batch.column(0).to_pylist() if u
        )
    else:
        try:  # utf-8-sig: a byte order mark (Notepad writes one) is not part of the first path
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise InputError(f"manifest {source} is not UTF-8 text (byte {error.start})") from None
        lines = (line.strip() for line in text.splitlines())
        entries = (line for line in lines if line and not line.startswith("#"))
    for entry in entries:
        yield _absolute(entry, base)


def _absolute(entry: str, base: str) -> str:
    if is_s3_uri(entry) or entry.startswith("/"):
        return entry
    return f"{base}/{entry}" if is_s3_uri(base) else str(Path(base) / entry)
