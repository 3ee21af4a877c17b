"""Shard planning: the listing compared with the ledger in one sorted pass, its new images cut into shards.

Both streams are sorted by uri, so each window of the listing is matched against the ledger rows up to its
last uri with Arrow compute (`is_in`, a join): images that are new, done (unchanged), changed (ETag or
size differ) or vanished (done, no longer listed) are counted without either side held whole.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from facesweep.workers.inputs import containers, videos
from facesweep.workers.output.layout import shard_path

EXAMPLES = 5
PIECE = f"{containers.PIECE.pattern}|{videos.PIECE.pattern}"
"""A listed uri that is a piece of a container or of a video: a shard of its own."""
LISTED = ("uri", "etag", "size")
DONE_SCHEMA = pa.schema(
    [("uri", pa.string()), ("etag", pa.string()), ("size", pa.int64()), ("file", pa.int32())]
)
"""The ledger's stream (ledger.Ledger.done): a committed image, its version and which data file holds it."""


@dataclass(frozen=True)
class Shard:
    """A unit of work: one actor call, one shard file; the images' listed versions ride along. A shard
    of one container's or video's piece holds the piece's uri, and the whole object's etag and size."""

    index: int
    uris: tuple[str, ...]
    etags: tuple[str | None, ...]
    sizes: tuple[int | None, ...]

    @property
    def file_name(self) -> str:
        """Relative to OUTPUT."""
        return shard_path(self.index)

    @property
    def kind(self) -> str:
        """`video`, `piece` (of a container) or `objects`: shards of a kind take alike long."""
        if videos.parse_piece(self.uris[0]):
            return "video"
        return "piece" if containers.parse_piece(self.uris[0]) else "objects"


@dataclass
class PlanCounts:
    """What the comparison found so far; `finished` once the listing has been read to its end. A
    container's piece counts as one listed (new, done) entry."""

    @property
    def images_known(self) -> int | None:
        """The new images, when known: the listing is read to its end and holds no container piece."""
        return self.new if self.finished and not self.pieces else None

    listed: int = 0
    listed_pieces: int = 0  # of `listed`: container and video pieces (`video_pieces` counts the latter)
    new: int = 0
    done: int = 0
    changed: int = 0
    vanished: int = 0
    shards: int = 0
    pieces: int = 0  # of `new`: container and video pieces, whose images are known only once read
    video_pieces_new: int = 0  # of `pieces`: a video's
    finished: bool = False
    changed_examples: list[str] = field(default_factory=list)
    vanished_examples: list[str] = field(default_factory=list)
    video_pieces: Counter[str] = field(default_factory=Counter)  # listed pieces per video (its copy's)


def compare(listing: Iterable[pa.Table], done: Iterable[pa.Table], counts: PlanCounts) -> Iterator[pa.Table]:
    """The listing's new images (LISTING_SCHEMA tables); `counts` tallies everything else."""
    for new, _ in compare_with_changes(listing, done, counts):
        if new.num_rows:
            yield new


