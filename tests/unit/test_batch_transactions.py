"""The worker's transaction control flow: commit then apply, or abort, rewind, apply nothing.

Kafka's side (fencing, read_committed visibility) is exercised on a real
broker by the end-to-end and crash tests; these pin the worker's reactions to
each kind of error, which a crash test cannot reach on demand.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import REGISTRY

from paystream.agents.processor import Batch, Record
from paystream.agents.stores import TableWrite
from paystream.agents.worker import (
    BatchTransactions,
    CoPartitioningError,
    Timeouts,
    table_partitions,
)
from paystream.ledger import Event, JournalEntry, JournalLine
from paystream.settings import Settings
from paystream.topology.topics import Topics
from tests.unit.kafka_fakes import FakeMessage

COMMANDS = "p.commands"
LEGS = "p.legs"
MESSAGES = [
    FakeMessage(COMMANDS, 3, 10, b"a", b"1"),
    FakeMessage(LEGS, 3, 40, b"b", b"2"),
    FakeMessage(COMMANDS, 3, 11, b"a", b"3"),
    FakeMessage(COMMANDS, 5, 7, b"c", b"4"),
]
ENTRY = JournalEntry(
    entry_id="c-1:deposit",
    payment_id="c-1",
    kind="deposit",
    partner_id="p1",
    account_id="a",
    issued_at_ms=1,
    lines=(
        JournalLine(account_id="@settlement", currency="EUR", side="debit", amount_minor=5),
        JournalLine(account_id="a", currency="EUR", side="credit", amount_minor=5),
    ),
)
EVENT = Event(
    event_id="c-1:completed",
    payment_id="c-1",
    type="Completed",
    command_type="Deposit",
    partner_id="p1",
    account_id="a",
    issued_at_ms=1,
)
BATCH = Batch(
    records=[
        Record("p.ledger", b"a", b"entry"),
        Record("p.ledger.balances-changelog", b"a", b"acct", partition=3),
        Record("p.ledger.idempotency-changelog", b"old", None, partition=3),  # a tombstone
        Record("p.dlq", b"c", b"4", headers=[("dlq.reason", b"undecodable")]),
    ],
    writes=[TableWrite("balances", 3, b"a", b"acct"), TableWrite("idempotency", 3, b"old", None)],
    outputs=[ENTRY, EVENT],
    dead_letters=["undecodable"],
)


def error(*, abort: bool = False, retriable: bool = False) -> KafkaException:
    return KafkaException(
        KafkaError(KafkaError._FENCED, "test", retriable=retriable, txn_requires_abort=abort)
    )


class Calls:
    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []


FIRST_OFFSET = 100
"""The offset the fake broker gives the first record of each partition."""


class FakeProducer:
    """Records calls; delivery reports (offsets from FIRST_OFFSET) are served by ``poll``."""

    def __init__(self, calls: Calls, commit_errors: list[KafkaException]) -> None:
        self._calls = calls
        self._commit_errors = commit_errors
        self._next: dict[tuple[str, int], int] = {}
        self._reports: list[tuple[Any, FakeMessage]] = []

    def begin_transaction(self) -> None:
        self._calls.log.append(("begin",))

    def produce(self, topic: str, **kwargs: Any) -> None:
        on_delivery = kwargs.pop("on_delivery", None)
        self._calls.log.append(("produce", topic, kwargs))
        partition = kwargs.get("partition", 0)
        offset = self._next.get((topic, partition), FIRST_OFFSET)
        self._next[(topic, partition)] = offset + 1
        if on_delivery is not None:
            message = FakeMessage(topic, partition, offset, kwargs["key"], kwargs["value"])
            self._reports.append((on_delivery, message))

    def poll(self, timeout: float) -> int:
        reports, self._reports = self._reports, []
        for on_delivery, message in reports:
            on_delivery(None, message)
        return len(reports)

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], metadata: str, timeout: float
    ) -> None:
        sent = sorted((tp.topic, tp.partition, tp.offset) for tp in offsets)
        self._calls.log.append(("offsets", sent, metadata))

    def commit_transaction(self, timeout: float) -> None:
        self._calls.log.append(("commit",))
        if self._commit_errors:
            raise self._commit_errors.pop(0)

    def abort_transaction(self, timeout: float) -> None:
        self._calls.log.append(("abort",))


class FakeConsumer:
    def __init__(self, calls: Calls) -> None:
        self._calls = calls

    def consumer_group_metadata(self) -> str:
        return "generation-7"

    def seek(self, tp: TopicPartition) -> None:
        self._calls.log.append(("seek", tp.topic, tp.partition, tp.offset))


class FakeStores:
    def __init__(self, calls: Calls) -> None:
        self._calls = calls

    def apply(self, writes: list[TableWrite], offsets: dict[tuple[str, int], int]) -> None:
        self._calls.log.append(("apply", list(writes), offsets))


class FakeProcessor:
    commands_topic = COMMANDS
    changelogs = {  # noqa: RUF012 (a stand-in for the processor's attribute)
        "balances": "p.ledger.balances-changelog",
        "idempotency": "p.ledger.idempotency-changelog",
    }

    def process(self, messages: Any) -> Batch:
        return BATCH


def transactions(calls: Calls, *commit_errors: KafkaException) -> BatchTransactions:
    return BatchTransactions(
        producer=FakeProducer(calls, list(commit_errors)),  # type: ignore[arg-type]
        consumer=FakeConsumer(calls),  # type: ignore[arg-type]
        processor=FakeProcessor(),  # type: ignore[arg-type]
        stores=FakeStores(calls),  # type: ignore[arg-type]
        timeouts=Timeouts(transaction_s=10.0),
    )


NEXT_OFFSETS = [(COMMANDS, 3, 12), (COMMANDS, 5, 8), (LEGS, 3, 41)]


def test_a_committed_batch_sends_everything_then_its_offsets_then_applies_its_writes() -> None:
    calls = Calls()
    assert transactions(calls).run(MESSAGES) is True  # type: ignore[arg-type]
    assert calls.log == [
        ("begin",),
        ("produce", "p.ledger", {"key": b"a", "value": b"entry"}),
        ("produce", "p.ledger.balances-changelog", {"key": b"a", "value": b"acct", "partition": 3}),
        (
            "produce",
            "p.ledger.idempotency-changelog",
            {"key": b"old", "value": None, "partition": 3},
        ),
        (
            "produce",
            "p.dlq",
            {"key": b"c", "value": b"4", "headers": [("dlq.reason", b"undecodable")]},
        ),
        ("offsets", NEXT_OFFSETS, "generation-7"),
        ("commit",),
        # each store now reflects its changelog up to the batch's last record on it
        ("apply", BATCH.writes, {("balances", 3): 101, ("idempotency", 3): 101}),
    ]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


METRICS = {
    "committed": ("paystream_worker_batches_total", {"outcome": "committed"}),
    "aborted": ("paystream_worker_batches_total", {"outcome": "aborted"}),
    "commands": ("paystream_worker_inputs_total", {"topic": "commands"}),
    "legs": ("paystream_worker_inputs_total", {"topic": "legs"}),
    "completed": ("paystream_worker_events_total", {"type": "Completed", "code": ""}),
    "entries": ("paystream_worker_journal_entries_total", {}),
    "dlq": ("paystream_worker_dlq_records_total", {"reason": "undecodable"}),
    "batches timed": ("paystream_worker_batch_seconds_count", {}),
}


def _metrics() -> dict[str, float]:
    return {what: _sample(name, **labels) for what, (name, labels) in METRICS.items()}


def test_a_committed_batch_is_counted() -> None:
    before = _metrics()
    assert transactions(Calls()).run(MESSAGES)  # type: ignore[arg-type]
    after = _metrics()
    assert {what: after[what] - before[what] for what in METRICS} == {
        "committed": 1,
        "aborted": 0,
        "commands": 3,
        "legs": 1,
        "completed": 1,
        "entries": 1,
        "dlq": 1,
        "batches timed": 1,
    }


def test_an_aborted_batch_counts_only_its_abort() -> None:
    before = _metrics()
    assert not transactions(Calls(), error(abort=True)).run(MESSAGES)  # type: ignore[arg-type]
    after = _metrics()
    assert {
        what: after[what] - before[what] for what in METRICS if after[what] != before[what]
    } == {"aborted": 1}


def test_an_abortable_error_aborts_rewinds_to_the_first_offsets_and_applies_nothing() -> None:
    calls = Calls()
    worker = transactions(calls, error(abort=True))
    assert worker.run(MESSAGES) is False  # type: ignore[arg-type]
    assert calls.log[-5:] == [
        ("commit",),
        ("abort",),
        ("seek", COMMANDS, 3, 10),
        ("seek", LEGS, 3, 40),
        ("seek", COMMANDS, 5, 7),
    ]
    assert not [call for call in calls.log if call[0] == "apply"]
    assert worker.aborted == 1


def test_a_retriable_commit_error_is_retried() -> None:
    calls = Calls()
    assert transactions(calls, error(retriable=True), error(retriable=True)).run(MESSAGES)  # type: ignore[arg-type]
    assert [call[0] for call in calls.log][-4:] == ["commit", "commit", "commit", "apply"]


def test_any_other_error_propagates_without_applying_or_aborting() -> None:
    calls = Calls()
    with pytest.raises(KafkaException):
        transactions(calls, error()).run(MESSAGES)  # type: ignore[arg-type]
    assert [call[0] for call in calls.log][-1] == "commit"
    assert not [call for call in calls.log if call[0] in ("apply", "abort")]


def test_an_assignment_needs_the_same_partitions_of_both_sources() -> None:
    topics = Topics.from_settings(Settings(topic_prefix="p"))
    both = [TopicPartition(t, p) for t in (topics.commands, topics.legs) for p in (1, 4)]
    assert table_partitions(topics, both) == {1, 4}
    assert table_partitions(topics, []) == set()
    skewed = [*both, TopicPartition(topics.legs, 6)]
    with pytest.raises(CoPartitioningError, match=r"commands \[1, 4\] != legs \[1, 4, 6\]"):
        table_partitions(topics, skewed)
