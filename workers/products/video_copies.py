"""Anonymized copies of videos: each piece's frames encoded into a segment, the segments joined into one file.

A piece's actor encodes its frames (faces already hidden, upright BGR) with `SegmentWriter` into a segment:
a NUT file held in memory. NUT keeps any time base exactly (Matroska would round to milliseconds), so the
frames keep the source's timestamps; encoding has no B-frames, so decode order is presentation order and
segments concatenate without reordering. `join_video` remuxes the segments' packets in order into one file
in the source's container (no re-encoding), with the source's audio and subtitle streams copied packet for
packet, and writes it with one PUT (locally: a hidden temporary file renamed into place).

What survives of the source: the timestamps, the colour tags (the same matrix and range the decoder's BGR
conversion used, so players show the copy as they showed the source), the sample aspect ratio, and the
audio and subtitle packets with each stream's language and disposition. Nothing else: no container or
stream metadata (GPS `location`, make/model, creation_time, encoder, title, comments), no chapters, no
attachments, no data tracks (a GoPro's GPS track), no cover art, and no rotation flag: frames come upright
(the flag applied), so the copy is stored upright, its width and height swapped for 90 and 270 degrees.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from facesweep.workers.errors import ErrorKind, ImageError, line_of
from facesweep.workers.storage import StorageError, is_remote, storage_for
from facesweep.workers.storage.local import PARTIAL

if TYPE_CHECKING:
    import av

log = logging.getLogger("facesweep")

H264, VP9 = "libx264", "libvpx-vp9"
CONTAINERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".qt": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
}
"""The muxer of a copy by its source's extension (lower case); any other is Matroska."""
EXTENSIONS = {"mp4": ".mp4", "mov": ".mov", "matroska": ".mkv", "webm": ".webm", "avi": ".avi"}
VP_CODECS = ("vp8", "vp9")
X264_OPTIONS = {"preset": "veryfast", "crf": "20"}
VP9_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "crf": "32", "row-mt": "1"}
MUXER_OPTIONS = {"mp4": {"movflags": "+faststart"}, "mov": {"movflags": "+faststart"}}
SEGMENT_FORMAT = "nut"
DOWNLOAD_BLOCK = 16 * 1024 * 1024
"""Bytes per ranged GET when a source in a store is copied to a local temporary file."""


@dataclass(frozen=True)
class VideoFormat:
    """How a source's video stream is written again: encoder, upright size, timing, colours, container.

    `width`/`height` are the displayed (upright) size, not the stored one: a 1920x1080 stream flagged to
    turn 90 degrees is written 1080x1920 with no flag. `colorspace`, `color_range`, `color_primaries`,
    `color_trc` are the source's FFmpeg enum values (AVCOL_*), copied as tags; `bit_rate` None: unknown
    (Matroska and WebM rarely say)."""

    codec: str  # the encoder: libx264 or libvpx-vp9
    width: int
    height: int
    rate: Fraction  # average frames a second
    time_base: Fraction  # the source stream's: a frame's pts is in it
    pix_fmt: str = "yuv420p"  # always 4:2:0 8-bit, what every player decodes
    bit_rate: int | None = None
    container: str = "mp4"  # the muxer (mp4, mov, matroska, webm, avi)
    colorspace: int = 2  # AVCOL_SPC_UNSPECIFIED
    color_range: int = 0  # AVCOL_RANGE_UNSPECIFIED (limited)
    color_primaries: int = 2
    color_trc: int = 2
    sample_aspect_ratio: Fraction | None = None

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.container, ".mkv")

    @property
    def frame_duration(self) -> int:
        """One frame at the average rate, in time-base ticks (at least 1)."""
        return max(1, round(1 / (self.rate * self.time_base)))

    @classmethod
    def of(cls, stream: av.video.stream.VideoStream, container_name: str, rotation: int = 0) -> VideoFormat:
        """The format of the copy of `stream`, read from `container_name` (the source's name or URI: its
        extension picks the container; else a demuxer's name such as `container.format.name`).

        `rotation` is a decoded frame's `frame.rotation` (PyAV shows the display matrix only on frames):
        at 90 or 270 degrees the width and height are swapped, as the frames given to the writer are."""
        context = stream.codec_context
        source_codec = context.name
        container = container_of(container_name, source_codec)
        vp = container == "webm" or (source_codec in VP_CODECS and container in ("matroska", "mp4"))
        turned = round(rotation / 90) % 2 == 1
        width, height = (context.height, context.width) if turned else (context.width, context.height)
        sar = stream.sample_aspect_ratio
        if sar is not None and (sar <= 0 or sar == 1):
            sar = None
        if sar is not None and turned:
            sar = 1 / sar
        full = (context.pix_fmt or "").startswith("yuvj")
        return cls(
            codec=VP9 if vp else H264,
            width=width,
            height=height,
            rate=Fraction(stream.average_rate or stream.guessed_rate or stream.base_rate or 25),
            time_base=Fraction(stream.time_base or Fraction(1, 90000)),
            bit_rate=context.bit_rate or None,
            container=container,
            colorspace=int(context.colorspace),
            color_range=2 if full else int(context.color_range),
            color_primaries=int(context.color_primaries),
            color_trc=int(context.color_trc),
            sample_aspect_ratio=sar,
        )


