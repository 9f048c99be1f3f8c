"""Signed webhooks end to end on real Kafka, Postgres, HTTP receivers and SMTP: events on the
``events`` topic reach each endpoint once after dedupe by ``webhook-id`` with every signature
verified; an endpoint that always fails ends in the DLQ and its partner's contact gets an
email through the real notifier; old timestamps are refused by the documented receiver; a
SIGKILLed ``paystream webhooks`` loses no delivery."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from paystream.audit import db
from paystream.notify.sender import Policy, Sender
from paystream.partners.registry import new_webhook_secret
from paystream.runner import child_env
from paystream.services.process import wait_until
from paystream.settings import Settings
from paystream.webhooks.payload import body_text, delivery_id, payload
from paystream.webhooks.receiver import Plan, serving
from paystream.webhooks.signing import signed_headers
from tests.support.smtp import TestSmtpServer
from tests.support.webhooks import (
    delivering,
    migrated,
    partner_with_endpoint,
    produce,
    transfer_completed,
    webhook_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SETTLE_S = 60.0
"""How long a test waits for the service to reach what it asserts."""
FIRST_ATTEMPT_MAX_S = 30.0
"""The seed: a partner hears of a state change within 30 seconds."""


def statuses(dsn: str) -> dict[str, str]:
    with db.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT delivery_id, status FROM webhook_deliveries").fetchall()
    return dict(rows)


def all_are(dsn: str, status: str, count: int) -> bool:
    found = statuses(dsn)
    return len(found) == count and set(found.values()) == {status}


def test_a_receiver_that_fails_twice_gets_each_event_once_after_dedupe_every_signature_valid(
    settings: Settings, audit_dsn: str
) -> None:
    own = webhook_settings(settings)
    dsn = migrated(audit_dsn)
    events = [transfer_completed("p-retry", n) for n in range(20)]
    with serving("whsec_placeholder", Plan(fail_first=2)) as receiver:
        endpoint = partner_with_endpoint(dsn, "p-retry", receiver.url)
        receiver.secret = endpoint.secret
        with delivering(own, dsn):
            produce(own, events)
            assert wait_until(lambda: all_are(dsn, "delivered", 20), timeout_s=SETTLE_S), statuses(
                dsn
            )
        requests = receiver.requests()
        received = receiver.events()
    expected = {delivery_id(endpoint.endpoint_id, e.event_id): e for e in events}
    assert set(received) == set(expected)
    for webhook_id, body in received.items():
        assert body == payload(expected[webhook_id], "payment.completed")
    assert [r for r in requests if r.status == 400] == [], "a signature did not verify"
    tries: dict[str, int] = {}
    for request in requests:
        tries[request.webhook_id] = tries.get(request.webhook_id, 0) + 1
    assert set(tries.values()) == {3}, tries  # two failures, then the one that counts
    with db.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT attempts, extract(epoch FROM first_attempt_at - event_at)"
            " FROM webhook_deliveries"
        ).fetchall()
        logged = conn.execute(
            "SELECT outcome, http_status, count(*) FROM webhook_attempts GROUP BY 1, 2"
        ).fetchall()
    assert {attempts for attempts, _ in rows} == {3}
    assert max(float(latency) for _, latency in rows) < FIRST_ATTEMPT_MAX_S
    assert sorted(logged) == [("delivered", 204, 20), ("http_error", 500, 40)]


def test_an_endpoint_that_always_fails_ends_in_the_dlq_and_its_contact_is_emailed(
    settings: Settings, audit_dsn: str
) -> None:
    own = webhook_settings(settings, webhook_breaker_failures=3, webhook_breaker_cooldown_s=0.3)
    dsn = migrated(audit_dsn)
    events = [transfer_completed("p-dead", n) for n in range(5)]
    with (
        TestSmtpServer() as mail,
        serving("whsec_placeholder", Plan(always_fail=True, fail_status=503)) as receiver,
    ):
        mail.start()
        endpoint = partner_with_endpoint(dsn, "p-dead", receiver.url, email="oncall@p-dead.example")
        receiver.secret = endpoint.secret
        with delivering(own, dsn), notifier(dsn, mail):
            produce(own, events)
            assert wait_until(lambda: all_are(dsn, "dead", 5), timeout_s=SETTLE_S), statuses(dsn)
            assert wait_until(lambda: len(mail.recorder.messages()) >= 1, timeout_s=SETTLE_S)
        requests = receiver.requests()
    [email] = mail.recorder.messages()
    assert email.recipient == "oncall@p-dead.example"
    assert receiver.url in email.subject and "gave up after 4 attempts" in email.subject
    assert "payment.completed" in email.text and "HTTP 503" in email.text  # the last answer
    with db.connect(dsn, autocommit=True) as conn:
        outcomes = dict(
            conn.execute("SELECT outcome, count(*) FROM webhook_attempts GROUP BY 1").fetchall()
        )
        dead = conn.execute(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'dead' AND attempts = 4"
            " AND last_error IS NOT NULL AND dead_at IS NOT NULL"
        ).fetchone()
    assert dead == (5,)
    assert sum(outcomes.values()) == 5 * 4  # every slot of the schedule was an attempt
    assert outcomes.get("circuit_open", 0) > 0, "the breaker never opened"
    assert outcomes["http_error"] == len(requests) < 20, "an open circuit sent requests"
    assert {r.status for r in requests} == {503}


@contextlib.contextmanager
def notifier(dsn: str, mail: TestSmtpServer) -> Iterator[Sender]:
    """The real notifier's sender (``paystream notify``'s) against the test's SMTP server."""
    policy = Policy(idle_s=0.05, stats_every_s=0.5, send_timeout_s=5.0)
    sender = Sender(dsn, server=mail.server, sender="paystream <n@pay.example>", policy=policy)
    thread = threading.Thread(target=sender.run, name="notify-sender", daemon=True)
    thread.start()
    try:
        yield sender
    finally:
        sender.stop()
        thread.join(30.0)


