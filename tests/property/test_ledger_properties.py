"""Properties of the money core over a simulated partitioned log (see ``sim.py``).

Long command sequences come from a seeded ``random.Random`` whose seed and knobs
hypothesis draws: strategies stay small, shrinking stays meaningful, and a failure
replays from the printed example.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    REJECTION_CODES,
    Account,
    BatchResult,
    Compensation,
    Deposit,
    DirectoryEntry,
    Event,
    IdempotencyKey,
    IdempotencyRecord,
    Input,
    InvariantViolation,
    JournalEntry,
    JournalLine,
    Output,
    Transfer,
    body_sha256,
    check_balanced,
    process_batch,
)
from paystream.ledger.accounts import credit, debit, posting_fits
from tests.property.sim import (
    SimSettings,
    check_final,
    make_account,
    run_in_singles,
    simulate,
)

COMMAND_COUNT = 1_000
SLOW = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
FAST = settings(deadline=None, max_examples=200)

sim_settings = st.builds(
    SimSettings,
    partition_count=st.sampled_from([2, 3, 4, 8]),
    batch_size_max=st.integers(1, 16),
    directory_lag_steps_max=st.integers(0, 12),
    redelivery_percent=st.integers(0, 15),
    redelivery_size_max=st.integers(1, 6),
)


@SLOW
@given(
    seed=st.integers(0, 2**32 - 1),
    knobs=sim_settings,
    steps_per_command=st.integers(1, 3),
)
def test_partitioned_log_keeps_every_invariant(
    seed: int, knobs: SimSettings, steps_per_command: int
) -> None:
    """1,000 commands over 24 accounts in 3 currencies, any interleaving, with redelivery.

    Checked after every batch: no-overdraft holds, batch == batches of one,
    redelivery re-emits identical outputs. Checked at the end: journals balance,
    balances sum to zero per currency and match the journal, transit is empty,
    every debited transfer ends exactly once, no request moves money twice.
    """
    sim = simulate(
        seed, command_count=COMMAND_COUNT, settings=knobs, steps_per_command=steps_per_command
    )
    assert len(sim.commands) >= COMMAND_COUNT
    check_final(sim)


@settings(deadline=None, max_examples=50)
@given(seed=st.integers(0, 2**32 - 1), cut_seed=st.integers(0, 2**32 - 1))
def test_batch_of_n_equals_n_batches_of_one(seed: int, cut_seed: int) -> None:
    """Replaying one partition's whole input log: one batch, singles, random chunks agree."""
    sim = simulate(seed, command_count=300, settings=SimSettings(partition_count=1))
    inputs = [item for _, batch in sim.deliveries for item in batch]
    directory = dict(sim.directory)
    whole = process_batch(inputs, partition=0, accounts={}, idempotency={}, directory=directory)
    singles, _ = run_in_singles(
        inputs, partition=0, accounts={}, idempotency={}, directory=directory
    )
    assert whole == singles
    assert whole == _in_random_chunks(inputs, random.Random(cut_seed), directory)


def _in_random_chunks(
    inputs: list[Input], rng: random.Random, directory: dict[str, DirectoryEntry]
) -> BatchResult:
    accounts: dict[str, Account] = {}
    records: dict[IdempotencyKey, IdempotencyRecord] = {}
    outputs: list[Output] = []
    position = 0
    while position < len(inputs):
        size = rng.randint(1, 40)
        result = process_batch(
            inputs[position : position + size],
            partition=0,
            accounts=accounts,
            idempotency=records,
            directory=directory,
        )
        accounts.update(result.accounts)
        records.update(result.idempotency)
        outputs.extend(result.outputs)
        position += size
    return BatchResult(accounts, records, tuple(outputs))


@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**32 - 1))
def test_result_is_a_pure_function_of_the_arguments(seed: int) -> None:
    """Same arguments, same result; the input mappings are left untouched."""
    sim = simulate(seed, command_count=200, settings=SimSettings(partition_count=1))
    inputs = [item for _, batch in sim.deliveries for item in batch]
    state = sim.partitions[0]
    accounts, records, directory = (
        dict(state.accounts),
        dict(state.idempotency),
        dict(sim.directory),
    )
    first = process_batch(
        inputs, partition=0, accounts=accounts, idempotency=records, directory=directory
    )
    second = process_batch(
        inputs, partition=0, accounts=accounts, idempotency=records, directory=directory
    )
    assert first == second
    assert accounts == state.accounts and records == state.idempotency
    assert directory == sim.directory


