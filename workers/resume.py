"""What OUTPUT already holds, so that a re-run does exactly what is missing.

- `OUTPUT/_job.json`: the job record: its identity (what decides which faces come out: input, include
  rule, shard size, the model's checksum and every decoding setting), its config and totals.
- `OUTPUT/_plan/part-NNNNNN.json`: each shard's URIs, written before the shard is handed out. Listings
  are deterministic (S3 and directories in lexicographic order, manifests in file order), so the same
  input gives the same plan; a committed shard whose stored plan differs means the input changed.
- `OUTPUT/part-NNNNNN.parquet`: a committed shard (written atomically, its footer holds its counts).

A shard is done exactly when its Parquet file exists; everything else is (re)done.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from workers.shards import Shard
from workers.sink import ShardCounts, read_counts
from workers.storage import Storage, join, storage_for

JOB_FILE = "_job.json"
PLAN_FOLDER = "_plan"
SHARD_PREFIX = "part-"


class OutputConflictError(ValueError):
    """OUTPUT holds another job's results; the message says how they differ and what to do."""


def plan_file(shard: Shard) -> str:
    return f"{PLAN_FOLDER}/{shard.file_name.removesuffix('.parquet')}.json"


@dataclass
class OutputState:
    """OUTPUT as a job finds it: its record (if any) and the names of its committed shard files."""

    output: str
    storage: Storage
    record: dict | None
    committed: set[str]

    @classmethod
    def read(cls, output: str) -> OutputState:
        storage = storage_for(output)
        storage.make_folder(output)
        record_uri = join(output, JOB_FILE)
        record = json.loads(storage.get(record_uri)) if storage.exists(record_uri) else None
        committed = {
            name
            for name in (uri.rsplit("/", 1)[-1] for uri in storage.list(output))
            if name.startswith(SHARD_PREFIX) and name.endswith(".parquet")
        }
        return cls(output, storage, record, committed)

    @property
    def complete(self) -> bool:
        return bool(self.record and self.record.get("complete"))

    def check_identity(self, identity: dict) -> None:
        """Refuses to mix this job's results with another's in one OUTPUT."""
        if self.record is None:
            if self.committed:
                raise OutputConflictError(
                    f"OUTPUT {self.output} already holds {len(self.committed)} shard files but no "
                    f"{JOB_FILE}: use --overwrite to replace them, or another OUTPUT"
                )
            return
        previous = self.record.get("identity", {})
        differences = sorted(
            k for k in identity.keys() | previous.keys() if identity.get(k) != previous.get(k)
        )
        if differences:
            raise OutputConflictError(
                f"OUTPUT {self.output} holds a job with a different {', '.join(differences)}: "
                "use --overwrite to redo it, or another OUTPUT"
            )

    def clear(self) -> None:
        """--overwrite: removes this tool's files (shards, plan, record), nothing else in OUTPUT."""
        ours = [
            uri
            for uri in self.storage.list(self.output)
            if (name := uri[len(self.output.rstrip("/")) + 1 :]).startswith((PLAN_FOLDER + "/", JOB_FILE))
            or (name.startswith(SHARD_PREFIX) and name.endswith(".parquet"))
        ]
        self.storage.delete(ours)
        self.record, self.committed = None, set()

    def resume(self, shards: Iterator[Shard]) -> Iterator[tuple[Shard, ShardCounts | None]]:
        """Each planned shard with its counts when already committed, else None after storing its plan."""
        for shard in shards:
            uri = join(self.output, plan_file(shard))
            if shard.file_name in self.committed:
                stored = json.loads(self.storage.get(uri)) if self.storage.exists(uri) else None
                if stored is None or tuple(stored["uris"]) != shard.uris:
                    raise OutputConflictError(
                        f"INPUT changed since OUTPUT {self.output} was started: {shard.file_name} was made "
                        "from other images; use --overwrite to redo the job, or another OUTPUT"
                    )
                yield shard, read_counts(self.storage.get(join(self.output, shard.file_name)))
            else:
                self.storage.put(uri, json.dumps({"index": shard.index, "uris": list(shard.uris)}).encode())
                yield shard, None

    def write_record(self, record: dict) -> None:
        self.record = record
        self.storage.put(join(self.output, JOB_FILE), json.dumps(record, indent=2).encode())
