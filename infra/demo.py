"""`make demo`: a local SeaweedFS, sample photos uploaded to a bucket, a real job on a local Ray, a summary.

Sample photos: the scikit-image sample images (`make setup` installs them; astronaut.png and camera.png
show a face, the others none) and, when `../shared/data` is beside the checkout, the WIDER FACE
val-subset-145 photos. The Parquet output is also copied to ./demo-output so it outlives the server, and
`facesweep show`'s report on it is written to ./demo-output/_report/report.html.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from facesweep.cli import summary
from facesweep.progress import progress_for
from facesweep.report import write_report
from facesweep.workers.config import DEFAULT_MODEL, DetectorSettings, JobConfig
from facesweep.workers.job.driver import run_job
from facesweep.workers.storage import storage_for
from infra.local_s3 import start_local_s3

SKIMAGE_PHOTOS = (
    "astronaut.png",
    "camera.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
)
SHARED = Path(__file__).resolve().parents[2] / "shared"
WIDER_SUBSET = SHARED / "data" / "widerface" / "val-subset-145" / "images"
BUCKET = "facesweep-demo"


def sample_photos() -> list[tuple[str, Path]]:
    """(key below the bucket's photos/ prefix, local file) of every sample photo available here."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("facesweep demo: scikit-image sample photos are missing: run `make setup`")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    photos = [(f"skimage/{name}", data / name) for name in SKIMAGE_PHOTOS]
    if WIDER_SUBSET.is_dir():
        photos += [(f"wider/{p.relative_to(WIDER_SUBSET)}", p) for p in sorted(WIDER_SUBSET.rglob("*.jpg"))]
    return photos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facesweep-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--copy-to", type=Path, default=Path("demo-output"), help="local copy of the output")
    args = parser.parse_args(argv)
    photos = sample_photos()
    with tempfile.TemporaryDirectory(prefix="facesweep-demo-") as tmp, start_local_s3(Path(tmp)) as server:
        os.environ.update(server.env())
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        for key, path in photos:
            client.upload_file(str(path), BUCKET, f"photos/{key}")
        print(f"SeaweedFS at {server.endpoint_url}: uploaded {len(photos)} photos to s3://{BUCKET}/photos/")
        config = JobConfig(
            input=f"s3://{BUCKET}/photos/",
            output=f"s3://{BUCKET}/detections/",
            detector=DetectorSettings(model=DEFAULT_MODEL),
            cpus_per_actor=float(os.cpu_count() or 1),
        )
        view = progress_for(sys.stderr)
        result = run_job(config, view)
        view.close(result)
        _copy_output(config.output, args.copy_to)
        print(summary(result, config.output, then=str(args.copy_to)))
        print(
            f"local copy: {args.copy_to}/ (the demo's server stops now: query the copy with DuckDB or pandas)"
        )
        report = write_report(config.output, args.copy_to / "_report")
        print(f"report: {report.path} ({report.drawn} images drawn; open it in a browser)")
    return 1 if result.failure(config.max_error_rate) else 0


def _copy_output(output: str, target: Path) -> None:
    """Every file of OUTPUT (an s3:// prefix) below `target`, through the job's own storage client."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    storage, root = storage_for(output), output.rstrip("/") + "/"
    for info in storage.list_objects(root):
        local = target / info.uri[len(root) :]
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(storage.get(info.uri))


if __name__ == "__main__":
    sys.exit(main())
