"""The delivery service's Postgres side (migration 0008): ingest, claim, record.

Every transaction reads the database's clock once (``clock_timestamp()``) and uses it for
everything it writes, so the schedule, the leases and the circuits of every copy of the
service share one clock.

Locks are taken in one order everywhere -- deliveries (by id), then endpoint states (by
id) -- and the claim skips locked deliveries instead of waiting, so claims, outcomes and
the API's retries never deadlock one another.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from psycopg.types.json import Jsonb

from paystream.audit import db
from paystream.audit import store as audit_store
from paystream.ledger import Event
from paystream.ledger.errors import InvariantViolation, ensure
from paystream.notify import outbox
from paystream.webhooks import breaker
from paystream.webhooks.breaker import BreakerPolicy, BreakerState
from paystream.webhooks.payload import delivery_id, payload, webhook_type
from paystream.webhooks.schedule import Schedule

__all__ = [
    "CLAIM_MAX",
    "Claim",
    "Claimed",
    "Outcome",
    "OutcomeKind",
    "claim",
    "ingest",
    "record",
    "stats",
]

Connection = db.Connection
OutcomeKind: TypeAlias = Literal[
    "delivered", "http_error", "timeout", "unreachable", "circuit_open"
]
CLAIM_MAX: Final = 500
"""Deliveries one claim takes at most."""
ERROR_LENGTH_MAX: Final = 2_000
EXCERPT_LENGTH_MAX: Final = 1_000
EXHAUSTED_EMAIL_WINDOW_S: Final = 24 * 3600
"""At most one "retries exhausted" email per endpoint per UTC day: it names the first
delivery that died that day (the API lists the others). A dead endpoint with a thousand
waiting events sends one email, not a thousand."""
EXHAUSTED_TEMPLATE: Final = "webhook_exhausted"
CIRCUIT_OPEN_PREFIX: Final = "circuit open; the endpoint's last answer: "
logger = logging.getLogger("paystream.webhooks")


# --- ingestion -----------------------------------------------------------------------------


def ingest(
    conn: Connection,
    events: Sequence[Event],
    *,
    consumer: str,
    started_at: Mapping[audit_store.Position, int | None],
    next_offsets: Mapping[audit_store.Position, int],
) -> int:
    """One delivery per event a partner hears about and enabled endpoint of its partner, and
    the consumer positions, in one transaction; the deliveries that were new."""
    wanted = [(event, kind) for event in events if (kind := webhook_type(event)) is not None]
    with conn.transaction():
        now = _now(conn)
        partners = {event.partner_id for event, _ in wanted}
        endpoints = _endpoints_of(conn, partners) if partners else {}
        rows = [
            _delivery_row(event, kind, endpoint_id)
            for event, kind in wanted
            for endpoint_id in endpoints.get(event.partner_id, ())
        ]
        created = _insert_deliveries(conn, rows, now) if rows else 0
        audit_store.move_positions(conn, consumer, started_at, next_offsets)
    return created


def _endpoints_of(conn: Connection, partners: Iterable[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    rows = conn.execute(
        "SELECT e.partner_id, e.endpoint_id FROM webhook_endpoints e"
        " JOIN partners p ON p.partner_id = e.partner_id"
        " WHERE e.partner_id = ANY(%s) AND e.enabled AND p.status = 'active'"
        " ORDER BY e.endpoint_id",
        (sorted(partners),),
    ).fetchall()
    for partner_id, endpoint_id in rows:
        found.setdefault(partner_id, []).append(endpoint_id)
    return found


def _delivery_row(event: Event, kind: str, endpoint_id: str) -> tuple[Any, ...]:
    return (
        delivery_id(endpoint_id, event.event_id), endpoint_id, event.partner_id,
        event.event_id, kind, event.payment_id, Jsonb(payload(event, kind)),
        _from_ms(event.issued_at_ms),
    )  # fmt: skip


def _insert_deliveries(
    conn: Connection, rows: list[tuple[Any, ...]], now: datetime.datetime
) -> int:
    columns = list(zip(*rows, strict=True))
    cursor = conn.execute(
        "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, partner_id, event_id,"
        " event_type, payment_id, payload, event_at, next_attempt_at)"
        " SELECT *, %s::timestamptz FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],"
        " %s::text[], %s::text[], %s::jsonb[], %s::timestamptz[])"
        " ON CONFLICT DO NOTHING",
        (now, *[list(column) for column in columns]),
    )
    created = cursor.rowcount
    conn.execute(
        "INSERT INTO webhook_endpoint_state (endpoint_id) SELECT DISTINCT unnest(%s::text[])"
        " ON CONFLICT DO NOTHING",
        (list(columns[1]),),
    )
    return created


# --- claiming ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """A delivery taken for one attempt (leased until the outcome is recorded)."""

    delivery_id: str
    endpoint_id: str
    url: str
    secret: str
    payload: dict[str, Any]
    round: int
    first: bool
    """This is the delivery's first claim (its latency is the first attempt's)."""
    event_at: datetime.datetime
    claimed_at: datetime.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one attempt came to."""

    delivery_id: str
    endpoint_id: str
    kind: OutcomeKind
    started_at: datetime.datetime
    duration_ms: int = 0
    http_status: int | None = None
    error: str | None = None
    response_excerpt: str | None = None


