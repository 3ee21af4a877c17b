"""Why an image has no faces: a typed kind carried with its result, and a free-text message.

Kinds the image is to blame for (missing object, not an image, truncated, corrupt, too large, undecodable)
are the data's; INTERNAL is ours: an exception in a decoder, the preprocessing or the merge of views. An
internal failure still fails only its image, but is logged with its traceback in the actor's log, and the
first traceback of each stage travels to the driver, which prints it and exits non-zero.
"""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

log = logging.getLogger("facesweep")


class UserError(Exception):
    """Bad input, a bad setting or a store that failed, found where it happens: the message names the thing
    and what to do, in one line. The only errors the CLI turns into a refusal; anything else is a bug and
    keeps its traceback."""


class JobError(UserError, RuntimeError):
    """A job that could not run; the message says why in one line."""


class JobFailedError(JobError):
    """A job that ran to its end but failed as a whole (an error of ours, too many error rows, a failed
    shard): `progress` holds its totals, and what it wrote stays (a re-run goes on from it)."""

    def __init__(self, message: str, progress: Any) -> None:
        super().__init__(message)
        self.progress = progress


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a job (its actors stopped, its record written): `committed` images are in OUTPUT."""

    def __init__(self, committed: int) -> None:
        super().__init__(committed)
        self.committed = committed


class ErrorKind(StrEnum):
    FETCH = "fetch"  # the object is missing or forbidden
    NOT_AN_IMAGE = "not_an_image"  # empty, unrecognised or unsupported format
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    TOO_LARGE = "too_large"
    UNDECODABLE = "undecodable"  # the decoder refused it (its own limits, allocation)
    INTERNAL = "internal"  # a bug of ours


TRANSIENT_KINDS: tuple[str, ...] = (ErrorKind.FETCH.value,)
"""Kinds a later try may not meet again (a missing or forbidden object): what --retry-errors redoes."""


@dataclass(frozen=True)
class ImageFailure:
    """One image's failure: its kind and a few words of why."""

    kind: ErrorKind
    message: str


class ImageError(ValueError):
    """An input that is not a usable image: the row's `error` is the message, `error_kind` the kind."""

    def __init__(self, message: str, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def failure(self) -> ImageFailure:
        return ImageFailure(self.kind, str(self))


_first_tracebacks: dict[str, str] = {}
_lock = threading.Lock()


def internal_failure(stage: str, error: Exception) -> ImageFailure:
    """An unexpected exception in `stage`: logged with its traceback, kept (the first per stage) for the
    driver, and returned as the image's INTERNAL failure."""
    log.error("internal error in %s", stage, exc_info=error)
    with _lock:
        _first_tracebacks.setdefault(stage, "".join(traceback.format_exception(error)))
    reason = f"{type(error).__name__}: {line_of(error, last=True, limit=200)}" if str(error).strip() else ""
    return ImageFailure(ErrorKind.INTERNAL, f"{stage} failed: {reason or type(error).__name__}")


def line_of(error: Exception | str, last: bool = False, limit: int = 300) -> str:
    """An error's text in one line, for a one-line message: its first non-blank line (`last`: its last,
    where Ray and Python put the cause), at most `limit` characters; the error's type name when it
    has no text."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, Exception) else ""
    return lines[-1 if last else 0][:limit]


def take_tracebacks() -> dict[str, str]:
    """The first traceback of each stage since the last call (this process), by stage."""
    with _lock:
        taken = dict(_first_tracebacks)
        _first_tracebacks.clear()
    return taken
