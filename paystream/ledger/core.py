"""The entry point of the money core: ``process_batch``.

One call takes a batch of inputs that all came from one Kafka partition, applies
them in order over an overlay of the given read-only state, and returns the
changed accounts, the changed idempotency records and every output in order.
It is a pure function of its arguments: no I/O, no clock, no randomness, and a
batch of N gives exactly the result of N batches of one applied in sequence.

Every input is handled in two halves, so a redelivery re-emits exactly what the
first processing emitted:

- ``execute`` validates and, when the input is accepted, posts; it returns the
  rejection code (``None`` when applied), which the idempotency record keeps;
- ``emit`` builds the outputs from the input and that code alone (plus the
  account's current directory state for ``DirectoryEntry`` outputs).

Decisions where the design is silent:

- Balance overflow is judged on an account's turnover (all four totals), not on
  each total alone; see ``accounts.posting_fits``. That headroom is what lets
  step 3 (the reversal) always fit, so a Compensation is never refused.
- Client request ids starting with ``leg:`` / ``compensation:`` would take the
  idempotency keys of saga legs: such commands are rejected ``duplicate_conflict``
  and not recorded.
- A record with the same command id but another body hash is not a redelivery
  (a redelivery has the same bytes): it is an InvariantViolation, not a guess.
- Events of a transfer's legs say ``command_type="Transfer"`` (the payment a
  partner knows), ``account_id`` = source and counterparty = destination, like
  the ``Debited`` event of step 1.
- Ids starting with ``@`` are system accounts: OpenAccount on one is
  ``account_exists``; any other command or destination gets ``account_not_found``.
- OpenAccount in a currency outside ISO-4217 is ``currency_mismatch``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from paystream.ledger.accounts import (
    PARTITION_MAX,
    credit,
    debit,
    directory_entry,
    has_funds,
    is_empty,
    is_system_account_id,
    new_account,
    posting_fits,
    settlement_account_id,
    system_account,
    transit_account_id,
    with_status,
)
from paystream.ledger.currencies import is_iso4217
from paystream.ledger.errors import InvariantViolation, ensure
from paystream.ledger.idempotency import (
    COMPENSATION_KEY_PREFIX,
    LEG_KEY_PREFIX,
    body_sha256,
    is_reserved_request_id,
)
from paystream.ledger.journal import (
    check_balanced,
    deposit_entry,
    transfer_credit_entry,
    transfer_debit_entry,
    transfer_reversal_entry,
    withdrawal_entry,
)
from paystream.ledger.models import (
    AMOUNT_MAX_MINOR,
    Account,
    AccountStatus,
    CloseAccount,
    Command,
    Compensation,
    CreditLeg,
    Deposit,
    DirectoryEntry,
    Event,
    EventType,
    FreezeAccount,
    IdempotencyKey,
    IdempotencyRecord,
    Input,
    JournalEntry,
    Leg,
    OpenAccount,
    Output,
    RejectionCode,
    Transfer,
    UnfreezeAccount,
    Withdrawal,
)

BATCH_SIZE_MAX = 10_000
"""Most inputs one ``process_batch`` call accepts."""

TRANSFER_COMMAND_TYPE = Transfer.__name__
"""``command_type`` of the events of a transfer's saga legs: the payment is the Transfer."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a batch changed and emitted; the caller writes it all in one transaction."""

    accounts: dict[str, Account]
    """Changed accounts only, in their final version."""
    idempotency: dict[IdempotencyKey, IdempotencyRecord]
    """Changed (new) records only."""
    outputs: tuple[Output, ...]
    """Every output, in input order."""


def process_batch(
    inputs: Sequence[Input],
    *,
    partition: int,
    accounts: Mapping[str, Account],
    idempotency: Mapping[IdempotencyKey, IdempotencyRecord],
    directory: Mapping[str, DirectoryEntry],
) -> BatchResult:
    """Apply ``inputs`` (all from ``partition``) in order; never mutates the mappings.

    ``directory`` is a snapshot: changes made by this batch are not visible to
    later inputs of the batch (they reach it through the ``DirectoryEntry``
    outputs). Raises :class:`InvariantViolation` on a programmer error (an input
    that is not a model type, a broken ledger invariant); the state mappings are
    untouched then.
    """
    ensure(len(inputs) <= BATCH_SIZE_MAX, "batch larger than BATCH_SIZE_MAX")
    ensure(type(partition) is int and 0 <= partition <= PARTITION_MAX, "partition out of range")
    state = _State(partition, accounts, idempotency, directory)
    for item in inputs:
        _process(state, item)
    return BatchResult(state.changed_accounts, state.changed_records, tuple(state.outputs))


