"""Journal entries: builders for every entry kind and the balance check.

An entry's id is ``f"{payment_id}:{step}"``, derived from its input only, so a
redelivered input produces the same id and every sink can deduplicate by it.
"""

from __future__ import annotations

from paystream.ledger.errors import InvariantViolation
from paystream.ledger.models import (
    AMOUNT_MAX_MINOR,
    Compensation,
    CreditLeg,
    Deposit,
    EntryKind,
    JournalEntry,
    JournalLine,
    Transfer,
    Withdrawal,
)

LINE_COUNT_MIN = 2
"""A journal entry has a debit and a credit at least."""

LINE_COUNT_MAX = 64
"""No entry the core builds comes close; a bound so nothing grows unchecked."""

STEP_DEPOSIT = "deposit"
STEP_WITHDRAWAL = "withdrawal"
STEP_DEBIT = "debit"
STEP_CREDIT = "credit"
STEP_REVERSAL = "reversal"


def entry_id(payment_id: str, step: str) -> str:
    """The deterministic id of the entry ``step`` of ``payment_id``."""
    return f"{payment_id}:{step}"


def two_line_entry(
    *,
    step: str,
    payment_id: str,
    kind: EntryKind,
    partner_id: str,
    account_id: str,
    issued_at_ms: int,
    debit_account_id: str,
    credit_account_id: str,
    currency: str,
    amount_minor: int,
) -> JournalEntry:
    """DEBIT one account / CREDIT another by the same amount in one currency."""
    lines = (
        JournalLine(debit_account_id, currency, "debit", amount_minor),
        JournalLine(credit_account_id, currency, "credit", amount_minor),
    )
    return JournalEntry(
        f"{payment_id}:{step}", payment_id, kind, partner_id, account_id, issued_at_ms, lines
    )


def deposit_entry(command: Deposit, settlement_account_id: str) -> JournalEntry:
    """External money in: DEBIT settlement shard / CREDIT the account."""
    c = command
    return two_line_entry(
        step=STEP_DEPOSIT,
        payment_id=c.command_id,
        kind="deposit",
        partner_id=c.partner_id,
        account_id=c.account_id,
        issued_at_ms=c.issued_at_ms,
        debit_account_id=settlement_account_id,
        credit_account_id=c.account_id,
        currency=c.currency,
        amount_minor=c.amount_minor,
    )


def withdrawal_entry(command: Withdrawal, settlement_account_id: str) -> JournalEntry:
    """Money out: DEBIT the account / CREDIT settlement shard."""
    c = command
    return two_line_entry(
        step=STEP_WITHDRAWAL,
        payment_id=c.command_id,
        kind="withdrawal",
        partner_id=c.partner_id,
        account_id=c.account_id,
        issued_at_ms=c.issued_at_ms,
        debit_account_id=c.account_id,
        credit_account_id=settlement_account_id,
        currency=c.currency,
        amount_minor=c.amount_minor,
    )


def transfer_debit_entry(command: Transfer, transit_account_id: str) -> JournalEntry:
    """Saga step 1 (J1): DEBIT source / CREDIT the source partition's transit shard."""
    c = command
    return two_line_entry(
        step=STEP_DEBIT,
        payment_id=c.command_id,
        kind="transfer_debit",
        partner_id=c.partner_id,
        account_id=c.account_id,
        issued_at_ms=c.issued_at_ms,
        debit_account_id=c.account_id,
        credit_account_id=transit_account_id,
        currency=c.currency,
        amount_minor=c.amount_minor,
    )


def transfer_credit_entry(leg: CreditLeg, transit_account_id: str) -> JournalEntry:
    """Saga step 2 (J2): DEBIT the destination partition's transit shard / CREDIT destination."""
    return two_line_entry(
        step=STEP_CREDIT,
        payment_id=leg.transfer_id,
        kind="transfer_credit",
        partner_id=leg.partner_id,
        account_id=leg.destination_account_id,
        issued_at_ms=leg.issued_at_ms,
        debit_account_id=transit_account_id,
        credit_account_id=leg.destination_account_id,
        currency=leg.currency,
        amount_minor=leg.amount_minor,
    )


def transfer_reversal_entry(compensation: Compensation, transit_account_id: str) -> JournalEntry:
    """Saga step 3 (J3): DEBIT the source partition's transit shard / CREDIT source."""
    c = compensation
    return two_line_entry(
        step=STEP_REVERSAL,
        payment_id=c.transfer_id,
        kind="transfer_reversal",
        partner_id=c.partner_id,
        account_id=c.source_account_id,
        issued_at_ms=c.issued_at_ms,
        debit_account_id=transit_account_id,
        credit_account_id=c.source_account_id,
        currency=c.currency,
        amount_minor=c.amount_minor,
    )


def check_balanced(entry: JournalEntry) -> None:
    """Raise :class:`InvariantViolation` unless debits equal credits in every currency.

    Also: ``LINE_COUNT_MIN..LINE_COUNT_MAX`` lines, every amount in
    ``1..AMOUNT_MAX_MINOR``, and an id of the form ``f"{payment_id}:{step}"``.
    """
    lines = entry.lines
    if not LINE_COUNT_MIN <= len(lines) <= LINE_COUNT_MAX:
        raise InvariantViolation(f"journal entry line count out of range: {entry!r}")
    if not entry.entry_id.startswith(entry.payment_id + ":"):
        raise InvariantViolation(f"journal entry id not derived from its payment: {entry!r}")
    net_minor: dict[str, int] = {}
    for line in lines:
        amount_minor = line.amount_minor
        if type(amount_minor) is not int or not 0 < amount_minor <= AMOUNT_MAX_MINOR:
            raise InvariantViolation(f"journal line amount out of range: {entry!r}")
        if line.side == "debit":
            net_minor[line.currency] = net_minor.get(line.currency, 0) + amount_minor
        elif line.side == "credit":
            net_minor[line.currency] = net_minor.get(line.currency, 0) - amount_minor
        else:
            raise InvariantViolation(f"journal line side unknown: {entry!r}")
    if any(net_minor.values()):
        raise InvariantViolation(f"journal entry does not balance: {entry!r}")
