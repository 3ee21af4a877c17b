"""Faces as NumPy arrays, and the geometry that maps network-input pixels back to the original image."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Faces:
    """Detections of one image: boxes [N,4] (x1,y1,x2,y2), scores [N], landmarks [N,5,2] or None."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None

    @staticmethod
    def empty(with_landmarks: bool) -> Faces:
        return Faces(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, 5, 2), np.float32) if with_landmarks else None,
        )

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> Faces:
        """The faces at `index` (an integer array or a boolean mask), in that order."""
        landmarks = None if self.landmarks is None else self.landmarks[index]
        return Faces(self.boxes[index], self.scores[index], landmarks)

    @staticmethod
    def concat(parts: list[Faces]) -> Faces:
        """The faces of all `parts` (of one image, with or all without landmarks), in that order."""
        landmarks = None if parts[0].landmarks is None else np.concatenate([p.landmarks for p in parts])
        return Faces(
            np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]), landmarks
        )


@dataclass(frozen=True)
class Geometry:
    """How an image of `width` x `height` was scaled into the network input.

    The image, scaled by `scale_x` x `scale_y`, lies at the input's top-left; or, for a tile, the input's
    top-left is the point (`offset_x`, `offset_y`) of the scaled image (in scaled pixels)."""

    width: int
    height: int
    scale_x: float
    scale_y: float
    offset_x: float = 0.0
    offset_y: float = 0.0

    def of_full_size(self, width: int, height: int) -> Geometry:
        """This geometry of a reduced decode, for the full image of `width` x `height` it was decoded from."""
        if (width, height) == (self.width, self.height):
            return self
        ratio_x, ratio_y = self.width / width, self.height / height
        return replace(
            self, width=width, height=height, scale_x=self.scale_x * ratio_x, scale_y=self.scale_y * ratio_y
        )

    def to_original(self, faces: Faces) -> Faces:
        """Maps boxes and landmarks from network-input pixels to the original image, boxes clipped to it."""
        scale = np.array([self.scale_x, self.scale_y], np.float32)
        offset = np.array([self.offset_x, self.offset_y], np.float32)
        boxes = ((faces.boxes.reshape(-1, 2, 2) + offset) / scale).reshape(-1, 4)
        np.maximum(np.minimum(boxes, [self.width, self.height] * 2, out=boxes), 0, out=boxes)  # clipped
        landmarks = (
            None if faces.landmarks is None else ((faces.landmarks + offset) / scale).astype(np.float32)
        )
        return Faces(boxes.astype(np.float32), faces.scores.astype(np.float32), landmarks)
