"""Throughput levers: settings that change how fast a job runs, never which faces it finds (so they are
no part of a job's identity, and a re-run may change them). Each default is the measured winner on this
project's 2-CPU machine (`make levers`, docs/LEVERS.md); a larger node may want others."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    requests_per_stream: int = 2
    """Inference requests in flight per request the device calls optimal (one per stream): while a
    finished request's outputs are decoded (in its callback), another is already queued on its stream,
    so no stream waits for Python. Measured: 1 is slower; 4 was no faster in repeated runs."""
    shards_at_once: int = 2
    """Shards an actor works on at once (its Ray max_concurrency; the driver queues as many per actor):
    the next shard is fetched and decoded while the last images of the previous one are inferred."""
    fetch_threads: int = 16
    """Threads per actor fetching, decoding and preparing images (mostly waiting on the store)."""
    cpu_pinning: bool = False
    """OpenVINO's ENABLE_CPU_PINNING: off, since an actor shares its node's cores with its fetch threads
    and other actors."""
