"""journal: entry builders and the balance check."""

from __future__ import annotations

import dataclasses

import pytest

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    Compensation,
    CreditLeg,
    Deposit,
    InvariantViolation,
    JournalEntry,
    JournalLine,
    Transfer,
    Withdrawal,
    check_balanced,
)
from paystream.ledger.journal import (
    LINE_COUNT_MAX,
    deposit_entry,
    transfer_credit_entry,
    transfer_debit_entry,
    transfer_reversal_entry,
    withdrawal_entry,
)

TRANSFER = Transfer("t1", "r1", "p1", 5, "src", "dst", 40, "EUR")
LEG = CreditLeg("t1", "p1", 5, "src", "dst", 40, "EUR")
COMPENSATION = Compensation("t1", "p1", 5, "src", "dst", 40, "EUR", "account_frozen")


def lines(*spec: tuple[str, str, str, int]) -> tuple[JournalLine, ...]:
    return tuple(JournalLine(*line) for line in spec)  # type: ignore[arg-type]


def entry(*spec: tuple[str, str, str, int]) -> JournalEntry:
    return JournalEntry("p:x", "p", "deposit", "p1", "a", 0, lines(*spec))


def test_deposit_entry_debits_settlement_and_credits_the_account() -> None:
    built = deposit_entry(Deposit("c1", "r1", "p1", 9, "acc", 70, "EUR"), "@settlement:EUR:0")
    assert built == JournalEntry(
        "c1:deposit",
        "c1",
        "deposit",
        "p1",
        "acc",
        9,
        lines(("@settlement:EUR:0", "EUR", "debit", 70), ("acc", "EUR", "credit", 70)),
    )


def test_withdrawal_entry_debits_the_account_and_credits_settlement() -> None:
    built = withdrawal_entry(Withdrawal("c1", "r1", "p1", 9, "acc", 70, "EUR"), "@s")
    assert (built.entry_id, built.kind) == ("c1:withdrawal", "withdrawal")
    assert built.lines == lines(("acc", "EUR", "debit", 70), ("@s", "EUR", "credit", 70))


def test_transfer_debit_entry_moves_source_money_to_transit() -> None:
    built = transfer_debit_entry(TRANSFER, "@transit:EUR:2")
    assert (built.entry_id, built.kind, built.account_id) == ("t1:debit", "transfer_debit", "src")
    assert built.lines == lines(
        ("src", "EUR", "debit", 40), ("@transit:EUR:2", "EUR", "credit", 40)
    )


def test_transfer_credit_entry_moves_transit_money_to_the_destination() -> None:
    built = transfer_credit_entry(LEG, "@transit:EUR:5")
    assert (built.entry_id, built.kind, built.account_id) == ("t1:credit", "transfer_credit", "dst")
    assert built.lines == lines(
        ("@transit:EUR:5", "EUR", "debit", 40), ("dst", "EUR", "credit", 40)
    )


def test_transfer_reversal_entry_moves_transit_money_back_to_the_source() -> None:
    built = transfer_reversal_entry(COMPENSATION, "@transit:EUR:2")
    assert (built.entry_id, built.kind) == ("t1:reversal", "transfer_reversal")
    assert built.lines == lines(
        ("@transit:EUR:2", "EUR", "debit", 40), ("src", "EUR", "credit", 40)
    )


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
    bad = dataclasses.replace(
        entry(("a", "EUR", "debit", 5), ("b", "EUR", "credit", 5)), entry_id="q:x"
    )
    with pytest.raises(InvariantViolation, match="id"):
        check_balanced(bad)
