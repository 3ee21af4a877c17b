"""Where tests find what they read: the checkout, and `../shared` beside it (models, WIDER FACE photos)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = SHARED / "models"
WIDER = SHARED / "data" / "widerface"
WIDER_SUBSET = WIDER / "val-subset-145"
