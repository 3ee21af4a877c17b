"""The pixel budget: the bytes of decoded pixels an actor holds at once, whatever its photos' size and
whatever its products make of them.

Before an image is decoded, its header's size says what it will hold (`decode_plan`): while decoding,
the decoder's output twice (OpenCV's intermediate copy, or the EXIF-rotated one) and a progressive JPEG's
full-size coefficients; then the image, the resized copies its views hold until inferred and, with
products, the copies they make of its pixels. The image reserves the most of these in the actor's
`PixelBudget` before it is decoded (at the largest scale that fits), keeps what it holds once prepared and
gives that back as it lets its pixels go (`Reservations`); one that does not fit yet waits, fetched but not
decoded, until others have let theirs go. What is not counted: encoded bytes (bounded by the images in
flight), a product's own small outputs (crops), and the model's memory.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from facesweep.workers.config import PIXEL_BUDGET_PER_CPU
from facesweep.workers.errors import ErrorKind, ImageError
from facesweep.workers.inputs.images import REDUCTIONS, Header

MB = 2**20


def budget_bytes(megabytes: int | None, cpus: int) -> int:
    """An actor's budget: `--pixel-budget` MB (2^20 bytes), else PIXEL_BUDGET_PER_CPU MB per CPU."""
    return (megabytes or PIXEL_BUDGET_PER_CPU * max(1, cpus)) * MB


@dataclass(frozen=True)
class DecodePlan:
    """How an image is decoded within the budget."""

    reduction: int  # decoded at 1/reduction of its size (REDUCTIONS)
    reserve: int  # bytes reserved before it is decoded: the most it holds at once


def decode_plan(
    header: Header, wanted: int, largest: int, copies: int, view_bytes: Callable[[int, int], int]
) -> DecodePlan:
    """The largest scale from 1/`wanted` down at which the image of `header` holds at most `largest` bytes
    at once: decoding (the output twice, or for a format other than JPEG its whole decode twice and the
    resized image; a progressive JPEG's coefficients), then the image, `copies` more of its pixels (what
    products make) and its views' resized copies (`view_bytes` of the decoded size). A format without a
    header reader reserves `largest` at full size (its size known once decoded: plan it again then).
    An ImageError `too_large` when even 1/8 does not fit."""
    if header.size is None:
        return DecodePlan(1, largest)
    width, height = header.size
    cost = reduction = 0
    for reduction in (r for r in REDUCTIONS if r >= wanted):
        decoded = (math.ceil(width / reduction), math.ceil(height / reduction))
        pixels = 3 * decoded[0] * decoded[1]
        if header.kind == "JPEG":
            decoding = 2 * pixels + header.coefficients
        else:
            decoding = 6 * width * height + (pixels if reduction > 1 else 0)
        cost = max(decoding, pixels * (1 + copies) + view_bytes(*decoded))
        if cost <= largest:
            return DecodePlan(reduction, cost)
    how = f"even at 1/{reduction}" if header.kind == "JPEG" else "to decode (only a JPEG decodes reduced)"
    if header.coefficients:
        how += f" ({header.coefficients / MB:,.0f} MB of it a progressive JPEG's full-size coefficients)"
    raise ImageError(
        f"image too large for the pixel budget: {header.kind} {width}x{height} px needs {cost / MB:,.0f} MB "
        f"{how}; one image may hold {largest / MB:,.0f} MB (--pixel-budget)",
        ErrorKind.TOO_LARGE,
    )


class PixelBudget:
    """Bytes of decoded pixels held at once, shared by every pipeline of an actor (thread-safe). Takers
    are served in turn: one that does not fit holds back the takers after it, so a large image is never
    starved by small ones. `peak`: the most ever reserved."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.held, self.peak = capacity, 0, 0
        self._lock = threading.Lock()
        self._queue: deque[object] = deque()
        self._changed: Future[None] = Future()

    def take(self, amount: int, taker: object) -> Future[None] | None:
        """Reserves `amount` for `taker` (None); or, when it does not fit now or another taker waits before
        it, queues `taker` and returns a future that resolves when a retry may succeed."""
        with self._lock:
            if (self._queue and self._queue[0] is not taker) or self.held + amount > self.capacity:
                if taker not in self._queue:
                    self._queue.append(taker)
                return self._changed
            if self._queue:  # it was first in line: the next one may go now
                self._queue.popleft()
                self._notify()
            self.held += amount
            self.peak = max(self.peak, self.held)
            return None

    def give(self, amount: int) -> None:
        with self._lock:
            self.held -= amount
            self._notify()

    def leave(self, taker: object) -> None:
        """`taker` waits no more (its call ended)."""
        with self._lock:
            if taker in self._queue:
                self._queue.remove(taker)
                self._notify()

    def _notify(self) -> None:
        self._changed.set_result(None)
        self._changed = Future()


class Reservations:
    """One pipeline call's reservations in a PixelBudget, by image: taken before decoding (`take`), cut to
    what the image holds once prepared (`keep`), given back as it lets its pixels go (`give`); `close`
    gives back whatever is left (a call that failed) and leaves the queue."""

    def __init__(self, budget: PixelBudget) -> None:
        self.budget = budget
        self._held: dict[int, int] = {}
        self._lock = threading.Lock()

    def take(self, key: int, amount: int) -> Future[None] | None:
        """As `PixelBudget.take`, for image `key`."""
        waiting = self.budget.take(amount, self)
        if waiting is None:
            with self._lock:
                self._held[key] = amount
        return waiting

    def keep(self, key: int, amount: int) -> None:
        """Cuts image `key`'s reservation to `amount` (never more than it took)."""
        with self._lock:
            held = self._held.get(key, 0)
            cut = max(0, held - amount)
            if key in self._held:
                self._held[key] = held - cut
        if cut:
            self.budget.give(cut)

    def give(self, key: int) -> None:
        with self._lock:
            amount = self._held.pop(key, 0)
        if amount:
            self.budget.give(amount)

    def close(self) -> None:
        with self._lock:
            amount, self._held = sum(self._held.values()), {}
        self.budget.give(amount)
        self.budget.leave(self)
