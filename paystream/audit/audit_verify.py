"""``paystream audit verify``: check the Postgres audit store against itself and the ledger.

Every check reads one snapshot (a read-only REPEATABLE READ transaction), so a
sink writing meanwhile cannot make a consistent store look broken:

1. **Chains.** Each ``audit_log`` chain is walked in ``seq`` order: seq 1..n with
   no gap, ``prev_hash`` the previous row's hash (GENESIS for seq 1), ``hash`` =
   sha256(prev_hash || body).
2. **Facts against their audit rows.** Each journal entry (with its lines), event
   and dead letter is rebuilt into its canonical body with :mod:`records`, the
   functions the sink used, and ``sha256(prev_hash || rebuilt body)`` must be the
   audit row's hash. With check 1 that proves the stored body is the fact's body,
   without reading the bodies twice. A fact without its audit row, or an audit row
   without its fact, is named. The same pass checks each entry balances per
   currency and its lines carry its phase.
3. **Balances.** Σ debits = Σ credits per currency over all lines; no line without
   its entry.
4. **Accounts.** The four totals of every account are recomputed from
   ``ledger_lines`` in SQL (one ``GROUP BY``; the CASE weights come from
   :func:`projection.line_delta`, the sink's own definition) and compared with
   ``accounts``; only the differing accounts come back.
5. **The ledger topic** (optional): entries, lines and per-currency sums per
   partition, in Postgres and in the topic read read_committed from the start up
   to the positions the sink stored for its consumer group.

Streams read through server-side cursors in chunks of :data:`FETCH_ROWS_MAX`;
memory holds one entry's lines, one chain's head and per-(partition, currency)
counters. Problems are listed up to :data:`PROBLEMS_LISTED_MAX` and counted
beyond.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar, get_args

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from paystream.audit import db, records, store
from paystream.audit.projection import Totals, line_delta
from paystream.audit.records import AuditRow
from paystream.ledger import JournalEntry
from paystream.ledger.errors import ensure
from paystream.ledger.models import Phase, Side
from paystream.settings import KafkaConnection, Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.dlq import PoisonMessage
from paystream.topology.reader import drain
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, postgres_sink_group

__all__ = [
    "FETCH_ROWS_MAX",
    "PROBLEMS_LISTED_MAX",
    "PROGRESS_EVERY_ROWS",
    "AuditRef",
    "LedgerTopic",
    "LedgerTotals",
    "StoreReport",
    "account_problems",
    "chain_problems",
    "compare_totals",
    "entry_problems",
    "fact_problem",
    "ledger_topic_of",
    "verify_store",
]

PROBLEMS_LISTED_MAX = 100
"""Problems named in a report; the rest are counted."""
FETCH_ROWS_MAX = 5_000
"""Rows per fetch from a server-side cursor: what memory holds of a stream at once."""
PROGRESS_EVERY_ROWS = 200_000
"""A progress line per this many rows of a stream (none on small stores)."""
VERIFY_GROUP_ID = "paystream-audit-verify"
"""The group id of the topic reader (it assigns partitions and never commits)."""

TABLES = (*store.TABLES, "sink_offsets")
"""Counted in the report: the store's tables and where the sink stands."""
FACT_TABLES: dict[str, tuple[str, str]] = {
    "journal_entry": ("journal_entries", "journal entry"),
    "event": ("payment_events", "event"),
    "dead_letter": ("dlq_records", "dead letter"),
}
"""audit_log kind -> (its fact table, what to call one fact)."""
TOTAL_NAMES = ("posted_debits", "posted_credits", "pending_debits", "pending_credits")
T = TypeVar("T")
Row = tuple[Any, ...]
Connection = psycopg.Connection[Row]


# --- the report -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerTopic:
    """Where to read the ledger for check 5, and whose stored positions bound the read."""

    kafka: KafkaConnection
    topic: str
    serde: AvroSerde
    consumer: str
    """The sink's consumer group (``topology.topics.postgres_sink_group``)."""


