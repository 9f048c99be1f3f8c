"""process_batch: the transfer saga (Transfer, CreditLeg, Compensation)."""

from __future__ import annotations

import pytest

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    AccountStatus,
    Compensation,
    CreditLeg,
    DirectoryEntry,
    Event,
    InvariantViolation,
    JournalEntry,
    JournalLine,
    RejectionCode,
    Transfer,
)
from tests.property.sim import OTHER_PARTNER, PARTNER, directory_of, make_account, run

AT_MS = 1_700_000_000_789
SOURCE = make_account("src", credits_minor=1_000)
DESTINATION = make_account("dst")
LEG = CreditLeg("t1", PARTNER, AT_MS, "src", "dst", 400, "EUR")
COMPENSATION = Compensation("t1", PARTNER, AT_MS, "src", "dst", 400, "EUR", "account_frozen")


def transfer(amount: int = 400, destination: str = "dst", currency: str = "EUR") -> Transfer:
    return Transfer("t1", "r1", PARTNER, AT_MS, "src", destination, amount, currency)


def step_one(
    command: Transfer, destination: DirectoryEntry | None = None
) -> tuple[RejectionCode | None, dict[str, object]]:
    """Run step 1 with SOURCE; the destination is known only through the directory."""
    directory = directory_of([SOURCE])
    if destination is not None:
        directory[destination.account_id] = destination
    result = run([command], accounts=[SOURCE], directory=directory)
    event = result.outputs[-1]
    assert isinstance(event, Event)
    return event.code, dict(result.accounts)


def dest_entry(
    status: AccountStatus = "open", partner_id: str = PARTNER, currency: str = "EUR"
) -> DirectoryEntry:
    return DirectoryEntry("dst", currency, partner_id, status)


def leg_event(event_type: str, step: str, code: RejectionCode | None = None) -> Event:
    return Event(
        f"t1:{step}", "t1", event_type, "Transfer", PARTNER, "src", AT_MS,  # type: ignore[arg-type]
        "dst", 400, "EUR", code,
    )  # fmt: skip


# --- step 1: Transfer ------------------------------------------------------------------------


def test_transfer_debits_the_source_into_this_partitions_transit_shard() -> None:
    result = run([transfer()], accounts=[SOURCE, DESTINATION], partition=2)
    assert result.accounts["src"].balance_minor == 600
    assert result.accounts["@transit:EUR:2"].balance_minor == 400
    assert "dst" not in result.accounts


def test_transfer_emits_journal_credit_leg_and_debited_in_order() -> None:
    result = run([transfer()], accounts=[SOURCE, DESTINATION], partition=2)
    assert result.outputs == (
        JournalEntry(
            "t1:debit",
            "t1",
            "transfer_debit",
            PARTNER,
            "src",
            AT_MS,
            (
                JournalLine("src", "EUR", "debit", 400),
                JournalLine("@transit:EUR:2", "EUR", "credit", 400),
            ),
        ),
        LEG,
        Event("t1:debited", "t1", "Debited", "Transfer", PARTNER, "src", AT_MS, "dst", 400, "EUR"),
    )


def test_transfer_to_the_source_itself_is_same_account() -> None:
    assert step_one(transfer(destination="src")) == ("same_account", {})


def test_transfer_to_an_account_missing_from_the_directory_is_account_not_found() -> None:
    assert step_one(transfer()) == ("account_not_found", {})


def test_transfer_to_an_account_known_only_to_the_local_state_is_account_not_found() -> None:
    """Step 1 trusts the directory snapshot, not the (other partition's) account state."""
    result = run([transfer()], accounts=[SOURCE, DESTINATION], directory=directory_of([SOURCE]))
    assert result.outputs[-1].code == "account_not_found"  # type: ignore[union-attr]


def test_transfer_to_another_partners_account_is_account_not_found() -> None:
    assert step_one(transfer(), dest_entry(partner_id=OTHER_PARTNER)) == ("account_not_found", {})


def test_transfer_to_a_system_account_is_account_not_found() -> None:
    system = DirectoryEntry("@transit:EUR:0", "EUR", PARTNER, "open")
    assert step_one(transfer(destination="@transit:EUR:0"), system) == ("account_not_found", {})


def test_transfer_to_a_closed_account_is_account_closed() -> None:
    assert step_one(transfer(), dest_entry("closed")) == ("account_closed", {})


def test_transfer_to_a_frozen_account_is_account_frozen() -> None:
    assert step_one(transfer(), dest_entry("frozen")) == ("account_frozen", {})


def test_transfer_to_an_account_in_another_currency_is_currency_mismatch() -> None:
    assert step_one(transfer(), dest_entry(currency="USD")) == ("currency_mismatch", {})


def test_transfer_in_another_currency_than_the_source_is_currency_mismatch() -> None:
    assert step_one(transfer(currency="USD"), dest_entry(currency="USD"))[0] == "currency_mismatch"


def test_transfer_beyond_the_available_balance_is_insufficient_funds() -> None:
    assert step_one(transfer(1_001), dest_entry()) == ("insufficient_funds", {})


