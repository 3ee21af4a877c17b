"""Blurred copies of videos (`--anonymize DEST` on a video): a segment per piece, then one copy per video.

After a piece's sampled frames are detected, its actor decodes every frame of the piece again, hides the
faces tracked across the samples (`face_tracks.boxes_per_frame`: interpolated between detections, held
before the first and after the last), and encodes them into a segment that is committed under
`OUTPUT/_videos/` before the shard's file. After the last shard, each video whose listed pieces all
have their segment is joined into its copy in DEST (`join_one`, in Ray tasks the driver spreads over the
nodes; `video_copies.join_video`: the source's audio and subtitles copied, one PUT) and its segments
removed, so a copy appears whole or not at all, and a run after a kill joins what the killed one could not.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from facesweep.workers.config import AnonymizeSettings
from facesweep.workers.errors import ImageError
from facesweep.workers.inputs.videos import VideoPiece, parse_piece
from facesweep.workers.output.layout import VIDEO_FOLDER, video_segment_path, video_segments
from facesweep.workers.products.anonymize import copy_uri, hide_faces
from facesweep.workers.products.face_tracks import boxes_per_frame
from facesweep.workers.products.video_copies import SegmentWriter, VideoFormat, join_video
from facesweep.workers.storage import ObjectError, StorageError, as_folder, join, storage_for

log = logging.getLogger("facesweep")
JOINS_AT_ONCE = 8
"""Videos joined at once in one process (each mostly waits on the store); a cluster runs this many a node."""


def hold_frames(settings: AnonymizeSettings, rate: Fraction, fps: float | None) -> int:
    """Frames a face stays hidden before and after its detections: the hold, and at least the gap
    between two sampled frames, so a face seen once is hidden until the next sample."""
    gap = math.ceil(rate / Fraction(fps).limit_denominator(1000)) if fps else 1
    return max(math.ceil(settings.anonymize_hold * rate), gap)


def blurred_segment(
    piece: VideoPiece, detections: Mapping[int, np.ndarray], settings: AnonymizeSettings, fps: float | None
) -> bytes:
    """The piece's every frame with its faces hidden, encoded as a segment (`SegmentWriter`); `detections`:
    the boxes to hide found in each sampled frame, by its place in `piece.frames`. A frame that cannot be
    decoded is left out of the copy."""
    hidden = boxes_per_frame(detections, len(piece.frames), hold_frames(settings, piece.rate, fps))
    writer: SegmentWriter | None = None
    try:
        for position, pixels in piece.decoded():
            if isinstance(pixels, ImageError):
                continue
            if writer is None:
                writer = SegmentWriter(VideoFormat.of(piece.stream, piece.video, piece.rotation))
            method, scale = settings.anonymize_method, settings.anonymize_mask_scale
            image = hide_faces(pixels, hidden[position], method, scale, out=writer.canvas)
            writer.write(image, piece.frames[position].pts)
        return writer.finish() if writer is not None else b""
    finally:
        if writer is not None:
            writer.close()


def put_segment(output: str, piece: str, segment: bytes) -> None:
    """Commits a piece's segment (before its shard's file, which commits the piece)."""
    parsed = parse_piece(piece)
    assert parsed is not None, piece
    start = piece.rsplit("#t=", 1)[1].split(",", 1)[0]
    storage_for(output).put(join(output, video_segment_path(parsed[0], start)), segment)


@dataclass
class Joined:
    """What joining found: copies written, videos still missing a segment, and videos that failed."""

    copies: int = 0
    waiting: int = 0
    failed: int = 0

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


def videos_to_join(output: str, pieces: Mapping[str, int]) -> list[tuple[str, int]]:
    """The videos of `pieces` (with their number of listed pieces) that have segments in OUTPUT: one
    LIST of `_videos/`'s folders."""
    _, folders = storage_for(output).list_level(join(output, f"{VIDEO_FOLDER}/"))
    present = {as_folder(folder) for folder in folders}
    return [(v, n) for v, n in pieces.items() if as_folder(join(output, video_segments(v))) in present]


def join_copies(output: str, settings: AnonymizeSettings, pieces: Mapping[str, int]) -> Joined:
    """Every video of `pieces` whose segments are all in OUTPUT joined into its copy here, JOINS_AT_ONCE at
    once (a job with Ray runs `join_one` in tasks across the cluster instead)."""
    joined = Joined()
    todo = videos_to_join(output, pieces)
    with ThreadPoolExecutor(JOINS_AT_ONCE, thread_name_prefix="join") as pool:
        for outcome in pool.map(lambda item: join_one(output, settings, *item), todo):
            joined.add(outcome)
    return joined


def join_one(output: str, settings: AnonymizeSettings, video: str, pieces: int) -> str:
    """The video's segments joined into its copy and then removed, if all `pieces` are there: what
    happened (a `Joined` field). A video that cannot be joined is logged and left for the next run; a
    store that fails raises StorageError."""
    storage = storage_for(output)
    segments = sorted(storage.list(join(output, video_segments(video))))
    if len(segments) < pieces:
        return "waiting"
    try:
        join_video(video, segments[:pieces], copy_uri(video, settings), keep_streams=not settings.drop_audio)
    except (ImageError, ObjectError) as error:  # the video is gone or changed since its pieces were read
        log.warning("facesweep: the blurred copy of %s was not written: %s", video, error)
        return "failed"
    except StorageError:
        raise
    except Exception:  # a bug of ours: its traceback, and the video is left for the next run
        log.exception("facesweep: the blurred copy of %s was not written (a bug of facesweep's)", video)
        return "failed"
    storage.delete(segments)
    return "copies"
