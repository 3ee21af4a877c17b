"""SSD DetectionOutput and ATSS boxes+labels decoders against plainly written OMZ rules, on real models."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from facesweep.workers.config import DetectorSettings
from facesweep.workers.faces import Faces
from facesweep.workers.inputs.images import decode_image
from facesweep.workers.model.catalog import ModelError
from facesweep.workers.model.detector import Detector
from facesweep.workers.model.formats import FORMATS, boxes_labels, detect_format, ssd
from facesweep.workers.model.formats.base import DecodeSettings, OutputInfo
from facesweep.workers.model.runtime import output_infos, read_model
from facesweep.workers.model.views import Prepared
from infra.demo import sample_photos
from tests.detection import detect, raw_outputs
from tests.paths import SHARED

MODELS = SHARED / "models"
WIDER = SHARED / "data" / "widerface" / "val-subset-145" / "images"
needs_shared = pytest.mark.skipif(not MODELS.is_dir(), reason=f"real models not found at {MODELS}")

# model -> (its .xml below MODELS, the face label its model card gives)
SSD_MODELS = {
    "0204": ("face-detection-0204/FP16/face-detection-0204.xml", 0),
    "0200": ("face-detection-0200/FP16/face-detection-0200.xml", 0),
    "adas-0001": ("face-detection-adas-0001/FP16/face-detection-adas-0001.xml", 1),
    "retail-0005": ("face-detection-retail-0005/FP16/face-detection-retail-0005.xml", 1),
}
ATSS_MODEL = "face-detection-0205/FP16/face-detection-0205.xml"
# A skimage portrait, a crowd with faces cut by the image border, a smaller group.
PHOTOS = (
    "skimage/astronaut.png",
    "wider/0--Parade/0_Parade_Parade_0_12.jpg",
    "wider/1--Handshaking/1_Handshaking_Handshaking_1_158.jpg",
)
THRESHOLDS = (0.05, 0.5)


def photo_bytes(key: str) -> bytes:
    if key.startswith("wider/"):
        return (WIDER / key.removeprefix("wider/")).read_bytes()
    return dict(sample_photos())[key].read_bytes()


@cache
def detector(model: str, threshold: float, batch: int = 1) -> Detector:
    settings = DetectorSettings(
        model=str(MODELS / model), precision="f32", score_threshold=threshold, batch=batch
    )
    return Detector(settings)


def run(
    model: str, photo: str, threshold: float
) -> tuple[Detector, Prepared, list[np.ndarray], Faces, Faces]:
    """The detector, the prepared photo, the decoder's raw outputs, faces in input and in original pixels."""
    det = detector(model, threshold)
    prepared = det.prepare(decode_image(photo_bytes(photo)))
    picked = raw_outputs(det, [prepared])
    net_size = (prepared.tensor.shape[2], prepared.tensor.shape[1])
    (mine,) = det.format.split(picked, 1)
    in_input = det.format.decode(mine, net_size, det.plan.decode)
    (in_original,) = detect(det, [prepared])
    return det, prepared, picked, in_input, in_original


def omz_ssd_reference(detection_out, face_label, threshold, sx, sy, clip=None):
    """OMZ SSD rule, one row at a time: image 0's rows up to the first image_id -1, conf > threshold and
    the face label; coordinates times (sx, sy); clipped to `clip` (w, h) as OMZ `clip_detections` does
    (without its rounding to whole pixels); best score first."""
    found = []
    for image_id, label, conf, x1, y1, x2, y2 in detection_out[0][0]:
        if image_id == -1:
            break
        if image_id == 0 and label == face_label and conf > threshold:
            box = [float(x1) * sx, float(y1) * sy, float(x2) * sx, float(y2) * sy]
            if clip is not None:
                box = [min(max(v, 0.0), clip[k % 2]) for k, v in enumerate(box)]
            found.append((float(conf), box))
    found.sort(key=lambda f: -f[0])
    return np.array([f[1] for f in found]).reshape(-1, 4), np.array([f[0] for f in found])


def omz_boxes_labels_reference(boxes, labels, face_label, threshold, sx, sy, clip=None):
    """OMZ BoxesLabelsParser rule, one row at a time: conf > 0 and > threshold, the face label; x and y
    times (sx, sy); clipped to `clip` (w, h); best score first."""
    found = []
    for (x1, y1, x2, y2, conf), label in zip(boxes, labels, strict=True):
        if conf > 0 and conf > threshold and label == face_label:
            box = [float(x1) * sx, float(y1) * sy, float(x2) * sx, float(y2) * sy]
            if clip is not None:
                box = [min(max(v, 0.0), clip[k % 2]) for k, v in enumerate(box)]
            found.append((float(conf), box))
    found.sort(key=lambda f: -f[0])
    return np.array([f[1] for f in found]).reshape(-1, 4), np.array([f[0] for f in found])


def assert_same(faces: Faces, boxes: np.ndarray, scores: np.ndarray) -> None:
    assert len(faces) == len(scores) > 0
    assert faces.landmarks is None
    np.testing.assert_allclose(faces.scores, scores, atol=1e-6)
    np.testing.assert_allclose(faces.boxes, boxes, atol=1e-3)