# --- the working overlay -------------------------------------------------------------


class _State:
    """One batch's view: read-only base state plus this batch's changes and outputs."""

    __slots__ = (
        "_base_accounts",
        "_base_records",
        "_settlement_ids",
        "_transit_ids",
        "changed_accounts",
        "changed_records",
        "directory",
        "outputs",
        "partition",
    )

    def __init__(
        self,
        partition: int,
        accounts: Mapping[str, Account],
        records: Mapping[IdempotencyKey, IdempotencyRecord],
        directory: Mapping[str, DirectoryEntry],
    ) -> None:
        self.partition = partition
        self._base_accounts = accounts
        self._base_records = records
        self.directory = directory
        self.changed_accounts: dict[str, Account] = {}
        self.changed_records: dict[IdempotencyKey, IdempotencyRecord] = {}
        self.outputs: list[Output] = []
        self._transit_ids: dict[str, str] = {}
        self._settlement_ids: dict[str, str] = {}

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
        account_id = self._transit_ids.get(currency)
        if account_id is None:
            account_id = transit_account_id(currency, self.partition)
            self._transit_ids[currency] = account_id
        return account_id

    def settlement_id(self, currency: str) -> str:
        account_id = self._settlement_ids.get(currency)
        if account_id is None:
            account_id = settlement_account_id(currency, self.partition)
            self._settlement_ids[currency] = account_id
        return account_id

    def record(self, key: IdempotencyKey) -> IdempotencyRecord | None:
        record = self.changed_records.get(key)
        return self._base_records.get(key) if record is None else record

    def put_record(self, key: IdempotencyKey, record: IdempotencyRecord) -> None:
        self.changed_records[key] = record

    def emit_entry(self, entry: JournalEntry) -> None:
        """Append a journal entry, after checking that it balances."""
        check_balanced(entry)
        self.outputs.append(entry)


# --- idempotency and dispatch ----------------------------------------------------------

InputT = TypeVar("InputT", bound=Input)
CommandT = TypeVar("CommandT", bound=Command)
LegT = TypeVar("LegT", bound=Leg)


@dataclass(frozen=True, slots=True)
class _Handler(Generic[InputT]):
    execute: Callable[[_State, InputT], RejectionCode | None]
    """Validate; post when accepted. Returns the rejection code, ``None`` if applied."""
    emit: Callable[[_State, InputT, RejectionCode | None], None]
    """Outputs from the input and its code; also used on redelivery."""


def _process(state: _State, item: Input) -> None:
    """Route one input to its handler (most frequent types first)."""
    if isinstance(item, Transfer):
        _process_command(state, item, _TRANSFER)
    elif isinstance(item, CreditLeg):
        _process_leg(state, item, LEG_KEY_PREFIX, _CREDIT_LEG)
    elif isinstance(item, Deposit):
        _process_command(state, item, _DEPOSIT)
    elif isinstance(item, Withdrawal):
        _process_command(state, item, _WITHDRAWAL)
    elif isinstance(item, Compensation):
        _process_leg(state, item, COMPENSATION_KEY_PREFIX, _COMPENSATION)
    elif isinstance(item, OpenAccount):
        _process_command(state, item, _OPEN_ACCOUNT)
    elif isinstance(item, FreezeAccount):
        _process_command(state, item, _FREEZE_ACCOUNT)
    elif isinstance(item, UnfreezeAccount):
        _process_command(state, item, _UNFREEZE_ACCOUNT)
    elif isinstance(item, CloseAccount):
        _process_command(state, item, _CLOSE_ACCOUNT)
    else:
        raise InvariantViolation(f"not an input type: {type(item).__name__}")


