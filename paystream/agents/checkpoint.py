"""Store checkpoints: the changelog offset a partition's stores reflect (Kafka Streams' model).

A worker keeps its RocksDB stores across restarts. Next to the stores of a
partition it writes ``.checkpoint``: for each table, its changelog topic (name
and topic id) and the offset up to which the store holds every committed
record. On start a store with a usable checkpoint restores only the changelog
from that offset on; any doubt (no checkpoint, an unreadable one, another
topic, an offset the changelog does not have, an age past the changelogs'
tombstone retention) wipes the store and restores it from offset 0.

Why reading the tail from a checkpoint is exact: a store is written only after
the transaction carrying the same writes as changelog records has committed,
in changelog order, so a store's state is always that of some changelog
prefix at or after its checkpoint. Re-applying the changelog from the
checkpoint gives every key it touches its last value, and leaves the other
keys as they were -- the state at the changelog's end. A checkpoint may lag
its store (periodic checkpoints, a SIGKILL after one); it may never lead it,
so its offset is only ever the offset of a record the store already applied.

Compaction removes a tombstone ``delete.retention.ms`` after it was written;
a checkpoint older than that could miss a deletion, so it is refused past
``CHECKPOINT_AGE_MAX_MS`` (half the changelogs' ``delete.retention.ms``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from paystream.durable import remove_durably, write_atomically
from paystream.topology.topics import CHANGELOG_DELETE_RETENTION_MS

CHECKPOINT_FILE = ".checkpoint"
CHECKPOINT_FORMAT = 1
CHECKPOINT_AGE_MAX_MS = CHANGELOG_DELETE_RETENTION_MS // 2
CHECKPOINT_SIZE_MAX = 64 * 1024
"""A checkpoint file larger than this is not one of ours."""

Refusal = Literal[
    "missing",
    "unreadable",
    "other_partition",
    "other_topic",
    "topic_recreated",
    "ahead_of_changelog",
    "behind_log_start",
    "too_old",
]
REFUSALS: tuple[Refusal, ...] = get_args(Refusal)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangelogPosition:
    """Where one table's store stands on its changelog partition."""

    topic: str
    topic_id: str
    offset: int
    """Every committed record before this offset is in the store."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    partition: int
    written_at_ms: int
    positions: Mapping[str, ChangelogPosition]
    """table -> its changelog position."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangelogState:
    """What the broker says of one changelog partition now."""

    topic: str
    topic_id: str
    log_start_offset: int
    end_offset: int


def encode(checkpoint: Checkpoint) -> bytes:
    positions = {
        table: {"topic": p.topic, "topic_id": p.topic_id, "offset": p.offset}
        for table, p in sorted(checkpoint.positions.items())
    }
    document = {
        "format": CHECKPOINT_FORMAT,
        "partition": checkpoint.partition,
        "written_at_ms": checkpoint.written_at_ms,
        "positions": positions,
    }
    return json.dumps(document, sort_keys=True).encode()


def decode(data: bytes) -> Checkpoint | None:
    """The checkpoint in ``data``, or None if it is not a well-formed one of this format."""
    try:
        document = json.loads(data)
        if document["format"] != CHECKPOINT_FORMAT:
            return None
        positions = {
            str(table): ChangelogPosition(
                topic=str(p["topic"]), topic_id=str(p["topic_id"]), offset=_natural(p["offset"])
            )
            for table, p in document["positions"].items()
        }
        return Checkpoint(
            partition=_natural(document["partition"]),
            written_at_ms=_natural(document["written_at_ms"]),
            positions=positions,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _natural(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a natural number: {value!r}")
    return value


def refusal(
    checkpoint: Checkpoint,
    *,
    partition: int,
    changelogs: Mapping[str, ChangelogState],
    now_ms: int,
) -> Refusal | None:
    """Why ``checkpoint`` cannot be trusted for ``partition`` now, or None if it can."""
    if checkpoint.partition != partition:
        return "other_partition"
    if set(checkpoint.positions) != set(changelogs):
        return "other_topic"
    if now_ms - checkpoint.written_at_ms > CHECKPOINT_AGE_MAX_MS:
        return "too_old"
    for table, state in changelogs.items():
        position = checkpoint.positions[table]
        if position.topic != state.topic:
            return "other_topic"
        if position.topic_id != state.topic_id:
            return "topic_recreated"
        if position.offset > state.end_offset:
            return "ahead_of_changelog"
        if position.offset < state.log_start_offset:
            return "behind_log_start"
    return None


def read(path: Path) -> Checkpoint | Literal["missing", "unreadable"]:
    """The checkpoint at ``path``, or why there is none to use."""
    try:
        if path.stat().st_size > CHECKPOINT_SIZE_MAX:
            return "unreadable"
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing"
    checkpoint = decode(data)
    return "unreadable" if checkpoint is None else checkpoint


def write(path: Path, checkpoint: Checkpoint) -> None:
    """Replace ``path`` atomically and durably."""
    write_atomically(path, encode(checkpoint))


def remove(path: Path) -> None:
    """Forget a checkpoint (before its store is wiped: never a checkpoint over a wiped store)."""
    remove_durably(path)
