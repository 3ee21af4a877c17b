"""Test videos with known faces, built at test time from WIDER FACE photos (never commit them).

A virtual camera pans and zooms across one photo, so every frame's face boxes follow from the photo's
ground truth. `python -m infra.videos OUT_DIR` writes a standard set and its `truth.txt`.

Times are what a decoder reports (`frame.pts * frame.time_base`). A job names a frame's output row
`<video uri>#t=<seconds, 3 decimals>`, and the truth file names it `<video name>#t=<seconds>`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.subtitles.stream import SubtitleStream

from facesweep.workers.evaluation.annotations import read_ground_truth_with_settings

SHARED = Path(__file__).resolve().parents[2] / "shared"
SUBSET = Path("data") / "widerface" / "val-subset-145"
ROTATIONS = (0, 90, 180, 270)
CONTAINERS = {"h264": "mp4", "vp9": "webm"}
ENCODERS = {"h264": "libx264", "vp9": "libvpx-vp9"}
ENCODER_OPTIONS = {
    "libx264": {"preset": "veryfast", "crf": "20"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0", "row-mt": "1"},
}
# A WebM's audio: the first available of these (none: the WebM has no audio track).
WEBM_AUDIO = ("libopus", "opus", "libvorbis")
SAMPLE_RATE = 48_000
TONE_HZ, TONE_AMPLITUDE = 440.0, 0.05  # a quiet tone, -26 dBFS
MIN_INSIDE = 0.5  # a face less than half inside the crop window is dropped
# The ASS header text subtitle encoders (mov_text) need before they open.
ASS_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, "
    b"Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, "
    b"Alignment, MarginL, MarginR, MarginV, Encoding\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)


@dataclass
class Truth:
    """A video's ground truth, one entry per frame in display order.

    `times`: seconds as the decoder reports them (`float(frame.pts * frame.time_base)`), which are not
    `i / fps` in a WebM (millisecond time base: 0.033, 0.067, ...). `boxes[i]`: `[N, 4]` float32 `x1, y1,
    x2, y2` in the displayed (upright, after rotation) frame's pixels, clipped to it; `face_ids[i]`: each
    box's row in the photo's `faces`; `windows`: `[F, 4]` int crop windows in photo pixels;
    `positives[i]`: `[N, 3]` easy/medium/hard flags, or None. The flags are the photo's, not recomputed
    for the face's size in the frame. `size`: the displayed (width, height); `audio`: the audio encoder's
    name, None when the video has no audio track.
    """

    times: np.ndarray
    boxes: list[np.ndarray]
    face_ids: list[np.ndarray]
    windows: np.ndarray
    positives: list[np.ndarray] | None
    size: tuple[int, int]
    fps: int
    rotate: int
    audio: str | None

    def names(self, video_name: str) -> list[str]:
        """Each frame's name as a job names its output row, `<video_name>#t=<s.mmm>`."""
        return [f"{video_name}#t={time:.3f}" for time in self.times]


