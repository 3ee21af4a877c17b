"""SCRFD and YuNet against plainly written references (insightface `SCRFD`, OpenCV `FaceDetectorYN`).

Models and photos are read in place from ../shared; each test skips when what it needs is absent.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest

from facesweep.workers.config import DetectorSettings
from facesweep.workers.inputs.images import decode_image
from facesweep.workers.model.catalog import ModelError
from facesweep.workers.model.detector import Detector
from facesweep.workers.model.formats import FORMATS, detect_format, scrfd, yunet
from facesweep.workers.model.formats.base import DecodeSettings, OutputInfo
from facesweep.workers.model.nms import pairwise_iou
from facesweep.workers.model.plan import inspect_model
from facesweep.workers.model.runtime import output_infos, read_model
from facesweep.workers.model.views import Prepared
from infra.demo import sample_photos
from tests.detection import detect, raw_outputs
from tests.paths import SHARED
from tests.references import reference_loop

MODELS = SHARED / "models"
SCRFD_500M = MODELS / "scrfd" / "scrfd_500m_bnkps.onnx"
SCRFD_25G = MODELS / "scrfd" / "scrfd_2.5g.onnx"
YUNET = MODELS / "yunet" / "face_detection_yunet_2026may.onnx"
ASTRONAUT = "skimage/astronaut.png"
# 1024x798: insightface letterboxes it to 640x498 (int), a rounding letterbox would give 640x499
WIDER = "wider/0--Parade/0_Parade_Parade_0_120.jpg"
PHOTOS = (ASTRONAUT, WIDER)
OUR_FORMATS = (scrfd.FORMAT, scrfd.FORMAT_NO_KPS, yunet.FORMAT)


def needs(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.is_file(), reason=f"needs {path.relative_to(SHARED.parent)}")


def param(*values: object, needed: Path, id: str) -> object:
    return pytest.param(*values, marks=needs(needed), id=id)


def photo(key: str) -> np.ndarray:
    photos = dict(sample_photos())
    if key not in photos:
        pytest.skip(f"needs the sample photo {key}")
    return decode_image(photos[key].read_bytes())


@cache
def detector(model: Path, batch: int = 1, input_size: tuple[int, int] | None = None, **settings) -> Detector:
    return Detector(
        DetectorSettings(model=str(model), precision="f32", batch=batch, input_size=input_size, **settings)
    )


@cache
def raw(model: Path, key: str) -> tuple[Prepared, list[np.ndarray]]:
    """The prepared photo and the outputs the format decodes, in its order."""
    found = detector(model)
    prepared = found.prepare(photo(key))
    return prepared, raw_outputs(found, [prepared])


def scrfd_reference(outputs, width, height, threshold, nms_threshold=0.4):
    """insightface `SCRFD.forward`, `detect` and `nms`, one anchor at a time."""
    with_kps = len(outputs) == 9
    found = []  # (score, box, points)
    for level, stride in enumerate((8, 16, 32)):
        scores = outputs[level].reshape(-1).tolist()
        deltas = outputs[level + 3].reshape(-1, 4).tolist()
        offsets = outputs[level + 6].reshape(-1, 10).tolist() if with_kps else None
        n = 0
        for y in range(height // stride):
            for x in range(width // stride):
                for _ in range(2):  # two anchors per cell, same centre
                    cx, cy = x * stride, y * stride
                    if scores[n] >= threshold:
                        left, top, right, bottom = (d * stride for d in deltas[n])
                        points = None
                        if with_kps:
                            points = [(cx, cy)[k % 2] + offsets[n][k] * stride for k in range(10)]
                        found.append((scores[n], [cx - left, cy - top, cx + right, cy + bottom], points))
                    n += 1
    scores = np.array([f[0] for f in found], np.float32)
    boxes = np.array([f[1] for f in found], np.float64).reshape(-1, 4)
    order = scores.argsort()[::-1]  # detect()
    order = order[scores[order].argsort()[::-1]]  # nms() sorts the sorted detections again
    kept = order[reference_loop(boxes[order], scores[order], nms_threshold, plus_one=True)]
    points = np.array([found[i][2] for i in kept]).reshape(-1, 10) if with_kps else None
    return boxes[kept], scores[kept], points


def yunet_reference(outputs, width, height, threshold, nms_threshold=0.3, top_k=5000):
    """OpenCV `FaceDetectorYN::postProcess` and `dnn::NMSBoxes`, one grid cell at a time."""
    faces = []  # (x1, y1, w, h, 10 point coordinates, score)
    for level, stride in enumerate((8, 16, 32)):
        cls, obj, bbox, kps = (outputs[level + 3 * k].reshape(-1).tolist() for k in range(4))
        cols, rows = width // stride, height // stride
        for r in range(rows):
            for c in range(cols):
                idx = r * cols + c
                score = math.sqrt(min(max(cls[idx], 0.0), 1.0) * min(max(obj[idx], 0.0), 1.0))
                if score < threshold:
                    continue
                cx, cy = (c + bbox[idx * 4]) * stride, (r + bbox[idx * 4 + 1]) * stride
                w, h = math.exp(bbox[idx * 4 + 2]) * stride, math.exp(bbox[idx * 4 + 3]) * stride
                points = [(kps[idx * 10 + k] + (c, r)[k % 2]) * stride for k in range(10)]
                faces.append([cx - w / 2, cy - h / 2, w, h, *points, score])
    faces = np.array(faces, np.float64).reshape(-1, 15)
    if len(faces) > 1:  # NMSBoxes on integer Rect(x, y, w, h), plain areas, stable sort, top_k
        candidates = [i for i in range(len(faces)) if faces[i, 14] > threshold]
        candidates = sorted(candidates, key=lambda i: -faces[i, 14])[:top_k]
        rects = np.trunc(faces[candidates, :4])
        corners = np.hstack([rects[:, :2], rects[:, :2] + rects[:, 2:]])
        faces = faces[
            [candidates[i] for i in reference_loop(corners, faces[candidates, 14], nms_threshold, False)]
        ]
    boxes = np.hstack([faces[:, :2], faces[:, :2] + faces[:, 2:4]])
    return boxes, faces[:, 14], faces[:, 4:14]


def assert_same_faces(faces, boxes, scores, points) -> None:
    assert len(faces) == len(boxes)
    np.testing.assert_allclose(faces.scores, scores, atol=1e-6)
    np.testing.assert_allclose(faces.boxes, boxes, atol=1e-3)
    if points is None:
        assert faces.landmarks is None
    else:
        np.testing.assert_allclose(faces.landmarks.reshape(-1, 10), points, atol=1e-3)


@pytest.mark.parametrize(
    "model", [param(SCRFD_500M, needed=SCRFD_500M, id="500m"), param(SCRFD_25G, needed=SCRFD_25G, id="2.5g")]
)
@pytest.mark.parametrize("key", PHOTOS)
@pytest.mark.parametrize("threshold", [0.05, 0.5])
def test_scrfd_matches_insightface_reference(model: Path, key: str, threshold: float) -> None:
    prepared, outputs = raw(model, key)
    assert detector(model).format is scrfd.FORMAT
    width, height = prepared.tensor.shape[2], prepared.tensor.shape[1]
    faces = scrfd.decode(outputs, (width, height), DecodeSettings(threshold, 0.4))
    boxes, scores, points = scrfd_reference(outputs, width, height, threshold)
    assert len(faces) > 0
    assert_same_faces(faces, boxes, scores, points)
    if model == SCRFD_25G:  # the same outputs without the point outputs: the nokps format
        faces = scrfd.FORMAT_NO_KPS.decode(outputs[:6], (width, height), DecodeSettings(threshold, 0.4))
        assert_same_faces(faces, boxes, scores, None)


@needs(YUNET)
@pytest.mark.parametrize("key", PHOTOS)
@pytest.mark.parametrize("threshold", [0.05, 0.6])
def test_yunet_matches_opencv_reference(key: str, threshold: float) -> None:
    prepared, outputs = raw(YUNET, key)
    assert detector(YUNET).format is yunet.FORMAT
    width, height = prepared.tensor.shape[2], prepared.tensor.shape[1]
    faces = yunet.decode(outputs, (width, height), DecodeSettings(threshold, 0.3))
    assert len(faces) > 0
    assert_same_faces(faces, *yunet_reference(outputs, width, height, threshold))


def clipped(boxes: np.ndarray, image: np.ndarray) -> np.ndarray:
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, image.shape[1])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, image.shape[0])
    return boxes


@needs(SCRFD_25G)
@pytest.mark.parametrize("key", PHOTOS)
def test_scrfd_end_to_end_as_insightface_detect(key: str) -> None:
    """insightface's own preprocessing (int letterbox, blobFromImage, one det_scale) on the plain model."""
    image = photo(key)
    model = ov.Core().read_model(SCRFD_25G)
    model.reshape({model.input(): ov.PartialShape([1, 3, 640, 640])})
    plain = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    im_ratio = image.shape[0] / image.shape[1]
    new_w, new_h = (int(640 / im_ratio), 640) if im_ratio > 1 else (640, int(640 * im_ratio))
    det_img = np.zeros((640, 640, 3), np.uint8)
    det_img[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    blob = cv2.dnn.blobFromImage(det_img, 1.0 / 128, (640, 640), (127.5, 127.5, 127.5), swapRB=True)
    boxes, scores, points = scrfd_reference(list(plain(blob).values()), 640, 640, 0.5)
    det_scale = new_h / image.shape[0]
    found = detector(SCRFD_25G)
    (faces,) = detect(found, [found.prepare(image)])
    assert len(faces) > 0
    assert_same_faces(faces, clipped(boxes / det_scale, image), scores, points / det_scale)


@needs(YUNET)
@pytest.mark.skipif(not hasattr(cv2, "FaceDetectorYN"), reason="needs OpenCV's FaceDetectorYN")
@pytest.mark.parametrize("key", PHOTOS)
def test_yunet_end_to_end_as_opencv_face_detector_yn(key: str) -> None:
    """OpenCV's FaceDetectorYN runs the same file itself; a crop whose sides are no multiple of 32."""
    image = np.ascontiguousarray(photo(key)[:-5, :-19])
    opencv = cv2.FaceDetectorYN.create(str(YUNET), "", (image.shape[1], image.shape[0]), 0.6, 0.3, 5000)
    expected = opencv.detect(image)[1]
    found = detector(YUNET, score_threshold=0.6, nms_threshold=0.3)
    (faces,) = detect(found, [found.prepare(image)])
    assert len(faces) == len(expected) > 0
    boxes = np.hstack([expected[:, :2], expected[:, :2] + expected[:, 2:4]])
    np.testing.assert_allclose(faces.boxes, clipped(boxes, image), atol=1e-2)
    np.testing.assert_allclose(faces.landmarks.reshape(-1, 10), expected[:, 4:14], atol=1e-2)
    np.testing.assert_allclose(faces.scores, expected[:, 14], atol=1e-4)


@pytest.mark.parametrize(
    "model",
    [
        param(SCRFD_500M, needed=SCRFD_500M, id="500m"),
        param(SCRFD_25G, needed=SCRFD_25G, id="2.5g"),
        param(YUNET, needed=YUNET, id="yunet"),
    ],
)
def test_astronaut_face(model: Path) -> None:
    found = detector(model)
    (faces,) = detect(found, [found.prepare(photo(ASTRONAUT))])
    assert len(faces) >= 1
    assert pairwise_iou(faces.boxes[:1], np.array([[180, 62, 270, 180]], np.float32), False)[0, 0] >= 0.8


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        param(SCRFD_500M, scrfd.FORMAT, needed=SCRFD_500M, id="500m"),
        param(SCRFD_25G, scrfd.FORMAT, needed=SCRFD_25G, id="2.5g"),
        param(YUNET, yunet.FORMAT, needed=YUNET, id="yunet"),
    ],
)
def test_detect_format_picks_ours(model: Path, expected: object) -> None:
    assert detect_format(output_infos(read_model(str(model), model.name)), model.name)[0] is expected


