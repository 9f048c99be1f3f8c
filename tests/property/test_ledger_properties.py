"""Properties of the money core over a simulated partitioned log (``sim.py``).

Long command sequences come from a seeded ``random.Random`` whose seed and knobs
hypothesis draws: strategies stay small, shrinking stays meaningful, and a failure
replays from the printed example. The invariants are in ``invariants.py``.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    EVENT_TYPES,
    REJECTION_CODES,
    TOTAL_MAX_MINOR,
    Account,
    AccountStatus,
    BatchResult,
    Compensation,
    Confirmation,
    CreditLeg,
    Delivery,
    Deposit,
    Event,
    IdempotencyKey,
    IdempotencyRecord,
    Input,
    InvariantViolation,
    JournalEntry,
    JournalLine,
    Leg,
    Output,
    Rules,
    Transfer,
    body_sha256,
    check_balanced,
    leg_key,
    process_batch,
)
from paystream.ledger.accounts import credit, credits_fit, debit, debits_fit
from tests.property.invariants import check_final, check_partition, check_tables_match_journal
from tests.property.sim import SIM_RULES, LogSim, SimSettings, simulate
from tests.support.ledger import PARTNER, T0_MS, cid, make_account, run_in_singles

COMMAND_COUNT = 400
SIM = settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
REPLAY = settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.too_slow])
LEAF = settings(deadline=None, max_examples=200)

sim_settings = st.builds(
    SimSettings,
    partition_count=st.sampled_from([1, 2, 3, 4, 8]),
    batch_size_max=st.integers(1, 16),
    directory_lag_steps_max=st.integers(0, 12),
    follow_directory=st.booleans(),
    jump_per_mille=st.sampled_from([0, 4, 20]),
    regression_percent=st.integers(0, 20),
    prune_percent=st.sampled_from([0, 10, 100]),
)
LIMITED_RULES = dataclasses.replace(SIM_RULES, amount_max_minor=5_000)
"""An amount limit most of the client's transfers fit under and many withdrawals do not."""
sim_rules = st.sampled_from(
    [SIM_RULES, LIMITED_RULES, dataclasses.replace(SIM_RULES, amount_max_minor=2**62)]
)


@SIM
@given(
    seed=st.integers(0, 2**32 - 1),
    knobs=sim_settings,
    steps_per_command=st.integers(1, 3),
    rules=sim_rules,
)
def test_partitioned_log_keeps_every_invariant(
    seed: int, knobs: SimSettings, steps_per_command: int, rules: Rules
) -> None:
    """400 hostile and ordinary command records over 24 accounts, any interleaving, with
    no amount limit or with one.

    Checked at every step, batch and at the end: see ``invariants.py``.
    """
    sim = simulate(
        seed,
        command_count=COMMAND_COUNT,
        settings=knobs,
        steps_per_command=steps_per_command,
        rules=rules,
    )
    assert sim.command_records_sent >= COMMAND_COUNT
    check_final(sim)


# --- batching and purity ---------------------------------------------------------------------

ONE_PARTITION = SimSettings(partition_count=1, follow_directory=False, batch_size_max=12)
"""One partition's whole log, replayable: the directory never changes (stays empty)."""


def _single_partition_log(seed: int, command_count: int) -> tuple[LogSim, list[Delivery]]:
    sim = simulate(seed, command_count=command_count, settings=ONE_PARTITION)
    deliveries = [d for _, batch in sim.batches for d in batch]
    return sim, deliveries


def _replay(
    deliveries: list[Delivery],
    *,
    accounts: dict[str, Account] | None = None,
    idempotency: dict[IdempotencyKey, IdempotencyRecord] | None = None,
    clock_ms: int = 0,
) -> BatchResult:
    return process_batch(
        deliveries,
        partition=0,
        accounts={} if accounts is None else accounts,
        idempotency={} if idempotency is None else idempotency,
        directory={},
        clock_ms=clock_ms,
        rules=SIM_RULES,
    )


@REPLAY
@given(seed=st.integers(0, 2**32 - 1), cut_seed=st.integers(0, 2**32 - 1))
def test_batch_of_n_equals_n_batches_of_one(seed: int, cut_seed: int) -> None:
    """One partition's whole log: one batch, singles and random chunks agree with the run."""
    sim, deliveries = _single_partition_log(seed, 300)
    whole = _replay(deliveries)
    singles, _ = run_in_singles(
        deliveries,
        partition=0,
        accounts={},
        idempotency={},
        directory={},
        clock_ms=0,
        rules=SIM_RULES,
    )
    assert whole == singles
    assert whole == _in_random_chunks(deliveries, random.Random(cut_seed))
    state = sim.partitions[0]
    assert whole.accounts == state.accounts and whole.clock_ms == state.clock_ms
    assert [o for o in whole.outputs if isinstance(o, JournalEntry)] == list(
        sim.trace.journal.values()
    )
    assert [o for o in whole.outputs if isinstance(o, Event)] == list(sim.trace.events.values())
    assert _live(whole.idempotency, whole.clock_ms) == _live(state.idempotency, state.clock_ms)


