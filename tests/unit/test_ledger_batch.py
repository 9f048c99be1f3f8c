"""process_batch: bounds, purity, the log clock, the batch-of-N contract and the vocabulary."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from paystream.ledger import (
    EVENT_TYPES,
    INPUTS_PER_BATCH_MAX,
    TERMINAL_EVENT_TYPES,
    CloseAccount,
    Confirmation,
    CreditLeg,
    Delivery,
    DirectoryEntry,
    FreezeAccount,
    Input,
    InvariantViolation,
    JournalEntry,
    Rules,
    SendPayout,
    SettlePayout,
    check_balanced,
    process_batch,
)
from paystream.ledger.accounts import PARTITION_MAX
from paystream.ledger.screening import ScreeningRules, rules_to_json
from tests.support.ledger import (
    OTHER_PARTNER,
    PARTNER,
    RULES,
    T0_MS,
    Cluster,
    balance_sum,
    cid,
    configure_screening,
    confirmation_of,
    decide,
    deposit,
    directory_of,
    events,
    leg_of,
    make_account,
    malformed,
    of_type,
    open_account,
    rail,
    request_payout,
    run,
    run_in_singles,
    status_command,
    transfer,
    withdrawal,
)

ACCOUNTS = [make_account("acc-1", credits_minor=500), make_account("acc-2")]


def test_an_empty_batch_changes_nothing_and_keeps_the_clock() -> None:
    result = run([], clock_ms=T0_MS)
    assert (result.accounts, result.idempotency, result.outputs, result.clock_ms) == (
        {},
        {},
        (),
        T0_MS,
    )


def test_a_batch_above_the_bound_is_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation, match="INPUTS_PER_BATCH_MAX"):
        run([deposit(0)] * (INPUTS_PER_BATCH_MAX + 1))


@pytest.mark.parametrize("partition", [-1, PARTITION_MAX + 1])
def test_a_partition_out_of_range_is_an_invariant_violation(partition: int) -> None:
    with pytest.raises(InvariantViolation, match="partition"):
        run([], partition=partition)


def test_an_input_of_unknown_type_is_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation, match="not an input"):
        run(["Deposit"])  # type: ignore[list-item]


@pytest.mark.parametrize(("offset", "log_time_ms"), [(-1, T0_MS), (0, -1)])
def test_a_delivery_position_out_of_range_is_an_invariant_violation(
    offset: int, log_time_ms: int
) -> None:
    with pytest.raises(InvariantViolation, match="position"):
        process_batch(
            [Delivery(item=deposit(1), offset=offset, log_time_ms=log_time_ms)],
            partition=0,
            accounts={},
            idempotency={},
            directory={},
            clock_ms=0,
            rules=RULES,
        )


def test_the_given_state_is_read_only() -> None:
    """Read-only proxies: any write attempt would raise; results come back as new dicts."""
    account = make_account("acc-1")
    result = process_batch(
        [Delivery(item=deposit(n, "acc-1", 10), offset=n, log_time_ms=T0_MS) for n in range(3)],
        partition=0,
        accounts=MappingProxyType({"acc-1": account}),
        idempotency=MappingProxyType({}),
        directory=MappingProxyType({}),
        clock_ms=0,
        rules=RULES,
    )
    assert result.accounts["acc-1"].posted_credits_minor == 30
    assert account.posted_credits_minor == 0


def test_only_changed_accounts_are_returned_at_their_final_version() -> None:
    result = run([deposit(1, "acc-1"), deposit(2, "acc-1")], accounts=ACCOUNTS)
    assert set(result.accounts) == {"acc-1", "@settlement:EUR:0"}
    assert result.accounts["acc-1"].version == 3


def test_system_shards_belong_to_the_batch_partition() -> None:
    result = run([deposit(1, "acc-1", partition=7)], accounts=ACCOUNTS, partition=7)
    assert "@settlement:EUR:7" in result.accounts


def test_events_take_their_time_from_the_input() -> None:
    command = dataclasses.replace(deposit(1, "acc-1"), issued_at_ms=T0_MS - 4)
    assert events(run([command], accounts=ACCOUNTS))[-1].issued_at_ms == T0_MS - 4


def test_the_directory_entry_is_what_account_commands_publish() -> None:
    result = run([open_account(1, "acc-3", "USD", allow_overdraft=True)])
    assert result.outputs[-1] == DirectoryEntry("acc-3", "USD", PARTNER, "open")


# --- the log clock ------------------------------------------------------------------------------


def test_the_clock_is_the_latest_log_time_seen_and_never_goes_back() -> None:
    deliveries = [
        Delivery(item=deposit(1, "acc-1"), offset=0, log_time_ms=T0_MS + 50),
        Delivery(item=deposit(2, "acc-1"), offset=1, log_time_ms=T0_MS + 10),
    ]
    result = process_batch(
        deliveries,
        partition=0,
        accounts={},
        idempotency={},
        directory={},
        clock_ms=T0_MS,
        rules=RULES,
    )
    assert result.clock_ms == T0_MS + 50
    assert run([], clock_ms=T0_MS + 99, log_time_ms=T0_MS).clock_ms == T0_MS + 99
    assert run([deposit(1)], clock_ms=T0_MS + 99, log_time_ms=T0_MS).clock_ms == T0_MS + 99


def test_records_expire_on_the_clock_within_one_batch() -> None:
    """Expiry is judged per input on the clock so far: a key made early in the batch is
    forgotten by a later input whose log time reaches its expiry."""
    rules = Rules(retention_ms=1_000)
    first = deposit(1, "acc-1", 10, request_id="r")
    later = deposit(2, "acc-1", 10, request_id="r", at_ms=T0_MS + 1_000)
    result = process_batch(
        [
            Delivery(item=first, offset=0, log_time_ms=T0_MS),
            Delivery(item=later, offset=1, log_time_ms=T0_MS + 1_000),
        ],
        partition=0,
        accounts={"acc-1": make_account("acc-1")},
        idempotency={},
        directory={},
        clock_ms=0,
        rules=rules,
    )
    assert [e.type for e in events(result)] == ["Completed", "Completed"]
    assert result.accounts["acc-1"].balance_minor == 20


# --- a batch of N is N batches of one -------------------------------------------------------------


def hostile_deliveries() -> list[Delivery]:
    """A deterministic mix: every command type, duplicates, a reused id, an invalid id,
    malformed inputs, a transfer's three steps on this partition, rising log times."""
    move = transfer(10, "acc-1", "acc-2", 120)
    leg = leg_of(move)
    confirmation = confirmation_of(leg)
    inputs: list[Input] = [
        open_account(1, "acc-3"),
        deposit(2, "acc-1", 50),
        deposit(2, "acc-1", 50),  # the same command again: Duplicate
        dataclasses.replace(deposit(2, "acc-1", 50), request_id="r-x"),  # command_id_reused
        deposit(3, "acc-1", 50, request_id="r2"),  # a new id for request r2: Duplicate
        deposit(4, "acc-1", 51, request_id="r2"),  # request r2, another body: conflict
        withdrawal(5, "acc-1", 10_000),  # insufficient_funds
        deposit(6, "acc-1", 1, partition=1),  # minted for another partition: invalid
        malformed(cid(7), "invalid_field"),
        malformed("garbage", "unknown_command"),
        malformed(cid(8), "wrong_partition"),
        move,
        status_command(CloseAccount, 11, "acc-1"),  # money in flight: account_has_pending
        leg,
        confirmation,
        status_command(FreezeAccount, 12, "acc-2"),
        transfer(13, "acc-2", "acc-1", 10),  # frozen source: account_frozen
        deposit(14, "acc-2", 5, partner_id=OTHER_PARTNER),  # not p2's: account_not_found
    ]
    return [
        Delivery(item=item, offset=100 + i, log_time_ms=T0_MS + 1_000 * i)
        for i, item in enumerate(inputs)
    ]


