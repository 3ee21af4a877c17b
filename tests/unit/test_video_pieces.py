"""A video's pieces and sampled frames, by their names and times alone (no video is read)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from facesweep.workers.evaluation.annotations import EvaluationError
from facesweep.workers.evaluation.evaluate import check_pairing
from facesweep.workers.inputs.videos import FrameChoice, frame_uri, parse_piece, piece_uri
from facesweep.workers.job.shards import PlanCounts, Shard, _tally_videos
from facesweep.workers.output.layout import parse, video_segment_path


def test_a_piece_is_named_by_its_times_and_parsed_back_exactly() -> None:
    piece = piece_uri("s3://b/clips/walk.mp4", 30.0, 60.0)
    assert piece == "s3://b/clips/walk.mp4#t=000030.000,000060.000"
    assert parse_piece(piece) == ("s3://b/clips/walk.mp4", Fraction(30), Fraction(60))
    assert parse_piece("s3://b/shards/000001.tar#bytes=000000000000-000067108864") is None
    assert parse_piece("s3://b/photo.jpg#t=000030.000,000060.000") is None  # not a video
    assert frame_uri("s3://b/clips/walk.mp4", Fraction(1001, 30000)) == "s3://b/clips/walk.mp4#t=0.033"
    assert Shard(0, (piece,), ("e",), (1,)).kind == "video"
    assert piece_uri("v.mp4", 0.0, 30.0) < piece_uri("v.mp4", 30.0, 60.0) < piece_uri("v.mp4", 300.0, 330.0)


@given(
    rate=st.sampled_from([Fraction(30), Fraction(30000, 1001), Fraction(25), Fraction(60)]),
    fps=st.sampled_from([0.5, 1.0, 2.0, 5.0, 10.0]),
    piece_frames=st.integers(7, 130),
)
@example(rate=Fraction(30), fps=1.0, piece_frames=30)  # pieces of 1 s
@example(rate=Fraction(25), fps=5.0, piece_frames=10)
@example(rate=Fraction(60), fps=0.5, piece_frames=120)  # 2 s a piece
def test_sampling_takes_the_first_frame_at_each_multiple_whatever_the_pieces(
    rate: Fraction, fps: float, piece_frames: int
) -> None:
    times = [i / rate for i in range(300)]
    choice = FrameChoice(fps=fps)
    whole = choice.sampled(times, [None, *times[:-1]], Fraction(0), [False] * 300)
    expected = [
        min(i for i, t in enumerate(times) if t >= k / Fraction(fps)) for k in range(int(times[-1] * fps) + 1)
    ]
    assert list(whole.nonzero()[0]) == expected
    # cut into pieces that start on a frame, each knowing only its own frames: the seams agree when the
    # piece's seconds hold a whole number of 1/fps
    seconds = Fraction(piece_frames) / rate
    if (seconds * Fraction(fps)).denominator == 1:
        sampled = []
        for start in range(0, 300, piece_frames):
            mine = times[start : start + piece_frames]
            flags = choice.sampled(
                mine, [None, *mine[:-1]], start * seconds / piece_frames, [False] * len(mine)
            )
            sampled += [start + i for i in flags.nonzero()[0]]
        assert sampled == expected


def test_keyframes_and_every_frame() -> None:
    times = [Fraction(i, 30) for i in range(60)]
    keys = [i % 30 == 0 for i in range(60)]
    assert list(
        FrameChoice(None, keyframes=True).sampled(times, [None] * 60, Fraction(0), keys).nonzero()[0]
    ) == [0, 30]
    assert FrameChoice(None).sampled(times, [None] * 60, Fraction(0), keys).all()


def test_the_plan_counts_each_videos_pieces_and_segments_have_their_place() -> None:
    counts = PlanCounts()
    uris = [piece_uri("a.mp4", 0, 30), piece_uri("a.mp4", 30, 60), "b.jpg", piece_uri("c.webm", 0, 30)]
    _tally_videos(counts, pa.chunked_array([uris]))
    _tally_videos(counts, pa.chunked_array([[piece_uri("c.webm", 30, 60)]]))
    assert counts.video_pieces == {"a.mp4": 2, "c.webm": 2}
    segment = video_segment_path("s3://b/a.mp4", "000030.000")
    assert segment.startswith("_videos/") and segment.endswith("/000030.000.nut")
    assert parse(segment).kind == "segment"  # --overwrite removes it with facesweep's other files
    assert video_segment_path("s3://b/a.mp4", "x") != video_segment_path("s3://b/b.mp4", "x")


def test_a_job_over_videos_may_be_given_the_frames_ground_truth(tmp_path: Path) -> None:
    truth = tmp_path / "truth.txt"
    truth.write_text("walk.mp4#t=0.000 10 10 20 20\n")
    check_pairing([[piece_uri("s3://b/walk.mp4", 0, 30)]], truth)  # its frames are known once read
    with pytest.raises(EvaluationError, match="none of its 1 images pairs"):
        check_pairing([["s3://b/run.jpg"]], truth)
