"""A test-time image pyramid (--scales) and native-resolution tiles (--tile) on real WIDER FACE photos.

Every image becomes views (one per scale, cut into tiles where a scale exceeds the network input); the
views' faces merge by the format's NMS, less the faces a tile cut at its edges. The default model at f32.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facesweep.workers.config import DetectorSettings
from facesweep.workers.faces import Faces
from facesweep.workers.model.detector import Detector
from facesweep.workers.model.nms import pairwise_intersection, pairwise_iou
from tests.detection import detect
from tests.paths import SHARED

IMAGES = SHARED / "data" / "widerface" / "val-subset-145" / "images"
pytestmark = pytest.mark.skipif(not IMAGES.is_dir(), reason="needs ../shared (WIDER FACE val-subset-145)")

# A marching band: 132 annotated faces, mostly 10-15 px high in a 1024x732 photo.
BAND = "0--Parade/0_Parade_marchingband_1_765.jpg"
# One of them (x1, y1, x2, y2 from annotations.txt: `414 214 10 13`): 6 px high at the network at scale 1.
SMALL_FACE = np.array([[414, 214, 424, 227]], np.float32)
# Mosaic: two crowds and two handshakes (faces up to ~200 px, which tile edges cut), each at 640x425.
MOSAIC = (
    "0--Parade/0_Parade_marchingband_1_765.jpg",
    "1--Handshaking/1_Handshaking_Handshaking_1_457.jpg",
    "1--Handshaking/1_Handshaking_Handshaking_1_465.jpg",
    "0--Parade/0_Parade_marchingband_1_74.jpg",
)
CELL = (640, 425)
CONFIDENT = 0.7


def photo(relpath: str) -> np.ndarray:
    image = cv2.imread(str(IMAGES / relpath), cv2.IMREAD_COLOR)
    assert image is not None, relpath
    return image


def detector(**settings: object) -> Detector:
    return Detector(DetectorSettings(model="retinaface-mnet025", precision="f32", **settings))


def faces_of(found: Detector, image: np.ndarray) -> Faces:
    return detect(found, [found.prepare(image)])[0]


def best_iou(boxes: np.ndarray, faces: Faces) -> np.ndarray:
    """For each of `boxes`, its best IoU with a detected face (0 when there is none)."""
    if not len(faces):
        return np.zeros(len(boxes))
    return pairwise_iou(boxes, faces.boxes, plus_one=False).max(axis=1)


def duplicates(faces: Faces) -> int:
    """Pairs of output boxes that overlap at IoU > 0.5 (two boxes on one face)."""
    iou = pairwise_iou(faces.boxes, faces.boxes, plus_one=False)
    return int(np.triu(iou > 0.5, k=1).sum())


def fragments(faces: Faces) -> np.ndarray:
    """Boxes lying mostly (70%) inside a box at least 1.5x their area: parts of one face."""
    inter, area, _ = pairwise_intersection(faces.boxes, faces.boxes, plus_one=False)
    np.fill_diagonal(inter, 0)
    larger = area[None, :] >= 1.5 * area[:, None]
    return np.flatnonzero(((inter >= 0.7 * area[:, None]) & larger).any(axis=1))


def test_scale_one_is_exactly_the_plain_run() -> None:
    image = photo(BAND)
    plain = faces_of(detector(score_threshold=0.3), image)
    assert len(plain) > 10
    for settings in ({"scales": (1.0,)}, {"scales": (1.0, 1.0)}):
        same = detector(score_threshold=0.3, **settings)
        assert len(same.prepare(image).views) == 1
        again = faces_of(same, image)
        np.testing.assert_array_equal(again.boxes, plain.boxes)
        np.testing.assert_array_equal(again.scores, plain.scores)
        np.testing.assert_array_equal(again.landmarks, plain.landmarks)


def test_tile_leaves_an_image_that_fits_the_input_alone() -> None:
    image = cv2.resize(photo(BAND), (640, 457), interpolation=cv2.INTER_AREA)
    plain, tiled = faces_of(detector(), image), faces_of(detector(tile=True), image)
    assert len(detector(tile=True).prepare(image).views) == 1
    np.testing.assert_array_equal(tiled.boxes, plain.boxes)


def test_pyramid_finds_small_faces_the_single_scale_misses_without_duplicates() -> None:
    image = photo(BAND)
    plain = faces_of(detector(), image)
    pyramid_detector = detector(scales=(0.5, 1.0, 2.0))
    prepared = pyramid_detector.prepare(image)
    # 0.5: one padded input; 1: the plain input; 2: 2048x1464 in overlapping 640x640 tiles
    assert len(prepared.views) > 3
    pyramid = faces_of(pyramid_detector, image)
    assert best_iou(SMALL_FACE, plain)[0] < 0.5, "the plain run was expected to miss this face"
    assert best_iou(SMALL_FACE, pyramid)[0] >= 0.5
    assert len(pyramid) >= 3 * len(plain), (len(pyramid), len(plain))
    assert duplicates(pyramid) == 0
    assert (pyramid.scores[:-1] >= pyramid.scores[1:]).all()
    height, width = image.shape[:2]
    assert (pyramid.boxes >= 0).all() and (pyramid.boxes[:, 2] <= width).all()
    assert (pyramid.boxes[:, 3] <= height).all()


def test_tiles_find_a_mosaics_faces_where_they_are_without_fragments() -> None:
    cells = [cv2.resize(photo(p)[:680, :1024], CELL, interpolation=cv2.INTER_AREA) for p in MOSAIC]
    mosaic = np.vstack([np.hstack(cells[:2]), np.hstack(cells[2:])])
    offsets = [(0, 0), (CELL[0], 0), (0, CELL[1]), CELL]
    single = detector()
    expected = []
    for cell, (dx, dy) in zip(cells, offsets, strict=True):
        faces = faces_of(single, cell)  # each photo alone: the plain view sees it 1:1, as a tile does
        expected.append(faces.boxes[faces.scores >= CONFIDENT] + np.array([dx, dy, dx, dy], np.float32))
    expected_boxes = np.concatenate(expected)
    assert len(expected_boxes) >= 20

    tiling = detector(tile=True)
    views = tiling.prepare(mosaic).views
    assert len(views) > 2 and any(any(view.inner) for view in views)
    tiled = faces_of(tiling, mosaic)
    squeezed = faces_of(single, mosaic)  # the whole 1280x850 mosaic into 640x640: faces halved

    found = best_iou(expected_boxes, tiled) >= 0.5
    assert found.all(), expected_boxes[~found]
    assert (best_iou(expected_boxes, squeezed) >= 0.5).sum() < 0.5 * len(expected_boxes)
    assert duplicates(tiled) == 0
    confident = tiled.take(tiled.scores >= 0.5)
    parts = fragments(confident)
    assert not len(parts), confident.boxes[parts]