def test_a_batch_equals_the_same_inputs_one_at_a_time() -> None:
    deliveries = hostile_deliveries()
    state = {
        "partition": 0,
        "accounts": {a.account_id: a for a in ACCOUNTS},
        "idempotency": {},
        "directory": directory_of(ACCOUNTS),
        "clock_ms": T0_MS - 1,
        "rules": RULES,
    }
    whole = process_batch(deliveries, **state)  # type: ignore[arg-type]
    singles, _steps = run_in_singles(deliveries, **state)  # type: ignore[arg-type]
    assert whole == singles
    commands = [d for d in deliveries if not isinstance(d.item, CreditLeg | Confirmation)]
    assert len(events(whole)) == len(commands) + 1  # the Confirmation's Completed


def test_the_hostile_batch_keeps_the_books() -> None:
    """Every journal id once, every entry balanced, Σ balances = 0, transit back to zero,
    and each command (not leg) answered by exactly one event."""
    deliveries = hostile_deliveries()
    world = Cluster.of(ACCOUNTS)
    for delivery in deliveries:
        answer = world.apply([delivery.item], log_time_ms=delivery.log_time_ms)
        if not isinstance(delivery.item, CreditLeg | Confirmation):
            assert len(events(answer)) == 1, delivery.item
    journal = of_type(world.outputs, JournalEntry)
    assert len({e.entry_id for e in journal}) == len(journal) == 4
    for entry in journal:
        check_balanced(entry)
    assert balance_sum(world.accounts.values()) == balance_sum(ACCOUNTS)
    shard = world.account("@transit:EUR:0")
    assert (shard.balance_minor, shard.has_pending) == (0, False)
    event_ids = [e.event_id for e in world.events()]
    assert len(set(event_ids)) == len(event_ids)


# --- finding 11: one vocabulary ---------------------------------------------------------------


def test_finding_11_event_types_are_exactly_the_emitted_set() -> None:
    """Finding 11: ``Accepted`` and ``Failed`` were declared but never emitted (and
    ``Failed`` was treated as terminal). EVENT_TYPES is now exactly what the core emits
    (``Failed`` came back with payouts): one run that emits every type, and no type declared
    that it does not emit."""
    world = Cluster.of([make_account("src", credits_minor=100), make_account("dst")])
    world.saga(transfer(1, "src", "dst", 10))  # Debited, Completed
    world.saga(transfer(2, "src", "ghost", 10))  # Debited, Reversed
    world.apply([transfer(1, "src", "dst", 10)])  # Duplicate
    world.apply([transfer(3, "src", "dst", 10_000)])  # Rejected
    held = request_payout(4, "src", 20, country="KP")
    rules = rules_to_json(ScreeningRules(blocked_countries=frozenset({"KP"})))
    world.apply([configure_screening(5, rules), held])  # Held
    world.apply([decide(6, held, "approve"), rail(SendPayout, 7, held)])  # Queued, Sending
    world.apply([rail(SettlePayout, 8, held)])  # Settled
    world.apply([request_payout(9, "src", 10**6)])  # Failed
    emitted = {e.type for e in world.events()}
    expected = {"Debited", "Completed", "Reversed", "Duplicate", "Rejected", "Held", "Queued",
                "Sending", "Settled", "Failed"}  # fmt: skip
    assert emitted == set(EVENT_TYPES) == expected
    assert len(EVENT_TYPES) == len(expected)
    assert set(EVENT_TYPES) - {"Debited", "Sending", "Settled"} == TERMINAL_EVENT_TYPES
    assert "Accepted" not in EVENT_TYPES
