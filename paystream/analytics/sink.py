"""The analytics sink: ``ledger``, ``events``, ``dlq`` and the workers' balances changelog
into ClickHouse, exactly once in effect.

The loop is the batching sinks' (:mod:`paystream.topology.batching`); this module is the
ClickHouse side: decode a batch into facts and tallies, insert the facts, then the tallies
-- the positions after the batch, with its counts and sums -- in one insert
(:mod:`paystream.analytics.store`). A process killed between the two reads the batch again
from the old positions and inserts the same facts, which the tables collapse by id, and its
tallies once.

With the embedded engine one process owns the data directory, and the page's queries run
in the same process: every use of the client holds ``lock``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Final

from clickhouse_connect.driver.exceptions import OperationalError
from confluent_kafka import Message

from paystream.analytics import metrics, store
from paystream.analytics.schema import Client
from paystream.analytics.tallies import Batch, Place
from paystream.settings import Settings
from paystream.tables import codecs
from paystream.topology.avro import AvroSerde
from paystream.topology.batching import BatchingSink, Limits, Observer, Position, headers
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, analytics_group, ensure_topics

LIMITS: Final = Limits(records_max=20_000, window_s=0.5)
"""ClickHouse likes few big inserts (a part per insert): bigger batches than Postgres'."""


class ClickHouseTarget:
    """The analytics store as a batching sink's target."""

    retriable: tuple[type[Exception], ...] = (OperationalError,)

    def __init__(
        self,
        client: Client,
        database: str,
        *,
        topics: Topics,
        serde: AvroSerde,
        lock: threading.Lock,
    ) -> None:
        self._client = client
        self._database = database
        self._topics = topics
        self._serde = serde
        self._lock = lock

    def positions(self, assigned: Sequence[Position]) -> Mapping[Position, int]:
        with self._lock:
            stored = store.stored_positions(self._client, self._database)
        return {position: stored[position] for position in assigned if position in stored}

    def write(
        self,
        messages: Sequence[Message],
        *,
        next_offsets: Mapping[Position, int],
        started_at: Mapping[Position, int | None],
    ) -> Mapping[str, int]:
        """Facts of the batch, then its tallies (its positions). ``started_at`` is where each
        tally's range begins. Nothing is fenced: a second copy can only run against a
        server, where both write the same facts (collapsed), and the queries check that the
        tallies' ranges do not overlap before they sum them."""
        batch = Batch(next_offsets=next_offsets, started_at=started_at)
        for message in messages:
            self._add(batch, message)
        tallies = batch.tallies()
        with self._lock:
            store.write(self._client, self._database, rows=batch.facts, tallies=tallies)
        return {
            **{table: len(found) for table, found in batch.facts.items()},
            "tallies": len(tallies),
        }

    def _add(self, batch: Batch, message: Message) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return
        value = message.value()
        at = Place(topic, partition, offset, max(message.timestamp()[1], 0))
        if topic == self._topics.events:
            batch.event(self._serde.decode_event(value or b""), at)
        elif topic == self._topics.ledger:
            batch.entry(self._serde.decode_journal_entry(value or b""), at)
        elif topic == self._topics.dlq:
            batch.dead_letter(headers(message), value, at)
        elif topic == self._topics.balances_changelog and value is not None:
            batch.account(codecs.decode_account(value), at)
        else:
            batch.skipped(at)


def observer(topic_kinds: Mapping[str, str]) -> Observer:
    """The sink's reports as this process's metrics (topics labelled by their kind)."""

    def written(
        counts: Mapping[str, int], _offsets: Mapping[Position, int], records: int, seconds: float
    ) -> None:
        for table, rows in counts.items():
            metrics.ROWS.labels(table=table).inc(rows)
        metrics.BATCH_SECONDS.observe(seconds)
        metrics.BATCH_RECORDS.observe(records)

    def lag(topic: str, partition: int, records: int, seconds: float) -> None:
        labels = {"topic": topic_kinds.get(topic, topic), "partition": str(partition)}
        metrics.LAG_RECORDS.labels(**labels).set(records)
        metrics.LAG_SECONDS.labels(**labels).set(seconds)

    return Observer(
        written=written, retried=lambda reason: metrics.RETRIES.labels(reason=reason).inc(),
        lag=lag,
    )  # fmt: skip


def build(
    settings: Settings, name: str, *, client: Client, database: str, lock: threading.Lock
) -> BatchingSink:
    """The analytics sink of ``settings``' topics into ``database``: a member ``name`` of the
    analytics group, every ClickHouse call under ``lock``."""
    topics = Topics.from_settings(settings)
    kafka = settings.kafka
    ensure_topics(kafka, topics)
    serde = AvroSerde(
        registry_from_url(settings.schema_registry_url, settings.data_dir),
        topics=topics.payloads(),
    )
    group = analytics_group(settings)
    target = ClickHouseTarget(client, database, topics=topics, serde=serde, lock=lock)
    kinds = {
        topics.events: "events", topics.ledger: "ledger", topics.dlq: "dlq",
        topics.balances_changelog: "balances",
    }  # fmt: skip
    return BatchingSink(
        kafka=kafka, group=group, name=name, topics=list(kinds), target=target, limits=LIMITS,
        observer=observer(kinds),
    )  # fmt: skip