def ledger_topic_of(settings: Settings) -> LedgerTopic:
    """The ledger topic, serde and sink consumer group that ``settings`` name."""
    topics = Topics.from_settings(settings)
    serde = AvroSerde(
        registry_from_url(settings.schema_registry_url, settings.data_dir),
        topics=topics.payloads(),
    )
    return LedgerTopic(
        kafka=settings.kafka, topic=topics.ledger, serde=serde,
        consumer=postgres_sink_group(settings),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoreReport:
    counts: dict[str, int]
    """Rows per table."""
    ledger_by_currency: dict[str, dict[str, int]]
    """currency -> lines, debits_minor, credits_minor (all lines)."""
    topic: dict[str, Any] | None
    """What was read from the ledger topic (None: not compared)."""
    problems: tuple[str, ...]
    """The first PROBLEMS_LISTED_MAX problems, in check order."""
    problems_total: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.problems_total == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts,
            "ledger_by_currency": self.ledger_by_currency,
            "topic": self.topic,
            "problems": list(self.problems),
            "problems_total": self.problems_total,
            "problems_not_listed": self.problems_total - len(self.problems),
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        """The human summary: counts, sums, and ``audit verify: ok`` or the problems."""
        lines = ["audit store: " + ", ".join(f"{t} {n:,}" for t, n in self.counts.items())]
        for currency, sums in sorted(self.ledger_by_currency.items()):
            lines.append(
                f"ledger {currency}: {sums['lines']:,} lines, debits {sums['debits_minor']:,},"
                f" credits {sums['credits_minor']:,}"
            )
        if self.topic is None:
            lines.append("ledger topic: not compared")
        else:
            lines.append(
                f"ledger topic {self.topic['topic']}: {self.topic['entries']:,} entries up to"
                f" the positions stored for {self.topic['consumer']}"
            )
        if self.ok:
            lines.append(f"audit verify: ok ({self.seconds:.1f} s)")
            return "\n".join(lines)
        lines.append(f"audit verify: FAILED, {self.problems_total:,} problems")
        lines += [f"  {problem}" for problem in self.problems]
        if self.problems_total > len(self.problems):
            lines.append(f"  ... and {self.problems_total - len(self.problems):,} more")
        return "\n".join(lines)


@dataclass(slots=True)
class Problems:
    """The first ``limit`` problems, and how many there were."""

    limit: int = PROBLEMS_LISTED_MAX
    listed: list[str] = field(default_factory=list)
    total: int = 0

    def extend(self, problems: Iterable[str | None]) -> None:
        """Add each problem (a None is none)."""
        for problem in problems:
            if problem is None:
                continue
            self.total += 1
            if len(self.listed) < self.limit:
                self.listed.append(problem)

    def count_more(self, unlisted: int) -> None:
        self.total += unlisted


@dataclass(frozen=True, slots=True)
class Progress:
    """A line to ``out`` every ``every_rows`` rows of a long stream (nothing when None)."""

    out: TextIO | None
    every_rows: int = PROGRESS_EVERY_ROWS

    def track(self, label: str, rows: Iterable[T], total: int) -> Iterator[T]:
        for done, row in enumerate(rows, 1):
            if self.out is not None and done % self.every_rows == 0:
                percent = min(100, 100 * done // max(total, 1))
                print(
                    f"audit verify: {label} {done:,}/{total:,} rows ({percent}%)",
                    file=self.out,
                    flush=True,
                )
            yield row


# --- pure checks ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditRef:
    """An audit row's place and digests (its body is checked by the chain walk)."""

    chain: str
    seq: int
    prev_hash: bytes
    hash: bytes

    @classmethod
    def of(cls, fields: Sequence[Any]) -> AuditRef | None:
        """From (ref, chain, seq, prev_hash, hash) of an outer join; None when ref is NULL."""
        if fields[0] is None:
            return None
        return cls(fields[1], fields[2], bytes(fields[3]), bytes(fields[4]))


def chain_problems(rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """Walk ``(chain, seq, prev_hash, hash, body)`` rows ordered by chain, seq."""
    chain, last_seq, last_hash = None, 0, records.GENESIS_HASH
    for name, seq, prev_hash, digest, body in rows:
        if name != chain:
            chain, last_seq, last_hash = name, 0, records.GENESIS_HASH
        where = f"audit_log {name} seq {seq}"
        if seq <= last_seq:  # only a seq below 1 (the CHECK dropped): the key orders the rest
            yield f"{where}: not a sequence number after seq {last_seq}"
        elif seq != last_seq + 1:
            yield f"{where}: follows seq {last_seq} (seq {last_seq + 1}..{seq - 1} missing)"
        elif bytes(prev_hash) != last_hash:
            before = "the genesis hash" if seq == 1 else f"the hash of seq {last_seq}"
            yield f"{where}: prev_hash is not {before}"
        if bytes(digest) != records.chain_hash(bytes(prev_hash), body):
            yield f"{where}: hash does not match its body"
        last_seq, last_hash = seq, bytes(digest)


def fact_problem(
    kind: str, key: str, rebuilt: AuditRow | None, audit: AuditRef | None
) -> str | None:
    """A stored fact (rebuilt into its audit row) against the audit row stored for it."""
    table, what = FACT_TABLES[kind]
    if audit is None:
        return f"{table} {key}: no audit_log row"
    where = f"audit_log {audit.chain} seq {audit.seq}"
    if rebuilt is None:
        return f"{where}: {what} {key} is not in {table}"
    if rebuilt.chain != audit.chain:
        return f"{where}: {what} {key} belongs to chain {rebuilt.chain}"
    if records.chain_hash(audit.prev_hash, rebuilt.body) != audit.hash:
        return f"{where}: {what} {key} as stored in {table} does not match its audited body"
    return None


def entry_problems(
    key: str, entry: Sequence[Any] | None, lines: Sequence[Sequence[Any]], audit: AuditRef | None
) -> list[str]:
    """One journal entry: its rows (``ENTRY_COLUMNS``, ``LINE_COLUMNS``) and its audit row."""
    if entry is None:
        found = fact_problem("journal_entry", key, None, audit)
        return [] if found is None else [found]
    problems = []
    if not lines:
        problems.append(f"ledger_lines: entry {key} has no lines")
    for currency, debits, credits in unbalanced(lines):
        problems.append(
            f"ledger_lines: entry {key} does not balance in {currency}"
            f" (debits {debits}, credits {credits})"
        )
    phase = entry[records.ENTRY_COLUMNS.index("phase")]
    if any(line[-1] != phase for line in lines):
        problems.append(f"ledger_lines: entry {key} has lines of another phase than {phase}")
    found = fact_problem("journal_entry", key, records.entry_audit(entry, lines), audit)
    return problems if found is None else [*problems, found]


def unbalanced(lines: Iterable[Sequence[Any]]) -> list[tuple[str, int, int]]:
    """(currency, Σ debits, Σ credits) of each currency whose lines do not balance."""
    debits: Counter[str] = Counter()
    credits: Counter[str] = Counter()
    for _entry_id, _no, _account, currency, side, amount_minor, _phase in lines:
        (debits if side == "debit" else credits)[currency] += amount_minor
    currencies = sorted(set(debits) | set(credits))
    return [(c, debits[c], credits[c]) for c in currencies if debits[c] != credits[c]]


@dataclass(frozen=True, slots=True)
class AccountRow:
    """An account whose stored row and ledger lines were compared (see ``ACCOUNTS_SQL``)."""

    account_id: str
    stored: Totals | None
    """None: no ``accounts`` row."""
    currency: str | None
    projected: Totals
    lines: int
    line_currencies: tuple[str, ...]


def account_problems(row: AccountRow) -> list[str]:
    where = f"accounts {row.account_id}"
    if row.stored is None:
        return [f"{where}: no row; its {row.lines} ledger lines give {_totals(row.projected)}"]
    problems = []
    if row.stored != row.projected:
        problems.append(
            f"{where}: stored {_totals(row.stored)} != ledger lines {_totals(row.projected)}"
        )
    if len(row.line_currencies) > 1:
        problems.append(f"{where}: ledger lines in {', '.join(row.line_currencies)}")
    elif row.line_currencies and row.currency not in (None, *row.line_currencies):
        problems.append(
            f"{where}: currency {row.currency}, ledger lines in {row.line_currencies[0]}"
        )
    return problems


def _totals(totals: Totals) -> str:
    return "(" + ", ".join(f"{n} {v}" for n, v in zip(TOTAL_NAMES, totals, strict=True)) + ")"


@dataclass(slots=True)
class LedgerTotals:
    """Entries per ledger partition; lines and sums per (partition, currency)."""

    entries: Counter[int] = field(default_factory=Counter)
    lines: Counter[tuple[int, str]] = field(default_factory=Counter)
    debits: Counter[tuple[int, str]] = field(default_factory=Counter)
    credits: Counter[tuple[int, str]] = field(default_factory=Counter)

    def add(self, partition: int, entry: JournalEntry) -> None:
        self.entries[partition] += 1
        for line in entry.lines:
            self.lines[(partition, line.currency)] += 1
            sums = self.debits if line.side == "debit" else self.credits
            sums[(partition, line.currency)] += line.amount_minor

    def of(self, key: tuple[int, str]) -> str:
        return f"{self.lines[key]} lines, debits {self.debits[key]}, credits {self.credits[key]}"


def compare_totals(
    stored: LedgerTotals, topic: LedgerTotals, positions: dict[int, int]
) -> list[str]:
    """Postgres against the topic read up to ``positions`` (partition -> next offset)."""
    problems = []
    for p in sorted(set(stored.entries) | set(topic.entries) | set(positions)):
        if stored.entries[p] != topic.entries[p]:
            problems.append(
                f"ledger partition {p}: {stored.entries[p]} journal entries in journal_entries,"
                f" {topic.entries[p]} in the topic up to offset {positions.get(p, 0)}"
            )
    for key in sorted(set(stored.lines) | set(topic.lines)):
        if stored.of(key) != topic.of(key):
            problems.append(
                f"ledger partition {key[0]} {key[1]}: journal_entries has {stored.of(key)};"
                f" the topic up to offset {positions.get(key[0], 0)} has {topic.of(key)}"
            )
    return problems


# --- SQL ------------------------------------------------------------------------------


def _weight_sql(index: int) -> str:
    """What a line adds to total ``index``, per phase and side, from the projection itself."""
    whens = [
        f"WHEN '{phase}:{side}' THEN {line_delta(phase, side, 1)[index]}"
        for phase in get_args(Phase)
        for side in get_args(Side)
        if line_delta(phase, side, 1)[index] != 0
    ]
    return f"sum(amount_minor * CASE phase || ':' || side {' '.join(whens)} ELSE 0 END)"


def _audit_join(kind: str, ref: str) -> str:
    return (
        "FULL JOIN (SELECT ref, chain, seq, prev_hash, hash FROM audit_log"
        f" WHERE kind = '{kind}') a ON a.ref = {ref}"
    )


CHAINS_SQL = "SELECT chain, seq, prev_hash, hash, body FROM audit_log ORDER BY chain, seq"
AUDIT_FIELDS = "a.ref, a.chain, a.seq, a.prev_hash, a.hash"
"""What the fact passes read of a fact's audit row (:meth:`AuditRef.of`)."""
AUDIT_WIDTH = len(AUDIT_FIELDS.split(","))
ENTRIES_SQL = (
    f"SELECT {', '.join('e.' + c for c in records.ENTRY_COLUMNS)}, {AUDIT_FIELDS},"
    f" {', '.join('l.' + c for c in records.LINE_COLUMNS)}"
    f" FROM journal_entries e {_audit_join('journal_entry', 'e.entry_id')}"
    " LEFT JOIN ledger_lines l ON l.entry_id = e.entry_id"
    " ORDER BY e.entry_id, a.ref, l.line_no"
)
EVENTS_SQL = (
    f"SELECT {', '.join('e.' + c for c in records.EVENT_COLUMNS)}, {AUDIT_FIELDS}"
    f" FROM payment_events e {_audit_join('event', 'e.event_id')}"
    " ORDER BY e.events_partition, e.events_offset, a.chain, a.seq"
)
DLQ_REF = "d.dlq_partition::text || '.' || d.dlq_offset::text"
"""A dead letter's audit ref (``records.dlq_audit``) in SQL."""
DLQ_SQL = (
    f"SELECT {', '.join('d.' + c for c in records.DLQ_COLUMNS)}, {AUDIT_FIELDS}"
    f" FROM dlq_records d {_audit_join('dead_letter', DLQ_REF)}"
    " ORDER BY d.dlq_partition, d.dlq_offset, a.chain, a.seq"
)
_PROJECTED_TOTALS = ", ".join(f"{_weight_sql(i)} AS {n}" for i, n in enumerate(TOTAL_NAMES))
_ZERO_IF_NO_LINES = ", ".join(f"coalesce(p.{n}, 0) AS {n}" for n in TOTAL_NAMES)
ACCOUNTS_SQL = f"""
WITH projected AS (
    SELECT account_id, {_PROJECTED_TOTALS}, count(*) AS lines,
           array_agg(DISTINCT currency::text ORDER BY currency::text) AS cur
    FROM ledger_lines GROUP BY account_id
), compared AS (
    SELECT coalesce(a.account_id, p.account_id) AS account_id, a.account_id IS NOT NULL AS stored,
           a.currency::text AS currency, a.posted_debits_minor, a.posted_credits_minor,
           a.pending_debits_minor, a.pending_credits_minor, {_ZERO_IF_NO_LINES},
           coalesce(p.lines, 0) AS lines, coalesce(p.cur, '{{}}') AS cur
    FROM accounts a FULL JOIN projected p ON p.account_id = a.account_id
)
SELECT *, count(*) OVER () AS differing FROM compared
WHERE NOT stored
   OR (posted_debits_minor, posted_credits_minor, pending_debits_minor, pending_credits_minor)
      IS DISTINCT FROM ({", ".join(TOTAL_NAMES)})
   OR cardinality(cur) > 1
   OR (cardinality(cur) = 1 AND currency IS NOT NULL AND currency <> cur[1])
ORDER BY account_id
LIMIT %s
"""
"""Only the accounts that differ (at most the limit), each with how many differ in all."""
CURRENCY_SUMS_SQL = (
    "SELECT currency::text, count(*),"
    " coalesce(sum(amount_minor) FILTER (WHERE side = 'debit'), 0),"
    " coalesce(sum(amount_minor) FILTER (WHERE side = 'credit'), 0)"
    " FROM ledger_lines GROUP BY currency ORDER BY currency"
)
ORPHAN_LINES_SQL = (
    "SELECT l.entry_id, count(*), count(*) OVER () FROM ledger_lines l"
    " WHERE NOT EXISTS (SELECT FROM journal_entries e WHERE e.entry_id = l.entry_id)"
    " GROUP BY l.entry_id ORDER BY l.entry_id LIMIT %s"
)
AUDIT_KINDS_SQL = "SELECT kind, count(*) FROM audit_log GROUP BY kind ORDER BY kind"
STORE_TOTALS_SQL = (
    "SELECT e.ledger_partition, l.currency::text, count(*),"
    " coalesce(sum(l.amount_minor) FILTER (WHERE l.side = 'debit'), 0),"
    " coalesce(sum(l.amount_minor) FILTER (WHERE l.side = 'credit'), 0)"
    " FROM ledger_lines l JOIN journal_entries e ON e.entry_id = l.entry_id GROUP BY 1, 2"
)


# --- the shell ------------------------------------------------------------------------


def verify_store(
    dsn: str, *, ledger_topic: LedgerTopic | None, progress: TextIO | None
) -> StoreReport:
    """Every check over one snapshot of the store at ``dsn`` (see the module docstring).

    ``ledger_topic``: compare with the ledger topic too (None: Postgres only).
    ``progress``: where progress lines of long streams go (None: nowhere).
    """
    ensure(ledger_topic is None or bool(ledger_topic.consumer), "no sink consumer group given")
    started = time.monotonic()
    problems = Problems()
    tracker = Progress(progress)
    with _snapshot(dsn) as conn:
        counts = {table: _count(conn, table) for table in TABLES}
        problems.extend(_audit_kinds(conn))
        chain_rows = _stream(conn, "verify_chains", CHAINS_SQL)
        problems.extend(chain_problems(tracker.track("audit_log", chain_rows, counts["audit_log"])))
        _check_entries(conn, problems, tracker, counts["ledger_lines"])
        _check_other_facts(conn, problems, tracker, counts)
        by_currency = _check_sums(conn, problems)
        _check_accounts(conn, problems)
        topic = None
        if ledger_topic is not None:
            topic = _check_topic(conn, ledger_topic, problems, tracker)
    return StoreReport(
        counts=counts,
        ledger_by_currency=by_currency,
        topic=topic,
        problems=tuple(problems.listed),
        problems_total=problems.total,
        seconds=time.monotonic() - started,
    )


@contextlib.contextmanager
def _snapshot(dsn: str) -> Iterator[Connection]:
    """One read-only REPEATABLE READ transaction: every check sees the same store."""
    conn = db.connect(dsn, autocommit=False)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        # Every cursor is read to its end: plan for all rows, not for the first tenth.
        conn.execute("SET LOCAL cursor_tuple_fraction = 1.0")
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _count(conn: Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return 0 if row is None else int(row[0])


def _stream(conn: Connection, name: str, sql: str, params: Sequence[Any] = ()) -> Iterator[Row]:
    """The rows of ``sql`` through a server-side cursor, FETCH_ROWS_MAX at a time."""
    with conn.cursor(name=name) as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(FETCH_ROWS_MAX):
            yield from rows


def _audit_kinds(conn: Connection) -> list[str]:
    kinds = conn.execute(AUDIT_KINDS_SQL).fetchall()
    return [f"audit_log: {n} rows of unknown kind {k!r}" for k, n in kinds if k not in FACT_TABLES]


def _check_entries(conn: Connection, problems: Problems, tracker: Progress, total: int) -> None:
    """Entries with their lines and audit rows, one entry at a time."""
    width = len(records.ENTRY_COLUMNS)
    lines_at = width + AUDIT_WIDTH
    rows = tracker.track("journal entries", _stream(conn, "verify_entries", ENTRIES_SQL), total)
    for key, group in itertools.groupby(rows, key=lambda r: r[0] or r[width]):
        joined = list(group)
        first = joined[0]
        entry = first[:width] if first[0] is not None else None
        lines = [r[lines_at:] for r in joined if r[lines_at] is not None]
        audit = AuditRef.of(first[width:lines_at])
        problems.extend(entry_problems(key, entry, lines, audit))


def _check_other_facts(
    conn: Connection, problems: Problems, tracker: Progress, counts: dict[str, int]
) -> None:
    """Events and dead letters against their audit rows."""
    for kind, sql, width, rebuild in (
        ("event", EVENTS_SQL, len(records.EVENT_COLUMNS), records.event_audit),
        ("dead_letter", DLQ_SQL, len(records.DLQ_COLUMNS), records.dlq_audit),
    ):
        table = FACT_TABLES[kind][0]
        rows = tracker.track(table, _stream(conn, f"verify_{kind}", sql), counts[table])
        for row in rows:
            audit = AuditRef.of(row[width:])
            rebuilt = rebuild(row[:width]) if row[0] is not None else None
            key = rebuilt.ref if rebuilt is not None else str(row[width])
            problems.extend([fact_problem(kind, key, rebuilt, audit)])


def _check_sums(conn: Connection, problems: Problems) -> dict[str, dict[str, int]]:
    """Σ debits = Σ credits per currency over every line; no line without its entry."""
    by_currency = {}
    for currency, lines, debits, credits in conn.execute(CURRENCY_SUMS_SQL).fetchall():
        by_currency[currency] = {
            "lines": lines, "debits_minor": int(debits), "credits_minor": int(credits)
        }  # fmt: skip
        if debits != credits:
            problems.extend(
                [f"ledger_lines: {currency} debits {debits} != credits {credits} overall"]
            )
    orphans = conn.execute(ORPHAN_LINES_SQL, (PROBLEMS_LISTED_MAX,)).fetchall()
    problems.extend(
        f"ledger_lines: {n} lines of entry {entry_id}, which is not in journal_entries"
        for entry_id, n, _total in orphans
    )
    problems.count_more(orphans[0][2] - len(orphans) if orphans else 0)
    return by_currency


def _check_accounts(conn: Connection, problems: Problems) -> None:
    """Accounts whose stored totals differ from their lines (compared in SQL), named."""
    rows = conn.execute(ACCOUNTS_SQL, (PROBLEMS_LISTED_MAX,)).fetchall()
    for r in rows:
        row = AccountRow(
            account_id=r[0],
            stored=tuple(int(v) for v in r[3:7]) if r[1] else None,  # type: ignore[arg-type]
            currency=r[2],
            projected=tuple(int(v) for v in r[7:11]),  # type: ignore[arg-type]
            lines=r[11],
            line_currencies=tuple(r[12]),
        )
        problems.extend(account_problems(row))
    problems.count_more(rows[0][13] - len(rows) if rows else 0)


def _check_topic(
    conn: Connection, source: LedgerTopic, problems: Problems, tracker: Progress
) -> dict[str, Any]:
    """Postgres' entries, lines and sums per partition against the topic up to the positions."""
    positions: dict[int, int] = dict(
        conn.execute(
            "SELECT partition, next_offset FROM sink_offsets WHERE consumer = %s AND topic = %s",
            (source.consumer, source.topic),
        ).fetchall()
    )
    stored = _store_totals(conn)
    if not positions and stored.entries:
        problems.extend([f"sink_offsets: no position of {source.consumer} on {source.topic}"])
    topic = LedgerTotals()
    try:
        problems.extend(_read_topic(source, positions, topic, tracker))
    except (KafkaException, TimeoutError) as error:
        problems.extend([f"ledger topic {source.topic}: not read up to the positions ({error})"])
    problems.extend(compare_totals(stored, topic, positions))
    return {
        "topic": source.topic,
        "consumer": source.consumer,
        "positions": {str(p): o for p, o in sorted(positions.items())},
        "entries": sum(topic.entries.values()),
        "lines": sum(topic.lines.values()),
    }


def _store_totals(conn: Connection) -> LedgerTotals:
    totals = LedgerTotals()
    for partition, count in conn.execute(
        "SELECT ledger_partition, count(*) FROM journal_entries GROUP BY 1"
    ).fetchall():
        totals.entries[partition] = count
    for partition, currency, lines, debits, credits in conn.execute(STORE_TOTALS_SQL).fetchall():
        totals.lines[(partition, currency)] = lines
        totals.debits[(partition, currency)] = int(debits)
        totals.credits[(partition, currency)] = int(credits)
    return totals


def _read_topic(
    source: LedgerTopic, positions: dict[int, int], totals: LedgerTotals, tracker: Progress
) -> Iterator[str]:
    """Add every entry below the stored positions to ``totals``; problems of unreadable ones."""
    ends = {(source.topic, p): end for p, end in positions.items() if end > 0}
    if not ends:
        return
    consumer = Consumer(
        source.kafka.config()
        | {
            "group.id": VERIFY_GROUP_ID,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,  # assigned, never committed: it keeps no place
            "auto.offset.reset": "earliest",
        }
    )
    read_up_to: Counter[int] = Counter()
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        messages = tracker.track("ledger topic", drain(consumer, ends), sum(ends.values()))
        for message in messages:
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None or offset >= ends[(source.topic, partition)]:
                continue  # read past the stored position: not the sink's yet
            ensure(offset >= read_up_to[partition], f"ledger {partition}: {offset} read twice")
            read_up_to[partition] = offset + 1
            try:
                totals.add(partition, source.serde.decode_journal_entry(message.value() or b""))
            except PoisonMessage as poison:
                yield f"ledger partition {partition} offset {offset}: undecodable ({poison})"
    finally:
        consumer.close()
