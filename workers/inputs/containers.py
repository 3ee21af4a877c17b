"""Containers as INPUT: WebDataset tar shards and Parquet tables of image bytes, read a piece at a time.

A container is cut into pieces of PIECE_BYTES by byte range, from its size alone (no request): the
listing names each piece `<container>#bytes=<start>-<end>` (12 digits each, so pieces sort in order;
`end` is `start` + PIECE_BYTES even for the last piece, so a container that grows keeps the names of
the pieces it had, and the reader stops at the container's end), and each piece is one shard, read
with one or two ranged GETs, never one request per image:

- tar (`.tar`): a piece holds the members whose first header (a pax or GNU long-name header included)
  starts in its range. Tar headers sit on 512-byte blocks, so a piece finds its first header by scanning
  the blocks from LOOKBACK bytes before its start for a valid one (the `ustar` magic and the header
  checksum), then walks the headers with Python's tarfile. A member whose data runs past the range is
  completed with one more ranged GET. `.tar.gz` / `.tgz` cannot be entered mid-stream: one piece each.
- Parquet (`.parquet`): a piece holds the row groups whose first column chunk starts in its range; the
  footer and those row groups' image (and id) columns are read with ranged GETs, a row group at a time.

Every image member is one row: `uri` is `<container>#<member path>` (tar) or `<container>#row=<n>`
(Parquet, n from 0 over the file), `key` the WebDataset sample key (the member path up to its first dot
after the last `/`) or the Parquet row's id (`--id-column`, or the Hugging Face image struct's `path`).
Other members (`.json`, `.txt`, `.cls`, ...) make no row. What cannot be read becomes an error row: a
member cut short, a header cut short (a row named after the piece), a piece of a Parquet file without an
image column. (Two container kinds with their piece rules: a little over 300 lines, kept in one module
since both share the piece naming, the listing expansion and the error rows.)
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facesweep.workers.config import PIECE_BYTES, ContainerSettings
from facesweep.workers.errors import ErrorKind, ImageError, ImageFailure, line_of
from facesweep.workers.inputs.kinds import IMAGE_EXTENSIONS
from facesweep.workers.storage import ObjectError, RangedFile, StorageError, storage_for

TAR_SUFFIXES = (".tar",)
GZIP_TAR_SUFFIXES = (".tar.gz", ".tgz")
PARQUET_SUFFIXES = (".parquet",)
CONTAINER_SUFFIXES = (*TAR_SUFFIXES, *GZIP_TAR_SUFFIXES, *PARQUET_SUFFIXES)
LOOKBACK = 64 * 1024
"""Bytes before a piece's start scanned for headers: a member's pax or long-name headers that begin
before the piece belong to the piece before it, which must see them whole."""
BLOCK = 512
WHOLE = 10**12 - 1
"""The end a `.tar.gz` piece is named with: it is always the whole container (a gzip stream cannot be
entered mid-way), whatever the container's size."""
PIECE = re.compile(r"#bytes=(\d{12})-(\d{12})$")


@dataclass(frozen=True)
class Member:
    """One image of a container: its row's name and key, and its bytes or why they could not be read."""

    name: str  # the row's uri
    key: str | None
    data: bytes | None = None
    failure: ImageFailure | None = None

    @property
    def size(self) -> int | None:
        return None if self.data is None else len(self.data)


def is_container(uri: str) -> bool:
    return uri.lower().endswith(CONTAINER_SUFFIXES)


def piece_uri(container: str, start: int, end: int) -> str:
    return f"{container}#bytes={start:012d}-{end:012d}"


def parse_piece(uri: str) -> tuple[str, int, int] | None:
    """(container, start, end) of a piece's uri, None for any other uri."""
    match = PIECE.search(uri)
    if match is None or not is_container(uri[: match.start()]):
        return None
    return uri[: match.start()], int(match.group(1)), int(match.group(2))


def expand(listing: pa.Table, piece_bytes: int = PIECE_BYTES) -> pa.Table:
    """The listing with each container replaced by its pieces (same etag and size), sorted by uri; a
    container whose size the listing lacks is asked for it (one HEAD)."""
    uris = listing["uri"]
    suffixes = "|".join(re.escape(s) for s in CONTAINER_SUFFIXES)
    mask = pc.match_substring_regex(pc.utf8_lower(uris), rf"({suffixes})$")
    if not pc.any(mask).as_py():
        return listing
    containers, rest = listing.filter(mask), listing.filter(pc.invert(mask))
    rows: dict[str, list] = {"uri": [], "etag": [], "size": []}
    for uri, etag, size in zip(*(containers[c].to_pylist() for c in ("uri", "etag", "size")), strict=True):
        size = storage_for(uri).size(uri) if size is None else size
        if uri.lower().endswith(GZIP_TAR_SUFFIXES):
            names = [piece_uri(uri, 0, WHOLE)]
        else:
            names = [piece_uri(uri, s, s + piece_bytes) for s in range(0, max(size, 1), piece_bytes)]
        rows["uri"] += names
        rows["etag"] += [etag] * len(names)
        rows["size"] += [size] * len(names)
    pieces = pa.table(rows, schema=listing.schema)
    return pa.concat_tables([rest, pieces]).sort_by("uri")


