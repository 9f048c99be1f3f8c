"""One account, one partition: the publisher, the workers and Java clients agree."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer

from paystream.agents import worker
from paystream.settings import KafkaConnection, Settings
from paystream.topology.partitioner import partition_for
from paystream.topology.publisher import producer_config
from tests.integration.kafka_util import create_topic

pytestmark = pytest.mark.integration

KEYS = [f"acct-{i:05d}".encode() for i in range(400)] + [b"\xff\x00", "ünïcødé".encode()]


def _confluent_partitions(config: dict[str, Any], topic: str) -> dict[bytes, int]:
    found: dict[bytes, int] = {}

    def done(error: object, message: object) -> None:
        assert error is None
        found[message.key()] = message.partition()  # type: ignore[attr-defined]

    producer = Producer(config)
    transactional = "transactional.id" in config
    if transactional:
        producer.init_transactions(30)
        producer.begin_transaction()
    for key in KEYS:
        producer.produce(topic, key=key, value=b"x", on_delivery=done)
    if transactional:
        producer.commit_transaction(30)
    assert producer.flush(30) == 0
    return found


async def _aiokafka_partitions(bootstrap: str, topic: str) -> dict[bytes, int]:
    """aiokafka's default partitioner is Java's (murmur2): the reference here."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        return {key: (await producer.send_and_wait(topic, b"x", key=key)).partition for key in KEYS}
    finally:
        await producer.stop()


def test_api_workers_and_java_clients_put_one_account_on_one_partition(
    kafka: KafkaConnection, unique_topic: str, topic_prefix: str
) -> None:
    kafka_bootstrap = kafka.bootstrap
    create_topic(kafka_bootstrap, unique_topic, partitions=8)
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, kafka_security="plaintext", topic_prefix=topic_prefix
    )
    publisher = _confluent_partitions(producer_config(kafka), unique_topic)
    workers = _confluent_partitions(worker.producer_config(settings, "p-test"), unique_topic)
    java = asyncio.run(_aiokafka_partitions(kafka_bootstrap, unique_topic))
    assert publisher == workers == java
    assert {key: partition_for(key, 8) for key in KEYS} == publisher
    assert len(set(publisher.values())) == 8  # the keys really spread
