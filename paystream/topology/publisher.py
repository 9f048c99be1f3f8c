"""Puts commands on the ``commands`` topic, keyed by their account.

confluent-kafka (librdkafka) partitions by CRC32 unless told otherwise; Java
clients use murmur2. ``murmur2_random`` (here and in the workers) makes one
account land on one partition whoever produced it (docs/architecture.md,
co-partitioning).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Producer

from paystream.ledger import Command
from paystream.settings import KafkaConnection
from paystream.topology.avro import AvroSerde
from paystream.workload import Garbage, Misrouted, Sent

FLUSH_TIMEOUT_S = 60.0
QUEUE_MESSAGES_MAX = 100_000


def producer_config(kafka: KafkaConnection) -> dict[str, Any]:
    return kafka.config() | {
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "queue.buffering.max.messages": QUEUE_MESSAGES_MAX,
    }


class CommandPublisher:
    def __init__(self, *, kafka: KafkaConnection, topic: str, serde: AvroSerde) -> None:
        self._producer = Producer(producer_config(kafka))
        self._topic = topic
        self._serde = serde
        self._errors: list[str] = []

    def publish(self, command: Command) -> None:
        """Queue one command (delivery is confirmed by :meth:`flush`)."""
        self.publish_raw(command.account_id.encode(), self._serde.encode_command(command))

    def publish_raw(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(self._topic, key=key, value=value, on_delivery=self._done)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def publish_all(self, commands: Iterable[Command]) -> None:
        for command in commands:
            self.publish(command)

    def publish_sent(self, records: Iterable[Sent]) -> None:
        """Workload records as they are: commands, misrouted commands, garbage."""
        for sent in records:
            if isinstance(sent, Misrouted):
                self.publish_raw(sent.key, self._serde.encode_command(sent.command))
            elif isinstance(sent, Garbage):
                self.publish_raw(sent.key, sent.value)
            else:
                self.publish(sent)

    def flush(self) -> None:
        """Wait until Kafka has every queued command; raise if any was refused."""
        remaining = self._producer.flush(FLUSH_TIMEOUT_S)
        if remaining:
            raise RuntimeError(f"{remaining} commands not delivered within {FLUSH_TIMEOUT_S}s")
        if self._errors:
            raise RuntimeError(f"commands refused by Kafka: {self._errors[:3]}")

    def _done(self, error: object, _message: object) -> None:
        if error is not None:
            self._errors.append(str(error))