def container_of(name: str, codec: str | None = None) -> str:
    """The muxer of a copy: by the extension of `name`, else by a demuxer's name (`mov,mp4,...`: mp4,
    `matroska,webm`: webm for a VP8/VP9 stream, else matroska), else Matroska (it holds any codec)."""
    suffix = PurePosixPath(name.split("#", 1)[0]).suffix.lower()
    if suffix in CONTAINERS:
        return CONTAINERS[suffix]
    demuxers = name.split(",")
    if "mp4" in demuxers or "mov" in demuxers:
        return "mp4"
    if "webm" in demuxers and codec in VP_CODECS:
        return "webm"
    return "avi" if demuxers == ["avi"] else "matroska"


class SegmentWriter:
    """One piece's frames (BGR uint8, upright) encoded into a segment held in memory.

    Frames must come in presentation order, each with its pts in the source's time base, which the
    segment keeps exactly; the first is a keyframe. The rate is capped CRF: at most CRF 20 (x264) or 32
    (VP9), and at most the source's bit rate when known (an x264 VBV of 2 s; VP9 constrained quality),
    so a copy is rarely larger than its source. Not thread-safe: one writer per piece."""

    def __init__(self, fmt: VideoFormat, threads: int = 2) -> None:
        import av

        self.fmt = fmt
        self.frames = 0
        self._last_pts: int | None = None
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, "w", format=SEGMENT_FORMAT)
        self._size = (fmt.height + fmt.height % 2, fmt.width + fmt.width % 2)  # 4:2:0 needs even sides
        self._stream = self._container.add_stream(fmt.codec, rate=fmt.rate)
        context = self._stream.codec_context
        context.height, context.width = self._size
        context.pix_fmt = fmt.pix_fmt
        context.time_base = self._stream.time_base = fmt.time_base
        context.framerate = fmt.rate
        context.max_b_frames = 0  # decode order = presentation order: segments concatenate as they are
        context.thread_count = threads
        context.colorspace, context.color_range = fmt.colorspace, fmt.color_range
        context.color_primaries, context.color_trc = fmt.color_primaries, fmt.color_trc
        if fmt.sample_aspect_ratio is not None:
            context.sample_aspect_ratio = fmt.sample_aspect_ratio
        options = dict(X264_OPTIONS if fmt.codec == H264 else VP9_OPTIONS)
        if fmt.bit_rate and fmt.codec == H264:
            options |= {"maxrate": str(fmt.bit_rate), "bufsize": str(2 * fmt.bit_rate)}
        elif fmt.codec == VP9:
            context.bit_rate = fmt.bit_rate or 0  # with crf: a cap (constrained quality); 0: constant quality
        context.options = options
        # For the join: the source's own time base (NUT may refine it) and rate, and the container.
        self._stream.metadata.update(
            {"time_base": str(fmt.time_base), "frame_rate": str(fmt.rate), "container": fmt.container}
        )
        # One BGR frame, refilled for every frame (its conversion to `pix_fmt` is a new frame): a fresh
        # 1080p frame a frame cost more than the copy into it.
        self._bgr = av.VideoFrame(self._size[1], self._size[0], "bgr24")
        plane = self._bgr.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(self._size[0], plane.line_size)
        self._pixels = rows[:, : 3 * self._size[1]].reshape(*self._size, 3)
        # The next frame's pixels, to be filled (`hide_faces(..., out=writer.canvas)`) and then written
        # with `write(writer.canvas, pts)`, saving a copy.
        self.canvas = self._pixels[: fmt.height, : fmt.width]

    def write(self, image: np.ndarray, pts: int) -> None:
        """Encodes one frame shown at `pts` (source time base, after the previous frame's)."""
        if image.shape != (self.fmt.height, self.fmt.width, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"a frame of shape {image.shape} {image.dtype}: the copy's frames are upright BGR uint8 "
                f"({self.fmt.height}, {self.fmt.width}, 3)"
            )
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"frame pts {pts} after {self._last_pts}: frames go in presentation order")
        if image is not self.canvas:
            np.copyto(self.canvas, image)
        height, width = image.shape[:2]
        if height < self._size[0]:  # an odd side: its last row or column repeated
            self._pixels[height:] = self._pixels[height - 1]
        if width < self._size[1]:
            self._pixels[:, width:] = self._pixels[:, width - 1 : width]
        # The inverse of the decoder's to_ndarray: the source's matrix and range (see VideoFormat).
        frame = self._bgr.reformat(
            format=self.fmt.pix_fmt, dst_colorspace=self.fmt.colorspace, dst_color_range=self.fmt.color_range
        )
        frame.pts, frame.time_base, frame.duration = pts, self.fmt.time_base, self.fmt.frame_duration
        self._container.mux(self._stream.encode(frame))
        self._last_pts = pts
        self.frames += 1

    def finish(self) -> bytes:
        """The segment (empty bytes when no frame was written); the writer is closed."""
        if self.frames:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            return self._buffer.getvalue()
        self.close()
        return b""

    def close(self) -> None:
        """Drops what was written (after `finish`: nothing to do)."""
        with contextlib.suppress(Exception):
            self._container.close()

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def join_video(source: str, segments: Sequence[bytes | str], dest: str, keep_streams: bool = True) -> None:
    """Writes `dest` (a path or a store's URI): the segments' video in order, in the source's container,
    with every audio and subtitle stream of `source` copied when `keep_streams`; one PUT, never partial.

    Segments are `SegmentWriter.finish()` bytes, or the URI of an object holding them; empty ones (a
    piece without frames) are skipped. Raises ImageError when the source cannot be read, a StorageError
    when a store fails, ValueError when the segments do not fit together (overlapping times)."""
    import av

    parts = [part if isinstance(part, bytes) else storage_for(part).get(part) for part in segments]
    inputs = [_open_segment(part, i, dest) for i, part in enumerate(parts) if part]
    if not inputs:
        raise ValueError(f"{dest}: no segment holds a frame")
    try:
        first = inputs[0].streams.video[0]
        _check_alike(inputs, dest)
        details = first.metadata
        muxer = details.get("container", "matroska")
        time_base, rate = Fraction(details["time_base"]), Fraction(details["frame_rate"])
        with contextlib.ExitStack() as stack:
            original = stack.enter_context(_opened_source(source)) if keep_streams else None
            path = stack.enter_context(_built_at(dest, EXTENSIONS.get(muxer, ".mkv")))
            output = stack.enter_context(av.open(path, "w", format=muxer, options=MUXER_OPTIONS.get(muxer)))
            video = output.add_stream_from_template(first)
            video.time_base = time_base
            video.codec_context.time_base = time_base
            video.codec_context.framerate = rate
            kept = _copied_streams(original, output) if original is not None else {}
            streams = [_video_packets(inputs, video, dest)]
            if kept:
                streams.append(_source_packets(original, kept, source))
            for packet in heapq.merge(*streams, key=_seconds):
                output.mux(packet)
    finally:
        for segment in inputs:
            segment.close()


