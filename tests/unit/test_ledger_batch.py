"""process_batch: bounds, purity and the batch-of-N contract."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from paystream.ledger import (
    BATCH_SIZE_MAX,
    Deposit,
    DirectoryEntry,
    Event,
    InvariantViolation,
    OpenAccount,
    Transfer,
    process_batch,
)
from tests.property.sim import PARTNER, make_account, run, run_in_singles

AT_MS = 1_700_000_002_000


def deposit(n: int, amount: int = 10) -> Deposit:
    return Deposit(f"c{n}", f"r{n}", PARTNER, AT_MS + n, "acc-1", amount, "EUR")


def test_an_empty_batch_changes_nothing() -> None:
    result = run([])
    assert (result.accounts, result.idempotency, result.outputs) == ({}, {}, ())


def test_a_batch_above_the_bound_is_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation, match="BATCH_SIZE_MAX"):
        run([deposit(0)] * (BATCH_SIZE_MAX + 1))


def test_a_negative_partition_is_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation, match="partition"):
        run([], partition=-1)


def test_an_input_of_unknown_type_is_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation, match="not an input"):
        run(["Deposit"])  # type: ignore[list-item]


def test_the_given_state_is_read_only() -> None:
    """Read-only proxies: any write attempt would raise."""
    account = make_account("acc-1")
    result = process_batch(
        [deposit(1), deposit(1), deposit(2)],
        partition=0,
        accounts=MappingProxyType({"acc-1": account}),
        idempotency=MappingProxyType({}),
        directory=MappingProxyType({}),
    )
    assert result.accounts["acc-1"].posted_credits_minor == 20


def test_only_changed_accounts_are_returned_at_their_final_version() -> None:
    accounts = [make_account("acc-1"), make_account("acc-2")]
    result = run([deposit(1), deposit(2)], accounts=accounts)
    assert set(result.accounts) == {"acc-1", "@settlement:EUR:0"}
    assert result.accounts["acc-1"].version == 3


def test_a_batch_equals_the_same_inputs_one_at_a_time() -> None:
    accounts = {"acc-1": make_account("acc-1", credits_minor=5)}
    inputs = [deposit(1), deposit(1), deposit(2, 0), deposit(3)]
    whole = process_batch(inputs, partition=1, accounts=accounts, idempotency={}, directory={})
    singles, _ = run_in_singles(
        inputs, partition=1, accounts=accounts, idempotency={}, directory={}
    )
    assert whole == singles


def test_the_directory_is_not_overlaid_within_a_batch() -> None:
    """An account opened earlier in the batch is not yet a known transfer destination."""
    source = make_account("acc-1", credits_minor=100)
    opening = OpenAccount("c1", "r1", PARTNER, AT_MS, "acc-2", "EUR")
    transfer = Transfer("c2", "r2", PARTNER, AT_MS, "acc-1", "acc-2", 10, "EUR")
    result = run([opening, transfer], accounts=[source])
    assert isinstance(result.outputs[-1], Event)
    assert result.outputs[-1].code == "account_not_found"


def test_system_shards_belong_to_the_batch_partition() -> None:
    result = run([deposit(1)], accounts=[make_account("acc-1")], partition=7)
    assert "@settlement:EUR:7" in result.accounts


def test_events_take_their_time_from_the_input() -> None:
    result = run([deposit(4)], accounts=[make_account("acc-1")])
    assert result.outputs[-1].issued_at_ms == AT_MS + 4  # type: ignore[union-attr]


def test_the_directory_entry_type_is_what_account_commands_publish() -> None:
    result = run([OpenAccount("c1", "r1", PARTNER, AT_MS, "acc-3", "USD", True)])
    assert result.outputs[-1] == DirectoryEntry("acc-3", "USD", PARTNER, "open")
