"""Builders for tests of the pure core: accounts, minted command ids, deliveries, one call.

Deterministic: command ids are minted from a counter, deliveries get offsets
and log times from the caller, so a test reads like the records it stands for.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import ChainMap, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar, cast

from paystream.ledger import (
    Account,
    AccountStatus,
    BatchResult,
    CloseAccount,
    Compensation,
    ConfigureScreening,
    Confirmation,
    CreditLeg,
    DecidePayout,
    Decision,
    Delivery,
    Deposit,
    DirectoryEntry,
    Event,
    FailPayout,
    FreezeAccount,
    IdempotencyKey,
    IdempotencyRecord,
    Input,
    JournalEntry,
    Malformed,
    OpenAccount,
    Output,
    Payout,
    PayoutProfile,
    RejectionCode,
    RequestPayout,
    Rules,
    ScreeningRules,
    SendPayout,
    SettlePayout,
    Transfer,
    UnfreezeAccount,
    Withdrawal,
    mint_command_id,
    process_batch,
)
from paystream.ledger.models import OPS_PARTNER_ID, RAIL_PARTNER_ID

PARTNER = "p1"
OTHER_PARTNER = "p2"
T0_MS = 1_764_500_000_000
"""The log time tests start at (2025-11-30)."""
RULES = Rules()


def cid(n: int | str, *, partition: int = 0, at_ms: int = T0_MS) -> str:
    """The ``n``-th command id minted for ``partition`` at ``at_ms`` (the same n, the same id)."""
    random_bytes = hashlib.sha256(f"{n}@{partition}@{at_ms}".encode()).digest()[:10]
    return mint_command_id(partition=partition, at_ms=at_ms, random_bytes=random_bytes)


def make_account(
    account_id: str,
    *,
    currency: str = "EUR",
    partner_id: str = PARTNER,
    status: AccountStatus = "open",
    no_overdraft: bool = True,
    credits_minor: int = 0,
    debits_minor: int = 0,
    pending_debits_minor: int = 0,
    pending_credits_minor: int = 0,
    version: int = 1,
) -> Account:
    return Account(
        account_id=account_id,
        currency=currency,
        partner_id=partner_id,
        status=status,
        debits_must_not_exceed_credits=no_overdraft,
        posted_debits_minor=debits_minor,
        posted_credits_minor=credits_minor,
        pending_debits_minor=pending_debits_minor,
        pending_credits_minor=pending_credits_minor,
        version=version,
    )


def directory_of(accounts: Iterable[Account]) -> dict[str, DirectoryEntry]:
    return {
        a.account_id: DirectoryEntry(a.account_id, a.currency, a.partner_id, a.status)
        for a in accounts
    }


def deliver(
    inputs: Sequence[Input], *, first_offset: int = 0, log_time_ms: int = T0_MS
) -> list[Delivery]:
    """``inputs`` as consecutive records of one partition, all at ``log_time_ms``."""
    return [
        Delivery(item=item, offset=first_offset + i, log_time_ms=log_time_ms)
        for i, item in enumerate(inputs)
    ]


def run(
    inputs: Sequence[Input],
    *,
    accounts: Iterable[Account] = (),
    idempotency: Mapping[IdempotencyKey, IdempotencyRecord] | None = None,
    directory: Mapping[str, DirectoryEntry] | None = None,
    partition: int = 0,
    clock_ms: int = 0,
    log_time_ms: int = T0_MS,
    first_offset: int = 0,
    rules: Rules = RULES,
) -> BatchResult:
    """``process_batch`` over ``inputs`` delivered at ``log_time_ms``; the given accounts are
    also in the directory by default."""
    account_list = list(accounts)
    return process_batch(
        deliver(inputs, first_offset=first_offset, log_time_ms=log_time_ms),
        partition=partition,
        accounts={a.account_id: a for a in account_list},
        idempotency={} if idempotency is None else idempotency,
        directory=directory_of(account_list) if directory is None else directory,
        clock_ms=clock_ms,
        rules=rules,
    )


@dataclass(frozen=True)
class SingleStep:
    """One input applied alone, and the accounts its outputs name before and after it."""

    partition: int
    delivery: Delivery
    outputs: tuple[Output, ...]
    clock_ms: int
    before: dict[str, Account | None]
    after: dict[str, Account | None]


def run_in_singles(
    deliveries: Sequence[Delivery],
    *,
    partition: int,
    accounts: Mapping[str, Account],
    idempotency: Mapping[IdempotencyKey, IdempotencyRecord],
    directory: Mapping[str, DirectoryEntry],
    clock_ms: int,
    rules: Rules = RULES,
) -> tuple[BatchResult, list[SingleStep]]:
    """Apply ``deliveries`` one by one, threading state and clock; the merged result and steps."""
    changed_accounts: dict[str, Account] = {}
    changed_records: dict[IdempotencyKey, IdempotencyRecord] = {}
    # A ChainMap writes to its first map only: the base mappings are read, never changed.
    account_view = ChainMap(changed_accounts, cast("dict[str, Account]", accounts))
    record_view = ChainMap(
        changed_records, cast("dict[IdempotencyKey, IdempotencyRecord]", idempotency)
    )
    steps: list[SingleStep] = []
    for delivery in deliveries:
        result = process_batch(
            [delivery],
            partition=partition,
            accounts=account_view,
            idempotency=record_view,
            directory=directory,
            clock_ms=clock_ms,
            rules=rules,
        )
        touched = _touched_accounts(result)
        touched.add(delivery.item.account_id)
        before = {a: account_view.get(a) for a in touched}
        changed_accounts.update(result.accounts)
        changed_records.update(result.idempotency)
        after = {a: account_view.get(a) for a in touched}
        steps.append(
            SingleStep(partition, delivery, result.outputs, result.clock_ms, before, after)
        )
        clock_ms = result.clock_ms
    outputs = tuple(output for step in steps for output in step.outputs)
    merged = BatchResult(
        accounts=changed_accounts,
        idempotency=changed_records,
        outputs=outputs,
        clock_ms=clock_ms,
        payouts={},
        profiles={},
        screening=None,
    )
    return merged, steps


def _touched_accounts(result: BatchResult) -> set[str]:
    touched = {
        line.account_id for o in result.outputs if isinstance(o, JournalEntry) for line in o.lines
    }
    touched.update(o.account_id for o in result.outputs if isinstance(o, DirectoryEntry))
    return touched


# --- commands and legs, by keyword, with minted ids ----------------------------------------


def _ids(n: int | str, request_id: str | None, partition: int, at_ms: int) -> dict[str, object]:
    return {
        "command_id": cid(n, partition=partition, at_ms=at_ms),
        "request_id": f"r{n}" if request_id is None else request_id,
        "issued_at_ms": at_ms,
    }


def open_account(
    n: int | str,
    account_id: str = "acc-1",
    currency: str = "EUR",
    *,
    allow_overdraft: bool = False,
    partner_id: str = PARTNER,
    request_id: str | None = None,
    partition: int = 0,
    at_ms: int = T0_MS,
) -> OpenAccount:
    return OpenAccount(
        **_ids(n, request_id, partition, at_ms),  # type: ignore[arg-type]
        partner_id=partner_id,
        account_id=account_id,
        currency=currency,
        allow_overdraft=allow_overdraft,
    )


StatusCommand = FreezeAccount | UnfreezeAccount | CloseAccount


def status_command(
    kind: type[StatusCommand],
    n: int | str,
    account_id: str = "acc-1",
    *,
    partner_id: str = PARTNER,
    request_id: str | None = None,
    partition: int = 0,
    at_ms: int = T0_MS,
) -> StatusCommand:
    """A FreezeAccount, UnfreezeAccount or CloseAccount (they have the same fields)."""
    return kind(
        **_ids(n, request_id, partition, at_ms),  # type: ignore[arg-type]
        partner_id=partner_id,
        account_id=account_id,
    )


def deposit(
    n: int | str,
    account_id: str = "acc-1",
    amount_minor: int = 100,
    *,
    currency: str = "EUR",
    partner_id: str = PARTNER,
    request_id: str | None = None,
    partition: int = 0,
    at_ms: int = T0_MS,
) -> Deposit:
    return Deposit(
        **_ids(n, request_id, partition, at_ms),  # type: ignore[arg-type]
        partner_id=partner_id,
        account_id=account_id,
        amount_minor=amount_minor,
        currency=currency,
    )


def withdrawal(
    n: int | str,
    account_id: str = "acc-1",
    amount_minor: int = 100,
    *,
    currency: str = "EUR",
    partner_id: str = PARTNER,
    request_id: str | None = None,
    partition: int = 0,
    at_ms: int = T0_MS,
) -> Withdrawal:
    return Withdrawal(
        **_ids(n, request_id, partition, at_ms),  # type: ignore[arg-type]
        partner_id=partner_id,
        account_id=account_id,
        amount_minor=amount_minor,
        currency=currency,
    )


def transfer(
    n: int | str,
    source: str = "src",
    destination: str = "dst",
    amount_minor: int = 100,
    *,
    currency: str = "EUR",
    partner_id: str = PARTNER,
    request_id: str | None = None,
    partition: int = 0,
    at_ms: int = T0_MS,
) -> Transfer:
    return Transfer(
        **_ids(n, request_id, partition, at_ms),  # type: ignore[arg-type]
        partner_id=partner_id,
        account_id=source,
        destination_account_id=destination,
        amount_minor=amount_minor,
        currency=currency,
    )


IBAN = "DE89370400440532013000"


def a_payout(**changes: object) -> Payout:
    """A queued payout of 5 EUR from ``src`` (``changes`` replace fields), for table tests."""
    payout = Payout(
        payout_id="po-1", request_id="r", batch_id="b", partner_id=PARTNER, account_id="src",
        issued_at_ms=1, requested_at_ms=1, amount_minor=5, currency="EUR",
        beneficiary_name="Ada Lovelace", beneficiary_country="DE", beneficiary_iban=IBAN,
        beneficiary_bic=None, beneficiary_account_number=None, beneficiary_routing_number=None,
        reference=None, state="queued",
    )  # fmt: skip
    return dataclasses.replace(payout, **changes)  # type: ignore[arg-type]


def request_payout(
    n: int | str,
    source: str = "src",
    amount_minor: int = 100,
    *,
    currency: str = "EUR",
    iban: str | None = IBAN,
    bic: str | None = None,
    account_number: str | None = None,
    routing_number: str | None = None,
    name: str = "Ada Lovelace",
    country: str = "DE",
    batch_id: str = "batch-1",
    partner_id: str = PARTNER,
    request_id: str | None = None,
    partition: int = 0,
    at_ms: int = T0_MS,
) -> RequestPayout:
    return RequestPayout(
        **_ids(n, request_id, partition, at_ms),  # type: ignore[arg-type]
        partner_id=partner_id,
        account_id=source,
        batch_id=batch_id,
        amount_minor=amount_minor,
        currency=currency,
        beneficiary_name=name,
        beneficiary_country=country,
        beneficiary_iban=iban,
        beneficiary_bic=bic,
        beneficiary_account_number=account_number,
        beneficiary_routing_number=routing_number,
    )


def decide(
    n: int | str,
    payout: RequestPayout,
    decision: Decision,
    reason: str | None = None,
    *,
    officer: str = "officer-1",
    partner_id: str = OPS_PARTNER_ID,
    request_id: str | None = None,
    partition: int = 0,
    at_ms: int = T0_MS,
) -> DecidePayout:
    return DecidePayout(
        **_ids(n, request_id, partition, at_ms),  # type: ignore[arg-type]
        partner_id=partner_id,
        account_id=payout.account_id,
        payout_id=payout.command_id,
        decision=decision,
        officer=officer,
        reason=reason,
    )


RailCommand = SendPayout | SettlePayout


def rail(
    kind: type[RailCommand],
    n: int | str,
    payout: RequestPayout,
    *,
    partner_id: str = RAIL_PARTNER_ID,
    request_id: str | None = None,
    partition: int = 0,
    at_ms: int = T0_MS,
) -> RailCommand:
    """The rail connector's SendPayout or SettlePayout for ``payout``."""
    return kind(
        **_ids(n, request_id, partition, at_ms),  # type: ignore[arg-type]
        partner_id=partner_id,
        account_id=payout.account_id,
        payout_id=payout.command_id,
    )


