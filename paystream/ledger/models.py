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
"""Largest amount one command, leg or journal line moves: Avro ``long``."""

REFERENCE_LENGTH_MAX = 140
"""Longest payment reference, in characters: a SEPA remittance line's 140."""

TOTAL_MAX_MINOR = 2**128 - 1
"""Largest account total (TigerBeetle's u128): no volume of traffic saturates an account."""

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
    "account_has_pending",
    "currency_mismatch",
    "same_account",
    "invalid_amount",
    "balance_overflow",
    "amount_over_limit",
    "duplicate_conflict",
    "command_id_reused",
    "command_id_invalid",
    "wrong_partition",
    "invalid_field",
    "unknown_command",
    "not_authorized",
    "invalid_beneficiary",
    "invalid_rules",
    "payout_not_found",
    "payout_not_held",
    "payout_not_overridable",
    "payout_not_queued",
    "payout_not_sending",
    "review_rejected",
    "bank_rejected",
]
"""Why an input was refused. ``wrong_partition``, ``invalid_field`` and ``unknown_command``
are the DLQ reasons of commands whose ids could be read (the record went to ``dlq`` too).
``review_rejected`` and ``bank_rejected`` are why a payout ``Failed`` (a person or the bank
said no), not why a command was refused."""
REJECTION_CODES: tuple[RejectionCode, ...] = get_args(RejectionCode)

EventType: TypeAlias = Literal[
    "Debited",
    "Completed",
    "Reversed",
    "Duplicate",
    "Rejected",
    "Held",
    "Queued",
    "Sending",
    "Settled",
    "Failed",
]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
TERMINAL_EVENT_TYPES: frozenset[EventType] = frozenset(
    ("Completed", "Reversed", "Duplicate", "Rejected", "Held", "Queued", "Failed")
)
"""The one answer each input gets; ``Debited`` is a transfer's step, not its end. A payout's
request is answered by its first state, ``Held``, ``Queued`` or ``Failed`` (nothing reserved);
its later states (``Sending``, ``Settled``, another ``Queued`` or ``Failed``) are facts about
the payout that answer the review's or the rail's commands, not the request."""
Side: TypeAlias = Literal["debit", "credit"]
EntryKind: TypeAlias = Literal[
    "deposit",
    "withdrawal",
    "transfer_debit",
    "transfer_credit",
    "payout_debit",
    "payout_settlement",
]
ENTRY_KINDS: tuple[EntryKind, ...] = get_args(EntryKind)
Phase: TypeAlias = Literal["posted", "pending", "post", "void"]
"""TigerBeetle's two-phase transfers. ``posted`` and ``post`` move posted totals; ``pending``
reserves (pending totals); ``post`` and ``void`` release the reservation of the pending
entry they name (``post`` then posts the same lines)."""
PHASES: tuple[Phase, ...] = get_args(Phase)


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """TigerBeetle's account model: 128-bit totals; balance and available are derived.

    Posted totals only grow; pending totals rise when a two-phase transfer reserves
    and fall when it is posted or voided.
    """

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

    @property
    def has_pending(self) -> bool:
        return self.pending_debits_minor != 0 or self.pending_credits_minor != 0


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
    reference: str | None = None
    """The sender's own words for the payment (an invoice number, a remittance line);
    at most ``REFERENCE_LENGTH_MAX`` characters. Carried to every event of the payment."""


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
    reference: str | None = None
    """The sender's own words for the payment (an invoice number, a remittance line);
    at most ``REFERENCE_LENGTH_MAX`` characters. Carried to every event of the payment."""


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
    reference: str | None = None
    """The sender's own words for the payment (an invoice number, a remittance line);
    at most ``REFERENCE_LENGTH_MAX`` characters. Carried to every event of the payment."""


# --- payouts (money to an external beneficiary; on `commands`, keyed by the source) ----

OPS_PARTNER_ID = "@ops"
"""The partner id of the platform's operators: review decisions and screening rules. No
client partner id starts with ``@`` (the API refuses such tenants)."""
RAIL_PARTNER_ID = "@rail"
"""The partner id of the bank-rail connector's commands."""
PayoutState: TypeAlias = Literal["held", "queued", "sending", "settled", "failed"]
PAYOUT_STATES: tuple[PayoutState, ...] = get_args(PayoutState)
Decision: TypeAlias = Literal["approve", "reject", "override"]
DECISIONS: tuple[Decision, ...] = get_args(Decision)
BENEFICIARY_NAME_LENGTH_MAX = 140
"""A pain.001 creditor name's 140 characters."""
REASON_LENGTH_MAX = 500
"""Longest free-text reason of a decision or a bank's report."""