def compare_with_changes(
    listing: Iterable[pa.Table], done: Iterable[pa.Table], counts: PlanCounts
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """Per listing window: its new images, and the ledger rows (uri, file) of its changed ones."""
    ledger = iter(done)
    held = DONE_SCHEMA.empty_table()
    exhausted = False
    for window in listing:
        if not window.num_rows:
            continue
        last = window["uri"][-1].as_py()
        while not exhausted and (held.num_rows == 0 or held["uri"][-1].as_py() <= last):
            more = next(ledger, None)
            if more is None:
                exhausted = True
            else:
                held = pa.concat_tables([held, more], promote_options="default") if held.num_rows else more
        cut = int(pc.sum(pc.less_equal(held["uri"], last)).as_py() or 0)
        mine, held = held.slice(0, cut), held.slice(cut)
        counts.listed += window.num_rows
        counts.listed_pieces += int(pc.sum(pc.match_substring_regex(window["uri"], PIECE)).as_py() or 0)
        _tally_videos(counts, window["uri"])
        known = pc.is_in(window["uri"], mine["uri"])
        new = window.filter(pc.invert(known))
        counts.new += new.num_rows
        gone = mine.filter(pc.invert(pc.is_in(mine["uri"], window["uri"])))
        _tally_vanished(counts, gone)
        both = window.filter(known).join(mine, "uri", right_suffix="_done")
        differs = pc.or_(_differ(both["etag"], both["etag_done"]), _differ(both["size"], both["size_done"]))
        changed = both.filter(differs).select(["uri", "file"])
        counts.done += both.num_rows - changed.num_rows
        counts.changed += changed.num_rows
        room = EXAMPLES - len(counts.changed_examples)
        counts.changed_examples += changed["uri"].slice(0, max(room, 0)).to_pylist()
        yield new, changed
    while (more := next(ledger, None)) is not None:
        held = pa.concat_tables([held, more], promote_options="default") if held.num_rows else more
        _tally_vanished(counts, held)
        held = held.slice(held.num_rows)
    _tally_vanished(counts, held)
    counts.finished = True


def _tally_videos(counts: PlanCounts, uris: pa.ChunkedArray) -> None:
    """Counts each video's pieces: a blurred copy is joined once all of them are done."""
    pieces = uris.filter(pc.match_substring_regex(uris, videos.PIECE.pattern))
    if len(pieces):
        names = pc.replace_substring_regex(pieces, videos.PIECE.pattern, "")
        values, numbers = pc.value_counts(names).flatten()
        counts.video_pieces.update(dict(zip(values.to_pylist(), numbers.to_pylist(), strict=True)))


def _tally_vanished(counts: PlanCounts, rows: pa.Table) -> None:
    counts.vanished += rows.num_rows
    room = EXAMPLES - len(counts.vanished_examples)
    counts.vanished_examples += rows["uri"].slice(0, max(room, 0)).to_pylist()


def _differ(listed: pa.ChunkedArray, stored: pa.ChunkedArray) -> pa.ChunkedArray:
    """Both known and not equal (a manifest without versions changes nothing)."""
    return pc.fill_null(pc.not_equal(listed, stored), False)


def plan_shards(new: Iterable[pa.Table], size: int, first: int, counts: PlanCounts) -> Iterator[Shard]:
    """Groups the new images into shards of `size` (the last may be smaller), numbered from `first`; a
    container's or a video's piece is a shard of its own."""
    if size < 1:
        raise ValueError(f"shard size must be at least 1, got {size}")
    index = first
    uris: list[str] = []
    etags: list[str | None] = []
    sizes: list[int | None] = []
    for table in new:
        pieces = pc.match_substring_regex(table["uri"], PIECE)
        for uri, etag, bytes_ in zip(*(table.filter(pieces)[c].to_pylist() for c in LISTED), strict=True):
            yield Shard(index, (uri,), (etag,), (bytes_,))
            index, counts.shards, counts.pieces = index + 1, counts.shards + 1, counts.pieces + 1
            counts.video_pieces_new += videos.parse_piece(uri) is not None
        table = table.filter(pc.invert(pieces))
        uris += table["uri"].to_pylist()
        etags += table["etag"].to_pylist()
        sizes += table["size"].to_pylist()
        start = 0
        while len(uris) - start >= size:
            end = start + size
            yield Shard(index, tuple(uris[start:end]), tuple(etags[start:end]), tuple(sizes[start:end]))
            index, counts.shards, start = index + 1, counts.shards + 1, end
        del uris[:start], etags[:start], sizes[:start]
    if uris:
        yield Shard(index, tuple(uris), tuple(etags), tuple(sizes))
        counts.shards += 1


READ_AHEAD_IMAGES = 100_000
"""Images the driver plans ahead of the actors: a job that small knows its total before its first
shard ends, and a bigger one's listing and ledger requests overlap the work instead of stalling it."""


@dataclass(frozen=True)
class _End:
    error: BaseException | None = None


def read_ahead(shards: Iterator[Shard], limit: int) -> Iterator[Shard]:
    """The shards of `shards`, produced by a thread up to `limit` shards ahead of the consumer; an error
    of the plan is raised at the consumer's next step. Closing the generator stops the thread."""
    items: queue.Queue[Shard | _End] = queue.Queue(maxsize=max(1, limit))
    stop = threading.Event()

    def put(item: Shard | _End) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for shard in shards:
                if not put(shard):
                    return
            put(_End())
        except BaseException as error:  # handed to the consumer, raised there
            put(_End(error))

    threading.Thread(target=produce, name="facesweep-plan", daemon=True).start()
    try:
        while not isinstance(item := items.get(), _End):
            yield item
        if item.error is not None:
            raise item.error
    finally:
        stop.set()
