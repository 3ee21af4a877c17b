"""facesweep's Python API (`import facesweep`): a detector for a script's own images, the same detector
as a Ray Data `map_batches` stage, and whole jobs as `facesweep run` runs them (the CLI calls `job_config`
and `run`).

    import facesweep
    detector = facesweep.FaceDetector("retinaface-mnet025", score_threshold=0.6)
    [result] = detector.detect(["group.jpg"])  # paths, s3:// URIs, encoded bytes or BGR arrays
    result.faces.boxes, result.faces.scores, result.faces.landmarks  # [N, 4], [N], [N, 5, 2] or None

    facesweep.run("s3://bucket/photos", "s3://bucket/faces", actors=8)

    ds = ray.data.read_binary_files("s3://bucket/photos", include_paths=True)
    # 4 one-CPU actors (threads = num_cpus), fewer than the cluster's CPUs: the reads' tasks need some
    faces = ds.map_batches(facesweep.FaceDetector, fn_constructor_kwargs={"threads": 1}, batch_size=8,
                           compute=ray.data.ActorPoolStrategy(size=4), num_cpus=1)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from facesweep.workers.config import DEFAULT_MODEL, ConfigError, DetectorSettings, JobConfig, resolve
from facesweep.workers.errors import JobFailedError, UserError
from facesweep.workers.job.budget import PixelBudget, budget_bytes
from facesweep.workers.job.driver import run_job
from facesweep.workers.job.pipeline import ImagePipeline, Loaded
from facesweep.workers.job.progress import JobProgress
from facesweep.workers.model.detector import Detector, Timings
from facesweep.workers.output.schema import SCHEMA, ImageResult, results_table
from facesweep.workers.storage import storage_for

RESULT_COLUMNS = ("width", "height", "status", "error", "error_kind", "model", "faces", "decode_scale")
"""What `FaceDetector` adds to a Ray Data batch: the output contract's columns but the uri and version."""
IMAGE_COLUMNS = {"bytes": "BGR", "image": "RGB"}
"""Ray Data's image columns: `read_binary_files`' encoded `bytes`, `read_images`' decoded RGB `image`."""


def job_config(input: str, output: str, model: str = DEFAULT_MODEL, **options: Any) -> JobConfig:
    """A job as `facesweep run INPUT OUTPUT` takes it: `options` are its flags' names with underscores
    (`score_threshold=0.6`, `actors=4`, `tile=True`), checked as the CLI checks them (a ConfigError with
    the CLI's line); a name it does not know is a TypeError."""
    return resolve(input, output, model, **options)


def run(
    job: JobConfig | str,
    output: str | None = None,
    model: str = DEFAULT_MODEL,
    on_progress: Callable[[JobProgress], None] = lambda _: None,
    overwrite: bool = False,
    **options: Any,
) -> JobProgress:
    """Runs a job to the end as `facesweep run` does (resuming what OUTPUT holds) and returns its totals:
    `run(job_config(...))`, or `run(INPUT, OUTPUT, model, **options)` as `job_config` takes them. Raises
    the CLI's one-line errors (ModelError, InputError, StorageError, JobError, OutputConflictError), and
    JobFailedError, with the totals as its `progress`, where the CLI exits 1 after a run (an error of
    ours, more error rows than `max_error_rate`, a failed shard)."""
    if not isinstance(job, JobConfig):
        if output is None:
            raise TypeError("run(INPUT, OUTPUT, ...) needs OUTPUT")
        job = job_config(job, output, model, **options)
    elif output is not None or options:
        raise TypeError("run(job_config) takes no OUTPUT or options: they are in the JobConfig")
    progress = run_job(job, on_progress, overwrite=overwrite)
    if reason := progress.failure(job.max_error_rate):
        raise JobFailedError(reason, progress)
    return progress


