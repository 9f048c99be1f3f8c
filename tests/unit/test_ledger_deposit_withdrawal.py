"""process_batch: Deposit and Withdrawal against the settlement shard of the partition."""

from __future__ import annotations

import pytest

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    Account,
    Deposit,
    Event,
    JournalEntry,
    JournalLine,
    Withdrawal,
)
from tests.property.sim import OTHER_PARTNER, PARTNER, make_account, run

AT_MS = 1_700_000_000_456


def deposit(amount: int = 100, *, partner_id: str = PARTNER, currency: str = "EUR") -> Deposit:
    return Deposit("c1", "r1", partner_id, AT_MS, "acc-1", amount, currency)


def withdrawal(amount: int = 100, *, currency: str = "EUR") -> Withdrawal:
    return Withdrawal("c1", "r1", PARTNER, AT_MS, "acc-1", amount, currency)


def code_of(result_outputs: tuple[object, ...]) -> object:
    (event,) = result_outputs
    assert isinstance(event, Event) and event.type == "Rejected"
    return event.code


# --- Deposit ------------------------------------------------------------------------------


def test_deposit_credits_the_account_and_debits_the_settlement_shard() -> None:
    result = run([deposit(100)], accounts=[make_account("acc-1")], partition=3)
    assert result.accounts["acc-1"].posted_credits_minor == 100
    assert result.accounts["@settlement:EUR:3"] == Account(
        "@settlement:EUR:3", "EUR", "@system", "open", False, posted_debits_minor=100, version=1
    )


def test_deposit_emits_its_journal_entry_then_completed() -> None:
    result = run([deposit(100)], accounts=[make_account("acc-1")], partition=3)
    assert result.outputs == (
        JournalEntry(
            "c1:deposit",
            "c1",
            "deposit",
            PARTNER,
            "acc-1",
            AT_MS,
            (
                JournalLine("@settlement:EUR:3", "EUR", "debit", 100),
                JournalLine("acc-1", "EUR", "credit", 100),
            ),
        ),
        Event(
            "c1:completed", "c1", "Completed", "Deposit", PARTNER, "acc-1", AT_MS,
            amount_minor=100, currency="EUR",
        ),
    )  # fmt: skip


@pytest.mark.parametrize("amount", [0, -1, AMOUNT_MAX_MINOR + 1])
def test_deposit_of_an_invalid_amount_is_invalid_amount(amount: int) -> None:
    result = run([deposit(amount)], accounts=[make_account("acc-1")])
    assert (result.accounts, code_of(result.outputs)) == ({}, "invalid_amount")


def test_the_amount_is_checked_before_the_account() -> None:
    assert code_of(run([deposit(0)]).outputs) == "invalid_amount"


def test_deposit_to_a_missing_account_is_account_not_found() -> None:
    assert code_of(run([deposit()]).outputs) == "account_not_found"


def test_deposit_by_another_partner_is_account_not_found() -> None:
    result = run([deposit(partner_id=OTHER_PARTNER)], accounts=[make_account("acc-1")])
    assert code_of(result.outputs) == "account_not_found"


def test_deposit_to_a_closed_account_is_account_closed() -> None:
    result = run([deposit()], accounts=[make_account("acc-1", status="closed")])
    assert code_of(result.outputs) == "account_closed"


def test_deposit_to_a_frozen_account_is_account_frozen() -> None:
    result = run([deposit()], accounts=[make_account("acc-1", status="frozen")])
    assert code_of(result.outputs) == "account_frozen"


def test_deposit_in_another_currency_is_currency_mismatch() -> None:
    result = run([deposit(currency="USD")], accounts=[make_account("acc-1")])
    assert code_of(result.outputs) == "currency_mismatch"


def test_deposit_beyond_the_account_turnover_bound_is_balance_overflow() -> None:
    account = make_account("acc-1", credits_minor=AMOUNT_MAX_MINOR - 99)
    result = run([deposit(100)], accounts=[account])
    assert (result.accounts, code_of(result.outputs)) == ({}, "balance_overflow")


def test_deposit_beyond_the_settlement_turnover_bound_is_balance_overflow() -> None:
    settlement = make_account(
        "@settlement:EUR:0", partner_id="@system", no_overdraft=False,
        debits_minor=AMOUNT_MAX_MINOR - 99,
    )  # fmt: skip
    result = run([deposit(100)], accounts=[make_account("acc-1"), settlement])
    assert (result.accounts, code_of(result.outputs)) == ({}, "balance_overflow")


# --- Withdrawal ---------------------------------------------------------------------------


def test_withdrawal_debits_the_account_and_credits_the_settlement_shard() -> None:
    result = run([withdrawal(30)], accounts=[make_account("acc-1", credits_minor=100)], partition=1)
    assert result.accounts["acc-1"].balance_minor == 70
    assert result.accounts["@settlement:EUR:1"].posted_credits_minor == 30


def test_withdrawal_emits_its_journal_entry_then_completed() -> None:
    result = run([withdrawal(30)], accounts=[make_account("acc-1", credits_minor=100)])
    entry, event = result.outputs
    assert isinstance(entry, JournalEntry) and isinstance(event, Event)
    assert (entry.entry_id, entry.kind) == ("c1:withdrawal", "withdrawal")
    assert entry.lines == (
        JournalLine("acc-1", "EUR", "debit", 30),
        JournalLine("@settlement:EUR:0", "EUR", "credit", 30),
    )
    assert (event.event_id, event.type, event.amount_minor) == ("c1:completed", "Completed", 30)


def test_withdrawal_of_exactly_the_available_amount_is_allowed() -> None:
    result = run([withdrawal(100)], accounts=[make_account("acc-1", credits_minor=100)])
    assert result.accounts["acc-1"].balance_minor == 0


def test_withdrawal_beyond_the_balance_is_insufficient_funds() -> None:
    result = run([withdrawal(101)], accounts=[make_account("acc-1", credits_minor=100)])
    assert (result.accounts, code_of(result.outputs)) == ({}, "insufficient_funds")


def test_pending_debits_reduce_what_may_be_withdrawn() -> None:
    account = Account("acc-1", "EUR", PARTNER, "open", True, 0, 100, 30, 0, 1)
    assert code_of(run([withdrawal(71)], accounts=[account]).outputs) == "insufficient_funds"


def test_an_overdraft_account_may_go_below_zero() -> None:
    result = run([withdrawal(500)], accounts=[make_account("acc-1", no_overdraft=False)])
    assert result.accounts["acc-1"].balance_minor == -500


def test_withdrawal_from_a_frozen_account_is_account_frozen() -> None:
    account = make_account("acc-1", status="frozen", credits_minor=100)
    assert code_of(run([withdrawal()], accounts=[account]).outputs) == "account_frozen"


@pytest.mark.parametrize("amount", [0, -7, AMOUNT_MAX_MINOR + 1])
def test_withdrawal_of_an_invalid_amount_is_invalid_amount(amount: int) -> None:
    account = make_account("acc-1", credits_minor=100)
    assert code_of(run([withdrawal(amount)], accounts=[account]).outputs) == "invalid_amount"


def test_withdrawal_beyond_the_turnover_bound_is_balance_overflow() -> None:
    account = make_account("acc-1", credits_minor=AMOUNT_MAX_MINOR - 5, no_overdraft=False)
    assert code_of(run([withdrawal(6)], accounts=[account]).outputs) == "balance_overflow"
