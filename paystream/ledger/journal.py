"""Journal entries: builders for every entry kind and the balance check.

An entry's id is ``f"{payment_id}:{step}"``, derived from its input only, so a
redelivered input produces the same id and every sink can deduplicate by it.
"""

from __future__ import annotations

from paystream.ledger.errors import InvariantViolation
from paystream.ledger.models import (
    AMOUNT_MAX_MINOR,
    PHASES,
    CreditLeg,
    Deposit,
    EntryKind,
    JournalEntry,
    JournalLine,
    Leg,
    Payout,
    Phase,
    Withdrawal,
)

TransferLeg = Leg
"""The saga record that carries a transfer's parties and amount (a CreditLeg built at step 1
has the same fields as the Confirmation or Compensation of step 3)."""

LINE_COUNT_MIN = 2
"""A journal entry has a debit and a credit at least."""

LINE_COUNT_MAX = 64
"""No entry the core builds comes close; a bound so nothing grows unchecked."""

STEP_DEPOSIT = "deposit"
STEP_WITHDRAWAL = "withdrawal"
STEP_DEBIT = "debit"
STEP_CREDIT = "credit"
STEP_POST = "post"
STEP_VOID = "void"


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
    phase: Phase = "posted",
    pending_entry_id: str | None = None,
) -> JournalEntry:
    """DEBIT one account / CREDIT another by the same amount in one currency."""
    lines = (
        JournalLine(
            account_id=debit_account_id, currency=currency, side="debit", amount_minor=amount_minor
        ),
        JournalLine(
            account_id=credit_account_id,
            currency=currency,
            side="credit",
            amount_minor=amount_minor,
        ),
    )
    return JournalEntry(
        entry_id=entry_id(payment_id, step),
        payment_id=payment_id,
        kind=kind,
        partner_id=partner_id,
        account_id=account_id,
        issued_at_ms=issued_at_ms,
        lines=lines,
        phase=phase,
        pending_entry_id=pending_entry_id,
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


def transfer_debit_entry(leg: TransferLeg, transit_account_id: str, phase: Phase) -> JournalEntry:
    """Saga steps 1 and 3 on partition(source): DEBIT source / CREDIT its transit shard.

    Step 1 reserves (``pending``, id ``<payment>:debit``); step 3 posts the
    reservation (``post``, ``<payment>:post``) or releases it (``void``,
    ``<payment>:void``), naming the pending entry.
    """
    pending_id = entry_id(leg.transfer_id, STEP_DEBIT)
    step = {"pending": STEP_DEBIT, "post": STEP_POST, "void": STEP_VOID}[phase]
    return two_line_entry(
        step=step,
        payment_id=leg.transfer_id,
        kind="transfer_debit",
        partner_id=leg.partner_id,
        account_id=leg.source_account_id,
        issued_at_ms=leg.issued_at_ms,
        debit_account_id=leg.source_account_id,
        credit_account_id=transit_account_id,
        currency=leg.currency,
        amount_minor=leg.amount_minor,
        phase=phase,
        pending_entry_id=None if phase == "pending" else pending_id,
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


def payout_debit_entry(
    payout: Payout, clearing_account_id: str, phase: Phase, n: int
) -> JournalEntry:
    """A payout's ``n``-th reservation (``pending``, ``<payout>:reserve`` then
    ``reserve.<n>``), or its posting or void (``post`` / ``void``, with the same suffix):
    DEBIT source / CREDIT its payouts-clearing shard."""
    suffix = "" if n == 1 else f".{n}"
    step = {"pending": "reserve", "post": STEP_POST, "void": STEP_VOID}[phase] + suffix
    return two_line_entry(
        step=step,
        payment_id=payout.payout_id,
        kind="payout_debit",
        partner_id=payout.partner_id,
        account_id=payout.account_id,
        issued_at_ms=payout.issued_at_ms,
        debit_account_id=payout.account_id,
        credit_account_id=clearing_account_id,
        currency=payout.currency,
        amount_minor=payout.amount_minor,
        phase=phase,
        pending_entry_id=None
        if phase == "pending"
        else entry_id(payout.payout_id, "reserve" + suffix),
    )


def payout_settlement_entry(
    payout: Payout, clearing_account_id: str, settlement_account_id: str
) -> JournalEntry:
    """The bank paid: DEBIT payouts-clearing / CREDIT external settlement (``<payout>:settle``)."""
    return two_line_entry(
        step="settle",
        payment_id=payout.payout_id,
        kind="payout_settlement",
        partner_id=payout.partner_id,
        account_id=payout.account_id,
        issued_at_ms=payout.issued_at_ms,
        debit_account_id=clearing_account_id,
        credit_account_id=settlement_account_id,
        currency=payout.currency,
        amount_minor=payout.amount_minor,
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
    if entry.phase not in PHASES or (entry.pending_entry_id is None) != (
        entry.phase in ("posted", "pending")
    ):
        raise InvariantViolation(f"journal entry phase and pending id disagree: {entry!r}")
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