@dataclass(frozen=True, slots=True)
class _Candidate:
    delivery_id: str
    endpoint_id: str
    usable: bool
    """The endpoint is enabled and its partner active."""


@dataclass(frozen=True, slots=True)
class Claim:
    claimed: list[Claimed]
    """To send now."""
    shorted: list[Outcome]
    """Recorded already: ``circuit_open`` attempts."""
    finished: Counter[str]
    """Deliveries the short-circuited attempts ended (``dead``)."""


def claim(
    conn: Connection, *, limit: int, policy: BreakerPolicy, schedule: Schedule, lease_s: float,
    rng: random.Random,
) -> Claim:  # fmt: skip
    """Take at most ``limit`` due deliveries to send now, each endpoint within its circuit
    and concurrency bound; due deliveries of an open circuit get a ``circuit_open`` attempt
    and move to their next slot (those outcomes are recorded here and returned)."""
    ensure(0 < limit <= CLAIM_MAX, f"a claim takes 1..{CLAIM_MAX} deliveries")
    with conn.transaction():
        now = _now(conn)
        candidates = _due(conn, now, limit, policy.concurrency_max)
        if not candidates:
            return Claim([], [], Counter())
        endpoints = sorted({c.endpoint_id for c in candidates})
        states = _lock_states(conn, endpoints)
        in_flight = _in_flight(conn, endpoints, now)
        send, shorted = _plan(candidates, states, in_flight, now, policy)
        claimed = _lease(conn, send, now, lease_s)
        _save_states(conn, states)
        outcomes = [_short(c, now) for c in shorted]
        finished = _record_in(conn, outcomes, now=now, policy=policy, schedule=schedule, rng=rng)
    return Claim(claimed, outcomes, finished)


def _due(
    conn: Connection, now: datetime.datetime, limit: int, per_endpoint: int
) -> list[_Candidate]:
    """Each endpoint's oldest due deliveries (at most ``per_endpoint`` each, endpoints in a
    random order so none starves another), locked, skipping those another claim holds."""
    rows = conn.execute(
        "SELECT d.delivery_id, d.endpoint_id, e.enabled AND p.status = 'active'"
        " FROM (SELECT endpoint_id FROM webhook_endpoint_state ORDER BY random()) s"
        " JOIN webhook_endpoints e ON e.endpoint_id = s.endpoint_id"
        " JOIN partners p ON p.partner_id = e.partner_id"
        " CROSS JOIN LATERAL (SELECT delivery_id, endpoint_id FROM webhook_deliveries w"
        "   WHERE w.endpoint_id = s.endpoint_id AND w.status = 'pending'"
        "   AND w.next_attempt_at <= %s ORDER BY w.next_attempt_at LIMIT %s"
        "   FOR UPDATE OF w SKIP LOCKED) d"
        " LIMIT %s",
        (now, per_endpoint, limit),
    ).fetchall()
    return [_Candidate(delivery, endpoint, bool(usable)) for delivery, endpoint, usable in rows]


def _lock_states(conn: Connection, endpoints: list[str]) -> dict[str, BreakerState]:
    rows = conn.execute(
        "SELECT endpoint_id, circuit, consecutive_failures, opened_count,"
        " extract(epoch FROM open_until)::float8"
        " FROM webhook_endpoint_state WHERE endpoint_id = ANY(%s) ORDER BY endpoint_id"
        " FOR UPDATE",
        (endpoints,),
    ).fetchall()
    return {
        endpoint: BreakerState(
            circuit=circuit, consecutive_failures=failures, opened_count=opened,
            open_until_s=open_until,
        )
        for endpoint, circuit, failures, opened, open_until in rows
    }  # fmt: skip


