"""A batching sink's consumer loop: bounded batches from Kafka into a store, exactly once.

The store keeps the consumer positions with the rows, so the loop only has to read, hand a
batch over, and follow its store's answer (Kafka's committed offsets are never read back;
after each batch the loop commits its positions there too, asynchronously, so that the
tools that watch consumer groups see how far each sink is behind):

- On an assignment it asks the store where each partition stands and seeks there.
- A batch is handed over as soon as a fetch comes back short (all there is for now: a
  record waits at most ``CONSUME_TIMEOUT_S`` to be picked up), or it holds ``records_max``
  records, or it is ``window_s`` old. Behind, batches grow by themselves.
- The store down (``Target.retriable``): the batch in hand is kept (it is bounded), every
  assigned partition is paused so nothing more is fetched, the member keeps polling (it
  stays in its group), and the write is retried with capped exponential backoff and full
  jitter until it lands.
- ``Fenced`` (another copy holds the partitions now): the batch is dropped; its new owner
  writes it from the stored positions.
- On a revoke the batch in hand is dropped the same way.

The positions stored are the consumer's (past transaction markers), so "caught up" is
exactly "stored position = the log's last stable offset".
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from paystream.ledger.errors import InvariantViolation
from paystream.settings import KafkaConnection

CONSUME_TIMEOUT_S = 0.05
RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 10.0
"""Backoff of a failed write: doubled per failure, capped, full jitter."""
ASSIGN_RETRY_MAX_S = 300.0
"""How long an assignment waits for the store to give its stored positions."""
LAG_REPORT_S = 2.0
POLL_INTERVAL_MAX_MS = 300_000

Position = tuple[str, int]
"""(topic, partition)."""
T = TypeVar("T")
logger = logging.getLogger("paystream.sink")


class Fenced(Exception):
    """The store refused a batch: another copy of the sink holds its partitions now."""


class Target(Protocol):
    """Where a sink writes: its stored positions and its batches, each batch with them."""

    retriable: tuple[type[Exception], ...]
    """Errors of a store that is down or busy: the batch is kept and retried."""

    def positions(self, assigned: Sequence[Position]) -> Mapping[Position, int]:
        """The next offset to read per partition, as far as the store has written."""

    def write(
        self,
        messages: Sequence[Message],
        *,
        next_offsets: Mapping[Position, int],
        started_at: Mapping[Position, int | None],
    ) -> Mapping[str, int]:
        """Write the batch and ``next_offsets`` together; rows written per table.

        ``started_at``: where each partition stood when this batch was read (for a store
        that refuses a batch whose partitions moved on: ``Fenced``)."""


@dataclass(frozen=True, slots=True)
class Observer:
    """What the loop reports (each sink names its own metrics)."""

    written: Callable[[Mapping[str, int], Mapping[Position, int], int, float], None]
    """(rows per table, next offsets, records in the batch, seconds)."""
    retried: Callable[[str], None]
    """reason: ``store`` or ``fenced``."""
    lag: Callable[[str, int, int, float], None]
    """(topic, partition, records behind, seconds behind)."""


@dataclass(frozen=True, slots=True)
class Limits:
    records_max: int
    window_s: float


@dataclass(slots=True)
class _Pending:
    messages: list[Message] = field(default_factory=list)
    next_offsets: dict[Position, int] = field(default_factory=dict)
    newest_ms: dict[Position, int] = field(default_factory=dict)
    failures: int = 0
    retry_at_s: float = 0.0


class BatchingSink:
    """One consumer-group member of a sink (several copies share the group)."""

    def __init__(
        self,
        *,
        kafka: KafkaConnection,
        group: str,
        name: str,
        topics: Sequence[str],
        target: Target,
        limits: Limits,
        observer: Observer,
    ) -> None:
        self._topics = list(topics)
        self._target = target
        self._limits = limits
        self._observer = observer
        self._consumer = Consumer(
            kafka.config()
            | {
                "group.id": group,
                "client.id": f"{group}-{name}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,  # positions live in the store
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "max.poll.interval.ms": POLL_INTERVAL_MAX_MS,
            }
        )
        self._started_at: dict[Position, int | None] = {}
        self._pending: _Pending | None = None
        self._stopping = False
        self._lag_reported_s = 0.0
        self._newest_written_ms: dict[Position, int] = {}

    def stop(self) -> None:
        """Finish the batch in hand (or give it up if the store is down), then leave."""
        self._stopping = True

    def run(self) -> None:
        self._consumer.subscribe(
            self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )  # fmt: skip
        try:
            while not self._stopping:
                self.step()
        finally:
            self._consumer.close()

    def step(self) -> None:
        """Read a batch or wait out a backoff, write when due, report the lag now and then."""
        if self._pending is None:
            self._pending = self._read()
        elif time.monotonic() < self._pending.retry_at_s:
            self._consumer.consume(1, CONSUME_TIMEOUT_S)  # paused: keeps the membership alive
        if self._pending is not None and time.monotonic() >= self._pending.retry_at_s:
            self._write(self._pending)
        if time.monotonic() - self._lag_reported_s > LAG_REPORT_S:
            self._report_lag()

    def _read(self) -> _Pending | None:
        pending = _Pending()
        deadline = time.monotonic() + self._limits.window_s
        while len(pending.messages) < self._limits.records_max and time.monotonic() < deadline:
            wanted = self._limits.records_max - len(pending.messages)
            messages = self._consumer.consume(wanted, CONSUME_TIMEOUT_S)
            for message in messages:
                _add(pending, message)
            if len(messages) < wanted and pending.next_offsets:
                break  # caught up: write now
            if not self._started_at:
                break
        self._past_markers(pending)
        return pending if pending.next_offsets else None

    def _past_markers(self, pending: _Pending) -> None:
        """Store the consumer's positions, not the last record's offset + 1: a position has
        also passed the transaction markers (and aborted records) behind the records read,
        so a sink that has read everything stands exactly at the log's end. When only
        markers were passed, the batch carries positions and no records."""
        assigned = [TopicPartition(topic, partition) for topic, partition in self._started_at]
        for tp in self._consumer.position(assigned) if assigned else []:
            key = (tp.topic, tp.partition)
            known = pending.next_offsets.get(key, self._started_at.get(key) or 0)
            if tp.offset > known:
                pending.next_offsets[key] = tp.offset

    def _write(self, pending: _Pending) -> None:
        started = time.monotonic()
        try:
            counts = self._target.write(
                pending.messages,
                next_offsets=pending.next_offsets,
                started_at={tp: self._started_at.get(tp) for tp in pending.next_offsets},
            )
        except Fenced as error:
            logger.warning("batch refused, another sink holds its partitions: %s", error)
            self._observer.retried("fenced")
            self._pending = None  # the partitions' new owner writes it; a rebalance is coming
            return
        except self._target.retriable as error:
            self._store_failed(pending, error)
            return
        if pending.failures:
            self._consumer.resume(self._consumer.assignment())
            logger.warning("the store is back: batch written after %d failures", pending.failures)
        self._started_at.update(pending.next_offsets)
        self._newest_written_ms.update(pending.newest_ms)
        self._consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in pending.next_offsets.items()],
            asynchronous=True,  # for the group's lag only: a failed commit changes nothing
        )
        self._observer.written(
            counts, pending.next_offsets, len(pending.messages), time.monotonic() - started
        )
        self._pending = None

    def _store_failed(self, pending: _Pending, error: Exception) -> None:
        """Keep the batch, fetch nothing more, and try again after a jittered backoff."""
        if pending.failures == 0:
            self._consumer.pause(self._consumer.assignment())
        pending.failures += 1
        delay_s = backoff_s(pending.failures)
        pending.retry_at_s = time.monotonic() + delay_s
        self._observer.retried("store")
        logger.warning(
            "writing a batch failed (%s); retry %d in %.1f s", error, pending.failures, delay_s
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned = [(tp.topic, tp.partition) for tp in partitions]
        stored = retry_until(
            lambda: self._target.positions(assigned),
            retriable=self._target.retriable,
            what="reading stored positions",
            timeout_s=ASSIGN_RETRY_MAX_S,
        )
        self._started_at = {p: stored.get(p) for p in assigned}
        self._pending = None
        consumer.assign(
            [TopicPartition(t, p, stored.get((t, p), OFFSET_BEGINNING)) for t, p in assigned]
        )

    def _on_revoke(self, consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self._pending = None  # not written: the next owner reads it from the stored positions
        self._started_at = {}
        consumer.unassign()

    def _report_lag(self) -> None:
        self._lag_reported_s = time.monotonic()
        now_ms = int(time.time() * 1000)
        for (topic, partition), position in self._started_at.items():
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=1.0, cached=True
                )
            except KafkaException:
                continue
            behind = max(high - (position or 0), 0)
            newest_ms = self._newest_written_ms.get((topic, partition))
            age_s = (now_ms - newest_ms) / 1000 if behind and newest_ms is not None else 0.0
            self._observer.lag(topic, partition, behind, max(age_s, 0.0))


def _add(pending: _Pending, message: Message) -> None:
    error = message.error()
    if error is not None:
        raise KafkaException(error)
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        return
    pending.messages.append(message)
    pending.next_offsets[(topic, partition)] = offset + 1
    pending.newest_ms[(topic, partition)] = max(message.timestamp()[1], 0)


def headers(message: Message) -> dict[str, bytes]:
    """A consumed record's headers (librdkafka gives a list of (name, bytes) pairs)."""
    found = message.headers() or []
    pairs = found.items() if isinstance(found, dict) else found
    return {name: value for name, value in pairs if isinstance(value, bytes)}


def backoff_s(failures: int) -> float:
    """Capped exponential backoff with full jitter after ``failures`` failures."""
    return random.uniform(0, min(RETRY_MAX_S, RETRY_INITIAL_S * 2**failures))


def retry_until(
    attempt: Callable[[], T],
    *,
    retriable: tuple[type[Exception], ...],
    what: str,
    timeout_s: float,
) -> T:
    """``attempt()`` until it returns, retrying ``retriable`` errors with backoff, bounded."""
    deadline = time.monotonic() + timeout_s
    failures = 0
    while True:
        try:
            return attempt()
        except retriable as error:
            failures += 1
            if time.monotonic() > deadline:
                raise InvariantViolation(f"{what}: the store failed for {timeout_s} s") from error
            delay_s = backoff_s(failures)
            logger.warning("%s failed (%s); retry %d in %.1f s", what, error, failures, delay_s)
            time.sleep(delay_s)
