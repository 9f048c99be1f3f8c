"""accounts: system ids, constructors, 128-bit totals and the two-phase posting helpers."""

from __future__ import annotations

import dataclasses

import pytest

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    TOTAL_MAX_MINOR,
    Account,
    InvariantViolation,
    is_system_account_id,
    settlement_account_id,
    system_account,
    transit_account_id,
)
from paystream.ledger.accounts import (
    PARTITION_MAX,
    check_account,
    credit,
    credits_fit,
    debit,
    debits_fit,
    directory_entry,
    has_funds,
    new_account,
    post_credit,
    post_debit,
    reserve_credit,
    reserve_debit,
    void_credit,
    void_debit,
    with_status,
)
from tests.support.ledger import PARTNER, make_account

# --- ids and constructors -------------------------------------------------------------------


def test_system_shard_ids_name_currency_and_partition() -> None:
    assert transit_account_id("EUR", 3) == "@transit:EUR:3"
    assert settlement_account_id("USD", 0) == "@settlement:USD:0"
    assert transit_account_id("EUR", PARTITION_MAX) == f"@transit:EUR:{PARTITION_MAX}"


@pytest.mark.parametrize("partition", [-1, PARTITION_MAX + 1])
def test_system_shard_ids_refuse_a_partition_out_of_range(partition: int) -> None:
    with pytest.raises(InvariantViolation, match="partition"):
        transit_account_id("EUR", partition)
    with pytest.raises(InvariantViolation, match="partition"):
        settlement_account_id("EUR", partition)


def test_system_ids_are_the_ones_starting_with_at() -> None:
    assert is_system_account_id("@transit:EUR:0")
    assert is_system_account_id("@anything")
    assert not is_system_account_id("acc-@1")


def test_system_account_is_open_overdraftable_and_owned_by_system() -> None:
    assert system_account("@transit:EUR:1", "EUR") == Account(
        account_id="@transit:EUR:1",
        currency="EUR",
        partner_id="@system",
        status="open",
        debits_must_not_exceed_credits=False,
    )


def test_system_account_refuses_a_client_id() -> None:
    with pytest.raises(InvariantViolation, match="system account"):
        system_account("acc-1", "EUR")


def test_new_account_starts_at_version_one_with_no_overdraft_unless_allowed() -> None:
    assert new_account("a", "EUR", PARTNER, allow_overdraft=False) == make_account("a")
    account = new_account("a", "EUR", PARTNER, allow_overdraft=True)
    assert (account.version, account.debits_must_not_exceed_credits) == (1, False)


def test_directory_entry_is_the_accounts_public_face() -> None:
    account = make_account("a", currency="USD", status="frozen", credits_minor=5)
    entry = directory_entry(account)
    assert (entry.account_id, entry.currency, entry.partner_id, entry.status) == (
        "a",
        "USD",
        PARTNER,
        "frozen",
    )


# --- derived figures ------------------------------------------------------------------------


def test_balance_is_posted_only_and_available_subtracts_pending_debits() -> None:
    account = make_account("a", credits_minor=100, debits_minor=10, pending_debits_minor=30)
    assert (account.balance_minor, account.available_minor) == (90, 60)


@pytest.mark.parametrize(
    ("pending_debits", "pending_credits", "expected"),
    [(0, 0, False), (1, 0, True), (0, 1, True)],
)
def test_has_pending_looks_at_both_pending_totals(
    pending_debits: int, pending_credits: int, expected: bool
) -> None:
    account = make_account(
        "a",
        no_overdraft=False,
        pending_debits_minor=pending_debits,
        pending_credits_minor=pending_credits,
    )
    assert account.has_pending is expected


def test_has_funds_counts_pending_debits_and_ignores_overdraft_accounts() -> None:
    account = make_account("a", credits_minor=100, pending_debits_minor=30)
    assert has_funds(account, 70)
    assert not has_funds(account, 71)
    assert has_funds(make_account("b", no_overdraft=False), AMOUNT_MAX_MINOR)


# --- posted postings ------------------------------------------------------------------------


def test_credit_adds_to_posted_credits_and_bumps_the_version() -> None:
    account = credit(make_account("a", version=4), 250)
    assert (account.posted_credits_minor, account.version) == (250, 5)


def test_debit_adds_to_posted_debits_and_bumps_the_version() -> None:
    account = debit(make_account("a", credits_minor=300), 120)
    assert (account.posted_debits_minor, account.balance_minor, account.version) == (120, 180, 2)


def test_debit_past_credits_of_a_no_overdraft_account_is_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation, match="overdrawn"):
        debit(make_account("a", credits_minor=10), 11)


@pytest.mark.parametrize("amount", [0, -1, AMOUNT_MAX_MINOR + 1])
@pytest.mark.parametrize("posting", [credit, debit, reserve_credit, reserve_debit])
def test_posting_an_amount_out_of_range_is_an_invariant_violation(
    posting: object, amount: int
) -> None:
    with pytest.raises(InvariantViolation, match="amount"):
        posting(make_account("a", no_overdraft=False), amount)  # type: ignore[operator]


def test_the_largest_amount_posts() -> None:
    assert credit(make_account("a"), AMOUNT_MAX_MINOR).balance_minor == AMOUNT_MAX_MINOR