def _process_command(state: _State, command: CommandT, handler: _Handler[CommandT]) -> None:
    """Idempotency first: apply once, re-emit on redelivery, answer duplicates."""
    if is_reserved_request_id(command.request_id):
        state.outputs.append(_command_event(command, "Rejected", "rejected", "duplicate_conflict"))
        return
    body = body_sha256(command)
    key = (command.account_id, command.request_id)
    record = state.record(key)
    if record is None:
        code = handler.execute(state, command)
        state.put_record(key, IdempotencyRecord(command.command_id, body, code))
        handler.emit(state, command, code)
    elif record.command_id == command.command_id:
        if record.body_sha256 != body:
            raise InvariantViolation(f"command id reused with another body: {command!r}")
        handler.emit(state, command, record.code)
    elif record.body_sha256 == body:
        state.outputs.append(
            _command_event(command, "Duplicate", "duplicate", record.code, record.command_id)
        )
    else:
        state.outputs.append(_command_event(command, "Rejected", "rejected", "duplicate_conflict"))


def _process_leg(state: _State, leg: LegT, key_prefix: str, handler: _Handler[LegT]) -> None:
    """Legs come from the core itself: any record under their key is a redelivery."""
    body = body_sha256(leg)
    key = (leg.account_id, key_prefix + leg.transfer_id)
    record = state.record(key)
    if record is None:
        code = handler.execute(state, leg)
        state.put_record(key, IdempotencyRecord(leg.transfer_id, body, code))
        handler.emit(state, leg, code)
        return
    if record.command_id != leg.transfer_id or record.body_sha256 != body:
        raise InvariantViolation(f"saga leg does not match its idempotency record: {leg!r}")
    handler.emit(state, leg, record.code)


# --- events ----------------------------------------------------------------------------


def _command_event(
    command: Command,
    event_type: EventType,
    step: str,
    code: RejectionCode | None = None,
    original_payment_id: str | None = None,
) -> Event:
    """An event about a command; money commands carry amount, currency, counterparty."""
    amount_minor: int | None = None
    currency: str | None = None
    counterparty: str | None = None
    if isinstance(command, Transfer):
        amount_minor, currency = command.amount_minor, command.currency
        counterparty = command.destination_account_id
    elif isinstance(command, Deposit | Withdrawal):
        amount_minor, currency = command.amount_minor, command.currency
    elif isinstance(command, OpenAccount):
        currency = command.currency
    return Event(
        f"{command.command_id}:{step}",
        command.command_id,
        event_type,
        type(command).__name__,
        command.partner_id,
        command.account_id,
        command.issued_at_ms,
        counterparty,
        amount_minor,
        currency,
        code,
        original_payment_id,
    )


