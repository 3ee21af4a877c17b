"""Videos as INPUT (`.mp4`, `.mov`, `.mkv`, `.webm`, `.avi`), read a piece at a time with PyAV.

A video is cut into pieces by time: the listing names each piece `<video>#t=START,END` (seconds with three
decimals, zero-padded so the pieces sort in order; a W3C media-fragment time range), one shard each. The
planner opens each video once for its duration (`expand`, a few ranged GETs); a video it cannot open is
one piece from 0, whose shard then writes one error row named after the video.

A piece holds the frames whose presentation time is in [START, END), so each frame belongs to exactly one
piece whatever the GOPs: it is read by seeking to the keyframe at or before START and demuxing, in
ranged GETs of READ_BLOCK bytes, up to the first keyframe at or after END (and the leading pictures that
follow it). Its packets are kept, so the piece decodes again for a blurred copy without another request.

Frames are sampled by `FrameChoice`: N a second (the first frame at or after each multiple of 1/N s),
every frame, or keyframes only. A sampled frame's row is `<video>#t=SECONDS` (its presentation time,
three decimals) with its number (`frame_index`, from the time at the stream's average rate: exact at a
constant frame rate) and time (`frame_time`) as columns. Frames come out upright (a rotation flag
applied), BGR.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facesweep.workers.errors import ErrorKind, ImageError, ImageFailure
from facesweep.workers.inputs.containers import Member
from facesweep.workers.storage import RangedFile, StorageError

if TYPE_CHECKING:
    import av

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
PIECE = re.compile(r"#t=(\d+\.\d{3}),(\d+\.\d{3})$")
READ_BLOCK = 4 * 1024 * 1024
"""Bytes per ranged GET of a video: a demuxer's small reads are served from blocks of this size."""
BLOCKS_HELD = 4
PROBES = 16
"""Videos the planner opens at once for their durations."""


def is_video(uri: str) -> bool:
    return uri.lower().endswith(VIDEO_SUFFIXES)


def piece_uri(video: str, start: float, end: float) -> str:
    return f"{video}#t={start:010.3f},{end:010.3f}"


def parse_piece(uri: str) -> tuple[str, Fraction, Fraction] | None:
    """(video, start, end) of a piece's uri (seconds, exact), None for any other uri."""
    match = PIECE.search(uri)
    if match is None or not is_video(uri[: match.start()]):
        return None
    return uri[: match.start()], Fraction(match.group(1)), Fraction(match.group(2))


def frame_uri(video: str, time: Fraction) -> str:
    return f"{video}#t={float(time):.3f}"


@dataclass(frozen=True)
class FrameChoice:
    """Which frames are detected: `fps` a second, or every frame (`fps` None), or keyframes only."""

    fps: float | None = 1.0
    keyframes: bool = False

    def sampled(
        self, times: list[Fraction], before: list[Fraction | None], start: Fraction, keyframes: list[bool]
    ) -> np.ndarray:
        """Which of a piece's frames at `times` (seconds; `before`: each one's previous frame's time, None
        where the piece does not hold it) are sampled: at N a second, the first frame at or after each
        multiple of 1/N s, i.e. when one lies in (previous, time]; without the previous frame, in
        [`start`, time]. Pieces agree at their seams when a piece's seconds are a whole number of 1/N."""
        if self.keyframes:
            return np.array(keyframes, bool)
        if self.fps is None:
            return np.ones(len(times), bool)
        rate = Fraction(self.fps).limit_denominator(1000)
        return np.array(
            [
                math.floor(t * rate)
                > (math.floor(b * rate) if b is not None else math.ceil(start * rate) - 1)
                for t, b in zip(times, before, strict=True)
            ],
            bool,
        )


VideoKey = tuple[str, str | None, int | None]
"""A video as a listing names it: its uri, etag and size."""


def expand(
    listing: pa.Table, piece_seconds: float, known: Mapping[VideoKey, float] | None = None
) -> pa.Table:
    """The listing with each video replaced by its pieces (same etag and size), sorted by uri. Each video
    is opened for its duration (PROBES at once), unless `known` has it: the seconds an earlier run's
    footers recorded for the same uri, etag and size (`Ledger.video_seconds`), so a re-run over done
    videos makes no request for them."""
    uris = listing["uri"]
    suffixes = "|".join(re.escape(s) for s in VIDEO_SUFFIXES)
    mask = pc.match_substring_regex(pc.utf8_lower(uris), rf"({suffixes})$")
    if not pc.any(mask).as_py():
        return listing
    videos, rest = listing.filter(mask), listing.filter(pc.invert(mask))
    names, etags, sizes = (videos[c].to_pylist() for c in ("uri", "etag", "size"))
    durations = [(known or {}).get(key) for key in zip(names, etags, sizes, strict=True)]
    unknown = [i for i, duration in enumerate(durations) if duration is None]
    with ThreadPoolExecutor(PROBES, thread_name_prefix="probe") as pool:
        probed = pool.map(_duration_or_none, [names[i] for i in unknown], [sizes[i] for i in unknown])
        for i, duration in zip(unknown, probed, strict=True):
            durations[i] = duration
    rows: dict[str, list] = {"uri": [], "etag": [], "size": []}
    for uri, etag, size, duration in zip(names, etags, sizes, durations, strict=True):
        count = max(1, math.ceil((duration or 0) / piece_seconds))
        pieces = [piece_uri(uri, i * piece_seconds, (i + 1) * piece_seconds) for i in range(count)]
        rows["uri"] += pieces
        rows["etag"] += [etag] * count
        rows["size"] += [size] * count
    return pa.concat_tables([rest, pa.table(rows, schema=listing.schema)]).sort_by("uri")


