"""journal: entry builders, two-phase entries and the balance check; entries a saga emits."""

from __future__ import annotations

import dataclasses

import pytest

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    InvariantViolation,
    JournalEntry,
    JournalLine,
    Phase,
    check_balanced,
)
from paystream.ledger.journal import (
    LINE_COUNT_MAX,
    deposit_entry,
    entry_id,
    transfer_credit_entry,
    transfer_debit_entry,
    withdrawal_entry,
)
from tests.support.ledger import (
    PARTNER,
    T0_MS,
    Cluster,
    cid,
    compensation_of,
    confirmation_of,
    credit_leg,
    deposit,
    make_account,
    transfer,
    withdrawal,
)

TRANSFER_ID = cid("t")
LEG = credit_leg(TRANSFER_ID, amount_minor=40)


def lines(*spec: tuple[str, str, str, int]) -> tuple[JournalLine, ...]:
    return tuple(
        JournalLine(account_id=a, currency=c, side=s, amount_minor=m)  # type: ignore[arg-type]
        for a, c, s, m in spec
    )


def entry(*spec: tuple[str, str, str, int]) -> JournalEntry:
    return JournalEntry(
        entry_id="p:x",
        payment_id="p",
        kind="deposit",
        partner_id=PARTNER,
        account_id="a",
        issued_at_ms=0,
        lines=lines(*spec),
    )


BALANCED = entry(("a", "EUR", "debit", 5), ("b", "EUR", "credit", 5))

# --- builders -------------------------------------------------------------------------------


def test_entry_id_is_payment_then_step() -> None:
    assert entry_id("pay-1", "debit") == "pay-1:debit"


def test_deposit_entry_debits_settlement_and_credits_the_account() -> None:
    command = deposit(1, "acc", 70)
    assert deposit_entry(command, "@settlement:EUR:0") == JournalEntry(
        entry_id=f"{command.command_id}:deposit",
        payment_id=command.command_id,
        kind="deposit",
        partner_id=PARTNER,
        account_id="acc",
        issued_at_ms=T0_MS,
        lines=lines(("@settlement:EUR:0", "EUR", "debit", 70), ("acc", "EUR", "credit", 70)),
    )


def test_withdrawal_entry_debits_the_account_and_credits_settlement() -> None:
    command = withdrawal(1, "acc", 70)
    built = withdrawal_entry(command, "@s")
    assert (built.entry_id, built.kind, built.phase) == (
        f"{command.command_id}:withdrawal",
        "withdrawal",
        "posted",
    )
    assert built.lines == lines(("acc", "EUR", "debit", 70), ("@s", "EUR", "credit", 70))


@pytest.mark.parametrize(
    ("phase", "step", "pending_entry_id"),
    [
        ("pending", "debit", None),
        ("post", "post", f"{TRANSFER_ID}:debit"),
        ("void", "void", f"{TRANSFER_ID}:debit"),
    ],
)
def test_transfer_debit_entry_has_one_shape_for_reserve_post_and_void(
    phase: Phase, step: str, pending_entry_id: str | None
) -> None:
    """Step 1 reserves (``:debit``); step 3 posts (``:post``) or voids (``:void``) the SAME
    lines, naming the pending entry it settles."""
    built = transfer_debit_entry(LEG, "@transit:EUR:2", phase)
    assert built == JournalEntry(
        entry_id=f"{TRANSFER_ID}:{step}",
        payment_id=TRANSFER_ID,
        kind="transfer_debit",
        partner_id=PARTNER,
        account_id="src",
        issued_at_ms=T0_MS,
        lines=lines(("src", "EUR", "debit", 40), ("@transit:EUR:2", "EUR", "credit", 40)),
        phase=phase,
        pending_entry_id=pending_entry_id,
    )
    check_balanced(built)


def test_transfer_debit_entry_of_a_step_3_leg_is_the_same_as_of_the_credit_leg() -> None:
    assert transfer_debit_entry(confirmation_of(LEG), "@t", "post") == transfer_debit_entry(
        LEG, "@t", "post"
    )
    assert transfer_debit_entry(compensation_of(LEG), "@t", "void") == transfer_debit_entry(
        LEG, "@t", "void"
    )


def test_transfer_credit_entry_moves_transit_money_to_the_destination() -> None:
    built = transfer_credit_entry(LEG, "@transit:EUR:5")
    assert (built.entry_id, built.kind, built.account_id, built.phase) == (
        f"{TRANSFER_ID}:credit",
        "transfer_credit",
        "dst",
        "posted",
    )
    assert built.pending_entry_id is None
    assert built.lines == lines(
        ("@transit:EUR:5", "EUR", "debit", 40), ("dst", "EUR", "credit", 40)
    )


# --- check_balanced -------------------------------------------------------------------------


