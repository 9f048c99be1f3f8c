"""``paystream sink postgres``: the ledger, events and dead letters into Postgres, exactly once.

One consumer-group member (several copies share the group). It reads
``ledger``, ``events``, ``dlq`` and the accounts ``directory`` read_committed,
and writes each batch with its consumer positions in one Postgres
transaction (:mod:`paystream.audit.store`). On an assignment it seeks to the
positions stored in Postgres; Kafka's committed offsets play no part.

Postgres down or failing: the batch in hand is kept (it is bounded), every
assigned partition is paused so nothing more is fetched, the member keeps
polling (it stays in its group), and the write is retried with capped
exponential backoff and full jitter until it lands. A sink whose partitions
moved to another copy meanwhile is refused by the stored positions and drops
its batch; the other copy writes it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from paystream.agents.directory import classify
from paystream.audit import db, metrics, records, store
from paystream.audit.migrate import migrate
from paystream.audit.records import Origin
from paystream.audit.store import Batch, ChainHead, Fenced, Position
from paystream.ledger.errors import InvariantViolation
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, ensure_topics, postgres_sink_group

RECORDS_PER_BATCH_MAX = 5_000
BATCH_WINDOW_S = 0.2
CONSUME_TIMEOUT_S = 0.05
"""A batch is written as soon as a fetch comes back short (the sink has read all there is
for now: a record waits at most CONSUME_TIMEOUT_S to be picked up), or it has
RECORDS_PER_BATCH_MAX records, or it is BATCH_WINDOW_S old. Behind, batches grow by
themselves (more arrives while one is written), and a bigger batch costs less per row."""
RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 10.0
"""Backoff of a failed write: doubled per failure, capped, full jitter."""
ASSIGN_RETRY_MAX_S = 300.0
"""How long an assignment waits for Postgres to give its stored positions."""
LAG_REPORT_S = 2.0
POLL_INTERVAL_MAX_MS = 300_000

RETRIABLE = psycopg.OperationalError
"""Postgres unreachable or restarting, a deadlock or a serialization conflict (each a
TransactionRollback, itself an OperationalError): worth retrying."""

logger = logging.getLogger("paystream.sink")
Kind = Literal["ledger", "events", "dlq", "directory"]
T = TypeVar("T")


@dataclass(slots=True)
class _Pending:
    """A batch read and not yet written."""

    batch: Batch
    next_offsets: dict[Position, int]
    newest_ms: dict[Position, int]
    failures: int = 0
    retry_at_s: float = 0.0


@dataclass(slots=True)
class _Assigned:
    """What this member holds: where each partition's stored position stands, chain heads."""

    started_at: dict[Position, int | None] = field(default_factory=dict)
    heads: dict[str, ChainHead] = field(default_factory=dict)