def photo_faces(annotations: Path, relpath: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A photo's ground truth from an annotations file: boxes `[N, 4]` and easy/medium/hard flags or None."""
    truth = read_ground_truth_with_settings(annotations)[relpath]
    return truth.boxes, truth.positives


def pan_windows(photo_size: tuple[int, int], size: tuple[int, int], times: np.ndarray) -> np.ndarray:
    """`[F, 4]` integer crop windows `x1, y1, x2, y2` inside a `photo_size` (width, height) photo, of the
    output's aspect: left to right and back every 6 s, up and down every 10 s, zooming in and out
    between 85% and 65% of the largest window every 12 s (a few photo pixels per frame at 30 fps)."""
    width, height = photo_size
    aspect = size[0] / size[1]
    largest = min(width, height * aspect)
    zoom = 0.75 + 0.1 * np.cos(np.pi * times / 6)
    w = zoom * largest
    h = w / aspect
    left = (width - w) * (0.5 - 0.45 * np.cos(np.pi * times / 3))
    top = (height - h) * (0.5 - 0.4 * np.cos(np.pi * times / 5))
    x1, y1 = np.floor(left), np.floor(top)
    return np.stack([x1, y1, x1 + np.round(w), y1 + np.round(h)], axis=1).astype(np.int64)


def frame_boxes(
    faces: np.ndarray, windows: np.ndarray, size: tuple[int, int]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per window: the faces at least half inside it, clipped and mapped to the `size` frame the window is
    resized to (`x_frame = (x - x1) * width / window width`, pixel edges, as cv2.resize maps them), and
    their rows in `faces`. A face of zero area is never inside."""
    faces = np.asarray(faces, np.float64).reshape(-1, 4)
    win = windows[:, None, :].astype(np.float64)  # [F, 1, 4]
    low = np.maximum(faces[None, :, :2], win[..., :2])
    high = np.minimum(faces[None, :, 2:], win[..., 2:])
    inter = np.clip(high - low, 0, None).prod(axis=2)  # [F, N]
    area = (faces[:, 2:] - faces[:, :2]).prod(axis=1)
    inside = np.divide(inter, area, out=np.zeros_like(inter), where=area > 0) >= MIN_INSIDE
    scale = np.asarray(size, np.float64) / (windows[:, 2:] - windows[:, :2])  # [F, 2]
    mapped = np.concatenate([low - win[..., :2], high - win[..., :2]], axis=2) * np.tile(scale, 2)[:, None]
    boxes = [mapped[i][keep].astype(np.float32) for i, keep in enumerate(inside)]
    return boxes, [np.flatnonzero(keep) for keep in inside]


def pan_video(
    photo: Path,
    faces: np.ndarray,
    out: Path,
    *,
    codec: str = "h264",
    seconds: float = 3.0,
    fps: int = 30,
    size: tuple[int, int] = (640, 360),
    audio: bool = True,
    rotate: int = 0,
    subtitles: bool = False,
    positives: np.ndarray | None = None,
) -> Truth:
    """Writes a video panning and zooming across `photo` and returns its ground truth.

    `codec`: "h264" (libx264, yuv420p, AAC audio; an .mp4) or "vp9" (libvpx-vp9, Opus audio when the
    wheel's FFmpeg has an encoder; a .webm), a keyframe every second. `size`: the displayed (width, height),
    even. `rotate`: degrees a player turns the stored picture clockwise to show it (the MP4 `rotate` tag's
    sense, a phone's portrait video); the stored frames are the displayed ones turned the other way, and
    PyAV reads the flag back as `frame.rotation == -rotate` in [-180, 180) (90: -90, 180: -180, 270: 90).
    `faces`: the photo's boxes `[N, 4]` `x1, y1, x2, y2`; `positives`: their easy/medium/hard flags
    `[N, 3]`, carried to the truth.
    `subtitles`: a text subtitle track, one cue a second (mov_text in MP4, WebVTT in WebM).
    """
    if codec not in ENCODERS:
        raise ValueError(f"codec {codec!r}: expected one of {sorted(ENCODERS)}")
    if rotate not in ROTATIONS:
        raise ValueError(f"rotate {rotate}: expected one of {ROTATIONS}")
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"size {size}: yuv420p needs an even width and height")
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{photo}: not an image cv2 reads")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    count = max(1, round(seconds * fps))
    windows = pan_windows((rgb.shape[1], rgb.shape[0]), size, np.arange(count) / fps)
    boxes, face_ids = frame_boxes(faces, windows, size)
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w", format=CONTAINERS[codec]) as container:
        video = container.add_stream(ENCODERS[codec], rate=fps, options=ENCODER_OPTIONS[ENCODERS[codec]])
        video.width, video.height = (size[1], size[0]) if rotate in (90, 270) else size
        video.pix_fmt = "yuv420p"
        video.codec_context.gop_size = fps
        if rotate:
            video.set_display_rotation(-rotate)
        sound = _audio_stream(container, codec) if audio else None
        text = _subtitle_stream(container, codec) if subtitles else None
        for i, (x1, y1, x2, y2) in enumerate(windows):
            shown = cv2.resize(rgb[y1:y2, x1:x2], size, interpolation=cv2.INTER_AREA)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(shown, rotate // 90)), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            _write_tone(container, sound, count / fps)
        if text is not None:
            _write_cues(container, text, count / fps)
        time_base = video.time_base
    assert time_base is not None
    # The muxer rescales pts i (in 1/fps) to the stream's time base, rounding half away from zero.
    ticks = [math.floor(Fraction(i, fps) / time_base + Fraction(1, 2)) for i in range(count)]
    times = np.array([float(tick * time_base) for tick in ticks])
    flags = None if positives is None else [np.asarray(positives, bool)[ids] for ids in face_ids]
    audio_codec = None if sound is None else sound.codec_context.name
    return Truth(times, boxes, face_ids, windows, flags, size, fps, rotate, audio_codec)


def _audio_stream(container: OutputContainer, codec: str) -> AudioStream | None:
    """AAC for MP4, the first of `WEBM_AUDIO` the wheel can encode for WebM (None: no audio)."""
    names = ("aac",) if codec == "h264" else WEBM_AUDIO
    name = next((n for n in names if n in av.codecs_available), None)
    if name is None:
        return None
    stream = container.add_stream(name, rate=SAMPLE_RATE)
    stream.layout = "mono"
    return stream


def _write_tone(container: OutputContainer, stream: AudioStream, seconds: float) -> None:
    """`seconds` of a quiet sine, in 1024-sample frames (PyAV re-chunks them to the encoder's frame size)."""
    samples = round(seconds * SAMPLE_RATE)
    wave = TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * np.arange(samples, dtype=np.float32) / SAMPLE_RATE)
    for start in range(0, samples, 1024):
        frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, start, Fraction(1, SAMPLE_RATE)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _subtitle_stream(container: OutputContainer, codec: str) -> SubtitleStream:
    stream = container.add_stream("mov_text" if codec == "h264" else "webvtt")
    stream.codec_context.subtitle_header = ASS_HEADER
    return stream


def _write_cues(container: OutputContainer, stream: SubtitleStream, seconds: float) -> None:
    """One cue a second, `second N`, each shown for that second."""
    assert stream.time_base is not None
    for second in range(math.ceil(seconds)):
        start = round(second / stream.time_base)
        end = round(min(second + 1, seconds) / stream.time_base)
        cue = av.subtitles.subtitle.SubtitleSet.create(
            f"{second},0,Default,,0,0,0,,second {second}".encode(), 0, end - start, pts=start
        )
        packet = stream.codec_context.encode_subtitle(cue)
        packet.stream = stream
        container.mux(packet)


def write_truth(entries: list[tuple[str, Truth]], path: Path) -> None:
    """The frames' ground truth as an annotations file `facesweep eval` reads, one line per face:
    `<video_name>#t=<s.mmm> x y w h` (as the job names a frame's row), plus `0 0 0 0 0 0 easy medium
    hard` when every entry has flags (the six attribute columns are unknown here and written as 0; eval
    reads only the flags).

    A frame without faces has no line, so eval leaves it out (its detections count as "not in ground
    truth", not as false positives): the one-line-per-face layout cannot name an image without faces.
    """
    flags = all(truth.positives is not None for _, truth in entries)
    lines = [line for name, truth in entries for line in _truth_lines(truth.names(name), truth, flags)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))


def _truth_lines(names: list[str], truth: Truth, flags: bool) -> Iterator[str]:
    """One `name x y w h [0 0 0 0 0 0 easy medium hard]` line per face of each frame."""
    for i, (name, boxes) in enumerate(zip(names, truth.boxes, strict=True)):
        if any(c.isspace() for c in name):
            raise ValueError(f"{name!r}: a name in an annotations file cannot hold whitespace")
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        table = np.char.mod("%.2f", xywh)
        if flags:
            assert truth.positives is not None
            zeros = np.zeros((len(boxes), 6), np.int64)
            flag_columns = np.concatenate([zeros, truth.positives[i].astype(np.int64)], axis=1)
            table = np.concatenate([table, np.char.mod("%d", flag_columns)], axis=1)
        yield from (f"{name} {' '.join(row)}\n" for row in table.tolist())


def upright(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as an RGB array the way a player shows it: turned by its display matrix."""
    return np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), frame.rotation // 90))


def frames_as_images(video: Path, out_dir: Path, truth: Truth | None = None) -> list[Path]:
    """Decodes `video` and writes each frame, upright, as a lossless PNG `<stem>-t<s.mmm>.png` in `out_dir`;
    with its `truth`, also `<stem>-truth.txt` naming those PNGs (raises ValueError if the decoded times
    are not the truth's), so AP on the video and on its frames as photos can be compared."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, times = [], []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            time = float(frame.pts * frame.time_base)
            path = out_dir / f"{video.stem}-t{time:.3f}.png"
            cv2.imwrite(str(path), cv2.cvtColor(upright(frame), cv2.COLOR_RGB2BGR))
            paths.append(path)
            times.append(time)
    if truth is not None:
        if not np.array_equal(times, truth.times):
            raise ValueError(f"{video}: decoded {len(times)} frames at times that are not its truth's")
        lines = _truth_lines([p.name for p in paths], truth, truth.positives is not None)
        (out_dir / f"{video.stem}-truth.txt").write_text("".join(lines))
    return paths


def broken_copy(source: Path, out: Path, start: float = 0.4, end: float = 0.6) -> None:
    """`source` with the bytes from `start` to `end` (fractions of its size) zeroed.

    What a reader sees (PyAV 18): an MP4 still opens with its full duration and frame count (its index, at
    the end, is intact), decodes the frames before the zeros, then `container.decode` raises
    av.error.InvalidDataError ("avcodec_send_packet()"): 29 of the standard set's 90 frames. A reader that
    decodes packet by packet and skips the failing ones gets frames again after the zeros (65 of 90, some
    before the next keyframe, so damaged). A WebM opens and ends early without an error. Cutting the bytes
    out instead would make the MP4 fail to open at all (the index's offsets then point past the data).
    """
    data = bytearray(source.read_bytes())
    data[int(len(data) * start) : int(len(data) * end)] = bytes(int(len(data) * end) - int(len(data) * start))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)


# --- the standard set --------------------------------------------------------------------------------------

# Photos with many faces 40-160 px high (val-subset-145 relpaths); each frame of their pans has faces.
PARADE = "0--Parade/0_Parade_Parade_0_470.jpg"  # 25 faces, 21 of them 40-160 px high
BAND = "0--Parade/0_Parade_marchingband_1_649.jpg"  # 32 faces, 17 of them 40-160 px high
CROWD = "0--Parade/0_Parade_Parade_0_490.jpg"  # 95 faces, 35 of them 40-160 px high
BENCH = "0--Parade/0_Parade_Parade_0_873.jpg"  # 142 faces, 27 of them 40-160 px high


def build_set(out_dir: Path, shared: Path = SHARED, bench: bool = False) -> list[tuple[Path, Truth]]:
    """The standard videos in `out_dir` and their `truth.txt` (the broken copy has none): returns each
    written video with its truth (the broken copy with its source's)."""
    root = shared / SUBSET
    truth = read_ground_truth_with_settings(root / "annotations.txt")
    plan: list[tuple[str, str, dict]] = [
        (PARADE, "h264.mp4", {}),
        (BAND, "h264.mp4", {"subtitles": True}),
        (CROWD, "vp9.webm", {"codec": "vp9"}),
        (PARADE, "rot90.mp4", {"rotate": 90}),
    ]
    if bench:
        plan.append((BENCH, "1080p.mp4", {"seconds": 10.0, "size": (1920, 1080)}))
    made = []
    for relpath, suffix, options in plan:
        faces = truth[f"images/{relpath}"]
        out = out_dir / f"{Path(relpath).stem}-{suffix}"
        photo = root / "images" / relpath
        made.append((out, pan_video(photo, faces.boxes, out, positives=faces.positives, **options)))
    broken = out_dir / f"{Path(PARADE).stem}-broken.mp4"
    broken_copy(made[0][0], broken)
    write_truth([(path.name, entry) for path, entry in made], out_dir / "truth.txt")
    return [*made, (broken, made[0][1])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.videos", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="where the videos and truth.txt go")
    parser.add_argument("--shared", type=Path, default=SHARED, help=f"the shared folder (default {SHARED})")
    parser.add_argument("--bench", action="store_true", help="also a 1920x1080 30 fps video of 10 s")
    args = parser.parse_args(argv)
    if not (args.shared / SUBSET / "annotations.txt").is_file():
        raise SystemExit(f"infra.videos: no {SUBSET}/annotations.txt under {args.shared}")
    for path, truth in build_set(args.out_dir, args.shared, args.bench):
        faces = [len(b) for b in truth.boxes]
        print(
            f"{path}: {path.stat().st_size / 1e6:.1f} MB, {truth.size[0]}x{truth.size[1]}, "
            f"{len(truth.times) / truth.fps:.1f} s, {min(faces)}-{max(faces)} faces a frame"
        )
    print(f"{args.out_dir / 'truth.txt'}: the ground truth of every video but the broken one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
