"""The delivery queue on real Postgres: ingestion exactly once with the consumer positions,
claims within each endpoint's bound, the schedule, the DLQ with its email in the outbox, the
circuit breaker, and leases that run out when a dispatcher dies."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from paystream.audit import db
from paystream.audit.store import SINK_ROLE, Fenced
from paystream.ledger import Event
from paystream.webhooks import store
from paystream.webhooks.breaker import BreakerPolicy
from paystream.webhooks.payload import delivery_id
from paystream.webhooks.schedule import Schedule
from tests.support.webhooks import (
    another_endpoint,
    migrated,
    partner_with_endpoint,
    transfer_completed,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

URL = "http://127.0.0.1:9/hooks"
POLICY = BreakerPolicy(failures_to_open=1_000, cooldown_s=0.5, concurrency_max=3)
SCHEDULE = Schedule((0.05, 0.05))
RNG = random.Random(7)


@pytest.fixture
def conn(audit_dsn: str) -> Iterator[db.Connection]:
    """The service's own connection: as the sink role, with the grants migration 0008 gave."""
    migrated(audit_dsn)
    with db.connect(audit_dsn, autocommit=True) as connection:
        connection.execute(f"SET ROLE {SINK_ROLE}")
        yield connection


def ingest(conn: db.Connection, events: list[Event], *, consumer: str = "wh", at: int = 0) -> int:
    return store.ingest(
        conn, events, consumer=consumer, started_at={("events", 0): at or None},
        next_offsets={("events", 0): at + len(events)},
    )  # fmt: skip


def claim(conn: db.Connection, policy: BreakerPolicy = POLICY, **kw: Any) -> store.Claim:
    options: dict[str, Any] = {"limit": 50, "lease_s": 30.0} | kw
    return store.claim(conn, policy=policy, schedule=SCHEDULE, rng=RNG, **options)


def outcome(
    claimed: store.Claimed, kind: store.OutcomeKind, status: int | None = None
) -> store.Outcome:
    return store.Outcome(
        delivery_id=claimed.delivery_id, endpoint_id=claimed.endpoint_id, kind=kind,
        started_at=claimed.claimed_at, duration_ms=3, http_status=status,
        error=None if kind == "delivered" else f"HTTP {status}",
    )  # fmt: skip


def record(
    conn: db.Connection, outcomes: list[store.Outcome], policy: BreakerPolicy = POLICY
) -> Any:
    return store.record(conn, outcomes, policy=policy, schedule=SCHEDULE, rng=RNG)


def row(conn: db.Connection, delivery: str) -> dict[str, Any]:
    cursor = conn.execute(
        "SELECT status, attempts, attempts_total, next_attempt_at, leased_until, last_status,"
        " first_attempt_at, event_at FROM webhook_deliveries WHERE delivery_id = %s",
        (delivery,),
    )
    names = [column.name for column in cursor.description or ()]
    found = cursor.fetchone()
    assert found is not None
    return dict(zip(names, found, strict=True))


def test_each_event_becomes_one_delivery_per_endpoint_once_with_the_positions(
    audit_dsn: str, conn: db.Connection
) -> None:
    first = partner_with_endpoint(audit_dsn, "p-one", URL)
    second = another_endpoint(audit_dsn, "p-one", URL + "/2")
    partner_with_endpoint(audit_dsn, "p-two", URL)
    events = [transfer_completed("p-one", n) for n in range(3)]
    noise = [
        transfer_completed("p-nobody", 5),  # a partner with no endpoint
        Event(event_id="x:debited", payment_id="x", type="Debited", command_type="Transfer",
              partner_id="p-one", account_id="a", issued_at_ms=1),
    ]  # fmt: skip
    assert ingest(conn, events + noise) == 6
    rows = conn.execute(
        "SELECT delivery_id, endpoint_id, event_type, payload->'data'->>'payment_id', status,"
        " next_attempt_at <= clock_timestamp() FROM webhook_deliveries ORDER BY 1"
    ).fetchall()
    expected = {delivery_id(ep.endpoint_id, e.event_id) for ep in (first, second) for e in events}
    assert {r[0] for r in rows} == expected
    assert {(r[2], r[4], r[5]) for r in rows} == {("payment.completed", "pending", True)}
    # read again (a copy that lost its positions' race, or a replay): nothing twice
    assert ingest(conn, events, consumer="another") == 0
    positions = conn.execute(
        "SELECT consumer, next_offset FROM sink_offsets ORDER BY consumer"
    ).fetchall()
    assert positions == [("another", 3), ("wh", 5)]
    with pytest.raises(Fenced):  # a copy that read from a stale position writes nothing
        ingest(conn, [transfer_completed("p-one", 7)], at=3)
    assert conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (6,)


def test_a_claim_keeps_each_endpoint_within_its_bound_and_leases_what_it_takes(
    audit_dsn: str, conn: db.Connection
) -> None:
    partner_with_endpoint(audit_dsn, "p-busy", URL)
    partner_with_endpoint(audit_dsn, "p-quiet", URL)
    ingest(conn, [transfer_completed("p-busy", n) for n in range(10)]
           + [transfer_completed("p-quiet", 1)])  # fmt: skip
    taken = claim(conn).claimed
    assert len(taken) == 4 and len({c.endpoint_id for c in taken}) == 2
    assert all(c.first and c.secret.startswith("whsec_") for c in taken)
    assert claim(conn).claimed == []  # p-busy has 3 in flight, p-quiet has nothing due
    leased = row(conn, taken[0].delivery_id)
    assert leased["leased_until"] is not None and leased["first_attempt_at"] is not None
    record(conn, [outcome(c, "delivered", 204) for c in taken])
    again = claim(conn).claimed
    assert len(again) == 3 and not {c.delivery_id for c in again} & {c.delivery_id for c in taken}
    done = row(conn, taken[0].delivery_id)
    assert (done["status"], done["attempts"], done["leased_until"]) == ("delivered", 1, None)