def _in_flight(conn: Connection, endpoints: list[str], now: datetime.datetime) -> dict[str, int]:
    rows = conn.execute(
        "SELECT endpoint_id, count(*) FROM webhook_deliveries"
        " WHERE endpoint_id = ANY(%s) AND leased_until > %s GROUP BY endpoint_id",
        (endpoints, now),
    ).fetchall()
    return {endpoint: int(count) for endpoint, count in rows}


def _plan(
    candidates: list[_Candidate],
    states: dict[str, BreakerState],
    in_flight: Mapping[str, int],
    now: datetime.datetime,
    policy: BreakerPolicy,
) -> tuple[list[str], list[_Candidate]]:
    """(deliveries to send, deliveries that get a ``circuit_open`` attempt); ``states`` is
    updated in place (an open circuit past its cool-down turns half-open)."""
    send: list[str] = []
    shorted: list[_Candidate] = []
    admissions: dict[str, breaker.Admission] = {}
    for candidate in candidates:
        endpoint = candidate.endpoint_id
        if endpoint not in admissions:
            states[endpoint], admissions[endpoint] = breaker.admit(
                states.get(endpoint, BreakerState()), now_s=now.timestamp(),
                in_flight=in_flight.get(endpoint, 0), policy=policy,
            )  # fmt: skip
        admission = admissions[endpoint]
        if not candidate.usable or admission.short_circuit:
            shorted.append(candidate)
        elif admission.requests > 0:
            send.append(candidate.delivery_id)
            admissions[endpoint] = breaker.Admission(admission.requests - 1, False)
    return send, shorted


def _lease(
    conn: Connection, ids: list[str], now: datetime.datetime, lease_s: float
) -> list[Claimed]:
    if not ids:
        return []
    until = now + datetime.timedelta(seconds=lease_s)
    rows = conn.execute(
        "UPDATE webhook_deliveries d SET leased_until = %s, next_attempt_at = %s,"
        " first_attempt_at = coalesce(d.first_attempt_at, %s), last_attempt_at = %s"
        " FROM webhook_endpoints e WHERE d.delivery_id = ANY(%s) AND e.endpoint_id = d.endpoint_id"
        " RETURNING d.delivery_id, d.endpoint_id, e.url, e.secret, d.payload, d.round,"
        " d.first_attempt_at = %s, d.event_at",
        (until, until, now, now, ids, now),
    ).fetchall()
    return [
        Claimed(
            delivery_id=delivery, endpoint_id=endpoint, url=url, secret=secret, payload=body,
            round=round_, first=bool(first), event_at=event_at, claimed_at=now,
        )
        for delivery, endpoint, url, secret, body, round_, first, event_at in rows
    ]  # fmt: skip


def _short(candidate: _Candidate, now: datetime.datetime) -> Outcome:
    error = "circuit open" if candidate.usable else "endpoint disabled or partner removed"
    return Outcome(
        delivery_id=candidate.delivery_id, endpoint_id=candidate.endpoint_id,
        kind="circuit_open", started_at=now, error=error,
    )  # fmt: skip


# --- outcomes ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Delivery:
    """A delivery's row as an outcome needs it (locked)."""

    delivery_id: str
    endpoint_id: str
    partner_id: str
    status: str
    attempts: int
    attempts_total: int
    round: int
    event_id: str
    event_type: str
    url: str
    contact_email: str
    last_status: int | None
    last_error: str | None


def record(
    conn: Connection, outcomes: Sequence[Outcome], *, policy: BreakerPolicy, schedule: Schedule,
    rng: random.Random,
) -> Counter[str]:  # fmt: skip
    """Record attempts: each delivery delivered, rescheduled or dead, each attempt logged,
    each endpoint's circuit moved; one transaction. How many deliveries ended, by status."""
    if not outcomes:
        return Counter()
    with conn.transaction():
        return _record_in(conn, outcomes, now=_now(conn), policy=policy, schedule=schedule, rng=rng)


