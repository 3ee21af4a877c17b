"""What --anonymize and --crops cost per image against plain detection, for the default model.

    .venv/bin/python benchmarks/products.py --out docs/PRODUCTS.md     # `make bench` runs it

On both data sets (WIDER photos and the same at 1080p) from a local SeaweedFS, the real CLI on every
core: plain detection, --anonymize (copies written to the same store), --crops, both, then plain again
(this machine drifts: the two plain runs bound it). Each run's figures come from its `_job.json` and the
CPU watch of `benchmarks/harness.py`: images per second once the actors were ready, the actor's CPU per
image and its peak memory, the store's CPU (it takes the copies' PUTs), and the stages that change
(`decode`: full-size with either product, which the detection then shares, instead of libjpeg's reduced
decode; `anonymize`: hide, encode and PUT; `crops`: warp and encode). The last line:
`PRODUCTS set=... anonymize_ms=... crops_ms=...` per set (actor CPU ms per image over plain's mean).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import (
    BUCKET,
    DEFAULT,
    REPO,
    JobRun,
    Store,
    data_sets,
    facesweep_run,
    generated_by,
    require_shared,
    table,
)
from infra.local_s3 import start_local_s3

COPIES = 2
"""Copies of each set a run reads (290 images)."""
RUNS = {
    "plain": (),
    "anonymize": ("--anonymize", "s3://{bucket}/copies/{set}"),
    "crops": ("--crops",),
    "anonymize + crops": ("--anonymize", "s3://{bucket}/copies/{set}", "--crops"),
    "plain again": (),
}
STAGES = ("decode", "preprocess", "anonymize", "crops")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    args = parser.parse_args()
    require_shared(args.shared, "benchmarks/products.py")
    started = time.monotonic()
    cores = os.cpu_count() or 1
    sets = data_sets(args.shared)
    rows, summary = [], []
    with (
        tempfile.TemporaryDirectory(prefix="facesweep-products-") as tmp,
        start_local_s3(Path(tmp) / "s3") as server,
    ):
        store = Store(server, Path(tmp))
        for data in sets:
            manifest = store.manifest(data, COPIES * len(data.photos))
            runs: dict[str, JobRun] = {}
            for name, options in RUNS.items():
                options = tuple(o.format(bucket=BUCKET, set=data.name) for o in options)
                output = f"s3://{BUCKET}/products/{data.name}/{name.replace(' ', '-').replace('+', 'and')}"
                run = facesweep_run(store, manifest, output, DEFAULT.argument(args.shared), cores, *options)
                runs[name] = run
                print(f"{data.name} {name}: {run.img_s:.1f} img/s", file=sys.stderr)
            plain_cpu = (_actor_ms(runs["plain"]) + _actor_ms(runs["plain again"])) / 2
            plain_rate = (runs["plain"].img_s + runs["plain again"].img_s) / 2
            for name, run in runs.items():
                stages = run.stage_ms()
                rows.append(
                    [
                        data.name,
                        name,
                        f"{run.img_s:.1f}",
                        f"{run.img_s / plain_rate:.2f}",
                        f"{_actor_ms(run):.1f}",
                        f"{_actor_ms(run) - plain_cpu:+.1f}",
                        f"{run.core_ms.get('s3', 0.0):.1f}",
                        f"{max(run.actor_mb, default=0.0):.0f}",
                        *(f"{stages.get(stage, 0.0):.2f}" for stage in STAGES),
                        str(run.record["this_run"]["anonymized_copies"]),
                        str(run.record["this_run"].get("crops", 0)),
                    ]
                )
            extra = {name: _actor_ms(runs[name]) - plain_cpu for name in ("anonymize", "crops")}
            summary.append(
                f"PRODUCTS set={data.name} anonymize_ms={extra['anonymize']:.1f} "
                f"crops_ms={extra['crops']:.1f} "
                f"anonymize_rate={runs['anonymize'].img_s / plain_rate:.2f} "
                f"crops_rate={runs['crops'].img_s / plain_rate:.2f}"
            )
    header = [
        "set",
        "run",
        "img/s",
        "vs plain",
        "actor CPU ms/img",
        "over plain",
        "store CPU ms/img",
        "actor peak MB",
        *(f"{stage} ms" for stage in STAGES),
        "copies",
        "crops",
    ]
    text = [
        "# What --anonymize and --crops cost",
        "",
        generated_by("bench", "products.py", started),
        "",
        f"The default model ({DEFAULT.name}) on {cores} cores, {COPIES} copies of each set per run, from a "
        "local SeaweedFS (the copies are PUT to it too); `vs plain` and `over plain` against the mean of the "
        "two plain runs, which bound the machine's drift. Stage figures are CPU ms per image of the threads "
        "that did the work.",
        "",
        *table(header, rows),
        "",
    ]
    args.out.write_text("\n".join(text))
    print("\n".join(summary))
    return 0


def _actor_ms(run: JobRun) -> float:
    return run.record["this_run"]["actor_cpu_ms_per_image"]


if __name__ == "__main__":
    sys.exit(main())
