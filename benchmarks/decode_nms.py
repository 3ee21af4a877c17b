"""Decode + NMS time per image for every output format, on real model outputs of real photos.

    .venv/bin/python benchmarks/decode_nms.py [--photos N] [--out FILE]

For each format, one model of it (from ../shared/models when present, else the built-in ones) runs once
on N photos (WIDER FACE val-subset-145 when present, else the scikit-image samples); then the format's
decoder, NMS and the mapping back to original pixels (`Detector.decode`) run on those stored outputs at
score thresholds 0.02 (WIDER practice for AP) and 0.5 (the default). Reported: median microseconds per
image over the photos (each the best of several repeats) and faces per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

from facesweep.workers.config import DetectorSettings
from facesweep.workers.inputs.images import decode_image
from facesweep.workers.model.detector import Detector
from facesweep.workers.model.runtime import infer
from facesweep.workers.model.views import in_original

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # infra/ is the checkout's, not installed
from infra.demo import SHARED, WIDER_SUBSET, sample_photos

MODELS = SHARED / "models"
MODEL_PER_FORMAT = {
    "priorbox": "retinaface-mnet025",
    "centerface": "centerface",
    "ssd": str(MODELS / "face-detection-0204/FP16/face-detection-0204.xml"),
    "boxes_labels": str(MODELS / "face-detection-0205/FP16/face-detection-0205.xml"),
    "retinaface": str(MODELS / "retinaface-mnet025-insightface/retinaface-mnet025-bgr-640.xml"),
    "ssh": str(MODELS / "ssh-format-mnet025/ssh-format-mnet025-bgr-640.xml"),
    "scrfd": str(MODELS / "scrfd/scrfd_500m_bnkps.onnx"),
    "yunet": str(MODELS / "yunet/face_detection_yunet_2026may.onnx"),
}
THRESHOLDS = (0.02, 0.5)
REPEATS = 5


def photos(count: int) -> list[Path]:
    if WIDER_SUBSET.is_dir():
        return sorted(WIDER_SUBSET.rglob("*.jpg"))[:count]
    return [path for _, path in sample_photos()][:count]


def measure(model: str, images: list[Path]) -> dict[float, tuple[float, float]]:
    """{threshold: (median microseconds per image, faces per image)}."""
    detector = Detector(DetectorSettings(model=model, score_threshold=min(THRESHOLDS), threads=2))
    prepared = [detector.prepare(decode_image(path.read_bytes())) for path in images]
    outputs = [[infer(detector.compiled, p.tensor)[i] for i in detector.plan.outputs] for p in prepared]
    results = {}
    for threshold in THRESHOLDS:
        settings = dataclasses.replace(detector.plan.decode, score_threshold=threshold)
        per_image, faces = [], 0
        for raw, image in zip(outputs, prepared, strict=True):
            best = float("inf")
            for _ in range(REPEATS):
                started = time.perf_counter()
                (view,) = image.views
                (tensors,) = detector.format.split(raw, 1)
                found = in_original(detector.format.decode(tensors, view.net_size, settings), view)
                best = min(best, time.perf_counter() - started)
            per_image.append(best)
            faces += len(found)
        results[threshold] = (statistics.median(per_image) * 1e6, faces / len(images))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=20, help="photos per model (20)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    images = photos(args.photos)
    header = (
        "| format | model | " + " | ".join(f"µs/image @{t} | faces/image @{t}" for t in THRESHOLDS) + " |"
    )
    rows = [header, "|" + "---|" * (2 + 2 * len(THRESHOLDS))]
    for name, model in MODEL_PER_FORMAT.items():
        if model.startswith("/") and not Path(model).is_file():
            print(f"skipping {name}: {model} is not here", file=sys.stderr)
            continue
        cells = measure(model, images)
        values = " | ".join(f"{us:.0f} | {faces:.1f}" for us, faces in cells.values())
        rows.append(f"| {name} | {Path(model).name} | {values} |")
    text = "\n".join(
        [
            f"Decode + NMS on stored outputs of {len(images)} photos ({images[0].parent.parent.name}...):",
            "",
            *rows,
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