def _record_in(
    conn: Connection, outcomes: Sequence[Outcome], *, now: datetime.datetime,
    policy: BreakerPolicy, schedule: Schedule, rng: random.Random,
) -> Counter[str]:  # fmt: skip
    finished: Counter[str] = Counter()
    if not outcomes:
        return finished
    deliveries = _lock_deliveries(conn, sorted({o.delivery_id for o in outcomes}))
    endpoints = sorted({o.endpoint_id for o in outcomes})
    states = _lock_states(conn, endpoints)
    before = dict(states)
    for outcome in outcomes:
        found = deliveries.get(outcome.delivery_id)
        if found is None:
            raise InvariantViolation(f"an outcome of an unknown delivery {outcome.delivery_id}")
        status_before = found.status
        _apply(conn, found, outcome, now, schedule, rng)
        if found.status != status_before:
            finished[found.status] += 1
        if outcome.kind != "circuit_open":
            states[outcome.endpoint_id] = breaker.on_result(
                states.get(outcome.endpoint_id, BreakerState()),
                ok=outcome.kind == "delivered", now_s=now.timestamp(), policy=policy,
            )  # fmt: skip
    _save_states(conn, states)
    for endpoint in endpoints:
        if before.get(endpoint, BreakerState()).circuit != "closed" and (
            states[endpoint].circuit == "closed"
        ):
            _make_due(conn, endpoint, now)
    return finished


def _lock_deliveries(conn: Connection, ids: list[str]) -> dict[str, _Delivery]:
    rows = conn.execute(
        "SELECT d.delivery_id, d.endpoint_id, d.partner_id, d.status, d.attempts,"
        " d.attempts_total, d.round, d.event_id, d.event_type, e.url, p.contact_email,"
        " d.last_status, d.last_error FROM webhook_deliveries d"
        " JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id"
        " JOIN partners p ON p.partner_id = d.partner_id"
        " WHERE d.delivery_id = ANY(%s) ORDER BY d.delivery_id FOR UPDATE OF d",
        (ids,),
    ).fetchall()
    return {row[0]: _Delivery(*row) for row in rows}


def _apply(
    conn: Connection, delivery: _Delivery, outcome: Outcome, now: datetime.datetime,
    schedule: Schedule, rng: random.Random,
) -> None:  # fmt: skip
    """One attempt: logged, then the delivery delivered, rescheduled or dead."""
    delivery.attempts_total += 1
    _log_attempt(conn, delivery, outcome)
    delivery.last_status, delivery.last_error = _last_answer(delivery, outcome)
    if outcome.kind == "delivered":
        delivery.attempts += 1
        delivery.status = "delivered"
        _finish(conn, delivery, now, "delivered")
        return
    if delivery.status != "pending":  # a late failure of a delivery that ended meanwhile
        conn.execute(
            "UPDATE webhook_deliveries SET attempts_total = %s WHERE delivery_id = %s",
            (delivery.attempts_total, delivery.delivery_id),
        )
        return
    delivery.attempts += 1
    delay_s = schedule.delay_s(delivery.attempts, rng.random())
    if delay_s is None:
        delivery.status = "dead"
        _finish(conn, delivery, now, "dead")
        _exhausted(conn, delivery, now)
        return
    conn.execute(
        "UPDATE webhook_deliveries SET attempts = %s, attempts_total = %s, leased_until = NULL,"
        " next_attempt_at = %s, last_status = %s, last_error = %s WHERE delivery_id = %s",
        (delivery.attempts, delivery.attempts_total, now + datetime.timedelta(seconds=delay_s),
         delivery.last_status, delivery.last_error, delivery.delivery_id),
    )  # fmt: skip


def _last_answer(delivery: _Delivery, outcome: Outcome) -> tuple[int | None, str | None]:
    """What the delivery shows as its last answer: a ``circuit_open`` attempt asked nothing,
    so the endpoint's last real answer is kept beside it."""
    if outcome.kind != "circuit_open":
        return outcome.http_status, _error(outcome)
    previous = delivery.last_error
    if previous is None or previous.startswith(CIRCUIT_OPEN_PREFIX):
        return delivery.last_status, previous or _error(outcome)
    return delivery.last_status, _cut(f"{CIRCUIT_OPEN_PREFIX}{previous}", ERROR_LENGTH_MAX)


def _finish(conn: Connection, delivery: _Delivery, now: datetime.datetime, status: str) -> None:
    conn.execute(
        "UPDATE webhook_deliveries SET status = %s, attempts = %s, attempts_total = %s,"
        " leased_until = NULL,"
        " delivered_at = CASE WHEN %s = 'delivered' THEN %s ELSE delivered_at END,"
        " dead_at = CASE WHEN %s = 'dead' THEN %s ELSE NULL END,"
        " last_status = %s, last_error = %s WHERE delivery_id = %s",
        (status, delivery.attempts, delivery.attempts_total, status, now, status, now,
         delivery.last_status, delivery.last_error, delivery.delivery_id),
    )  # fmt: skip


