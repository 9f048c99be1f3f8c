"""Rows of the audit store, built from the records the sink reads (pure).

Each fact -- a journal entry, an event, a dead letter -- becomes its rows and
one canonical body for the hash-chained ``audit_log``. The body is a
function of the fact and its place in its topic partition only, so
``audit verify`` can rebuild it from the stored rows and compare, and the
chain of a partition is the same whoever writes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from paystream.ledger import Event, JournalEntry, PayoutDetails

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
    "issued_at_ms", "events_partition", "events_offset", "reference", "rule_codes", "reason",
    "actor", "previous_type", "payout",
)  # fmt: skip
ADDED_EVENT_COLUMNS = ("reference", "rule_codes", "reason", "actor", "previous_type", "payout")
"""Columns added after the first events were chained: in an event's audit body only when
set, so the bodies (and hashes) of every event chained before them stay as they were."""


def event_row(event: Event, origin: Origin) -> tuple[Any, ...]:
    return (
        event.event_id, event.payment_id, event.type, event.command_type, event.partner_id,
        event.account_id, event.counterparty_account_id, event.amount_minor, event.currency,
        event.code, event.original_payment_id, event.issued_at_ms, origin.partition,
        origin.offset, event.reference, list(event.rule_codes) or None, event.reason,
        event.actor, event.previous_type, _details(event.payout),
    )  # fmt: skip


def _details(details: PayoutDetails | None) -> str | None:
    """A payout's details as the JSON text of the ``jsonb`` column (it reads back a dict)."""
    return None if details is None else canonical(dataclasses.asdict(details))


def event_audit(fields: Sequence[Any]) -> AuditRow:
    """An event's audit row, from its ``payment_events`` row as written or as read back."""
    named = dict(zip(EVENT_COLUMNS, fields, strict=True))
    for column in ADDED_EVENT_COLUMNS:
        if named[column] is None:
            del named[column]
    if isinstance(named.get("payout"), str):
        named["payout"] = json.loads(named["payout"])
    origin = Origin("events", named["events_partition"], named["events_offset"])
    return AuditRow(origin.chain, "event", named["event_id"], canonical(named))


# --- read models folded from events -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fold:
    """A read model with one row per id, folded from the id's events in log order.

    Each event says a whole row; a later one sets the ``latest`` columns, sets the
    ``latest_known`` ones when it has a value, fills the ``first_known`` ones only if no
    earlier event did; every other column stays as first seen. ``then`` does it in Python
    (the API's view of events it has seen), ``upsert`` in SQL (the sink's).
    """

    table: str
    columns: tuple[str, ...]
    latest: tuple[str, ...]
    latest_known: tuple[str, ...] = ()
    first_known: tuple[str, ...] = ()

    def then(self, before: Sequence[Any], later: Sequence[Any]) -> tuple[Any, ...]:
        """The row after a later event's row."""
        return tuple(
            self._column_then(name, was, now)
            for name, was, now in zip(self.columns, before, later, strict=True)
        )

    def _column_then(self, name: str, was: Any, now: Any) -> Any:
        if name in self.latest:
            return now
        if name in self.latest_known:
            return was if now is None else now
        if name in self.first_known and was is None:
            return now
        return was

    @property
    def upsert(self) -> str:
        """``INSERT ... ON CONFLICT DO UPDATE`` from the same-named stage (``stage_<table>``)."""
        columns, table = ", ".join(self.columns), self.table
        updates = ", ".join(
            [f"{c} = excluded.{c}" for c in self.latest]
            + [f"{c} = coalesce(excluded.{c}, {table}.{c})" for c in self.latest_known]
            + [f"{c} = coalesce({table}.{c}, excluded.{c})" for c in self.first_known]
        )
        return (
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM stage_{table}"
            f" ORDER BY 1 ON CONFLICT ({self.columns[0]}) DO UPDATE SET {updates}"
        )