def test_the_generator_reaches_every_outcome() -> None:
    """A fixed run covers every event type, rejection code and compensation reason."""
    events: collections.Counter[tuple[str, str | None]] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    for seed in range(6):
        knobs = SimSettings(directory_lag_steps_max=12, batch_size_max=10)
        sim = simulate(seed, command_count=COMMAND_COUNT, settings=knobs)
        check_final(sim)
        events.update((e.type, e.code) for e in sim.events.values())
        reasons.update(
            o.reason
            for outputs in sim.first_outputs.values()
            for o in outputs
            if isinstance(o, Compensation)
        )
    types = {event_type for event_type, _ in events}
    assert types == {"Completed", "Debited", "Rejected", "Duplicate", "Reversed"}
    codes = {code for event_type, code in events if event_type == "Rejected"}
    assert codes == set(REJECTION_CODES) - {"unknown_command"}
    assert {"account_frozen", "account_closed", "balance_overflow"} <= set(reasons)
    assert events[("Duplicate", None)] > 0  # a duplicate of an applied command


# --- leaves ------------------------------------------------------------------------------

identifiers = st.text(min_size=1, max_size=12)
amounts = st.integers(1, AMOUNT_MAX_MINOR)
transfers = st.builds(
    Transfer,
    command_id=identifiers,
    request_id=identifiers,
    partner_id=identifiers,
    issued_at_ms=st.integers(0, 2**63 - 1),
    account_id=identifiers,
    destination_account_id=identifiers,
    amount_minor=amounts,
    currency=st.sampled_from(["EUR", "USD", "JPY"]),
)


@FAST
@given(transfer=transfers, command_id=identifiers, issued_at_ms=st.integers(0, 2**63 - 1))
def test_body_hash_ignores_only_command_id_and_issue_time(
    transfer: Transfer, command_id: str, issued_at_ms: int
) -> None:
    same = dataclasses.replace(transfer, command_id=command_id, issued_at_ms=issued_at_ms)
    assert body_sha256(same) == body_sha256(transfer)
    for name, value in (
        ("request_id", transfer.request_id + "x"),
        ("partner_id", transfer.partner_id + "x"),
        ("account_id", transfer.account_id + "x"),
        ("destination_account_id", transfer.destination_account_id + "x"),
        ("amount_minor", transfer.amount_minor - 1 or 2),
        ("currency", "GBP"),
    ):
        changes: dict[str, Any] = {name: value}
        assert body_sha256(dataclasses.replace(transfer, **changes)) != body_sha256(transfer)


@FAST
@given(a=identifiers, b=identifiers)
def test_body_hash_is_injective_on_field_boundaries(a: str, b: str) -> None:
    """Moving characters from one field to the next never gives the same hash."""
    first = Deposit("c", "r", a + b, 0, "acc", 1, "EUR")
    second = Deposit("c", "r" + a, b, 0, "acc", 1, "EUR")
    assert body_sha256(first) != body_sha256(second)


@FAST
@given(
    debits=st.lists(st.tuples(st.sampled_from(["EUR", "USD"]), amounts), min_size=1, max_size=30)
)
def test_an_entry_balances_iff_debits_equal_credits_per_currency(
    debits: list[tuple[str, int]],
) -> None:
    lines = [JournalLine(f"a{i}", c, "debit", x) for i, (c, x) in enumerate(debits)]
    mirrored = [JournalLine(f"b{i}", c, "credit", x) for i, (c, x) in enumerate(debits)]
    check_balanced(JournalEntry("p:s", "p", "deposit", "p1", "a0", 0, tuple(lines + mirrored)))
    skewed = [*mirrored[:-1], dataclasses.replace(mirrored[-1], currency="JPY")]
    entry = JournalEntry("p:s", "p", "deposit", "p1", "a0", 0, tuple(lines + skewed))
    try:
        check_balanced(entry)
    except InvariantViolation:
        return
    raise AssertionError("an entry with a currency skew passed")


@FAST
@given(postings=st.lists(st.tuples(st.sampled_from(["debit", "credit"]), amounts), max_size=20))
def test_postings_keep_totals_growing_and_bounded(postings: list[tuple[str, int]]) -> None:
    account = make_account("a", no_overdraft=False)
    for side, amount in postings:
        if not posting_fits(account, amount):
            continue
        before = account
        account = debit(account, amount) if side == "debit" else credit(account, amount)
        assert account.version == before.version + 1
        assert account.posted_debits_minor >= before.posted_debits_minor
        assert account.posted_credits_minor >= before.posted_credits_minor
        assert account.posted_debits_minor + account.posted_credits_minor <= AMOUNT_MAX_MINOR


def test_event_payment_ids_follow_their_inputs() -> None:
    """Sanity on one run: every event id is ``{payment_id}:{step}``."""
    sim = simulate(7, command_count=200)
    for event in sim.events.values():
        assert isinstance(event, Event)
        assert event.event_id.startswith(event.payment_id + ":")
