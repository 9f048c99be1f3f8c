"""Events into deliveries: the webhook service's batching sink on ``events``.

On the house loop (:mod:`paystream.topology.batching`): a batch of events read
read_committed becomes its delivery rows, written with the consumer positions in one
Postgres transaction (:func:`paystream.webhooks.store.ingest`), so a delivery exists
exactly when its event's position has moved past it. A copy whose partitions moved to
another meanwhile is refused by the stored positions (``Fenced``) and drops its batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from paystream.audit import db
from paystream.audit.event_target import EventTarget
from paystream.ledger import Event
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.batching import BatchingSink, Limits, Observer, Position
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, ensure_topics, webhooks_group
from paystream.webhooks import metrics, store

__all__ = ["LIMITS", "WebhookTarget", "ingestion"]

LIMITS: Final = Limits(records_max=2_000, window_s=0.1)
"""A batch is written as soon as a fetch comes back short (so an event waits at most about
the loop's 50 ms poll before its deliveries exist), or at 2,000 events, or 100 ms old."""


class WebhookTarget(EventTarget):
    """The deliveries table as a batching sink's target."""

    what = "a batch of deliveries"

    def store(
        self,
        conn: db.Connection,
        events: list[Event],
        *,
        next_offsets: Mapping[Position, int],
        started_at: Mapping[Position, int | None],
    ) -> dict[str, int]:
        created = store.ingest(
            conn, events, consumer=self.consumer, started_at=started_at,
            next_offsets=next_offsets,
        )  # fmt: skip
        return {"webhook_deliveries": created}


def ingestion(settings: Settings, *, dsn: str, name: str) -> tuple[BatchingSink, WebhookTarget]:
    """The sink loop of one copy of the service (and its target, to close after the loop)."""
    topics = Topics.from_settings(settings)
    kafka = settings.kafka
    ensure_topics(kafka, topics)
    serde = AvroSerde(
        registry_from_url(settings.schema_registry_url, settings.data_dir),
        topics=topics.payloads(),
    )
    group = webhooks_group(settings)
    target = WebhookTarget(dsn, consumer=group, serde=serde)
    loop = BatchingSink(
        kafka=kafka, group=group, name=name, topics=[topics.events], target=target,
        limits=LIMITS, observer=_observer(),
    )  # fmt: skip
    return loop, target


def _observer() -> Observer:
    def written(
        counts: Mapping[str, int], _offsets: Mapping[Position, int], _records: int, _s: float
    ) -> None:
        metrics.INGESTED.inc(counts.get("webhook_deliveries", 0))

    def retried(reason: str) -> None:
        metrics.RETRIES.labels(reason="postgres" if reason == "store" else reason).inc()

    def lag(_topic: str, partition: int, records: int, _seconds: float) -> None:
        metrics.LAG_RECORDS.labels(partition=str(partition)).set(records)

    return Observer(written=written, retried=retried, lag=lag)