def fail_payout(
    n: int | str,
    payout: RequestPayout,
    reason_code: str = "AC04",
    reason: str | None = "closed account",
    *,
    partner_id: str = RAIL_PARTNER_ID,
    partition: int = 0,
    at_ms: int = T0_MS,
) -> FailPayout:
    return FailPayout(
        **_ids(n, None, partition, at_ms),  # type: ignore[arg-type]
        partner_id=partner_id,
        account_id=payout.account_id,
        payout_id=payout.command_id,
        reason_code=reason_code,
        reason=reason,
    )


def configure_screening(
    n: int | str,
    rules_json: str,
    *,
    partner_id: str = OPS_PARTNER_ID,
    key: str = "@screening:0",
    partition: int = 0,
    at_ms: int = T0_MS,
) -> ConfigureScreening:
    return ConfigureScreening(
        **_ids(n, None, partition, at_ms),  # type: ignore[arg-type]
        partner_id=partner_id,
        account_id=key,
        rules_json=rules_json,
    )


def malformed(
    command_id: str,
    code: RejectionCode = "invalid_field",
    *,
    command_type: str = "Deposit",
    account_id: str = "acc-1",
    partner_id: str = PARTNER,
    request_id: str = "r-bad",
    issued_at_ms: int = T0_MS,
) -> Malformed:
    return Malformed(
        command_id=command_id,
        request_id=request_id,
        partner_id=partner_id,
        issued_at_ms=issued_at_ms,
        account_id=account_id,
        command_type=command_type,
        code=code,
    )


