"""`--second-look S`: the rule that picks the images a second view pays for, the second views themselves
(what `--scales 1,S` adds to the first pass's), and the setting's checks and identity; no model."""

from __future__ import annotations

import numpy as np
import pytest

from facesweep.workers.config import ConfigError, DetectorSettings, job_identity, resolve
from facesweep.workers.model.preprocess import Preprocess
from facesweep.workers.model.second_look import UNSURE_FACES, wants_second_look
from facesweep.workers.model.views import image_views


def scores(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


@pytest.mark.parametrize(
    ("first_pass", "wanted"),
    [
        (scores(), False),  # nothing found
        (scores(0.99, 0.98, 0.97, 0.9), False),  # a few clear faces
        (scores(0.99, 0.4, 0.3), False),  # two unsure candidates
        (scores(0.99, 0.4, 0.3, 0.1), True),  # three, the floor counting
        (scores(0.49, 0.2, 0.11), True),  # unsure only
        (scores(0.5, 0.5, 0.5, 0.9), False),  # 0.5 is sure
        (scores(0.09, 0.05, 0.02, 0.099), False),  # below the floor: noise
        (scores(*([0.3] * 50), *([0.95] * 20)), True),  # a crowd
    ],
)
def test_a_second_look_for_a_first_pass_unsure_of_several_candidates(
    first_pass: np.ndarray, wanted: bool
) -> None:
    assert UNSURE_FACES == 3
    assert wants_second_look(first_pass) is wanted


def test_the_rule_reads_an_images_scores_whatever_their_order() -> None:
    crowd = scores(0.9, 0.45, 0.8, 0.12, 0.3, 0.7)
    assert wants_second_look(crowd) and wants_second_look(crowd[::-1])
    assert not wants_second_look(crowd[crowd >= 0.5])


FIXED = Preprocess(input_size=(640, 640), resize="letterbox", color="BGR")  # tiles at scale 2
ANY_SIZE = Preprocess(input_size=None, resize="letterbox", color="BGR", size_multiple=32)


@pytest.mark.parametrize(
    ("preprocess", "tile"),
    [(FIXED, False), (FIXED, True), (ANY_SIZE, False)],
    ids=["fixed-input", "fixed-input-tile", "any-size"],
)
def test_second_views_are_what_scales_1_and_2_add_to_the_first_pass(
    preprocess: Preprocess, tile: bool
) -> None:
    image = np.random.default_rng(7).integers(0, 255, (1400, 1700, 3), np.uint8)
    first = image_views(image, preprocess, (1.0,), tile).views
    second = image_views(image, preprocess, (2.0,), tile, after=(1.0,)).views
    both = image_views(image, preprocess, (1.0, 2.0), tile).views
    assert len(second) >= 1 and len(first) + len(second) == len(both)
    made = {(v.geometry, v.window) for v in first + second}
    assert made == {(v.geometry, v.window) for v in both}
    for view in second:  # tiled and overlapping as together (the same windows, face limits and edges)
        twin = next(v for v in both if (v.geometry, v.window) == (view.geometry, view.window))
        assert (view.inner, view.largest, view.net_size) == (twin.inner, twin.largest, twin.net_size)
        np.testing.assert_array_equal(view.tensor, twin.tensor)


def test_second_look_is_refused_with_scales_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^--second-look 2 and --scales 1,2: give one"):
        resolve("in", "out", second_look="2", scales="1,2")
    with pytest.raises(ConfigError, match=r"^--second-look 1 is the first pass's own scale"):
        resolve("in", "out", second_look=1)
    with pytest.raises(ConfigError, match=r"^--second-look: must be greater than 0"):
        resolve("in", "out", second_look="0")
    assert resolve("in", "out", second_look="2").detector.second_look == 2.0


def test_second_look_is_in_a_jobs_identity_only_when_given() -> None:
    plain, second = resolve("in", "out"), resolve("in", "out", second_look="2")
    assert "second_look" not in job_identity(plain, "sum")  # as records that predate it
    assert job_identity(second, "sum")["second_look"] == 2.0
    assert DetectorSettings("m", second_look=2.0) != DetectorSettings("m")
