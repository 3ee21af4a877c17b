"""Faces as NumPy arrays: boxes, scores and landmarks of one image."""

from __future__ import annotations

from dataclasses import dataclass

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
