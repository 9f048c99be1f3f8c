"""Stand-ins for confluent-kafka objects in unit tests of the worker's glue."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_LOG_APPEND_TIME, TopicPartition

LOG_TIME_MS = 1_764_500_000_000
"""The log time a fake message carries unless told (2025-11-30)."""


class FakeMessage:
    """The accessors of a consumed confluent-kafka message (``LogAppendTime`` timestamps)."""

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        *,
        timestamp_ms: int = LOG_TIME_MS,
    ) -> None:
        self._fields = (topic, partition, offset, key, value)
        self._timestamp_ms = timestamp_ms

    def topic(self) -> str:
        return self._fields[0]

    def partition(self) -> int:
        return self._fields[1]

    def offset(self) -> int:
        return self._fields[2]

    def key(self) -> bytes | None:
        return self._fields[3]

    def value(self) -> bytes | None:
        return self._fields[4]

    def timestamp(self) -> tuple[int, int]:
        """``(type, ms)`` like confluent-kafka; ms is -1 when there is no timestamp."""
        return TIMESTAMP_LOG_APPEND_TIME, self._timestamp_ms

    def error(self) -> None:
        return None


class FakeLog:
    """Partitions of topics as lists of ``(key, value)``: what fake consumers read."""

    def __init__(self) -> None:
        self.partitions: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = defaultdict(list)

    def append(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        self.partitions[(topic, partition)].append((key, value))

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        """A ``Consumer(config)`` stand-in reading this log (patch it over the real class)."""
        return FakeConsumer(self, config)


class FakeConsumer:
    """A consumer of a :class:`FakeLog`: assign, consume, position, watermarks.

    Every record is committed (what a read_committed consumer would see once
    every transaction has ended).
    """

    def __init__(self, log: FakeLog, config: dict[str, Any]) -> None:
        self._log = log
        self.config = config
        self._positions: dict[tuple[str, int], int] = {}

    def get_watermark_offsets(self, tp: TopicPartition, **_options: Any) -> tuple[int, int]:
        return 0, len(self._log.partitions[(tp.topic, tp.partition)])

    def assign(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            offset = 0 if tp.offset == OFFSET_BEGINNING else tp.offset
            self._positions[(tp.topic, tp.partition)] = offset

    def unassign(self) -> None:
        self._positions.clear()

    def pause(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self._positions.pop((tp.topic, tp.partition), None)

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        messages: list[FakeMessage] = []
        for (topic, partition), position in self._positions.items():
            records = self._log.partitions[(topic, partition)]
            for offset in range(position, min(len(records), position + num_messages)):
                key, value = records[offset]
                messages.append(FakeMessage(topic, partition, offset, key, value))
            self._positions[(topic, partition)] = position + len(messages)
            if messages:
                break
        return messages

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self._positions.get((tp.topic, tp.partition), -1)
            )
            for tp in tps
        ]

    def close(self) -> None:
        self._positions.clear()
