"""process_batch: Deposit and Withdrawal against the settlement shard of the partition."""

from __future__ import annotations

import pytest

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    TOTAL_MAX_MINOR,
    Account,
    BatchResult,
    Event,
    JournalEntry,
    JournalLine,
    RejectionCode,
)
from tests.support.ledger import (
    OTHER_PARTNER,
    PARTNER,
    T0_MS,
    Cluster,
    cid,
    deposit,
    entries,
    events,
    make_account,
    run,
    withdrawal,
)


def code_of(result: BatchResult) -> RejectionCode | None:
    (event,) = result.outputs
    assert isinstance(event, Event) and event.type == "Rejected", event
    return event.code


def settlement(*, debits_minor: int = 0, credits_minor: int = 0) -> Account:
    return make_account(
        "@settlement:EUR:0",
        partner_id="@system",
        no_overdraft=False,
        debits_minor=debits_minor,
        credits_minor=credits_minor,
        version=0,
    )


# --- Deposit ------------------------------------------------------------------------------


def test_deposit_credits_the_account_and_debits_the_settlement_shard() -> None:
    command = deposit(1, amount_minor=100, partition=3)
    result = run([command], accounts=[make_account("acc-1")], partition=3)
    assert result.accounts["acc-1"].posted_credits_minor == 100
    assert result.accounts["@settlement:EUR:3"] == Account(
        account_id="@settlement:EUR:3",
        currency="EUR",
        partner_id="@system",
        status="open",
        debits_must_not_exceed_credits=False,
        posted_debits_minor=100,
        version=1,
    )


def test_deposit_emits_its_journal_entry_then_completed() -> None:
    command = deposit(1, amount_minor=100, partition=3)
    result = run([command], accounts=[make_account("acc-1")], partition=3)
    payment = command.command_id
    assert result.outputs == (
        JournalEntry(
            entry_id=f"{payment}:deposit",
            payment_id=payment,
            kind="deposit",
            partner_id=PARTNER,
            account_id="acc-1",
            issued_at_ms=T0_MS,
            lines=(
                JournalLine(
                    account_id="@settlement:EUR:3", currency="EUR", side="debit", amount_minor=100
                ),
                JournalLine(account_id="acc-1", currency="EUR", side="credit", amount_minor=100),
            ),
        ),
        Event(
            event_id=f"{payment}:completed",
            payment_id=payment,
            type="Completed",
            command_type="Deposit",
            partner_id=PARTNER,
            account_id="acc-1",
            issued_at_ms=T0_MS,
            amount_minor=100,
            currency="EUR",
        ),
    )


@pytest.mark.parametrize("amount", [0, -1, AMOUNT_MAX_MINOR + 1, True])
def test_deposit_of_an_invalid_amount_is_invalid_amount(amount: int) -> None:
    result = run([deposit(1, amount_minor=amount)], accounts=[make_account("acc-1")])
    assert (result.accounts, code_of(result)) == ({}, "invalid_amount")


def test_the_largest_amount_deposits() -> None:
    result = run([deposit(1, amount_minor=AMOUNT_MAX_MINOR)], accounts=[make_account("acc-1")])
    assert result.accounts["acc-1"].balance_minor == AMOUNT_MAX_MINOR


def test_the_amount_is_checked_before_the_account() -> None:
    assert code_of(run([deposit(1, amount_minor=0)])) == "invalid_amount"


def test_deposit_to_a_missing_account_is_account_not_found() -> None:
    assert code_of(run([deposit(1)])) == "account_not_found"


def test_deposit_by_another_partner_is_account_not_found() -> None:
    result = run([deposit(1, partner_id=OTHER_PARTNER)], accounts=[make_account("acc-1")])
    assert code_of(result) == "account_not_found"


def test_deposit_to_a_system_account_is_account_not_found() -> None:
    result = run([deposit(1, "@settlement:EUR:0")], accounts=[settlement()])
    assert code_of(result) == "account_not_found"


@pytest.mark.parametrize(
    ("status", "code"), [("closed", "account_closed"), ("frozen", "account_frozen")]
)
def test_deposit_to_a_closed_or_frozen_account_is_refused(status: str, code: str) -> None:
    result = run([deposit(1)], accounts=[make_account("acc-1", status=status)])  # type: ignore[arg-type]
    assert code_of(result) == code


def test_deposit_in_another_currency_is_currency_mismatch() -> None:
    result = run([deposit(1, currency="USD")], accounts=[make_account("acc-1")])
    assert code_of(result) == "currency_mismatch"


def test_deposit_beyond_the_accounts_128_bit_total_is_balance_overflow() -> None:
    account = make_account("acc-1", credits_minor=TOTAL_MAX_MINOR - 99)
    assert events(run([deposit(1, amount_minor=99)], accounts=[account]))[-1].type == "Completed"
    result = run([deposit(1, amount_minor=100)], accounts=[account])
    assert (result.accounts, code_of(result)) == ({}, "balance_overflow")


def test_deposit_beyond_the_settlement_shards_128_bit_total_is_balance_overflow() -> None:
    shard = settlement(debits_minor=TOTAL_MAX_MINOR - 99)
    result = run([deposit(1, amount_minor=100)], accounts=[make_account("acc-1"), shard])
    assert (result.accounts, code_of(result)) == ({}, "balance_overflow")