def _open_segment(data: bytes, index: int, dest: str) -> av.container.InputContainer:
    import av

    try:
        segment = av.open(io.BytesIO(data), "r", format=SEGMENT_FORMAT)
    except av.FFmpegError as error:
        raise ValueError(f"{dest}: segment {index} is not a SegmentWriter's: {line_of(error)}") from None
    if not segment.streams.video or "time_base" not in segment.streams.video[0].metadata:
        segment.close()
        raise ValueError(f"{dest}: segment {index} is not a SegmentWriter's")
    return segment


def _check_alike(inputs: list[av.container.InputContainer], dest: str) -> None:
    """Every segment of one codec, size and codec header (they become one stream)."""

    def key(segment: av.container.InputContainer) -> tuple:
        context = segment.streams.video[0].codec_context
        return context.name, context.width, context.height, bytes(context.extradata or b"")

    first = key(inputs[0])
    for i, segment in enumerate(inputs[1:], 1):
        if key(segment) != first:
            raise ValueError(
                f"{dest}: segment {i} was encoded differently from the first ({key(segment)[:3]})"
            )


def _video_packets(inputs: list[av.container.InputContainer], video: av.stream.Stream, dest: str) -> Iterator:
    """The segments' packets in order, for the output's video stream; ValueError when they overlap."""
    last: Fraction | None = None
    for i, segment in enumerate(inputs):
        stream = segment.streams.video[0]
        for packet in segment.demux(stream):
            if packet.size == 0:
                continue
            time = packet.dts * packet.time_base
            if last is not None and time <= last:
                raise ValueError(
                    f"{dest}: segment {i} starts at {float(time):.3f} s, not after the last frame"
                )
            last = time
            packet.stream = video
            yield packet


