"""The journal as the Postgres audit store holds it, rebuilt into the core's entries, and what
differs between it and another journal (replay's).

The sink (:mod:`paystream.audit.store`) writes each journal entry as one ``journal_entries``
row and one ``ledger_lines`` row per line, numbered ``line_no`` 0, 1, ... in the entry's order
(:func:`paystream.audit.records.line_rows`). Every field of a :class:`JournalEntry` and of its
:class:`JournalLine`\\ s is kept, so an entry read back equals the one the sink was given
(the worker's, decoded from ``ledger``). The rows keep more than an entry carries: the ledger
partition and offset, ``recorded_at``, and each line's copy of its entry's phase. Those are
not returned, but the two a tampered store could make disagree with the entry -- a line's
phase other than its entry's, line numbers other than 0..n-1 -- are listed as anomalies.

:func:`read_journal` reads one snapshot: a read-only REPEATABLE READ transaction, the rows
through a server-side cursor :data:`FETCH_ROWS_MAX` at a time, and the sink's stored
positions (``sink_offsets``) in the same snapshot. The sink writes its rows and its positions
in one transaction, so the entries read are those of the ``ledger`` records below the stored
positions of its consumer group. It does not check that the entries balance: a store that
was tampered with is what it must be able to show.

The entries are held in memory, like the journal replay produces. Measured on the embedded
Postgres with 200,000 two-line entries over 5,000 accounts: 10-12 s (16,000-20,000 entries/s;
the query alone takes 1.2 s, fetching its 400,000 rows 3 s, the rest is building objects, half
of it Python's cyclic GC) and about 600 bytes held per entry, because the repeated strings
(kinds, phases, sides, currencies, partners, accounts) are interned: 1,150 bytes without.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from operator import itemgetter
from sys import intern
from typing import Any, Final, NamedTuple, cast

import psycopg
from psycopg.pq import TransactionStatus

from paystream.audit import db
from paystream.ledger import JournalEntry, JournalLine
from paystream.ledger.errors import InvariantViolation, ensure
from paystream.ledger.models import EntryKind, Phase, Side

__all__ = [
    "ANOMALIES_LISTED_MAX",
    "FETCH_ROWS_MAX",
    "JournalDifferences",
    "StoredJournal",
    "entry_difference",
    "journal_differences",
    "read_journal",
]

FETCH_ROWS_MAX: Final = 5_000
"""Rows per fetch from the server-side cursor (one row per line)."""
ANOMALIES_LISTED_MAX: Final = 100
"""Anomalies named in a :class:`StoredJournal`; the rest are counted."""
CURSOR_NAME: Final = "stored_journal"

Row = tuple[Any, ...]
SinkPosition = tuple[str, str, int]
"""(consumer group, topic, partition)"""

ENTRY_COLUMNS: Final = (
    "entry_id", "payment_id", "kind", "phase", "pending_entry_id", "partner_id", "account_id",
    "issued_at_ms",
)  # fmt: skip
LINE_COLUMNS: Final = ("line_no", "account_id", "currency", "side", "amount_minor", "phase")
JOURNAL_SQL: Final = (
    f"SELECT {', '.join('e.' + c for c in ENTRY_COLUMNS)},"
    f" {', '.join('l.' + c for c in LINE_COLUMNS)}"
    " FROM journal_entries e LEFT JOIN ledger_lines l ON l.entry_id = e.entry_id"
    " ORDER BY e.entry_id, l.line_no"
)
"""Every entry with its lines in order; an entry whose lines are all gone comes once, with
NULL line columns. (A line cannot outlive its entry: the foreign key.)"""
POSITIONS_SQL: Final = "SELECT consumer, topic, partition, next_offset FROM sink_offsets"


@dataclass(frozen=True, slots=True)
class StoredJournal:
    """The journal entries of the audit store and where its sinks stood, in one snapshot."""

    entries: dict[str, JournalEntry]
    """By entry id; each entry's lines in ``line_no`` order."""
    positions: dict[SinkPosition, int]
    """The next offset each sink consumer group stored per (group, topic, partition)."""
    anomalies: tuple[str, ...] = ()
    """Stored rows no JournalEntry can carry (the first ANOMALIES_LISTED_MAX)."""
    anomalies_total: int = 0

    def positions_of(self, consumer: str, topic: str) -> dict[int, int]:
        """Partition -> next offset of ``topic`` the group ``consumer`` stored (the Postgres
        sinks' group is ``topology.topics.postgres_sink_group(settings)``)."""
        return {p: n for (c, t, p), n in self.positions.items() if (c, t) == (consumer, topic)}


def read_journal(source: str | db.Connection) -> StoredJournal:
    """Every journal entry of the audit store at ``source`` (a DSN, or a connection with no
    transaction open, whose isolation level and read-only flag are restored afterwards)."""
    if isinstance(source, str):
        with db.connect(source, autocommit=True) as conn:
            return _read_snapshot(conn)
    return _read_snapshot(source)


def _read_snapshot(conn: db.Connection) -> StoredJournal:
    ensure(
        conn.info.transaction_status == TransactionStatus.IDLE,
        "read_journal opens its own snapshot: give it a connection with no transaction open",
    )
    saved = (conn.isolation_level, conn.read_only)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    try:
        with conn.transaction(force_rollback=True):
            # Every row is read: plan for all of them, not for the first tenth.
            conn.execute("SET LOCAL cursor_tuple_fraction = 1.0")
            positions = {(c, t, p): n for c, t, p, n in conn.execute(POSITIONS_SQL).fetchall()}
            return _journal(_stream(conn), positions)
    finally:
        if not conn.closed:
            conn.isolation_level, conn.read_only = saved


