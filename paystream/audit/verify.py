"""Check the recorded ledger: ids once, every entry balanced, balances agree.

Reads ``ledger`` read_committed and the ``balances`` changelog (the workers'
table, latest value per account) and compares the two: the journal, projected
with its phases (``pending`` reserves, ``post`` turns a reservation into a
posting, ``void`` releases it), must give every account's four totals. Used by
the demo, the end-to-end and crash tests, and operators.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Message

from paystream.audit.projection import ZERO, Totals, add, entry_deltas
from paystream.ledger import Account, JournalEntry, is_system_account_id
from paystream.settings import KafkaConnection
from paystream.tables import codecs
from paystream.topology.avro import AvroSerde
from paystream.topology.reader import read_to_end
from paystream.topology.topics import Topics

_POSTED_DEBITS, _POSTED_CREDITS, _PENDING_DEBITS, _PENDING_CREDITS = range(4)


@dataclass(frozen=True, slots=True)
class LedgerReport:
    entries: int
    duplicate_entry_ids: tuple[str, ...]
    unbalanced_entry_ids: tuple[str, ...]
    unmatched_settlements: tuple[str, ...]
    """post/void entries whose pending entry is missing, or settled twice."""
    sum_by_currency: dict[str, int]
    pending_by_currency: dict[str, int]
    """Σ pending debits per currency: money reserved by transfers not yet settled."""
    balance_mismatches: tuple[str, ...]
    in_transit_by_currency: dict[str, int]
    customer_total_by_currency: dict[str, int]
    accounts: dict[str, Account] = field(repr=False)

    @property
    def balanced(self) -> bool:
        return (
            not self.duplicate_entry_ids
            and not self.unbalanced_entry_ids
            and not self.unmatched_settlements
            and not self.balance_mismatches
            and all(total == 0 for total in self.sum_by_currency.values())
        )


def read_journal(kafka: KafkaConnection, topics: Topics, serde: AvroSerde) -> list[JournalEntry]:
    return [
        serde.decode_journal_entry(message.value() or b"")
        for message in read_to_end(kafka, topics.ledger)
    ]


def read_accounts(kafka: KafkaConnection, topics: Topics) -> dict[str, Account]:
    """Latest committed state of every account from the ``balances`` changelog."""
    return latest_accounts(read_to_end(kafka, topics.balances_changelog))


def latest_accounts(messages: Iterable[Message]) -> dict[str, Account]:
    """The latest state of every account among records of the ``balances`` changelog."""
    latest: dict[str, Account] = {}
    for message in messages:
        value = message.value()
        if value is not None:
            account = codecs.decode_account(value)
            latest[account.account_id] = account
    return latest


@dataclass
class _Projection:
    totals: dict[str, Totals] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    currency_of: dict[str, str] = field(default_factory=dict)
    unbalanced: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    pending_open: set[str] = field(default_factory=set)

    def apply(self, entry: JournalEntry) -> None:
        net: Counter[str] = Counter()
        for line in entry.lines:
            debit = line.side == "debit"
            net[line.currency] += line.amount_minor if debit else -line.amount_minor
        if any(net.values()):
            self.unbalanced.append(entry.entry_id)
        for account_id, delta in entry_deltas(entry).items():
            self.currency_of[account_id] = delta.currency
            self.totals[account_id] = add(self.totals[account_id], delta.totals)
        self._track(entry)

    def _track(self, entry: JournalEntry) -> None:
        if entry.phase == "pending":
            self.pending_open.add(entry.entry_id)
        elif entry.phase in ("post", "void"):
            if entry.pending_entry_id not in self.pending_open:
                self.unmatched.append(entry.entry_id)
            self.pending_open.discard(entry.pending_entry_id or "")


def verify(kafka: KafkaConnection, topics: Topics, serde: AvroSerde) -> LedgerReport:
    return report(read_journal(kafka, topics, serde), read_accounts(kafka, topics))


def report(entries: list[JournalEntry], accounts: dict[str, Account]) -> LedgerReport:
    """The checks over a journal (in log order per account) and the tables' accounts."""
    counts = Counter(entry.entry_id for entry in entries)
    projection = _Projection()
    for entry in _once(entries):
        projection.apply(entry)
    sums: Counter[str] = Counter()
    pending: Counter[str] = Counter()
    transit: Counter[str] = Counter()
    customers: Counter[str] = Counter()
    for account_id, totals in projection.totals.items():
        currency = projection.currency_of[account_id]
        balance = totals[_POSTED_CREDITS] - totals[_POSTED_DEBITS]
        sums[currency] += balance
        pending[currency] += totals[_PENDING_DEBITS]
        if account_id.startswith("@transit:"):
            transit[currency] += balance
        elif not is_system_account_id(account_id):
            customers[currency] += balance
    return LedgerReport(
        entries=len(entries),
        duplicate_entry_ids=tuple(sorted(i for i, n in counts.items() if n > 1)),
        unbalanced_entry_ids=tuple(projection.unbalanced),
        unmatched_settlements=tuple(projection.unmatched),
        sum_by_currency=dict(sums),
        pending_by_currency=dict(pending),
        balance_mismatches=tuple(_mismatches(projection.totals, accounts)),
        in_transit_by_currency=dict(transit),
        customer_total_by_currency=dict(customers),
        accounts=accounts,
    )


def _once(entries: Iterable[JournalEntry]) -> Iterable[JournalEntry]:
    """Each entry id once (a repeat is reported, and counted once)."""
    seen: set[str] = set()
    for entry in entries:
        if entry.entry_id not in seen:
            seen.add(entry.entry_id)
            yield entry


def _mismatches(projected: dict[str, Totals], accounts: dict[str, Account]) -> list[str]:
    problems = []
    for account_id, account in sorted(accounts.items()):
        table = (
            account.posted_debits_minor,
            account.posted_credits_minor,
            account.pending_debits_minor,
            account.pending_credits_minor,
        )
        ledger = projected.get(account_id, ZERO)
        if ledger != table:
            problems.append(f"{account_id}: ledger {ledger}, table {table}")
    for account_id in sorted(set(projected) - set(accounts)):
        problems.append(f"{account_id}: in the ledger, not in the table")
    return problems