def _copied_streams(original: av.container.InputContainer, output: av.container.OutputContainer) -> dict:
    """The output's copy of each audio and subtitle stream of the source (by source index): codec
    parameters, language and disposition, no other metadata."""
    kept = {}
    for stream in original.streams:
        if stream.type not in ("audio", "subtitle") or stream.codec_context is None:
            continue
        try:
            copy = output.add_stream_from_template(stream)
        except ValueError as error:  # a codec the container cannot hold
            log.warning("%s: stream %d not copied: %s", original.name, stream.index, line_of(error))
            continue
        copy.time_base = stream.time_base
        language = stream.metadata.get("language")
        if language and language != "und":
            copy.metadata["language"] = language
        copy.disposition = stream.disposition
        kept[stream.index] = copy
    return kept


def _source_packets(original: av.container.InputContainer, kept: dict, source: str) -> Iterator:
    """The kept streams' packets in file order, for their output streams."""
    import av

    streams = [original.streams[index] for index in kept]
    try:
        for packet in original.demux(*streams):
            if packet.size == 0 or (packet.dts is None and packet.pts is None):
                continue
            packet.stream = kept[packet.stream_index]
            yield packet
    except av.FFmpegError as error:
        raise ImageError(f"{source}: cannot read its audio: {line_of(error)}", ErrorKind.CORRUPT) from None


def _seconds(packet: av.Packet) -> Fraction:
    time = packet.dts if packet.dts is not None else packet.pts
    return time * packet.time_base


@contextlib.contextmanager
def _opened_source(source: str) -> Iterator[av.container.InputContainer]:
    """The source opened from a local file (a store's object copied to a temporary file first)."""
    import av

    with _local_copy(source) as path:
        try:
            container = av.open(path, "r", metadata_errors="ignore")
        except av.FFmpegError as error:
            kind = ErrorKind.NOT_AN_IMAGE if isinstance(error, av.InvalidDataError) else ErrorKind.CORRUPT
            raise ImageError(f"{source}: not a readable video: {line_of(error)}", kind) from None
        with container:
            yield container


@contextlib.contextmanager
def _local_copy(uri: str) -> Iterator[str]:
    """A local path holding the object `uri`: itself when local, else a temporary copy (ranged GETs)."""
    storage = storage_for(uri)
    size = storage.size(uri)  # a missing source: its ObjectError
    if not is_remote(uri):
        yield uri
        return
    handle, path = tempfile.mkstemp(prefix="facesweep-source-", suffix=PurePosixPath(uri).suffix)
    try:
        with os.fdopen(handle, "wb") as file:
            for start in range(0, size, DOWNLOAD_BLOCK):
                file.write(storage.get_range(uri, start, min(DOWNLOAD_BLOCK, size - start)))
        yield path
    finally:
        Path(path).unlink(missing_ok=True)


@contextlib.contextmanager
def _built_at(dest: str, suffix: str) -> Iterator[str]:
    """A local path to build `dest` in, put in place whole once the block ends without an error: renamed
    over a local `dest` (a hidden `_<name>.<pid>.<thread>.partial` beside it, which `remove_partials`
    cleans after a kill), or one PUT of a temporary file to a store."""
    if is_remote(dest):
        handle, path = tempfile.mkstemp(prefix="facesweep-copy-", suffix=suffix)
        os.close(handle)
        try:
            yield path
            storage_for(dest).put(dest, Path(path).read_bytes())
        finally:
            Path(path).unlink(missing_ok=True)
        return
    target = Path(dest)
    partial = target.with_name(f"_{target.name}.{os.getpid()}.{threading.get_ident()}{PARTIAL}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(f"cannot write {dest}: {error.strerror or error}") from None
    try:
        yield str(partial)
        try:
            os.replace(partial, target)
        except OSError as error:
            raise StorageError(f"cannot write {dest}: {error.strerror or error}") from None
    finally:
        partial.unlink(missing_ok=True)
