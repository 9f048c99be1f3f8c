"""Process settings for long runs over a large, long-lived heap (replay, the ledger worker).

CPython's cyclic garbage collector runs a young collection every 700 allocations and, every
100 of those, scans the whole heap: with replay's state (every account and idempotency
record of a log) that is most of what it does. paystream's objects are frozen dataclasses
that form no reference cycles, so collecting less often frees the same memory later, not
less of it. Measured on the core alone (64,030 commands and their legs, 175,454 inputs over
2,000 accounts, one process): 6,750 inputs/s with the defaults (700, 10, 10), 8,965 with a
young threshold of 10,000, 10,584 at 50,000, 11,401 at 200,000 (docs/benchmarks.md). In
the worker's batch path (BatchProcessor and Stores.apply on RocksDB, 10,000 transfers and
their legs on one partition, no Kafka) the collector took 0.97 s of 7.92 s of CPU in 1,054
collections with the defaults, 0.16 s in 6 at 50,000 (gc.callbacks).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Final

__all__ = ["GC_GEN0_THRESHOLD", "fewer_collections"]

GC_GEN0_THRESHOLD: Final = 50_000
"""Allocations between young collections (CPython's default: 700)."""


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Young collections every GC_GEN0_THRESHOLD allocations inside; the previous
    thresholds restored after."""
    before = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
