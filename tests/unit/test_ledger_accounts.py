"""accounts: system ids, constructors and posting helpers."""

from __future__ import annotations

import pytest

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    Account,
    InvariantViolation,
    settlement_account_id,
    system_account,
    transit_account_id,
)
from paystream.ledger.accounts import (
    check_account,
    credit,
    debit,
    has_funds,
    is_empty,
    new_account,
    posting_fits,
    with_status,
)
from tests.property.sim import make_account


def test_system_shard_ids_name_currency_and_partition() -> None:
    assert transit_account_id("EUR", 3) == "@transit:EUR:3"
    assert settlement_account_id("USD", 0) == "@settlement:USD:0"


def test_system_shard_ids_refuse_a_negative_partition() -> None:
    with pytest.raises(InvariantViolation):
        transit_account_id("EUR", -1)


def test_system_account_is_open_overdraftable_and_owned_by_system() -> None:
    assert system_account("@transit:EUR:1", "EUR") == Account(
        "@transit:EUR:1", "EUR", "@system", "open", False
    )


def test_system_account_refuses_a_client_id() -> None:
    with pytest.raises(InvariantViolation):
        system_account("acc-1", "EUR")


def test_new_account_starts_at_version_one_with_no_overdraft_unless_allowed() -> None:
    assert new_account("a", "EUR", "p1", allow_overdraft=False).debits_must_not_exceed_credits
    account = new_account("a", "EUR", "p1", allow_overdraft=True)
    assert (account.version, account.debits_must_not_exceed_credits) == (1, False)


def test_credit_adds_to_posted_credits_and_bumps_the_version() -> None:
    account = credit(make_account("a", version=4), 250)
    assert (account.posted_credits_minor, account.version) == (250, 5)


def test_debit_adds_to_posted_debits_and_bumps_the_version() -> None:
    account = debit(make_account("a", credits_minor=300), 120)
    assert (account.posted_debits_minor, account.balance_minor, account.version) == (120, 180, 2)


def test_debit_past_credits_of_a_no_overdraft_account_is_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation, match="overdrawn"):
        debit(make_account("a", credits_minor=10), 11)


def test_posting_a_non_positive_amount_is_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation):
        credit(make_account("a"), 0)


def test_posting_fits_while_turnover_stays_within_the_bound() -> None:
    account = make_account("a", credits_minor=AMOUNT_MAX_MINOR - 10, no_overdraft=False)
    assert posting_fits(account, 10)
    assert not posting_fits(account, 11)
    assert not posting_fits(debit(account, 5), 6)


def test_has_funds_counts_pending_debits_and_ignores_overdraft_accounts() -> None:
    account = Account("a", "EUR", "p1", "open", True, 0, 100, 30, 0, 1)
    assert has_funds(account, 70)
    assert not has_funds(account, 71)
    assert has_funds(make_account("b", no_overdraft=False), 10**9)


def test_with_status_changes_status_and_bumps_the_version() -> None:
    account = with_status(make_account("a"), "frozen")
    assert (account.status, account.version) == ("frozen", 2)


def test_is_empty_needs_zero_balance_and_nothing_pending() -> None:
    assert is_empty(make_account("a", credits_minor=5, debits_minor=5))
    assert not is_empty(make_account("a", credits_minor=5))
    assert not is_empty(Account("a", "EUR", "p1", "open", True, 0, 0, 0, 7, 1))


def test_check_account_refuses_a_total_above_the_bound() -> None:
    with pytest.raises(InvariantViolation, match="out of range"):
        check_account(make_account("a", credits_minor=AMOUNT_MAX_MINOR + 1))
