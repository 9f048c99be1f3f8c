"""Accounts: system ids, constructors and pure posting helpers.

Every helper returns a new :class:`Account` (version + 1) and checks the
account invariants on the way out; nothing here mutates.
"""

from __future__ import annotations

from paystream.ledger.errors import InvariantViolation, ensure
from paystream.ledger.models import (
    AMOUNT_MAX_MINOR,
    SYSTEM_ACCOUNT_PREFIX,
    Account,
    AccountStatus,
    DirectoryEntry,
)

SYSTEM_PARTNER_ID = "@system"
"""Owner of every system account; no client partner id starts with ``@``."""

PARTITION_MAX = 2**31 - 1
"""Kafka partition numbers are int32."""

ACCOUNT_STATUSES: frozenset[AccountStatus] = frozenset(("open", "frozen", "closed"))


def transit_account_id(currency: str, partition: int) -> str:
    """The transit (suspense) shard of ``partition``: money in flight between legs."""
    ensure(0 <= partition <= PARTITION_MAX, "partition out of range")
    return f"{SYSTEM_ACCOUNT_PREFIX}transit:{currency}:{partition}"


def settlement_account_id(currency: str, partition: int) -> str:
    """The external settlement shard of ``partition``: money in and out of the system."""
    ensure(0 <= partition <= PARTITION_MAX, "partition out of range")
    return f"{SYSTEM_ACCOUNT_PREFIX}settlement:{currency}:{partition}"


def is_system_account_id(account_id: str) -> bool:
    """System ids are reserved: clients can neither open nor address them."""
    return account_id.startswith(SYSTEM_ACCOUNT_PREFIX)


def system_account(account_id: str, currency: str) -> Account:
    """A fresh system shard: open, may be overdrawn, owned by ``@system``."""
    ensure(is_system_account_id(account_id), f"not a system account id: {account_id!r}")
    return Account(account_id, currency, SYSTEM_PARTNER_ID, "open", False)


def new_account(
    account_id: str, currency: str, partner_id: str, *, allow_overdraft: bool
) -> Account:
    """A client account as OpenAccount creates it (version 1)."""
    return check_account(
        Account(account_id, currency, partner_id, "open", not allow_overdraft, version=1)
    )


def turnover_minor(account: Account) -> int:
    """Sum of all four totals: what an account has ever moved."""
    a = account
    return (
        a.posted_debits_minor
        + a.posted_credits_minor
        + a.pending_debits_minor
        + a.pending_credits_minor
    )


def posting_fits(account: Account, amount_minor: int) -> bool:
    """Whether an ordinary posting keeps the account's turnover within AMOUNT_MAX_MINOR.

    Stricter than "each total within bounds" on purpose: a reversal (saga step 3)
    credits the source and debits the transit shard by an amount that was posted
    the other way on the same account before, so the headroom this rule keeps
    guarantees that a reversal always fits and never has to be refused.
    """
    return turnover_minor(account) + amount_minor <= AMOUNT_MAX_MINOR


def has_funds(account: Account, amount_minor: int) -> bool:
    """Whether a debit of ``amount_minor`` is allowed by the no-overdraft flag."""
    return not account.debits_must_not_exceed_credits or account.available_minor >= amount_minor


def debit(account: Account, amount_minor: int) -> Account:
    """Post a debit; the caller has checked funds and bounds (else this raises)."""
    ensure(0 < amount_minor <= AMOUNT_MAX_MINOR, "debit amount out of range")
    a = account
    return check_account(
        Account(
            a.account_id,
            a.currency,
            a.partner_id,
            a.status,
            a.debits_must_not_exceed_credits,
            a.posted_debits_minor + amount_minor,
            a.posted_credits_minor,
            a.pending_debits_minor,
            a.pending_credits_minor,
            a.version + 1,
        )
    )


def credit(account: Account, amount_minor: int) -> Account:
    """Post a credit; the caller has checked bounds (else this raises)."""
    ensure(0 < amount_minor <= AMOUNT_MAX_MINOR, "credit amount out of range")
    a = account
    return check_account(
        Account(
            a.account_id,
            a.currency,
            a.partner_id,
            a.status,
            a.debits_must_not_exceed_credits,
            a.posted_debits_minor,
            a.posted_credits_minor + amount_minor,
            a.pending_debits_minor,
            a.pending_credits_minor,
            a.version + 1,
        )
    )


def with_status(account: Account, status: AccountStatus) -> Account:
    """The account with a new status (version + 1)."""
    a = account
    return check_account(
        Account(
            a.account_id,
            a.currency,
            a.partner_id,
            status,
            a.debits_must_not_exceed_credits,
            a.posted_debits_minor,
            a.posted_credits_minor,
            a.pending_debits_minor,
            a.pending_credits_minor,
            a.version + 1,
        )
    )


def is_empty(account: Account) -> bool:
    """Zero posted balance and nothing pending: the only state that may close."""
    return (
        account.balance_minor == 0
        and account.pending_debits_minor == 0
        and account.pending_credits_minor == 0
    )


def directory_entry(account: Account) -> DirectoryEntry:
    """The account as the directory (GlobalTable) knows it."""
    return DirectoryEntry(account.account_id, account.currency, account.partner_id, account.status)


def check_account(account: Account) -> Account:
    """Return ``account`` unless a total leaves ``0..AMOUNT_MAX_MINOR`` or no-overdraft breaks.

    Messages are formatted only on failure: this runs after every account change.
    """
    a = account
    if not (
        0 <= a.posted_debits_minor <= AMOUNT_MAX_MINOR
        and 0 <= a.posted_credits_minor <= AMOUNT_MAX_MINOR
        and 0 <= a.pending_debits_minor <= AMOUNT_MAX_MINOR
        and 0 <= a.pending_credits_minor <= AMOUNT_MAX_MINOR
    ):
        raise InvariantViolation(f"account total out of range: {a!r}")
    if a.debits_must_not_exceed_credits and (
        a.posted_debits_minor + a.pending_debits_minor > a.posted_credits_minor
    ):
        raise InvariantViolation(f"no-overdraft account overdrawn: {a!r}")
    if a.status not in ACCOUNT_STATUSES:
        raise InvariantViolation(f"unknown account status: {a!r}")
    return a