def credit_leg(
    transfer_id: str,
    *,
    source: str = "src",
    destination: str = "dst",
    amount_minor: int = 100,
    currency: str = "EUR",
    partner_id: str = PARTNER,
    issued_at_ms: int = T0_MS,
    request_id: str = "r1",
) -> CreditLeg:
    return CreditLeg(
        transfer_id=transfer_id,
        request_id=request_id,
        partner_id=partner_id,
        issued_at_ms=issued_at_ms,
        source_account_id=source,
        destination_account_id=destination,
        amount_minor=amount_minor,
        currency=currency,
    )


def leg_of(command: Transfer) -> CreditLeg:
    """The CreditLeg step 1 sends for ``command`` (its request id included)."""
    return CreditLeg(
        transfer_id=command.command_id,
        request_id=command.request_id,
        partner_id=command.partner_id,
        issued_at_ms=command.issued_at_ms,
        source_account_id=command.account_id,
        destination_account_id=command.destination_account_id,
        amount_minor=command.amount_minor,
        currency=command.currency,
    )


def confirmation_of(leg: CreditLeg, **changes: object) -> Confirmation:
    """The Confirmation step 2 sends for ``leg`` (fields overridable)."""
    fields = _leg_fields(leg) | changes
    return Confirmation(**fields)  # type: ignore[arg-type]