def _duration_or_none(uri: str, size: int | None) -> float | None:
    """The video's duration in seconds; None when it cannot be opened (its one piece says why)."""
    try:
        with _open(uri, size) as container:
            return _seconds(container)
    except (ImageError, StorageError):
        return None


def _seconds(container: av.container.InputContainer) -> float | None:
    """An open video's duration in seconds, as its index or header says (None: it says none)."""
    stream = container.streams.video[0]
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None


class _Blocks(RangedFile):
    """A RangedFile read in aligned READ_BLOCK ranged GETs, the last few kept: a demuxer's small reads
    cost one request per block."""

    def __init__(self, uri: str, size: int | None) -> None:
        super().__init__(uri, size)
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def read(self, size: int = -1) -> bytes:
        """At most `size` bytes from the position, within one block (a short read, as a raw file may)."""
        if self._position >= self._size:
            return b""
        number = self._position // READ_BLOCK
        block = self._blocks.get(number)
        if block is None:
            start = number * READ_BLOCK
            block = self._storage.get_range(self.uri, start, min(READ_BLOCK, self._size - start))
            self._blocks[number] = block
            while len(self._blocks) > BLOCKS_HELD:
                self._blocks.popitem(last=False)
        self._blocks.move_to_end(number)
        offset = self._position - number * READ_BLOCK
        data = block[offset:] if size is None or size < 0 else block[offset : offset + size]
        self._position += len(data)
        return data


def _open(uri: str, size: int | None) -> av.container.InputContainer:
    """The video opened for reading; an ImageError when it is not a video PyAV can read."""
    import av

    file = _Blocks(uri, size)
    try:
        container = av.open(file, "r")
    except av.FFmpegError as error:
        raise ImageError(f"not a readable video: {_reason(error)}", ErrorKind.NOT_AN_IMAGE) from None
    if not container.streams.video:
        container.close()
        raise ImageError("a file without a video stream", ErrorKind.NOT_AN_IMAGE)
    return container


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


@dataclass(frozen=True)
class Frame:
    """One frame of a piece: its number in the video, its presentation time, and whether it is sampled."""

    index: int
    time: Fraction
    pts: int
    sampled: bool


class VideoPiece:
    """A piece of a video: its video packets (demuxed once), its frames, and their pixels on demand.

    `frames` lists the piece's frames in presentation order from the packets' timestamps, before any
    decoding; `failure` says why the demuxer stopped early (the frames after it are not listed). The
    video stays open until `close` (a context manager): its stream's decoder is the one that knows the
    stream's rotation flag."""

    def __init__(self, piece: str, size: int | None, choice: FrameChoice) -> None:
        parsed = parse_piece(piece)
        if parsed is None:
            raise ValueError(f"{piece} names no piece of a video")
        self.piece, (self.video, self.start, self.end) = piece, parsed
        self.failure: ImageError | None = None
        self.rotation = 0  # the rotation flag's degrees, known once a frame is decoded
        self.container = _open(self.video, size)
        self.seconds = _seconds(self.container)  # the video's whole duration, as the planner probed it
        try:
            self.stream = stream = self.container.streams.video[0]
            self.time_base = stream.time_base or Fraction(1, 90000)
            self.rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            self.origin = stream.start_time or 0
            stream.codec_context.thread_type = "AUTO"
            self.packets = self._demux(self.container, stream)
        except BaseException:
            self.container.close()
            raise
        every = sorted({p.pts for p in self.packets})
        listed = [pts for pts in every if self._inside(pts)]
        earlier = dict(zip(every[1:], every[:-1], strict=True))
        keys = {p.pts for p in self.packets if p.is_keyframe}
        times = [pts * self.time_base for pts in listed]
        before = [earlier[pts] * self.time_base if pts in earlier else None for pts in listed]
        chosen = choice.sampled(times, before, self.start, [pts in keys for pts in listed])
        first = self.origin * self.time_base
        self.frames = [
            Frame(round((t - first) * self.rate), t, pts, bool(s))
            for pts, t, s in zip(listed, times, chosen, strict=True)
        ]

    def _inside(self, pts: int) -> bool:
        return self.start <= pts * self.time_base < self.end

    def _demux(self, container: av.container.InputContainer, stream: av.VideoStream) -> list[av.Packet]:
        """The packets from the keyframe at or before START up to the first keyframe at or after END and
        the leading pictures after it (earlier in time than it, so possibly this piece's)."""
        import av

        if self.start > 0:
            try:
                container.seek(math.floor(self.start / self.time_base), stream=stream, backward=True)
            except av.FFmpegError as error:
                why = f"cannot seek to {float(self.start):.3f} s: {_reason(error)}"
                self.failure = ImageError(why, ErrorKind.CORRUPT)
                return []
        packets, boundary = [], None
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                if boundary is not None and packet.pts >= boundary:
                    break
                if boundary is None and packet.is_keyframe and packet.pts * self.time_base >= self.end:
                    boundary = packet.pts
                packets.append(packet)
        except av.FFmpegError as error:
            self.failure = ImageError(f"video cut short or corrupt: {_reason(error)}", ErrorKind.TRUNCATED)
        return packets

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoPiece:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def decoded(self, keyframes_only: bool = False) -> Iterator[tuple[int, np.ndarray | ImageError]]:
        """(position in `frames`, upright BGR pixels or why that frame cannot be decoded) for every frame
        of the piece (or its keyframes only, the others skipped undecoded), in presentation order; each
        call decodes from the piece's first packet again."""
        import av

        codec = self.stream.codec_context
        codec.flush_buffers()
        codec.skip_frame = "NONKEY" if keyframes_only else "DEFAULT"
        positions = {frame.pts: i for i, frame in enumerate(self.frames)}
        packets = [p for p in self.packets if p.is_keyframe] if keyframes_only else self.packets
        for packet in [*packets, None]:
            try:
                frames = codec.decode(packet)
            except av.FFmpegError as error:
                if packet is not None and packet.pts in positions:
                    why = f"frame not decodable: {_reason(error)}"
                    yield positions[packet.pts], ImageError(why, ErrorKind.CORRUPT)
                continue
            for frame in frames:
                self.rotation = frame.rotation or 0
                position = positions.get(frame.pts)
                if position is not None:
                    try:
                        yield position, _upright(frame)
                    except ImageError as error:
                        yield position, error