@needs_shared
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("name", SSD_MODELS)
def test_ssd_matches_omz_reference(name: str, photo: str, threshold: float) -> None:
    model, face_label = SSD_MODELS[name]
    det, prepared, (detection_out,), in_input, in_original = run(model, photo, threshold)
    assert det.format is ssd.FORMAT
    assert det.plan.decode.face_label == face_label
    net_w, net_h = prepared.tensor.shape[2], prepared.tensor.shape[1]
    assert_same(in_input, *omz_ssd_reference(detection_out, face_label, threshold, net_w, net_h))
    width, height = prepared.geometry.width, prepared.geometry.height
    expected = omz_ssd_reference(detection_out, face_label, threshold, width, height, clip=(width, height))
    assert_same(in_original, *expected)


@needs_shared
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("photo", PHOTOS)
def test_boxes_labels_matches_omz_reference(photo: str, threshold: float) -> None:
    det, prepared, (boxes, labels), in_input, in_original = run(ATSS_MODEL, photo, threshold)
    assert det.format is boxes_labels.FORMAT
    assert det.plan.decode.face_label == 0
    assert boxes.ndim == 2 and boxes.shape[1] == 5 and labels.shape == boxes.shape[:1]
    net_w, net_h = prepared.tensor.shape[2], prepared.tensor.shape[1]
    assert (net_w, net_h) == (416, 416)  # from the IR, not the format's 640x640 fallback
    assert_same(in_input, *omz_boxes_labels_reference(boxes, labels, 0, threshold, 1.0, 1.0))
    width, height = prepared.geometry.width, prepared.geometry.height
    sx, sy = width / net_w, height / net_h
    expected = omz_boxes_labels_reference(boxes, labels, 0, threshold, sx, sy, clip=(width, height))
    assert_same(in_original, *expected)


@needs_shared
def test_ssd_batch_of_two_gives_the_faces_of_batch_one() -> None:
    model = SSD_MODELS["0204"][0]
    pair = PHOTOS[1:]
    single = [run(model, photo, 0.05)[4] for photo in pair]
    det = detector(model, 0.05, batch=2)
    prepared = [det.prepare(decode_image(photo_bytes(photo))) for photo in pair]
    batched = detect(det, prepared)
    # A short last batch is padded with copies of its last image; those rows must not leak in.
    (alone,) = detect(det, prepared[:1])
    for mine, expected in zip([*batched, alone], [*single, single[0]], strict=True):
        assert len(mine) == len(expected) > 0
        np.testing.assert_allclose(mine.scores, expected.scores, atol=1e-5)
        np.testing.assert_allclose(mine.boxes, expected.boxes, atol=1e-3)


@needs_shared
@pytest.mark.parametrize("model", [ATSS_MODEL, SSD_MODELS["retail-0005"][0]])
def test_batch_one_only_models_refuse_batch_two(model: str) -> None:
    with pytest.raises(ModelError, match="runs batch 1 only") as error:
        Detector(DetectorSettings(model=str(MODELS / model), batch=2))
    assert "\n" not in str(error.value)


@needs_shared
@pytest.mark.parametrize("model", [m for m, _ in SSD_MODELS.values()] + [ATSS_MODEL])
def test_detect_format_picks_ours(model: str) -> None:
    outputs = output_infos(read_model(str(MODELS / model), model))
    fmt, indices = detect_format(outputs, model)
    if model == ATSS_MODEL:
        assert (fmt.name, indices) == ("boxes_labels", [0, 1])
        assert outputs[0].shape == (None, 5)  # N varies
    else:
        assert (fmt.name, indices) == ("ssd", [0])
    assert FORMATS[fmt.name] is fmt


OTHER_SHARED_MODELS = (
    "retinaface-mnet025-biubug6/retinaface_mnet025_biubug6.onnx",
    "centerface/centerface.onnx",
    "retinaface-mnet025-insightface/retinaface-mnet025-bgr-640.xml",
    "ssh-format-mnet025/ssh-format-mnet025-bgr-640.xml",
    "scrfd/scrfd_500m_bnkps.onnx",
    "yunet/face_detection_yunet_2026may.onnx",
)


@needs_shared
@pytest.mark.parametrize("model", OTHER_SHARED_MODELS)
def test_other_formats_are_not_ours(model: str) -> None:
    outputs = output_infos(read_model(str(MODELS / model), model))
    assert ssd.match(outputs) is None
    assert boxes_labels.match(outputs) is None


def info(shape: tuple[int | None, ...], *names: str) -> OutputInfo:
    return OutputInfo(frozenset(names), shape)


PRIORBOX = [info((1, 16800, 4), "loc"), info((1, 16800, 2), "conf"), info((1, 16800, 10), "landmarks")]
# CenterFace at a 28-pixel-wide input: the heatmap [1,1,H/4,7] looks like a DetectionOutput on its own.
CENTERFACE = [info((1, 1, 8, 7), "537"), info((1, 2, 8, 7), "538"), info((1, 2, 8, 7), "539")]
CENTERFACE.append(info((1, 10, 8, 7), "540"))