@dataclass(frozen=True, slots=True)
class RequestPayout:
    """Money from a client account to an external beneficiary; its command id is the
    payout id. The beneficiary is an IBAN (and optionally a BIC) or an account number and
    a routing number; the API checks them with ``schwifty``, the core their shape."""

    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str
    batch_id: str
    amount_minor: int
    currency: str
    beneficiary_name: str
    beneficiary_country: str
    beneficiary_iban: str | None
    beneficiary_bic: str | None
    beneficiary_account_number: str | None
    beneficiary_routing_number: str | None
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class DecidePayout:
    """A compliance officer's decision on a payout (partner ``OPS_PARTNER_ID``), keyed by
    the payout's source account. ``approve`` or ``reject`` a held payout; ``override`` turns
    an earlier decision around while the money still allows it (see ``ledger.core``)."""

    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str
    payout_id: str
    decision: Decision
    officer: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SendPayout:
    """The rail connector takes a queued payout (partner ``RAIL_PARTNER_ID``); it sends the
    instruction to the bank only once this is accepted (``Sending``)."""

    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str
    payout_id: str


@dataclass(frozen=True, slots=True)
class SettlePayout:
    """The bank settled the payout: post the reservation, then pay out of clearing."""

    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str
    payout_id: str


@dataclass(frozen=True, slots=True)
class FailPayout:
    """The bank refused or returned the payout (its ISO 20022 reason code), or retries
    were exhausted: void the reservation."""

    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str
    payout_id: str
    reason_code: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ConfigureScreening:
    """New screening rules for one partition (partner ``OPS_PARTNER_ID``), as canonical
    JSON (``ledger.screening.rules_from_json``); keyed by that partition's screening id
    (``accounts.screening_account_id``), so an operator sends one per partition."""

    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str
    rules_json: str


PayoutCommand: TypeAlias = DecidePayout | SendPayout | SettlePayout | FailPayout
"""The commands that act on an existing payout (``payout_id``)."""

Command: TypeAlias = (
    OpenAccount
    | FreezeAccount
    | UnfreezeAccount
    | CloseAccount
    | Deposit
    | Withdrawal
    | Transfer
    | RequestPayout
    | DecidePayout
    | SendPayout
    | SettlePayout
    | FailPayout
    | ConfigureScreening
)
COMMAND_TYPES: tuple[type[Command], ...] = (
    OpenAccount,
    FreezeAccount,
    UnfreezeAccount,
    CloseAccount,
    Deposit,
    Withdrawal,
    Transfer,
    RequestPayout,
    DecidePayout,
    SendPayout,
    SettlePayout,
    FailPayout,
    ConfigureScreening,
)


# --- what the shell could not turn into a command ------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Malformed:
    """A command the worker could not apply as sent, whose ids could still be read.

    The record went to ``dlq`` with ``code`` as its reason; the core answers it with
    ``Rejected`` (``code``) so its sender hears back. ``command_type`` is the type
    the sender meant (possibly one this version does not know).
    """

    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str
    command_type: str
    code: RejectionCode


# --- saga legs (internal; on `legs`, keyed by the account they act on) ----------


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditLeg:
    """Step 2 of a transfer, keyed by the destination account: credit it, or refuse."""

    transfer_id: str
    request_id: str
    """The transfer's request id: step 3 checks the leg against the transfer's claim."""
    partner_id: str
    issued_at_ms: int
    source_account_id: str
    destination_account_id: str
    amount_minor: int
    currency: str
    reference: str | None = None

    @property
    def account_id(self) -> str:
        return self.destination_account_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Confirmation:
    """Step 3 when the destination was credited, keyed by the source: post the reservation."""

    transfer_id: str
    request_id: str
    """The transfer's request id: step 3 checks the leg against the transfer's claim."""
    partner_id: str
    issued_at_ms: int
    source_account_id: str
    destination_account_id: str
    amount_minor: int
    currency: str
    reference: str | None = None

    @property
    def account_id(self) -> str:
        return self.source_account_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Compensation:
    """Step 3 when the destination refused, keyed by the source: void the reservation."""

    transfer_id: str
    request_id: str
    """The transfer's request id: step 3 checks the leg against the transfer's claim."""
    partner_id: str
    issued_at_ms: int
    source_account_id: str
    destination_account_id: str
    amount_minor: int
    currency: str
    reason: RejectionCode
    reference: str | None = None

    @property
    def account_id(self) -> str:
        return self.source_account_id