def fetch_members(pieces: Mapping[str, str], settings: ContainerSettings) -> dict[str, Member]:
    """Container images by uri, `pieces` naming each uri's piece (the output's `container`): each piece
    read once (`facesweep show`); an image that cannot be read now has its failure."""
    wanted: dict[str, set[str]] = {}
    for uri, piece in pieces.items():
        wanted.setdefault(piece, set()).add(uri)
    found = {}
    for piece, uris in wanted.items():
        container = (parse_piece(piece) or (piece,))[0]
        try:
            members = read_piece(piece, storage_for(container).size(container), settings)
        except StorageError as error:
            members = [Member(piece, None, failure=ImageFailure(ErrorKind.FETCH, str(error)))]
        by_name = {m.name: m for m in members}  # a failure of the whole piece is named after it
        absent = ImageFailure(ErrorKind.FETCH, f"not in {piece}")
        gone = by_name.get(piece) or Member(piece, None, failure=absent)
        found |= {uri: by_name.get(uri, gone) for uri in uris}
    return found


def read_piece(piece: str, size: int, settings: ContainerSettings) -> list[Member]:
    """The image members of a piece (its uri from `piece_uri`) of a container of `size` bytes. A piece
    that cannot be read at all (the container gone or forbidden, not a gzip or Parquet file, without the
    columns asked for) is one error row named after the piece; the store failing raises StorageError
    (the shard is retried, nothing is recorded)."""
    container, start, end = parse_piece(piece) or (piece, 0, size)
    try:
        return _members(piece, container, start, min(end, size), size, settings)
    except ImageError as error:
        return [Member(piece, None, failure=error.failure)]
    except ObjectError as error:
        return [Member(piece, None, failure=ImageFailure(ErrorKind.FETCH, str(error)))]
    except StorageError:
        raise
    except EOFError as error:
        failure = ImageFailure(ErrorKind.TRUNCATED, f"{container} is cut short: {error}")
        return [Member(piece, None, failure=failure)]
    except (zlib.error, gzip.BadGzipFile, pa.ArrowException) as error:
        reason = line_of(error, limit=200)
        failure = ImageFailure(ErrorKind.CORRUPT, f"{container} cannot be read: {reason}")
        return [Member(piece, None, failure=failure)]


def _members(
    piece: str, container: str, start: int, end: int, size: int, settings: ContainerSettings
) -> list[Member]:
    lower = container.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return _parquet_members(piece, container, start, end, size, settings)
    if lower.endswith(GZIP_TAR_SUFFIXES):
        data = gzip.decompress(storage_for(container).get(container))
        return _tar_members(piece, container, data, 0, 0, len(data), len(data))
    first = max(0, start - LOOKBACK) // BLOCK * BLOCK
    last = min(end + LOOKBACK, size)  # a member's headers that straddle `end`, whole
    data = storage_for(container).get_range(container, first, last - first) if last > first else b""
    return _tar_members(piece, container, data, first, start, end, size)


