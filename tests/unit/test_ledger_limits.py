"""process_batch: ``Rules.amount_max_minor``, the most one Transfer or Withdrawal may move.

Above it the command is ``Rejected`` ``amount_over_limit`` and moves nothing; deposits
(money coming in) and the legs of a transfer already reserved are not limited.
"""

from __future__ import annotations

import dataclasses

import pytest

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    BatchResult,
    CreditLeg,
    Event,
    RejectionCode,
    Rules,
    request_key,
)
from tests.support.ledger import (
    PARTNER,
    Cluster,
    deposit,
    entries,
    events,
    make_account,
    of_type,
    run,
    step_3_leg,
    transfer,
    withdrawal,
)

LIMIT = 1_000
LIMITED = Rules(amount_max_minor=LIMIT)
SOURCE = make_account("src", credits_minor=10 * LIMIT)
DESTINATION = make_account("dst")
ACCOUNT = make_account("acc-1", credits_minor=10 * LIMIT)


def code_of(result: BatchResult) -> RejectionCode | None:
    (event,) = result.outputs
    assert isinstance(event, Event) and event.type == "Rejected", event
    return event.code


# --- the rule ---------------------------------------------------------------------------------


def test_by_default_no_amount_an_avro_long_holds_is_over_the_limit() -> None:
    assert Rules().amount_max_minor == AMOUNT_MAX_MINOR
    overdraft = make_account("src", no_overdraft=False)
    step_1 = run([transfer(1, amount_minor=AMOUNT_MAX_MINOR)], accounts=[overdraft, DESTINATION])
    assert [e.type for e in events(step_1)] == ["Debited"]
    out = run([withdrawal(2, "src", AMOUNT_MAX_MINOR)], accounts=[overdraft])
    assert [e.type for e in events(out)] == ["Completed"]


@pytest.mark.parametrize("limit", [1, LIMIT, AMOUNT_MAX_MINOR])
def test_a_limit_from_1_to_the_largest_amount_is_a_rule(limit: int) -> None:
    assert Rules(amount_max_minor=limit).amount_max_minor == limit


@pytest.mark.parametrize("limit", [0, -1, AMOUNT_MAX_MINOR + 1, True, 1.0, "1000"])
def test_any_other_limit_is_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="amount_max_minor"):
        Rules(amount_max_minor=limit)  # type: ignore[arg-type]


def test_replace_checks_the_limit_too() -> None:
    with pytest.raises(ValueError, match="amount_max_minor"):
        dataclasses.replace(LIMITED, amount_max_minor=0)


# --- Transfer -------------------------------------------------------------------------------------


def test_a_transfer_of_the_limit_completes() -> None:
    world = Cluster.of([SOURCE, DESTINATION], rules=LIMITED)
    world.saga(transfer(1, amount_minor=LIMIT))
    assert [e.type for e in world.events()] == ["Debited", "Completed"]
    assert world.account("dst").balance_minor == LIMIT


def test_a_transfer_over_the_limit_is_rejected_and_moves_nothing() -> None:
    command = transfer(1, amount_minor=LIMIT + 1)
    result = run([command], accounts=[SOURCE, DESTINATION], rules=LIMITED)
    assert code_of(result) == "amount_over_limit"
    assert (result.accounts, entries(result)) == ({}, [])
    (event,) = events(result)
    assert (event.event_id, event.amount_minor) == (f"{command.command_id}:rejected", LIMIT + 1)
    assert result.idempotency[request_key(PARTNER, "r1")].code == "amount_over_limit"


def test_a_repeat_of_a_transfer_over_the_limit_is_a_duplicate_of_the_refusal() -> None:
    world = Cluster.of([SOURCE, DESTINATION], rules=LIMITED)
    world.apply([transfer(1, amount_minor=LIMIT + 1)])
    again = world.apply([transfer(2, amount_minor=LIMIT + 1, request_id="r1")])
    assert [(e.type, e.code) for e in events(again)] == [("Duplicate", "amount_over_limit")]
    assert again.accounts == {}


def test_a_transfer_in_flight_lands_when_the_limit_is_lowered() -> None:
    """The limit judges step 1 only: a reservation made under a higher limit is credited
    and posted (steps 2 and 3 never refuse for the amount)."""
    world = Cluster.of([SOURCE, DESTINATION])
    step_1 = world.apply([transfer(1, amount_minor=LIMIT + 1)], partition=0)
    world.rules = LIMITED
    (leg,) = of_type(step_1.outputs, CreditLeg)
    step_2 = world.apply([leg], partition=1)
    world.apply([step_3_leg(step_2)], partition=0)
    assert [e.type for e in world.events()] == ["Debited", "Completed"]
    assert world.account("dst").balance_minor == LIMIT + 1
    assert world.account("src").balance_minor == 9 * LIMIT - 1


# --- Withdrawal -----------------------------------------------------------------------------------


def test_a_withdrawal_of_the_limit_completes() -> None:
    result = run([withdrawal(1, amount_minor=LIMIT)], accounts=[ACCOUNT], rules=LIMITED)
    assert [e.type for e in events(result)] == ["Completed"]
    assert result.accounts["acc-1"].balance_minor == 9 * LIMIT


def test_a_withdrawal_over_the_limit_is_rejected_and_moves_nothing() -> None:
    result = run([withdrawal(1, amount_minor=LIMIT + 1)], accounts=[ACCOUNT], rules=LIMITED)
    assert code_of(result) == "amount_over_limit"
    assert (result.accounts, entries(result)) == ({}, [])


# --- what the limit does not judge ----------------------------------------------------------------


def test_a_deposit_over_the_limit_completes() -> None:
    result = run([deposit(1, amount_minor=LIMIT + 1)], accounts=[ACCOUNT], rules=LIMITED)
    assert [e.type for e in events(result)] == ["Completed"]
    assert result.accounts["acc-1"].balance_minor == 11 * LIMIT + 1


@pytest.mark.parametrize("amount", [0, -1, AMOUNT_MAX_MINOR + 1, True])
def test_an_invalid_amount_is_invalid_amount_before_the_limit(amount: int) -> None:
    for command in (transfer(1, amount_minor=amount), withdrawal(1, "src", amount)):
        result = run([command], accounts=[SOURCE, DESTINATION], rules=LIMITED)
        assert code_of(result) == "invalid_amount"


def test_the_limit_is_checked_before_the_account() -> None:
    """Like the amount's validity: a refusal that needs no state comes first."""
    result = run([withdrawal(1, "ghost", LIMIT + 1)], rules=LIMITED)
    assert code_of(result) == "amount_over_limit"


def test_the_same_log_under_another_limit_gives_other_answers() -> None:
    """What replay's what-if relies on: the rules are an argument, nothing else changes."""
    inputs = [withdrawal(1, amount_minor=LIMIT + 1), withdrawal(2, amount_minor=LIMIT)]
    unlimited = run(inputs, accounts=[ACCOUNT])
    limited = run(inputs, accounts=[ACCOUNT], rules=LIMITED)
    assert [(e.type, e.code) for e in events(unlimited)] == [("Completed", None)] * 2
    assert [(e.type, e.code) for e in events(limited)] == [
        ("Rejected", "amount_over_limit"),
        ("Completed", None),
    ]
