"""The exactly-once core as properties, checked against plain Python sets and lists: the listing compared with
the ledger puts every image in exactly one class, the sorted streams merge, sort and re-window without
losing or repeating a row, and shard planning hands every new image to exactly one shard, in order. Windows
of a few rows (the job's are 65,536) make every stream cross many window boundaries."""

from __future__ import annotations

from itertools import pairwise
from operator import itemgetter

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facesweep.workers.inputs import sorted_runs
from facesweep.workers.inputs.containers import PIECE
from facesweep.workers.inputs.listing import LISTING_SCHEMA
from facesweep.workers.inputs.sorted_runs import check_sorted, merge_sorted, rebatch, sort_unsorted
from facesweep.workers.job.shards import (
    DONE_SCHEMA,
    EXAMPLES,
    PlanCounts,
    Shard,
    compare,
    compare_with_changes,
    plan_shards,
)

PROPERTY = settings(max_examples=150, deadline=None)

# Short keys over a small alphabet: shared prefixes ("a" < "a/" < "ab"), keys in both streams and UTF-8
# beyond ASCII (Arrow compares bytes, Python code points: the same order for valid UTF-8) come up often.
KEYS = st.text(alphabet="ab/é", min_size=1, max_size=4)
PIECES = st.builds(
    lambda key, n: f"{key}.tar#bytes={n * 64:012d}-{(n + 1) * 64:012d}", KEYS, st.integers(0, 2)
)
ETAGS = st.sampled_from([None, "e1", "e2"])  # None: a manifest without versions
SIZES = st.sampled_from([None, 1, 2])

Version = tuple[str | None, int | None]  # a listed image's etag and size
Done = tuple[str | None, int | None, int]  # a committed image's etag, size and file


@st.composite
def windows(draw: st.DrawFn, table: pa.Table) -> list[pa.Table]:
    """`table` cut at random rows into consecutive windows, empty ones included."""
    cuts = sorted(draw(st.lists(st.integers(0, table.num_rows), max_size=10)))
    bounds = [0, *cuts, table.num_rows]
    return [table.slice(start, end - start) for start, end in pairwise(bounds)]


@st.composite
def listing_and_ledger(draw: st.DrawFn) -> tuple[dict[str, Version], dict[str, Done]]:
    """A listing (uri -> etag, size) and a ledger (uri -> etag, size, file), both in uri order: each key
    listed only, done only or both, a done one at the listed version or another."""
    listed: dict[str, Version] = {}
    done: dict[str, Done] = {}
    for key in sorted(draw(st.sets(st.one_of(KEYS, PIECES), max_size=40))):
        where = draw(st.sampled_from(["listed", "done", "both"]))
        version = (draw(ETAGS), draw(SIZES))
        if where != "done":
            listed[key] = version
        if where != "listed":
            stored = version if draw(st.booleans()) else (draw(ETAGS), draw(SIZES))
            done[key] = (*stored, draw(st.integers(0, 3)))
    return listed, done


def listing_table(listed: dict[str, Version]) -> pa.Table:
    rows = [{"uri": uri, "etag": etag, "size": size} for uri, (etag, size) in listed.items()]
    return pa.Table.from_pylist(rows, schema=LISTING_SCHEMA)


def done_table(done: dict[str, Done]) -> pa.Table:
    rows = [{"uri": uri, "etag": e, "size": s, "file": f} for uri, (e, s, f) in done.items()]
    return pa.Table.from_pylist(rows, schema=DONE_SCHEMA)


def changed_model(listed: dict[str, Version], done: dict[str, Done]) -> set[str]:
    """Listed and done at another version: an ETag or a size known on both sides and different."""

    def differ(a: object, b: object) -> bool:
        return a is not None and b is not None and a != b

    return {
        uri
        for uri in listed.keys() & done.keys()
        if differ(listed[uri][0], done[uri][0]) or differ(listed[uri][1], done[uri][1])
    }


def check_examples(examples: list[str], of: set[str]) -> None:
    assert len(examples) == len(set(examples)) == min(EXAMPLES, len(of))
    assert set(examples) <= of