class FrameReader:
    """The sampled frames of a piece by their place among the sampled ones, decoded in order once,
    from many threads: a frame asked for ahead of its turn waits while those before it are decoded and
    held for their callers. `keyframes`: the piece samples keyframes only, so only they are decoded."""

    def __init__(self, piece: VideoPiece, keyframes: bool = False) -> None:
        self.sampled = [i for i, frame in enumerate(piece.frames) if frame.sampled]
        self._place = {position: place for place, position in enumerate(self.sampled)}
        self._frames = piece.decoded(keyframes_only=keyframes)
        self._held: dict[int, np.ndarray | ImageError] = {}
        self._lock = threading.Lock()

    def __call__(self, place: int) -> np.ndarray:
        with self._lock:
            while place not in self._held:
                position, pixels = next(self._frames, (None, None))
                if position is None:
                    raise ImageError("frame missing from the video's stream", ErrorKind.TRUNCATED)
                if position in self._place:
                    self._held[self._place[position]] = pixels
            pixels = self._held.pop(place)
        if isinstance(pixels, ImageError):
            raise pixels
        return pixels


def _upright(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as upright BGR: its rotation flag (degrees counter-clockwise) applied."""
    if frame.is_corrupt:
        raise ImageError("frame decoded with errors", ErrorKind.CORRUPT)
    pixels = frame.to_ndarray(format="bgr24")
    turns = round(frame.rotation / 90) % 4 if frame.rotation else 0
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels


def fetch_frames(pieces: Mapping[str, str]) -> dict[str, Member]:
    """Video frames by uri as JPEG bytes, `pieces` naming each uri's piece (the output's `container`):
    each piece read and decoded once (`facesweep show`); a frame that cannot be read now has its failure."""
    wanted: dict[str, set[str]] = {}
    for uri, piece in pieces.items():
        wanted.setdefault(piece, set()).add(uri)
    found: dict[str, Member] = {}
    for piece, uris in wanted.items():
        try:
            with VideoPiece(piece, None, FrameChoice(fps=None)) as frames:
                found |= _encoded(frames, uris)
        except ImageError as error:
            found |= {uri: Member(uri, None, failure=error.failure) for uri in uris - found.keys()}
        except StorageError as error:
            failure = ImageFailure(ErrorKind.FETCH, str(error))
            found |= {uri: Member(uri, None, failure=failure) for uri in uris - found.keys()}
        absent = ImageFailure(ErrorKind.FETCH, f"no frame at that time in {piece}")
        found |= {uri: Member(uri, None, failure=absent) for uri in uris - found.keys()}
    return found


def _encoded(frames: VideoPiece, uris: set[str]) -> dict[str, Member]:
    """The frames of `uris` in the piece as JPEG bytes, or why each cannot be decoded."""
    import cv2

    found = {}
    for position, pixels in frames.decoded():
        uri = frame_uri(frames.video, frames.frames[position].time)
        if uri not in uris:
            continue
        if isinstance(pixels, ImageError):
            found[uri] = Member(uri, None, failure=pixels.failure)
        else:
            jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
            found[uri] = Member(uri, None, jpeg)
    return found
