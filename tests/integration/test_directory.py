"""The directory follower is restored to its end by start(), skips foreign records, follows on."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Producer

from paystream.agents.directory import (
    SKIP_REASONS,
    DirectoryFollower,
    DirectoryRestoreError,
    classify,
)
from paystream.ledger import AccountStatus, DirectoryEntry
from paystream.settings import KafkaConnection
from paystream.tables import codecs
from tests.integration.kafka_util import create_topic

pytestmark = pytest.mark.integration

PARTITIONS = 3
ACCOUNTS = 300
PENDING_COMMIT_DELAY_S = 2.0
FOLLOW_TIMEOUT_S = 10.0
WAIT_STEP_S = 0.02

Record = tuple[bytes | None, bytes | None]


def _entry(account_id: str, status: AccountStatus = "open") -> DirectoryEntry:
    return DirectoryEntry(account_id=account_id, currency="EUR", partner_id="p1", status=status)


def _record(entry: DirectoryEntry) -> Record:
    return codecs.encode_account_key(entry.account_id), codecs.encode_directory_entry(entry)


@pytest.fixture
def topic(kafka_bootstrap: str, unique_topic: str) -> str:
    create_topic(kafka_bootstrap, unique_topic, partitions=PARTITIONS)
    return unique_topic


@pytest.fixture
def producer(kafka_bootstrap: str, topic: str) -> Iterator[Producer]:
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "transactional.id": f"{topic}-writer",
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    producer.init_transactions(30)
    yield producer
    producer.flush(30)
    producer.close()


@pytest.fixture
def follower(kafka: KafkaConnection, topic: str) -> Iterator[DirectoryFollower]:
    follower = DirectoryFollower(kafka=kafka, topic=topic)
    yield follower
    follower.stop()


def _send(producer: Producer, topic: str, records: list[Record], *, partition: int) -> None:
    for key, value in records:
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0


def _transaction(
    producer: Producer, topic: str, records: list[Record], *, partition: int, commit: bool = True
) -> None:
    producer.begin_transaction()
    _send(producer, topic, records, partition=partition)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


def _wait_for(condition: Callable[[], bool], *, timeout_s: float = FOLLOW_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(WAIT_STEP_S)
    return condition()


def test_entries_committed_before_start_are_all_there_when_start_returns(
    producer: Producer, topic: str, follower: DirectoryFollower
) -> None:
    expected: dict[str, DirectoryEntry] = {}
    for p in range(PARTITIONS):
        entries = [_entry(f"acc-{p}-{i}") for i in range(ACCOUNTS // PARTITIONS)]
        _transaction(producer, topic, [_record(e) for e in entries], partition=p)
        expected.update((e.account_id, e) for e in entries)
    frozen = _entry("acc-0-7", "frozen")  # a later entry of the same account wins
    _transaction(producer, topic, [_record(frozen)], partition=0)
    expected[frozen.account_id] = frozen
    aborted = [_entry("acc-0-8", "closed"), _entry("never-opened")]
    _transaction(producer, topic, [_record(e) for e in aborted], partition=0, commit=False)

    follower.start()

    assert dict(follower) == expected  # at once: no sleep, no polling
    assert follower.restored_records == ACCOUNTS + 1
    assert follower.restore_seconds > 0
    assert sum(follower.skipped.values()) == 0


def test_start_waits_for_a_transaction_open_when_it_begins(
    producer: Producer, topic: str, follower: DirectoryFollower
) -> None:
    _transaction(producer, topic, [_record(_entry("a"))], partition=1)
    _transaction(producer, topic, [_record(_entry("aborted"))], partition=1, commit=False)
    producer.begin_transaction()  # still open when start() takes the high watermarks
    _send(producer, topic, [_record(_entry("pending"))], partition=1)
    committer = threading.Timer(PENDING_COMMIT_DELAY_S, producer.commit_transaction, (30,))
    committer.start()
    try:
        started = time.monotonic()
        follower.start()
        waited_s = time.monotonic() - started
    finally:
        committer.join()

    assert set(follower) == {"a", "pending"}
    assert waited_s >= PENDING_COMMIT_DELAY_S * 0.9, "start() returned before the commit"
    # aborted while following, then a committed entry behind it: only that one appears
    _transaction(producer, topic, [_record(_entry("aborted-later"))], partition=2, commit=False)
    _transaction(producer, topic, [_record(_entry("b"))], partition=2)
    assert _wait_for(lambda: "b" in follower)
    assert set(follower) == {"a", "pending", "b"}


def test_start_gives_up_on_a_transaction_that_stays_open(
    kafka: KafkaConnection, producer: Producer, topic: str
) -> None:
    producer.begin_transaction()
    _send(producer, topic, [_record(_entry("stuck"))], partition=0)
    follower = DirectoryFollower(kafka=kafka, topic=topic, restore_timeout_s=2.0)
    try:
        with pytest.raises(DirectoryRestoreError, match="not read to its end"):
            follower.start()
    finally:
        producer.abort_transaction(30)
        follower.stop()


def _hostile_records(tag: str) -> list[Record]:
    """One record per way a directory record can be wrong, then a good one."""
    victim = _entry(f"victim-{tag}")
    good = _record(victim)[1]
    assert good is not None
    return [
        _record(victim),
        (codecs.encode_account_key(victim.account_id), None),  # tombstone
        (codecs.encode_account_key(victim.account_id), b""),  # empty value: tombstone too
        (b"garbage-" + tag.encode(), b"\x00\xffnot a directory entry"),
        (codecs.encode_account_key(victim.account_id), good[:-1]),  # truncated
        (codecs.encode_account_key(f"other-{tag}"), good),  # someone else's entry
        (None, good),  # no key at all
        _record(_entry(f"after-{tag}")),
    ]


EXPECTED_SKIPS = {"tombstone": 2, "undecodable": 2, "key_mismatch": 2}


def test_tombstones_garbage_and_foreign_records_are_skipped_and_counted(
    producer: Producer,
    topic: str,
    follower: DirectoryFollower,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="paystream.agents.directory")
    _transaction(producer, topic, _hostile_records("restored"), partition=0)

    follower.start()

    # A bad record is the latest under its key, and compaction keeps only it: the account is
    # forgotten (unknown: the destination's partition decides), as after a compacted restore.
    assert set(follower) == {"after-restored"}
    assert dict(follower.skipped) == EXPECTED_SKIPS
    assert follower.restored_records == len(_hostile_records("restored"))
    assert len([r for r in caplog.records if "skipped a record" in r.message]) == 6

    _transaction(producer, topic, _hostile_records("followed"), partition=2)
    assert _wait_for(lambda: "after-followed" in follower)
    assert set(follower) == {"after-restored", "after-followed"}
    assert dict(follower.skipped) == {reason: 2 * n for reason, n in EXPECTED_SKIPS.items()}


def test_follower_keeps_following_after_start(
    producer: Producer, topic: str, follower: DirectoryFollower
) -> None:
    _transaction(producer, topic, [_record(_entry("x"))], partition=0)
    follower.start()
    assert set(follower) == {"x"}

    _transaction(producer, topic, [_record(_entry("y"))], partition=1)
    _transaction(producer, topic, [_record(_entry("x", "closed"))], partition=0)
    assert _wait_for(lambda: "y" in follower and follower["x"].status == "closed")
    assert dict(follower) == {"x": _entry("x", "closed"), "y": _entry("y")}
    assert follower.restored_records == 1


def test_start_on_an_empty_directory_returns_at_once(follower: DirectoryFollower) -> None:
    follower.start()
    assert len(follower) == 0
    assert follower.restored_records == 0


def test_classify_names_the_reason_for_each_bad_record() -> None:
    key, value = _record(_entry("a"))
    assert value is not None
    assert classify(key, value) == _entry("a")
    assert classify(key, None) == "tombstone"
    assert classify(key, b"") == "tombstone"
    assert classify(key, b"\x01") == "undecodable"
    assert classify(key, b"\x02" + value[1:]) == "undecodable"  # another format number
    assert classify(b"b", value) == "key_mismatch"
    assert classify(None, value) == "key_mismatch"
    assert set(SKIP_REASONS) == set(EXPECTED_SKIPS)
