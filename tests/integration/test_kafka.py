"""The local Kafka is a real broker: keyed order, committed offsets, transactions."""

from __future__ import annotations

from collections import defaultdict

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.integration.kafka_util import consume, create_topic

pytestmark = pytest.mark.integration

MESSAGES = 10_000
KEYS = 100
FIRST_CONSUMER_STOPS_AFTER = 4_000


def _consumer(bootstrap: str, group: str, *, isolation: str = "read_committed") -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )


def test_keyed_messages_resume_from_committed_offset(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    create_topic(kafka_bootstrap, unique_topic, partitions=8)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all"}
    )
    for seq in range(MESSAGES):
        key = f"k{seq % KEYS}"
        producer.produce(unique_topic, key=key, value=f"{key}:{seq}")
        producer.poll(0)
    assert producer.flush(30) == 0

    group = f"{unique_topic}.group"
    first = _consumer(kafka_bootstrap, group)
    first.subscribe([unique_topic])
    seen = consume(first, count=FIRST_CONSUMER_STOPS_AFTER, timeout_s=60)
    assert len(seen) == FIRST_CONSUMER_STOPS_AFTER
    committed = first.commit(asynchronous=False)
    assert committed is not None and all(tp.error is None for tp in committed)
    first.close()

    second = _consumer(kafka_bootstrap, group)
    second.subscribe([unique_topic])
    rest = consume(second, count=MESSAGES - len(seen), timeout_s=60)
    assert consume(second, count=1, timeout_s=3) == []  # nothing beyond the end
    second.close()

    values = [m.value().decode() for m in seen + rest]
    assert len(values) == MESSAGES
    assert len(set(values)) == MESSAGES, "a message was delivered twice"
    per_key: dict[str, list[int]] = defaultdict(list)
    for value in values:
        key, seq = value.split(":")
        per_key[key].append(int(seq))
    assert all(seqs == sorted(seqs) for seqs in per_key.values()), "per-key order broken"
    assert {key: len(seqs) for key, seqs in per_key.items()} == {
        f"k{i}": MESSAGES // KEYS for i in range(KEYS)
    }


def test_aborted_transactions_are_invisible_to_read_committed(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    create_topic(kafka_bootstrap, unique_topic, partitions=2)
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "transactional.id": f"{unique_topic}.tx",
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(50):
        producer.produce(unique_topic, key=f"a{i}", value=b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    for i in range(50):
        producer.produce(unique_topic, key=f"c{i}", value=b"committed")
    producer.commit_transaction(30)

    committed_reader = _consumer(kafka_bootstrap, f"{unique_topic}.rc")
    committed_reader.assign([TopicPartition(unique_topic, p, 0) for p in range(2)])
    visible = consume(committed_reader, count=100, timeout_s=15)
    committed_reader.close()
    assert sorted({m.value() for m in visible}) == [b"committed"]
    assert len(visible) == 50

    raw_reader = _consumer(kafka_bootstrap, f"{unique_topic}.ru", isolation="read_uncommitted")
    raw_reader.assign([TopicPartition(unique_topic, p, 0) for p in range(2)])
    everything = consume(raw_reader, count=100, timeout_s=15)
    raw_reader.close()
    assert sorted(m.value() for m in everything).count(b"aborted") == 50
