"""Shard planning: consecutive runs of input URIs, numbered in input order (same input, same plan)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice


@dataclass(frozen=True)
class Shard:
    """A unit of work: one actor call, one Parquet file named after the shard."""

    index: int
    uris: tuple[str, ...]

    @property
    def file_name(self) -> str:
        return f"part-{self.index:06d}.parquet"


def plan_shards(uris: Iterable[str], size: int) -> Iterator[Shard]:
    """Groups `uris` into shards of `size` (the last may be smaller), lazily."""
    if size < 1:
        raise ValueError(f"shard size must be at least 1, got {size}")
    stream = iter(uris)
    index = 0
    while chunk := tuple(islice(stream, size)):
        yield Shard(index, chunk)
        index += 1
