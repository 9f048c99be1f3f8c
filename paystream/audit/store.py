"""The audit store's writes: one Postgres transaction per sink batch, offsets included.

Facts (journal entries and their lines, events, dead letters) are inserted
``ON CONFLICT DO NOTHING``; only the ones that were new move the read models
(``accounts``, ``payments``) and get an ``audit_log`` row, so a batch written
twice changes nothing. The batch's consumer positions are written in the same
transaction, and only if the stored positions are still the ones this sink
started the batch from: a sink that lost its partitions to another copy
meanwhile is refused (:class:`Fenced`) and rolls everything back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from paystream.audit import records
from paystream.audit.projection import AccountDelta, entry_deltas, merge
from paystream.audit.records import AuditRow, Origin
from paystream.ledger import (
    DirectoryEntry,
    Event,
    JournalEntry,
    is_own_event,
    is_system_account_id,
)
from paystream.ledger.accounts import SYSTEM_PARTNER_ID
from paystream.ledger.errors import InvariantViolation

SINK_ROLE = "paystream_sink"
CONNECT_TIMEOUT_S = 5
STEP_COLUMN = {
    "Debited": "debited_at_ms",
    "Completed": "completed_at_ms",
    "Reversed": "reversed_at_ms",
    "Rejected": "rejected_at_ms",
}
Position = tuple[str, int]
"""(topic, partition)"""
Connection = psycopg.Connection[tuple[Any, ...]]


class Fenced(RuntimeError):
    """Another sink moved these partitions' stored positions: this batch is not ours to write."""


@dataclass(slots=True)
class Batch:
    """What the sink read, decoded, in log order per partition."""

    entries: list[tuple[JournalEntry, Origin]] = field(default_factory=list)
    events: list[tuple[Event, Origin]] = field(default_factory=list)
    dead_letters: list[tuple[tuple[Any, ...], Origin]] = field(default_factory=list)
    directory: list[DirectoryEntry] = field(default_factory=list)
    """Accounts' status, owner and currency, in log order per account."""

    @property
    def size(self) -> int:
        return len(self.entries) + len(self.events) + len(self.dead_letters) + len(self.directory)


@dataclass(frozen=True, slots=True)
class ChainHead:
    seq: int
    hash: bytes


GENESIS = ChainHead(0, records.GENESIS_HASH)


def stored_positions(
    conn: Connection, consumer: str, positions: Iterable[Position]
) -> dict[Position, int]:
    """The next offset to read per (topic, partition), for those the sink has stored."""
    wanted = list(positions)
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM sink_offsets WHERE consumer = %s"
        " AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))",
        (consumer, [t for t, _ in wanted], [p for _, p in wanted]),
    ).fetchall()
    return {(topic, partition): offset for topic, partition, offset in rows}


TABLES = (
    "journal_entries", "ledger_lines", "accounts", "payments", "payment_events", "dlq_records",
    "audit_log",
)  # fmt: skip


def row_counts(dsn: str) -> dict[str, int]:
    """Rows per table of the audit store."""
    with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in TABLES
        }


def chain_heads(conn: Connection, chains: Iterable[str]) -> dict[str, ChainHead]:
    """The last row of each chain (GENESIS for an empty one)."""
    heads = {chain: GENESIS for chain in chains}
    rows = conn.execute(
        "SELECT DISTINCT ON (chain) chain, seq, hash FROM audit_log WHERE chain = ANY(%s)"
        " ORDER BY chain, seq DESC",
        (list(heads),),
    ).fetchall()
    for chain, seq, digest in rows:
        heads[chain] = ChainHead(seq, bytes(digest))
    return heads


def write(
    conn: Connection,
    batch: Batch,
    *,
    consumer: str,
    started_at: Mapping[Position, int | None],
    next_offsets: Mapping[Position, int],
    heads: dict[str, ChainHead],
) -> dict[str, int]:
    """Write ``batch`` and its positions in one transaction; rows written by table.

    ``started_at``: the stored position each partition was read from (None: none
    was stored). ``heads`` is advanced only once the transaction has committed.
    """
    with conn.transaction():
        counts, audit = _facts(conn, batch)
        _directory(conn, batch.directory, counts)
        new_heads = _append_audit(conn, audit, heads)
        counts["audit_log"] = len(audit)
        _move_positions(conn, consumer, started_at, next_offsets)
    heads.update(new_heads)
    return counts