def _stream(conn: db.Connection) -> Iterator[Row]:
    with conn.cursor(name=CURSOR_NAME) as cursor:
        cursor.execute(JOURNAL_SQL)
        while rows := cursor.fetchmany(FETCH_ROWS_MAX):
            yield from rows


@dataclass(slots=True)
class _Anomalies:
    listed: list[str] = field(default_factory=list)
    total: int = 0

    def extend(self, found: Sequence[str]) -> None:
        self.total += len(found)
        self.listed += found[: max(0, ANOMALIES_LISTED_MAX - len(self.listed))]


def _journal(rows: Iterator[Row], positions: dict[SinkPosition, int]) -> StoredJournal:
    entries: dict[str, JournalEntry] = {}
    anomalies = _Anomalies()
    width = len(ENTRY_COLUMNS)
    for entry_id, group in itertools.groupby(rows, key=itemgetter(0)):
        joined = list(group)
        lines = [row[width:] for row in joined if row[width] is not None]
        entries[entry_id] = _entry(joined[0][:width], lines)
        if found := _line_anomalies(entry_id, joined[0][3], lines):
            anomalies.extend(found)
    return StoredJournal(entries, positions, tuple(anomalies.listed), anomalies.total)


def _entry(entry: Row, lines: Sequence[Row]) -> JournalEntry:
    """A ``journal_entries`` row (ENTRY_COLUMNS) and its ``ledger_lines`` (LINE_COLUMNS, in
    line order) as the entry they were written from (repeated strings interned: see the
    module's docstring)."""
    entry_id, payment_id, kind, phase, pending_entry_id, partner_id, account_id, at_ms = entry
    return JournalEntry(
        entry_id=entry_id,
        payment_id=payment_id,
        kind=cast(EntryKind, intern(kind)),
        partner_id=intern(partner_id),
        account_id=intern(account_id),
        issued_at_ms=at_ms,
        lines=tuple(_line(line) for line in lines),
        phase=cast(Phase, intern(phase)),
        pending_entry_id=pending_entry_id,
    )


def _line(line: Row) -> JournalLine:
    _no, account_id, currency, side, amount_minor, _phase = line
    return JournalLine(
        account_id=intern(account_id), currency=intern(currency), side=cast(Side, intern(side)),
        amount_minor=amount_minor,
    )  # fmt: skip


def _line_anomalies(entry_id: str, phase: str, lines: Sequence[Row]) -> list[str]:
    """What the entry rebuilt from these lines cannot show."""
    if all(line[0] == n and line[-1] == phase for n, line in enumerate(lines)):
        return []
    found = []
    numbers = [line[0] for line in lines]
    if numbers != list(range(len(lines))):
        found.append(
            f"ledger_lines of {entry_id}: line_no {numbers}, not 0..{len(lines) - 1}"
            " (the entry's lines are the stored ones in line_no order)"
        )
    found += [
        f"ledger_lines of {entry_id} line_no {line[0]}: phase {line[-1]}, its entry's is {phase}"
        for line in lines
        if line[-1] != phase
    ]
    return found


# --- comparing (pure) -----------------------------------------------------------------


class JournalDifferences(NamedTuple):
    """Two journals by entry id, in replay's words (:class:`paystream.audit.replay.Compared`)."""

    matched: int
    missing_ids: list[str]
    """Stored, not replayed (sorted)."""
    extra_ids: list[str]
    """Replayed, not stored (sorted)."""
    differing: list[tuple[str, str]]
    """(entry id, what differs first: :func:`entry_difference`), by entry id."""


ENTRY_FIELDS: Final = tuple(f.name for f in fields(JournalEntry) if f.name != "lines")
LINE_FIELDS: Final = tuple(f.name for f in fields(JournalLine))


def journal_differences(
    replayed: Mapping[str, JournalEntry], stored: Mapping[str, JournalEntry]
) -> JournalDifferences:
    """Which entries match, which are on one side only, and how each other one differs."""
    matched = 0
    differing = []
    for entry_id in replayed.keys() & stored.keys():
        ours, theirs = replayed[entry_id], stored[entry_id]
        if ours == theirs:  # the dataclasses' own comparison: the fast path
            matched += 1
            continue
        found = entry_difference(ours, theirs)
        if found is None:  # e.g. lines in a list: not an entry the core or this module makes
            raise InvariantViolation(f"entries {entry_id} unequal, yet no field differs")
        differing.append((entry_id, found))
    return JournalDifferences(
        matched=matched,
        missing_ids=sorted(stored.keys() - replayed.keys()),
        extra_ids=sorted(replayed.keys() - stored.keys()),
        differing=sorted(differing),
    )


def entry_difference(replayed: JournalEntry, stored: JournalEntry) -> str | None:
    """The first field that differs (in JournalEntry's field order), else the first line that
    differs (numbered from 0, as ``ledger_lines.line_no``), else the line count; None: equal.

    For instance ``line 1 (account a-17, credit): amount_minor replayed 500, stored 5000``.
    """
    for name in ENTRY_FIELDS:
        found = _field_difference(name, getattr(replayed, name), getattr(stored, name))
        if found is not None:
            return found
    for number, (ours, theirs) in enumerate(zip(replayed.lines, stored.lines, strict=False)):
        for name in LINE_FIELDS:
            found = _field_difference(name, getattr(ours, name), getattr(theirs, name))
            if found is not None:
                return f"line {number} (account {ours.account_id}, {ours.side}): {found}"
    return _field_difference("line count", len(replayed.lines), len(stored.lines))


def _field_difference(name: str, replayed: object, stored: object) -> str | None:
    if replayed == stored:
        return None
    return f"{name} replayed {_shown(replayed)}, stored {_shown(stored)}"


def _shown(value: object) -> str:
    return str(value) if isinstance(value, int) else repr(value)
