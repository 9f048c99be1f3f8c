"""process_batch: idempotency, redelivery and duplicates."""

from __future__ import annotations

import dataclasses

import pytest

from paystream.ledger import (
    BatchResult,
    Compensation,
    CreditLeg,
    Deposit,
    DirectoryEntry,
    Event,
    FreezeAccount,
    IdempotencyRecord,
    InvariantViolation,
    OpenAccount,
    Transfer,
    UnfreezeAccount,
    Withdrawal,
    body_sha256,
)
from tests.property.sim import PARTNER, make_account, run

AT_MS = 1_700_000_001_000
ACCOUNT = make_account("acc-1", credits_minor=100)
DEPOSIT = Deposit("c1", "r1", PARTNER, AT_MS, "acc-1", 50, "EUR")
WITHDRAWAL = Withdrawal("c1", "r1", PARTNER, AT_MS, "acc-1", 500, "EUR")
LEG = CreditLeg("t1", PARTNER, AT_MS, "src", "acc-1", 40, "EUR")
COMPENSATION = Compensation("t1", PARTNER, AT_MS, "acc-1", "dst", 40, "EUR", "account_closed")


def applied_then(command: object, first: BatchResult, again: object) -> BatchResult:
    """Run ``again`` over the state ``first`` left behind."""
    return run(
        [again],  # type: ignore[list-item]
        accounts=[ACCOUNT, *first.accounts.values()],
        idempotency=first.idempotency,
    )


def the_event(result: BatchResult) -> Event:
    (event,) = result.outputs
    assert isinstance(event, Event)
    return event


def test_an_applied_command_is_recorded_with_no_code() -> None:
    result = run([DEPOSIT], accounts=[ACCOUNT])
    assert result.idempotency == {
        ("acc-1", "r1"): IdempotencyRecord("c1", body_sha256(DEPOSIT), None)
    }


def test_a_rejected_command_is_recorded_with_its_code() -> None:
    result = run([WITHDRAWAL], accounts=[ACCOUNT])
    assert result.idempotency[("acc-1", "r1")].code == "insufficient_funds"


def test_redelivery_re_emits_the_same_outputs_and_changes_nothing() -> None:
    first = run([DEPOSIT], accounts=[ACCOUNT])
    again = applied_then(DEPOSIT, first, DEPOSIT)
    assert (again.accounts, again.idempotency) == ({}, {})
    assert again.outputs == first.outputs


def test_redelivery_of_a_rejection_re_emits_the_rejection() -> None:
    first = run([WITHDRAWAL], accounts=[ACCOUNT])
    again = applied_then(WITHDRAWAL, first, WITHDRAWAL)
    assert again.outputs == first.outputs
    assert again.accounts == {}


def test_redelivery_in_the_same_batch_is_recognised() -> None:
    result = run([DEPOSIT, DEPOSIT], accounts=[ACCOUNT])
    assert result.accounts["acc-1"].balance_minor == 150
    assert result.outputs[:2] == result.outputs[2:]


def test_redelivery_of_an_account_command_carries_the_current_directory_state() -> None:
    opened = run([OpenAccount("c1", "r1", PARTNER, AT_MS, "acc-9", "EUR")])
    freeze = FreezeAccount("c2", "r2", PARTNER, AT_MS, "acc-9")
    frozen = run([freeze], accounts=opened.accounts.values(), idempotency=opened.idempotency)
    again = run(
        [OpenAccount("c1", "r1", PARTNER, AT_MS, "acc-9", "EUR")],
        accounts=frozen.accounts.values(),
        idempotency=opened.idempotency,
    )
    assert again.outputs[0] == opened.outputs[0]
    assert again.outputs[1] == DirectoryEntry("acc-9", "EUR", PARTNER, "frozen")


def test_an_exact_duplicate_answers_duplicate_with_the_original_id() -> None:
    first = run([DEPOSIT], accounts=[ACCOUNT])
    duplicate = dataclasses.replace(DEPOSIT, command_id="c2", issued_at_ms=AT_MS + 5)
    again = applied_then(DEPOSIT, first, duplicate)
    assert (again.accounts, again.idempotency) == ({}, {})
    assert the_event(again) == Event(
        "c2:duplicate", "c2", "Duplicate", "Deposit", PARTNER, "acc-1", AT_MS + 5,
        amount_minor=50, currency="EUR", original_payment_id="c1",
    )  # fmt: skip


def test_a_duplicate_of_a_rejection_carries_the_original_code() -> None:
    first = run([WITHDRAWAL], accounts=[ACCOUNT])
    again = applied_then(WITHDRAWAL, first, dataclasses.replace(WITHDRAWAL, command_id="c2"))
    event = the_event(again)
    assert (event.type, event.code, event.original_payment_id) == (
        "Duplicate",
        "insufficient_funds",
        "c1",
    )


