"""A test's images through a Detector as a job runs them, and the raw outputs its decoder takes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facesweep.workers.faces import Faces
from facesweep.workers.model.detector import Detector, Timings
from facesweep.workers.model.runtime import infer
from facesweep.workers.model.views import Prepared


def detect(detector: Detector, prepared: Sequence[Prepared]) -> list[Faces]:
    """Each image's faces through `Detector.detect`, the job's path (batches, requests in flight, views
    merged); an image that fails fails the test with its reason."""
    results = detector.detect(enumerate(prepared), Timings())
    for index, result in results.items():
        assert isinstance(result, Faces), f"image {index}: {result}"
    return [results[index] for index in range(len(prepared))]  # type: ignore[misc]


def raw_outputs(detector: Detector, prepared: Sequence[Prepared]) -> list[np.ndarray]:
    """The model's outputs the format decodes (in `plan.outputs` order) for one batch of single-view
    images, padded with copies of the last to the compiled batch as a job pads it."""
    tensors = [image.tensor for image in prepared]
    tensors += [tensors[-1]] * (detector.plan.batch - len(tensors))
    outputs = infer(detector.compiled, np.concatenate(tensors))
    return [outputs[i] for i in detector.plan.outputs]