def test_scrfd_without_points_is_its_own_format() -> None:
    """insightface's 6-output SCRFD (no kps), by name or, with numeric names, by count and position."""
    kinds = (("score", 1), ("bbox", 4))
    named = [
        OutputInfo(frozenset({f"{kind}_{stride}"}), (1, count, channels))
        for kind, channels in kinds
        for stride, count in zip((8, 16, 32), (12800, 3200, 800), strict=True)
    ]
    numeric = [OutputInfo(frozenset({str(400 + i)}), (None, o.shape[2])) for i, o in enumerate(named)]
    for outputs, expected in ((named, named), (named[::-1], named), (numeric, numeric)):
        fmt, indices = detect_format(outputs, "synthetic")
        assert fmt is scrfd.FORMAT_NO_KPS and not fmt.has_landmarks
        assert [outputs[i] for i in indices] == expected
    assert scrfd.FORMAT.match(named) is None
    assert scrfd.FORMAT_NO_KPS.match([*named[:5], OutputInfo(frozenset({"bbox_32"}), (1, 700, 4))]) is None
    assert FORMATS["scrfd-nokps"] is scrfd.FORMAT_NO_KPS


OTHERS = sorted(
    p
    for p in [*MODELS.glob("*/*.onnx"), *MODELS.glob("*/*.xml"), *MODELS.glob("*/*/*.xml")]
    if p.parent.name not in ("scrfd", "yunet")
)


