"""Rows of the audit store, built from the records the sink reads (pure).

Each fact -- a journal entry, an event, a dead letter -- becomes its rows and
one canonical body for the hash-chained ``audit_log``. The body is a
function of the fact and its place in its topic partition only, so
``audit verify`` can rebuild it from the stored rows and compare, and the
chain of a partition is the same whoever writes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from paystream.ledger import Event, JournalEntry

Kind = Literal["journal_entry", "event", "dead_letter"]
GENESIS_HASH = bytes(32)
"""The ``prev_hash`` of a chain's first row."""
DLQ_STORED_PREFIX_MAX = 4096
"""Bytes of a dead letter's key and value kept in ``dlq_records`` (the topic keeps more)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a fact was read: its topic kind (``ledger``, ``events``, ``dlq``) and position."""

    kind: Literal["ledger", "events", "dlq"]
    partition: int
    offset: int

    @property
    def chain(self) -> str:
        """The audit chain of this fact: one per source topic partition."""
        return f"{self.kind}:{self.partition}"


@dataclass(frozen=True, slots=True)
class AuditRow:
    chain: str
    kind: Kind
    ref: str
    body: str


def canonical(fields: Mapping[str, Any]) -> str:
    """The one text of a row that is hashed: JSON, sorted keys, no spaces, integers exact."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: bytes, body: str) -> bytes:
    """``sha256(prev_hash || body)``."""
    return hashlib.sha256(prev_hash + body.encode("utf-8")).digest()


# --- journal entries ------------------------------------------------------------------


def entry_row(entry: JournalEntry, origin: Origin) -> tuple[Any, ...]:
    return (
        entry.entry_id, entry.payment_id, entry.kind, entry.phase, entry.pending_entry_id,
        entry.partner_id, entry.account_id, entry.issued_at_ms, origin.partition, origin.offset,
    )  # fmt: skip


ENTRY_COLUMNS = (
    "entry_id", "payment_id", "kind", "phase", "pending_entry_id", "partner_id", "account_id",
    "issued_at_ms", "ledger_partition", "ledger_offset",
)  # fmt: skip


def line_rows(entry: JournalEntry) -> list[tuple[Any, ...]]:
    return [
        (entry.entry_id, number, line.account_id, line.currency, line.side, line.amount_minor,
         entry.phase)
        for number, line in enumerate(entry.lines)
    ]  # fmt: skip


LINE_COLUMNS = ("entry_id", "line_no", "account_id", "currency", "side", "amount_minor", "phase")


def entry_audit(entry_fields: Sequence[Any], lines: Sequence[Sequence[Any]]) -> AuditRow:
    """The audit row of a journal entry, from its ``journal_entries`` and ``ledger_lines`` rows."""
    fields = dict(zip(ENTRY_COLUMNS, entry_fields, strict=True))
    fields["lines"] = [dict(zip(LINE_COLUMNS[1:], line[1:], strict=True)) for line in lines]
    origin = Origin("ledger", fields["ledger_partition"], fields["ledger_offset"])
    return AuditRow(origin.chain, "journal_entry", fields["entry_id"], canonical(fields))


# --- events ---------------------------------------------------------------------------


EVENT_COLUMNS = (
    "event_id", "payment_id", "type", "command_type", "partner_id", "account_id",
    "counterparty_account_id", "amount_minor", "currency", "code", "original_payment_id",
    "issued_at_ms", "events_partition", "events_offset", "reference",
)  # fmt: skip
ADDED_EVENT_COLUMNS = ("reference",)
"""Columns added after the first events were chained: in an event's audit body only when
set, so the bodies (and hashes) of every event chained before them stay as they were."""


def event_row(event: Event, origin: Origin) -> tuple[Any, ...]:
    return (
        event.event_id, event.payment_id, event.type, event.command_type, event.partner_id,
        event.account_id, event.counterparty_account_id, event.amount_minor, event.currency,
        event.code, event.original_payment_id, event.issued_at_ms, origin.partition,
        origin.offset, event.reference,
    )  # fmt: skip


def event_audit(fields: Sequence[Any]) -> AuditRow:
    named = dict(zip(EVENT_COLUMNS, fields, strict=True))
    for column in ADDED_EVENT_COLUMNS:
        if named[column] is None:
            del named[column]
    origin = Origin("events", named["events_partition"], named["events_offset"])
    return AuditRow(origin.chain, "event", named["event_id"], canonical(named))


# --- payments -------------------------------------------------------------------------

STEP_COLUMN = {
    "Debited": "debited_at_ms",
    "Completed": "completed_at_ms",
    "Reversed": "reversed_at_ms",
    "Rejected": "rejected_at_ms",
}
PAYMENT_COLUMNS = (
    "payment_id", "command_type", "partner_id", "account_id", "counterparty_account_id",
    "amount_minor", "currency", "status", "code", "created_at_ms", *STEP_COLUMN.values(),
    "updated_at_ms", "last_event_id", "reference",
)  # fmt: skip
PAYMENT_LATEST = ("status", "code", "updated_at_ms", "last_event_id")
"""Columns a later event of the payment sets."""
PAYMENT_FIRST_KNOWN = (
    "counterparty_account_id", "amount_minor", "currency", "reference", *STEP_COLUMN.values(),
)  # fmt: skip
"""Columns a later event fills in only if no earlier one did; the rest stay as first seen."""
_LATEST = frozenset(PAYMENT_COLUMNS.index(c) for c in PAYMENT_LATEST)
_FIRST_KNOWN = frozenset(PAYMENT_COLUMNS.index(c) for c in PAYMENT_FIRST_KNOWN)


def payment_row(event: Event) -> tuple[Any, ...]:
    """The ``payments`` row one of a payment's own events says."""
    steps = [
        event.issued_at_ms if STEP_COLUMN.get(event.type) == column else None
        for column in STEP_COLUMN.values()
    ]
    return (
        event.payment_id, event.command_type, event.partner_id, event.account_id,
        event.counterparty_account_id, event.amount_minor, event.currency, event.type, event.code,
        event.issued_at_ms, *steps, event.issued_at_ms, event.event_id, event.reference,
    )  # fmt: skip


