"""Rows of the analytics store, from the facts the sink reads (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from paystream.audit.records import DLQ_COLUMNS, Origin, dlq_row
from paystream.ledger import Event, JournalEntry

EVENT_COLUMNS: Final = (
    "event_id", "payment_id", "type", "command_type", "partner_id", "account_id",
    "amount_minor", "currency", "code", "issued_at", "logged_at", "events_partition",
    "events_offset",
)  # fmt: skip
LINE_COLUMNS: Final = (
    "entry_id", "line_no", "payment_id", "kind", "phase", "account_id", "currency", "side",
    "amount_minor", "issued_at", "logged_at", "ledger_partition", "ledger_offset",
)  # fmt: skip
DEAD_LETTER_COLUMNS: Final = (
    "dlq_partition", "dlq_offset", "reason", "detail", "origin_topic", "origin_partition",
    "origin_offset", "payload_size", "payload_sha256", "logged_at",
)  # fmt: skip
COLUMNS: Final = {
    "events": EVENT_COLUMNS, "ledger_lines": LINE_COLUMNS, "dead_letters": DEAD_LETTER_COLUMNS,
}  # fmt: skip
"""The fact tables and their columns, in the order the row functions give them."""


def at(time_ms: int) -> datetime:
    """Unix milliseconds as the UTC instant ClickHouse's DateTime64(3) stores."""
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC)


def event_row(event: Event, *, partition: int, offset: int, logged_at_ms: int) -> list[Any]:
    return [
        event.event_id, event.payment_id, event.type, event.command_type, event.partner_id,
        event.account_id, event.amount_minor, event.currency, event.code,
        at(event.issued_at_ms), at(logged_at_ms), partition, offset,
    ]  # fmt: skip


def line_rows(
    entry: JournalEntry, *, partition: int, offset: int, logged_at_ms: int
) -> list[list[Any]]:
    return [
        [entry.entry_id, number, entry.payment_id, entry.kind, entry.phase, line.account_id,
         line.currency, line.side, line.amount_minor, at(entry.issued_at_ms), at(logged_at_ms),
         partition, offset]
        for number, line in enumerate(entry.lines)
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