def _log_attempt(conn: Connection, delivery: _Delivery, outcome: Outcome) -> None:
    conn.execute(
        "INSERT INTO webhook_attempts (delivery_id, attempt, round, started_at, duration_ms,"
        " outcome, http_status, error, response_excerpt) VALUES (%s, %s, %s, %s, %s, %s, %s,"
        " %s, %s) ON CONFLICT DO NOTHING",
        (delivery.delivery_id, delivery.attempts_total, delivery.round, outcome.started_at,
         max(outcome.duration_ms, 0), outcome.kind, outcome.http_status, _error(outcome),
         _cut(outcome.response_excerpt, EXCERPT_LENGTH_MAX)),
    )  # fmt: skip


def _exhausted(conn: Connection, delivery: _Delivery, now: datetime.datetime) -> None:
    """The DLQ's side effects: the state logged, the partner's contact emailed (at most once
    per endpoint and day), in the transaction that marks the delivery dead."""
    logger.warning(
        "webhook delivery %s (%s %s) to %s is dead after %d attempts: %s",
        delivery.delivery_id, delivery.event_type, delivery.event_id, delivery.url,
        delivery.attempts, delivery.last_error,
    )  # fmt: skip
    day = int(now.timestamp()) // EXHAUSTED_EMAIL_WINDOW_S
    endpoint_digest = hashlib.sha256(delivery.endpoint_id.encode()).hexdigest()[:32]
    outbox.enqueue(
        conn,
        notification_id=f"webhook-exhausted:{endpoint_digest}:{day}",
        template=EXHAUSTED_TEMPLATE,
        recipient=delivery.contact_email,
        context={
            "partner_id": delivery.partner_id, "endpoint_url": delivery.url,
            "delivery_id": delivery.delivery_id, "event_id": delivery.event_id,
            "event_type": delivery.event_type, "attempts": delivery.attempts,
            "last_error": delivery.last_error or "",
        },
    )  # fmt: skip


def _save_states(conn: Connection, states: Mapping[str, BreakerState]) -> None:
    rows = [
        (s.circuit, s.consecutive_failures, s.opened_count, _from_epoch(s.open_until_s), e)
        for e, s in sorted(states.items())
    ]
    if rows:
        with conn.cursor() as cursor:
            cursor.executemany(
                "UPDATE webhook_endpoint_state SET circuit = %s, consecutive_failures = %s,"
                " opened_count = %s, open_until = %s, updated_at = now() WHERE endpoint_id = %s",
                rows,
            )


def _make_due(conn: Connection, endpoint_id: str, now: datetime.datetime) -> None:
    """A recovered endpoint's waiting deliveries are due now, not at their next slot."""
    conn.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = %s WHERE endpoint_id = %s"
        " AND status = 'pending' AND leased_until IS NULL AND next_attempt_at > %s",
        (now, endpoint_id, now),
    )


# --- gauges --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stats:
    pending: int
    due: int
    dead: int
    circuits: dict[str, int]


def stats(conn: Connection) -> Stats:
    """The queue's depth, the DLQ's and the endpoints' circuits, for the gauges."""
    now = _now(conn)
    pending, due = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE next_attempt_at <= %s)"
        " FROM webhook_deliveries WHERE status = 'pending'",
        (now,),
    ).fetchone() or (0, 0)
    dead = conn.execute("SELECT count(*) FROM webhook_deliveries WHERE status = 'dead'").fetchone()
    circuits = conn.execute(
        "SELECT circuit, count(*) FROM webhook_endpoint_state GROUP BY circuit"
    ).fetchall()
    return Stats(int(pending), int(due), int(dead[0]) if dead else 0, dict(circuits))


# --- leaves --------------------------------------------------------------------------------


def _now(conn: Connection) -> datetime.datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    if row is None:
        raise InvariantViolation("no answer from Postgres")
    now: datetime.datetime = row[0]
    return now


def _from_ms(at_ms: int) -> datetime.datetime:
    seconds, ms = divmod(at_ms, 1000)
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC) + datetime.timedelta(
        milliseconds=ms
    )


def _from_epoch(at_s: float | None) -> datetime.datetime | None:
    return None if at_s is None else datetime.datetime.fromtimestamp(at_s, tz=datetime.UTC)


def _error(outcome: Outcome) -> str | None:
    return _cut(outcome.error, ERROR_LENGTH_MAX)


def _cut(text: str | None, length_max: int) -> str | None:
    return None if text is None else text[:length_max]
