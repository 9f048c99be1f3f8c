"""Accounts: system ids, constructors and pure posting helpers.

Every helper returns a new :class:`Account` (version + 1) and checks the
account invariants on the way out; nothing here mutates. Totals are 128-bit
(TigerBeetle's u128): ``TOTAL_MAX_MINOR`` is more than 2**64 commands of the
largest amount, so a shared system shard cannot saturate; the checks stay,
and an ordinary posting that would pass the bound is refused
(``balance_overflow``) before anything changes.
"""

from __future__ import annotations

from dataclasses import replace

from paystream.ledger.errors import InvariantViolation, ensure
from paystream.ledger.models import (
    AMOUNT_MAX_MINOR,
    SYSTEM_ACCOUNT_PREFIX,
    TOTAL_MAX_MINOR,
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


def payouts_clearing_account_id(currency: str, partition: int) -> str:
    """The payouts-clearing shard of ``partition``: payouts reserved, then paid out of it."""
    ensure(0 <= partition <= PARTITION_MAX, "partition out of range")
    return f"{SYSTEM_ACCOUNT_PREFIX}payouts-clearing:{currency}:{partition}"


SCREENING_KEY_PREFIX = f"{SYSTEM_ACCOUNT_PREFIX}screening:"
"""The keys of ``ConfigureScreening`` commands: ``@screening:<n>``, one ``n`` per partition
(chosen so that the key's murmur2 partition is that partition)."""


def is_system_account_id(account_id: str) -> bool:
    """System ids are reserved: clients can neither open nor address them."""
    return account_id.startswith(SYSTEM_ACCOUNT_PREFIX)


def system_account(account_id: str, currency: str) -> Account:
    """A fresh system shard: open, may be overdrawn, owned by ``@system``."""
    ensure(is_system_account_id(account_id), f"not a system account id: {account_id!r}")
    return Account(
        account_id=account_id,
        currency=currency,
        partner_id=SYSTEM_PARTNER_ID,
        status="open",
        debits_must_not_exceed_credits=False,
    )


def new_account(
    account_id: str, currency: str, partner_id: str, *, allow_overdraft: bool
) -> Account:
    """A client account as OpenAccount creates it (version 1)."""
    return check_account(
        Account(
            account_id=account_id,
            currency=currency,
            partner_id=partner_id,
            status="open",
            debits_must_not_exceed_credits=not allow_overdraft,
            version=1,
        )
    )


def debits_fit(account: Account, amount_minor: int) -> bool:
    """Whether posted + pending debits stay within ``TOTAL_MAX_MINOR`` after ``amount_minor``.

    Pending debits count too, so posting a reservation later always fits.
    """
    return account.posted_debits_minor + account.pending_debits_minor + amount_minor <= (
        TOTAL_MAX_MINOR
    )


def credits_fit(account: Account, amount_minor: int) -> bool:
    """Whether posted + pending credits stay within ``TOTAL_MAX_MINOR`` after ``amount_minor``."""
    return account.posted_credits_minor + account.pending_credits_minor + amount_minor <= (
        TOTAL_MAX_MINOR
    )


def has_funds(account: Account, amount_minor: int) -> bool:
    """Whether a debit of ``amount_minor`` is allowed by the no-overdraft flag."""
    return not account.debits_must_not_exceed_credits or account.available_minor >= amount_minor


def _checked_amount(amount_minor: int) -> int:
    ensure(0 < amount_minor <= AMOUNT_MAX_MINOR, "posting amount out of range")
    return amount_minor


def debit(account: Account, amount_minor: int) -> Account:
    """Post a debit; the caller has checked funds and bounds (else this raises)."""
    amount = _checked_amount(amount_minor)
    return _next(account, posted_debits_minor=account.posted_debits_minor + amount)


def credit(account: Account, amount_minor: int) -> Account:
    """Post a credit; the caller has checked bounds (else this raises)."""
    amount = _checked_amount(amount_minor)
    return _next(account, posted_credits_minor=account.posted_credits_minor + amount)


def reserve_debit(account: Account, amount_minor: int) -> Account:
    """A pending debit (two-phase, first phase): available drops, posted does not."""
    amount = _checked_amount(amount_minor)
    return _next(account, pending_debits_minor=account.pending_debits_minor + amount)


def reserve_credit(account: Account, amount_minor: int) -> Account:
    """A pending credit: the other side of a reservation."""
    amount = _checked_amount(amount_minor)
    return _next(account, pending_credits_minor=account.pending_credits_minor + amount)


def post_debit(account: Account, amount_minor: int) -> Account:
    """Turn a reserved debit into a posted one (raises if nothing that large is pending)."""
    amount = _checked_amount(amount_minor)
    return _next(
        account,
        pending_debits_minor=account.pending_debits_minor - amount,
        posted_debits_minor=account.posted_debits_minor + amount,
    )


def post_credit(account: Account, amount_minor: int) -> Account:
    """Turn a reserved credit into a posted one."""
    amount = _checked_amount(amount_minor)
    return _next(
        account,
        pending_credits_minor=account.pending_credits_minor - amount,
        posted_credits_minor=account.posted_credits_minor + amount,
    )


def void_debit(account: Account, amount_minor: int) -> Account:
    """Release a reserved debit."""
    amount = _checked_amount(amount_minor)
    return _next(account, pending_debits_minor=account.pending_debits_minor - amount)


def void_credit(account: Account, amount_minor: int) -> Account:
    """Release a reserved credit."""
    amount = _checked_amount(amount_minor)
    return _next(account, pending_credits_minor=account.pending_credits_minor - amount)


def with_status(account: Account, status: AccountStatus) -> Account:
    """The account with a new status (version + 1)."""
    return _next(account, status=status)


def _next(account: Account, **changes: object) -> Account:
    return check_account(replace(account, version=account.version + 1, **changes))  # type: ignore[arg-type]


def directory_entry(account: Account) -> DirectoryEntry:
    """The account as the directory (GlobalTable) knows it."""
    return DirectoryEntry(account.account_id, account.currency, account.partner_id, account.status)


def check_account(account: Account) -> Account:
    """Return ``account`` unless a total leaves ``0..TOTAL_MAX_MINOR`` or no-overdraft breaks.

    Messages are formatted only on failure: this runs after every account change.
    """
    a = account
    if not (
        a.posted_debits_minor >= 0
        and a.posted_credits_minor >= 0
        and a.pending_debits_minor >= 0
        and a.pending_credits_minor >= 0
        and a.posted_debits_minor + a.pending_debits_minor <= TOTAL_MAX_MINOR
        and a.posted_credits_minor + a.pending_credits_minor <= TOTAL_MAX_MINOR
    ):
        raise InvariantViolation(f"account total out of range: {a!r}")
    if a.debits_must_not_exceed_credits and (
        a.posted_debits_minor + a.pending_debits_minor > a.posted_credits_minor
    ):
        raise InvariantViolation(f"no-overdraft account overdrawn: {a!r}")
    if a.status not in ACCOUNT_STATUSES:
        raise InvariantViolation(f"unknown account status: {a!r}")
    return a
