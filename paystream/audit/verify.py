"""Check the recorded ledger: ids once, every entry balanced, balances agree.

Reads ``ledger`` read_committed and the ``balances`` changelog (the workers'
table, latest value per account) and compares the two. Used by the demo, the
end-to-end and crash tests, and operators.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from paystream.ledger import Account, JournalEntry, is_system_account_id
from paystream.tables import codecs
from paystream.topology.avro import AvroSerde
from paystream.topology.reader import read_to_end
from paystream.topology.topics import Topics


@dataclass(frozen=True, slots=True)
class LedgerReport:
    entries: int
    duplicate_entry_ids: tuple[str, ...]
    unbalanced_entry_ids: tuple[str, ...]
    sum_by_currency: dict[str, int]
    balance_mismatches: tuple[str, ...]
    in_transit_by_currency: dict[str, int]
    customer_total_by_currency: dict[str, int]
    accounts: dict[str, Account] = field(repr=False)

    @property
    def balanced(self) -> bool:
        return (
            not self.duplicate_entry_ids
            and not self.unbalanced_entry_ids
            and not self.balance_mismatches
            and all(total == 0 for total in self.sum_by_currency.values())
        )


def read_journal(bootstrap: str, topics: Topics, serde: AvroSerde) -> list[JournalEntry]:
    return [
        serde.decode_journal_entry(message.value() or b"")
        for message in read_to_end(bootstrap, topics.ledger)
    ]


def read_accounts(bootstrap: str, topics: Topics) -> dict[str, Account]:
    """Latest committed state of every account from the ``balances`` changelog."""
    latest: dict[str, Account] = {}
    for message in read_to_end(bootstrap, topics.balances_changelog):
        value = message.value()
        if value is not None:
            account = codecs.decode_account(value)
            latest[account.account_id] = account
    return latest


def verify(bootstrap: str, topics: Topics, serde: AvroSerde) -> LedgerReport:
    entries = read_journal(bootstrap, topics, serde)
    accounts = read_accounts(bootstrap, topics)
    counts = Counter(entry.entry_id for entry in entries)
    unbalanced: list[str] = []
    posted: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # debits, credits
    currency_of: dict[str, str] = {}
    seen: set[str] = set()
    for entry in entries:
        if entry.entry_id in seen:
            continue  # a repeat is reported, and counted once
        seen.add(entry.entry_id)
        totals: Counter[str] = Counter()
        for line in entry.lines:
            sign = -1 if line.side == "debit" else 1
            totals[line.currency] += sign * line.amount_minor
            posted[line.account_id][0 if line.side == "debit" else 1] += line.amount_minor
            currency_of[line.account_id] = line.currency
        if any(totals.values()):
            unbalanced.append(entry.entry_id)
    mismatches = _mismatches(posted, accounts)
    sums: Counter[str] = Counter()
    transit: Counter[str] = Counter()
    customers: Counter[str] = Counter()
    for account_id, (debits, credits) in posted.items():
        currency = currency_of[account_id]
        sums[currency] += credits - debits
        if account_id.startswith("@transit:"):
            transit[currency] += credits - debits
        elif not is_system_account_id(account_id):
            customers[currency] += credits - debits
    return LedgerReport(
        entries=len(entries),
        duplicate_entry_ids=tuple(sorted(i for i, n in counts.items() if n > 1)),
        unbalanced_entry_ids=tuple(unbalanced),
        sum_by_currency=dict(sums),
        balance_mismatches=tuple(mismatches),
        in_transit_by_currency=dict(transit),
        customer_total_by_currency=dict(customers),
        accounts=accounts,
    )


def _mismatches(posted: dict[str, list[int]], accounts: dict[str, Account]) -> list[str]:
    problems = []
    for account_id, account in sorted(accounts.items()):
        debits, credits = posted.get(account_id, [0, 0])
        if (debits, credits) != (account.posted_debits_minor, account.posted_credits_minor):
            problems.append(
                f"{account_id}: ledger {debits}/{credits}, table "
                f"{account.posted_debits_minor}/{account.posted_credits_minor}"
            )
    for account_id in sorted(set(posted) - set(accounts)):
        problems.append(f"{account_id}: in the ledger, not in the table")
    return problems
