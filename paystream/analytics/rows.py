"""Rows of the analytics store, from the facts the sink reads (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from paystream.audit.projection import line_delta
from paystream.audit.records import DLQ_COLUMNS, Origin, dlq_row
from paystream.ledger import SYSTEM_ACCOUNT_PREFIX, Account, Event, JournalEntry, is_own_event
from paystream.ledger.models import JournalLine, Phase

EVENT_COLUMNS: Final = (
    "event_id", "payment_id", "type", "command_type", "partner_id", "account_id",
    "amount_minor", "currency", "code", "own", "issued_at", "logged_at", "events_partition",
    "events_offset",
)  # fmt: skip
MONEY_COLUMNS: Final = (
    "debits_minor", "credits_minor", "transit_minor", "posted_debits_minor",
    "posted_credits_minor", "pending_debits_minor", "pending_credits_minor",
)  # fmt: skip
"""What a journal line adds to its currency's sums (:func:`line_money`)."""
LINE_COLUMNS: Final = (
    "entry_id", "line_no", "payment_id", "kind", "phase", "account_id", "currency", "side",
    "amount_minor", *MONEY_COLUMNS, "final", "issued_at", "logged_at", "ledger_partition",
    "ledger_offset",
)  # fmt: skip
BALANCE_COLUMNS: Final = (
    "account_id", "currency", "posted_debits_minor", "posted_credits_minor",
    "pending_debits_minor", "pending_credits_minor", "changelog_partition", "changelog_offset",
    "logged_at",
)  # fmt: skip
DEAD_LETTER_COLUMNS: Final = (
    "dlq_partition", "dlq_offset", "reason", "detail", "origin_topic", "origin_partition",
    "origin_offset", "payload_size", "payload_sha256", "logged_at",
)  # fmt: skip
COLUMNS: Final = {
    "events": EVENT_COLUMNS, "ledger_lines": LINE_COLUMNS, "dead_letters": DEAD_LETTER_COLUMNS,
    "balances": BALANCE_COLUMNS,
}  # fmt: skip
"""The fact tables and their columns, in the order the row functions give them."""
TRANSIT_PREFIX: Final = f"{SYSTEM_ACCOUNT_PREFIX}transit:"
Money = tuple[int, int, int, int, int, int, int]
"""A line's or a sum's :data:`MONEY_COLUMNS`."""


def at(time_ms: int) -> datetime:
    """Unix milliseconds as the UTC instant ClickHouse's DateTime64(3) stores."""
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC)


def event_row(event: Event, *, partition: int, offset: int, logged_at_ms: int) -> list[Any]:
    return [
        event.event_id, event.payment_id, event.type, event.command_type, event.partner_id,
        event.account_id, event.amount_minor, event.currency, event.code, is_own_event(event),
        at(event.issued_at_ms), at(logged_at_ms), partition, offset,
    ]  # fmt: skip


def line_rows(
    entry: JournalEntry, *, partition: int, offset: int, logged_at_ms: int
) -> list[list[Any]]:
    return [
        [entry.entry_id, number, entry.payment_id, entry.kind, entry.phase, line.account_id,
         line.currency, line.side, line.amount_minor, *line_money(entry.phase, line),
         is_final_entry(entry), at(entry.issued_at_ms), at(logged_at_ms), partition, offset]
        for number, line in enumerate(entry.lines)
    ]  # fmt: skip


def is_final_entry(entry: JournalEntry) -> bool:
    """Whether ``entry`` is its payment's last: a deposit's or a withdrawal's only entry, the
    entry that posts or voids a transfer's reservation (its money no longer in transit), a
    payout's settlement (after its reservation is posted) or the void of its reservation.
    Time to consistency is measured to it."""
    if entry.kind == "payout_debit":
        return entry.phase == "void"
    return entry.kind in ("deposit", "withdrawal", "payout_settlement") or entry.phase in (
        "post", "void",
    )  # fmt: skip


def line_money(phase: Phase, line: JournalLine) -> Money:
    """What one line adds to its currency's sums: its debit or credit; money in transit (a
    transit shard's posted debits less credits: transfers credited to their destination and
    not yet posted from their source); and TigerBeetle's four totals, as the audit
    projection defines them (the balance projection is checked against these)."""
    debit = line.side == "debit"
    amount_minor = line.amount_minor
    in_transit = line.account_id.startswith(TRANSIT_PREFIX) and phase in ("posted", "post")
    transit_minor = (amount_minor if debit else -amount_minor) if in_transit else 0
    return (
        amount_minor if debit else 0, 0 if debit else amount_minor, transit_minor,
        *line_delta(phase, line.side, amount_minor),
    )  # fmt: skip


def balance_row(account: Account, *, partition: int, offset: int, logged_at_ms: int) -> list[Any]:
    """An account as the workers' table holds it (their ``balances`` changelog)."""
    return [
        account.account_id, account.currency, account.posted_debits_minor,
        account.posted_credits_minor, account.pending_debits_minor,
        account.pending_credits_minor, partition, offset, at(logged_at_ms),
    ]  # fmt: skip


def dead_letter_row(
    headers: Mapping[str, bytes],
    value: bytes | None,
    *,
    partition: int,
    offset: int,
    logged_at_ms: int,
) -> list[Any]:
    """A dead letter's reason, origin and size, read from its headers as the audit store does
    (the payload itself stays in Kafka and Postgres)."""
    named = dict(zip(DLQ_COLUMNS, dlq_row(headers, None, value, Origin("dlq", partition, offset)),
                     strict=True))  # fmt: skip
    return [*(named[c] for c in DEAD_LETTER_COLUMNS[:-1]), at(logged_at_ms)]