def compensation_of(
    leg: CreditLeg, reason: RejectionCode = "account_not_found", **changes: object
) -> Compensation:
    """The Compensation step 2 sends for ``leg`` refused with ``reason``."""
    fields = _leg_fields(leg) | {"reason": reason} | changes
    return Compensation(**fields)  # type: ignore[arg-type]


def _leg_fields(leg: CreditLeg) -> dict[str, object]:
    return {
        "transfer_id": leg.transfer_id,
        "request_id": leg.request_id,
        "partner_id": leg.partner_id,
        "issued_at_ms": leg.issued_at_ms,
        "source_account_id": leg.source_account_id,
        "destination_account_id": leg.destination_account_id,
        "amount_minor": leg.amount_minor,
        "currency": leg.currency,
    }


# --- reading results -------------------------------------------------------------------------

OutputT = TypeVar("OutputT")


def of_type(outputs: Iterable[Output], kind: type[OutputT]) -> list[OutputT]:
    return [output for output in outputs if isinstance(output, kind)]


def events(result: BatchResult) -> list[Event]:
    return of_type(result.outputs, Event)


def the_event(result: BatchResult) -> Event:
    """The one output of ``result``, which must be an event."""
    (event,) = result.outputs
    assert isinstance(event, Event), event
    return event


def entries(result: BatchResult) -> list[JournalEntry]:
    return of_type(result.outputs, JournalEntry)


