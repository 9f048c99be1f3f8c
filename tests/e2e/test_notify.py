"""``paystream notify`` end to end: events on Kafka -> emails at a real SMTP server (aiosmtpd),
through the outbox in Postgres. The server is down for a while first (the issue's 30 s,
``PAYSTREAM_TEST_SMTP_DOWN_S``): every email arrives once it is back, none twice; then the
events are on the log twice and read again from the start: nothing is sent again."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from confluent_kafka import Producer

from paystream.audit.migrate import migrate
from paystream.ledger import Event, SendPayout, SettlePayout
from paystream.notify import contacts, smtp
from paystream.notify.sender import Policy
from paystream.notify.service import NotifyService
from paystream.services.process import wait_until
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, notify_group
from tests.support.ledger import (
    Cluster,
    deposit,
    fail_payout,
    open_account,
    rail,
    request_payout,
    transfer,
)
from tests.support.smtp import TestSmtpServer

SMTP_DOWN_S = float(os.environ.get("PAYSTREAM_TEST_SMTP_DOWN_S", "30"))
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(SMTP_DOWN_S + 150)]

POLICY = Policy(
    attempts_max=5, backoff_initial_s=0.1, backoff_max_s=1.0, claim_max=4, send_timeout_s=5.0,
    idle_s=0.1, connect_backoff_max_s=1.0, stats_every_s=0.2,
)  # fmt: skip
SETTLE_S = 60.0
FLUSH_S = 30.0
JOIN_S = 30.0
ADDRESSES = {"src": "payer@example.com", "dst": "payee@example.com"}
"""``quiet`` has no contact: it is emailed nothing."""


def ledger_events() -> list[Event]:
    """Through the real core: transfers src -> dst (with a reference) and src -> quiet, one
    reversed, a deposit into dst, a payout from src settled and one failed by the bank."""
    cluster = Cluster()
    cluster.apply([open_account(1, "src"), deposit(2, "src", 10_000)], partition=0)
    cluster.apply([open_account(3, "dst", partition=1), deposit(4, "dst", 999, partition=1),
                   open_account(5, "quiet", partition=1)], partition=1)  # fmt: skip
    cluster.saga(dataclasses.replace(transfer(6, "src", "dst", 250), reference="invoice 42"))
    cluster.saga(transfer(7, "src", "quiet", 300))
    cluster.saga(transfer(8, "src", "nobody", 400))
    settled, failed = request_payout(9, amount_minor=1_000), request_payout(10, amount_minor=20)
    cluster.apply([settled, failed])
    cluster.apply([rail(SendPayout, 11, settled), rail(SendPayout, 12, failed)])
    cluster.apply([rail(SettlePayout, 13, settled), fail_payout(14, failed)])
    return cluster.events()


def expected(events: list[Event]) -> dict[str, tuple[str, str]]:
    """notification id -> (recipient, subject), written out per rule."""
    completed = [e for e in events if e.type == "Completed"]
    [paid] = [e for e in completed if e.counterparty_account_id == "dst"]
    [to_quiet] = [e for e in completed if e.counterparty_account_id == "quiet"]
    deposits = {e.account_id: e for e in completed if e.command_type == "Deposit"}
    [settled] = [e for e in events if e.type == "Settled"]
    [failed] = [e for e in events if e.type == "Failed"]
    return {
        f"{paid.event_id}/payer": ("payer@example.com", "You sent 2.50 EUR to dst"),
        f"{paid.event_id}/payee": ("payee@example.com", "You received 2.50 EUR from src"),
        f"{to_quiet.event_id}/payer": ("payer@example.com", "You sent 3.00 EUR to quiet"),
        f"{deposits['src'].event_id}/holder": (
            "payer@example.com", "100.00 EUR deposited into src"),
        f"{deposits['dst'].event_id}/holder": ("payee@example.com", "9.99 EUR deposited into dst"),
        f"{settled.event_id}/holder": (
            "payer@example.com", "Your payout of 10.00 EUR to Ada Lovelace was paid"),
        f"{failed.event_id}/holder": (
            "payer@example.com", "Your payout of 0.20 EUR to Ada Lovelace failed"),
    }  # fmt: skip


def publish(settings: Settings, topics: Topics, events: list[Event]) -> None:
    serde = AvroSerde(registry_from_url(settings.schema_registry_url, settings.data_dir),
                      topics=topics.payloads())  # fmt: skip
    producer = Producer(settings.kafka.config() | {"acks": "all", "enable.idempotence": True})
    for event in events:
        producer.produce(topics.events, key=event.payment_id.encode(),
                         value=serde.encode_event(event))  # fmt: skip
    assert producer.flush(FLUSH_S) == 0, "events not published"


@contextmanager
def running(settings: Settings, dsn: str, mail: TestSmtpServer) -> Iterator[NotifyService]:
    service = NotifyService(settings, dsn=dsn, name="notify-test", server=mail.server,
                            policy=POLICY)  # fmt: skip
    failures: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop()
        thread.join(JOIN_S)
        assert not thread.is_alive(), "the service did not stop"
        assert not failures, failures


def outbox(dsn: str) -> dict[str, tuple[str, int]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT notification_id, status, attempts FROM notifications")
        return {nid: (status, attempts) for nid, status, attempts in rows.fetchall()}


def stored_positions_sum(dsn: str, group: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM sink_offsets WHERE consumer = %s", (group,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_events_become_emails_through_an_outage_and_a_replay_sends_nothing_twice(
    settings: Settings, audit_dsn: str
) -> None:
    started_s = time.monotonic()
    base = settings.model_copy(update={"topic_prefix": f"notify-{uuid.uuid4().hex[:8]}",
                                       "postgres_dsn": audit_dsn})  # fmt: skip
    topics, group = Topics.from_settings(base), notify_group(base)
    migrate(audit_dsn)
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        for account_id, email in ADDRESSES.items():
            contacts.put_contact(conn, account_id=account_id, partner_id="p1", email=email)
    events = ledger_events()
    wanted = expected(events)
    with TestSmtpServer() as mail, running(base, audit_dsn, mail):  # the server is down
        publish(base, topics, events)
        assert wait_until(lambda: len(outbox(audit_dsn)) == len(wanted), timeout_s=SETTLE_S)
        assert set(outbox(audit_dsn)) == set(wanted)
        time.sleep(max(0.0, started_s + SMTP_DOWN_S - time.monotonic()))
        assert set(outbox(audit_dsn).values()) == {("pending", 0)}  # waited, no attempt spent
        assert mail.recorder.messages() == []
        mail.start()
        assert wait_until(
            lambda: set(outbox(audit_dsn).values()) == {("sent", 1)}, timeout_s=SETTLE_S
        ), outbox(audit_dsn)
        received = mail.recorder.messages()
    assert Counter(m.message_id for m in received) == Counter(
        {smtp.message_id(nid, base.smtp_from): 1 for nid in wanted}
    )
    for message in received:
        assert (message.recipient, message.subject) == wanted[message.notification_id]
    [paid] = [m for m in received if m.notification_id.endswith("/payee")]
    payment_id = paid.notification_id.split(":")[0]
    for needle in ("Amount:      2.50 EUR", "From:        src", f"Transfer id: {payment_id}",
                   "Reference:   invoice 42"):  # fmt: skip
        assert needle in paid.text, paid.text
    assert "<td>invoice 42</td>" in paid.html

    # The same events on the log again, and every stored position forgotten: the service
    # reads all of it again from the start and sends nothing twice.
    publish(base, topics, events)
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM sink_offsets WHERE consumer = %s", (group,))
    with TestSmtpServer() as again, running(base, audit_dsn, again):
        again.start()
        caught_up = wait_until(
            lambda: stored_positions_sum(audit_dsn, group) == 2 * len(events), timeout_s=SETTLE_S
        )
        assert caught_up, stored_positions_sum(audit_dsn, group)
        time.sleep(10 * POLICY.idle_s)  # a few sender rounds
        assert again.recorder.messages() == []
    assert set(outbox(audit_dsn).values()) == {("sent", 1)} and len(outbox(audit_dsn)) == 7
