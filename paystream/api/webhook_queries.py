"""What the API reads and writes of webhook deliveries (migration 0008); no SQL in routes.

Reads are keyset-paged like the read models' (newest first: by event time, then id). The
two writes -- a retry of one delivery, a replay of an endpoint's since a time -- put
deliveries back in the queue for a new round of the retry schedule (a delivery in flight
keeps its lease, so no request is ever sent twice at once), and let an open circuit probe
at once: the partner says the endpoint is back. Each runs with its ``Idempotency-Key``
claimed in the same transaction (:func:`claim_key`, :func:`remember`).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from typing import Any, Final

from psycopg.types.json import Jsonb

from paystream.api.read_models import Connection, Page, Row, decode_cursor, encode_cursor

__all__ = [
    "ATTEMPTS_SHOWN_MAX",
    "KEY_RETENTION_S",
    "REPLAY_MAX",
    "ROUNDS_MAX",
    "Remembered",
    "Replayed",
    "attempts",
    "claim_key",
    "deliveries",
    "delivery",
    "endpoint",
    "fingerprint",
    "remember",
    "replay",
    "retry",
]

ROUNDS_MAX: Final = 100
"""Rounds of the schedule one delivery may be given (its first and 99 retries by hand)."""
REPLAY_MAX: Final = 10_000
"""Deliveries one replay puts back at most (``next_since`` says where to go on)."""
ATTEMPTS_SHOWN_MAX: Final = 100
KEY_RETENTION_S: Final = 24 * 3600
"""An Idempotency-Key is remembered for a day (Stripe's 24 h), then forgotten."""
KEYS_PURGED_PER_CALL: Final = 100

_COLUMNS: Final = (
    "delivery_id, endpoint_id, partner_id, event_id, event_type, payment_id, payload, status,"
    " round, attempts, next_attempt_at, event_at, recorded_at, first_attempt_at,"
    " delivered_at, dead_at, last_status, last_error"
)


def deliveries(
    conn: Connection,
    *,
    partner_id: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> Page:
    """A partner's deliveries (``partner_id`` None: every one, for ops), newest first."""
    after = decode_cursor("deliveries", cursor, 2) if cursor else None
    after_at = _from_us(int(after[0])) if after else None
    rows = conn.execute(
        f"SELECT {_COLUMNS}, (extract(epoch FROM event_at) * 1000000)::bigint AS event_at_us"
        " FROM webhook_deliveries"
        " WHERE (%(partner)s::text IS NULL OR partner_id = %(partner)s)"
        " AND (%(status)s::text IS NULL OR status = %(status)s)"
        " AND (%(at)s::timestamptz IS NULL OR (event_at, delivery_id) < (%(at)s, %(id)s))"
        " ORDER BY event_at DESC, delivery_id DESC LIMIT %(limit)s",
        {"partner": partner_id, "status": status, "at": after_at,
         "id": after[1] if after else "", "limit": limit + 1},
    ).fetchall()  # fmt: skip
    more = len(rows) > limit
    items = rows[:limit]
    next_cursor = (
        encode_cursor("deliveries", [items[-1]["event_at_us"], items[-1]["delivery_id"]])
        if more and items
        else None
    )
    return Page(items, next_cursor)


def delivery(conn: Connection, delivery_id: str, *, lock: bool = False) -> Row | None:
    return conn.execute(
        f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE delivery_id = %s"
        + (" FOR UPDATE" if lock else ""),
        (delivery_id,),
    ).fetchone()


def attempts(conn: Connection, delivery_id: str) -> list[Row]:
    """The delivery's latest attempts, oldest first (at most ``ATTEMPTS_SHOWN_MAX``)."""
    rows = conn.execute(
        "SELECT attempt, round, started_at, duration_ms, outcome, http_status, error"
        " FROM webhook_attempts WHERE delivery_id = %s ORDER BY attempt DESC LIMIT %s",
        (delivery_id, ATTEMPTS_SHOWN_MAX),
    ).fetchall()
    return rows[::-1]


def endpoint(conn: Connection, endpoint_id: str) -> Row | None:
    return conn.execute(
        "SELECT endpoint_id, partner_id, enabled FROM webhook_endpoints WHERE endpoint_id = %s",
        (endpoint_id,),
    ).fetchone()


def retry(conn: Connection, delivery_id: str) -> Row | None:
    """A new round for the delivery, due now (or when its request in flight ends); None when
    it had ``ROUNDS_MAX`` rounds already. Call with the delivery locked."""
    row = conn.execute(
        f"UPDATE webhook_deliveries SET {_NEW_ROUND} WHERE delivery_id = %s AND round < %s"
        f" RETURNING {_COLUMNS}",
        (delivery_id, ROUNDS_MAX),
    ).fetchone()
    if row is not None:
        _probe_now(conn, row["endpoint_id"])
    return row


_NEW_ROUND: Final = (
    "status = 'pending', round = round + 1, attempts = 0, dead_at = NULL,"
    " next_attempt_at = CASE WHEN leased_until > clock_timestamp() THEN next_attempt_at"
    " ELSE clock_timestamp() END"
)


@dataclass(frozen=True, slots=True)
class Replayed:
    count: int
    next_since: datetime.datetime | None
    """Where to replay from next when more than ``REPLAY_MAX`` were found."""


def replay(conn: Connection, endpoint_id: str, since: datetime.datetime) -> Replayed:
    """A new round, due now, for the endpoint's deliveries of events since ``since``, oldest
    first, at most ``REPLAY_MAX`` (those at ``ROUNDS_MAX`` rounds are left). The rows are
    locked in id order, as the dispatcher locks them."""
    cursor = conn.execute(
        f"UPDATE webhook_deliveries SET {_NEW_ROUND} WHERE delivery_id IN"
        " (SELECT delivery_id FROM webhook_deliveries WHERE delivery_id = ANY(ARRAY("
        "   SELECT delivery_id FROM webhook_deliveries WHERE endpoint_id = %s"
        "   AND event_at >= %s AND round < %s ORDER BY event_at, delivery_id LIMIT %s))"
        "  ORDER BY delivery_id FOR UPDATE)",
        (endpoint_id, since, ROUNDS_MAX, REPLAY_MAX),
    )
    count = cursor.rowcount
    following = conn.execute(
        "SELECT event_at FROM webhook_deliveries WHERE endpoint_id = %s AND event_at >= %s"
        " AND round < %s ORDER BY event_at, delivery_id OFFSET %s LIMIT 1",
        (endpoint_id, since, ROUNDS_MAX, REPLAY_MAX),
    ).fetchone()
    _probe_now(conn, endpoint_id)
    return Replayed(count, None if following is None else following["event_at"])


def _probe_now(conn: Connection, endpoint_id: str) -> None:
    """An open circuit's cool-down ends now: the next claim sends one probe."""
    conn.execute(
        "UPDATE webhook_endpoint_state SET open_until = clock_timestamp(), updated_at = now()"
        " WHERE endpoint_id = %s AND circuit = 'open'",
        (endpoint_id,),
    )


# --- Idempotency-Key ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Remembered:
    """The answer a key got (``conflict``: the key was used for another request)."""

    status_code: int
    body: dict[str, Any]
    conflict: bool = False


def fingerprint(*parts: str) -> str:
    """What a request is, for its key: the operation and its target."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def claim_key(conn: Connection, partner_id: str, key: str, print_: str) -> Remembered | None:
    """None: the key is this transaction's now (answer, then :func:`remember`); else the
    answer it got, or a conflict. A concurrent request with the same key waits here until
    the first one commits (the row's lock), then gets its answer."""
    _purge(conn)
    claimed = conn.execute(
        "INSERT INTO webhook_requests (partner_id, idempotency_key, fingerprint, status_code,"
        " response) VALUES (%s, %s, %s, 0, '{}') ON CONFLICT DO NOTHING",
        (partner_id, key, print_),
    )
    if claimed.rowcount == 1:
        return None
    row = conn.execute(
        "SELECT fingerprint, status_code, response, created_at < clock_timestamp() - %s AS old"
        " FROM webhook_requests WHERE partner_id = %s AND idempotency_key = %s FOR UPDATE",
        (datetime.timedelta(seconds=KEY_RETENTION_S), partner_id, key),
    ).fetchone()
    if row is None or row["old"]:
        conn.execute(
            "UPDATE webhook_requests SET fingerprint = %s, status_code = 0, response = '{}',"
            " created_at = clock_timestamp() WHERE partner_id = %s AND idempotency_key = %s",
            (print_, partner_id, key),
        )
        return None
    return Remembered(row["status_code"], row["response"], conflict=row["fingerprint"] != print_)


def remember(
    conn: Connection, partner_id: str, key: str, status_code: int, body: dict[str, Any]
) -> None:
    conn.execute(
        "UPDATE webhook_requests SET status_code = %s, response = %s"
        " WHERE partner_id = %s AND idempotency_key = %s",
        (status_code, Jsonb(body), partner_id, key),
    )


def _purge(conn: Connection) -> None:
    """Forget a few expired keys (bounded work per request keeps the table small)."""
    conn.execute(
        "DELETE FROM webhook_requests WHERE ctid = ANY(ARRAY(SELECT ctid FROM webhook_requests"
        " WHERE created_at < clock_timestamp() - %s ORDER BY created_at LIMIT %s"
        " FOR UPDATE SKIP LOCKED))",
        (datetime.timedelta(seconds=KEY_RETENTION_S), KEYS_PURGED_PER_CALL),
    )


def _from_us(at_us: int) -> datetime.datetime:
    seconds, us = divmod(at_us, 1_000_000)
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC) + datetime.timedelta(
        microseconds=us
    )
