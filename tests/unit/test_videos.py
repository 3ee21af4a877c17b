"""infra/videos.py: the test videos built from a WIDER FACE photo decode as their ground truth says (streams,
frame count, duration, times, rotation), their truth boxes land on the photo's faces, the broken copy
fails part-way, and the truth file round-trips through the evaluator's reader."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facesweep.workers.evaluation.annotations import read_ground_truth_with_settings
from facesweep.workers.evaluation.matching import pair_paths
from infra.videos import (
    PARADE,
    Truth,
    broken_copy,
    frame_boxes,
    frames_as_images,
    pan_video,
    pan_windows,
    photo_faces,
    upright,
    write_truth,
)
from tests.paths import WIDER_SUBSET

pytestmark = pytest.mark.skipif(
    not WIDER_SUBSET.is_dir(), reason="needs ../shared (WIDER FACE val-subset-145)"
)

SIZE = (320, 180)
FPS = 30
PHOTO = WIDER_SUBSET / "images" / PARADE

Videos = dict[str, tuple[Path, Truth]]


@pytest.fixture(scope="module")
def faces() -> tuple[np.ndarray, np.ndarray | None]:
    return photo_faces(WIDER_SUBSET / "annotations.txt", f"images/{PARADE}")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory, faces: tuple[np.ndarray, np.ndarray | None]) -> Videos:
    """An H.264 MP4 of 1.5 s (AAC, subtitles), a VP9 WebM of 1 s, an MP4 of 1 s shown turned 90 degrees,
    and a broken copy of the first, all 320x180 at 30 fps from the same photo."""
    folder = tmp_path_factory.mktemp("videos")
    boxes, positives = faces
    made: Videos = {}
    for name, options in {
        "h264.mp4": {"seconds": 1.5, "subtitles": True},
        "vp9.webm": {"seconds": 1.0, "codec": "vp9"},
        "rot90.mp4": {"seconds": 1.0, "rotate": 90, "audio": False},
    }.items():
        path = folder / name
        made[name] = path, pan_video(PHOTO, boxes, path, size=SIZE, fps=FPS, positives=positives, **options)
    broken_copy(folder / "h264.mp4", folder / "broken.mp4")
    made["broken.mp4"] = folder / "broken.mp4", made["h264.mp4"][1]
    return made


def decode(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def times_of(frames: list[av.VideoFrame]) -> np.ndarray:
    return np.array([float(frame.pts * frame.time_base) for frame in frames])


def test_mp4_streams_frames_duration_and_keyframes(videos: Videos) -> None:
    path, truth = videos["h264.mp4"]
    with av.open(str(path)) as container:
        kinds = [(stream.type, stream.codec_context.name) for stream in container.streams]
        assert kinds == [("video", "h264"), ("audio", "aac"), ("subtitle", "mov_text")]
        assert container.duration == pytest.approx(1.5e6, abs=2e4)
        assert container.streams.video[0].frames == 45
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
        frames = list(container.decode(video=0))
        container.seek(0)
        sound = np.concatenate([frame.to_ndarray().ravel() for frame in container.decode(audio=0)])
    assert len(frames) == len(truth.times) == len(truth.boxes) == 45
    assert (frames[0].width, frames[0].height) == SIZE
    assert [i for i, frame in enumerate(frames) if frame.key_frame] == [0, 30]  # a GOP of 1 s
    assert truth.audio == "aac"
    assert len(sound) / 48_000 == pytest.approx(1.5, abs=0.05)
    assert 0.02 < np.sqrt(np.mean(sound**2)) < 0.05  # a quiet tone, not silence


def test_webm_streams_and_millisecond_times(videos: Videos) -> None:
    path, truth = videos["vp9.webm"]
    with av.open(str(path)) as container:
        kinds = [(stream.type, stream.codec_context.name) for stream in container.streams]
        assert container.duration == pytest.approx(1e6, abs=2e4)
    assert truth.audio in ("libopus", "opus", "libvorbis")
    assert kinds == [("video", "vp9"), ("audio", truth.audio.removeprefix("lib"))]
    frames = decode(path)
    assert len(frames) == 30
    assert [i for i, frame in enumerate(frames) if frame.key_frame] == [0]
    # Matroska's millisecond time base: frame 1 is at 0.033 s, not 1/30 s
    assert truth.times[1] == 0.033 != 1 / 30


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm", "rot90.mp4"])
def test_truth_times_are_the_decoded_times(videos: Videos, name: str) -> None:
    path, truth = videos[name]
    decoded = times_of(decode(path))
    assert np.array_equal(decoded, truth.times)
    assert truth.names(name)[1] == f"{name}#t={decoded[1]:.3f}"


def test_rotation_flag_and_upright_frames(videos: Videos) -> None:
    path, truth = videos["rot90.mp4"]
    _, plain = videos["h264.mp4"]
    frames = decode(path)
    assert {frame.rotation for frame in frames} == {-90}
    assert (frames[0].width, frames[0].height) == SIZE[::-1]  # stored turned; shown as SIZE
    shown = np.stack([upright(frame) for frame in frames]).astype(np.float32)
    assert shown.shape[1:3] == SIZE[::-1]
    reference = np.stack([upright(frame) for frame in decode(videos["h264.mp4"][0])[:30]]).astype(np.float32)
    assert np.abs(shown - reference).mean() < 4  # the same pictures as the unrotated video's
    turned_wrong = np.stack([np.rot90(frame.to_ndarray(format="rgb24"), 1) for frame in frames])
    assert np.abs(turned_wrong - reference).mean() > 20
    assert len(truth.boxes) == 30
    assert all(np.array_equal(a, b) for a, b in zip(truth.boxes, plain.boxes[:30], strict=True))


def face_correlations(frame: np.ndarray, truth_boxes: np.ndarray, photo_boxes: np.ndarray) -> np.ndarray:
    """Per box: the correlation of the frame's crop at the truth box with the photo's face crop resized."""
    photo = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2GRAY).astype(np.float32)
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    found = []
    for box, face in zip(np.round(truth_boxes).astype(int), np.round(photo_boxes).astype(int), strict=True):
        crop = gray[box[1] : box[3], box[0] : box[2]]
        face_crop = photo[face[1] : face[3], face[0] : face[2]]
        want = cv2.resize(face_crop, crop.shape[::-1], interpolation=cv2.INTER_AREA)
        found.append(np.corrcoef(crop.ravel(), want.ravel())[0, 1])
    return np.array(found)


def test_truth_boxes_land_on_the_photos_faces(
    videos: Videos, faces: tuple[np.ndarray, np.ndarray | None]
) -> None:
    path, truth = videos["h264.mp4"]
    frames = decode(path)
    for i in (0, 44):
        boxes, ids = truth.boxes[i], truth.face_ids[i]
        whole = (boxes[:, :2] > 0).all(1) & (boxes[:, 2:] < SIZE).all(1) & (boxes[:, 3] - boxes[:, 1] >= 16)
        assert whole.sum() >= 5
        frame = upright(frames[i])
        on_face = face_correlations(frame, boxes[whole], faces[0][ids[whole]])
        shift = np.array([1, 0, 1, 0]) * (boxes[whole, 2:3] - boxes[whole, 0:1]) / 2  # half a face right
        beside = np.clip(boxes[whole] + shift, 0, [*SIZE, *SIZE])
        off_face = face_correlations(frame, beside, faces[0][ids[whole]])
        assert np.median(on_face) > 0.9
        assert np.median(off_face) < np.median(on_face) - 0.3


def test_pan_windows_stay_inside_and_move_a_few_pixels() -> None:
    windows = pan_windows((1024, 768), (640, 360), np.arange(300) / 30)
    assert (windows[:, :2] >= 0).all() and (windows[:, 2:] <= [1024, 768]).all()
    sides = windows[:, 2:] - windows[:, :2]
    assert np.allclose(sides[:, 0] / sides[:, 1], 640 / 360, atol=0.01)
    steps = np.abs(np.diff(windows, axis=0)).max(axis=1)
    assert steps.max() <= 8 and np.median(steps) >= 1


def test_frame_boxes_clip_drop_and_scale() -> None:
    window = np.array([[100, 100, 420, 280]])  # 320x180 shown as 640x360: twice the size
    faces = np.array(
        [
            [110, 120, 150, 170],  # inside
            [90, 150, 130, 190],  # 3/4 inside: clipped
            [60, 150, 100, 190],  # outside
            [400, 260, 440, 300],  # 1/4 inside: dropped
            [200, 200, 200, 240],  # no area
        ],
        np.float32,
    )
    boxes, ids = frame_boxes(faces, window, (640, 360))
    assert ids[0].tolist() == [0, 1]
    assert boxes[0].tolist() == [[20, 40, 100, 140], [0, 100, 60, 180]]


def test_broken_copy_fails_part_way(videos: Videos) -> None:
    path, truth = videos["broken.mp4"]
    frames = []
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == len(truth.times)  # its index is intact
        with pytest.raises(av.error.InvalidDataError):
            frames.extend(container.decode(video=0))
    assert 5 < len(frames) < len(truth.times)
    assert np.array_equal(times_of(frames), truth.times[: len(frames)])


def test_write_truth_round_trips_through_the_evaluators_reader(videos: Videos, tmp_path: Path) -> None:
    entries = [(name, videos[name][1]) for name in ("h264.mp4", "vp9.webm")]
    write_truth(entries, tmp_path / "truth.txt")
    read = read_ground_truth_with_settings(tmp_path / "truth.txt")
    rows = [f"s3://bucket/videos/{row}" for video, truth in entries for row in truth.names(video)]
    boxes = [boxes for _, truth in entries for boxes in truth.boxes]
    flags = [flags for _, truth in entries for flags in truth.positives or []]
    assert len(rows) == len(boxes) == len(flags) == 75
    assert all(len(b) for b in boxes)  # every frame has faces, so every frame has a line
    assert list(read) == [row.removeprefix("s3://bucket/videos/") for row in rows]
    assert "vp9.webm#t=0.033" in read
    pairing = pair_paths(rows, read)  # as `facesweep eval` pairs the job's rows with the truth
    assert list(pairing.pairs.values()) == rows and not pairing.ambiguous
    for name, want, positives in zip(read, boxes, flags, strict=True):
        assert read[name].positives is not None
        assert np.allclose(read[name].boxes, want, atol=0.011)
        assert np.array_equal(read[name].positives, positives)


def test_frames_as_images_are_the_upright_decoded_frames(videos: Videos, tmp_path: Path) -> None:
    path, truth = videos["rot90.mp4"]
    paths = frames_as_images(path, tmp_path, truth)
    frames = decode(path)
    assert [p.name for p in paths] == [f"rot90-t{time:.3f}.png" for time in truth.times]
    for i in (0, 17):
        png = cv2.cvtColor(cv2.imread(str(paths[i])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(png, upright(frames[i]))
    read = read_ground_truth_with_settings(tmp_path / "rot90-truth.txt")
    assert list(read) == [p.name for p, boxes in zip(paths, truth.boxes, strict=True) if len(boxes)]
    assert np.allclose(read[paths[17].name].boxes, truth.boxes[17], atol=0.011)
