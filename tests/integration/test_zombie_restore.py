"""A partition's new owner restores the writes of every batch whose offsets it starts after.

Issue 13, section 1, on the real broker: a zombie (a worker past its session
timeout, inside its transaction timeout) has sent batch T's offsets with
``send_offsets_to_transaction`` but its changelog record is not on the broker
yet. The new owner's ``LedgerWorker._on_assign`` and the catch-up of its
stores run meanwhile; then the
zombie's record arrives and T commits. The new owner starts after T's offsets
(fetched with ``require_stable``), so its store must hold T's write.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from paystream.agents.stores import RestoreError, offsets_stable
from paystream.agents.worker import LedgerWorker, consumer_config
from paystream.settings import Settings
from paystream.topology.topics import Topics, app_id_for

pytestmark = pytest.mark.integration

PARTITION = 0
ACCOUNT = b"acct-1"
HOLD_S = 5.0
"""How long the zombie keeps batch T open while the new owner takes the partition."""
TIMEOUT_S = 60.0
CATCH_UP_STEPS_MAX = 1_000


def _take_over(worker: LedgerWorker, consumer: Consumer, sources: list[TopicPartition]) -> None:
    """What the worker's loop does when it gains ``sources``: assign, then catch up."""
    worker._on_assign(consumer, sources)
    for _ in range(CATCH_UP_STEPS_MAX):
        gained = worker._gained
        if gained is None:
            return
        worker._catch_up(gained)
    raise AssertionError(f"not caught up after {CATCH_UP_STEPS_MAX} steps")


@pytest.fixture
def race_settings(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Settings:
    """The session's broker, with topics, group and data of this test's own."""
    return Settings(
        environment="test",
        data_dir=tmp_path,
        kafka_bootstrap=kafka_bootstrap,
        kafka_security="plaintext",
        topic_prefix=f"{topic_prefix}-race-{uuid.uuid4().hex[:6]}",
        partitions=2,
    )


@pytest.fixture
def zombie(race_settings: Settings) -> Iterator[Producer]:
    """The previous owner's transactional producer (same config as a worker's)."""
    producer = Producer(
        {
            "bootstrap.servers": race_settings.bootstrap,
            "transactional.id": f"{app_id_for(race_settings)}-w1",
            "transaction.timeout.ms": 30_000,
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    producer.init_transactions(TIMEOUT_S)
    yield producer
    producer.flush(TIMEOUT_S)


def _sources(topics: Topics, offset: int | None = None) -> list[TopicPartition]:
    """Partition PARTITION of both co-partitioned sources (at ``offset`` when given)."""
    names = [topics.commands, topics.legs]
    if offset is None:
        return [TopicPartition(name, PARTITION) for name in names]
    return [TopicPartition(name, PARTITION, offset) for name in names]


def _batch_begins(producer: Producer, group: Consumer, topics: Topics, *, next_offset: int) -> None:
    """Begin a batch and add its input offsets: the zombie's state when it stops."""
    producer.begin_transaction()
    producer.send_offsets_to_transaction(
        _sources(topics, next_offset), group.consumer_group_metadata(), TIMEOUT_S
    )


def _batch_ends(producer: Producer, topics: Topics, balance: bytes) -> None:
    """The batch's changelog record reaches the broker, then the batch commits."""
    producer.produce(topics.balances_changelog, key=ACCOUNT, value=balance, partition=PARTITION)
    producer.commit_transaction(TIMEOUT_S)  # flushes the record first


def test_a_new_owner_restores_a_zombie_batch_whose_offsets_it_starts_after(
    race_settings: Settings, zombie: Producer
) -> None:
    topics = Topics.from_settings(race_settings)
    new_owner = LedgerWorker(race_settings, name="w2")  # creates the topics
    owner_consumer = new_owner._consumer  # the worker's own read_committed group member
    zombie_consumer = Consumer(consumer_config(race_settings, "w1"))  # same group, for its metadata
    try:
        # The zombie's consumer fetches its offsets, as on an assignment. This also
        # finds the group's coordinator: on a broker just started, the producer's own
        # lookup gave up on COORDINATOR_NOT_AVAILABLE and send_offsets hung past its
        # timeout (librdkafka 2.16).
        zombie_consumer.committed(_sources(topics), timeout=TIMEOUT_S)
        _batch_begins(zombie, zombie_consumer, topics, next_offset=1)  # batch T-1
        _batch_ends(zombie, topics, b"balance after T-1")
        _batch_begins(zombie, zombie_consumer, topics, next_offset=2)  # batch T, held open

        failures: list[BaseException] = []

        def take_over() -> None:
            try:
                _take_over(new_owner, owner_consumer, _sources(topics))
            except BaseException as error:  # reported by the test thread
                failures.append(error)

        restore = threading.Thread(target=take_over, name="new-owner")
        restore.start()
        restore.join(HOLD_S)
        took_over_while_open = not restore.is_alive()
        _batch_ends(zombie, topics, b"balance after T")  # the zombie resumes and commits
        restore.join(TIMEOUT_S)
        assert not restore.is_alive(), "the new owner never finished taking over"
        if failures:
            raise failures[0]

        committed = owner_consumer.committed(_sources(topics), timeout=TIMEOUT_S)
        starts_at = sorted(tp.offset for tp in committed)
        balance = new_owner._stores.get("balances", PARTITION)(ACCOUNT)
        assert (starts_at, balance) == ([2, 2], b"balance after T"), (
            f"the new owner starts at offsets {starts_at} (after batch T) with "
            f"balance {balance!r}; it took over while T was open: {took_over_while_open}"
        )
        assert not took_over_while_open, "restored while batch T's offsets were unstable"
    finally:
        zombie_consumer.close()
        owner_consumer.close()  # then as LedgerWorker.run ends
        new_owner._stores.close()
        new_owner._directory.stop()


def test_offsets_that_stay_unstable_stop_the_take_over_with_an_error(
    race_settings: Settings, zombie: Producer
) -> None:
    topics = Topics.from_settings(race_settings)
    worker = LedgerWorker(race_settings, name="w2")  # creates the topics
    consumer = worker._consumer
    try:
        consumer.committed(_sources(topics), timeout=TIMEOUT_S)  # finds the coordinator
        _batch_begins(zombie, consumer, topics, next_offset=1)
        assert not offsets_stable(consumer, _sources(topics), timeout_s=2.0)
        worker._on_assign(consumer, _sources(topics))
        gained = worker._gained
        assert gained is not None
        gained.deadline_s = time.monotonic() + 2.0
        with pytest.raises(RestoreError, match="not stable within"):
            for _ in range(CATCH_UP_STEPS_MAX):
                worker._catch_up(gained)
        zombie.abort_transaction(TIMEOUT_S)
        assert offsets_stable(consumer, _sources(topics), timeout_s=TIMEOUT_S)
    finally:
        consumer.close()
        worker._stores.close()
        worker._directory.stop()
