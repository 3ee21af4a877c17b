"""JPEG decoding at 1/2, 1/4, 1/8 (libjpeg's DCT scaling) when every view downscales the image that much:
the same faces, in the full image's pixels, several times less decoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facesweep.workers.config import DetectorSettings
from facesweep.workers.faces import Faces
from facesweep.workers.inputs.images import decode_image, decode_reduced
from facesweep.workers.model.detector import Detector
from facesweep.workers.model.nms import pairwise_iou
from tests.detection import detect
from tests.paths import MODELS, WIDER_SUBSET
from tests.photos import astronaut, exif_jpeg

SUBSET = WIDER_SUBSET / "images"
CROWD = SUBSET / "0--Parade" / "0_Parade_Parade_0_102.jpg"
SSD_0204 = MODELS / "face-detection-0204" / "FP16" / "face-detection-0204.xml"


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def faces(detector: Detector, data: bytes) -> tuple[Faces, tuple[int, int]]:
    image, size = decode_reduced(data, detector.reduction)
    return detect(detector, [detector.prepare(image, size)])[0], size


def test_a_jpeg_decodes_reduced_with_its_full_size() -> None:
    data = jpeg(cv2.resize(astronaut(), (1000, 600)))
    for reduction in (2, 4, 8):
        image, size = decode_reduced(data, lambda w, h, r=reduction: r)
        assert image.shape[:2] == (-(-600 // reduction), -(-1000 // reduction))
        assert size == (1000, 600)
    png = cv2.imencode(".png", astronaut())[1].tobytes()
    image, size = decode_reduced(png, lambda w, h: 2)  # only JPEG has DCT scaling: PNG decodes whole
    assert image.shape[:2] == (512, 512) and size == (512, 512)


def test_an_exif_rotated_jpeg_keeps_its_upright_full_size() -> None:
    upright = cv2.resize(astronaut(), (600, 1000))  # 600 wide, 1000 high once turned
    data = exif_jpeg(upright)
    image, size = decode_reduced(data, lambda w, h: 4)
    assert size == (600, 1000)
    assert image.shape[:2] == (250, 150)
    np.testing.assert_array_equal(decode_image(data).shape[:2], (1000, 600))


def test_reduction_only_where_every_view_downscales_that_much() -> None:
    def reduction(width: int, height: int, model: str = "retinaface-mnet025", **settings: object) -> int:
        return Detector(DetectorSettings(model=model, **settings)).reduction(width, height)

    assert reduction(1920, 1080) == 2  # 640x640 letterbox: 1/3 on the long side, 2x still >= the network's
    assert reduction(1024, 680) == 1
    assert reduction(6000, 4000) == 8
    assert reduction(1920, 1080, scales=(1.0, 2.0)) == 1
    assert reduction(6000, 4000, tile=True) == 1
    assert reduction(6000, 4000, reduced_decode=False) == 1
    assert reduction(1920, 1080, model="centerface") == 1  # runs at the image's own size


@pytest.mark.skipif(not SSD_0204.is_file(), reason="needs ../shared (WIDER FACE photos, face-detection-0204)")
@pytest.mark.parametrize("model", ["retinaface-mnet025", str(SSD_0204)])
def test_the_same_faces_from_a_reduced_decode_of_a_large_photo(model: str) -> None:
    photo = cv2.imread(str(CROWD))
    data = jpeg(cv2.resize(photo, (1920, 1080), interpolation=cv2.INTER_LINEAR))
    # a face near the 0.5 threshold may land on either side of it: compare to the reduced faces above 0.3
    reduced = Detector(DetectorSettings(model=model, precision="f32", score_threshold=0.3))
    full = Detector(DetectorSettings(model=model, precision="f32", reduced_decode=False))
    assert reduced.reduction(1920, 1080) == 2 and full.reduction(1920, 1080) == 1
    (small, size), (whole, _) = faces(reduced, data), faces(full, data)
    assert size == (1920, 1080)
    confident = whole.boxes[whole.scores > 0.5]
    assert len(confident) >= 5
    assert abs(int((small.scores > 0.5).sum()) - len(confident)) <= 1
    overlap = pairwise_iou(confident, small.boxes, plus_one=False).max(axis=1)
    assert (overlap > 0.85).all(), overlap  # boxes in full-image pixels, where the full decode puts them