def test_the_same_request_id_with_another_body_is_duplicate_conflict() -> None:
    first = run([DEPOSIT], accounts=[ACCOUNT])
    conflict = dataclasses.replace(DEPOSIT, command_id="c2", amount_minor=51)
    again = applied_then(DEPOSIT, first, conflict)
    assert (again.accounts, again.idempotency) == ({}, {})
    event = the_event(again)
    assert (event.event_id, event.type, event.code) == (
        "c2:rejected",
        "Rejected",
        "duplicate_conflict",
    )


def test_a_conflict_leaves_the_original_record_answering_duplicates() -> None:
    conflict = dataclasses.replace(DEPOSIT, command_id="c2", amount_minor=51)
    duplicate = dataclasses.replace(DEPOSIT, command_id="c3")
    result = run([DEPOSIT, conflict, duplicate], accounts=[ACCOUNT])
    assert result.idempotency[("acc-1", "r1")].command_id == "c1"
    assert result.outputs[-1].original_payment_id == "c1"  # type: ignore[union-attr]


def test_another_command_type_under_the_same_request_id_is_a_conflict() -> None:
    freeze = FreezeAccount("c1", "r1", PARTNER, AT_MS, "acc-1")
    unfreeze = UnfreezeAccount("c2", "r1", PARTNER, AT_MS, "acc-1")
    result = run([freeze, unfreeze], accounts=[ACCOUNT])
    assert result.outputs[-1].code == "duplicate_conflict"  # type: ignore[union-attr]


def test_a_request_id_reserved_for_saga_legs_is_duplicate_conflict_and_not_recorded() -> None:
    sneaky = dataclasses.replace(DEPOSIT, request_id="leg:t1")
    result = run([sneaky], accounts=[ACCOUNT])
    assert (result.accounts, result.idempotency) == ({}, {})
    assert the_event(result).code == "duplicate_conflict"


def test_a_command_id_reused_with_another_body_is_an_invariant_violation() -> None:
    first = run([DEPOSIT], accounts=[ACCOUNT])
    with pytest.raises(InvariantViolation, match="another body"):
        applied_then(DEPOSIT, first, dataclasses.replace(DEPOSIT, amount_minor=51))


def test_a_transfer_redelivery_re_emits_its_credit_leg() -> None:
    transfer = Transfer("t1", "r1", PARTNER, AT_MS, "acc-1", "dst", 40, "EUR")
    directory = {"dst": DirectoryEntry("dst", "EUR", PARTNER, "open")}
    first = run([transfer], accounts=[ACCOUNT], directory=directory)
    again = run(
        [transfer],
        accounts=[ACCOUNT, *first.accounts.values()],
        idempotency=first.idempotency,
        directory=directory,
    )
    assert again.outputs == first.outputs
    assert again.accounts == {}


@pytest.mark.parametrize(
    "accounts", [[], [ACCOUNT]], ids=["refused (compensation again)", "applied"]
)
def test_a_redelivered_credit_leg_re_emits_and_changes_nothing(accounts: list[object]) -> None:
    first = run([LEG], accounts=accounts)  # type: ignore[arg-type]
    again = run(
        [LEG],
        accounts=[*accounts, *first.accounts.values()],  # type: ignore[list-item]
        idempotency=first.idempotency,
    )
    assert again.outputs == first.outputs
    assert (again.accounts, again.idempotency) == ({}, {})


def test_a_redelivered_compensation_re_emits_and_changes_nothing() -> None:
    first = run([COMPENSATION], accounts=[ACCOUNT])
    again = run(
        [COMPENSATION],
        accounts=[ACCOUNT, *first.accounts.values()],
        idempotency=first.idempotency,
    )
    assert again.outputs == first.outputs
    assert (again.accounts, again.idempotency) == ({}, {})


def test_a_leg_that_does_not_match_its_record_is_an_invariant_violation() -> None:
    first = run([LEG], accounts=[ACCOUNT])
    with pytest.raises(InvariantViolation, match="does not match"):
        run(
            [dataclasses.replace(LEG, amount_minor=41)],
            accounts=[ACCOUNT],
            idempotency=first.idempotency,
        )


def test_leg_and_command_records_use_separate_keys() -> None:
    result = run([LEG, COMPENSATION], accounts=[ACCOUNT])
    assert set(result.idempotency) == {("acc-1", "leg:t1"), ("acc-1", "compensation:t1")}
    assert {record.command_id for record in result.idempotency.values()} == {"t1"}
