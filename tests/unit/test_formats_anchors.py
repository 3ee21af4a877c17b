"""RetinaFace (insightface `face_rpn_*`) and SSH (`rpn_*`) anchor decoders against golden MXNet outputs and a
plainly written per-anchor reference, on the real models under ../shared/models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facesweep.workers.config import DetectorSettings
from facesweep.workers.inputs.images import decode_image
from facesweep.workers.model.detector import Detector
from facesweep.workers.model.formats import detect_format
from facesweep.workers.model.formats.anchors import RETINAFACE, RETINAFACE_DECODER, SSH, SSH_DECODER, anchors
from facesweep.workers.model.formats.base import DecodeSettings, OutputInfo
from facesweep.workers.model.runtime import output_infos, read_model
from tests.detection import detect, raw_outputs
from tests.paths import SHARED
from tests.references import insightface_anchor_reference

MODELS = SHARED / "models"
MNET = MODELS / "retinaface-mnet025-insightface"
ONNX = MNET / "mnet.25.onnx"
RETINA_IR = MNET / "retinaface-mnet025-bgr-640.xml"
SSH_IR = MODELS / "ssh-format-mnet025" / "ssh-format-mnet025-bgr-640.xml"
PHOTOS = SHARED / "data" / "widerface" / "val-subset-145" / "images" / "0--Parade"
PHOTO_A = PHOTOS / "0_Parade_marchingband_1_556.jpg"  # 13 annotated faces
PHOTO_B = PHOTOS / "0_Parade_Parade_0_205.jpg"  # 6

pytestmark = pytest.mark.skipif(not MNET.is_dir(), reason=f"{SHARED} (shared models) is absent")


def by_stride(outputs: list[np.ndarray], landmarks: bool) -> list[tuple]:
    """Decoder-ordered outputs regrouped as the reference wants them: (scores, deltas, landmarks|None)."""
    per = 3 if landmarks else 2
    return [(*outputs[i : i + 2], outputs[i + 2] if landmarks else None) for i in range(0, len(outputs), per)]


def golden() -> tuple[np.ndarray, list[np.ndarray]]:
    data = np.load(MNET / "mnet.25.onnx.ref.npz")
    return data["x"], [data[f"{name}_output"] for name in RETINAFACE_DECODER.names()]


def run(model: Path, images: list[np.ndarray], **settings) -> tuple[Detector, list[list[np.ndarray]], list]:
    """The detector, each image's decoder-ordered raw outputs, and each image's faces (original pixels)."""
    detector = Detector(DetectorSettings(model=str(model), precision="f32", **settings))
    raw, faces = [], []
    for start in range(0, len(images), detector.plan.batch):
        prepared = [detector.prepare(image) for image in images[start : start + detector.plan.batch]]
        picked = raw_outputs(detector, prepared)
        raw += [[o[i : i + 1] for o in picked] for i in range(len(prepared))]
        faces += detect(detector, prepared)
    return detector, raw, faces


def test_base_anchors_are_insightfaces() -> None:
    assert anchors(32, 1, 1).tolist() == [[-248, -248, 263, 263], [-120, -120, 135, 135]]
    assert anchors(16, 1, 1).tolist() == [[-56, -56, 71, 71], [-24, -24, 39, 39]]
    assert anchors(8, 1, 1).tolist() == [[-8, -8, 23, 23], [0, 0, 15, 15]]
    grid = anchors(8, 3, 2)  # (h*W + w)*A + a
    np.testing.assert_array_equal(grid[(1 * 3 + 2) * 2 + 1], [0 + 16, 0 + 8, 15 + 16, 15 + 8])


def test_mnet25_onnx_through_our_runtime_matches_mxnet_golden() -> None:
    x, expected = golden()
    # x is integral 0..255 RGB, so the uint8 BGR image is exact and our PrePostProcessor (mnet.25 is known
    # as RGB) turns it back into x inside the graph.
    assert np.array_equal(x, np.round(x)) and x.min() >= 0 and x.max() <= 255
    bgr = np.ascontiguousarray(x[0].transpose(1, 2, 0)[:, :, ::-1]).astype(np.uint8)
    detector, (outputs,), _ = run(ONNX, [bgr])
    assert detector.format is RETINAFACE and detector.plan.preprocess.color == "RGB"
    diffs = [float(np.abs(got - want).max()) for got, want in zip(outputs, expected, strict=True)]
    assert max(diffs) < 1e-4, diffs


@pytest.mark.parametrize("threshold", [0.02, 0.5])
def test_retinaface_decodes_golden_outputs_as_the_reference(threshold: float) -> None:
    _, outputs = golden()
    faces = RETINAFACE.decode(
        outputs, (640, 640), DecodeSettings(threshold, RETINAFACE.default_nms_threshold)
    )
    boxes, scores, points = insightface_anchor_reference(
        by_stride(outputs, True), 640, 640, threshold, RETINAFACE.default_nms_threshold
    )
    assert len(faces) == len(boxes) >= 6
    np.testing.assert_allclose(faces.scores, scores, atol=1e-6)
    np.testing.assert_allclose(faces.boxes, boxes, atol=1e-3)
    np.testing.assert_allclose(faces.landmarks.reshape(-1, 10), points, atol=1e-3)


def test_detect_format_picks_retinaface_and_ssh_by_name() -> None:
    for model, name in ((RETINA_IR, "retinaface"), (ONNX, "retinaface"), (SSH_IR, "ssh")):
        infos = output_infos(read_model(str(model), model.name))
        fmt, indices = detect_format(infos, model.name)
        assert fmt.name == name
        rule = RETINAFACE_DECODER if name == "retinaface" else SSH_DECODER
        assert [next(iter(infos[i].names)) for i in indices] == rule.names()


def test_shape_fallback_sorts_by_height_and_leaves_other_formats_alone() -> None:
    infos = [
        OutputInfo(frozenset({f"{kind}_{s}"}), (1, channels, 640 // s, 640 // s))
        for s in (8, 32, 16)
        for kind, channels in (("landmark", 20), ("bbox", 8), ("cls", 4))
    ]
    # listed per stride 8, 32, 16 as landmark, bbox, cls: decoder order is stride 32, 16, 8 as cls, bbox, lmk
    assert RETINAFACE.match(infos) == [5, 4, 3, 8, 7, 6, 2, 1, 0]
    assert SSH.match(infos) is None  # landmark outputs: RetinaFace's
    assert SSH.match([o for o in infos if "landmark" not in next(iter(o.names))]) == [3, 2, 5, 4, 1, 0]
    named = [OutputInfo(frozenset({n}), (1, 6, 20, 20)) for n in SSH_DECODER.names()]
    assert SSH.match(named) is None  # 3 anchors per cell: not the settings we decode
    for other in sorted(MODELS.rglob("*.xml")) + sorted(MODELS.rglob("*.onnx")):
        if other.parent.name in ("retinaface-mnet025-insightface", "ssh-format-mnet025"):
            continue
        infos = output_infos(read_model(str(other), other.name))
        assert RETINAFACE.match(infos) is None and SSH.match(infos) is None, other


def test_ssh_stand_in_decodes_as_the_reference() -> None:
    image = decode_image(PHOTO_A.read_bytes())
    ssh, (ssh_outputs,), (ssh_faces,) = run(SSH_IR, [image], score_threshold=0.05)
    _, (retina_outputs,), _ = run(RETINA_IR, [image])
    assert ssh.format is SSH and ssh.plan.decode.nms_threshold == 0.3 and ssh_faces.landmarks is None
    # Same network: the SSH IR's outputs are the RetinaFace IR's scores and deltas, renamed.
    cls_bbox = [o for i, o in enumerate(retina_outputs) if i % 3 != 2]
    for got, want in zip(ssh_outputs, cls_bbox, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)
    # SSH thresholds after NMS, so one reference run (threshold 0) serves every threshold.
    all_boxes, all_scores, points = insightface_anchor_reference(
        by_stride(ssh_outputs, False), 640, 640, 0.0, 0.3, top_k=1000
    )
    assert points is None
    for threshold in (0.05, 0.5):
        faces = SSH.decode(ssh_outputs, (640, 640), DecodeSettings(threshold, 0.3))
        above = all_scores >= threshold
        assert faces.landmarks is None and len(faces) == above.sum() >= 5
        np.testing.assert_allclose(faces.scores, all_scores[above], atol=1e-6)
        np.testing.assert_allclose(faces.boxes, all_boxes[above], atol=1e-3)
        # The SSH rule on the RetinaFace IR's scores and deltas finds the same faces.
        same = SSH.decode(cls_bbox, (640, 640), DecodeSettings(threshold, 0.3))
        assert len(same) == len(faces)
        np.testing.assert_allclose(same.boxes, faces.boxes, atol=1e-2)
    assert len(ssh_faces) == (all_scores >= 0.05).sum()


def test_batch_of_two_finds_the_same_faces_as_one_by_one() -> None:
    images = [decode_image(p.read_bytes()) for p in (PHOTO_A, PHOTO_B)]
    _, _, single = run(RETINA_IR, images)
    detector, _, batched = run(RETINA_IR, images, batch=2)
    assert detector.plan.batch == 2
    for one, two in zip(single, batched, strict=True):
        assert len(one) == len(two) > 0
        np.testing.assert_allclose(two.boxes, one.boxes, atol=1e-2)
        np.testing.assert_allclose(two.scores, one.scores, atol=1e-4)
        np.testing.assert_allclose(two.landmarks, one.landmarks, atol=1e-2)


def synthetic(landmarks: bool) -> list[np.ndarray]:
    """Decoder-ordered outputs of a 640x640 input with every score 0 and every delta 0 (boxes = anchors)."""
    outputs = []
    for s in (32, 16, 8):
        outputs.append(np.zeros((1, 4, 640 // s, 640 // s), np.float32))
        outputs.append(np.zeros((1, 8, 640 // s, 640 // s), np.float32))
        if landmarks:
            outputs.append(np.zeros((1, 20, 640 // s, 640 // s), np.float32))
    return outputs


def test_conventions_on_synthetic_outputs() -> None:
    outputs = synthetic(True)
    stride8 = outputs[6]
    stride8[0, 2 + 1, 0, 0] = 0.9  # anchor [0,0,15,15]
    stride8[0, 2 + 1, 0, 1] = 0.8  # [8,0,23,15]: IoU 1/3 with +1 areas, 0.304 without
    stride8[0, 2 + 0, 79, 79] = 0.5  # [624,624,655,655]: score = threshold; box clipped to 639
    faces = RETINAFACE.decode(outputs, (640, 640), DecodeSettings(0.5, 0.32))
    np.testing.assert_allclose(faces.scores, [0.9, 0.5])
    np.testing.assert_array_equal(faces.boxes, [[0, 0, 15, 15], [624, 624, 639, 639]])
    np.testing.assert_allclose(faces.landmarks[1], [[639.5, 639.5]] * 5)  # the unclipped anchor's centre
    assert len(RETINAFACE.decode(outputs, (640, 640), DecodeSettings(0.5, 0.34))) == 3
    # IoU exactly at the threshold (1/3 in float32 too) is kept: insightface's GPU NMS suppresses IoU > thr.
    assert len(RETINAFACE.decode(outputs, (640, 640), DecodeSettings(0.5, 1 / 3))) == 3


def test_ssh_keeps_the_top_1000_per_stride() -> None:
    outputs = synthetic(False)
    scores = outputs[4][0, 2 + 1]  # stride 8, anchor [0,0,15,15]: cells two apart never overlap
    scores[::2, ::2] = np.linspace(0.9, 0.6, 40 * 40, dtype=np.float32).reshape(40, 40)
    settings = DecodeSettings(0.5, 0.3)
    assert len(SSH.decode(outputs, (640, 640), settings)) == 1000
    with_landmarks = synthetic(True)
    with_landmarks[6][0, 3] = scores
    assert len(RETINAFACE.decode(with_landmarks, (640, 640), settings)) == 1600
