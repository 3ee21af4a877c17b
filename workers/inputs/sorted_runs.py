"""Streams of Arrow tables sorted by `uri`: merging several, sorting one too big for memory, de-duplicating.

The job's listing and its ledger are both such streams, so that a re-run compares them in one pass without
ever holding either whole. Everything here works a window of rows at a time with Arrow compute: no Python
loop over rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from facesweep.workers.errors import UserError

KEY = "uri"
RUN_ROWS = 200_000
"""Rows sorted in memory at once; a longer unsorted input is spilled to disk in sorted runs of this size."""


class Prefetched:
    """An iterator whose next item is already being produced in `pool` (one request ahead per stream)."""

    def __init__(self, items: Iterator[pa.Table], pool: ThreadPoolExecutor) -> None:
        self._items, self._pool = items, pool
        self._next: Future[pa.Table | None] = pool.submit(next, items, None)

    def __iter__(self) -> Iterator[pa.Table]:
        while (item := self._next.result()) is not None:
            self._next = self._pool.submit(next, self._items, None)
            yield item


def merge_sorted(streams: Iterable[Iterable[pa.Table]]) -> Iterator[pa.Table]:
    """One sorted stream from several, each sorted by KEY; rows with equal keys are all kept.

    Each window takes, from every stream, the rows up to the smallest last key any stream has buffered,
    so at most one table per stream is held."""
    sources = [iter(s) for s in streams]
    buffers: list[pa.Table | None] = [pa.table({})] * len(sources)  # None: that stream has ended
    while True:
        for i, source in enumerate(sources):
            while buffers[i] is not None and buffers[i].num_rows == 0:
                buffers[i] = next(source, None)
        live = [i for i, b in enumerate(buffers) if b is not None]
        if not live:
            return
        if len(live) == 1:
            yield buffers[live[0]]
            buffers[live[0]] = buffers[live[0]].slice(buffers[live[0]].num_rows)
            continue
        bound = min(buffers[i][KEY][-1].as_py() for i in live)
        window = []
        for i in live:
            cut = _count_at_most(buffers[i][KEY], bound)
            window.append(buffers[i].slice(0, cut))
            buffers[i] = buffers[i].slice(cut)
        yield pa.concat_tables(window).sort_by(KEY)


def _count_at_most(keys: pa.ChunkedArray, bound: str) -> int:
    """How many of the sorted `keys` are <= `bound`."""
    return int(pc.sum(pc.less_equal(keys, bound)).as_py() or 0)


class ListingOrderError(UserError, ValueError):
    """A store's listing out of key order (S3's never is): the job cannot compare it with its ledger."""


def check_sorted(table: pa.Table, after: str | None, source: str) -> None:
    """Raises ListingOrderError unless `table`'s keys are strictly increasing and all greater than `after`."""
    keys = table[KEY].combine_chunks()
    if len(keys) and after is not None and keys[0].as_py() <= after:
        raise ListingOrderError(f"{source}: listing not in strictly increasing order at {keys[0].as_py()!r}")
    if len(keys) > 1 and not pc.all(pc.greater(keys.slice(1), keys.slice(0, len(keys) - 1))).as_py():
        raise ListingOrderError(f"{source}: listing not in strictly increasing order")


def unique_sorted(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """Drops every row whose key equals the previous row's (the stream must be sorted)."""
    last: str | None = None
    for table in tables:
        if not table.num_rows:
            continue
        keys = table[KEY].combine_chunks()
        previous = pa.concat_arrays([pa.array([last], pa.string()), keys.slice(0, len(keys) - 1)])
        keep = pc.fill_null(pc.not_equal(keys, previous), True)
        last = keys[-1].as_py()
        yield table.filter(keep)


def sort_unsorted(tables: Iterable[pa.Table], schema: pa.Schema, window: int = 65536) -> Iterator[pa.Table]:
    """`tables` sorted by KEY and de-duplicated, in memory up to RUN_ROWS rows, else through sorted runs
    spilled to a temporary folder and merged; runs are written and read back in tables of `window` rows."""
    runs: list[Path] = []
    pending: list[pa.Table] = []
    rows = 0
    with tempfile.TemporaryDirectory(prefix="facesweep-sort-") as spill:
        for table in tables:
            while table.num_rows:
                piece, table = table.slice(0, RUN_ROWS - rows), table.slice(RUN_ROWS - rows)
                pending.append(piece)
                rows += piece.num_rows
                if rows >= RUN_ROWS:
                    run = pa.concat_tables(pending).sort_by(KEY)
                    runs.append(_spill(run, Path(spill, f"run-{len(runs)}"), window))
                    pending, rows = [], 0
        last = pa.concat_tables(pending).sort_by(KEY) if pending else schema.empty_table()
        if not runs:
            yield from unique_sorted(_chunks(last, window))
            return
        streams = [_read_run(path) for path in runs] + [_chunks(last, window)]
        yield from unique_sorted(merge_sorted(streams))


def _chunks(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


def _spill(table: pa.Table, path: Path, window: int) -> Path:
    with ipc.new_file(path, table.schema) as writer:
        for chunk in _chunks(table, window):
            writer.write_table(chunk)
    return path


def _read_run(path: Path) -> Iterator[pa.Table]:
    with ipc.open_file(path) as reader:
        for i in range(reader.num_record_batches):
            yield pa.Table.from_batches([reader.get_batch(i)])


def rebatch(tables: Iterable[pa.Table], rows: int = 65536) -> Iterator[pa.Table]:
    """The same rows in tables of at least `rows` (the last may be smaller): fewer, larger windows."""
    pending: list[pa.Table] = []
    count = 0
    for table in tables:
        pending.append(table)
        count += table.num_rows
        if count >= rows:
            yield pa.concat_tables(pending)
            pending, count = [], 0
    if pending:
        yield pa.concat_tables(pending)