def _leg_event(leg: Leg, event_type: EventType, step: str, code: RejectionCode | None) -> Event:
    """An event about a transfer, from one of its legs: source account, destination counterparty."""
    return Event(
        f"{leg.transfer_id}:{step}",
        leg.transfer_id,
        event_type,
        TRANSFER_COMMAND_TYPE,
        leg.partner_id,
        leg.source_account_id,
        leg.issued_at_ms,
        leg.destination_account_id,
        leg.amount_minor,
        leg.currency,
        code,
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


def _destination_code(entry: DirectoryEntry | None, transfer: Transfer) -> RejectionCode | None:
    """Step 1 checks the destination against the directory snapshot."""
    if (
        entry is None
        or is_system_account_id(transfer.destination_account_id)
        or entry.partner_id != transfer.partner_id
    ):
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
    account = _owned_account(state, command.account_id, command.partner_id)
    if account is None:
        return "account_not_found"
    code = _status_code(account.status)
    if code is not None:
        return code
    if not is_empty(account):
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
    if not (posting_fits(account, amount_minor) and posting_fits(settlement, amount_minor)):
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
    code = _amount_code(amount_minor)
    if code is not None:
        return code
    account = _usable_account(state, command.account_id, command.partner_id, command.currency)
    if isinstance(account, str):
        return account
    if not has_funds(account, amount_minor):
        return "insufficient_funds"
    settlement = state.system_account(state.settlement_id(command.currency), command.currency)
    if not (posting_fits(account, amount_minor) and posting_fits(settlement, amount_minor)):
        return "balance_overflow"
    state.put_account(debit(account, amount_minor))
    state.put_account(credit(settlement, amount_minor))
    return None


def _emit_withdrawal(state: _State, command: Withdrawal, code: RejectionCode | None) -> None:
    if code is None:
        state.emit_entry(withdrawal_entry(command, state.settlement_id(command.currency)))
    _emit_outcome(state, command, code)


# --- the transfer saga -------------------------------------------------------------------


def _execute_transfer(state: _State, command: Transfer) -> RejectionCode | None:
    """Step 1 on partition(source): DEBIT source / CREDIT transit."""
    amount_minor = command.amount_minor
    code = _amount_code(amount_minor)
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
    if not has_funds(source, amount_minor):
        return "insufficient_funds"
    transit = state.system_account(state.transit_id(command.currency), command.currency)
    if not (posting_fits(source, amount_minor) and posting_fits(transit, amount_minor)):
        return "balance_overflow"
    state.put_account(debit(source, amount_minor))
    state.put_account(credit(transit, amount_minor))
    return None


def _emit_transfer(state: _State, command: Transfer, code: RejectionCode | None) -> None:
    if code is not None:
        state.outputs.append(_command_event(command, "Rejected", "rejected", code))
        return
    state.emit_entry(transfer_debit_entry(command, state.transit_id(command.currency)))
    state.outputs.append(
        CreditLeg(
            command.command_id,
            command.partner_id,
            command.issued_at_ms,
            command.account_id,
            command.destination_account_id,
            command.amount_minor,
            command.currency,
        )
    )
    state.outputs.append(_command_event(command, "Debited", "debited"))


def _execute_credit_leg(state: _State, leg: CreditLeg) -> RejectionCode | None:
    """Step 2 on partition(destination): the authoritative account decides."""
    amount_minor = leg.amount_minor
    ensure(_amount_code(amount_minor) is None, "credit leg with an invalid amount")
    destination = _usable_account(state, leg.destination_account_id, leg.partner_id, leg.currency)
    if isinstance(destination, str):
        return destination
    transit = state.system_account(state.transit_id(leg.currency), leg.currency)
    if not (posting_fits(destination, amount_minor) and posting_fits(transit, amount_minor)):
        return "balance_overflow"
    state.put_account(debit(transit, amount_minor))
    state.put_account(credit(destination, amount_minor))
    return None


def _emit_credit_leg(state: _State, leg: CreditLeg, code: RejectionCode | None) -> None:
    if code is not None:
        state.outputs.append(
            Compensation(
                leg.transfer_id,
                leg.partner_id,
                leg.issued_at_ms,
                leg.source_account_id,
                leg.destination_account_id,
                leg.amount_minor,
                leg.currency,
                code,
            )
        )
        return
    state.emit_entry(transfer_credit_entry(leg, state.transit_id(leg.currency)))
    state.outputs.append(_leg_event(leg, "Completed", "completed", None))


def _execute_compensation(state: _State, leg: Compensation) -> RejectionCode | None:
    """Step 3 on partition(source): money goes back even to a frozen or closed source."""
    amount_minor = leg.amount_minor
    ensure(_amount_code(amount_minor) is None, "compensation with an invalid amount")
    source = state.account(leg.source_account_id)
    if source is None or source.partner_id != leg.partner_id or source.currency != leg.currency:
        raise InvariantViolation(f"compensation for an account that was never debited: {leg!r}")
    transit = state.system_account(state.transit_id(leg.currency), leg.currency)
    # No posting_fits() check: the turnover headroom kept by every ordinary posting
    # guarantees that the reversal fits; debit() and credit() still verify the totals.
    state.put_account(debit(transit, amount_minor))
    state.put_account(credit(source, amount_minor))
    return None


def _emit_compensation(state: _State, leg: Compensation, code: RejectionCode | None) -> None:
    ensure(code is None, "a compensation is never rejected")
    state.emit_entry(transfer_reversal_entry(leg, state.transit_id(leg.currency)))
    state.outputs.append(_leg_event(leg, "Reversed", "reversed", leg.reason))


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
_COMPENSATION: _Handler[Compensation] = _Handler(_execute_compensation, _emit_compensation)