def _facts(conn: Connection, batch: Batch) -> tuple[dict[str, int], list[AuditRow]]:
    counts: dict[str, int] = defaultdict(int)
    audit: list[AuditRow] = []
    new_entries = _insert_new(
        conn, "journal_entries", records.ENTRY_COLUMNS,
        [records.entry_row(e, o) for e, o in batch.entries],
    )  # fmt: skip
    entries = [(e, o) for e, o in batch.entries if e.entry_id in new_entries]
    lines = [line for entry, _ in entries for line in records.line_rows(entry)]
    _insert(conn, "ledger_lines", records.LINE_COLUMNS, lines)
    _accounts_from_entries(conn, entries)
    for entry, origin in entries:
        audit.append(
            records.entry_audit(records.entry_row(entry, origin), records.line_rows(entry))
        )
    counts.update(journal_entries=len(entries), ledger_lines=len(lines))
    event_rows = {e.event_id: records.event_row(e, o) for e, o in batch.events}
    new_events = _insert_new(
        conn, "payment_events", records.EVENT_COLUMNS, list(event_rows.values())
    )
    events = [(e, o) for e, o in batch.events if e.event_id in new_events]
    counts["payments"] = _payments(conn, [e for e, _ in events if is_own_event(e)])
    audit += [records.event_audit(event_rows[e.event_id]) for e, _ in events]
    counts["payment_events"] = len(events)
    dead_rows = [row for row, _ in batch.dead_letters]
    new_dead = _insert_new(conn, "dlq_records", records.DLQ_COLUMNS, dead_rows, key_columns=2)
    audit += [records.dlq_audit(row) for row in dead_rows if (row[0], row[1]) in new_dead]
    counts["dlq_records"] = len(new_dead)
    return counts, audit


def _insert(
    conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    if not rows:
        return
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
        " ON CONFLICT DO NOTHING"
    )
    with conn.cursor() as cur:
        cur.executemany(sql, rows)


def _insert_new(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    *,
    key_columns: int = 1,
) -> set[Any]:
    """Insert ``rows`` that are not there yet; the keys (first ``key_columns``) of the new ones."""
    if not rows:
        return set()
    keys = ", ".join(columns[:key_columns])
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
        f" ON CONFLICT DO NOTHING RETURNING {keys}"
    )
    new: set[Any] = set()
    with conn.cursor() as cur:
        cur.executemany(sql, rows, returning=True)
        for _ in cur.results():
            row = cur.fetchone()
            if row is not None:
                new.add(row[0] if key_columns == 1 else tuple(row))
    return new


def _accounts_from_entries(conn: Connection, entries: list[tuple[JournalEntry, Origin]]) -> None:
    """Add the new entries' lines to the balance projection, accounts in a fixed order."""
    deltas: dict[str, AccountDelta] = {}
    position: dict[str, Origin] = {}
    for entry, origin in entries:
        more = entry_deltas(entry)
        merge(deltas, more)
        for account_id in more:
            position[account_id] = origin
    ordered = sorted(deltas.items())
    if not ordered:
        return
    with conn.cursor() as cur:
        # Rows first, then the deltas: a delta may be negative (a reservation released),
        # and Postgres checks constraints on the row an INSERT proposes, before ON CONFLICT.
        cur.executemany(
            "INSERT INTO accounts (account_id, currency, partner_id, status)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (account_id) DO NOTHING",
            [(account_id, delta.currency, *_owner(account_id)) for account_id, delta in ordered],
        )
        cur.executemany(
            "UPDATE accounts SET"
            " currency = coalesce(currency, %s),"
            " posted_debits_minor = posted_debits_minor + %s,"
            " posted_credits_minor = posted_credits_minor + %s,"
            " pending_debits_minor = pending_debits_minor + %s,"
            " pending_credits_minor = pending_credits_minor + %s,"
            " version = version + %s, ledger_partition = %s, ledger_offset = %s,"
            " updated_at = now() WHERE account_id = %s",
            [
                (d.currency, *d.totals, d.lines, position[account_id].partition,
                 position[account_id].offset, account_id)
                for account_id, d in ordered
            ],
        )  # fmt: skip


def _owner(account_id: str) -> tuple[str | None, str | None]:
    """(partner, status) of an account first seen in the ledger: system shards are the
    platform's and always open (the core makes them on first use; the directory has only
    clients' accounts, and fills those in)."""
    return (SYSTEM_PARTNER_ID, "open") if is_system_account_id(account_id) else (None, None)