def test_a_balanced_entry_passes_in_several_currencies() -> None:
    check_balanced(
        entry(
            ("a", "EUR", "debit", 5),
            ("b", "EUR", "credit", 5),
            ("c", "USD", "debit", 7),
            ("d", "USD", "credit", 3),
            ("e", "USD", "credit", 4),
        )
    )


def test_debits_different_from_credits_do_not_balance() -> None:
    with pytest.raises(InvariantViolation, match="does not balance"):
        check_balanced(entry(("a", "EUR", "debit", 5), ("b", "EUR", "credit", 4)))


def test_equal_sums_in_different_currencies_do_not_balance() -> None:
    with pytest.raises(InvariantViolation, match="does not balance"):
        check_balanced(entry(("a", "EUR", "debit", 5), ("b", "USD", "credit", 5)))


def test_a_single_line_is_not_an_entry() -> None:
    with pytest.raises(InvariantViolation, match="line count"):
        check_balanced(entry(("a", "EUR", "debit", 5)))


def test_more_lines_than_the_bound_are_refused() -> None:
    many = [("a", "EUR", "debit", 1), ("b", "EUR", "credit", 1)] * (LINE_COUNT_MAX // 2 + 1)
    with pytest.raises(InvariantViolation, match="line count"):
        check_balanced(entry(*many))


@pytest.mark.parametrize("amount", [0, -5, AMOUNT_MAX_MINOR + 1, True])
def test_every_line_amount_is_an_int_in_range(amount: int) -> None:
    with pytest.raises(InvariantViolation, match="amount"):
        check_balanced(entry(("a", "EUR", "debit", amount), ("b", "EUR", "credit", amount)))


def test_an_unknown_side_is_refused() -> None:
    with pytest.raises(InvariantViolation, match="side"):
        check_balanced(entry(("a", "EUR", "debit", 5), ("b", "EUR", "sideways", 5)))


def test_an_entry_id_must_derive_from_its_payment() -> None:
    with pytest.raises(InvariantViolation, match="id"):
        check_balanced(dataclasses.replace(BALANCED, entry_id="q:x"))
    with pytest.raises(InvariantViolation, match="id"):
        check_balanced(dataclasses.replace(BALANCED, entry_id="pdebit"))


@pytest.mark.parametrize(
    ("phase", "pending_entry_id"),
    [("posted", "p:debit"), ("pending", "p:debit"), ("post", None), ("void", None)],
)
def test_phase_and_pending_entry_id_must_agree(phase: Phase, pending_entry_id: str | None) -> None:
    """``post``/``void`` name the pending entry they settle; ``posted``/``pending`` name none."""
    bad = dataclasses.replace(BALANCED, phase=phase, pending_entry_id=pending_entry_id)
    with pytest.raises(InvariantViolation, match="phase"):
        check_balanced(bad)


def test_an_unknown_phase_is_refused() -> None:
    bad = dataclasses.replace(BALANCED, phase="reversal")  # type: ignore[arg-type]
    with pytest.raises(InvariantViolation, match="phase"):
        check_balanced(bad)


# --- what a saga puts on `ledger` -------------------------------------------------------------


def saga_entries(destination: str) -> tuple[str, list[JournalEntry]]:
    cluster = Cluster.of([make_account("src", credits_minor=100), make_account("dst")])
    command = transfer(1, "src", destination, 40)
    cluster.saga(command, source_partition=0, destination_partition=1)
    return command.command_id, cluster.entries()


def test_a_confirmed_transfer_journals_reserve_credit_post() -> None:
    payment, built = saga_entries("dst")
    assert [(e.entry_id, e.phase, e.pending_entry_id) for e in built] == [
        (f"{payment}:debit", "pending", None),
        (f"{payment}:credit", "posted", None),
        (f"{payment}:post", "post", f"{payment}:debit"),
    ]
    assert (
        built[0].lines
        == built[2].lines
        == lines(("src", "EUR", "debit", 40), ("@transit:EUR:0", "EUR", "credit", 40))
    )
    assert built[1].lines == lines(
        ("@transit:EUR:1", "EUR", "debit", 40), ("dst", "EUR", "credit", 40)
    )


def test_a_refused_transfer_journals_reserve_void() -> None:
    payment, built = saga_entries("nobody")
    assert [(e.entry_id, e.phase, e.pending_entry_id) for e in built] == [
        (f"{payment}:debit", "pending", None),
        (f"{payment}:void", "void", f"{payment}:debit"),
    ]
    assert built[0].lines == built[1].lines


@pytest.mark.parametrize("destination", ["dst", "nobody"])
def test_every_entry_of_a_saga_balances_and_names_its_payment(destination: str) -> None:
    payment, built = saga_entries(destination)
    for item in built:
        check_balanced(item)
        assert item.payment_id == payment
