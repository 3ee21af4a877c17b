"""What INPUT names, as a stream of Arrow tables (uri, etag, size) sorted by uri, each image once.

- a store's prefix (`s3://`, `az://`) or a local directory: every image below it. The first level of
  sub-folders is listed with LISTERS requests in flight (one listing per sub-folder, merged in order), so a
  date- or shard-partitioned bucket lists at LISTERS times the speed of one page after another;
- a manifest: `.txt`/`.lst` (one URI or path per line; blank lines and `#` comments skipped) or `.parquet`
  with a `uri` column (and optional `etag`, `size`), local or in a store; relative paths are taken from the
  manifest's folder;
- an S3 Inventory report: its `manifest.json` (CSV or Parquet inventories; keys of the source bucket,
  delete markers and non-current versions left out).

- a container, or containers among the above: WebDataset tar shards (`.tar`, `.tar.gz`) and Parquet
  tables of image bytes (a `.parquet` without a `uri` column), each listed as its pieces (containers.py);
- a video, or videos among the above (`.mp4`, `.mov`, `.mkv`, `.webm`, `.avi`), each listed as its
  pieces of time (videos.py).

Prefixes, directories and inventories yield only image files, containers and videos: by extension
(case-insensitive), or by `include`, a glob matched case-insensitively against the path below the
prefix (an inventory's keys).
Manifests and inventories are not in key order: they are sorted (through disk beyond sorted_runs.RUN_ROWS)
and duplicates dropped. The version tag is the store's ETag, a local file's modification time, or null.
"""

from __future__ import annotations

import fnmatch
import json
import queue
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from urllib.parse import unquote_plus

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from facesweep.workers.config import ContainerSettings
from facesweep.workers.errors import UserError
from facesweep.workers.inputs import containers, videos
from facesweep.workers.inputs.containers import CONTAINER_SUFFIXES, image_kind, is_container
from facesweep.workers.inputs.kinds import IMAGE_EXTENSIONS
from facesweep.workers.inputs.sorted_runs import check_sorted, sort_unsorted
from facesweep.workers.storage import (
    URI_PATTERN,
    ObjectInfo,
    RangedFile,
    Storage,
    as_folder,
    is_remote,
    parent,
    split_uri,
    storage_for,
)

LISTING_SCHEMA = pa.schema([("uri", pa.string()), ("etag", pa.string()), ("size", pa.int64())])
TEXT_MANIFESTS = (".txt", ".lst")
PARQUET_MANIFESTS = (".parquet",)
INVENTORY_MANIFEST = "manifest.json"
LISTERS = 16
"""Sub-folders listed at once."""
PAGE = 1000


class InputError(UserError, ValueError):
    """INPUT that names nothing usable; the message says what to give instead."""


def is_manifest(source: str) -> bool:
    return source.lower().endswith((*TEXT_MANIFESTS, *PARQUET_MANIFESTS, INVENTORY_MANIFEST))


def list_images(
    source: str,
    include: str | None = None,
    settings: ContainerSettings = ContainerSettings(),  # noqa: B008 (frozen)
    known: Mapping[videos.VideoKey, float] | None = None,
) -> Iterator[pa.Table]:
    """Every image `source` names, as LISTING_SCHEMA tables in strictly increasing uri order; each
    container (a tar or a Parquet table of image bytes) and each video as its pieces (`in_pieces`)."""
    yield from in_pieces(list_entries(source, include), settings, known)


def list_entries(source: str, include: str | None = None) -> Iterator[pa.Table]:
    """What `source` names, as `list_images` does, but each container and video as itself."""
    yield from _list(source, include)


def in_pieces(
    tables: Iterable[pa.Table],
    settings: ContainerSettings,
    known: Mapping[videos.VideoKey, float] | None = None,
) -> Iterator[pa.Table]:
    """The listing `tables` with each container and video replaced by its pieces (`containers.expand`,
    `videos.expand`; `known`: video durations an earlier run recorded, not probed again)."""
    for table in tables:
        yield videos.expand(containers.expand(table, settings.piece_bytes), settings.piece_seconds, known)


def _list(source: str, include: str | None) -> Iterator[pa.Table]:
    if source.endswith(INVENTORY_MANIFEST):
        if not is_remote(source):
            raise InputError(f"{source}: an S3 Inventory report is read from S3: give its s3:// URI")
        return sort_unsorted(_read_inventory(source, include), LISTING_SCHEMA)
    if is_manifest(source) and not _holds_images(source):
        return sort_unsorted(_read_manifest(source), LISTING_SCHEMA)
    if not is_remote(source) and Path(source).is_file():  # one image or container
        return iter([_table([storage_for(source).head(str(Path(source).absolute()))])])
    if is_remote(source) and (is_container(source) or videos.is_video(source)):  # one object
        return iter([_table([storage_for(source).head(source)])])
    if not is_remote(source) and not Path(source).is_dir():
        raise InputError(
            f"INPUT {source} does not exist: give an s3:// or az:// prefix, a directory, a manifest "
            f"({', '.join(TEXT_MANIFESTS + PARQUET_MANIFESTS)}) or an S3 Inventory {INVENTORY_MANIFEST}"
        )
    root = as_folder(source)
    return _checked(_filtered(map(_table, _folder_pages(storage_for(source), root)), root, include), source)


