"""Read partitions up to given end offsets: whole topics for audits, changelogs for restores."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from paystream.settings import KafkaConnection

CONSUME_BATCH = 10_000
CONSUME_TIMEOUT_S = 0.2
STALL_TIMEOUT_S = 30.0
WATERMARK_TIMEOUT_S = 10.0

Partition = tuple[str, int]
"""(topic, partition)"""


def read_to_end(
    kafka: KafkaConnection, topic: str, *, isolation: str = "read_committed"
) -> Iterator[Message]:
    """Every message of ``topic`` up to the end offsets seen when called.

    For a read_committed consumer the end offsets are the last stable offsets:
    what is committed now, without waiting for open transactions.
    """
    consumer = Consumer(
        kafka.config()
        | {
            "group.id": "paystream-reader",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=WATERMARK_TIMEOUT_S).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        ends: dict[Partition, int] = {}
        for partition in metadata.partitions:
            tp = TopicPartition(topic, partition)
            ends[(topic, partition)] = consumer.get_watermark_offsets(
                tp, timeout=WATERMARK_TIMEOUT_S
            )[1]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for _t, p in ends])
        yield from drain(consumer, ends)
    finally:
        consumer.close()


def drain(
    consumer: Consumer, ends: Mapping[Partition, int], *, stall_s: float = STALL_TIMEOUT_S
) -> Iterator[Message]:
    """The messages of ``consumer``'s assigned partitions until each position reaches its end.

    Positions, not message offsets, are compared with the ends: a read_committed
    position moves past transaction markers and aborted records, and only
    passes a transaction still open once it has ended. ``TimeoutError`` when
    no message came for ``stall_s`` with partitions still short of their end.
    """
    pending = {tp for tp, end in ends.items() if end > 0}
    progressed = time.monotonic()
    while pending:
        messages = consumer.consume(CONSUME_BATCH, CONSUME_TIMEOUT_S)
        for message in messages:
            error = message.error()
            if error is None:
                progressed = time.monotonic()
                yield message
            elif error.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(error)
        positions = consumer.position([TopicPartition(t, p) for t, p in pending])
        pending = {
            (tp.topic, tp.partition)
            for tp in positions
            if tp.offset < ends[(tp.topic, tp.partition)]
        }
        if pending and time.monotonic() - progressed > stall_s:
            raise TimeoutError(f"partitions {sorted(pending)} did not reach their end")
