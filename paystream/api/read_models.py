"""What the API reads from the audit store's read models (Postgres, read only).

Every query is here, none in a route. Lists are keyset-paged in an order an
index serves: accounts by id, an account's lines by entry id (entry ids start
with their payment's ULID, so that is the order payments were made), payments
by (created_at_ms, payment_id). A page's cursor is the last row's key, opaque
to callers (base64url JSON) and checked when it comes back.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from paystream.audit import records

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 200
CURSOR_LENGTH_MAX = 512
HISTORY_MAX = 100
"""Events listed with one payment (a payment has at most a handful)."""
ENTRIES_PER_PAYMENT_MAX = 20

Row = dict[str, Any]
Connection = psycopg.Connection[Row]


class BadCursor(ValueError):
    """A cursor this API did not hand out (or for another list)."""


def encode_cursor(kind: str, key: Sequence[Any]) -> str:
    raw = json.dumps([kind, list(key)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, arity: int) -> list[Any]:
    if len(cursor) > CURSOR_LENGTH_MAX:
        raise BadCursor("cursor too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        found_kind, key = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as error:
        raise BadCursor("not a cursor of this API") from error
    if found_kind != kind or not isinstance(key, list) or len(key) != arity:
        raise BadCursor("a cursor of another list")
    return key


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Row]
    next_cursor: str | None


def _page(rows: list[Row], limit: int, kind: str, key_columns: Sequence[str]) -> Page:
    more = len(rows) > limit
    items = rows[:limit]
    cursor = encode_cursor(kind, [items[-1][c] for c in key_columns]) if more and items else None
    return Page(items, cursor)


# --- accounts ---------------------------------------------------------------------------------

_ACCOUNT_COLUMNS = (
    "account_id, currency, partner_id, status, posted_debits_minor, posted_credits_minor,"
    " pending_debits_minor, pending_credits_minor, version, ledger_partition, ledger_offset,"
    " updated_at"
)


def account(conn: Connection, account_id: str) -> Row | None:
    return conn.execute(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE account_id = %s",
        (account_id,),
    ).fetchone()


def accounts(conn: Connection, *, partner_id: str | None, cursor: str | None, limit: int) -> Page:
    """Accounts by id; one partner's, or every one (``partner_id`` None: ops)."""
    after = decode_cursor("accounts", cursor, 1)[0] if cursor else ""
    rows = conn.execute(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts"
        " WHERE account_id > %s AND (%s::text IS NULL OR partner_id = %s)"
        " ORDER BY account_id LIMIT %s",
        (after, partner_id, partner_id, limit + 1),
    ).fetchall()
    return _page(rows, limit, "accounts", ("account_id",))


def account_lines(conn: Connection, account_id: str, *, cursor: str | None, limit: int) -> Page:
    """An account's journal lines, oldest payment first, each with its entry."""
    after = decode_cursor("lines", cursor, 2) if cursor else ["", -1]
    rows = conn.execute(
        "SELECT l.entry_id, l.line_no, l.account_id, l.currency, l.side, l.amount_minor,"
        " l.phase, e.payment_id, e.kind, e.issued_at_ms, e.ledger_partition, e.ledger_offset"
        " FROM ledger_lines l JOIN journal_entries e USING (entry_id)"
        " WHERE l.account_id = %s AND (l.entry_id, l.line_no) > (%s, %s)"
        " ORDER BY l.entry_id, l.line_no LIMIT %s",
        (account_id, after[0], after[1], limit + 1),
    ).fetchall()
    return _page(rows, limit, "lines", ("entry_id", "line_no"))


# --- payments ---------------------------------------------------------------------------------

_PAYMENT_COLUMNS = ", ".join(records.PAYMENTS.columns)


def payment(conn: Connection, payment_id: str) -> Row | None:
    return conn.execute(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE payment_id = %s",
        (payment_id,),
    ).fetchone()


def payment_history(conn: Connection, payment_id: str) -> list[Row]:
    """The payment's own events and the answers to records that reused its id, in order."""
    return conn.execute(
        "SELECT event_id, type, code, issued_at_ms, events_partition, events_offset"
        " FROM payment_events WHERE payment_id = %s"
        " ORDER BY events_partition, events_offset LIMIT %s",
        (payment_id, HISTORY_MAX),
    ).fetchall()


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    partner_id: str | None
    """None: every partner's (ops)."""
    command_types: tuple[str, ...]
    account_id: str | None = None
    status: str | None = None
    created_after_ms: int | None = None
    created_before_ms: int | None = None


def payments(conn: Connection, where: PaymentFilter, *, cursor: str | None, limit: int) -> Page:
    """Payments, oldest first, matching ``where`` (the account as either party)."""
    after = decode_cursor("payments", cursor, 2) if cursor else [-1, ""]
    rows = conn.execute(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments"
        " WHERE (created_at_ms, payment_id) > (%s, %s)"
        " AND (%s::text IS NULL OR partner_id = %s) AND command_type = ANY(%s)"
        " AND (%s::text IS NULL OR account_id = %s OR counterparty_account_id = %s)"
        " AND (%s::text IS NULL OR status = %s)"
        " AND (%s::bigint IS NULL OR created_at_ms > %s)"
        " AND (%s::bigint IS NULL OR created_at_ms < %s)"
        " ORDER BY created_at_ms, payment_id LIMIT %s",
        (
            after[0], after[1],
            where.partner_id, where.partner_id, list(where.command_types),
            where.account_id, where.account_id, where.account_id,
            where.status, where.status,
            where.created_after_ms, where.created_after_ms,
            where.created_before_ms, where.created_before_ms,
            limit + 1,
        ),
    ).fetchall()  # fmt: skip
    return _page(rows, limit, "payments", ("created_at_ms", "payment_id"))


