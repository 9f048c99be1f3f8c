"""The money model: accounts, commands, saga legs and outputs.

Frozen dataclasses only; no I/O. Amounts are ``int`` minor units with an
ISO-4217 currency. An account's balance is ``credits - debits`` (the liability
view a bank keeps of a customer's money), so a deposit credits the customer and
debits the external settlement account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

AMOUNT_MAX_MINOR = 2**63 - 1
"""Largest amount (and largest account total) the ledger accepts: Avro ``long``."""

SYSTEM_ACCOUNT_PREFIX = "@"
"""System account ids start with this; client account ids never do."""

AccountStatus: TypeAlias = Literal["open", "frozen", "closed"]

RejectionCode: TypeAlias = Literal[
    "insufficient_funds",
    "account_not_found",
    "account_closed",
    "account_frozen",
    "account_exists",
    "account_not_empty",
    "currency_mismatch",
    "same_account",
    "invalid_amount",
    "balance_overflow",
    "duplicate_conflict",
    "unknown_command",
]
REJECTION_CODES: tuple[RejectionCode, ...] = get_args(RejectionCode)

EventType: TypeAlias = Literal[
    "Accepted", "Debited", "Completed", "Failed", "Reversed", "Duplicate", "Rejected"
]
Side: TypeAlias = Literal["debit", "credit"]
EntryKind: TypeAlias = Literal[
    "deposit", "withdrawal", "transfer_debit", "transfer_credit", "transfer_reversal"
]


@dataclass(frozen=True, slots=True)
class Account:
    """TigerBeetle's account model. Totals only grow; balance is derived."""

    account_id: str
    currency: str
    partner_id: str
    status: AccountStatus
    debits_must_not_exceed_credits: bool
    posted_debits_minor: int = 0
    posted_credits_minor: int = 0
    pending_debits_minor: int = 0
    pending_credits_minor: int = 0
    version: int = 0

    @property
    def balance_minor(self) -> int:
        """Posted credits minus posted debits."""
        return self.posted_credits_minor - self.posted_debits_minor

    @property
    def available_minor(self) -> int:
        """What may still be debited: posted balance less pending debits."""
        return self.posted_credits_minor - self.posted_debits_minor - self.pending_debits_minor


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """What every worker knows of every account (a GlobalTable row)."""

    account_id: str
    currency: str
    partner_id: str
    status: AccountStatus


# --- commands (imperative; enter on `commands`, keyed by account_id) -------------


@dataclass(frozen=True, slots=True)
class OpenAccount:
    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str
    currency: str
    allow_overdraft: bool = False


@dataclass(frozen=True, slots=True)
class FreezeAccount:
    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str


@dataclass(frozen=True, slots=True)
class UnfreezeAccount:
    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str


@dataclass(frozen=True, slots=True)
class CloseAccount:
    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str


@dataclass(frozen=True, slots=True)
class Deposit:
    """External money in: DEBIT settlement / CREDIT account."""

    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """Money out to the outside: DEBIT account / CREDIT settlement."""

    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class Transfer:
    """Account to account, same currency, same partner: the saga."""

    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str
    destination_account_id: str
    amount_minor: int
    currency: str


Command: TypeAlias = (
    OpenAccount | FreezeAccount | UnfreezeAccount | CloseAccount | Deposit | Withdrawal | Transfer
)
COMMAND_TYPES: tuple[type[Command], ...] = (
    OpenAccount,
    FreezeAccount,
    UnfreezeAccount,
    CloseAccount,
    Deposit,
    Withdrawal,
    Transfer,
)


# --- saga legs (internal; on `legs`, keyed by the account they act on) ----------


@dataclass(frozen=True, slots=True)
class CreditLeg:
    """Step 2 of a transfer, keyed by the destination account."""

    transfer_id: str
    partner_id: str
    issued_at_ms: int
    source_account_id: str
    destination_account_id: str
    amount_minor: int
    currency: str

    @property
    def account_id(self) -> str:
        return self.destination_account_id


@dataclass(frozen=True, slots=True)
class Compensation:
    """Step 3 when the destination refused, keyed by the source account."""

    transfer_id: str
    partner_id: str
    issued_at_ms: int
    source_account_id: str
    destination_account_id: str
    amount_minor: int
    currency: str
    reason: RejectionCode

    @property
    def account_id(self) -> str:
        return self.source_account_id


Leg: TypeAlias = CreditLeg | Compensation
Input: TypeAlias = Command | Leg


# --- outputs (facts) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JournalLine:
    account_id: str
    currency: str
    side: Side
    amount_minor: int


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One balanced journal entry; ``entry_id`` is ``f"{payment_id}:{step}"``."""

    entry_id: str
    payment_id: str
    kind: EntryKind
    partner_id: str
    account_id: str
    issued_at_ms: int
    lines: tuple[JournalLine, ...]


@dataclass(frozen=True, slots=True)
class Event:
    """A status fact about a payment or command; keyed by ``payment_id``."""

    event_id: str
    payment_id: str
    type: EventType
    command_type: str
    partner_id: str
    account_id: str
    issued_at_ms: int
    counterparty_account_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    code: RejectionCode | None = None
    original_payment_id: str | None = None


Output: TypeAlias = JournalEntry | Event | CreditLeg | Compensation | DirectoryEntry


# --- idempotency ---------------------------------------------------------------------

IdempotencyKey: TypeAlias = tuple[str, str]
"""``(account_id, request_id)``; legs use ``("leg:" | "compensation:") + transfer_id``."""


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What a request did, so a repeat gets the same answer and moves no money."""

    command_id: str
    body_sha256: str
    code: RejectionCode | None
    """``None`` when the command was applied, else why it was rejected."""