class FaceDetector:
    """One compiled model, as a job's actor holds it, for images in memory; also a Ray Data callable class.

    `settings` are DetectorSettings' fields (`score_threshold`, `device`, `precision`, `tile`, `scales`,
    ...); `threads` defaults to this machine's CPUs (the model's streams and the image decoders);
    `pixel_budget`: MB of decoded pixels held at once, as a job's actor (default: 512 per thread)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        threads: int | None = None,
        pixel_budget: int | None = None,
        **settings: Any,
    ) -> None:
        threads = threads or os.cpu_count() or 1
        self.detector = Detector(DetectorSettings(model, threads=threads, **settings))
        pool = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        budget = PixelBudget(budget_bytes(pixel_budget, threads))
        self._pipeline = ImagePipeline(self.detector, pool, 4 * threads, budget)

    def detect(self, images: Sequence[Image], names: Sequence[str] | None = None) -> list[ImageResult]:
        """One result per image, in order: its size and faces (`result.faces`, best first, in the image's
        pixels), or `result.error` and `result.error_kind` for an image that could not be read. Images are
        paths or store URIs (`s3://...`, read as a job reads them), encoded bytes (decoded as a job decodes
        them: EXIF orientation, reduced JPEG decoding) or BGR uint8 HxWx3 arrays (OpenCV's order).
        `names` become the results' `uri` (default: the path, else the position); anything else is a
        TypeError."""
        for position, image in enumerate(images):
            if not isinstance(image, (bytes, np.ndarray, str, os.PathLike)):
                raise TypeError(
                    f"image {position} is a {type(image).__name__}: detect takes paths or URIs, encoded "
                    "bytes or BGR uint8 arrays"
                )
        if names is None:
            names = [os.fspath(image) if _is_path(image) else str(i) for i, image in enumerate(images)]
        if len(names) != len(images):
            raise ValueError(f"{len(images)} images but {len(names)} names")
        return self._pipeline.run(list(names), lambda i: _load(images[i]), Timings())

    def detect_table(self, images: Sequence[Loaded], names: Sequence[str] | None = None) -> pa.Table:
        """`detect`'s results as rows of the job's output contract (`SCHEMA`)."""
        return results_table(self.detect(images, names), self.detector.settings.model)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> pa.Table:
        """A Ray Data batch (numpy format) with a `bytes` column (`read_binary_files`) or an `image` one
        (`read_images`, RGB), as a table: its other columns, then RESULT_COLUMNS."""
        column = next((name for name in IMAGE_COLUMNS if name in batch), None)
        if column is None:
            raise ValueError(f"a batch needs a `bytes` or `image` column, not only {', '.join(batch)}")
        images = list(batch[column])
        if IMAGE_COLUMNS[column] == "RGB":
            images = [_rgb_to_bgr(np.asarray(image)) for image in images]
        else:
            images = [bytes(image) for image in images]
        table = self.detect_table(images)
        kept = {name: pa.array(list(values)) for name, values in batch.items() if name != column}
        return pa.table({**kept, **{name: table[name] for name in RESULT_COLUMNS}})


Image = Loaded | str | os.PathLike
"""What `FaceDetector.detect` takes: a path or store URI, or what a pipeline loads (bytes, BGR array)."""


def _is_path(image: Image) -> bool:
    return isinstance(image, (str, os.PathLike))


def _load(image: Image) -> Loaded:
    """A path's or URI's bytes, read through the job's stores (a missing file: that image's error row)."""
    if _is_path(image):
        path = os.fspath(image)
        return storage_for(path).get(path)
    return image


RGB_TO_BGR = {
    (2, 1): cv2.COLOR_GRAY2BGR,
    (3, 1): cv2.COLOR_GRAY2BGR,
    (3, 3): cv2.COLOR_RGB2BGR,
    (3, 4): cv2.COLOR_RGBA2BGR,
}
"""OpenCV's conversion to BGR by (dimensions, channels): `read_images` gives grey, RGB or RGBA arrays."""


def _rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    """A `read_images` array in OpenCV's BGR order; any other array as it is (its row says why not)."""
    channels = image.shape[2] if image.ndim == 3 else 1
    code = RGB_TO_BGR.get((image.ndim, channels))
    return image if code is None or image.dtype != np.uint8 or 0 in image.shape else cv2.cvtColor(image, code)


__all__ = [
    "SCHEMA",
    "ConfigError",
    "FaceDetector",
    "ImageResult",
    "JobFailedError",
    "JobProgress",
    "UserError",
    "job_config",
    "run",
]
