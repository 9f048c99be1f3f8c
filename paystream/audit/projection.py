"""The journal projected onto accounts: what each entry does to TigerBeetle's four totals.

The audit side's own definition, independent of the core's account code (it
is the cross-check): ``posted`` moves posted totals; ``pending`` reserves
(pending totals); ``post`` turns a reservation into a posting; ``void``
releases it. Used by ``verify`` (the ledger topic against the workers'
tables), the Postgres sink (its ``accounts`` read model) and ``audit verify``.
"""

from __future__ import annotations

from dataclasses import dataclass

from paystream.ledger import JournalEntry
from paystream.ledger.models import Phase, Side

Totals = tuple[int, int, int, int]
"""posted debits, posted credits, pending debits, pending credits"""
ZERO: Totals = (0, 0, 0, 0)


def line_delta(phase: Phase, side: Side, amount_minor: int) -> Totals:
    """What one journal line of ``phase`` adds to its account's totals."""
    posted = (amount_minor, 0) if side == "debit" else (0, amount_minor)
    reserved = (amount_minor, 0) if side == "debit" else (0, amount_minor)
    released = (-reserved[0], -reserved[1])
    if phase == "posted":
        return (*posted, 0, 0)
    if phase == "pending":
        return (0, 0, *reserved)
    if phase == "post":
        return (*posted, *released)
    return (0, 0, *released)  # void


def add(a: Totals, b: Totals) -> Totals:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


@dataclass(frozen=True, slots=True)
class AccountDelta:
    """What a run of entries does to one account."""

    currency: str
    totals: Totals
    lines: int


def entry_deltas(entry: JournalEntry) -> dict[str, AccountDelta]:
    """account id -> what ``entry`` does to it."""
    deltas: dict[str, AccountDelta] = {}
    for line in entry.lines:
        delta = line_delta(entry.phase, line.side, line.amount_minor)
        before = deltas.get(line.account_id, AccountDelta(line.currency, ZERO, 0))
        deltas[line.account_id] = AccountDelta(
            line.currency, add(before.totals, delta), before.lines + 1
        )
    return deltas


def merge(into: dict[str, AccountDelta], more: dict[str, AccountDelta]) -> None:
    """Add ``more`` into ``into`` (per account)."""
    for account_id, delta in more.items():
        before = into.get(account_id)
        into[account_id] = (
            delta
            if before is None
            else AccountDelta(
                before.currency, add(before.totals, delta.totals), before.lines + delta.lines
            )
        )
