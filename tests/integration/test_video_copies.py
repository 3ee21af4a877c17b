"""Anonymized copies of videos with real PyAV/FFmpeg: synthetic sources (a camera panning across the
astronaut, H.264 + AAC + mov_text in MP4, VP9 + Opus + WebVTT in WebM, with identifying metadata) are
decoded, a box hidden in every frame, written in two segments and joined; the copy keeps every frame and
its timestamp, the audio and subtitle packets byte for byte, the rest of the picture, and none of the
metadata."""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facesweep.workers.errors import ImageError
from facesweep.workers.products.anonymize import hide_faces
from facesweep.workers.products.video_copies import SegmentWriter, VideoFormat, container_of, join_video
from facesweep.workers.storage import ObjectError, request_counts, storage_for
from infra.local_s3 import LocalS3
from infra.videos import ASS_HEADER
from tests.photos import ASTRONAUT_FACE, astronaut

SIZE = (320, 240)  # width, height as displayed
FPS, FRAMES = 25, 50
SPLIT = Fraction(1)  # seconds: the two pieces
MASK_SCALE = 1.3
SECRETS = ("+48.8584", "Apple", "iPhone", "SecretCam", "at home", "secret", "my voice", "Core Media", "2024")
KINDS = {  # extension: (video encoder and options, audio encoder, subtitle encoder)
    ".mp4": ("libx264", {"preset": "veryfast", "crf": "18"}, "aac", "mov_text"),
    ".webm": (
        "libvpx-vp9",
        {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"},
        "libopus",
        "webvtt",
    ),
}


def window(i: int) -> tuple[int, int]:
    """The top-left corner of frame i's view of the astronaut: a pan of 2 pixels a frame."""
    return 40 + 2 * i, 20


def face_box(i: int) -> np.ndarray:
    x, y = window(i)
    return ASTRONAUT_FACE - np.array([x, y, x, y], np.float32)


def make_source(path: Path, rotate: int = 0) -> None:
    """A 2 s, 25 fps video of the panning camera with a 440 Hz tone, a cue a second, and metadata that
    locates and identifies (container and streams); `rotate`: a display matrix, the pixels stored turned."""
    encoder, options, audio_codec, text_codec = KINDS[path.suffix]
    photo = astronaut()
    with av.open(str(path), "w") as container:
        container.metadata.update(
            {
                "location": "+48.8584+002.2945/",
                "com.apple.quicktime.location.ISO6709": "+48.8584+002.2945/",
                "make": "Apple",
                "model": "iPhone 15",
                "title": "at home",
                "comment": "secret",
                "creation_time": "2024-01-02T03:04:05.000000Z",
                "encoder": "SecretCam 1.0",
            }
        )
        video = container.add_stream(encoder, rate=FPS, options=options)
        video.width, video.height = SIZE[::-1] if rotate % 180 else SIZE
        video.pix_fmt = "yuv420p"
        video.metadata["handler_name"] = "Core Media Video"
        if rotate:
            video.set_display_rotation(rotate)
        audio = container.add_stream(audio_codec, rate=48_000)
        audio.layout = "mono"
        audio.metadata.update({"language": "fra", "title": "my voice"})
        text = container.add_stream(text_codec)
        text.codec_context.subtitle_header = ASS_HEADER
        text.metadata["language"] = "eng"
        for i in range(FRAMES):
            x, y = window(i)
            shown = photo[y : y + SIZE[1], x : x + SIZE[0]]
            stored = np.ascontiguousarray(np.rot90(shown, -rotate // 90))  # turned back by the display matrix
            frame = av.VideoFrame.from_ndarray(stored, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = FRAMES * 48_000 // FPS
        wave = 0.1 * np.sin(2 * np.pi * 440 * np.arange(samples, dtype=np.float32) / 48_000)
        for start in range(0, samples, 1024):
            sound = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], format="fltp", layout="mono")
            sound.sample_rate, sound.pts, sound.time_base = 48_000, start, Fraction(1, 48_000)
            container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
        seconds = FRAMES / FPS
        for second in range(math.ceil(seconds)):
            start, end = round(second / text.time_base), round(min(second + 1, seconds) / text.time_base)
            cue = av.subtitles.subtitle.SubtitleSet.create(
                f"{second},0,Default,,0,0,0,,second {second}".encode(), 0, end - start, pts=start
            )
            packet = text.codec_context.encode_subtitle(cue)
            packet.stream = text
            container.mux(packet)


def decoded(path: Path | str) -> tuple[list[np.ndarray], list[int], int]:
    """Upright BGR frames (the rotation flag applied, as the job's decoder does), their pts, and the
    rotation flag of the first."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    pixels = [
        np.ascontiguousarray(np.rot90(f.to_ndarray(format="bgr24"), round(f.rotation / 90))) for f in frames
    ]
    return pixels, [f.pts for f in frames], frames[0].rotation


def anonymized_copy(source: Path, dest: str, keep_streams: bool = True) -> None:
    """The job's way: decode, hide the face in every frame, two segments split by time, join."""
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        fmt = VideoFormat.of(stream, str(source), frames[0].rotation)
    segments = []
    for first in (True, False):
        writer = SegmentWriter(fmt)
        for i, frame in enumerate(frames):
            if (frame.pts * frame.time_base < SPLIT) == first:
                image = np.rot90(frame.to_ndarray(format="bgr24"), round(frame.rotation / 90))
                writer.write(hide_faces(image, face_box(i), "blur", MASK_SCALE), frame.pts)
        segments.append(writer.finish())
    join_video(str(source), segments, dest, keep_streams=keep_streams)


def packets(path: Path | str, kind: str) -> list[tuple[int | None, bytes]]:
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        return [(p.pts, bytes(p)) for p in container.demux(*streams) if p.size]


def metadata(path: Path | str) -> list[dict[str, str]]:
    with av.open(str(path)) as container:
        return [dict(container.metadata)] + [dict(s.metadata) for s in container.streams]


def sharpness(grey: np.ndarray) -> float:
    return float(cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F).var())


def face_mask(i: int) -> np.ndarray:
    """Where the face's hidden ellipse may reach in frame i (its box grown by the mask scale, and a margin
    for the encoder's blocks)."""
    x1, y1, x2, y2 = face_box(i)[0]
    cx, cy, ax, ay = (
        (x1 + x2) / 2,
        (y1 + y2) / 2,
        (x2 - x1) * MASK_SCALE / 2 + 16,
        (y2 - y1) * MASK_SCALE / 2 + 16,
    )
    mask = np.zeros(SIZE[::-1], bool)
    mask[max(0, int(cy - ay)) : int(cy + ay), max(0, int(cx - ax)) : int(cx + ax)] = True
    return mask


@pytest.fixture(scope="module", params=[".mp4", ".webm"])
def source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("videos") / f"camera{request.param}"
    make_source(path)
    return path


def test_the_copy_keeps_frames_timing_streams_and_the_picture(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "copies" / source.name
    anonymized_copy(source, str(dest))
    with av.open(str(source)) as original, av.open(str(dest)) as copy:
        assert copy.format.name == original.format.name
        assert [s.type for s in copy.streams] == ["video", "audio", "subtitle"]
        assert [s.codec_context.name for s in copy.streams] == [
            s.codec_context.name for s in original.streams
        ]
        assert (copy.streams.video[0].width, copy.streams.video[0].height) == SIZE
        assert abs(copy.duration - original.duration) <= 1_000_000 / FPS
        assert copy.streams.audio[0].metadata.get("language") == "fra"
        assert copy.streams.subtitles[0].metadata.get("language") == "eng"
    before, before_pts, _ = decoded(source)
    after, after_pts, rotation = decoded(dest)
    assert len(after) == len(before) == FRAMES
    assert after_pts == before_pts  # every frame at its own time, across the segments' seam
    assert rotation == 0
    for kind in ("audio", "subtitle"):
        assert packets(dest, kind) == packets(source, kind)
        assert packets(dest, kind)
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        away = ~face_mask(i)
        assert np.abs(a.astype(np.int16) - b.astype(np.int16))[away].mean() < 3.0, i
        x1, y1, x2, y2 = face_box(i)[0].astype(int) + np.array([15, 15, -15, -15])  # well inside the face
        grey_a, grey_b = (cv2.cvtColor(p[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY) for p in (a, b))
        assert sharpness(grey_b) < 0.05 * sharpness(grey_a), i


def test_the_copy_keeps_no_metadata_that_locates_or_identifies(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / source.name
    anonymized_copy(source, str(dest))
    assert any(secret in value for d in metadata(source) for value in d.values() for secret in SECRETS)
    for d in metadata(dest):
        assert not {k.lower() for k in d} & {"location", "make", "model", "title", "comment", "creation_time"}
        assert not [value for value in d.values() for secret in SECRETS if secret in value], d
    data = dest.read_bytes()
    assert not [secret for secret in SECRETS if secret.encode() in data]


def test_video_only_copy(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / source.name
    anonymized_copy(source, str(dest), keep_streams=False)
    with av.open(str(dest)) as copy:
        assert [s.type for s in copy.streams] == ["video"]
    assert decoded(dest)[1] == decoded(source)[1]


def test_a_rotated_source_is_copied_upright(tmp_path: Path) -> None:
    """A phone's portrait video: pixels stored turned, a display matrix to turn them back. The copy is
    stored upright (its width and height swapped), with no flag, and shows what the source showed."""
    source = tmp_path / "portrait.mp4"
    make_source(source, rotate=90)
    before, _, rotation = decoded(source)
    assert rotation == 90 and before[0].shape[:2] == SIZE[::-1]
    with av.open(str(source)) as container:
        stored = container.streams.video[0]
        assert (stored.width, stored.height) == SIZE[::-1]
    dest = tmp_path / "copy" / source.name
    anonymized_copy(source, str(dest))
    after, _, rotation = decoded(dest)
    assert rotation == 0
    with av.open(str(dest)) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == SIZE
    away = ~face_mask(0)
    assert np.abs(before[0].astype(np.int16) - after[0].astype(np.int16))[away].mean() < 3.0


def test_timestamps_are_kept_exactly_in_any_time_base() -> None:
    """NTSC timing (30000/1001 fps) in a 1/90000 time base with an offset start: the segment holds each
    frame once at its own pts, the first a keyframe, none reordered."""
    fmt = VideoFormat("libx264", 64, 48, Fraction(30000, 1001), Fraction(1, 90000), container="mp4")
    stamps = [7 + 3003 * i for i in range(12)]
    writer = SegmentWriter(fmt)
    for i, pts in enumerate(stamps):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8), pts)
    with av.open(io.BytesIO(writer.finish())) as segment:
        written = [p for p in segment.demux(video=0) if p.size]
    assert [p.pts * p.time_base for p in written] == [pts * fmt.time_base for pts in stamps]
    assert [p.dts for p in written] == [p.pts for p in written]
    assert written[0].is_keyframe


@pytest.mark.parametrize(("colorspace", "color_range"), [(2, 0), (1, 1), (2, 2), (9, 1)])
def test_colours_come_back_as_the_decoder_gave_them(colorspace: int, color_range: int) -> None:
    """Saturated flat colours through a segment: decoded the job's way (`to_ndarray`, which follows the
    stream's tags), they are the colours written, for BT.601/709/2020 and limited or full range."""
    fmt = VideoFormat(
        "libx264", 64, 48, Fraction(25), Fraction(1, 12800), colorspace=colorspace, color_range=color_range
    )
    colours = np.array([[0, 0, 230], [0, 200, 0], [220, 30, 30], [30, 220, 230], [128, 128, 128], [240] * 3])
    image = np.kron(colours.reshape(2, 3, 3), np.ones((24, 22, 1)))[:, :64].astype(np.uint8)
    writer = SegmentWriter(fmt)
    for i in range(3):
        writer.write(np.ascontiguousarray(image), 512 * i)
    with av.open(io.BytesIO(writer.finish())) as segment:
        frame = next(segment.decode(video=0))
    assert (int(frame.colorspace), int(frame.color_range)) == (
        colorspace,
        color_range,
    )  # the tags as they were
    inner = np.zeros((48, 64), bool)  # inside each block, away from chroma edges
    for top, left in ((0, 0), (0, 22), (0, 44), (24, 0), (24, 22), (24, 44)):
        inner[top + 4 : top + 20, left + 4 : left + 18] = True
    error = np.abs(frame.to_ndarray(format="bgr24").astype(np.int16) - image)[inner].mean()
    assert error < 2.6  # 1.4-2.0 here; a wrong matrix gives 3.5-7.6, a wrong range 8-13


def test_an_odd_sized_frame_is_written_with_its_last_row_and_column_repeated() -> None:
    """4:2:0 needs even sides: a 63x47 frame is encoded 64x48, its edge repeated, each frame's own (the
    writer refills one buffer), whether written from its canvas or from another array."""
    fmt = VideoFormat("libx264", 63, 47, Fraction(25), Fraction(1, 12800))
    writer = SegmentWriter(fmt)
    ramp = np.add.outer(np.arange(47) * 2, np.arange(63) * 2).astype(np.uint8)  # 0-216: no wrap
    images = [np.dstack([ramp, 255 - ramp, np.full_like(ramp, 40 * i)]) for i in range(4)]
    for i, image in enumerate(images):
        if i % 2:
            np.copyto(writer.canvas, image)
            image = writer.canvas
        writer.write(image, 512 * i)
    with av.open(io.BytesIO(writer.finish())) as segment:
        decoded = [frame.to_ndarray(format="bgr24").astype(np.int16) for frame in segment.decode(video=0)]
    assert len(decoded) == 4 and decoded[0].shape == (48, 64, 3)
    for image, frame in zip(images, decoded, strict=True):
        assert np.abs(frame[:47, :63] - image).mean() < 3, "each frame's own pixels"
        row, column = np.abs(frame[47, :63] - image[46]).mean(), np.abs(frame[:47, 63] - image[:, 62]).mean()
        assert row < 8 and column < 8, (row, column)  # 2-4 here; black or a stale edge: 40 and more


def test_writer_refuses_frames_it_cannot_write() -> None:
    fmt = VideoFormat("libx264", 64, 48, Fraction(25), Fraction(1, 12800))
    writer = SegmentWriter(fmt)
    with pytest.raises(ValueError, match="upright BGR"):
        writer.write(np.zeros((64, 48, 3), np.uint8), 0)  # not turned upright
    writer.write(np.zeros((48, 64, 3), np.uint8), 512)
    with pytest.raises(ValueError, match="presentation order"):
        writer.write(np.zeros((48, 64, 3), np.uint8), 512)
    writer.close()
    assert SegmentWriter(fmt).finish() == b""


def test_containers_and_codecs() -> None:
    assert [container_of(f"s3://b/clip{ext}") for ext in (".MP4", ".mov", ".mkv", ".webm", ".avi")] == [
        "mp4",
        "mov",
        "matroska",
        "webm",
        "avi",
    ]
    assert container_of("matroska,webm", "vp9") == "webm"
    assert container_of("matroska,webm", "h264") == "matroska"
    assert container_of("mov,mp4,m4a,3gp,3g2,mj2") == "mp4"


def test_failures_leave_nothing_at_dest(tmp_path: Path) -> None:
    source = tmp_path / "camera.mp4"
    make_source(source)
    _, stamps, _ = decoded(source)
    with av.open(str(source)) as container:
        fmt = VideoFormat.of(container.streams.video[0], str(source))
    segment = SegmentWriter(fmt)
    for pts in stamps[:5]:
        segment.write(np.zeros((SIZE[1], SIZE[0], 3), np.uint8), pts)
    data = segment.finish()
    dest = tmp_path / "out" / "camera.mp4"
    with pytest.raises(ValueError, match="segment 1 starts"):
        join_video(str(source), [data, data], str(dest))  # overlapping pieces
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_bytes(b"not a video at all" * 100)
    with pytest.raises(ImageError, match=r"notes\.mp4"):
        join_video(str(not_a_video), [data], str(dest))
    with pytest.raises(ObjectError, match=r"missing\.mp4"):
        join_video(str(tmp_path / "missing.mp4"), [data], str(dest))
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    join_video(str(source), [data], str(dest))  # and the same join with good inputs writes it
    assert decoded(dest)[1] == stamps[:5]
    assert list(dest.parent.iterdir()) == [dest]


def test_a_video_in_a_store_is_copied_to_a_store_with_one_put(s3_env: LocalS3, tmp_path: Path) -> None:
    """Source, segments and copy on S3: the source read in ranged GETs, the copy written whole."""
    source = tmp_path / "camera.mp4"
    make_source(source)
    client = s3_env.client()
    client.create_bucket(Bucket="videos")
    client.upload_file(str(source), "videos", "in/camera.mp4")
    frames, stamps, _ = decoded(source)
    with av.open(str(source)) as container:
        fmt = VideoFormat.of(container.streams.video[0], "s3://videos/in/camera.mp4")
    segments = []
    for half in (slice(0, 25), slice(25, None)):
        writer = SegmentWriter(fmt)
        for image, pts in zip(frames[half], stamps[half], strict=True):
            writer.write(image, pts)
        uri = f"s3://videos/segments/{half.start}.nut"
        storage_for(uri).put(uri, writer.finish())
        segments.append(uri)
    before = request_counts()["PUT"]
    join_video("s3://videos/in/camera.mp4", segments, "s3://videos/copies/camera.mp4")
    assert request_counts()["PUT"] - before == 1
    copy = tmp_path / "copy.mp4"
    client.download_file("videos", "copies/camera.mp4", str(copy))
    assert decoded(copy)[1] == stamps
    assert packets(copy, "audio") == packets(source, "audio")