def fold(shape: Fold, rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """One row per id (the first column), each the fold of its rows in order."""
    folded: dict[Any, tuple[Any, ...]] = {}
    for row in rows:
        before = folded.get(row[0])
        folded[row[0]] = tuple(row) if before is None else shape.then(before, row)
    return list(folded.values())


# --- payments -------------------------------------------------------------------------

STEP_COLUMN = {
    "Debited": "debited_at_ms",
    "Completed": "completed_at_ms",
    "Reversed": "reversed_at_ms",
    "Rejected": "rejected_at_ms",
}
PAYMENTS = Fold(
    table="payments",
    columns=(
        "payment_id", "command_type", "partner_id", "account_id", "counterparty_account_id",
        "amount_minor", "currency", "status", "code", "created_at_ms", *STEP_COLUMN.values(),
        "updated_at_ms", "last_event_id", "reference",
    ),
    latest=("status", "code", "updated_at_ms", "last_event_id"),
    first_known=(
        "counterparty_account_id", "amount_minor", "currency", "reference",
        *STEP_COLUMN.values(),
    ),
)  # fmt: skip


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


# --- payouts --------------------------------------------------------------------------

PAYOUT_STEP_COLUMN = {
    "Held": "held_at_ms",
    "Queued": "queued_at_ms",
    "Sending": "sending_at_ms",
    "Settled": "settled_at_ms",
    "Failed": "failed_at_ms",
}
"""When a payout last entered each state (a payout approved again after an override is
queued twice: the row keeps the last)."""
PAYOUTS = Fold(
    table="payouts",
    columns=(
        "payout_id", "batch_id", "partner_id", "account_id", "amount_minor", "currency",
        "reference", "beneficiary_name", "beneficiary_country", "beneficiary_iban",
        "beneficiary_bic", "beneficiary_account_number", "beneficiary_routing_number", "status",
        "code", "reason", "rule_codes", "created_at_ms", *PAYOUT_STEP_COLUMN.values(),
        "updated_at_ms", "last_event_id",
    ),
    latest=("status", "code", "reason", "rule_codes", "updated_at_ms", "last_event_id"),
    latest_known=tuple(PAYOUT_STEP_COLUMN.values()),
)  # fmt: skip


def is_payout_state(event: Event) -> bool:
    """Whether ``event`` is a payout's own state (its request's answer included), not a
    duplicate request's answer (which never makes or changes a payout)."""
    return event.payout is not None and event.type != "Duplicate"


def payout_row(event: Event) -> tuple[Any, ...]:
    """The ``payouts`` row one of a payout's own events says."""
    d = event.payout
    if d is None:
        raise ValueError(f"not a payout's event: {event.event_id}")
    steps = [
        event.issued_at_ms if PAYOUT_STEP_COLUMN.get(event.type) == column else None
        for column in PAYOUT_STEP_COLUMN.values()
    ]
    return (
        event.payment_id, d.batch_id, event.partner_id, event.account_id, event.amount_minor,
        event.currency, event.reference, d.beneficiary_name, d.beneficiary_country,
        d.beneficiary_iban, d.beneficiary_bic, d.beneficiary_account_number,
        d.beneficiary_routing_number, event.type, event.code, event.reason,
        list(event.rule_codes), event.issued_at_ms, *steps, event.issued_at_ms, event.event_id,
    )  # fmt: skip


REVIEW_COLUMNS = (
    "event_id", "payout_id", "partner_id", "decision", "officer", "reason", "rule_codes",
    "status_before", "status_after", "decided_at_ms",
)  # fmt: skip


def review_row(event: Event) -> tuple[Any, ...] | None:
    """The ``payout_reviews`` row of a payout event a person's decision made (one with an
    actor), else None. The decision is read off the transition: a held payout approved
    (-> Queued) or rejected (-> Failed); anything else an override."""
    if event.actor is None or event.previous_type is None or not is_payout_state(event):
        return None
    decision = "override"
    if event.previous_type == "Held":
        decision = "approve" if event.type == "Queued" else "reject"
    return (
        event.event_id, event.payment_id, event.partner_id, decision, event.actor, event.reason,
        list(event.rule_codes), event.previous_type, event.type, event.issued_at_ms,
    )  # fmt: skip


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