def _live(
    records: dict[IdempotencyKey, IdempotencyRecord], clock_ms: int
) -> dict[IdempotencyKey, IdempotencyRecord]:
    """The records the core still sees (the simulated store deletes expired ones now and then)."""
    return {k: r for k, r in records.items() if clock_ms < r.expires_at_ms}


def _in_random_chunks(deliveries: list[Delivery], rng: random.Random) -> BatchResult:
    """The log in chunks of 1..40, state and clock threaded from each result to the next."""
    accounts: dict[str, Account] = {}
    records: dict[IdempotencyKey, IdempotencyRecord] = {}
    outputs: list[Output] = []
    clock_ms = 0
    position = 0
    while position < len(deliveries):
        size = rng.randint(1, 40)
        result = _replay(
            deliveries[position : position + size],
            accounts=accounts,
            idempotency=records,
            clock_ms=clock_ms,
        )
        accounts.update(result.accounts)
        records.update(result.idempotency)
        outputs.extend(result.outputs)
        clock_ms = result.clock_ms
        position += size
    return BatchResult(
        accounts=accounts,
        idempotency=records,
        outputs=tuple(outputs),
        clock_ms=clock_ms,
        payouts={},
        profiles={},
        screening=None,
    )


@REPLAY
@given(seed=st.integers(0, 2**32 - 1), cut=st.floats(0, 1))
def test_result_is_a_pure_function_of_the_arguments(seed: int, cut: float) -> None:
    """From any point of a log, the same arguments give the same result; inputs untouched."""
    _, deliveries = _single_partition_log(seed, 200)
    position = int(cut * len(deliveries))
    prefix = _replay(deliveries[:position])
    accounts, records = dict(prefix.accounts), dict(prefix.idempotency)
    first = _replay(
        deliveries[position:], accounts=accounts, idempotency=records, clock_ms=prefix.clock_ms
    )
    second = _replay(
        deliveries[position:], accounts=accounts, idempotency=records, clock_ms=prefix.clock_ms
    )
    assert first == second
    assert accounts == prefix.accounts and records == prefix.idempotency


@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**32 - 1), pick=st.integers(0, 2**32 - 1))
def test_a_redelivered_leg_stops_the_partition_and_changes_nothing(seed: int, pick: int) -> None:
    """Exactly-once makes a second delivery of a leg impossible; if one came (while its
    record lives), it is a bug: the partition stops and its state is left as it was."""
    sim, deliveries = _single_partition_log(seed, 150)
    state = sim.partitions[0]
    live = _live(state.idempotency, state.clock_ms)
    legs = [d for d in deliveries if isinstance(d.item, Leg) and leg_key(d.item) in live]
    if not legs:
        return
    again = legs[pick % len(legs)]
    accounts, records = dict(state.accounts), dict(state.idempotency)
    with pytest.raises(InvariantViolation):
        _replay([again], accounts=accounts, idempotency=records, clock_ms=state.clock_ms)
    assert accounts == state.accounts and records == state.idempotency


# --- regressions found by the properties ---------------------------------------------------------


class _Partition:
    """One partition's stores, log clock and journal (both ends of a saga live on it)."""

    def __init__(self, accounts: list[Account], rules: Rules) -> None:
        self.accounts = {a.account_id: a for a in accounts}
        self.records: dict[IdempotencyKey, IdempotencyRecord] = {}
        self.journal: list[JournalEntry] = []
        self.clock_ms = 0
        self.offset = 0
        self.rules = rules

    def apply(self, items: Sequence[Input], *, log_time_ms: int = T0_MS) -> tuple[Output, ...]:
        """``items`` as one batch of consecutive records, all at ``log_time_ms``."""
        deliveries = [
            Delivery(item=item, offset=self.offset + i, log_time_ms=log_time_ms)
            for i, item in enumerate(items)
        ]
        result = process_batch(
            deliveries,
            partition=0,
            accounts=self.accounts,
            idempotency=self.records,
            directory={},
            clock_ms=self.clock_ms,
            rules=self.rules,
        )
        self.accounts |= result.accounts
        self.records |= result.idempotency
        self.journal += [o for o in result.outputs if isinstance(o, JournalEntry)]
        self.clock_ms = result.clock_ms
        self.offset += len(items)
        return result.outputs


LATE_LEGS = SimSettings(jump_with_legs_in_flight=True)


