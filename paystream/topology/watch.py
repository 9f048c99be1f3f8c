"""Follow the ``events`` topic until given payments reach a terminal state."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from paystream.ledger import TERMINAL_EVENT_TYPES, Event, is_own_event
from paystream.settings import KafkaConnection
from paystream.topology.avro import AvroSerde

POLL_TIMEOUT_S = 0.5
POLL_BATCH_MAX = 1_000


class EventWatcher:
    """Reads ``events`` read_committed from the beginning, outside any group."""

    def __init__(
        self, *, kafka: KafkaConnection, topic: str, serde: AvroSerde, partitions: int
    ) -> None:
        self._serde = serde
        self._consumer = Consumer(
            kafka.config()
            | {
                "group.id": "paystream-watch",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.events: dict[str, list[Event]] = {}
        self.timestamp_ms: dict[str, int] = {}
        """event id -> the broker record's timestamp (when the worker produced it)."""
        self.copies: dict[str, int] = {}
        """event id -> how many times it was read (more than 1 is a duplicate)."""

    def poll(self) -> int:
        messages = self._consumer.consume(POLL_BATCH_MAX, POLL_TIMEOUT_S)
        for message in messages:
            if message.error() is not None:
                raise KafkaException(message.error())
            event = self._serde.decode_event(message.value() or b"")
            self.copies[event.event_id] = self.copies.get(event.event_id, 0) + 1
            if self.copies[event.event_id] > 1:
                continue
            self.events.setdefault(event.payment_id, []).append(event)
            self.timestamp_ms[event.event_id] = int(message.timestamp()[1])
        return len(messages)

    def terminal(self, payment_id: str) -> Event | None:
        """The payment's own outcome; else the first answer to a record with its id."""
        answers = self.answers(payment_id)
        for event in answers:
            if is_own_event(event):
                return event
        return answers[0] if answers else None

    def answers(self, payment_id: str) -> list[Event]:
        """Every answer given to a record carrying ``payment_id``, in order."""
        return [e for e in self.events.get(payment_id, ()) if e.type in TERMINAL_EVENT_TYPES]

    def wait_answers(self, expected: Mapping[str, int], *, timeout_s: float) -> set[str]:
        """Poll until each id has ``expected[id]`` answers; return the ids still short."""
        waiting = set(expected)
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            self.poll()
            waiting = {p for p in waiting if len(self.answers(p)) < expected[p]}
        return waiting

    def wait(self, payment_ids: Iterable[str], *, timeout_s: float) -> set[str]:
        """Poll until every id has a terminal event; return the ids still open."""
        waiting = set(payment_ids)
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            self.poll()
            waiting = {p for p in waiting if self.terminal(p) is None}
        return waiting

    def close(self) -> None:
        self._consumer.close()