def test_failures_follow_the_schedule_then_the_delivery_is_dead_and_its_partner_emailed(
    audit_dsn: str, conn: db.Connection
) -> None:
    partner_with_endpoint(audit_dsn, "p-down", URL, email="alerts@p-down.example")
    ingest(conn, [transfer_completed("p-down", n) for n in range(2)])
    for attempt in range(1, SCHEDULE.attempts_max + 1):
        taken = wait_claim(conn, 2)
        assert all(c.first == (attempt == 1) for c in taken)
        ended = record(conn, [outcome(c, "http_error", 503) for c in taken])
        current = row(conn, taken[0].delivery_id)
        assert current["attempts"] == attempt and current["last_status"] == 503
        if attempt < SCHEDULE.attempts_max:
            assert current["status"] == "pending" and not ended
            assert current["leased_until"] is None
        else:
            assert current["status"] == "dead" and ended == {"dead": 2}
    attempts = conn.execute(
        "SELECT attempt, outcome, http_status FROM webhook_attempts WHERE delivery_id = %s"
        " ORDER BY attempt",
        (taken[0].delivery_id,),
    ).fetchall()
    assert attempts == [(n, "http_error", 503) for n in range(1, SCHEDULE.attempts_max + 1)]
    emails = conn.execute("SELECT template, recipient, context FROM notifications").fetchall()
    assert len(emails) == 1, "one email per endpoint and day, not one per dead delivery"
    template, recipient, context = emails[0]
    assert (template, recipient) == ("webhook_exhausted", "alerts@p-down.example")
    assert context["delivery_id"] in {c.delivery_id for c in taken}
    assert context["attempts"] == 3 and context["last_error"] == "HTTP 503"
    assert context["endpoint_url"] == URL and context["event_type"] == "payment.completed"


def test_an_open_circuit_sends_nothing_then_one_probe_and_recovery_makes_the_rest_due(
    audit_dsn: str, conn: db.Connection
) -> None:
    policy = BreakerPolicy(failures_to_open=2, cooldown_s=0.5, concurrency_max=3)
    partner_with_endpoint(audit_dsn, "p-flaky", URL)
    ingest(conn, [transfer_completed("p-flaky", n) for n in range(6)])
    taken = claim(conn, policy).claimed
    assert len(taken) == 3
    record(
        conn,
        [outcome(c, "timeout") for c in taken[:2]] + [outcome(taken[2], "unreachable")],
        policy,
    )
    circuit = conn.execute("SELECT circuit, opened_count FROM webhook_endpoint_state").fetchone()
    assert circuit == ("open", 1)
    shorted = claim(conn, policy)  # due: the three never sent
    assert shorted.claimed == [] and len(shorted.shorted) == 3
    assert {o.kind for o in shorted.shorted} == {"circuit_open"}
    time.sleep(0.6)  # the cool-down
    probe = wait_claim(conn, 1, policy)
    assert conn.execute("SELECT circuit FROM webhook_endpoint_state").fetchone() == ("half_open",)
    assert claim(conn, policy).claimed == []  # one probe at a time
    record(conn, [outcome(probe[0], "delivered", 200)], policy)
    assert conn.execute("SELECT circuit FROM webhook_endpoint_state").fetchone() == ("closed",)
    waiting = conn.execute(
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"
        " AND next_attempt_at <= clock_timestamp()"
    ).fetchone()
    assert waiting == (5,), "a recovered endpoint's deliveries are due at once"


def test_a_lease_that_runs_out_makes_the_delivery_due_again(
    audit_dsn: str, conn: db.Connection
) -> None:
    partner_with_endpoint(audit_dsn, "p-lost", URL)
    ingest(conn, [transfer_completed("p-lost", 1)])
    [taken] = claim(conn, lease_s=0.3).claimed
    assert claim(conn).claimed == []
    time.sleep(0.4)  # the dispatcher died with the request in flight: nothing was recorded
    [again] = claim(conn).claimed
    assert again.delivery_id == taken.delivery_id and again.first is False
    record(conn, [outcome(again, "delivered", 200)])
    assert row(conn, taken.delivery_id)["status"] == "delivered"


def test_a_disabled_endpoint_gets_no_request(audit_dsn: str, conn: db.Connection) -> None:
    endpoint = partner_with_endpoint(audit_dsn, "p-off", URL)
    ingest(conn, [transfer_completed("p-off", 1)])
    with db.connect(audit_dsn, autocommit=True) as admin:
        admin.execute(
            "UPDATE webhook_endpoints SET enabled = false WHERE endpoint_id = %s",
            (endpoint.endpoint_id,),
        )
    taken = claim(conn)
    assert taken.claimed == [] and [o.error for o in taken.shorted] == [
        "endpoint disabled or partner removed"
    ]


def wait_claim(
    conn: db.Connection, count: int, policy: BreakerPolicy = POLICY, timeout_s: float = 10.0
) -> list[store.Claimed]:
    """Claims until ``count`` deliveries were taken (their retry slot comes)."""
    deadline = time.monotonic() + timeout_s
    taken: list[store.Claimed] = []
    while len(taken) < count and time.monotonic() < deadline:
        taken += claim(conn, policy).claimed
        time.sleep(0.02)
    assert len(taken) == count, taken
    return taken