def test_the_documented_receiver_refuses_a_signed_request_older_than_five_minutes() -> None:
    body = body_text(payload(transfer_completed("p-old", 1), "payment.completed"))
    now = datetime.datetime.now(datetime.UTC)
    with serving(new_webhook_secret()) as receiver:

        def post(at: datetime.datetime, webhook_id: str) -> httpx.Response:
            headers = signed_headers(
                secret=receiver.secret, webhook_id=webhook_id, body=body, at=at
            )
            return httpx.post(receiver.url, content=body, headers=headers, timeout=10.0)

        old = post(now - datetime.timedelta(minutes=6), "msg_old")
        fresh = post(now, "msg_fresh")
        again = post(now, "msg_fresh")  # a retry: accepted, and deduplicated
    assert old.status_code == 400 and json.loads(old.text) == {"error": "Message timestamp too old"}
    assert fresh.status_code == 204 and again.status_code == 204
    assert set(receiver.events()) == {"msg_fresh"} and receiver.duplicates == 1


def test_a_sigkilled_delivery_service_loses_no_delivery(
    settings: Settings, audit_dsn: str, tmp_path: Path
) -> None:
    own = webhook_settings(settings, webhook_endpoint_concurrency_max=4, webhook_timeout_s=2.0)
    dsn = migrated(audit_dsn)
    events = [transfer_completed("p-kill", n) for n in range(150)]
    with (
        serving("whsec_placeholder", Plan(delay_s=0.1)) as first,
        serving("whsec_placeholder", Plan(delay_s=0.1, fail_rate=0.1, seed=3)) as second,
    ):
        endpoints = [partner_with_endpoint(dsn, "p-kill", first.url)]
        endpoints.append(partner_with_endpoint(dsn, "p-kill", second.url))
        first.secret, second.secret = endpoints[0].secret, endpoints[1].secret
        produce(own, events)
        env = service_env(own, dsn)
        with service(env, tmp_path / "webhooks-1.log") as killed:
            assert wait_until(lambda: len(first.events()) >= 30, timeout_s=SETTLE_S)
            killed.send_signal(signal.SIGKILL)
            killed.wait(10.0)
        at_kill = statuses(dsn)
        assert "pending" in at_kill.values(), "everything was done before the kill"
        with service(env, tmp_path / "webhooks-2.log"):
            assert wait_until(lambda: all_are(dsn, "delivered", 300), timeout_s=SETTLE_S), statuses(
                dsn
            )
        got = [first.events(), second.events()]
    for receiver, endpoint in zip(got, endpoints, strict=True):
        assert set(receiver) == {delivery_id(endpoint.endpoint_id, e.event_id) for e in events}


def service_env(own: Settings, dsn: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
    return base | child_env(own, log_level="warn") | {
        "PAYSTREAM_ENVIRONMENT": "test",
        "PAYSTREAM_POSTGRES_DSN": dsn,
        "PAYSTREAM_WEBHOOK_RETRY_DELAYS_S": json.dumps(list(own.webhook_retry_delays_s)),
        "PAYSTREAM_WEBHOOK_TIMEOUT_S": str(own.webhook_timeout_s),
        "PAYSTREAM_WEBHOOK_ENDPOINT_CONCURRENCY_MAX": str(own.webhook_endpoint_concurrency_max),
        "PAYSTREAM_WEBHOOK_BREAKER_FAILURES": str(own.webhook_breaker_failures),
    }  # fmt: skip


@contextlib.contextmanager
def service(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``paystream webhooks`` as a process of its own; stopped (SIGTERM) on exit if alive."""
    command = [sys.executable, "-m", "paystream.cli", "webhooks", "--metrics-port", "0"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(60.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10.0)
