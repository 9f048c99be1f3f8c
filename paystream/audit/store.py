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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg

from paystream.audit import db, records
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
Position = tuple[str, int]
"""(topic, partition)"""
Connection = db.Connection
Cursor = psycopg.Cursor[tuple[Any, ...]]
T = TypeVar("T")
ACCOUNT_DELTA_COLUMNS = (
    "account_id", "currency", "partner_id", "status", "posted_debits_minor",
    "posted_credits_minor", "pending_debits_minor", "pending_credits_minor", "version",
    "ledger_partition", "ledger_offset",
)  # fmt: skip
"""What a batch's new entries add to each account (``version``: how many lines)."""
DIRECTORY_COLUMNS = ("account_id", "currency", "partner_id", "status")


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
    "audit_log", "payouts", "payout_reviews",
)  # fmt: skip


def row_counts(dsn: str) -> dict[str, int]:
    """Rows per table of the audit store."""
    with db.connect(dsn, autocommit=True) as conn:
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
        move_positions(conn, consumer, started_at, next_offsets)
    heads.update(new_heads)
    return counts


def _facts(conn: Connection, batch: Batch) -> tuple[dict[str, int], list[AuditRow]]:
    counts: dict[str, int] = defaultdict(int)
    audit: list[AuditRow] = []
    with conn.cursor() as cur:
        _create_stages(cur)
        entry_rows = {e.entry_id: records.entry_row(e, o) for e, o in batch.entries}
        new_entries = _insert_new(cur, "stage_entries", entry_rows.values())
        entries = _first_of_each(batch.entries, new_entries, lambda e: e.entry_id)
        lines: list[tuple[Any, ...]] = []
        for entry, _ in entries:
            entry_lines = records.line_rows(entry)
            lines += entry_lines
            audit.append(records.entry_audit(entry_rows[entry.entry_id], entry_lines))
        _copy(cur, "ledger_lines", records.LINE_COLUMNS, lines)
        _accounts_from_entries(cur, entries)
        counts.update(journal_entries=len(entries), ledger_lines=len(lines))
        event_rows = {e.event_id: records.event_row(e, o) for e, o in batch.events}
        new_events = _insert_new(cur, "stage_events", event_rows.values())
        events = [e for e, _ in _first_of_each(batch.events, new_events, lambda e: e.event_id)]
        own = [e for e in events if is_own_event(e)]
        payouts = [e for e in own if records.is_payout_state(e)]
        counts["payments"] = _fold(
            cur, records.PAYMENTS, [records.payment_row(e) for e in own if e.payout is None]
        )
        counts["payouts"] = _fold(cur, records.PAYOUTS, [records.payout_row(e) for e in payouts])
        reviews = [row for row in map(records.review_row, payouts) if row is not None]
        counts["payout_reviews"] = _copy(cur, "payout_reviews", records.REVIEW_COLUMNS, reviews)
        audit += [records.event_audit(event_rows[e.event_id]) for e in events]
        counts["payment_events"] = len(events)
        dead_rows = {(row[0], row[1]): row for row, _ in batch.dead_letters}
        new_dead = _insert_new(cur, "stage_dead_letters", dead_rows.values())
        audit += [records.dlq_audit(row) for key, row in dead_rows.items() if key in new_dead]
        counts["dlq_records"] = len(new_dead)
    return counts, audit


def _first_of_each(
    items: list[tuple[T, Origin]], new: set[Any], key: Callable[[T], Any]
) -> list[tuple[T, Origin]]:
    """The ``items`` whose key was new, in log order, each once (a log holds each id once;
    should one repeat, its first record is the one written)."""
    kept = []
    for item, origin in items:
        if key(item) in new:
            new.discard(key(item))
            kept.append((item, origin))
    return kept


# --- COPY, staged -------------------------------------------------------------------------
# executemany costs 13-25 µs of client CPU and 21-71 µs of Postgres CPU per row; COPY
# 1-3 and 12-24 (docs/benchmarks.md). Facts whose insert must say which rows were new
# (RETURNING) and upserts are COPYed into a temporary table first and moved with one
# INSERT ... SELECT. Plain inserts (lines of new entries, audit rows) are COPYed in place.

STAGES: dict[str, tuple[str, Sequence[str]]] = {
    "stage_entries": ("journal_entries", records.ENTRY_COLUMNS),
    "stage_events": ("payment_events", records.EVENT_COLUMNS),
    "stage_dead_letters": ("dlq_records", records.DLQ_COLUMNS),
    "stage_payments": ("payments", records.PAYMENTS.columns),
    "stage_payouts": ("payouts", records.PAYOUTS.columns),
    "stage_account_deltas": ("accounts", ACCOUNT_DELTA_COLUMNS),
    "stage_directory": ("accounts", DIRECTORY_COLUMNS),
}
"""Temporary table -> (the table it feeds, its columns). Emptied at every commit."""
KEYS = {"stage_entries": 1, "stage_events": 1, "stage_dead_letters": 2}
"""How many leading columns are the key, for the stages of ``_insert_new``."""


def _create_stages(cur: Cursor) -> None:
    """This session's staging tables (no constraints: the real table checks each row).

    Made in the batch's transaction each time (a no-op once they exist), so a batch
    rolled back before they were ever committed does not leave the session without them.
    """
    cur.execute(
        "; ".join(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS"
            f" SELECT {', '.join(columns)} FROM {table} WITH NO DATA"
            for stage, (table, columns) in STAGES.items()
        )
    )