def payment_then(before: Sequence[Any], later: Sequence[Any]) -> tuple[Any, ...]:
    """A payment's row after a later event's row (the sink's upsert does the same in SQL)."""
    return tuple(
        _column_then(i, was, now) for i, (was, now) in enumerate(zip(before, later, strict=True))
    )


def _column_then(index: int, was: Any, now: Any) -> Any:
    if index in _LATEST or (index in _FIRST_KNOWN and was is None):
        return now
    return was


# --- dead letters ---------------------------------------------------------------------


DLQ_COLUMNS = (
    "dlq_partition", "dlq_offset", "reason", "detail", "origin_topic", "origin_partition",
    "origin_offset", "record_key", "payload_prefix", "payload_size", "payload_sha256",
)  # fmt: skip


def dlq_row(
    headers: Mapping[str, bytes], key: bytes | None, value: bytes | None, origin: Origin
) -> tuple[Any, ...]:
    """A dead letter's row: its reason and origin from the headers, bounded prefixes.

    A record the worker already cut (``dlq.size``/``dlq.sha256`` headers) keeps the
    original's size and digest; otherwise they are the record's own.
    """
    payload = value or b""
    size = _int(headers.get("dlq.size"))
    digest = headers.get("dlq.sha256")
    return (
        origin.partition, origin.offset, _text(headers.get("dlq.reason")) or "unknown",
        _text(headers.get("dlq.detail")), _text(headers.get("dlq.topic")),
        _int(headers.get("dlq.partition")), _int(headers.get("dlq.offset")),
        None if key is None else key[:DLQ_STORED_PREFIX_MAX], payload[:DLQ_STORED_PREFIX_MAX],
        len(payload) if size is None else size,
        hashlib.sha256(payload).hexdigest() if digest is None else _text(digest),
    )  # fmt: skip


def dlq_audit(fields: Sequence[Any]) -> AuditRow:
    named = dict(zip(DLQ_COLUMNS, fields, strict=True))
    for column in ("record_key", "payload_prefix"):
        value = named[column]
        named[column] = None if value is None else bytes(value).hex()
    origin = Origin("dlq", named["dlq_partition"], named["dlq_offset"])
    return AuditRow(
        origin.chain, "dead_letter", f"{origin.partition}.{origin.offset}", canonical(named)
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", errors="replace")


def _int(value: bytes | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
