"""Store checkpoints: the file format, and when a checkpoint may be trusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.agents import checkpoint
from paystream.agents.checkpoint import (
    CHECKPOINT_AGE_MAX_MS,
    ChangelogPosition,
    ChangelogState,
    Checkpoint,
)

NOW_MS = 1_800_000_000_000
TABLES = {
    "balances": "p.ledger.balances-changelog",
    "idempotency": "p.ledger.idempotency-changelog",
}


def states(*, end: int = 100, start: int = 0, topic_id: str = "id-1") -> dict[str, ChangelogState]:
    return {
        table: ChangelogState(
            topic=topic, topic_id=topic_id, log_start_offset=start, end_offset=end
        )
        for table, topic in TABLES.items()
    }


def saved(*, offset: int = 60, partition: int = 3, written_at_ms: int = NOW_MS) -> Checkpoint:
    return Checkpoint(
        partition=partition,
        written_at_ms=written_at_ms,
        positions={
            table: ChangelogPosition(topic=topic, topic_id="id-1", offset=offset)
            for table, topic in TABLES.items()
        },
    )


offsets = st.integers(min_value=0, max_value=2**63 - 1)


@given(
    partition=st.integers(min_value=0, max_value=1023),
    written_at_ms=offsets,
    balances=offsets,
    idempotency=offsets,
)
def test_a_checkpoint_reads_back_as_written(
    partition: int, written_at_ms: int, balances: int, idempotency: int
) -> None:
    original = Checkpoint(
        partition=partition,
        written_at_ms=written_at_ms,
        positions={
            "balances": ChangelogPosition(topic="b", topic_id="x", offset=balances),
            "idempotency": ChangelogPosition(topic="i", topic_id="y", offset=idempotency),
        },
    )
    assert checkpoint.decode(checkpoint.encode(original)) == original


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe garbage",
        b"[]",
        b'{"format": 2, "partition": 0, "written_at_ms": 0, "positions": {}}',
        b'{"format": 1, "partition": -1, "written_at_ms": 0, "positions": {}}',
        b'{"format": 1, "partition": true, "written_at_ms": 0, "positions": {}}',
        b'{"format": 1, "partition": 0, "written_at_ms": 0, "positions": {"b": {"topic": "t"}}}',
        b'{"format": 1, "partition": 0, "written_at_ms": 0, "positions": []}',
        json.dumps(
            {
                "format": 1,
                "partition": 0,
                "written_at_ms": 0,
                "positions": {"b": {"topic": "t", "topic_id": "i", "offset": 1.5}},
            }
        ).encode(),
    ],
)
def test_anything_else_is_not_a_checkpoint(data: bytes) -> None:
    assert checkpoint.decode(data) is None


def test_a_checkpoint_within_the_changelog_is_trusted() -> None:
    assert checkpoint.refusal(saved(), partition=3, changelogs=states(), now_ms=NOW_MS) is None
    at_the_end = saved(offset=100, written_at_ms=NOW_MS - CHECKPOINT_AGE_MAX_MS)
    assert checkpoint.refusal(at_the_end, partition=3, changelogs=states(), now_ms=NOW_MS) is None


@pytest.mark.parametrize(
    ("found", "changelogs", "reason"),
    [
        (saved(partition=4), states(), "other_partition"),
        (saved(), {"balances": states()["balances"]}, "other_topic"),
        (saved(), states(topic_id="id-2"), "topic_recreated"),
        (saved(offset=101), states(end=100), "ahead_of_changelog"),
        (saved(offset=10), states(start=20), "behind_log_start"),
        (saved(written_at_ms=NOW_MS - CHECKPOINT_AGE_MAX_MS - 1), states(), "too_old"),
    ],
)
def test_a_checkpoint_is_refused_when_it_may_not_describe_the_store(
    found: Checkpoint, changelogs: dict[str, ChangelogState], reason: str
) -> None:
    assert checkpoint.refusal(found, partition=3, changelogs=changelogs, now_ms=NOW_MS) == reason


def test_a_checkpoint_of_another_topic_name_is_refused() -> None:
    renamed = {
        table: ChangelogState(
            topic="q." + s.topic, topic_id="id-1", log_start_offset=0, end_offset=100
        )
        for table, s in states().items()
    }
    assert (
        checkpoint.refusal(saved(), partition=3, changelogs=renamed, now_ms=NOW_MS) == "other_topic"
    )


def test_files_written_read_back_and_damaged_ones_are_unreadable(tmp_path: Path) -> None:
    path = tmp_path / checkpoint.CHECKPOINT_FILE
    assert checkpoint.read(path) == "missing"
    checkpoint.write(path, saved())
    assert checkpoint.read(path) == saved()
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT_FILE]  # no temporary
    path.write_bytes(checkpoint.encode(saved())[:-3])
    assert checkpoint.read(path) == "unreadable"
    path.write_bytes(b" " * (checkpoint.CHECKPOINT_SIZE_MAX + 1))
    assert checkpoint.read(path) == "unreadable"
    checkpoint.remove(path)
    assert checkpoint.read(path) == "missing"
