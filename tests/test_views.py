"""Views of an image: a test-time pyramid (--scales) and native-resolution tiles (--tile), merged by NMS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jobs.demo import sample_photos
from workers.detector import Detector, DetectorSettings, Timings
from workers.images import decode_image
from workers.nms import pairwise_iou

SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface" / "val-subset-145" / "images"
CROWD = SUBSET / "0--Parade" / "0_Parade_Parade_0_102.jpg"


def detect(image: np.ndarray, **settings: object) -> object:
    detector = Detector(DetectorSettings(model="retinaface-mnet025", precision="f32", **settings))
    return detector.detect([(0, detector.prepare(image))], Timings())[0]


def no_duplicates(faces: object) -> bool:
    iou = pairwise_iou(faces.boxes, faces.boxes, plus_one=True)
    np.fill_diagonal(iou, 0)
    return bool((iou <= 0.4 + 1e-6).all())


def test_scale_one_is_the_plain_run() -> None:
    image = decode_image(dict(sample_photos())["skimage/astronaut.png"].read_bytes())
    plain, pyramid_of_one = detect(image), detect(image, scales=(1.0,))
    np.testing.assert_array_equal(plain.boxes, pyramid_of_one.boxes)


@pytest.mark.skipif(not CROWD.is_file(), reason="needs ../shared (WIDER FACE photos)")
def test_pyramid_adds_small_faces_without_duplicates() -> None:
    image = decode_image(CROWD.read_bytes())
    plain, pyramid = detect(image), detect(image, scales=(1.0, 2.0))
    assert len(pyramid) > len(plain)
    assert no_duplicates(pyramid)
    assert (pyramid.boxes[:, 2] <= image.shape[1]).all() and (pyramid.boxes[:, 3] <= image.shape[0]).all()


@pytest.mark.skipif(not CROWD.is_file(), reason="needs ../shared (WIDER FACE photos)")
def test_tiles_find_the_faces_of_a_mosaic_where_they_are() -> None:
    photo = decode_image(CROWD.read_bytes())
    height, width = photo.shape[:2]
    mosaic = np.vstack([np.hstack([photo, photo]), np.hstack([photo, photo])])
    single = detect(photo)
    tiled = detect(mosaic, tile=True)
    squeezed = detect(mosaic)
    assert len(tiled) > len(squeezed)
    assert no_duplicates(tiled)
    for dx, dy in ((0, 0), (width, 0), (0, height), (width, height)):
        expected = single.boxes + np.array([dx, dy, dx, dy], np.float32)
        overlap = pairwise_iou(expected, tiled.boxes, plus_one=False).max(axis=1)
        assert (overlap >= 0.5).mean() >= 0.8, (dx, dy, overlap)