def _directory(conn: Connection, entries: list[DirectoryEntry], counts: dict[str, int]) -> None:
    """Status, owner and currency of accounts, from the workers' directory (ordered per account)."""
    latest = {entry.account_id: entry for entry in entries}
    rows = [(e.account_id, e.currency, e.partner_id, e.status) for _, e in sorted(latest.items())]
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO accounts (account_id, currency, partner_id, status, version)"
            " VALUES (%s, %s, %s, %s, 1) ON CONFLICT (account_id) DO UPDATE SET"
            " currency = excluded.currency, partner_id = excluded.partner_id,"
            " status = excluded.status, version = accounts.version + 1, updated_at = now()"
            " WHERE (accounts.currency, accounts.partner_id, accounts.status)"
            " IS DISTINCT FROM (excluded.currency, excluded.partner_id, excluded.status)",
            rows,
        )
    counts["accounts"] += len(rows)


def _payments(conn: Connection, events: list[Event]) -> int:
    """Each payment's latest status, from its own events (they arrive in order: one events
    partition each). Answers to records that repeated or misused an id stay in
    ``payment_events`` only: they never create or change a payment."""
    if not events:
        return 0
    rows = [_payment_row(event) for event in events]
    steps = ", ".join(
        f"{column} = coalesce(payments.{column}, excluded.{column})"
        for column in STEP_COLUMN.values()
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO payments (payment_id, command_type, partner_id, account_id,"
            " counterparty_account_id, amount_minor, currency, status, code, created_at_ms,"
            " debited_at_ms, completed_at_ms, reversed_at_ms, rejected_at_ms, updated_at_ms,"
            " last_event_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s) ON CONFLICT (payment_id) DO UPDATE SET status = excluded.status,"
            " code = excluded.code, updated_at_ms = excluded.updated_at_ms,"
            " last_event_id = excluded.last_event_id,"
            " counterparty_account_id = coalesce(payments.counterparty_account_id,"
            " excluded.counterparty_account_id),"
            " amount_minor = coalesce(payments.amount_minor, excluded.amount_minor),"
            " currency = coalesce(payments.currency, excluded.currency), " + steps,
            rows,
        )
    return len(rows)


def _payment_row(event: Event) -> tuple[Any, ...]:
    steps = [
        event.issued_at_ms if STEP_COLUMN.get(event.type) == column else None
        for column in STEP_COLUMN.values()
    ]
    return (
        event.payment_id, event.command_type, event.partner_id, event.account_id,
        event.counterparty_account_id, event.amount_minor, event.currency, event.type, event.code,
        event.issued_at_ms, *steps, event.issued_at_ms, event.event_id,
    )  # fmt: skip


def _append_audit(
    conn: Connection, audit: list[AuditRow], heads: Mapping[str, ChainHead]
) -> dict[str, ChainHead]:
    """Chain each new fact behind its chain's head; the new heads."""
    new_heads: dict[str, ChainHead] = {}
    rows = []
    for row in audit:
        head = new_heads.get(row.chain) or heads.get(row.chain)
        if head is None:
            raise InvariantViolation(f"no head loaded for audit chain {row.chain}")
        digest = records.chain_hash(head.hash, row.body)
        rows.append((row.chain, head.seq + 1, row.kind, row.ref, row.body, head.hash, digest))
        new_heads[row.chain] = ChainHead(head.seq + 1, digest)
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO audit_log (chain, seq, kind, ref, body, prev_hash, hash)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
    return new_heads


def _move_positions(
    conn: Connection,
    consumer: str,
    started_at: Mapping[Position, int | None],
    next_offsets: Mapping[Position, int],
) -> None:
    """Store the next offsets, if each stored position is still where this batch began."""
    with conn.cursor() as cur:
        for (topic, partition), offset in sorted(next_offsets.items()):
            expected = started_at.get((topic, partition))
            if expected is None:
                cur.execute(
                    "INSERT INTO sink_offsets (consumer, topic, partition, next_offset)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (consumer, topic, partition, offset),
                )
            else:
                cur.execute(
                    "UPDATE sink_offsets SET next_offset = %s, updated_at = now()"
                    " WHERE consumer = %s AND topic = %s AND partition = %s AND next_offset = %s",
                    (offset, consumer, topic, partition, expected),
                )
            if cur.rowcount != 1:
                raise Fenced(f"{topic}[{partition}] moved from {expected} by another sink")
