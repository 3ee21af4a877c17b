"""Small real facesweep outputs for the tests of what reads them (`facesweep show`, `facesweep export`),
and reading an output back as any pyarrow user would."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from facesweep.workers.config import DEFAULT_MODEL, DetectorSettings, JobConfig
from facesweep.workers.job.driver import run_job
from facesweep.workers.output.schema import SCHEMA
from infra.demo import WIDER_SUBSET, sample_photos

SUBSET_ANNOTATIONS = WIDER_SUBSET.parent / "annotations.txt"
BROKEN = "skimage/broken.jpg"
WIDER_PHOTOS = 4


def photo_folder(root: Path) -> Path:
    """`root` with the scikit-image sample photos, a broken JPEG and, when ../shared is there, the first
    WIDER val-subset-145 photos as `images/<event>/<name>.jpg` (so their paths end as the ground truth's)."""
    photos = [(key, path) for key, path in sample_photos() if key.startswith("skimage/")]
    if WIDER_SUBSET.is_dir():
        wider = sorted(WIDER_SUBSET.rglob("*.jpg"))[:WIDER_PHOTOS]
        photos += [(f"images/{path.relative_to(WIDER_SUBSET)}", path) for path in wider]
    for key, path in photos:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / key)
    (root / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    return root


def run_small_job(input_: str, output: str) -> None:
    """The default model over `input_` into `output` on the session's Ray: one actor, 4 images a shard."""
    config = JobConfig(
        input=input_,
        output=output,
        detector=DetectorSettings(model=DEFAULT_MODEL),
        actors=1,
        cpus_per_actor=1,
        shard_size=4,
    )
    result = run_job(config)
    assert not result.failed_shards, result.failed_shards


def read_rows(output: str, filesystem: pafs.FileSystem | None = None) -> dict[str, dict]:
    """An output's rows by uri, read as any pyarrow user would, checked against the contract."""
    table = ds.dataset(output, format="parquet", filesystem=filesystem).to_table()
    assert table.schema.equals(SCHEMA), table.schema
    rows = table.to_pylist()
    uris = [row["uri"] for row in rows]
    assert len(uris) == len(set(uris)), "an image appears twice"
    return {uri: row for uri, row in zip(uris, rows, strict=True)}


def read_crops(output: Path) -> pa.Table:
    """OUTPUT's crops table (`--crops`), as any pyarrow user reads it."""
    return ds.dataset(output / "_crops", format="parquet").to_table()


def assert_one_crop_per_face(output: Path) -> pa.Table:
    """Every face of the detections has one crop, keyed by (uri, face), with its score; nothing else."""
    rows = ds.dataset(output, format="parquet").to_table(columns=["uri", "faces"]).to_pylist()
    faces = {(r["uri"], i): f["score"] for r in rows for i, f in enumerate(r["faces"] or [])}
    crops = read_crops(output)
    keys = list(zip(crops["uri"].to_pylist(), crops["face"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys)), "a face has two crops"
    assert set(keys) == set(faces)
    assert np.allclose(crops["score"].to_numpy(), [faces[k] for k in keys])
    return crops
