"""`--second-look 2` on real WIDER FACE photos through the default model (f32): a crowd whose first pass
is unsure gets scale 2's faces merged exactly as `--scales 1,2` merges them; a photo of a few clear
faces keeps exactly its first pass; and a job's pipeline, with products and a pixel budget that holds
one photo at a time, gives each image one result while second looks wait for their views."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from facesweep.workers.config import DetectorSettings
from facesweep.workers.faces import Faces
from facesweep.workers.inputs.images import read_header
from facesweep.workers.job.budget import PixelBudget, decode_plan
from facesweep.workers.job.pipeline import ImagePipeline
from facesweep.workers.model.detector import Detector, Timings
from facesweep.workers.model.nms import pairwise_iou
from facesweep.workers.model.second_look import SCORE_FLOOR, wants_second_look
from facesweep.workers.output.schema import ImageResult
from tests.detection import detect
from tests.paths import WIDER_SUBSET

IMAGES = WIDER_SUBSET / "images"
pytestmark = pytest.mark.skipif(not IMAGES.is_dir(), reason="needs ../shared (WIDER FACE val-subset-145)")

# A marching band: 132 annotated faces, mostly 10-15 px high in a 1024x732 photo.
CROWD = "0--Parade/0_Parade_marchingband_1_765.jpg"
SMALL_FACE = np.array([[414, 214, 424, 227]], np.float32)  # 6 px high at the network at scale 1
# Four clear faces, 40-90 px high at the network: scale 2 would change their scores, not what is found.
CLEAR = "0--Parade/0_Parade_Parade_0_960.jpg"


def detector(**settings: object) -> Detector:
    return Detector(DetectorSettings(model="retinaface-mnet025", precision="f32", **settings))


def photo(relpath: str) -> np.ndarray:
    image = cv2.imread(str(IMAGES / relpath), cv2.IMREAD_COLOR)
    assert image is not None, relpath
    return image


def faces_of(found: Detector, images: list[np.ndarray]) -> list[Faces]:
    return detect(found, [found.prepare(image) for image in images])


def same(a: Faces, b: Faces) -> bool:
    return (
        np.array_equal(a.boxes, b.boxes)
        and np.array_equal(a.scores, b.scores)
        and np.array_equal(a.landmarks, b.landmarks)
    )


def test_a_second_look_merges_scale_2_where_the_first_pass_is_unsure_and_nowhere_else() -> None:
    crowd, clear = photo(CROWD), photo(CLEAR)
    judged = faces_of(detector(score_threshold=SCORE_FLOOR), [crowd, clear])
    assert wants_second_look(judged[0].scores) and not wants_second_look(judged[1].scores)
    once = faces_of(detector(), [crowd, clear])
    pyramid = faces_of(detector(scales=(1.0, 2.0)), [crowd, clear])
    assert not same(pyramid[1], once[1]), "scale 2 was expected to change the clear photo's faces"
    # the crowd between two clear photos: its second views batch with their views, in one stream
    looked = faces_of(detector(second_look=2.0), [clear, crowd, cv2.flip(clear, 1)])
    assert same(looked[1], pyramid[0])  # exactly --scales 1,2: the same views, the same NMS
    assert len(looked[1]) >= 3 * len(once[0]), (len(looked[1]), len(once[0]))
    iou = [pairwise_iou(SMALL_FACE, faces.boxes, plus_one=False).max() for faces in (once[0], looked[1])]
    assert iou[0] < 0.5 <= iou[1], iou
    assert same(looked[0], once[1])  # exactly the first pass
    assert len(looked[2]) == len(once[1])


@pytest.mark.timeout(120)
def test_a_pipeline_holding_one_photo_at_a_time_gives_each_image_one_result() -> None:
    """Encoded photos through a job's pipeline with a product (`finish`, one copy of the pixels) and a
    pixel budget that holds one photo at a time: a crowd waiting for its second look holds its pixels
    and its reservation, the next photo waits for them, and the loading yields so that the second views
    go in (else this never ends). Each image is finished once, with the faces the detector gives it."""
    names = [CROWD, CLEAR, CROWD, CLEAR, CROWD]
    data = [(IMAGES / name).read_bytes() for name in names]
    found = detector(second_look=2.0, threads=2)
    reserve = max(decode_plan(read_header(d), 1, 2**40, 1, found.view_bytes).reserve for d in data)
    budget = PixelBudget(reserve * 3 // 2)
    pipeline = ImagePipeline(found, ThreadPoolExecutor(4), 4, budget, copies=1)
    finished: list[int] = []
    lock = threading.Lock()

    def finish(position: int, result: ImageResult, image: np.ndarray) -> ImageResult:
        with lock:
            finished.append(position)
            assert image.shape[:2] == (result.height, result.width)
            assert budget.held <= budget.capacity
        return result

    results = pipeline.run(names, lambda i: data[i], Timings(), finish)
    assert sorted(finished) == list(range(len(names)))
    expected = faces_of(found, [photo(CROWD), photo(CLEAR)])
    for name, result in zip(names, results, strict=True):
        assert result.error is None and result.faces is not None, result.error
        assert same(result.faces, expected[names.index(name)]), name
    assert budget.peak <= budget.capacity and budget.held == 0