def _debited(rules: Rules, destination: Account) -> tuple[_Partition, CreditLeg]:
    """A transfer of 5 from ``src`` to ``destination``, debited at T0: its partition and leg."""
    partition = _Partition([make_account("src", credits_minor=10), destination], rules)
    transfer = Transfer(cid(1), "r1", PARTNER, T0_MS, "src", destination.account_id, 5, "EUR")
    (leg,) = [o for o in partition.apply([transfer]) if isinstance(o, CreditLeg)]
    return partition, leg


@pytest.mark.parametrize("destination_status", ["open", "frozen"])
def test_step_3_lands_after_the_transfer_ids_window(destination_status: AccountStatus) -> None:
    """Found by ``test_partitioned_log_keeps_every_invariant`` with jumps while legs were in
    flight (step 3 needed the transfer's claim, which expires with the id's window). Step 3
    now checks the transfer's open reservation, which never expires: it lands seven days
    after the transfer id was minted, with production rules."""
    rules = Rules()
    destination = make_account("dst", status=destination_status)
    partition, leg = _debited(rules, destination)
    (step_3,) = [o for o in partition.apply([leg]) if isinstance(o, Confirmation | Compensation)]
    outputs = partition.apply([step_3], log_time_ms=T0_MS + rules.retention_ms)
    expected = "Completed" if destination_status == "open" else "Reversed"
    assert [o.type for o in outputs if isinstance(o, Event)] == [expected]
    assert not partition.accounts["src"].has_pending


def test_a_leg_redelivered_after_the_retention_window_still_stops_the_partition() -> None:
    """Found by ``test_a_redelivered_leg_stops_the_partition_and_changes_nothing`` (seed=0,
    pick=0, before it was limited to legs whose record lives). Exactly-once rules this out,
    but a group whose committed offsets expired and that restarts from ``earliest`` would
    deliver old legs again: commands are refused by their ids' window, and a CreditLeg whose
    transfer id has left the window now stops the partition instead of crediting again."""
    rules = SIM_RULES
    partition, leg = _debited(rules, make_account("dst"))
    partition.apply([leg])
    with pytest.raises(InvariantViolation, match="older than the retention window"):
        partition.apply([leg], log_time_ms=T0_MS + 2 * rules.retention_ms)


# --- coverage of the generator ------------------------------------------------------------------

UNREACHABLE_CODES = {
    "balance_overflow": "128-bit totals: an account would need more than 2**64 commands "
    "of the largest amount (2**63-1) before a posting could pass 2**128-1",
}
PAYOUT_EVENT_TYPES = {"Held", "Queued", "Sending", "Settled", "Failed"}
PAYOUT_CODES = {
    "not_authorized", "invalid_beneficiary", "invalid_rules", "payout_not_found",
    "payout_not_held", "payout_not_overridable", "payout_not_queued", "payout_not_sending",
    "review_rejected", "bank_rejected",
}  # fmt: skip
"""Payouts are not in this simulator's traffic yet: test_ledger_payouts and
test_payout_properties reach them."""
COVERAGE_SEEDS = range(4)
COMPENSATION_REASONS = {
    "account_frozen",
    "account_closed",
    "account_not_found",
    "currency_mismatch",
}


def test_the_generator_reaches_every_outcome() -> None:
    """Fixed runs reach every event type, every reachable rejection code, every compensation
    reason, duplicates of applied and of refused commands, a request run again after its key
    expired, and a settlement shard past 2**64 that still takes deposits. The last seed runs
    under an amount limit (``amount_over_limit``)."""
    answers: collections.Counter[tuple[str, str | None]] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    reruns = 0
    past_2_64 = False
    for seed in COVERAGE_SEEDS:
        for follow_directory in (True, False):
            knobs = SimSettings(follow_directory=follow_directory, directory_lag_steps_max=8)
            rules = LIMITED_RULES if seed == COVERAGE_SEEDS[-1] else SIM_RULES
            sim = simulate(seed, command_count=500, settings=knobs, rules=rules)
            check_final(sim)
            answers.update(sim.trace.answers)
            reasons.update(sim.trace.reasons)
            reruns += sim.trace.reruns_after_expiry
            past_2_64 |= any(
                a.account_id.startswith("@settlement:") and a.posted_debits_minor > 2**64
                for _, a in sim.all_accounts()
            )
    assert {event_type for event_type, _ in answers} == set(EVENT_TYPES) - PAYOUT_EVENT_TYPES
    codes = {code for event_type, code in answers if event_type == "Rejected"}
    assert codes == set(REJECTION_CODES) - set(UNREACHABLE_CODES) - PAYOUT_CODES
    assert set(reasons) >= COMPENSATION_REASONS
    assert answers[("Duplicate", None)] > 0 and answers[("Duplicate", "insufficient_funds")] > 0
    assert reruns > 0
    assert past_2_64