def list_uris(source: str, include: str | None = None) -> Iterator[str]:
    """The URIs of `list_images`, one by one."""
    for table in list_images(source, include):
        yield from table["uri"].to_pylist()


def _holds_images(source: str) -> bool:
    """Whether a `.parquet` INPUT is a table of image bytes (a container) rather than a manifest: it has
    no `uri` column but an image column (one GET of its footer); an InputError if it has neither."""
    if not source.lower().endswith(PARQUET_MANIFESTS):
        return False
    if not is_remote(source) and not Path(source).is_file():
        raise InputError(f"manifest {source} does not exist")
    schema = pq.ParquetFile(RangedFile(source)).schema_arrow
    if "uri" in schema.names:
        return False
    if any(image_kind(field) for field in schema):
        return True
    raise InputError(
        f"manifest {source} needs a 'uri' column (found: {', '.join(schema.names)}), or, as a table of "
        "images, a binary or image column"
    )


def _table(objects: list[ObjectInfo]) -> pa.Table:
    return pa.table(
        {
            "uri": pa.array([o.uri for o in objects], pa.string()),
            "etag": pa.array([o.etag for o in objects], pa.string()),
            "size": pa.array([o.size for o in objects], pa.int64()),
        }
    )


def _checked(tables: Iterator[pa.Table], source: str) -> Iterator[pa.Table]:
    last = None
    for table in tables:
        if table.num_rows:
            check_sorted(table, last, source)
            last = table["uri"][-1].as_py()
            yield table


def _filtered(tables: Iterator[pa.Table], root: str, include: str | None) -> Iterator[pa.Table]:
    """Only the images below `root`."""
    for table in tables:
        yield table.filter(_is_image(pc.utf8_slice_codeunits(table["uri"], len(root)), include))


def _is_image(relative: pa.Array | pa.ChunkedArray, include: str | None) -> pa.Array:
    """Whether each path matches `include` (a glob), or without one has an image extension."""
    if include is None:
        suffixes = [e.lstrip(".") for e in (*IMAGE_EXTENSIONS, *CONTAINER_SUFFIXES, *videos.VIDEO_SUFFIXES)]
        pattern = rf"\.({'|'.join(re.escape(e) for e in suffixes)})$"
    else:
        pattern = "^" + fnmatch.translate(include).replace(r"\Z", r"\z")
    return pc.fill_null(pc.match_substring_regex(relative, pattern, ignore_case=True), False)


def _folder_pages(storage: Storage, folder: str) -> Iterator[list[ObjectInfo]]:
    """Pages of every object below `folder` in key order: its own objects, and each sub-folder's full
    listing (LISTERS of them at once, each a few pages ahead of the reader) in its place."""
    objects, folders = storage.list_level(folder)
    entries = sorted([(o.uri, o) for o in objects] + [(f, None) for f in folders], key=lambda e: e[0])
    stop = threading.Event()
    queues: list[queue.Queue] = [queue.Queue(maxsize=4) for _ in folders]
    folders.sort()
    with ThreadPoolExecutor(LISTERS, thread_name_prefix="list") as pool:
        for i, sub in enumerate(folders[:LISTERS]):
            pool.submit(_list_into, storage, sub, queues[i], stop)
        started, taken, run = min(LISTERS, len(folders)), 0, []
        try:
            for _, info in entries:
                if info is not None:
                    run.append(info)
                    continue
                if run:
                    yield run
                    run = []
                if started < len(folders):
                    pool.submit(_list_into, storage, folders[started], queues[started], stop)
                    started += 1
                while (page := queues[taken].get()) is not None:
                    if isinstance(page, BaseException):
                        raise page
                    yield page
                taken += 1
            if run:
                yield run
        finally:
            stop.set()


def _list_into(storage: Storage, folder: str, pages: queue.Queue, stop: threading.Event) -> None:
    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        objects = storage.list_objects(folder)
        while page := list(islice(objects, PAGE)):
            if not put(page):
                return
        put(None)
    except Exception as error:  # handed to the reader, which raises it in the job's thread
        put(error)


def _read_manifest(source: str) -> Iterator[pa.Table]:
    if not is_remote(source) and not Path(source).is_file():
        raise InputError(f"manifest {source} does not exist")
    base = parent(source)
    if source.lower().endswith(PARQUET_MANIFESTS):
        file = pq.ParquetFile(RangedFile(source))
        names = file.schema_arrow.names
        if "uri" not in names:
            raise InputError(f"manifest {source} has no `uri` column (it has: {', '.join(names)})")
        columns = [c for c in ("uri", "etag", "size") if c in names]
        for batch in file.iter_batches(columns=columns, batch_size=65536):
            table = pa.Table.from_batches([batch])
            yield _listing(_absolute(table["uri"], base), table, keep=pc.is_valid(table["uri"]))
        return
    try:  # utf-8-sig: a byte order mark (Notepad writes one) is not part of the first path
        text = storage_for(source).get(source).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"manifest {source} is not UTF-8 text (byte {error.start})") from None
    lines = pc.utf8_trim_whitespace(pa.array(text.splitlines(), pa.string()))
    keep = pc.and_(pc.not_equal(lines, ""), pc.invert(pc.starts_with(lines, "#")))
    lines = lines.filter(keep)
    yield _listing(_absolute(lines, base), pa.table({"uri": lines}))


