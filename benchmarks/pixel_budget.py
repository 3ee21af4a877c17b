"""An actor's peak memory on large photos: WIDER photos upscaled to 12 MP and 48 MP JPEGs, one real job
each (a local Ray, one actor of 2 CPUs, local folders), plain, with --anonymize and with --crops.

    .venv/bin/python benchmarks/pixel_budget.py [--images 12] [--sizes 12,48] [--pixel-budget MB]

The photos are written to a temporary folder (never into the repository). The actor's peak RSS is its
process's VmHWM (`/proc/<pid>/status`), read after each of its shards (a high-water mark: the last read
is the job's peak); images/s is the job's own clock. One line per run:
`PIXEL_BUDGET mp=48 run=anonymize actor_peak_mb=... images_s=... decode_scales=1:12` (each scale and its
rows; none from code older than the column). Figures: docs/PERFORMANCE.md, "Memory by pixels".
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import cv2
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import facesweep
from facesweep.workers.config import OPTIONS
from facesweep.workers.job.progress import JobProgress

REPO = Path(__file__).resolve().parents[1]
SUBSET = REPO.parent / "shared" / "data" / "widerface" / "val-subset-145" / "images"
RUNS = {"plain": {}, "anonymize": {"anonymize": True}, "crops": {"crops": True}}
SHARD_SIZE = 6


def upscaled(folder: Path, megapixels: int, count: int) -> Path:
    """`count` WIDER photos upscaled (bicubic, aspect kept) to about `megapixels` each, as JPEGs (90)."""
    target = folder / f"{megapixels}mp"
    target.mkdir()
    for source in sorted(SUBSET.rglob("*.jpg"))[:count]:
        photo = cv2.imread(str(source))
        height, width = photo.shape[:2]
        factor = math.sqrt(megapixels * 1e6 / (width * height))
        size = (round(width * factor), round(height * factor))
        big = cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(target / source.name), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return target


def peak_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def measure(
    photos: Path, folder: Path, name: str, options: dict[str, object]
) -> tuple[float, float, Counter]:
    """One job with one 2-CPU actor: the actor's peak RSS (MB), images/s and the rows' decode scales."""
    peaks: dict[int, int] = {}

    def on_progress(progress: JobProgress) -> None:
        for process in progress.actor_cpu:
            pid = int(process.rpartition("/")[2])
            peaks[pid] = max(peaks.get(pid, 0), peak_kib(pid))

    output = folder / f"out-{photos.name}-{name}"
    if options.pop("anonymize", False):
        options["anonymize"] = str(folder / f"copies-{photos.name}")
    progress = facesweep.run(
        str(photos),
        str(output),
        actors=1,
        cpus_per_actor=2,
        shard_size=SHARD_SIZE,
        overwrite=True,
        on_progress=on_progress,
        **options,
    )
    table = pq.read_table(output)
    scales = Counter(table["decode_scale"].to_pylist()) if "decode_scale" in table.column_names else Counter()
    return max(peaks.values()) / 1024, progress.processing_images_per_second, scales


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12, help="photos per size (12)")
    parser.add_argument("--sizes", default="12,48", help="megapixels, comma-separated (12,48)")
    parser.add_argument("--pixel-budget", type=int, help="MB per actor (default: the job's)")
    args = parser.parse_args()
    if not SUBSET.is_dir():
        raise SystemExit(f"benchmarks/pixel_budget.py needs the WIDER photos at {SUBSET}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    budget = {"pixel_budget": args.pixel_budget} if args.pixel_budget and "pixel_budget" in OPTIONS else {}
    with tempfile.TemporaryDirectory(prefix="facesweep-pixel-budget-") as tmp:
        folder = Path(tmp)
        for megapixels in (int(size) for size in args.sizes.split(",")):
            photos = upscaled(folder, megapixels, args.images)
            for name, options in RUNS.items():
                peak, rate, scales = measure(photos, folder, name, {**options, **budget})
                decoded = ",".join(f"{scale:g}:{n}" for scale, n in sorted(scales.items(), key=str))
                print(
                    f"PIXEL_BUDGET mp={megapixels} run={name} actor_peak_mb={peak:.0f} images_s={rate:.2f}"
                    + (f" decode_scales={decoded}" if decoded else ""),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