def step_3_leg(step_2: BatchResult) -> Confirmation | Compensation:
    """The one Confirmation or Compensation a CreditLeg's batch sent back to the source."""
    (leg,) = [o for o in step_2.outputs if isinstance(o, Confirmation | Compensation)]
    return leg


def balance_sum(accounts: Iterable[Account], currency: str = "EUR") -> int:
    """Σ posted balances in ``currency``: 0 for a closed system of double entries."""
    return sum(a.balance_minor for a in accounts if a.currency == currency)


# --- several partitions, batch after batch ---------------------------------------------------


@dataclass
class Cluster:
    """The state workers keep, threaded through successive batches on several partitions.

    Accounts and the directory are shared (account ids are unique; the directory is a
    GlobalTable, refreshed from DirectoryEntry outputs after each batch); idempotency
    records, log clocks and offsets are per partition. Every output is kept in order.
    """

    rules: Rules = RULES
    accounts: dict[str, Account] = field(default_factory=dict)
    directory: dict[str, DirectoryEntry] = field(default_factory=dict)
    records: dict[int, dict[IdempotencyKey, IdempotencyRecord]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    clocks_ms: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    next_offsets: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    outputs: list[Output] = field(default_factory=list)
    payouts: dict[int, dict[str, Payout]] = field(default_factory=lambda: defaultdict(dict))
    profiles: dict[int, dict[str, PayoutProfile]] = field(default_factory=lambda: defaultdict(dict))
    screening: dict[int, ScreeningRules] = field(
        default_factory=lambda: defaultdict(ScreeningRules)
    )

    @classmethod
    def of(cls, accounts: Iterable[Account], *, rules: Rules = RULES) -> Cluster:
        """A cluster holding ``accounts``, all of them in the directory."""
        account_list = list(accounts)
        return cls(
            rules=rules,
            accounts={a.account_id: a for a in account_list},
            directory=directory_of(account_list),
        )

    def apply(
        self, inputs: Sequence[Input], *, partition: int = 0, log_time_ms: int = T0_MS
    ) -> BatchResult:
        """One batch of ``inputs`` on ``partition`` at ``log_time_ms``; the state moves on."""
        result = process_batch(
            deliver(inputs, first_offset=self.next_offsets[partition], log_time_ms=log_time_ms),
            partition=partition,
            accounts=MappingProxyType(self.accounts),
            idempotency=MappingProxyType(self.records[partition]),
            directory=MappingProxyType(self.directory),
            clock_ms=self.clocks_ms[partition],
            rules=self.rules,
            payouts=MappingProxyType(self.payouts[partition]),
            profiles=MappingProxyType(self.profiles[partition]),
            screening=self.screening[partition],
        )
        self.accounts.update(result.accounts)
        self.records[partition].update(result.idempotency)
        self.payouts[partition].update(result.payouts)
        self.profiles[partition].update(result.profiles)
        if result.screening is not None:
            self.screening[partition] = result.screening
        self.clocks_ms[partition] = result.clock_ms
        self.next_offsets[partition] += len(inputs)
        self.directory.update((e.account_id, e) for e in of_type(result.outputs, DirectoryEntry))
        self.outputs.extend(result.outputs)
        return result

    def saga(
        self,
        command: Transfer,
        *,
        source_partition: int = 0,
        destination_partition: int = 1,
        log_time_ms: int = T0_MS,
    ) -> list[BatchResult]:
        """Step 1 on the source's partition, then every leg it leads to, each where it goes."""
        results = [self.apply([command], partition=source_partition, log_time_ms=log_time_ms)]
        for leg in of_type(results[-1].outputs, CreditLeg):
            step_2 = self.apply([leg], partition=destination_partition, log_time_ms=log_time_ms)
            results.append(step_2)
            results.append(
                self.apply(
                    [step_3_leg(step_2)], partition=source_partition, log_time_ms=log_time_ms
                )
            )
        return results

    def account(self, account_id: str) -> Account:
        return self.accounts[account_id]

    def events(self) -> list[Event]:
        return of_type(self.outputs, Event)

    def entries(self) -> list[JournalEntry]:
        return of_type(self.outputs, JournalEntry)
