"""``paystream sink postgres``: the ledger, events and dead letters into Postgres, exactly once.

One consumer-group member (several copies share the group) on the batching sinks' loop
(:mod:`paystream.topology.batching`: bounded batches; on an assignment it seeks to the
positions stored in Postgres, Kafka's committed offsets play no part; Postgres down: the
batch is kept, the partitions paused, the write retried with capped, jittered backoff).
This module is the Postgres side: it reads ``ledger``, ``events``, ``dlq`` and the accounts
``directory`` read_committed, decodes a batch and writes it with its consumer positions in
one Postgres transaction (:mod:`paystream.audit.store`). A sink whose partitions moved to
another copy meanwhile is refused by the stored positions (``Fenced``) and drops its batch;
the other copy writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import psycopg
from confluent_kafka import Message

from paystream.agents.directory import classify
from paystream.audit import db, metrics, records, store
from paystream.audit.migrate import migrate
from paystream.audit.records import Origin
from paystream.audit.store import Batch, ChainHead
from paystream.ledger.errors import InvariantViolation
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.batching import (
    ASSIGN_RETRY_MAX_S,
    BatchingSink,
    Fenced,
    Limits,
    Observer,
    Position,
    headers,
    retry_until,
)
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, ensure_topics, postgres_sink_group

LIMITS: Final = Limits(records_max=5_000, window_s=0.2)
"""A batch is written as soon as a fetch comes back short, or it has ``records_max``
records, or it is ``window_s`` old. Behind, batches grow by themselves (more arrives while
one is written), and a bigger batch costs less per row."""

RETRIABLE: Final = (psycopg.OperationalError,)
"""Postgres unreachable or restarting, a deadlock or a serialization conflict (each a
TransactionRollback, itself an OperationalError): worth retrying."""

logger = logging.getLogger("paystream.sink")
Kind = Literal["ledger", "events", "dlq", "directory"]


class PostgresTarget:
    """The audit store as a batching sink's target."""

    retriable: tuple[type[Exception], ...] = RETRIABLE

    def __init__(
        self, dsn: str, *, consumer: str, kinds: Mapping[str, Kind], serde: AvroSerde
    ) -> None:
        self._dsn = dsn
        self._consumer = consumer
        self._kinds = kinds
        self._serde = serde
        self._conn: store.Connection | None = None
        self._heads: dict[str, ChainHead] = {}

    def positions(self, assigned: Sequence[Position]) -> Mapping[Position, int]:
        """The stored positions of ``assigned``, and the heads of their audit chains."""
        conn = self._connection()
        chains = [f"{self._kinds[t]}:{p}" for t, p in assigned if self._kinds[t] != "directory"]
        self._heads = store.chain_heads(conn, chains)
        return store.stored_positions(conn, self._consumer, assigned)

    def write(
        self,
        messages: Sequence[Message],
        *,
        next_offsets: Mapping[Position, int],
        started_at: Mapping[Position, int | None],
    ) -> Mapping[str, int]:
        batch = self._decode(messages)
        try:
            return store.write(
                self._connection(), batch, consumer=self._consumer, started_at=started_at,
                next_offsets=next_offsets, heads=self._heads,
            )  # fmt: skip
        except store.Fenced as error:
            raise Fenced(str(error)) from error
        except RETRIABLE:
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                self._conn = None
            raise
        except psycopg.Error as error:  # a constraint refused a row: a bug, never retried
            raise InvariantViolation(f"Postgres refused a batch: {error}") from error

    def _decode(self, messages: Sequence[Message]) -> Batch:
        batch = Batch()
        for message in messages:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue
            kind, value = self._kinds[topic], message.value()
            if kind == "ledger":
                entry = self._serde.decode_journal_entry(value or b"")
                batch.entries.append((entry, Origin("ledger", partition, offset)))
            elif kind == "events":
                event = self._serde.decode_event(value or b"")
                batch.events.append((event, Origin("events", partition, offset)))
            elif kind == "dlq":
                origin = Origin("dlq", partition, offset)
                row = records.dlq_row(headers(message), message.key(), value, origin)
                batch.dead_letters.append((row, origin))
            else:
                found = classify(message.key(), value)
                if not isinstance(found, str):  # tombstones and bad records: skipped, as the
                    batch.directory.append(found)  # worker skips them
        return batch

    def _connection(self) -> store.Connection:
        if self._conn is None or self._conn.closed:
            conn = db.connect(self._dsn, autocommit=True)
            conn.execute(f"SET ROLE {store.SINK_ROLE}")  # INSERT only on facts and the audit log
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class PostgresSink:
    def __init__(self, settings: Settings, *, dsn: str, name: str) -> None:
        self._dsn = dsn
        topics = Topics.from_settings(settings)
        kafka = settings.kafka
        ensure_topics(kafka, topics)
        serde = AvroSerde(
            registry_from_url(settings.schema_registry_url, settings.data_dir),
            topics=topics.payloads(),
        )
        kinds: dict[str, Kind] = {
            topics.ledger: "ledger", topics.events: "events", topics.dlq: "dlq",
            topics.directory: "directory",
        }  # fmt: skip
        group = postgres_sink_group(settings)
        self._target = PostgresTarget(dsn, consumer=group, kinds=kinds, serde=serde)
        self._loop = BatchingSink(
            kafka=kafka, group=group, name=name, topics=list(kinds), target=self._target,
            limits=LIMITS, observer=_observer(kinds),
        )  # fmt: skip

    def stop(self) -> None:
        """Finish the batch in hand (or give it up if Postgres is down), then leave the group."""
        self._loop.stop()

    def run(self) -> None:
        retry_until(
            lambda: migrate(self._dsn), retriable=RETRIABLE, what="migrating the audit store",
            timeout_s=ASSIGN_RETRY_MAX_S,
        )  # fmt: skip
        try:
            self._loop.run()
        finally:
            self._target.close()


def _observer(kinds: Mapping[str, Kind]) -> Observer:
    """The loop's reports as the sink's metrics (topics labelled by their kind)."""

    def written(
        counts: Mapping[str, int], offsets: Mapping[Position, int], records: int, seconds: float
    ) -> None:
        for (topic, partition), offset in offsets.items():
            if kinds[topic] == "ledger":
                metrics.SINK_LEDGER_POSITION.labels(partition=str(partition)).set(offset)
        for table, rows in counts.items():
            metrics.SINK_ROWS.labels(table=table).inc(rows)
        metrics.SINK_BATCH_SECONDS.observe(seconds)
        metrics.SINK_BATCH_RECORDS.observe(records)

    def retried(reason: str) -> None:
        metrics.SINK_RETRIES.labels(reason="postgres" if reason == "store" else reason).inc()

    def lag(topic: str, partition: int, records: int, seconds: float) -> None:
        labels = {"topic": kinds[topic], "partition": str(partition)}
        metrics.SINK_LAG_RECORDS.labels(**labels).set(records)
        metrics.SINK_LAG_SECONDS.labels(**labels).set(seconds)

    return Observer(written=written, retried=retried, lag=lag)