class PostgresSink:
    def __init__(self, settings: Settings, *, dsn: str, name: str) -> None:
        self._dsn = dsn
        self._topics = Topics.from_settings(settings)
        ensure_topics(settings.bootstrap, self._topics)
        self._serde = AvroSerde(
            registry_from_url(settings.schema_registry_url, settings.data_dir),
            topics=self._topics.payloads(),
        )
        self._kinds: dict[str, Kind] = {
            self._topics.ledger: "ledger",
            self._topics.events: "events",
            self._topics.dlq: "dlq",
            self._topics.directory: "directory",
        }
        self._group = postgres_sink_group(settings)
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap,
                "group.id": self._group,
                "client.id": f"{self._group}-{name}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,  # positions live in Postgres
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "max.poll.interval.ms": POLL_INTERVAL_MAX_MS,
            }
        )
        self._conn: store.Connection | None = None
        self._assigned = _Assigned()
        self._pending: _Pending | None = None
        self._stopping = False
        self._lag_reported_s = 0.0
        self._newest_written_ms: dict[Position, int] = {}
        """Per partition: the log time of the newest record written (for the lag in seconds)."""

    def stop(self) -> None:
        """Finish the batch in hand (or give it up if Postgres is down), then leave the group."""
        self._stopping = True

    def run(self) -> None:
        _retry_until(
            lambda: migrate(self._dsn),
            what="migrating the audit store",
            timeout_s=ASSIGN_RETRY_MAX_S,
        )
        self._consumer.subscribe(
            list(self._kinds),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        try:
            while not self._stopping:
                self._step()
        finally:
            self._consumer.close()
            if self._conn is not None:
                self._conn.close()

    def _step(self) -> None:
        if self._pending is None:
            self._pending = self._read()
        elif time.monotonic() < self._pending.retry_at_s:
            self._consumer.consume(1, CONSUME_TIMEOUT_S)  # paused: keeps the membership alive
        if self._pending is not None and time.monotonic() >= self._pending.retry_at_s:
            self._write(self._pending)
        if time.monotonic() - self._lag_reported_s > LAG_REPORT_S:
            self._report_lag()

    # --- reading ----------------------------------------------------------------------

    def _read(self) -> _Pending | None:
        pending = _Pending(Batch(), {}, {})
        deadline = time.monotonic() + BATCH_WINDOW_S
        while pending.batch.size < RECORDS_PER_BATCH_MAX and time.monotonic() < deadline:
            wanted = RECORDS_PER_BATCH_MAX - pending.batch.size
            messages = self._consumer.consume(wanted, CONSUME_TIMEOUT_S)
            for message in messages:
                self._add(pending, message)
            if len(messages) < wanted and pending.next_offsets:
                break  # caught up: write now
            if not self._assigned.started_at:
                break
        return pending if pending.next_offsets else None

    def _add(self, pending: _Pending, message: Message) -> None:
        error = message.error()
        if error is not None:
            raise KafkaException(error)
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return
        kind = self._kinds[topic]
        value = message.value()
        if kind == "ledger":
            entry = self._serde.decode_journal_entry(value or b"")
            pending.batch.entries.append((entry, Origin("ledger", partition, offset)))
        elif kind == "events":
            event = self._serde.decode_event(value or b"")
            pending.batch.events.append((event, Origin("events", partition, offset)))
        elif kind == "dlq":
            headers = _headers(message)
            origin = Origin("dlq", partition, offset)
            pending.batch.dead_letters.append(
                (records.dlq_row(headers, message.key(), value, origin), origin)
            )
        else:
            found = classify(message.key(), value)
            if not isinstance(found, str):  # tombstones and bad records: the worker skips them too
                pending.batch.directory.append(found)
        pending.next_offsets[(topic, partition)] = offset + 1
        pending.newest_ms[(topic, partition)] = max(message.timestamp()[1], 0)

    # --- writing ----------------------------------------------------------------------

    def _write(self, pending: _Pending) -> None:
        started = time.monotonic()
        try:
            counts = store.write(
                self._connection(),
                pending.batch,
                consumer=self._group,
                started_at={tp: self._assigned.started_at.get(tp) for tp in pending.next_offsets},
                next_offsets=pending.next_offsets,
                heads=self._assigned.heads,
            )
        except Fenced as error:
            logger.warning("batch refused, another sink holds its partitions: %s", error)
            metrics.SINK_RETRIES.labels(reason="fenced").inc()
            self._pending = None  # the partitions' new owner writes it; a rebalance is coming
            return
        except RETRIABLE as error:
            self._postgres_failed(pending, error)
            return
        except psycopg.Error as error:  # a constraint refused a row: a bug, never retried
            raise InvariantViolation(f"Postgres refused a batch: {error}") from error
        self._written(pending, counts, time.monotonic() - started)

    def _written(self, pending: _Pending, counts: dict[str, int], seconds: float) -> None:
        if pending.failures:
            self._consumer.resume(self._consumer.assignment())
            logger.warning("Postgres is back: batch written after %d failures", pending.failures)
        for position, offset in pending.next_offsets.items():
            self._assigned.started_at[position] = offset
            if self._kinds[position[0]] == "ledger":
                metrics.SINK_LEDGER_POSITION.labels(partition=str(position[1])).set(offset)
        for table, rows in counts.items():
            metrics.SINK_ROWS.labels(table=table).inc(rows)
        metrics.SINK_BATCH_SECONDS.observe(seconds)
        metrics.SINK_BATCH_RECORDS.observe(pending.batch.size)
        self._newest_written_ms.update(pending.newest_ms)
        self._pending = None

    def _postgres_failed(self, pending: _Pending, error: psycopg.Error) -> None:
        """Keep the batch, fetch nothing more, and try again after a jittered backoff."""
        if pending.failures == 0:
            self._consumer.pause(self._consumer.assignment())
        pending.failures += 1
        delay_s = random.uniform(0, min(RETRY_MAX_S, RETRY_INITIAL_S * 2**pending.failures))
        pending.retry_at_s = time.monotonic() + delay_s
        metrics.SINK_RETRIES.labels(reason="postgres").inc()
        logger.warning(
            "writing to Postgres failed (%s); retry %d in %.1f s", error, pending.failures, delay_s
        )
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None

    def _connection(self) -> store.Connection:
        if self._conn is None or self._conn.closed:
            conn = db.connect(self._dsn, autocommit=True)
            conn.execute(f"SET ROLE {store.SINK_ROLE}")  # INSERT only on facts and the audit log
            self._conn = conn
        return self._conn

    # --- assignment -------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        positions = [(tp.topic, tp.partition) for tp in partitions]
        stored, heads = _retry_until(
            lambda: self._load(positions),
            what="reading stored positions",
            timeout_s=ASSIGN_RETRY_MAX_S,
        )
        self._assigned = _Assigned(started_at={p: stored.get(p) for p in positions}, heads=heads)
        self._pending = None
        consumer.assign(
            [TopicPartition(t, p, stored.get((t, p), OFFSET_BEGINNING)) for t, p in positions]
        )

    def _load(self, positions: list[Position]) -> tuple[dict[Position, int], dict[str, ChainHead]]:
        conn = self._connection()
        chains = [f"{self._kinds[t]}:{p}" for t, p in positions if self._kinds[t] != "directory"]
        return store.stored_positions(conn, self._group, positions), store.chain_heads(conn, chains)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._pending = (
            None  # not written: the partitions' next owner reads it from Postgres' positions
        )
        self._assigned = _Assigned()
        consumer.unassign()

    def _report_lag(self) -> None:
        self._lag_reported_s = time.monotonic()
        now_ms = int(time.time() * 1000)
        newest = self._newest_written_ms
        for (topic, partition), position in self._assigned.started_at.items():
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=1.0, cached=True
                )
            except KafkaException:
                continue
            lag = max(high - (position or 0), 0)
            labels = {"topic": self._kinds[topic], "partition": str(partition)}
            metrics.SINK_LAG_RECORDS.labels(**labels).set(lag)
            age_s = (
                (now_ms - newest[(topic, partition)]) / 1000
                if lag and (topic, partition) in newest
                else 0.0
            )
            metrics.SINK_LAG_SECONDS.labels(**labels).set(max(age_s, 0.0))


def _headers(message: Message) -> dict[str, bytes]:
    """A consumed record's headers (librdkafka gives a list of (name, bytes) pairs)."""
    found = message.headers() or []
    pairs = found.items() if isinstance(found, dict) else found
    return {name: value for name, value in pairs if isinstance(value, bytes)}


def _retry_until(attempt: Callable[[], T], *, what: str, timeout_s: float) -> T:
    """``attempt()`` until it returns, retrying Postgres errors with capped, jittered backoff."""
    deadline = time.monotonic() + timeout_s
    failures = 0
    while True:
        try:
            return attempt()
        except psycopg.OperationalError as error:
            failures += 1
            if time.monotonic() > deadline:
                raise InvariantViolation(
                    f"{what}: Postgres unreachable for {timeout_s} s"
                ) from error
            delay_s = random.uniform(0, min(RETRY_MAX_S, RETRY_INITIAL_S * 2**failures))
            logger.warning("%s failed (%s); retry %d in %.1f s", what, error, failures, delay_s)
            metrics.SINK_RETRIES.labels(reason="postgres").inc()
            time.sleep(delay_s)