def test_matchers_by_hand() -> None:
    for other in (PRIORBOX, CENTERFACE):
        assert ssd.match(other) is None and boxes_labels.match(other) is None
        assert detect_format(other, "m")[0].name in ("priorbox", "centerface")
    assert ssd.match([info((1, 1, 200, 7), "527")]) == [0]
    assert ssd.match([info((1, 1, None, 7))]) == [0]
    assert ssd.match([info((1, 1, 200, 7)), info((1, 10), "extra")]) is None  # OMZ: the only output
    assert ssd.match([info((1, 2, 200, 7))]) is None
    assert ssd.match([info((1, 200, 7))]) is None
    assert ssd.match([info((2, 1, 200, 7))]) is None  # DetectionOutput puts a whole batch in one [1,..]
    assert boxes_labels.match([info((None,), "labels"), info((None, 5), "boxes")]) == [1, 0]
    saliency = info((1, 1, 13, 13), "saliency_map")
    assert boxes_labels.match([saliency, info((750, 5), "boxes"), info((750,), "labels")]) == [1, 2]
    assert boxes_labels.match([info((750, 4), "boxes"), info((750,), "labels")]) is None
    assert boxes_labels.match([info((1, 750, 5), "boxes"), info((1, 750), "labels")]) is None
    assert boxes_labels.match([info((None,), "a"), info((None, 5), "b")]) == [1, 0]
    assert boxes_labels.match([info((None,), "a"), info((None, 5), "b"), info((None, 5), "c")]) is None
    assert boxes_labels.match([info((None,), "a"), info((None, 4), "b")]) is None


def test_ssd_split_follows_image_id_and_stops_at_terminator() -> None:
    def row(image_id: float, conf: float, x: float) -> list[float]:
        return [image_id, 0, conf, x, 0.1, x + 0.1, 0.2]

    rows = [row(1, 0.9, 0.1), row(0, 0.8, 0.2), row(1, 0.7, 0.3), row(1, 0.95, 0.4), row(0, 0.6, 0.5)]
    garbage = [row(-1, 0, 0), row(0, 0.99, 0.6), row(1, 0.99, 0.7), row(2, 0.99, 0.8), row(-1, 0.99, 0.9)]
    detection_out = np.array(rows + garbage, np.float32).reshape(1, 1, -1, 7)
    image0, image1, image2 = ssd.split([detection_out], 3)
    np.testing.assert_array_equal(image0[0], np.array([rows[1], rows[4]], np.float32))
    np.testing.assert_array_equal(image1[0], np.array([rows[0], rows[2], rows[3]], np.float32))
    assert image2[0].shape == (0, 7)
    settings = DecodeSettings(score_threshold=0.5, nms_threshold=0.45, face_label=0)
    faces = ssd.decode(image1, (100, 200), settings)
    np.testing.assert_allclose(faces.scores, [0.95, 0.9, 0.7])
    np.testing.assert_allclose(faces.boxes[:, 0], [40, 10, 30], atol=1e-4)
    np.testing.assert_allclose(faces.boxes[:, 3], [40, 40, 40], atol=1e-4)
    assert len(ssd.decode(image2, (100, 200), settings)) == 0
    # Decoding the unsplit batch-1 output also stops at the terminator.
    assert len(ssd.decode([detection_out], (100, 200), settings)) == len(rows)


def test_decoders_filter_labels_and_thresholds() -> None:
    detection_out = np.array(
        [[0, 1, 0.9, 0, 0, 0.5, 0.5], [0, 2, 0.8, 0, 0, 0.5, 0.5], [0, 1, 0.5, 0, 0, 0.5, 0.5]], np.float32
    )
    face = DecodeSettings(score_threshold=0.5, nms_threshold=0.45, face_label=1)
    anything = DecodeSettings(score_threshold=0.0, nms_threshold=0.45, face_label=None)
    np.testing.assert_allclose(ssd.decode([detection_out], (10, 10), face).scores, [0.9])
    np.testing.assert_allclose(ssd.decode([detection_out], (10, 10), anything).scores, [0.9, 0.8, 0.5])
    boxes = np.array([[1, 2, 3, 4, 0.6], [1, 2, 3, 4, 0.0], [5, 6, 7, 8, 0.7], [1, 1, 2, 2, 0.9]], np.float32)
    labels = np.array([0, 0, 0, 1])
    zero = DecodeSettings(score_threshold=-1.0, nms_threshold=0.45, face_label=0)
    faces = boxes_labels.decode([boxes, labels], (640, 640), zero)  # conf 0 rows are padding
    np.testing.assert_allclose(faces.scores, [0.7, 0.6])
    np.testing.assert_allclose(faces.boxes, [[5, 6, 7, 8], [1, 2, 3, 4]])
    np.testing.assert_allclose(
        boxes_labels.decode([boxes, labels], (640, 640), anything).scores, [0.9, 0.7, 0.6]
    )
    ((split_boxes, split_labels),) = boxes_labels.split([boxes, labels], 1)
    assert split_boxes is boxes and split_labels is labels
    with pytest.raises(ValueError, match="one image"):
        boxes_labels.split([boxes, labels], 2)
