"""Rows of the analytics store, from the facts the sink reads (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from paystream.ledger import Event, JournalEntry

EVENT_COLUMNS: Final = (
    "event_id", "payment_id", "type", "command_type", "partner_id", "account_id",
    "amount_minor", "currency", "code", "issued_at", "logged_at", "events_partition",
    "events_offset",
)  # fmt: skip
LINE_COLUMNS: Final = (
    "entry_id", "line_no", "payment_id", "kind", "phase", "account_id", "currency", "side",
    "amount_minor", "issued_at", "ledger_partition", "ledger_offset",
)  # fmt: skip


def at(time_ms: int) -> datetime:
    """Unix milliseconds as the UTC instant ClickHouse's DateTime64(3) stores."""
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC)


def event_row(event: Event, *, partition: int, offset: int, logged_at_ms: int) -> list[Any]:
    return [
        event.event_id, event.payment_id, event.type, event.command_type, event.partner_id,
        event.account_id, event.amount_minor, event.currency, event.code,
        at(event.issued_at_ms), at(logged_at_ms), partition, offset,
    ]  # fmt: skip


def line_rows(entry: JournalEntry, *, partition: int, offset: int) -> list[list[Any]]:
    return [
        [entry.entry_id, number, entry.payment_id, entry.kind, entry.phase, line.account_id,
         line.currency, line.side, line.amount_minor, at(entry.issued_at_ms), partition, offset]
        for number, line in enumerate(entry.lines)
    ]  # fmt: skip
