"""Webhook tests' helpers: partners and endpoints in the registry, events on Kafka, and the
delivery service run in a thread of the test process."""

from __future__ import annotations

import contextlib
import datetime
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from confluent_kafka import Producer

from paystream.audit import db
from paystream.audit.migrate import migrate
from paystream.ledger import Event
from paystream.partners.registry import Endpoint, Partner, add
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, ensure_topics
from paystream.webhooks.service import WebhookService

FLUSH_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0


def partner_with_endpoint(dsn: str, partner_id: str, url: str, *, email: str = "") -> Endpoint:
    """An active partner (its contact ``email``) with one enabled endpoint to ``url``."""
    partner = Partner(
        partner_id=partner_id, name=f"Partner {partner_id}",
        contact_email=email or f"ops@{partner_id}.example", kafka_principal=f"User:{partner_id}",
        keycloak_client_id=f"partner-{partner_id}", status="active",
        created_at=datetime.datetime.now(datetime.UTC), secret_rotated_at=None,
    )  # fmt: skip
    with db.connect(dsn, autocommit=True) as conn:
        endpoint = add(conn, partner, webhook_url=url)
    if endpoint is None:
        raise AssertionError("no endpoint recorded")
    return endpoint


def another_endpoint(dsn: str, partner_id: str, url: str) -> Endpoint:
    """A second endpoint of an existing partner (``partner_with_endpoint`` made the first)."""
    with db.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT name, contact_email FROM partners WHERE partner_id = %s", (partner_id,)
        ).fetchone()
    if row is None:
        raise AssertionError(f"no partner {partner_id}")
    return partner_with_endpoint(dsn, partner_id, url, email=row[1])


def migrated(dsn: str) -> str:
    migrate(dsn)
    return dsn


def transfer_completed(partner_id: str, n: int, *, at_ms: int | None = None) -> Event:
    payment_id = f"pay-{uuid.uuid4().hex[:12]}-{n}"
    return Event(
        event_id=f"{payment_id}:completed", payment_id=payment_id, type="Completed",
        command_type="Transfer", partner_id=partner_id, account_id=f"acct-{n % 7}",
        issued_at_ms=at_ms if at_ms is not None else now_ms(), counterparty_account_id="acct-x",
        amount_minor=100 + n, currency="EUR",
    )  # fmt: skip


def now_ms() -> int:
    return int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)


def produce(settings: Settings, events: Sequence[Event]) -> None:
    """``events`` on the ``events`` topic, as the workers write them (Avro, keyed by payment)."""
    topics = Topics.from_settings(settings)
    ensure_topics(settings.kafka, topics)
    serde = AvroSerde(
        registry_from_url(settings.schema_registry_url, settings.data_dir),
        topics=topics.payloads(),
    )
    producer = Producer(settings.kafka.config() | {"acks": "all", "enable.idempotence": True})
    for event in events:
        producer.produce(topics.events, serde.encode_event(event), key=event.payment_id)
    if producer.flush(FLUSH_TIMEOUT_S) != 0:
        raise AssertionError("events not flushed")


def webhook_settings(settings: Settings, **update: Any) -> Settings:
    """The session's settings with topics of this test's own and a short retry schedule."""
    fields: dict[str, Any] = {
        "topic_prefix": f"{settings.topic_prefix}-wh{uuid.uuid4().hex[:8]}",
        "partitions": 2,
        "webhook_retry_delays_s": (0.2, 0.4, 0.8),
        "webhook_timeout_s": 2.0,
        "webhook_breaker_failures": 1_000,
    }
    return settings.model_copy(update=fields | update)


@contextlib.contextmanager
def delivering(settings: Settings, dsn: str, *, name: str = "wh-test") -> Iterator[WebhookService]:
    """``paystream webhooks`` as a thread of this process; stopped (and its error raised) on
    exit."""
    service = WebhookService(settings, dsn=dsn, name=name, concurrency_max=64)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=run, name="webhooks", daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop()
        thread.join(STOP_TIMEOUT_S)
    if thread.is_alive():
        raise AssertionError("the webhook service did not stop")
    if failure:
        raise failure[0]