def test_transfer_of_an_invalid_amount_is_invalid_amount() -> None:
    assert step_one(transfer(0), dest_entry()) == ("invalid_amount", {})


def test_transfer_beyond_the_transit_turnover_bound_is_balance_overflow() -> None:
    transit = make_account(
        "@transit:EUR:0", partner_id="@system", no_overdraft=False,
        credits_minor=AMOUNT_MAX_MINOR - 399,
    )  # fmt: skip
    result = run([transfer()], accounts=[SOURCE, DESTINATION, transit])
    assert (result.accounts, result.outputs[-1].code) == ({}, "balance_overflow")  # type: ignore[union-attr]


def test_the_source_is_checked_before_the_destination() -> None:
    frozen_source = make_account("src", status="frozen", credits_minor=1_000)
    result = run([transfer()], accounts=[frozen_source])
    assert result.outputs[-1].code == "account_frozen"  # type: ignore[union-attr]


# --- step 2: CreditLeg ------------------------------------------------------------------------


def test_credit_leg_moves_this_partitions_transit_money_to_the_destination() -> None:
    result = run([LEG], accounts=[DESTINATION], partition=5)
    assert result.accounts["dst"].balance_minor == 400
    assert result.accounts["@transit:EUR:5"].balance_minor == -400


def test_credit_leg_emits_journal_then_completed_for_the_transfer() -> None:
    result = run([LEG], accounts=[DESTINATION], partition=5)
    entry, event = result.outputs
    assert isinstance(entry, JournalEntry)
    assert (entry.entry_id, entry.kind, entry.account_id) == ("t1:credit", "transfer_credit", "dst")
    assert entry.lines == (
        JournalLine("@transit:EUR:5", "EUR", "debit", 400),
        JournalLine("dst", "EUR", "credit", 400),
    )
    assert event == leg_event("Completed", "completed")


@pytest.mark.parametrize(
    ("destination", "code"),
    [
        (None, "account_not_found"),
        (make_account("dst", partner_id=OTHER_PARTNER), "account_not_found"),
        (make_account("dst", status="closed"), "account_closed"),
        (make_account("dst", status="frozen"), "account_frozen"),
        (make_account("dst", currency="USD"), "currency_mismatch"),
        (make_account("dst", credits_minor=AMOUNT_MAX_MINOR - 399), "balance_overflow"),
    ],
)
def test_a_refused_credit_leg_sends_a_compensation_and_moves_nothing(
    destination: object, code: RejectionCode
) -> None:
    accounts = [] if destination is None else [destination]
    result = run([LEG], accounts=accounts)  # type: ignore[arg-type]
    assert result.accounts == {}
    assert result.outputs == (Compensation("t1", PARTNER, AT_MS, "src", "dst", 400, "EUR", code),)


def test_a_refused_credit_leg_is_recorded_with_its_code() -> None:
    result = run([LEG])
    (record,) = result.idempotency.values()
    assert record.code == "account_not_found"
    assert list(result.idempotency) == [("dst", "leg:t1")]


# --- step 3: Compensation -----------------------------------------------------------------


def test_compensation_moves_transit_money_back_to_the_source() -> None:
    result = run([COMPENSATION], accounts=[SOURCE], partition=2)
    assert result.accounts["src"].balance_minor == 1_400
    assert result.accounts["@transit:EUR:2"].balance_minor == -400


def test_compensation_emits_the_reversal_then_reversed_with_the_reason() -> None:
    result = run([COMPENSATION], accounts=[SOURCE], partition=2)
    entry, event = result.outputs
    assert isinstance(entry, JournalEntry)
    assert (entry.entry_id, entry.kind) == ("t1:reversal", "transfer_reversal")
    assert entry.lines == (
        JournalLine("@transit:EUR:2", "EUR", "debit", 400),
        JournalLine("src", "EUR", "credit", 400),
    )
    assert event == leg_event("Reversed", "reversed", "account_frozen")


@pytest.mark.parametrize("status", ["frozen", "closed"])
def test_compensation_reaches_a_frozen_or_closed_source(status: AccountStatus) -> None:
    result = run([COMPENSATION], accounts=[make_account("src", status=status)])
    assert result.accounts["src"].balance_minor == 400


def test_compensation_fits_even_when_the_source_turnover_is_at_the_bound() -> None:
    """The headroom kept by ordinary postings is what the reversal uses."""
    source = make_account("src", credits_minor=AMOUNT_MAX_MINOR - 400, debits_minor=400)
    result = run([COMPENSATION], accounts=[source])
    assert result.accounts["src"].posted_credits_minor == AMOUNT_MAX_MINOR


def test_compensation_for_an_account_that_does_not_exist_is_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation, match="never debited"):
        run([COMPENSATION])


# --- the saga end to end on one partition ----------------------------------------------


def test_a_completed_saga_leaves_transit_at_zero() -> None:
    accounts = [SOURCE, DESTINATION]
    first = run([transfer()], accounts=accounts)
    second = run([LEG], accounts=[*accounts, *first.accounts.values()])
    assert second.accounts["@transit:EUR:0"].balance_minor == 0
    assert second.accounts["dst"].balance_minor == 400