@PROPERTY
@given(st.data())
def test_comparison_puts_every_image_in_exactly_one_class(data: st.DataObject) -> None:
    listed, done = data.draw(listing_and_ledger())
    listing = data.draw(windows(listing_table(listed)))
    ledger = data.draw(windows(done_table(done)))
    changed = changed_model(listed, done)
    vanished = done.keys() - listed.keys()
    counts = PlanCounts()

    answers = list(compare_with_changes(iter(listing), iter(ledger), counts))

    non_empty = [w for w in listing if w.num_rows]
    assert len(answers) == len(non_empty)  # one answer per window, in the listing's order
    for window, (new, changed_rows) in zip(non_empty, answers, strict=True):
        assert new.to_pylist() == [row for row in window.to_pylist() if row["uri"] not in done]
        mine = {uri for uri in window["uri"].to_pylist() if uri in changed}
        assert sorted(changed_rows.to_pylist(), key=lambda r: r["uri"]) == [
            {"uri": uri, "file": done[uri][2]} for uri in sorted(mine)
        ]
    new_uris = [uri for new, _ in answers for uri in new["uri"].to_pylist()]
    assert new_uris == [uri for uri in listed if uri not in done]
    assert counts.finished
    assert counts.listed == len(listed)
    assert counts.new == len(listed.keys() - done.keys())
    assert counts.changed == len(changed)
    assert counts.done == len(listed.keys() & done.keys()) - len(changed)
    assert counts.vanished == len(vanished)
    assert counts.new + counts.done + counts.changed == counts.listed
    check_examples(counts.changed_examples, changed)
    check_examples(counts.vanished_examples, vanished)


@PROPERTY
@given(
    tables=st.lists(
        st.lists(st.one_of(KEYS, PIECES), max_size=12).map(
            lambda uris: pa.table(
                {
                    "uri": pa.array(uris, pa.string()),
                    "etag": pa.array([f"e-{uri}" for uri in uris], pa.string()),
                    "size": pa.array([len(uri) for uri in uris], pa.int64()),
                }
            )
        ),
        max_size=8,
    ),
    size=st.integers(1, 6),
    first=st.integers(0, 5),
)
def test_shards_take_every_new_image_once_in_order_never_over_size(
    tables: list[pa.Table], size: int, first: int
) -> None:
    counts = PlanCounts()
    shards = list(plan_shards(iter(tables), size, first, counts))

    uris = [uri for table in tables for uri in table["uri"].to_pylist()]
    check_shards(shards, uris, size, first, counts)
    assert sorted(uri for shard in shards for uri in shard.uris) == sorted(uris)
    for shard in shards:  # each image's version rides along with it
        assert shard.etags == tuple(f"e-{uri}" for uri in shard.uris)
        assert shard.sizes == tuple(len(uri) for uri in shard.uris)


def check_shards(shards: list[Shard], uris: list[str], size: int, first: int, counts: PlanCounts) -> None:
    """Shards numbered on from `first`; each container piece a shard of its own; the other images in
    the order given, in shards of exactly `size` but the last."""
    assert [s.index for s in shards] == list(range(first, first + len(shards)))
    assert counts.shards == len(shards)
    pieces = [uri for uri in uris if PIECE.search(uri)]
    piece_shards = [s for s in shards if PIECE.search(s.uris[0])]
    assert sorted(s.uris for s in piece_shards) == sorted((uri,) for uri in pieces)
    assert counts.pieces == len(pieces)
    image_shards = [s for s in shards if not PIECE.search(s.uris[0])]
    assert [uri for s in image_shards for uri in s.uris] == [uri for uri in uris if not PIECE.search(uri)]
    assert all(len(s.uris) == size for s in image_shards[:-1])
    assert all(1 <= len(s.uris) <= size for s in image_shards[-1:])