def _listing(uris: pa.Array, columns: pa.Table, keep: pa.Array | None = None) -> pa.Table:
    """LISTING_SCHEMA rows from `uris` and whichever of etag / size `columns` has."""
    n = len(uris)
    etag = columns["etag"].cast(pa.string()) if "etag" in columns.column_names else pa.nulls(n, pa.string())
    size = columns["size"].cast(pa.int64()) if "size" in columns.column_names else pa.nulls(n, pa.int64())
    table = pa.table([uris, etag, size], schema=LISTING_SCHEMA)
    return table if keep is None else table.filter(keep)


def _absolute(entries: pa.Array | pa.ChunkedArray, base: str) -> pa.Array:
    """Manifest entries as URIs: a store's URIs and absolute paths as they are, others below `base`."""
    absolute = pc.or_(pc.match_substring_regex(entries, URI_PATTERN), pc.starts_with(entries, "/"))
    relative = pc.replace_substring_regex(entries, r"^(\./)+", "")
    return pc.if_else(absolute, entries, pc.binary_join_element_wise(base, relative, "/"))


def _read_inventory(source: str, include: str | None) -> Iterator[pa.Table]:
    """The current objects an S3 Inventory report lists (its manifest.json names the data files)."""
    try:
        manifest = json.loads(storage_for(source).get(source))
        data_format, files = manifest["fileFormat"].upper(), manifest["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{source} is not an S3 Inventory manifest.json ({error})") from None
    if data_format not in ("CSV", "PARQUET"):
        raise InputError(f"{source}: {data_format} inventories are not supported: use CSV or Parquet")
    store, bucket, _ = split_uri(source)  # the report's data files are in the manifest's bucket
    for entry in files:
        uri = f"{store}{bucket}/{entry['key']}"
        if data_format == "CSV":
            yield _inventory_rows(store, _inventory_csv(uri, manifest["fileSchema"]), include)
        else:
            yield _inventory_rows(store, _inventory_parquet(uri), include)


_INVENTORY_COLUMNS = {"bucket": "bucket", "key": "key", "size": "size", "etag": "e_tag", "e_tag": "e_tag"}


def _inventory_csv(uri: str, file_schema: str) -> pa.Table:
    """A gzip CSV inventory file; keys are URL-encoded there."""
    names = [name.strip() for name in file_schema.split(",")]
    text_columns = {name: pa.string() for name in names if name.lower() in ("bucket", "key", "etag")}
    data = storage_for(uri).get(uri)
    stream = pa.input_stream(pa.BufferReader(data), compression="gzip" if uri.endswith(".gz") else None)
    table = pacsv.read_csv(
        stream,
        read_options=pacsv.ReadOptions(column_names=names),
        convert_options=pacsv.ConvertOptions(column_types=text_columns),
    )
    table = table.rename_columns([_INVENTORY_COLUMNS.get(n.lower(), _snake(n)) for n in names])
    keys = table["key"].to_pylist()
    decoded = [unquote_plus(k) if k and ("%" in k or "+" in k) else k for k in keys]
    return table.set_column(table.schema.get_field_index("key"), "key", pa.array(decoded, pa.string()))


def _snake(name: str) -> str:
    """IsLatest -> is_latest, as Parquet inventories name the CSV ones' columns."""
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _inventory_parquet(uri: str) -> pa.Table:
    file = pq.ParquetFile(RangedFile(uri))
    wanted = ("bucket", "key", "size", "e_tag", "is_latest", "is_delete_marker")
    return file.read(columns=[c for c in wanted if c in file.schema_arrow.names])


def _inventory_rows(store: str, table: pa.Table, include: str | None) -> pa.Table:
    """LISTING_SCHEMA rows of an inventory file's current, non-deleted images (URIs in `store`, `s3://`)."""
    keep = _is_image(table["key"], include)
    if "is_latest" in table.column_names:
        keep = pc.and_(keep, pc.fill_null(pc.equal(table["is_latest"].cast(pa.string()), "true"), True))
    if "is_delete_marker" in table.column_names:
        marker = pc.equal(table["is_delete_marker"].cast(pa.string()), "true")
        keep = pc.and_(keep, pc.invert(pc.fill_null(marker, False)))
    uris = pc.binary_join_element_wise(store, table["bucket"], "/", table["key"], "")
    columns = table.rename_columns(["etag" if n == "e_tag" else n for n in table.column_names])
    return _listing(uris, columns, keep)
