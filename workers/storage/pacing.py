"""Requests paced as the store allows, and retried through its bad weather.

S3 answers `503 SlowDown` when a prefix gets more requests than it takes (about 5,500 GETs/s), Azure
`503 Server Busy`; retrying at full rate only earns more of them, and a 100-node job reaches a prefix's
limit. A `Pacer` per bucket (or container) and process, shared by its threads, sends freely until the
store throttles it, then at a CUBIC rate: cut to 70 % of the rate it measured at each throttling answer,
grown back towards and past it while answers are good. That is botocore's `ClientRateLimiter`, the AWS
SDKs' `adaptive` retry mode, applied to obstore's requests, with one difference: a throttling answer slows
the pace only when at least THROTTLED_SHARE of the last second's answers were throttling ones. A prefix
over its limit answers a large share of requests that way; a few scattered ones are the weather, retried
at once (botocore's mode cut the rate at each, and 3 % of them took a job to a twentieth of its speed).

So the retries are here, not in obstore (whose own would retry a throttled request unpaced, and hide it):
every attempt passes the pacer, a throttling answer slows it, and a transient failure (a 5xx, a reset, a
cut body, a timeout) is retried after a jittered, doubling pause, for up to RETRY_BUDGET in all: a store
down for a minute is ridden out, a dead one fails the work that needed it.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.retries.adaptive import ClientRateLimiter, RateClocker
from botocore.retries.bucket import Clock, TokenBucket
from botocore.retries.throttling import CubicCalculator
from obstore.exceptions import GenericError

T = TypeVar("T")

RETRY_BUDGET = 180.0
"""Seconds a request is retried for before its failure stands."""
RETRIES = {"max_retries": 0}
"""obstore's own retries: none (above)."""
THROTTLED_SHARE = 0.1
"""The share of the last WINDOW's answers that must be throttling ones before the pace slows..."""
THROTTLED_LEAST = 3
"""... and how many at least (a client sending little sees its one unlucky answer as a large share)."""
WINDOW = 1.0
"""Seconds of answers that share is taken over."""
BACKOFF = (0.2, 5.0)
"""The pause after a transient failure (seconds, full jitter, doubling): the first and the longest."""
THROTTLED = re.compile(r"status code: (503|429)\b|SlowDown|Server ?Busy|TooManyRequests", re.I)
"""How a throttling answer reads in obstore's error (its status, the store's error code)."""
TRANSIENT = re.compile(
    r"status code: (5\d\d|408)\b|error sending request|body error|\btimed? ?out\b|connection (reset|closed)",
    re.I,
)
"""A failure worth another attempt: a server error, a broken or stalled connection, a cut body."""


def _answer(error: Exception) -> str:
    """What obstore says went wrong: only a GenericError can be a store's bad weather (a missing object,
    a refusal, a failed condition have their own classes), and only its first part, not the debug dump
    of its retry settings (`retry_timeout`)."""
    return str(error).split("Debug source")[0] if isinstance(error, GenericError) else ""


class _ThrottlingAnswer:
    """botocore's detector interface, told the answer's kind directly."""

    def is_throttling_error(self, throttled: bool = False, **_: Any) -> bool:
        return throttled


class Pacer:
    """One store client's send rate in this process: unlimited until the store throttles, then CUBIC."""

    def __init__(self) -> None:
        clock = Clock()
        self._bucket = TokenBucket(max_rate=1, clock=clock)
        self._limiter = ClientRateLimiter(
            rate_adjustor=CubicCalculator(starting_max_rate=0, start_time=clock.current_time()),
            rate_clocker=RateClocker(clock),
            token_bucket=self._bucket,
            throttling_detector=_ThrottlingAnswer(),
            clock=clock,
        )
        self.paced = False  # whether the store has throttled this client into a pace
        self._answers: deque[tuple[float, bool]] = deque()  # the last WINDOW's: (when, throttled)
        self._throttled_in_window = 0
        self._lock = threading.Lock()

    def send(self, call: Callable[[], T], count: Callable[[str], None]) -> T:
        """`call()`, each attempt paced and counted (`count("THROTTLED")`, `count("RETRIED")` for the
        attempts after a throttling answer or a transient failure), retried for RETRY_BUDGET; the last
        failure raised as obstore raised it."""
        started = time.monotonic()
        for attempt in itertools.count():
            self._limiter.on_sending_request(None)
            try:
                result = call()
            except Exception as error:
                text = _answer(error)
                throttled = THROTTLED.search(text) is not None
                self._limiter.on_receiving_response(throttled=self._slow_down(throttled))
                if not (throttled or TRANSIENT.search(text)) or time.monotonic() - started > RETRY_BUDGET:
                    raise
                count("THROTTLED" if throttled else "RETRIED")
                if not throttled:  # the pace answers throttling; a failing store gets a pause
                    time.sleep(random.uniform(0, min(BACKOFF[1], BACKOFF[0] * 2**attempt)))
                continue
            self._limiter.on_receiving_response(throttled=self._slow_down(False))
            return result
        raise AssertionError("itertools.count() ended")

    def _slow_down(self, throttled: bool) -> bool:
        """Whether this answer tells the limiter to slow down: a throttling one, among enough of them in
        the last WINDOW."""
        with self._lock:
            now = time.monotonic()
            self._answers.append((now, throttled))
            self._throttled_in_window += throttled
            while self._answers[0][0] < now - WINDOW:
                self._throttled_in_window -= self._answers.popleft()[1]
            share = self._throttled_in_window >= max(THROTTLED_LEAST, THROTTLED_SHARE * len(self._answers))
            slow = throttled and share
            self.paced |= slow
            return slow

    @property
    def rate(self) -> float | None:
        """Requests/s it sends at now; None until the store first throttled it into a pace."""
        return self._bucket.max_rate if self.paced else None
