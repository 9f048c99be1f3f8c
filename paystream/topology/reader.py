"""Read a whole topic up to its current end (read_committed), outside any group."""

from __future__ import annotations

from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

POLL_TIMEOUT_S = 1.0
IDLE_POLLS_MAX = 30
WATERMARK_TIMEOUT_S = 10.0


def read_to_end(
    bootstrap: str, topic: str, *, isolation: str = "read_committed"
) -> Iterator[Message]:
    """Every message of ``topic`` up to the end offsets seen when called.

    read_committed stops at the last stable offset, so the high watermark is
    compared against each partition's position, not message offsets.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
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
        ends: dict[int, int] = {}
        for partition in metadata.partitions:
            tp = TopicPartition(topic, partition)
            ends[partition] = consumer.get_watermark_offsets(tp, timeout=WATERMARK_TIMEOUT_S)[1]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        yield from _drain(consumer, topic, ends)
    finally:
        consumer.close()


def _drain(consumer: Consumer, topic: str, ends: dict[int, int]) -> Iterator[Message]:
    pending = {p for p, end in ends.items() if end > 0}
    idle = 0
    while pending and idle < IDLE_POLLS_MAX:
        message = consumer.poll(POLL_TIMEOUT_S)
        if message is None:
            idle += 1
            pending = {p for p in pending if _position(consumer, topic, p) < ends[p]}
            continue
        if message.error() is not None:
            raise KafkaException(message.error())
        idle = 0
        yield message
        partition = message.partition()
        if partition in pending and (message.offset() or 0) + 1 >= ends[partition]:
            pending.discard(partition)
    if pending:
        raise TimeoutError(f"{topic}: partitions {sorted(pending)} did not reach their end")


def _position(consumer: Consumer, topic: str, partition: int) -> int:
    offset = consumer.position([TopicPartition(topic, partition)])[0].offset
    return int(offset) if offset >= 0 else 0
