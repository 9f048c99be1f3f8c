"""The entry point of the money core: ``process_batch``.

One call takes a batch of deliveries that all came from one Kafka partition
(of ``commands`` and ``legs``), applies them in order over an overlay of the
given read-only state, and returns the changed accounts, the changed
idempotency records, the partition's log clock and every output in order. It
is a pure function of its arguments: no I/O, no clock, no randomness, and a
batch of N gives exactly the result of N batches of one applied in sequence.

Every input gets exactly one answer (an event), and none can strand, double
or mint money:

- **Command ids** (``ids.py``) are payment ids. An id must be well formed,
  minted for this partition and inside the retention window of the log clock;
  otherwise ``Rejected`` ``command_id_invalid``. A valid id is *claimed* by
  its first use for as long as it is valid. A second use is answered, never
  applied: the same request again gets ``Duplicate`` (pointing at the
  original), anything else ``Rejected`` ``command_id_reused``.
- **Request ids** are a partner's idempotency keys, ``(partner, request id)``,
  forgotten ``Rules.retention_ms`` of log time after their first use. A new
  command id with a known key gets ``Duplicate`` when the body is the same and
  ``Rejected`` ``duplicate_conflict`` otherwise (Stripe's rules).
- Answers to inputs that could not claim their command id carry the input's
  partition and offset in their event id (``<id>:<step>:<partition>.<offset>``),
  so every event id is unique while the payment's own events stay canonical.
- **Malformed** commands (refused by the shell: a bad field, an unknown type,
  the wrong partition) are answered ``Rejected`` with the DLQ reason; a valid,
  unclaimed command id is claimed by that answer (except on a wrong partition,
  whose ids belong elsewhere). Their request ids are not recorded, as Stripe
  saves no result for a request that failed validation.
- **Transfers** are a two-phase saga (TigerBeetle's pending transfers): step 1
  reserves the amount on the source (pending debit; the source cannot close
  while anything is pending); step 2 credits the destination or refuses;
  step 3, back on the source's partition, posts the reservation (``Completed``)
  or voids it (``Reversed``). A posting or void always lands, whatever the
  source's status: the reservation guaranteed it.
- **Legs** are internal. A leg that cannot be applied (applied before, an
  invalid amount, a reservation that is not there) is a broken invariant:
  ``InvariantViolation``, and the worker stops loudly.
- The directory is a hint at step 1: a destination it does not know yet is
  left to the destination's partition, which is the authority.

Decisions where the design is silent:

- Ids starting with ``@`` are system accounts: OpenAccount on one is
  ``account_exists``; any other command or destination gets ``account_not_found``.
- OpenAccount in a currency outside ISO-4217 is ``currency_mismatch``.
- ``Rules.amount_max_minor`` limits money going out: a Transfer (step 1) or Withdrawal
  above it is ``amount_over_limit``, judged right after the amount's validity and before
  any account. Deposits are not limited, nor are legs: step 1 accepted their transfer, and
  a limit lowered since must not strand a reservation.
- Events of a transfer's legs say ``command_type="Transfer"``, ``account_id`` =
  source and counterparty = destination, like the ``Debited`` event of step 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from paystream.ledger.accounts import (
    PARTITION_MAX,
    SCREENING_KEY_PREFIX,
    credit,
    credits_fit,
    debit,
    debits_fit,
    directory_entry,
    has_funds,
    is_system_account_id,
    new_account,
    payouts_clearing_account_id,
    post_credit,
    post_debit,
    reserve_credit,
    reserve_debit,
    settlement_account_id,
    system_account,
    transit_account_id,
    void_credit,
    void_debit,
    with_status,
)
from paystream.ledger.currencies import is_iso4217
from paystream.ledger.errors import InvariantViolation, ensure
from paystream.ledger.idempotency import body_sha256, command_key, leg_key, request_key
from paystream.ledger.ids import command_id_parts
from paystream.ledger.journal import (
    check_balanced,
    deposit_entry,
    payout_debit_entry,
    payout_settlement_entry,
    transfer_credit_entry,
    transfer_debit_entry,
    withdrawal_entry,
)
from paystream.ledger.models import (
    AMOUNT_MAX_MINOR,
    OPS_PARTNER_ID,
    RESERVATION_OPEN_MS,
    Account,
    AccountStatus,
    CloseAccount,
    Command,
    Compensation,
    ConfigureScreening,
    Confirmation,
    CreditLeg,
    DecidePayout,
    Delivery,
    Deposit,
    DirectoryEntry,
    Event,
    EventType,
    FailPayout,
    FreezeAccount,
    IdempotencyKey,
    IdempotencyRecord,
    JournalEntry,
    Leg,
    Malformed,
    OpenAccount,
    Output,
    Payout,
    PayoutCommand,
    RejectionCode,
    RequestPayout,
    Rules,
    SendPayout,
    SettlePayout,
    Transfer,
    UnfreezeAccount,
    Withdrawal,
)
from paystream.ledger.payouts import (
    STATE_EVENTS,
    Money,
    authorized,
    beneficiary_code,
    beneficiary_key,
    new_payout,
    payout_details,
    transition,
)
from paystream.ledger.screening import (
    PayoutProfile,
    ScreeningRules,
    profile_after,
    rules_from_json,
    screen,
)

INPUTS_PER_BATCH_MAX = 10_000
"""Most deliveries one ``process_batch`` call accepts (the worker consumes fewer)."""
CORE_VERSION = "2"
"""Bumped with any change to what ``process_batch`` produces from the same inputs; every
batch manifest names it, so replay knows which rules a batch ran under. 2: the amount
limit (``Rules.amount_max_minor``, ``amount_over_limit``)."""
REPLAYED_CORE_VERSIONS = frozenset({"1", "2"})
"""The versions whose batches this core reproduces exactly under the rules their manifests
record: 1 had no limit, and a version-1 manifest reads with none (the schema's default).
A change that alters what an old batch produces removes the old version from this set."""

TRANSFER_COMMAND_TYPE = Transfer.__name__
"""``command_type`` of the events of a transfer's saga legs: the payment is the Transfer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult:
    """What a batch changed and emitted; the caller writes it all in one transaction."""

    accounts: dict[str, Account]
    """Changed accounts only, in their final version."""
    idempotency: dict[IdempotencyKey, IdempotencyRecord]
    """Changed (new) records only."""
    outputs: tuple[Output, ...]
    """Every output, in input order."""
    clock_ms: int
    """The partition's log clock after the batch: the latest log time seen."""
    payouts: dict[str, Payout]
    """Changed payouts only, in their final version."""
    profiles: dict[str, PayoutProfile]
    """Changed screening profiles (by source account) only."""
    screening: ScreeningRules | None
    """The partition's new screening rules, if a ``ConfigureScreening`` changed them."""


_NO_PAYOUTS: Mapping[str, Payout] = {}
_NO_PROFILES: Mapping[str, PayoutProfile] = {}
_NO_RULES = ScreeningRules()


def process_batch(
    deliveries: Sequence[Delivery],
    *,
    partition: int,
    accounts: Mapping[str, Account],
    idempotency: Mapping[IdempotencyKey, IdempotencyRecord],
    directory: Mapping[str, DirectoryEntry],
    clock_ms: int,
    rules: Rules,
    payouts: Mapping[str, Payout] = _NO_PAYOUTS,
    profiles: Mapping[str, PayoutProfile] = _NO_PROFILES,
    screening: ScreeningRules = _NO_RULES,
) -> BatchResult:
    """Apply ``deliveries`` (all from ``partition``) in order; never mutates the mappings.

    ``payouts``, ``profiles`` and ``screening`` are the partition's payout state (by payout
    id, by source account, its current screening rules); unlike the directory, a batch's
    own changes to them are visible to its later inputs.

    ``directory`` is a snapshot: changes made by this batch are not visible to
    later inputs of the batch (they reach it through the ``DirectoryEntry``
    outputs). ``clock_ms`` is the partition's log clock before the batch (the
    previous result's, 0 at first). Raises :class:`InvariantViolation` on a
    programmer error (an input that is not a model type, a leg that cannot be
    applied, a broken ledger invariant); the state mappings are untouched then.
    """
    ensure(len(deliveries) <= INPUTS_PER_BATCH_MAX, "batch larger than INPUTS_PER_BATCH_MAX")
    ensure(type(partition) is int and 0 <= partition <= PARTITION_MAX, "partition out of range")
    state = _State(partition, accounts, idempotency, directory, clock_ms, rules)
    state.payouts = _Overlay(payouts)
    state.profiles = _Overlay(profiles)
    state.screening = screening
    for delivery in deliveries:
        _process(state, delivery)
    return BatchResult(
        accounts=state.changed_accounts,
        idempotency=state.changed_records,
        outputs=tuple(state.outputs),
        clock_ms=state.clock_ms,
        payouts=state.payouts.changed,
        profiles=state.profiles.changed,
        screening=None if state.screening is screening else state.screening,
    )


# --- the working overlay -------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class _Overlay(Generic[K, V]):
    """A read-only base and the batch's changes on top of it."""

    __slots__ = ("_base", "changed")

    def __init__(self, base: Mapping[K, V]) -> None:
        self._base = base
        self.changed: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        value = self.changed.get(key)
        return self._base.get(key) if value is None else value

    def put(self, key: K, value: V) -> None:
        self.changed[key] = value


class _State:
    """One batch's view: read-only base state plus this batch's changes and outputs."""

    __slots__ = (
        "_base_accounts",
        "_base_records",
        "changed_accounts",
        "changed_records",
        "clock_ms",
        "directory",
        "outputs",
        "partition",
        "payouts",
        "profiles",
        "rules",
        "screening",
    )

    def __init__(
        self,
        partition: int,
        accounts: Mapping[str, Account],
        records: Mapping[IdempotencyKey, IdempotencyRecord],
        directory: Mapping[str, DirectoryEntry],
        clock_ms: int,
        rules: Rules,
    ) -> None:
        self.partition = partition
        self._base_accounts = accounts
        self._base_records = records
        self.directory = directory
        self.clock_ms = clock_ms
        self.rules = rules
        self.changed_accounts: dict[str, Account] = {}
        self.changed_records: dict[IdempotencyKey, IdempotencyRecord] = {}
        self.outputs: list[Output] = []
        self.payouts: _Overlay[str, Payout] = _Overlay({})
        self.profiles: _Overlay[str, PayoutProfile] = _Overlay({})
        self.screening = ScreeningRules()

    def account(self, account_id: str) -> Account | None:
        account = self.changed_accounts.get(account_id)
        return self._base_accounts.get(account_id) if account is None else account

    def put_account(self, account: Account) -> None:
        self.changed_accounts[account.account_id] = account

    def system_account(self, account_id: str, currency: str) -> Account:
        """The system shard, created on first use; its currency must match."""
        account = self.account(account_id)
        if account is None:
            return system_account(account_id, currency)
        ensure(account.currency == currency, "system shard holds another currency")
        return account

    def transit_id(self, currency: str) -> str:
        return transit_account_id(currency, self.partition)

    def settlement_id(self, currency: str) -> str:
        return settlement_account_id(currency, self.partition)

    def clearing_id(self, currency: str) -> str:
        return payouts_clearing_account_id(currency, self.partition)

    def live_record(self, key: IdempotencyKey) -> IdempotencyRecord | None:
        """The record under ``key`` unless it has expired (expired records count as absent)."""
        record = self.changed_records.get(key)
        if record is None:
            record = self._base_records.get(key)
        return record if record is not None and self.clock_ms < record.expires_at_ms else None

    def put_record(self, key: IdempotencyKey, record: IdempotencyRecord) -> None:
        self.changed_records[key] = record

    def emit_entry(self, entry: JournalEntry) -> None:
        """Append a journal entry, after checking that it balances."""
        check_balanced(entry)
        self.outputs.append(entry)


# --- dispatch ----------------------------------------------------------------------------

CommandT = TypeVar("CommandT", bound=Command)
LegT = TypeVar("LegT", bound=Leg)
ItemT = TypeVar("ItemT", bound=Command | Leg)


@dataclass(frozen=True, slots=True)
class _Handler(Generic[ItemT]):
    execute: Callable[[_State, ItemT], RejectionCode | None]
    """Validate; post when accepted. Returns the rejection code, ``None`` if applied."""
    emit: Callable[[_State, ItemT, RejectionCode | None], None]
    """Outputs from the input and its code."""


def _process(state: _State, delivery: Delivery) -> None:
    """Advance the log clock, then route the input to its handler (frequent types first)."""
    ensure(delivery.log_time_ms >= 0 and delivery.offset >= 0, "delivery position out of range")
    state.clock_ms = max(state.clock_ms, delivery.log_time_ms)
    item = delivery.item
    if isinstance(item, Transfer):
        _process_command(state, delivery, item, _TRANSFER)
    elif isinstance(item, CreditLeg):
        _process_leg(state, item, _CREDIT_LEG)
    elif isinstance(item, Confirmation):
        _process_leg(state, item, _CONFIRMATION)
    elif isinstance(item, Deposit):
        _process_command(state, delivery, item, _DEPOSIT)
    elif isinstance(item, Withdrawal):
        _process_command(state, delivery, item, _WITHDRAWAL)
    elif isinstance(item, Compensation):
        _process_leg(state, item, _COMPENSATION)
    elif isinstance(item, OpenAccount):
        _process_command(state, delivery, item, _OPEN_ACCOUNT)
    elif isinstance(item, FreezeAccount):
        _process_command(state, delivery, item, _FREEZE_ACCOUNT)
    elif isinstance(item, UnfreezeAccount):
        _process_command(state, delivery, item, _UNFREEZE_ACCOUNT)
    elif isinstance(item, CloseAccount):
        _process_command(state, delivery, item, _CLOSE_ACCOUNT)
    elif isinstance(item, RequestPayout):
        _process_command(state, delivery, item, _REQUEST_PAYOUT)
    elif isinstance(item, DecidePayout | SendPayout | SettlePayout | FailPayout):
        _process_command(state, delivery, item, _PAYOUT_COMMAND)
    elif isinstance(item, ConfigureScreening):
        _process_command(state, delivery, item, _CONFIGURE_SCREENING)
    elif isinstance(item, Malformed):
        _process_malformed(state, delivery, item)
    else:
        raise InvariantViolation(f"not an input type: {type(item).__name__}")


# --- command ids and idempotency -------------------------------------------------------------


def _claim_expiry_ms(state: _State, command_id: str) -> int | None:
    """When the claim of a valid command id ends, or ``None`` when the id is not valid here.

    Valid: well formed, minted for this partition, minted at most ``future_skew_ms``
    ahead of the log clock and less than ``retention_ms`` before it. The claim lives
    exactly as long as the id is valid: afterwards the window itself refuses the id.
    """
    parts = command_id_parts(command_id)
    if parts is None:
        return None
    partition, minted_at_ms = parts
    rules = state.rules
    expiry_ms = minted_at_ms + rules.retention_ms
    if (
        partition != state.partition
        or expiry_ms <= state.clock_ms
        or minted_at_ms > state.clock_ms + rules.future_skew_ms
    ):
        return None
    return expiry_ms


def _process_command(
    state: _State, delivery: Delivery, command: CommandT, handler: _Handler[CommandT]
) -> None:
    """Claim the command id, then apply once per request id; repeats are answered only."""
    command_id = command.command_id
    claim_expiry_ms = _claim_expiry_ms(state, command_id)
    if claim_expiry_ms is None:
        state.outputs.append(_answer(state, delivery, command, "command_id_invalid"))
        return
    body = body_sha256(command)
    claim = state.live_record(command_key(command_id))
    if claim is not None:
        state.outputs.append(_second_use(state, delivery, command, claim, body))
        return
    key = request_key(command.partner_id, command.request_id)
    record = state.live_record(key)
    if record is None:
        code = handler.execute(state, command)
        expiry_ms = state.clock_ms + state.rules.retention_ms
        state.put_record(key, _record(command_id, body, code, expiry_ms))
        state.put_record(command_key(command_id), _record(command_id, body, code, claim_expiry_ms))
        handler.emit(state, command, code)
    elif record.body_sha256 == body:
        original = _record(record.command_id, body, record.code, claim_expiry_ms)
        state.put_record(command_key(command_id), original)
        state.outputs.append(_duplicate(command, "duplicate", original))
    else:
        conflict = _record(command_id, body, "duplicate_conflict", claim_expiry_ms)
        state.put_record(command_key(command_id), conflict)
        state.outputs.append(_command_event(command, "Rejected", "rejected", "duplicate_conflict"))


def _record(
    command_id: str, body: str, code: RejectionCode | None, expiry_ms: int
) -> IdempotencyRecord:
    return IdempotencyRecord(
        command_id=command_id, body_sha256=body, code=code, expires_at_ms=expiry_ms
    )


def _second_use(
    state: _State, delivery: Delivery, command: Command, claim: IdempotencyRecord, body: str
) -> Event:
    """A claimed command id again: the same request is a duplicate, anything else a reuse."""
    if claim.body_sha256 == body:
        return _duplicate(command, _answer_step(state, delivery, "duplicate"), claim)
    return _answer(state, delivery, command, "command_id_reused")


def _process_malformed(state: _State, delivery: Delivery, item: Malformed) -> None:
    """Answer ``Rejected`` with the DLQ reason; claim the command id if it is free and valid."""
    command_id = item.command_id
    expiry_ms = None if item.code == "wrong_partition" else _claim_expiry_ms(state, command_id)
    if expiry_ms is not None and state.live_record(command_key(command_id)) is None:
        claim = _record(command_id, body_sha256(item), item.code, expiry_ms)
        state.put_record(command_key(command_id), claim)
        state.outputs.append(_command_event(item, "Rejected", "rejected", item.code))
        return
    state.outputs.append(_answer(state, delivery, item, item.code))


def _process_leg(state: _State, leg: LegT, handler: _Handler[LegT]) -> None:
    """Legs come from the core itself: each is applied exactly once, or the worker stops.

    Step 2 (CreditLeg) is refused twice by its record, and once its transfer id has left
    the retention window by the window itself (a leg that old was replayed, e.g. after
    committed offsets expired, or its partition lagged a whole window: stop, never credit
    twice). Step 3 needs the transfer's open reservation (``_reserved_source``), which it
    closes: a second step 3 finds none.
    """
    amount_minor = leg.amount_minor
    if type(amount_minor) is not int or not 0 < amount_minor <= AMOUNT_MAX_MINOR:
        raise InvariantViolation(f"saga leg with an invalid amount: {leg!r}")
    key = leg_key(leg)
    if isinstance(leg, CreditLeg):
        minted_at_ms = _transfer_minted_at_ms(leg)
        if minted_at_ms + state.rules.retention_ms <= state.clock_ms:
            raise InvariantViolation(f"credit leg older than the retention window: {leg!r}")
        if state.live_record(key) is not None:
            raise InvariantViolation(f"credit leg delivered twice: {leg!r}")
    code = handler.execute(state, leg)
    state.put_record(
        key, _record(leg.transfer_id, body_sha256(leg), code, _leg_expiry_ms(state, leg))
    )
    handler.emit(state, leg, code)


def _transfer_minted_at_ms(leg: Leg) -> int:
    parts = command_id_parts(leg.transfer_id)
    if parts is None:
        raise InvariantViolation(f"saga leg of a transfer id no worker could claim: {leg!r}")
    return parts[1]


def _leg_expiry_ms(state: _State, leg: Leg) -> int:
    """A leg's record lives as long as its transfer id is valid, and the retention from now."""
    return max(state.clock_ms, _transfer_minted_at_ms(leg)) + state.rules.retention_ms


def _transfer_of(leg: Leg) -> Transfer:
    """The Transfer a leg belongs to, as step 1 saw it (the command id is the transfer id)."""
    return Transfer(
        command_id=leg.transfer_id,
        request_id=leg.request_id,
        partner_id=leg.partner_id,
        issued_at_ms=leg.issued_at_ms,
        account_id=leg.source_account_id,
        destination_account_id=leg.destination_account_id,
        amount_minor=leg.amount_minor,
        currency=leg.currency,
        reference=leg.reference,
    )


# --- events ----------------------------------------------------------------------------


def _answer_step(state: _State, delivery: Delivery, step: str) -> str:
    """The step of an answer to an input that holds no claim: unique by its log position."""
    return f"{step}:{state.partition}.{delivery.offset}"


def is_own_event(event: Event) -> bool:
    """Whether ``event`` is about its payment (``<id>:<step>``), not an answer to a record
    that repeated or misused its id (``<id>:<step>:<partition>.<offset>``)."""
    step = event.event_id.removeprefix(f"{event.payment_id}:")
    return step != event.event_id and ":" not in step


def _answer(
    state: _State, delivery: Delivery, command: Command | Malformed, code: RejectionCode
) -> Event:
    """``Rejected`` for an input that holds no claim on its command id."""
    return _command_event(command, "Rejected", _answer_step(state, delivery, "rejected"), code)


def _duplicate(command: Command, step: str, original: IdempotencyRecord) -> Event:
    """``Duplicate``: this input repeats ``original``, whose outcome was ``original.code``."""
    return _command_event(command, "Duplicate", step, original.code, original.command_id)


def _command_event(
    command: Command | Malformed,
    event_type: EventType,
    step: str,
    code: RejectionCode | None = None,
    original_payment_id: str | None = None,
) -> Event:
    """An event about a command; money commands carry amount, currency, counterparty."""
    amount_minor: int | None = None
    currency: str | None = None
    counterparty: str | None = None
    reference: str | None = None
    if isinstance(command, Transfer):
        amount_minor, currency = command.amount_minor, command.currency
        counterparty, reference = command.destination_account_id, command.reference
    elif isinstance(command, Deposit | Withdrawal | RequestPayout):
        amount_minor, currency = command.amount_minor, command.currency
        reference = command.reference
    elif isinstance(command, OpenAccount):
        currency = command.currency
    command_type = (
        command.command_type if isinstance(command, Malformed) else type(command).__name__
    )
    return Event(
        event_id=f"{command.command_id}:{step}",
        payment_id=command.command_id,
        type=event_type,
        command_type=command_type,
        partner_id=command.partner_id,
        account_id=command.account_id,
        issued_at_ms=command.issued_at_ms,
        counterparty_account_id=counterparty,
        amount_minor=amount_minor,
        currency=currency,
        code=code,
        original_payment_id=original_payment_id,
        reference=reference,
        payout=payout_details(command) if isinstance(command, RequestPayout) else None,
    )


def _leg_event(leg: Leg, event_type: EventType, step: str, code: RejectionCode | None) -> Event:
    """An event about a transfer, from one of its legs: source account, destination counterparty."""
    return Event(
        event_id=f"{leg.transfer_id}:{step}",
        payment_id=leg.transfer_id,
        type=event_type,
        command_type=TRANSFER_COMMAND_TYPE,
        partner_id=leg.partner_id,
        account_id=leg.source_account_id,
        issued_at_ms=leg.issued_at_ms,
        counterparty_account_id=leg.destination_account_id,
        amount_minor=leg.amount_minor,
        currency=leg.currency,
        code=code,
        reference=leg.reference,
    )


def _emit_outcome(state: _State, command: Command, code: RejectionCode | None) -> bool:
    """Emit ``Completed``, or ``Rejected`` with the code; return whether it was applied."""
    if code is not None:
        state.outputs.append(_command_event(command, "Rejected", "rejected", code))
        return False
    state.outputs.append(_command_event(command, "Completed", "completed"))
    return True


# --- validation leaves -------------------------------------------------------------------


def _amount_code(amount_minor: int) -> RejectionCode | None:
    if type(amount_minor) is not int or not 0 < amount_minor <= AMOUNT_MAX_MINOR:
        return "invalid_amount"
    return None


def _limit_code(amount_minor: int, rules: Rules) -> RejectionCode | None:
    """Money going out (a transfer's step 1, a withdrawal) above the rules' limit."""
    if amount_minor > rules.amount_max_minor:
        return "amount_over_limit"
    return None


def _owned_account(state: _State, account_id: str, partner_id: str) -> Account | None:
    """The client account if it exists and belongs to ``partner_id`` (never leak others)."""
    if is_system_account_id(account_id):
        return None
    account = state.account(account_id)
    if account is None or account.partner_id != partner_id:
        return None
    return account


def _status_code(status: AccountStatus) -> RejectionCode | None:
    if status == "closed":
        return "account_closed"
    if status == "frozen":
        return "account_frozen"
    return None


def _usable_account(
    state: _State, account_id: str, partner_id: str, currency: str
) -> Account | RejectionCode:
    """The account if it may move money in ``currency``, else why not."""
    account = _owned_account(state, account_id, partner_id)
    if account is None:
        return "account_not_found"
    code = _status_code(account.status)
    if code is not None:
        return code
    if account.currency != currency:
        return "currency_mismatch"
    return account


def _outgoing(
    state: _State, source: Account, system_id: str, amount_minor: int
) -> Account | RejectionCode:
    """The system shard ``system_id`` (in the source's currency) if ``source`` may send it
    ``amount_minor``: funds first, then both accounts' total bounds; else why not."""
    if not has_funds(source, amount_minor):
        return "insufficient_funds"
    system = state.system_account(system_id, source.currency)
    if not (debits_fit(source, amount_minor) and credits_fit(system, amount_minor)):
        return "balance_overflow"
    return system


def _destination_code(entry: DirectoryEntry | None, transfer: Transfer) -> RejectionCode | None:
    """Step 1 refuses only what the directory KNOWS is wrong; the unknown is step 2's call."""
    if is_system_account_id(transfer.destination_account_id):
        return "account_not_found"
    if entry is None:
        return None
    if entry.partner_id != transfer.partner_id:
        return "account_not_found"
    code = _status_code(entry.status)
    if code is not None:
        return code
    if entry.currency != transfer.currency:
        return "currency_mismatch"
    return None


# --- account commands ------------------------------------------------------------------


def _execute_open_account(state: _State, command: OpenAccount) -> RejectionCode | None:
    if is_system_account_id(command.account_id) or state.account(command.account_id) is not None:
        return "account_exists"
    if not is_iso4217(command.currency):
        return "currency_mismatch"
    state.put_account(
        new_account(
            command.account_id,
            command.currency,
            command.partner_id,
            allow_overdraft=command.allow_overdraft,
        )
    )
    return None


def _execute_status_change(
    state: _State, command: Command, status_from: AccountStatus, status_to: AccountStatus
) -> RejectionCode | None:
    """Freeze / unfreeze: idempotent on the target status; a closed account stays closed."""
    account = _owned_account(state, command.account_id, command.partner_id)
    if account is None:
        return "account_not_found"
    if account.status == "closed":
        return "account_closed"
    if account.status == status_from:
        state.put_account(with_status(account, status_to))
    return None


def _execute_freeze_account(state: _State, command: FreezeAccount) -> RejectionCode | None:
    return _execute_status_change(state, command, "open", "frozen")


def _execute_unfreeze_account(state: _State, command: UnfreezeAccount) -> RejectionCode | None:
    return _execute_status_change(state, command, "frozen", "open")


def _execute_close_account(state: _State, command: CloseAccount) -> RejectionCode | None:
    """Only an empty account closes: nothing pending (money in flight), a zero balance."""
    account = _owned_account(state, command.account_id, command.partner_id)
    if account is None:
        return "account_not_found"
    code = _status_code(account.status)
    if code is not None:
        return code
    if account.has_pending:
        return "account_has_pending"
    if account.balance_minor != 0:
        return "account_not_empty"
    state.put_account(with_status(account, "closed"))
    return None


def _emit_account_command(state: _State, command: Command, code: RejectionCode | None) -> None:
    """Completed plus the account's CURRENT directory row (never a stale status)."""
    if _emit_outcome(state, command, code):
        account = state.account(command.account_id)
        if account is None:
            raise InvariantViolation(f"applied account command without account: {command!r}")
        state.outputs.append(directory_entry(account))


# --- money commands --------------------------------------------------------------------


def _execute_deposit(state: _State, command: Deposit) -> RejectionCode | None:
    amount_minor = command.amount_minor
    code = _amount_code(amount_minor)
    if code is not None:
        return code
    account = _usable_account(state, command.account_id, command.partner_id, command.currency)
    if isinstance(account, str):
        return account
    settlement = state.system_account(state.settlement_id(command.currency), command.currency)
    if not (credits_fit(account, amount_minor) and debits_fit(settlement, amount_minor)):
        return "balance_overflow"
    state.put_account(debit(settlement, amount_minor))
    state.put_account(credit(account, amount_minor))
    return None


def _emit_deposit(state: _State, command: Deposit, code: RejectionCode | None) -> None:
    if code is None:
        state.emit_entry(deposit_entry(command, state.settlement_id(command.currency)))
    _emit_outcome(state, command, code)


def _execute_withdrawal(state: _State, command: Withdrawal) -> RejectionCode | None:
    amount_minor = command.amount_minor
    code = _amount_code(amount_minor) or _limit_code(amount_minor, state.rules)
    if code is not None:
        return code
    account = _usable_account(state, command.account_id, command.partner_id, command.currency)
    if isinstance(account, str):
        return account
    settlement = _outgoing(state, account, state.settlement_id(command.currency), amount_minor)
    if isinstance(settlement, str):
        return settlement
    state.put_account(debit(account, amount_minor))
    state.put_account(credit(settlement, amount_minor))
    return None


def _emit_withdrawal(state: _State, command: Withdrawal, code: RejectionCode | None) -> None:
    if code is None:
        state.emit_entry(withdrawal_entry(command, state.settlement_id(command.currency)))
    _emit_outcome(state, command, code)


# --- the transfer saga -------------------------------------------------------------------


def _execute_transfer(state: _State, command: Transfer) -> RejectionCode | None:
    """Step 1 on partition(source): reserve the amount (pending DEBIT source / CREDIT transit)."""
    amount_minor = command.amount_minor
    code = _amount_code(amount_minor) or _limit_code(amount_minor, state.rules)
    if code is not None:
        return code
    source = _usable_account(state, command.account_id, command.partner_id, command.currency)
    if isinstance(source, str):
        return source
    if command.destination_account_id == command.account_id:
        return "same_account"
    code = _destination_code(state.directory.get(command.destination_account_id), command)
    if code is not None:
        return code
    transit = _outgoing(state, source, state.transit_id(command.currency), amount_minor)
    if isinstance(transit, str):
        return transit
    state.put_account(reserve_debit(source, amount_minor))
    state.put_account(reserve_credit(transit, amount_minor))
    reservation = _record(command.command_id, body_sha256(command), None, RESERVATION_OPEN_MS)
    state.put_record(("settlement", "", command.command_id), reservation)
    return None


def _emit_transfer(state: _State, command: Transfer, code: RejectionCode | None) -> None:
    if code is not None:
        state.outputs.append(_command_event(command, "Rejected", "rejected", code))
        return
    leg = CreditLeg(
        transfer_id=command.command_id,
        request_id=command.request_id,
        partner_id=command.partner_id,
        issued_at_ms=command.issued_at_ms,
        source_account_id=command.account_id,
        destination_account_id=command.destination_account_id,
        amount_minor=command.amount_minor,
        currency=command.currency,
        reference=command.reference,
    )
    state.emit_entry(transfer_debit_entry(leg, state.transit_id(command.currency), "pending"))
    state.outputs.append(leg)
    state.outputs.append(_command_event(command, "Debited", "debited"))


def _execute_credit_leg(state: _State, leg: CreditLeg) -> RejectionCode | None:
    """Step 2 on partition(destination): the authoritative account accepts or refuses."""
    amount_minor = leg.amount_minor
    destination = _usable_account(state, leg.destination_account_id, leg.partner_id, leg.currency)
    if isinstance(destination, str):
        return destination
    transit = state.system_account(state.transit_id(leg.currency), leg.currency)
    if not (credits_fit(destination, amount_minor) and debits_fit(transit, amount_minor)):
        return "balance_overflow"
    state.put_account(debit(transit, amount_minor))
    state.put_account(credit(destination, amount_minor))
    return None


def _emit_credit_leg(state: _State, leg: CreditLeg, code: RejectionCode | None) -> None:
    """Accepted: journal J2 and confirm to the source; refused: compensate the source."""
    if code is not None:
        state.outputs.append(
            Compensation(
                transfer_id=leg.transfer_id,
                request_id=leg.request_id,
                partner_id=leg.partner_id,
                issued_at_ms=leg.issued_at_ms,
                source_account_id=leg.source_account_id,
                destination_account_id=leg.destination_account_id,
                amount_minor=leg.amount_minor,
                currency=leg.currency,
                reason=code,
                reference=leg.reference,
            )
        )
        return
    state.emit_entry(transfer_credit_entry(leg, state.transit_id(leg.currency)))
    state.outputs.append(
        Confirmation(
            transfer_id=leg.transfer_id,
            request_id=leg.request_id,
            partner_id=leg.partner_id,
            issued_at_ms=leg.issued_at_ms,
            source_account_id=leg.source_account_id,
            destination_account_id=leg.destination_account_id,
            amount_minor=leg.amount_minor,
            currency=leg.currency,
            reference=leg.reference,
        )
    )


def _reserved_source(state: _State, leg: Confirmation | Compensation) -> tuple[Account, Account]:
    """The source and transit shard of step 1, holding this transfer's open reservation.

    Step 1 left an open reservation record under the transfer's settlement key, with
    the transfer's body; the leg must match it exactly. It does not expire, so step 3
    lands however late it comes; step 3 then closes it (``_process_leg``), so a
    transfer settles once. Anything else is a bug: InvariantViolation.
    """
    reservation = state.live_record(leg_key(leg))
    if (
        reservation is None
        or reservation.expires_at_ms != RESERVATION_OPEN_MS
        or reservation.command_id != leg.transfer_id
        or reservation.body_sha256 != body_sha256(_transfer_of(leg))
    ):
        raise InvariantViolation(
            f"step 3 of a transfer this partition never reserved (or settled before): {leg!r}"
        )
    source = state.account(leg.source_account_id)
    transit = state.account(state.transit_id(leg.currency))
    if (
        source is None
        or transit is None
        or source.partner_id != leg.partner_id
        or source.currency != leg.currency
        or source.pending_debits_minor < leg.amount_minor
        or transit.pending_credits_minor < leg.amount_minor
    ):
        raise InvariantViolation(f"reservation recorded but not held by the accounts: {leg!r}")
    return source, transit


def _execute_confirmation(state: _State, leg: Confirmation) -> RejectionCode | None:
    """Step 3 on partition(source): post the reservation, whatever the source's status."""
    source, transit = _reserved_source(state, leg)
    state.put_account(post_debit(source, leg.amount_minor))
    state.put_account(post_credit(transit, leg.amount_minor))
    return None


def _emit_confirmation(state: _State, leg: Confirmation, code: RejectionCode | None) -> None:
    ensure(code is None, "a confirmation is never refused")
    state.emit_entry(transfer_debit_entry(leg, state.transit_id(leg.currency), "post"))
    state.outputs.append(_leg_event(leg, "Completed", "completed", None))


def _execute_compensation(state: _State, leg: Compensation) -> RejectionCode | None:
    """Step 3 when the destination refused: void the reservation, whatever the source's status."""
    source, transit = _reserved_source(state, leg)
    state.put_account(void_debit(source, leg.amount_minor))
    state.put_account(void_credit(transit, leg.amount_minor))
    return None


def _emit_compensation(state: _State, leg: Compensation, code: RejectionCode | None) -> None:
    ensure(code is None, "a compensation is never refused")
    state.emit_entry(transfer_debit_entry(leg, state.transit_id(leg.currency), "void"))
    state.outputs.append(_leg_event(leg, "Reversed", "reversed", leg.reason))


# --- payouts (ledger.payouts: the state machine; screening: the rules) -------------------


def _execute_request_payout(state: _State, command: RequestPayout) -> RejectionCode | None:
    """Reserve the amount (pending DEBIT source / CREDIT payouts clearing), then screen the
    payout: held on any rule's hit, else queued. Refused: nothing reserved."""
    amount_minor = command.amount_minor
    code = (
        _amount_code(amount_minor)
        or _limit_code(amount_minor, state.rules)
        or beneficiary_code(command)
    )
    if code is not None:
        return code
    source = _usable_account(state, command.account_id, command.partner_id, command.currency)
    if isinstance(source, str):
        return source
    clearing = _outgoing(state, source, state.clearing_id(command.currency), amount_minor)
    if isinstance(clearing, str):
        return clearing
    ensure(state.payouts.get(command.command_id) is None, "a claimed payout id already in use")
    state.put_account(reserve_debit(source, amount_minor))
    state.put_account(reserve_credit(clearing, amount_minor))
    profile = _profile(state, command.account_id)
    key = beneficiary_key(command)
    codes = screen(
        state.screening,
        profile,
        now_ms=state.clock_ms,
        amount_minor=amount_minor,
        currency=command.currency,
        beneficiary_key=key,
        country=command.beneficiary_country,
    )
    payout = new_payout(command, requested_at_ms=state.clock_ms, rule_codes=codes)
    state.payouts.put(payout.payout_id, payout)
    state.profiles.put(
        command.account_id,
        profile_after(
            profile,
            now_ms=state.clock_ms,
            window_ms=state.screening.velocity_window_ms,
            amount_minor=amount_minor,
            approved_beneficiary=None if codes else key,
        ),
    )
    return None


def _profile(state: _State, account_id: str) -> PayoutProfile:
    profile = state.profiles.get(account_id)
    return PayoutProfile(account_id=account_id) if profile is None else profile


def _emit_request_payout(state: _State, command: RequestPayout, code: RejectionCode | None) -> None:
    """Refused: ``Failed`` with the code. Accepted: the reservation and the payout's first
    state (``Held`` with the rules it hit, or ``Queued``)."""
    if code is not None:
        state.outputs.append(_command_event(command, "Failed", "failed", code))
        return
    payout = _payout(state, command.command_id)
    state.emit_entry(payout_debit_entry(payout, state.clearing_id(payout.currency), "pending", 1))
    state.outputs.append(_payout_event(payout, payout.state, at_ms=command.issued_at_ms))


def _payout(state: _State, payout_id: str) -> Payout:
    payout = state.payouts.get(payout_id)
    if payout is None:
        raise InvariantViolation(f"payout applied but not kept: {payout_id}")
    return payout


def _execute_payout_command(state: _State, command: PayoutCommand) -> RejectionCode | None:
    """A decision or the rail's report: ``payouts.transition`` says what it does, and the
    accounts follow (reserve again, post then pay out of clearing, or void)."""
    if not authorized(command):
        return "not_authorized"
    payout = state.payouts.get(command.payout_id)
    if payout is None or payout.account_id != command.account_id:
        return "payout_not_found"
    moved = transition(payout, command)
    if isinstance(moved, str):
        return moved
    code = _move_money(state, payout, moved.money)
    if code is not None:
        return code
    state.payouts.put(payout.payout_id, moved.payout)
    if isinstance(command, DecidePayout) and moved.payout.state == "queued":
        state.profiles.put(
            payout.account_id,
            profile_after(
                _profile(state, payout.account_id),
                now_ms=state.clock_ms,
                window_ms=state.screening.velocity_window_ms,
                approved_beneficiary=beneficiary_key(payout),
            ),
        )
    return None


def _move_money(state: _State, payout: Payout, money: Money | None) -> RejectionCode | None:
    """Reserve the payout's amount again (refused like a request would be), or post or void
    the reservation it holds (always lands: the reservation guaranteed it)."""
    if money is None:
        return None
    amount_minor, clearing_id = payout.amount_minor, state.clearing_id(payout.currency)
    source, clearing = state.account(payout.account_id), state.account(clearing_id)
    if source is None or clearing is None:
        raise InvariantViolation(f"payout without its accounts: {payout!r}")
    if money == "reserve":
        code = _status_code(source.status)
        if code is not None:
            return code
        reserved = _outgoing(state, source, clearing_id, amount_minor)
        if isinstance(reserved, str):
            return reserved
        state.put_account(reserve_debit(source, amount_minor))
        state.put_account(reserve_credit(clearing, amount_minor))
        return None
    ensure(
        source.pending_debits_minor >= amount_minor
        and clearing.pending_credits_minor >= amount_minor,
        f"payout reservation not held by the accounts: {payout!r}",
    )
    if money == "void":
        state.put_account(void_debit(source, amount_minor))
        state.put_account(void_credit(clearing, amount_minor))
        return None
    state.put_account(post_debit(source, amount_minor))
    posted = post_credit(clearing, amount_minor)
    settlement = state.system_account(state.settlement_id(payout.currency), payout.currency)
    ensure(
        debits_fit(posted, amount_minor) and credits_fit(settlement, amount_minor),
        "payout settlement past the account totals",
    )
    state.put_account(debit(posted, amount_minor))
    state.put_account(credit(settlement, amount_minor))
    return None


def _emit_payout_command(state: _State, command: PayoutCommand, code: RejectionCode | None) -> None:
    """Refused: ``Rejected``. Applied: the entries, the payout's new state (with who changed
    it and what it was), then ``Completed`` for the command itself."""
    if code is not None:
        state.outputs.append(_command_event(command, "Rejected", "rejected", code))
        return
    payout = _payout(state, command.payout_id)
    clearing_id, n = state.clearing_id(payout.currency), payout.reservations
    if payout.state == "settled":
        state.emit_entry(payout_debit_entry(payout, clearing_id, "post", n))
        settlement_id = state.settlement_id(payout.currency)
        state.emit_entry(payout_settlement_entry(payout, clearing_id, settlement_id))
    elif payout.state == "failed":
        state.emit_entry(payout_debit_entry(payout, clearing_id, "void", n))
    elif isinstance(command, DecidePayout) and command.decision == "override":
        state.emit_entry(payout_debit_entry(payout, clearing_id, "pending", n))
    decision = command if isinstance(command, DecidePayout) else None
    state.outputs.append(
        _payout_event(
            payout,
            f"{payout.state}.{payout.version}",
            at_ms=command.issued_at_ms,
            actor=None if decision is None else decision.officer,
            reason=payout.failure_reason if decision is None else decision.reason,
            previous=_previous_state(command, payout),
        )
    )
    state.outputs.append(_command_event(command, "Completed", "completed"))


def _previous_state(command: PayoutCommand, payout: Payout) -> EventType:
    """The state ``command`` moved ``payout`` from (``payouts.transition``'s only edges)."""
    if isinstance(command, SendPayout):
        return "Queued"
    if isinstance(command, SettlePayout | FailPayout):
        return "Sending"
    if command.decision != "override":
        return "Held"
    return "Queued" if payout.state == "failed" else "Failed"


def _payout_event(
    payout: Payout,
    step: str,
    *,
    at_ms: int,
    actor: str | None = None,
    reason: str | None = None,
    previous: EventType | None = None,
) -> Event:
    """The payout's state as an event of the payout (``payment_id`` = payout id), at the
    time the command that changed it was issued (a payment's events all carry its command's
    time; a payout's states are minutes or days apart, and their times are what review and
    the rail's service levels are measured by)."""
    return Event(
        event_id=f"{payout.payout_id}:{step}",
        payment_id=payout.payout_id,
        type=STATE_EVENTS[payout.state],
        command_type=RequestPayout.__name__,
        partner_id=payout.partner_id,
        account_id=payout.account_id,
        issued_at_ms=at_ms,
        amount_minor=payout.amount_minor,
        currency=payout.currency,
        code=payout.failure_code,
        reference=payout.reference,
        rule_codes=payout.rule_codes,
        reason=reason,
        actor=actor,
        previous_type=previous,
        payout=payout_details(payout),
    )


def _execute_configure_screening(
    state: _State, command: ConfigureScreening
) -> RejectionCode | None:
    """The partition's screening rules from now on (for payouts requested after it)."""
    if command.partner_id != OPS_PARTNER_ID:
        return "not_authorized"
    if not command.account_id.startswith(SCREENING_KEY_PREFIX):
        return "account_not_found"
    try:
        state.screening = rules_from_json(command.rules_json, configured_by=command.command_id)
    except ValueError:
        return "invalid_rules"
    return None


def _emit_configure_screening(
    state: _State, command: ConfigureScreening, code: RejectionCode | None
) -> None:
    _emit_outcome(state, command, code)


_OPEN_ACCOUNT: _Handler[OpenAccount] = _Handler(_execute_open_account, _emit_account_command)
_FREEZE_ACCOUNT: _Handler[FreezeAccount] = _Handler(_execute_freeze_account, _emit_account_command)
_UNFREEZE_ACCOUNT: _Handler[UnfreezeAccount] = _Handler(
    _execute_unfreeze_account, _emit_account_command
)
_CLOSE_ACCOUNT: _Handler[CloseAccount] = _Handler(_execute_close_account, _emit_account_command)
_DEPOSIT: _Handler[Deposit] = _Handler(_execute_deposit, _emit_deposit)
_WITHDRAWAL: _Handler[Withdrawal] = _Handler(_execute_withdrawal, _emit_withdrawal)
_TRANSFER: _Handler[Transfer] = _Handler(_execute_transfer, _emit_transfer)
_CREDIT_LEG: _Handler[CreditLeg] = _Handler(_execute_credit_leg, _emit_credit_leg)
_CONFIRMATION: _Handler[Confirmation] = _Handler(_execute_confirmation, _emit_confirmation)
_COMPENSATION: _Handler[Compensation] = _Handler(_execute_compensation, _emit_compensation)
_REQUEST_PAYOUT: _Handler[RequestPayout] = _Handler(_execute_request_payout, _emit_request_payout)
_PAYOUT_COMMAND: _Handler[PayoutCommand] = _Handler(_execute_payout_command, _emit_payout_command)
_CONFIGURE_SCREENING: _Handler[ConfigureScreening] = _Handler(
    _execute_configure_screening, _emit_configure_screening
)