# --- 128-bit totals -------------------------------------------------------------------------------


@settings(deadline=None, max_examples=30)
@given(
    amounts=st.lists(st.integers(2**62, AMOUNT_MAX_MINOR), min_size=5, max_size=8),
    in_flight=st.integers(3, 6),
)
def test_system_shards_pass_2_64_and_keep_accepting(amounts: list[int], in_flight: int) -> None:
    """Finding 5: max-size deposits drive the settlement shard, and max-size transfers from an
    overdraft account the transit shard (pending, then posted), past 2**64; a deposit of 1
    still completes, and the tables stay a projection of the journal."""
    accounts = [make_account(f"a{i}") for i in range(len(amounts))]
    whale = make_account("whale", no_overdraft=False)
    deposits = [
        Deposit(cid(i), f"r{i}", PARTNER, T0_MS, a.account_id, amount, "EUR")
        for i, (a, amount) in enumerate(zip(accounts, amounts, strict=True))
    ]
    transfers = [
        Transfer(cid(f"t{i}"), f"t{i}", PARTNER, T0_MS, "whale", "a0", AMOUNT_MAX_MINOR, "EUR")
        for i in range(in_flight)
    ]
    last = Deposit(cid("last"), "last", PARTNER, T0_MS, "a1", 1, "EUR")
    partition = _Partition([*accounts, whale], SIM_RULES)
    step_1 = partition.apply([*deposits, *transfers, last])
    shards = partition.accounts
    assert shards["@transit:EUR:0"].pending_credits_minor == in_flight * AMOUNT_MAX_MINOR > 2**64
    assert shards["@settlement:EUR:0"].posted_debits_minor == sum(amounts) + 1 > 2**64
    assert [e.type for e in step_1 if isinstance(e, Event)][-1] == "Completed"
    step_2 = partition.apply([o for o in step_1 if isinstance(o, CreditLeg)])
    partition.apply([o for o in step_2 if isinstance(o, Confirmation)])
    assert shards["@transit:EUR:0"].posted_credits_minor == in_flight * AMOUNT_MAX_MINOR
    assert shards["@transit:EUR:0"].balance_minor == 0
    check_partition(0, shards, 1)
    check_tables_match_journal(shards.values(), partition.journal)


# --- leaves ---------------------------------------------------------------------------------------

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


@LEAF
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


@LEAF
@given(a=identifiers, b=identifiers)
def test_body_hash_is_injective_on_field_boundaries(a: str, b: str) -> None:
    """Moving characters from one field to the next never gives the same hash."""
    first = Deposit("c", "r", a + b, 0, "acc", 1, "EUR")
    second = Deposit("c", "r" + a, b, 0, "acc", 1, "EUR")
    assert body_sha256(first) != body_sha256(second)


def _entry(lines: list[JournalLine]) -> JournalEntry:
    return JournalEntry(
        entry_id="p:s",
        payment_id="p",
        kind="deposit",
        partner_id="p1",
        account_id="a0",
        issued_at_ms=0,
        lines=tuple(lines),
    )


@LEAF
@given(
    debits=st.lists(st.tuples(st.sampled_from(["EUR", "USD"]), amounts), min_size=1, max_size=30)
)
def test_an_entry_balances_iff_debits_equal_credits_per_currency(
    debits: list[tuple[str, int]],
) -> None:
    lines = [
        JournalLine(account_id=f"a{i}", currency=c, side="debit", amount_minor=x)
        for i, (c, x) in enumerate(debits)
    ]
    mirrored = [
        dataclasses.replace(line, account_id=f"b{i}", side="credit") for i, line in enumerate(lines)
    ]
    check_balanced(_entry(lines + mirrored))
    skewed = [*mirrored[:-1], dataclasses.replace(mirrored[-1], currency="JPY")]
    with pytest.raises(InvariantViolation):
        check_balanced(_entry(lines + skewed))


@LEAF
@given(postings=st.lists(st.tuples(st.sampled_from(["debit", "credit"]), amounts), max_size=20))
def test_postings_keep_totals_growing_and_bounded(postings: list[tuple[str, int]]) -> None:
    account = make_account("a", no_overdraft=False)
    for side, amount in postings:
        fits = debits_fit if side == "debit" else credits_fit
        if not fits(account, amount):
            continue
        before = account
        account = debit(account, amount) if side == "debit" else credit(account, amount)
        assert account.version == before.version + 1
        assert account.posted_debits_minor >= before.posted_debits_minor
        assert account.posted_credits_minor >= before.posted_credits_minor
        assert max(account.posted_debits_minor, account.posted_credits_minor) <= TOTAL_MAX_MINOR