@PROPERTY
@given(data=st.data(), window=st.integers(1, 7), size=st.integers(1, 5), first=st.integers(0, 3))
def test_whole_plan_covers_every_new_image_once_across_windows(
    data: st.DataObject, window: int, size: int, first: int
) -> None:
    """The driver's path: the listing re-windowed by `rebatch`, the ledger merged from its files'
    streams, compared, and the new images cut into shards."""
    listed, done = data.draw(listing_and_ledger())
    listing = data.draw(windows(listing_table(listed)))
    ledger = done_table(done)
    files = [data.draw(windows(ledger.filter(pc.equal(ledger["file"], f)))) for f in range(4)]
    counts = PlanCounts()

    shards = list(
        plan_shards(compare(rebatch(iter(listing), window), merge_sorted(files), counts), size, first, counts)
    )

    new = [uri for uri in listed if uri not in done]
    check_shards(shards, new, size, first, counts)
    for shard in shards:  # each image's listed version rides along with it
        assert list(zip(shard.etags, shard.sizes, strict=True)) == [listed[uri] for uri in shard.uris]
    assert counts.new == len(new)
    assert counts.images_known == (None if counts.pieces else len(new))
    assert counts.vanished == len(done.keys() - listed.keys())


@PROPERTY
@given(data=st.data(), window=st.integers(1, 7))
def test_rebatch_keeps_every_row_in_order_in_windows_of_at_least_its_size(
    data: st.DataObject, window: int
) -> None:
    table = pa.table({"uri": pa.array(data.draw(st.lists(KEYS, max_size=30)), pa.string())})
    out = list(rebatch(iter(data.draw(windows(table))), window))
    assert [uri for t in out for uri in t["uri"].to_pylist()] == table["uri"].to_pylist()
    assert all(t.num_rows >= window for t in out[:-1])


@PROPERTY
@given(data=st.data(), streams=st.integers(0, 4))
def test_merge_keeps_every_row_of_every_stream_in_key_order(data: st.DataObject, streams: int) -> None:
    """Equal keys, within a stream or across streams, are all kept (a ledger's files may overlap)."""
    tables = []
    for s in range(streams):
        uris = sorted(data.draw(st.lists(KEYS, max_size=15)))
        tables.append(pa.table({"uri": pa.array(uris, pa.string()), "stream": [s] * len(uris)}))
    inputs = [data.draw(windows(t)) for t in tables]

    rows = [row for t in merge_sorted(inputs) for row in t.to_pylist()]

    assert [r["uri"] for r in rows] == sorted(uri for t in tables for uri in t["uri"].to_pylist())
    key = itemgetter("uri", "stream")
    assert sorted(rows, key=key) == sorted((r for t in tables for r in t.to_pylist()), key=key)


@PROPERTY
@given(data=st.data(), run_rows=st.integers(1, 8), window=st.integers(1, 5))
def test_sort_unsorted_yields_each_key_once_in_order(data: st.DataObject, run_rows: int, window: int) -> None:
    """Through sorted runs spilled to disk (RUN_ROWS made tiny) read back in windows of a few rows; a
    repeated uri is kept once, as one of the rows that named it."""
    uris = data.draw(st.lists(KEYS, max_size=40))
    table = pa.table(
        {
            "uri": pa.array(uris, pa.string()),
            "etag": pa.array([f"row-{i}" for i in range(len(uris))], pa.string()),
            "size": pa.array(range(len(uris)), pa.int64()),
        },
        schema=LISTING_SCHEMA,
    )
    inputs = data.draw(windows(table))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sorted_runs, "RUN_ROWS", run_rows)
        rows = [row for t in sort_unsorted(iter(inputs), LISTING_SCHEMA, window) for row in t.to_pylist()]

    assert [r["uri"] for r in rows] == sorted(set(uris))
    assert all(uris[r["size"]] == r["uri"] and r["etag"] == f"row-{r['size']}" for r in rows)


@PROPERTY
@given(uris=st.lists(KEYS, max_size=8), after=st.one_of(st.none(), KEYS))
def test_check_sorted_refuses_exactly_what_is_not_strictly_increasing(
    uris: list[str], after: str | None
) -> None:
    increasing = all(a < b for a, b in pairwise(uris)) and (after is None or not uris or uris[0] > after)
    table = pa.table({"uri": pa.array(uris, pa.string())})
    if increasing:
        check_sorted(table, after, "listing")
    else:
        with pytest.raises(ValueError, match="not in strictly increasing order"):
            check_sorted(table, after, "listing")