def _copy(cur: Cursor, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY ``rows`` into ``table``; how many."""
    count = 0
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def _stage(cur: Cursor, stage: str, rows: Iterable[Sequence[Any]]) -> tuple[str, str] | None:
    """COPY ``rows`` into ``stage``; (its table, its column list), or None if there were none."""
    table, columns = STAGES[stage]
    if _copy(cur, stage, columns, rows) == 0:
        return None
    return table, ", ".join(columns)


def _insert_new(cur: Cursor, stage: str, rows: Iterable[Sequence[Any]]) -> set[Any]:
    """Insert the ``rows`` that are not there yet; the keys of the new ones."""
    staged = _stage(cur, stage, rows)
    if staged is None:
        return set()
    table, columns = staged
    key_columns = KEYS[stage]
    keys = ", ".join(STAGES[stage][1][:key_columns])
    cur.execute(
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage}"
        f" ON CONFLICT DO NOTHING RETURNING {keys}"
    )
    return {row[0] if key_columns == 1 else tuple(row) for row in cur.fetchall()}


def _accounts_from_entries(cur: Cursor, entries: list[tuple[JournalEntry, Origin]]) -> None:
    """Add the new entries' lines to the balance projection."""
    deltas: dict[str, AccountDelta] = {}
    position: dict[str, Origin] = {}
    for entry, origin in entries:
        more = entry_deltas(entry)
        merge(deltas, more)
        for account_id in more:
            position[account_id] = origin
    rows = [
        (account_id, d.currency, *_owner(account_id), *d.totals, d.lines,
         position[account_id].partition, position[account_id].offset)
        for account_id, d in deltas.items()
    ]  # fmt: skip
    if _stage(cur, "stage_account_deltas", rows) is None:
        return
    # Rows first, then the deltas: a delta may be negative (a reservation released), and
    # Postgres checks constraints on the row an INSERT proposes, before ON CONFLICT. Rows
    # are created and locked in account order, so two sinks never wait for each other in
    # a circle.
    cur.execute(
        "INSERT INTO accounts (account_id, currency, partner_id, status)"
        " SELECT account_id, currency, partner_id, status FROM stage_account_deltas"
        " ORDER BY account_id ON CONFLICT (account_id) DO NOTHING"
    )
    cur.execute(
        "SELECT FROM accounts WHERE account_id IN (SELECT account_id FROM stage_account_deltas)"
        " ORDER BY account_id FOR UPDATE"
    )
    cur.execute(
        "UPDATE accounts a SET"
        " currency = coalesce(a.currency, d.currency),"
        " posted_debits_minor = a.posted_debits_minor + d.posted_debits_minor,"
        " posted_credits_minor = a.posted_credits_minor + d.posted_credits_minor,"
        " pending_debits_minor = a.pending_debits_minor + d.pending_debits_minor,"
        " pending_credits_minor = a.pending_credits_minor + d.pending_credits_minor,"
        " version = a.version + d.version, ledger_partition = d.ledger_partition,"
        " ledger_offset = d.ledger_offset, updated_at = now()"
        " FROM stage_account_deltas d WHERE a.account_id = d.account_id"
    )


def _owner(account_id: str) -> tuple[str | None, str | None]:
    """(partner, status) of an account first seen in the ledger: system shards are the
    platform's and always open (the core makes them on first use; the directory has only
    clients' accounts, and fills those in)."""
    return (SYSTEM_PARTNER_ID, "open") if is_system_account_id(account_id) else (None, None)


def _directory(conn: Connection, entries: list[DirectoryEntry], counts: dict[str, int]) -> None:
    """Status, owner and currency of accounts, from the workers' directory (ordered per account)."""
    latest = {entry.account_id: entry for entry in entries}
    rows = [(e.account_id, e.currency, e.partner_id, e.status) for e in latest.values()]
    with conn.cursor() as cur:
        if _stage(cur, "stage_directory", rows) is None:
            return
        cur.execute(
            "INSERT INTO accounts (account_id, currency, partner_id, status, version)"
            " SELECT account_id, currency, partner_id, status, 1 FROM stage_directory"
            " ORDER BY account_id ON CONFLICT (account_id) DO UPDATE SET"
            " currency = excluded.currency, partner_id = excluded.partner_id,"
            " status = excluded.status, version = accounts.version + 1, updated_at = now()"
            " WHERE (accounts.currency, accounts.partner_id, accounts.status)"
            " IS DISTINCT FROM (excluded.currency, excluded.partner_id, excluded.status)"
        )
    counts["accounts"] += len(rows)


def _fold(cur: Cursor, shape: records.Fold, rows: list[tuple[Any, ...]]) -> int:
    """Upsert the read model ``shape`` from its rows, in log order (an id's events arrive in
    order: one events partition each); how many ids."""
    folded = records.fold(shape, rows)
    if _stage(cur, f"stage_{shape.table}", folded) is None:
        return 0
    cur.execute(shape.upsert)
    return len(folded)


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
    with conn.cursor() as cur:
        _copy(cur, "audit_log", AUDIT_COLUMNS, rows)
    return new_heads


AUDIT_COLUMNS = ("chain", "seq", "kind", "ref", "body", "prev_hash", "hash")


def move_positions(
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