# --- two-phase postings -----------------------------------------------------------------------


def test_reserve_debit_lowers_available_but_not_the_balance() -> None:
    account = reserve_debit(make_account("a", credits_minor=100), 40)
    assert (account.pending_debits_minor, account.posted_debits_minor) == (40, 0)
    assert (account.balance_minor, account.available_minor, account.version) == (100, 60, 2)


def test_reserving_more_than_available_on_a_no_overdraft_account_is_refused() -> None:
    account = make_account("a", credits_minor=100, pending_debits_minor=60)
    with pytest.raises(InvariantViolation, match="overdrawn"):
        reserve_debit(account, 41)


def test_post_debit_turns_the_reservation_into_a_posted_debit() -> None:
    account = post_debit(make_account("a", credits_minor=100, pending_debits_minor=40), 40)
    assert (account.pending_debits_minor, account.posted_debits_minor) == (0, 40)
    assert account.available_minor == account.balance_minor == 60


def test_void_debit_releases_the_reservation() -> None:
    account = void_debit(make_account("a", credits_minor=100, pending_debits_minor=40), 40)
    assert (account.pending_debits_minor, account.posted_debits_minor) == (0, 0)
    assert account.available_minor == 100


def test_reserve_post_and_void_credit_move_the_credit_side() -> None:
    transit = system_account("@transit:EUR:0", "EUR")
    reserved = reserve_credit(transit, 70)
    assert (reserved.pending_credits_minor, reserved.balance_minor) == (70, 0)
    posted = post_credit(reserved, 30)
    assert (posted.pending_credits_minor, posted.posted_credits_minor) == (40, 30)
    voided = void_credit(posted, 40)
    assert (voided.pending_credits_minor, voided.posted_credits_minor) == (0, 30)


@pytest.mark.parametrize("release", [post_debit, void_debit])
def test_releasing_more_than_is_pending_is_an_invariant_violation(release: object) -> None:
    account = make_account("a", credits_minor=100, pending_debits_minor=40)
    with pytest.raises(InvariantViolation, match="out of range"):
        release(account, 41)  # type: ignore[operator]


@pytest.mark.parametrize("release", [post_credit, void_credit])
def test_releasing_more_credit_than_is_pending_is_an_invariant_violation(
    release: object,
) -> None:
    account = make_account("@t", no_overdraft=False, pending_credits_minor=40)
    with pytest.raises(InvariantViolation, match="out of range"):
        release(account, 41)  # type: ignore[operator]


# --- 128-bit totals (finding 5) ---------------------------------------------------------------


def test_totals_are_128_bit_so_a_shard_runs_past_2_64() -> None:
    shard = system_account("@settlement:EUR:0", "EUR")
    for _ in range(3):
        shard = debit(shard, AMOUNT_MAX_MINOR)
    assert shard.posted_debits_minor == 3 * AMOUNT_MAX_MINOR > 2**64
    assert debits_fit(shard, AMOUNT_MAX_MINOR)


def test_debits_fit_up_to_the_128_bit_bound_pending_included() -> None:
    account = make_account(
        "a", no_overdraft=False, debits_minor=TOTAL_MAX_MINOR - 100, pending_debits_minor=40
    )
    assert debits_fit(account, 60)
    assert not debits_fit(account, 61)


def test_credits_fit_up_to_the_128_bit_bound_pending_included() -> None:
    account = make_account(
        "a", no_overdraft=False, credits_minor=TOTAL_MAX_MINOR - 100, pending_credits_minor=40
    )
    assert credits_fit(account, 60)
    assert not credits_fit(account, 61)


def test_check_account_accepts_totals_at_the_bound_and_refuses_beyond() -> None:
    at_bound = make_account("a", no_overdraft=False, credits_minor=TOTAL_MAX_MINOR)
    assert check_account(at_bound) is at_bound
    with pytest.raises(InvariantViolation, match="out of range"):
        check_account(make_account("a", no_overdraft=False, credits_minor=TOTAL_MAX_MINOR + 1))


def test_check_account_counts_pending_in_the_bound() -> None:
    with pytest.raises(InvariantViolation, match="out of range"):
        check_account(
            make_account(
                "a", no_overdraft=False, debits_minor=TOTAL_MAX_MINOR, pending_debits_minor=1
            )
        )


def test_check_account_refuses_a_negative_total() -> None:
    with pytest.raises(InvariantViolation, match="out of range"):
        check_account(make_account("a", pending_credits_minor=-1))


def test_check_account_counts_pending_debits_against_no_overdraft() -> None:
    with pytest.raises(InvariantViolation, match="overdrawn"):
        check_account(make_account("a", credits_minor=10, pending_debits_minor=11))


# --- status ---------------------------------------------------------------------------------


def test_with_status_changes_status_and_bumps_the_version() -> None:
    account = with_status(make_account("a"), "frozen")
    assert (account.status, account.version) == ("frozen", 2)


def test_check_account_refuses_an_unknown_status() -> None:
    bad = dataclasses.replace(make_account("a"), status="deleted")  # type: ignore[arg-type]
    with pytest.raises(InvariantViolation, match="status"):
        check_account(bad)
