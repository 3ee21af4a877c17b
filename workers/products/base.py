"""The lifecycle every product implements (see `workers/products/__init__.py`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from facesweep.workers.faces import Faces


@dataclass(frozen=True)
class Detected:
    """One image whose faces are known, as a product sees it."""

    uri: str
    image: np.ndarray  # upright, BGR, at `scale` of the full size
    data: bytes | None  # its encoded bytes (for a product that `keeps_bytes`), else None
    faces: Faces  # the output's faces (the job's score threshold)
    found: Faces  # every face the detector kept (down to the lowest threshold of any product)
    in_container: bool  # a container's member (its name may lack an extension)
    scale: float = 1.0  # what the pixel budget let it be decoded at; the faces are in full-size pixels


class Product(ABC):
    """One thing a job makes from each image's pixels and faces. Thread-safe: many images at once."""

    name: ClassVar[str]
    """Its name in counts and timings (`crops`, `anonymize`)."""
    keeps_bytes: ClassVar[bool] = False
    """Whether it needs the image's encoded bytes (its format, its JPEG quality) besides the pixels."""
    pixel_copies: ClassVar[int] = 0
    """How many more copies of the image's pixels it holds at once: the pixel budget reserves them."""
    score_threshold: float = 1.0
    """The lowest score of the faces it needs: the detector keeps faces down to the lowest of these."""
    of_video_frames: ClassVar[bool] = True
    """Whether it is made of each sampled video frame as of a photo (a video's blurred copy is not: it is
    made of the whole piece, `blurred_videos`)."""

    @abstractmethod
    def make(self, image: Detected) -> Any | None:
        """Its part for one image (None: nothing to keep for the shard). An ObjectError fails that image
        (an error row of kind fetch); a StorageError fails the shard; anything else is a bug of ours."""

    def table(self, parts: Sequence[Any]) -> pa.Table | None:
        """The shard's side table of its images' parts, committed before the shard; None: it has none."""
        return None