@pytest.mark.skipif(not OTHERS, reason="needs ../shared/models")
def test_other_shared_models_are_not_ours() -> None:
    names = {p.parent.name for p in OTHERS} | {p.parent.parent.name for p in OTHERS}
    assert {"centerface", "retinaface-mnet025-biubug6"} <= names
    for path in OTHERS:
        outputs = output_infos(read_model(str(path), path.name))
        assert [f.name for f in OUR_FORMATS if f.match(outputs) is not None] == [], path


@needs(SCRFD_25G)
def test_scrfd_batch_without_batch_axis_splits_per_image() -> None:
    images = [photo(ASTRONAUT), photo(WIDER)]
    single, batched = detector(SCRFD_25G), detector(SCRFD_25G, batch=2, input_size=(640, 640))
    prepared = [batched.prepare(image) for image in images]
    assert raw_outputs(batched, prepared)[0].ndim == 2  # rows of both images interleaved, no batch axis
    for faces, image in zip(detect(batched, prepared), images, strict=True):
        (expected,) = detect(single, [single.prepare(image)])
        assert len(faces) == len(expected) > 0
        np.testing.assert_allclose(faces.boxes, expected.boxes, atol=1e-2)


@needs(SCRFD_500M)
def test_scrfd_500m_runs_batch_one_only() -> None:
    with pytest.raises(ModelError, match="batch 1 only"):
        inspect_model(DetectorSettings(model=str(SCRFD_500M), batch=2))


@needs(YUNET)
def test_yunet_batch_splits_per_image() -> None:
    images = [photo(ASTRONAUT), photo(WIDER)]
    single, batched = detector(YUNET, input_size=(640, 640)), detector(YUNET, batch=2, input_size=(640, 640))
    prepared = [batched.prepare(image) for image in images]
    for faces, image in zip(detect(batched, prepared), images, strict=True):
        (expected,) = detect(single, [single.prepare(image)])
        assert len(faces) == len(expected) > 0
        np.testing.assert_allclose(faces.boxes, expected.boxes, atol=1e-2)