def test_finding_5_max_deposits_drive_the_settlement_shard_past_2_64_and_all_complete() -> None:
    """Finding 5: one ``Deposit(2**63-1)`` used to saturate the partition's settlement
    shard, so every later deposit there answered ``balance_overflow``. With 128-bit totals
    three of them push the shard past 2**64, each Completes, and the next ``Deposit(1)``
    to another account on that partition Completes too."""
    world = Cluster.of([make_account("acc-1"), make_account("acc-2")])
    big = [deposit(n, "acc-1", AMOUNT_MAX_MINOR) for n in range(3)]
    assert [e.type for e in events(world.apply(big))] == ["Completed"] * 3
    assert world.account("@settlement:EUR:0").posted_debits_minor > 2**64
    small = world.apply([deposit(3, "acc-2", 1)])
    assert [e.type for e in events(small)] == ["Completed"]
    assert world.account("@settlement:EUR:0").posted_debits_minor == 3 * AMOUNT_MAX_MINOR + 1
    assert world.account("acc-1").balance_minor == 3 * AMOUNT_MAX_MINOR
    assert sum(a.balance_minor for a in world.accounts.values()) == 0


# --- Withdrawal ---------------------------------------------------------------------------


def test_withdrawal_debits_the_account_and_credits_the_settlement_shard() -> None:
    account = make_account("acc-1", credits_minor=100)
    result = run([withdrawal(1, amount_minor=30, partition=1)], accounts=[account], partition=1)
    assert result.accounts["acc-1"].balance_minor == 70
    assert result.accounts["@settlement:EUR:1"].posted_credits_minor == 30


def test_withdrawal_emits_its_journal_entry_then_completed() -> None:
    command = withdrawal(1, amount_minor=30)
    result = run([command], accounts=[make_account("acc-1", credits_minor=100)])
    (entry,) = entries(result)
    (event,) = events(result)
    assert result.outputs == (entry, event)
    assert (entry.entry_id, entry.kind, entry.phase) == (
        f"{command.command_id}:withdrawal",
        "withdrawal",
        "posted",
    )
    assert [(line.account_id, line.side, line.amount_minor) for line in entry.lines] == [
        ("acc-1", "debit", 30),
        ("@settlement:EUR:0", "credit", 30),
    ]
    assert (event.event_id, event.type, event.amount_minor) == (
        f"{cid(1)}:completed",
        "Completed",
        30,
    )


def test_withdrawal_of_exactly_the_available_amount_is_allowed() -> None:
    account = make_account("acc-1", credits_minor=100)
    result = run([withdrawal(1, amount_minor=100)], accounts=[account])
    assert result.accounts["acc-1"].balance_minor == 0


def test_withdrawal_beyond_the_balance_is_insufficient_funds() -> None:
    account = make_account("acc-1", credits_minor=100)
    result = run([withdrawal(1, amount_minor=101)], accounts=[account])
    assert (result.accounts, code_of(result)) == ({}, "insufficient_funds")


def test_pending_debits_reduce_what_may_be_withdrawn() -> None:
    account = make_account("acc-1", credits_minor=100, pending_debits_minor=30)
    assert code_of(run([withdrawal(1, amount_minor=71)], accounts=[account])) == (
        "insufficient_funds"
    )
    result = run([withdrawal(1, amount_minor=70)], accounts=[account])
    assert result.accounts["acc-1"].available_minor == 0


def test_an_overdraft_account_may_go_below_zero() -> None:
    account = make_account("acc-1", no_overdraft=False)
    result = run([withdrawal(1, amount_minor=500)], accounts=[account])
    assert result.accounts["acc-1"].balance_minor == -500


@pytest.mark.parametrize(
    ("status", "code"), [("closed", "account_closed"), ("frozen", "account_frozen")]
)
def test_withdrawal_from_a_closed_or_frozen_account_is_refused(status: str, code: str) -> None:
    account = make_account("acc-1", status=status, credits_minor=100)  # type: ignore[arg-type]
    assert code_of(run([withdrawal(1)], accounts=[account])) == code


def test_withdrawal_by_another_partner_is_account_not_found() -> None:
    account = make_account("acc-1", credits_minor=100)
    result = run([withdrawal(1, partner_id=OTHER_PARTNER)], accounts=[account])
    assert code_of(result) == "account_not_found"


def test_withdrawal_in_another_currency_is_currency_mismatch() -> None:
    account = make_account("acc-1", credits_minor=100)
    assert code_of(run([withdrawal(1, currency="USD")], accounts=[account])) == (
        "currency_mismatch"
    )


@pytest.mark.parametrize("amount", [0, -7, AMOUNT_MAX_MINOR + 1])
def test_withdrawal_of_an_invalid_amount_is_invalid_amount(amount: int) -> None:
    account = make_account("acc-1", credits_minor=100)
    assert code_of(run([withdrawal(1, amount_minor=amount)], accounts=[account])) == (
        "invalid_amount"
    )


def test_withdrawal_beyond_the_accounts_128_bit_total_is_balance_overflow() -> None:
    account = make_account("acc-1", debits_minor=TOTAL_MAX_MINOR - 5, no_overdraft=False)
    assert code_of(run([withdrawal(1, amount_minor=6)], accounts=[account])) == "balance_overflow"


def test_withdrawal_beyond_the_settlement_shards_128_bit_total_is_balance_overflow() -> None:
    account = make_account("acc-1", credits_minor=100)
    shard = settlement(credits_minor=TOTAL_MAX_MINOR - 5)
    result = run([withdrawal(1, amount_minor=6)], accounts=[account, shard])
    assert (result.accounts, code_of(result)) == ({}, "balance_overflow")
