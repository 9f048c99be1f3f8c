"""The email outbox and its sender on real Postgres and a real SMTP server (aiosmtpd): sent
once each, an outage costs waiting, refusals end in the DLQ, and the at-least-once window."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from prometheus_client import REGISTRY

from paystream.audit.migrate import migrate
from paystream.notify import sender as sender_module
from paystream.notify import smtp, templates
from paystream.notify.outbox import enqueue
from paystream.notify.sender import Policy, Sender, redrive
from paystream.services.process import wait_until
from tests.support.smtp import TestSmtpServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAST = Policy(
    attempts_max=3, backoff_initial_s=0.05, backoff_max_s=0.2, claim_max=5, send_timeout_s=5.0,
    idle_s=0.05, connect_backoff_max_s=0.2, stats_every_s=0.05,
)  # fmt: skip
FROM = "paystream <notifications@pay.example>"
SETTLE_S = 30.0
"""How long a test waits for the sender to reach what it asserts."""
JOIN_S = 15.0


@pytest.fixture
def dsn(audit_dsn: str) -> str:
    migrate(audit_dsn)
    return audit_dsn


@pytest.fixture
def mail() -> Iterator[TestSmtpServer]:
    with TestSmtpServer() as server:
        yield server


def context(n: int) -> dict[str, object]:
    return {
        "event_id": f"pay-{n}:completed", "event_type": "Completed", "payment_id": f"pay-{n}",
        "partner_id": "p1", "account_id": f"acc-{n}", "counterparty_account_id": "acc-shop",
        "amount_minor": 100 + n, "currency": "EUR", "reference": None, "issued_at_ms": 0,
    }  # fmt: skip


def enqueue_many(dsn: str, count: int) -> list[str]:
    ids = [f"pay-{n}:completed/payer" for n in range(count)]
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        for n, notification_id in enumerate(ids):
            enqueue(conn, notification_id=notification_id, template="transfer_sent",
                    recipient=f"holder{n}@example.com", context=context(n))  # fmt: skip
    return ids


def statuses(dsn: str) -> dict[str, tuple[str, int, str | None]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute(
            "SELECT notification_id, status, attempts, last_error FROM notifications"
        ).fetchall()
    return {nid: (status, attempts, error) for nid, status, attempts, error in found}


def all_have(dsn: str, status: str, count: int) -> bool:
    found = statuses(dsn)
    return len(found) == count and all(s == status for s, _, _ in found.values())


@contextmanager
def senders(dsn: str, mail: TestSmtpServer, *, copies: int = 1) -> Iterator[list[Sender]]:
    running = [Sender(dsn, server=mail.server, sender=FROM, policy=FAST) for _ in range(copies)]
    threads = [threading.Thread(target=s.run, daemon=True) for s in running]
    for thread in threads:
        thread.start()
    try:
        yield running
    finally:
        for each in running:
            each.stop()
        for thread in threads:
            thread.join(JOIN_S)
        assert not any(t.is_alive() for t in threads), "a sender did not stop"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_enqueue_is_idempotent_in_the_callers_transaction_and_checks_its_input(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            assert enqueue(conn, notification_id="n-1", template="transfer_sent",
                           recipient="a@example.com", context=context(1))  # fmt: skip
            assert not enqueue(conn, notification_id="n-1", template="transfer_sent",
                               recipient="b@example.com", context=context(2))  # fmt: skip
        with pytest.raises(RuntimeError), conn.transaction():
            enqueue(conn, notification_id="n-2", template="transfer_sent",
                    recipient="a@example.com", context=context(2))  # fmt: skip
            raise RuntimeError("the caller's transaction fails: the email goes with it")
        with pytest.raises(templates.TemplateError, match="no email template"):
            enqueue(conn, notification_id="n-3", template="nope", recipient="a@example.com",
                    context={})  # fmt: skip
        with pytest.raises(templates.TemplateError, match="needs context keys"):
            enqueue(conn, notification_id="n-3", template="webhook_exhausted",
                    recipient="a@example.com", context={"partner_id": "p1"})  # fmt: skip
        with pytest.raises(ValueError, match="not an email address"):
            enqueue(conn, notification_id="n-3", template="transfer_sent", recipient="nobody",
                    context=context(3))  # fmt: skip
    assert statuses(dsn) == {"n-1": ("pending", 0, None)}


def test_two_senders_send_each_email_once_with_its_content(dsn: str, mail: TestSmtpServer) -> None:
    ids = enqueue_many(dsn, 40)
    mail.start()
    with senders(dsn, mail, copies=2):
        assert wait_until(lambda: all_have(dsn, "sent", 40), timeout_s=SETTLE_S), statuses(dsn)
    received = mail.recorder.messages()
    assert Counter(m.notification_id for m in received) == Counter(ids)
    assert len({m.message_id for m in received}) == 40
    [seventh] = [m for m in received if m.notification_id == ids[7]]
    assert seventh.recipient == "holder7@example.com" and seventh.sender == FROM
    assert seventh.subject == "You sent 1.07 EUR to acc-shop"
    assert "Transfer id: pay-7\n" in seventh.text and "<td>1.07 EUR</td>" in seventh.html
    assert seventh.message_id == smtp.message_id(ids[7], FROM)
    assert {a for _, a, _ in statuses(dsn).values()} == {1}


def test_an_smtp_server_that_is_down_costs_waiting_not_attempts(
    dsn: str, mail: TestSmtpServer
) -> None:
    ids = enqueue_many(dsn, 10)
    connects_before = metric("paystream_notify_send_failures_total", reason="connect")
    with senders(dsn, mail):
        assert wait_until(
            lambda: (
                metric("paystream_notify_send_failures_total", reason="connect")
                >= connects_before + 3
            ),
            timeout_s=SETTLE_S,
        )
        assert statuses(dsn) == {nid: ("pending", 0, None) for nid in ids}
        assert metric("paystream_notify_queue_depth") == 10
        mail.start()
        assert wait_until(lambda: all_have(dsn, "sent", 10), timeout_s=SETTLE_S), statuses(dsn)
    assert sorted(m.notification_id for m in mail.recorder.messages()) == sorted(ids)


def test_a_server_that_goes_down_mid_stream_loses_nothing_and_doubles_nothing(
    dsn: str, mail: TestSmtpServer
) -> None:
    """The server stops while a claimed batch is being sent: the email in hand fails (an
    attempt, retried later), the rest of the batch is given back, nothing is lost."""
    ids = enqueue_many(dsn, 30)
    mail.recorder.delay_s = 0.02
    mail.start()
    with senders(dsn, mail):
        assert wait_until(lambda: len(mail.recorder.messages()) >= 7, timeout_s=SETTLE_S)
        mail.stop()
        assert wait_until(
            lambda: any(s == "pending" and a == 0 for s, a, _ in statuses(dsn).values()),
            timeout_s=SETTLE_S,
        )
        time.sleep(0.5)
        assert len(mail.recorder.messages()) < 30
        mail.start()
        assert wait_until(lambda: all_have(dsn, "sent", 30), timeout_s=SETTLE_S), statuses(dsn)
    received = mail.recorder.messages()
    assert Counter(m.notification_id for m in received) == Counter(ids)
    assert max(a for _, a, _ in statuses(dsn).values()) <= 2


def test_a_server_that_refuses_for_now_fills_the_dlq_after_the_attempts_bound(
    dsn: str, mail: TestSmtpServer
) -> None:
    ids = enqueue_many(dsn, 4)
    mail.recorder.refuse_data = "451 4.3.0 try again later"
    mail.start()
    with senders(dsn, mail):
        assert wait_until(lambda: all_have(dsn, "dead", 4), timeout_s=SETTLE_S), statuses(dsn)
        assert wait_until(lambda: metric("paystream_notify_dlq_depth") == 4, timeout_s=SETTLE_S)
        assert metric("paystream_notify_queue_depth") == 0
    found = statuses(dsn)
    assert {a for _, a, _ in found.values()} == {FAST.attempts_max}
    assert all("451" in (error or "") for _, _, error in found.values())
    assert mail.recorder.messages() == []
    mail.recorder.refuse_data = None
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert redrive(conn) == 4
    with senders(dsn, mail):
        assert wait_until(lambda: all_have(dsn, "sent", 4), timeout_s=SETTLE_S), statuses(dsn)
        assert wait_until(lambda: metric("paystream_notify_dlq_depth") == 0, timeout_s=SETTLE_S)
    assert sorted(m.notification_id for m in mail.recorder.messages()) == sorted(ids)


def test_a_refused_recipient_or_a_broken_template_is_dead_at_once_the_rest_flow(
    dsn: str, mail: TestSmtpServer
) -> None:
    ids = enqueue_many(dsn, 3)
    with psycopg.connect(dsn, autocommit=True) as owner:  # as a template change would leave it
        owner.execute(
            "INSERT INTO notifications (notification_id, template, recipient, context)"
            " VALUES ('broken', 'transfer_sent', 'x@example.com', '{\"amount_minor\": 1}')"
        )
    mail.start()
    with senders(dsn, mail):
        assert wait_until(lambda: len(mail.recorder.messages()) == 3, timeout_s=SETTLE_S)
        assert wait_until(lambda: statuses(dsn)["broken"][0] == "dead", timeout_s=SETTLE_S)
    assert "needs context keys" in (statuses(dsn)["broken"][2] or "")
    mail.recorder.refuse_rcpt = "550 5.1.1 no such mailbox"
    [refused] = enqueue_many(dsn, 4)[3:]
    with senders(dsn, mail):
        assert wait_until(lambda: statuses(dsn)[refused][0] == "dead", timeout_s=SETTLE_S)
    assert statuses(dsn)[refused][1] == 1 and "550" in (statuses(dsn)[refused][2] or "")
    assert sorted(m.notification_id for m in mail.recorder.messages()) == sorted(ids)


def test_a_crash_after_the_server_accepted_resends_with_the_same_message_id(
    dsn: str, mail: TestSmtpServer
) -> None:
    """The at-least-once window: the server took the email, the sender died before it
    recorded ``sent``. When the lease ends the email goes again, recognisably the same."""
    [nid] = enqueue_many(dsn, 1)
    mail.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        [claimed] = sender_module._claim(conn, FAST)
        session = smtp.Session(mail.server, timeout_s=5.0)
        session.open()
        rendered = templates.render(claimed.template, claimed.context)
        session.send(smtp.message(rendered, notification_id=nid, sender=FROM,
                                  recipient=claimed.recipient, now_s=0.0))  # fmt: skip
        session.close()  # ... and the process dies here; later its lease runs out:
        conn.execute("UPDATE notifications SET next_attempt_at = now()")
    with senders(dsn, mail):
        assert wait_until(lambda: all_have(dsn, "sent", 1), timeout_s=SETTLE_S)
    first, again = mail.recorder.messages()
    assert first.message_id == again.message_id == smtp.message_id(nid, FROM)
    assert statuses(dsn)[nid][1] == 2
