"""`--second-look S`: a first pass at the job's own scale, then a second view at scale S only for the
images whose first pass says it can pay; their faces are merged as `--scales 1,S` merges them.

The rule: the first pass is unsure of several candidates, at least UNSURE_FACES of its faces scoring in
UNSURE_SCORES (found down to the low end, whatever the job's `--score-threshold`, so that which images get
a second look does not depend on it). Crowds of small faces and faces the first pass only half saw both
leave such candidates; a photo of a few clear faces does not. Chosen and measured on WIDER val-subset-145
against a second look for every image (`--scales 1,2`) and rules by face size and by fewer or more
candidates: docs/ACCURACY-notes.md, "A second look only where needed".
"""

from __future__ import annotations

import numpy as np

UNSURE_SCORES = (0.1, 0.5)
"""Scores of the candidates a first pass is unsure of: [low, high)."""
UNSURE_FACES = 3
"""How many unsure candidates make a second look pay."""
SCORE_FLOOR = UNSURE_SCORES[0]
"""The lowest score the rule reads: a first pass is decoded down to it for the rule."""


def wants_second_look(scores: np.ndarray) -> bool:
    """Whether a first pass whose faces (merged, down to at least SCORE_FLOOR) score `scores` wants a
    second look: at least UNSURE_FACES of them in UNSURE_SCORES."""
    low, high = UNSURE_SCORES
    return int(np.count_nonzero((scores >= low) & (scores < high))) >= UNSURE_FACES
