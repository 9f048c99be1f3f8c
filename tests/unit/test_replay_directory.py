"""Replay's directory: exactly the records before a batch's position, whichever way the
positions move (a partition that moved to a worker which had read less goes back)."""

from __future__ import annotations

from paystream.audit.replay_log import DirectoryReplica
from paystream.ledger import DirectoryEntry
from paystream.tables import codecs
from tests.unit.kafka_fakes import FakeMessage


def record(partition: int, offset: int, account_id: str, status: str) -> FakeMessage:
    entry = DirectoryEntry(account_id, "EUR", "p1", status)  # type: ignore[arg-type]
    return FakeMessage("d", partition, offset, codecs.encode_account_key(account_id),
                       codecs.encode_directory_entry(entry))  # fmt: skip


def test_the_directory_at_a_position_holds_the_records_before_it_only() -> None:
    replica = DirectoryReplica({
        0: [record(0, 0, "a", "open"), record(0, 3, "a", "frozen"), record(0, 4, "b", "open")],
        1: [record(1, 0, "c", "open"), FakeMessage("d", 1, 1, b"c", None)],  # a tombstone
    })  # fmt: skip
    seen = replica.at(((0, 1), (1, 0)))
    assert {k: v.status for k, v in seen.items()} == {"a": "open"}
    seen = replica.at(((0, 5), (1, 1)))  # forward
    assert {k: v.status for k, v in seen.items()} == {"a": "frozen", "b": "open", "c": "open"}
    seen = replica.at(((0, 3), (1, 2)))  # partition 0 back, 1 past the tombstone
    assert {k: v.status for k, v in seen.items()} == {"a": "open"}
    assert replica.at(((0, 0), (1, 0))) == {}
