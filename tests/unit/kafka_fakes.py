"""Stand-ins for confluent-kafka objects in unit tests of the worker's glue."""

from __future__ import annotations


class FakeMessage:
    """The accessors of a consumed confluent-kafka message."""

    def __init__(self, topic: str, partition: int, offset: int, key: bytes, value: bytes) -> None:
        self._fields = (topic, partition, offset, key, value)

    def topic(self) -> str:
        return self._fields[0]  # type: ignore[return-value]

    def partition(self) -> int:
        return self._fields[1]  # type: ignore[return-value]

    def offset(self) -> int:
        return self._fields[2]  # type: ignore[return-value]

    def key(self) -> bytes:
        return self._fields[3]  # type: ignore[return-value]

    def value(self) -> bytes:
        return self._fields[4]  # type: ignore[return-value]