def _tar_members(
    piece: str, container: str, data: bytes, first: int, start: int, end: int, size: int
) -> list[Member]:
    """The members of `data` (the container's bytes from offset `first`) whose headers start in
    [start, end); a member's data beyond `data` is fetched (up to `size`, the container's end)."""
    header = _first_header(data)
    if header is None or first + header >= end:
        return []
    base = first + header
    stream = io.BytesIO(data[header:])
    members, wanted = [], []
    reach = base  # where the last member parsed ends: the next header's block
    try:
        for info in tarfile.TarFile(fileobj=stream, encoding="utf-8", errors="replace"):
            offset = base + info.offset
            if offset >= end:
                break
            reach = base + info.offset_data + -(-info.size // BLOCK) * BLOCK
            if offset >= start and info.isfile() and info.name.lower().endswith(tuple(IMAGE_EXTENSIONS)):
                wanted.append((info, base + info.offset_data))
    except tarfile.TarError as error:  # the end of `data`; at the file's end, a broken header
        problem = f"unreadable tar header at byte {reach}: {error}"
    else:  # tarfile ends quietly at a header cut short
        problem = f"truncated tar: a header at byte {reach} is cut (the file ends at byte {size})"
    # A member cut by the file's end has its own row (from the piece holding its header); a header that
    # cannot be read is a row of the piece it lies in, when it is not the archive's zero blocks.
    if first + len(data) >= size and start <= reach < min(end, size) and any(data[reach - first :]):
        members.append(Member(piece, None, failure=ImageFailure(ErrorKind.TRUNCATED, problem)))
    extra = _beyond(container, wanted, first + len(data), size)
    for info, at in wanted:
        name, key = f"{container}#{info.name}", _sample_key(info.name)
        if at + info.size > size:
            reason = f"truncated tar: {info.name} needs {info.size} bytes, the file ends at byte {size}"
            members.append(Member(name, key, failure=ImageFailure(ErrorKind.TRUNCATED, reason)))
            continue
        held = first + len(data)
        if at + info.size <= held:
            body = data[at - first : at - first + info.size]
        else:
            body = data[at - first :] + extra[: at + info.size - held]
        members.append(Member(name, key, body))
    return members


def _beyond(container: str, wanted: list[tuple[tarfile.TarInfo, int]], held: int, size: int) -> bytes:
    """The bytes after `held` that the wanted members still need (within the file): one ranged GET."""
    needed = min(max((at + info.size for info, at in wanted), default=held), size)
    return storage_for(container).get_range(container, held, needed - held) if needed > held else b""


def _first_header(data: bytes) -> int | None:
    """The offset in `data` (which starts on a block) of its first valid tar header: the blocks with the
    `ustar` magic found at once (NumPy), then the first whose header checksum holds."""
    blocks = np.frombuffer(data[: len(data) // BLOCK * BLOCK], np.uint8).reshape(-1, BLOCK)
    magic = (blocks[:, 257:262] == np.frombuffer(b"ustar", np.uint8)).all(axis=1)
    for index in np.flatnonzero(magic):
        block = blocks[index]
        stored = bytes(block[148:156]).split(b"\0")[0].strip()
        if re.fullmatch(rb"[0-7]+", stored) and _checksum(block) == int(stored, 8):
            return int(index) * BLOCK
    return None


def _checksum(block: np.ndarray) -> int:
    """A tar header's checksum: its bytes summed with the checksum field counted as spaces."""
    return int(block[:148].sum()) + int(block[156:].sum()) + 8 * ord(" ")


def _sample_key(name: str) -> str:
    """WebDataset's `__key__`: the member path up to the first dot of its last component."""
    folder, _, base = name.rpartition("/")
    stem = base.split(".", 1)[0]
    return f"{folder}/{stem}" if folder else stem


def _parquet_members(
    piece: str, container: str, start: int, end: int, size: int, settings: ContainerSettings
) -> list[Member]:
    """The rows of the row groups whose first column chunk starts in [start, end)."""
    file = pq.ParquetFile(RangedFile(container, size))
    column, path_field = _image_column(container, file.schema_arrow, settings)
    metadata = file.metadata
    first_row, members = 0, []
    columns = [column, *([settings.id_column] if settings.id_column else [])]
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        chunk = metadata.row_group(group).column(0)
        offset = chunk.dictionary_page_offset or chunk.data_page_offset
        if start <= offset < end:
            table = file.read_row_group(group, columns=columns)
            members += _rows(container, table, column, path_field, settings.id_column, first_row)
        first_row += rows
    return members


def image_kind(field: pa.Field) -> str | None:
    """How a Parquet column holds images: `binary` bytes, a Hugging Face image `struct`, or None."""
    if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
        return "binary"
    if pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0:
        return "struct"
    return None


def _image_column(container: str, schema: pa.Schema, settings: ContainerSettings) -> tuple[str, str | None]:
    """The image column (and, for a Hugging Face image struct, its `path` field's name) of `schema`;
    ImageError when it has none, or not the columns `settings` name."""
    wanted, id_column = settings.image_column, settings.id_column
    if id_column is not None and id_column not in schema.names:
        raise ImageError(f"{container}: no column {id_column!r} (--id-column)", ErrorKind.NOT_AN_IMAGE)

    if wanted is not None:
        if wanted not in schema.names or image_kind(schema.field(wanted)) is None:
            reason = f"{container}: --image-column {wanted!r} is not a binary or image column"
            raise ImageError(reason, ErrorKind.NOT_AN_IMAGE)
        return wanted, "path" if image_kind(schema.field(wanted)) == "struct" else None
    found = [f.name for f in schema if image_kind(f) is not None]
    if len(found) != 1:
        what = f"several: {', '.join(found)}" if found else "none"
        reason = f"{container}: no single image-bytes column ({what}): give --image-column"
        raise ImageError(reason, ErrorKind.NOT_AN_IMAGE)
    return found[0], "path" if image_kind(schema.field(found[0])) == "struct" else None


def _rows(
    container: str, table: pa.Table, column: str, path_field: str | None, id_column: str | None, first: int
) -> list[Member]:
    images = table[column].combine_chunks()
    keys: list[str | None] = [None] * table.num_rows
    if path_field is not None and images.type.get_field_index(path_field) >= 0:
        keys = pc.struct_field(images, path_field).to_pylist()
    if path_field is not None:
        images = pc.struct_field(images, "bytes")
    if id_column is not None:
        keys = pc.cast(table[id_column], pa.string()).to_pylist()
    members = []
    for n, (data, key) in enumerate(zip(images.to_pylist(), keys, strict=True), first):
        name = f"{container}#row={n}"
        if data is None:
            failure = ImageFailure(ErrorKind.NOT_AN_IMAGE, "no image bytes in this row")
            members.append(Member(name, key, failure=failure))
        else:
            members.append(Member(name, key, data))
    return members