Leg: TypeAlias = CreditLeg | Confirmation | Compensation
Input: TypeAlias = Command | Malformed | Leg


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One input as read from its log: the input, its offset and its log time.

    ``log_time_ms`` is the record's timestamp (``LogAppendTime`` on ``commands``:
    the broker's, not the sender's); the core's only clock. ``offset`` names the
    record: answers to inputs that may not claim their command id carry it in
    their event id, so every event id stays unique.
    """

    item: Input
    offset: int
    log_time_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """The core's settings; replay must use the ones the workers used."""

    retention_ms: int = 7 * 24 * 3600 * 1000
    """How long an idempotency key and a command id's claim live, in log time."""
    future_skew_ms: int = 5 * 60 * 1000
    """How far a command id's minting time may lie ahead of the partition's log clock."""
    amount_max_minor: int = AMOUNT_MAX_MINOR
    """The largest amount one Transfer or Withdrawal may move, 1..``AMOUNT_MAX_MINOR``;
    above it the command is ``Rejected`` ``amount_over_limit``. Deposits are not limited
    (money coming in), nor are the legs of a transfer step 1 already accepted."""

    def __post_init__(self) -> None:
        """Rules come from configuration (settings, a replay's what-if): a bad value is the
        operator's error, a ``ValueError`` the caller reports, not a broken ledger."""
        limit = self.amount_max_minor
        if type(limit) is not int or not 1 <= limit <= AMOUNT_MAX_MINOR:
            raise ValueError(
                f"amount_max_minor must be an integer in 1..{AMOUNT_MAX_MINOR}, got {limit!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Payout:
    """A payout as its source's partition keeps it (table ``payouts``), from its request on.

    ``reservation`` is the id of the open pending entry holding its funds, ``None`` once
    posted or voided (a rejection overridden reserves again, under a new id).
    """

    payout_id: str
    request_id: str
    batch_id: str
    partner_id: str
    account_id: str
    issued_at_ms: int
    requested_at_ms: int
    """Log time of the request: where the velocity window counts it."""
    amount_minor: int
    currency: str
    beneficiary_name: str
    beneficiary_country: str
    beneficiary_iban: str | None
    beneficiary_bic: str | None
    beneficiary_account_number: str | None
    beneficiary_routing_number: str | None
    reference: str | None
    state: PayoutState
    rule_codes: tuple[str, ...] = ()
    """The screening rules it hit (held), in ``screening.RULE_CODES`` order."""
    decision: Decision | None = None
    """The last review decision applied to it."""
    failure_code: RejectionCode | None = None
    failure_reason: str | None = None
    reservation: str | None = None
    reservations: int = 0
    """How many times its funds were reserved (1, or more after overrides)."""
    version: int = 0


# --- outputs (facts) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalLine:
    account_id: str
    currency: str
    side: Side
    amount_minor: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry:
    """One balanced journal entry; ``entry_id`` is ``f"{payment_id}:{step}"``."""

    entry_id: str
    payment_id: str
    kind: EntryKind
    partner_id: str
    account_id: str
    issued_at_ms: int
    lines: tuple[JournalLine, ...]
    phase: Phase = "posted"
    pending_entry_id: str | None = None
    """The pending entry a ``post`` or ``void`` entry settles."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PayoutDetails:
    """What a payout's events carry beyond a payment's: its batch and where the money goes.

    The rail builds its instruction from a ``Queued`` event alone, and the read models show
    a payout's beneficiary and batch, so every event of a payout carries them (the request's
    refusal included)."""

    batch_id: str
    beneficiary_name: str
    beneficiary_country: str
    beneficiary_iban: str | None = None
    beneficiary_bic: str | None = None
    beneficiary_account_number: str | None = None
    beneficiary_routing_number: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
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
    reference: str | None = None
    rule_codes: tuple[str, ...] = ()
    """A payout's screening hits (``Held``, and the decisions on it)."""
    reason: str | None = None
    """Free text: an officer's reason, the bank's report."""
    actor: str | None = None
    """Who made a payout's state change: the officer of a decision."""
    previous_type: EventType | None = None
    """The payout's state before a change that a decision or the rail made (audit's before)."""
    payout: PayoutDetails | None = None
    """A payout's batch and beneficiary, on every event of a payout."""


Output: TypeAlias = JournalEntry | Event | CreditLeg | Confirmation | Compensation | DirectoryEntry


# --- idempotency ---------------------------------------------------------------------

KeySpace: TypeAlias = Literal["request", "command", "credit", "settlement"]
IdempotencyKey: TypeAlias = tuple[KeySpace, str, str]
"""``("request", partner, request id)``: a partner's request (Stripe's Idempotency-Key);
``("command", "", command id)``: the claim of a command id (a payment id);
``("credit", "", transfer id)``: step 2 of a transfer, applied once;
``("settlement", "", transfer id)``: step 3 (post or void), applied once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyRecord:
    """What a request did, so a repeat gets the same answer and moves no money."""

    command_id: str
    """The payment that answered: the original of a duplicate."""
    body_sha256: str
    code: RejectionCode | None
    """``None`` when the command was applied, else why it was rejected."""
    expires_at_ms: int
    """Log time from which the record is forgotten (treated as absent, then deleted);
    RESERVATION_OPEN_MS for an open reservation."""


RESERVATION_OPEN_MS = 2**63 - 1
"""``expires_at_ms`` of an open reservation: it never expires until step 3 closes it."""