def entry_count(conn: Connection, payment_id: str) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM journal_entries WHERE payment_id = %s", (payment_id,)
    ).fetchone()
    return 0 if row is None else int(row["n"])


# --- payouts ----------------------------------------------------------------------------------

_PAYOUT_COLUMNS = ", ".join(records.PAYOUTS.columns)
BATCH_ROWS_MAX = 1_000
"""Payouts read for one batch (``Settings.payouts_per_batch_max`` is at most this)."""
PAYOUT_HISTORY_MAX = 100
"""Events listed with one payout (a payout has a handful; overrides add two each)."""


def payout(conn: Connection, payout_id: str) -> Row | None:
    return conn.execute(
        f"SELECT {_PAYOUT_COLUMNS} FROM payouts WHERE payout_id = %s", (payout_id,)
    ).fetchone()


def payout_history(conn: Connection, payout_id: str) -> list[Row]:
    """The payout's events in order: states, who changed them and why."""
    return conn.execute(
        "SELECT event_id, type, code, reason, actor, rule_codes, previous_type, issued_at_ms"
        " FROM payment_events WHERE payment_id = %s"
        " ORDER BY events_partition, events_offset LIMIT %s",
        (payout_id, PAYOUT_HISTORY_MAX),
    ).fetchall()


def batch_payouts(conn: Connection, partner_id: str | None, batch_id: str) -> list[Row]:
    """A batch's payouts by id; one partner's (``partner_id`` None: any, for ops)."""
    return conn.execute(
        f"SELECT {_PAYOUT_COLUMNS} FROM payouts"
        " WHERE batch_id = %s AND (%s::text IS NULL OR partner_id = %s)"
        " ORDER BY partner_id, batch_id, payout_id LIMIT %s",
        (batch_id, partner_id, partner_id, BATCH_ROWS_MAX),
    ).fetchall()


def held_payouts(conn: Connection, *, cursor: str | None, limit: int) -> Page:
    """The review queue: held payouts, longest waiting first."""
    after = decode_cursor("held", cursor, 2) if cursor else [-1, ""]
    rows = conn.execute(
        f"SELECT {_PAYOUT_COLUMNS} FROM payouts WHERE status = 'Held'"
        " AND (created_at_ms, payout_id) > (%s, %s)"
        " ORDER BY created_at_ms, payout_id LIMIT %s",
        (after[0], after[1], limit + 1),
    ).fetchall()
    return _page(rows, limit, "held", ("created_at_ms", "payout_id"))


_REVIEW_COLUMNS = ", ".join(records.REVIEW_COLUMNS)


def reviews(conn: Connection, *, cursor: str | None, limit: int) -> Page:
    """Review decisions in the order they were made."""
    after = decode_cursor("reviews", cursor, 2) if cursor else [-1, ""]
    rows = conn.execute(
        f"SELECT {_REVIEW_COLUMNS} FROM payout_reviews"
        " WHERE (decided_at_ms, event_id) > (%s, %s)"
        " ORDER BY decided_at_ms, event_id LIMIT %s",
        (after[0], after[1], limit + 1),
    ).fetchall()
    return _page(rows, limit, "reviews", ("decided_at_ms", "event_id"))


# --- ledger -----------------------------------------------------------------------------------


def entries_of_payment(conn: Connection, payment_id: str) -> list[Row]:
    """The journal entries a payment made, each with its lines, in the order of their ledger
    partitions (a transfer's debit side and credit side are on different partitions)."""
    entries = conn.execute(
        "SELECT entry_id, payment_id, kind, phase, pending_entry_id, partner_id, account_id,"
        " issued_at_ms, ledger_partition, ledger_offset FROM journal_entries"
        " WHERE payment_id = %s ORDER BY ledger_partition, ledger_offset LIMIT %s",
        (payment_id, ENTRIES_PER_PAYMENT_MAX),
    ).fetchall()
    if not entries:
        return []
    lines = conn.execute(
        "SELECT entry_id, line_no, account_id, currency, side, amount_minor FROM ledger_lines"
        " WHERE entry_id = ANY(%s) ORDER BY entry_id, line_no",
        ([e["entry_id"] for e in entries],),
    ).fetchall()
    for entry in entries:
        entry["lines"] = [
            {k: v for k, v in line.items() if k != "entry_id"}
            for line in lines
            if line["entry_id"] == entry["entry_id"]
        ]
    return entries


# --- freshness ---------------------------------------------------------------------------------


def records_behind(conn: Connection, consumer: str, ends: dict[tuple[str, int], int]) -> int:
    """How many records of ``ends``' partitions the sink ``consumer`` has not stored yet (a
    partition it never stored counts from 0; each committed transaction's marker counts 1)."""
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM sink_offsets WHERE consumer = %s", (consumer,)
    ).fetchall()
    stored = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
    return sum(max(0, end - stored.get(position, 0)) for position, end in ends.items())
