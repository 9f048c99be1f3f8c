"""One account, one partition: our confluent-kafka producers and the workers' aiokafka agree."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer

from paystream.topology.partitioner import partition_for
from paystream.topology.publisher import producer_config
from tests.integration.kafka_util import create_topic

pytestmark = pytest.mark.integration

KEYS = [f"acct-{i:05d}".encode() for i in range(400)] + [b"\xff\x00", "ünïcødé".encode()]


def _confluent_partitions(bootstrap: str, topic: str) -> dict[bytes, int]:
    found: dict[bytes, int] = {}

    def done(error: object, message: object) -> None:
        assert error is None
        found[message.key()] = message.partition()  # type: ignore[attr-defined]

    producer = Producer(producer_config(bootstrap))
    for key in KEYS:
        producer.produce(topic, key=key, value=b"x", on_delivery=done)
    assert producer.flush(30) == 0
    return found


async def _aiokafka_partitions(bootstrap: str, topic: str) -> dict[bytes, int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)  # its default: murmur2, like faust
    await producer.start()
    try:
        return {key: (await producer.send_and_wait(topic, b"x", key=key)).partition for key in KEYS}
    finally:
        await producer.stop()


def test_api_and_agents_put_one_account_on_one_partition(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    create_topic(kafka_bootstrap, unique_topic, partitions=8)
    confluent = _confluent_partitions(kafka_bootstrap, unique_topic)
    aiokafka = asyncio.run(_aiokafka_partitions(kafka_bootstrap, unique_topic))
    assert confluent == aiokafka
    assert {key: partition_for(key, 8) for key in KEYS} == confluent
    assert len(set(confluent.values())) == 8  # the keys really spread
