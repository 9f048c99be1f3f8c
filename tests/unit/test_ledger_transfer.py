"""process_batch: the two-phase transfer saga (findings 3, 5, 8 and 10).

Step 1 (Transfer, source's partition) reserves: pending DEBIT source / CREDIT transit.
Step 2 (CreditLeg, destination's partition) credits the destination from that partition's
transit shard and confirms, or refuses and compensates. Step 3 (source's partition) posts
the reservation (Completed) or voids it (Reversed).
"""

from __future__ import annotations

import dataclasses

import pytest

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    TOTAL_MAX_MINOR,
    Account,
    AccountStatus,
    BatchResult,
    Compensation,
    Confirmation,
    CreditLeg,
    Delivery,
    DirectoryEntry,
    Event,
    FreezeAccount,
    InvariantViolation,
    JournalEntry,
    JournalLine,
    Leg,
    RejectionCode,
    Transfer,
    process_batch,
)
from tests.support.ledger import (
    OTHER_PARTNER,
    PARTNER,
    RULES,
    T0_MS,
    Cluster,
    balance_sum,
    cid,
    compensation_of,
    confirmation_of,
    credit_leg,
    directory_of,
    entries,
    events,
    leg_of,
    make_account,
    of_type,
    run,
    status_command,
    the_event,
    transfer,
)

SOURCE = make_account("src", credits_minor=1_000)
DESTINATION = make_account("dst")
TRANSFER = transfer(1, "src", "dst", 400)
PAYMENT = TRANSFER.command_id
LEG = leg_of(TRANSFER)


def transit(
    partition: int = 0, *, pending_credits_minor: int = 0, credits_minor: int = 0
) -> Account:
    return make_account(
        f"@transit:EUR:{partition}",
        partner_id="@system",
        no_overdraft=False,
        pending_credits_minor=pending_credits_minor,
        credits_minor=credits_minor,
        version=1,
    )


STEP_1 = run([TRANSFER], accounts=[SOURCE, DESTINATION])
RESERVED_SOURCE = STEP_1.accounts["src"]
RESERVED_TRANSIT = STEP_1.accounts["@transit:EUR:0"]
RESERVED_RECORDS = STEP_1.idempotency
"""The state step 1 of TRANSFER left on partition 0 (step 3 runs over it)."""


def leg_event(event_type: str, step: str, code: RejectionCode | None = None) -> Event:
    return Event(
        event_id=f"{PAYMENT}:{step}",
        payment_id=PAYMENT,
        type=event_type,  # type: ignore[arg-type]
        command_type="Transfer",
        partner_id=PARTNER,
        account_id="src",
        issued_at_ms=T0_MS,
        counterparty_account_id="dst",
        amount_minor=400,
        currency="EUR",
        code=code,
    )


def step_one_code(
    command: Transfer, destination: DirectoryEntry | None = None
) -> tuple[RejectionCode | None, dict[str, Account]]:
    """Step 1 with SOURCE; the destination is known only through the directory, if at all."""
    directory = directory_of([SOURCE])
    if destination is not None:
        directory[destination.account_id] = destination
    result = run([command], accounts=[SOURCE], directory=directory)
    return events(result)[-1].code, dict(result.accounts)


def dest_entry(
    status: AccountStatus = "open", partner_id: str = PARTNER, currency: str = "EUR"
) -> DirectoryEntry:
    return DirectoryEntry("dst", currency, partner_id, status)


def line(account_id: str, side: str, amount_minor: int = 400) -> JournalLine:
    return JournalLine(
        account_id=account_id,
        currency="EUR",
        side=side,  # type: ignore[arg-type]
        amount_minor=amount_minor,
    )


# --- step 1: Transfer ------------------------------------------------------------------------


def test_transfer_reserves_on_the_source_and_this_partitions_transit_shard() -> None:
    command = transfer(1, "src", "dst", 400, partition=2)
    result = run([command], accounts=[SOURCE, DESTINATION], partition=2)
    source, shard = result.accounts["src"], result.accounts["@transit:EUR:2"]
    assert (source.pending_debits_minor, source.posted_debits_minor) == (400, 0)
    assert (source.balance_minor, source.available_minor) == (1_000, 600)
    assert (shard.pending_credits_minor, shard.posted_credits_minor) == (400, 0)
    assert set(result.accounts) == {"src", "@transit:EUR:2"}


def test_transfer_emits_a_pending_entry_the_credit_leg_and_debited_in_order() -> None:
    result = run([TRANSFER], accounts=[SOURCE, DESTINATION])
    assert result.outputs == (
        JournalEntry(
            entry_id=f"{PAYMENT}:debit",
            payment_id=PAYMENT,
            kind="transfer_debit",
            partner_id=PARTNER,
            account_id="src",
            issued_at_ms=T0_MS,
            lines=(line("src", "debit"), line("@transit:EUR:0", "credit")),
            phase="pending",
        ),
        LEG,
        leg_event("Debited", "debited"),
    )


@pytest.mark.parametrize(
    ("destination", "step_3"), [("dst", Confirmation), ("ghost", Compensation)]
)
def test_the_transfers_request_id_travels_with_its_legs(
    destination: str, step_3: type[Confirmation | Compensation]
) -> None:
    """Step 3 checks the leg against the transfer's claim, whose body has the request id."""
    command = transfer(7, "src", destination, 400, request_id="req-seven")
    world = Cluster.of([SOURCE, DESTINATION])
    world.saga(command)
    (leg,) = of_type(world.outputs, CreditLeg)
    (settlement,) = of_type(world.outputs, step_3)
    assert leg == leg_of(command)
    assert (leg.request_id, settlement.request_id) == ("req-seven", "req-seven")
    assert [e.type for e in world.events()] == [
        "Debited",
        "Completed" if step_3 is Confirmation else "Reversed",
    ]


def test_transfer_to_the_source_itself_is_same_account() -> None:
    assert step_one_code(transfer(1, "src", "src", 400)) == ("same_account", {})


def test_transfer_to_a_system_account_is_account_not_found() -> None:
    shard = DirectoryEntry("@transit:EUR:0", "EUR", PARTNER, "open")
    assert step_one_code(transfer(1, "src", "@transit:EUR:0", 400), shard) == (
        "account_not_found",
        {},
    )
    assert step_one_code(transfer(1, "src", "@nowhere", 400)) == ("account_not_found", {})


def test_transfer_from_another_partners_account_is_account_not_found() -> None:
    command = transfer(1, "src", "dst", 400, partner_id=OTHER_PARTNER)
    assert step_one_code(command, dest_entry(partner_id=OTHER_PARTNER)) == (
        "account_not_found",
        {},
    )


def test_transfer_in_another_currency_than_the_source_is_currency_mismatch() -> None:
    command = transfer(1, "src", "dst", 400, currency="USD")
    assert step_one_code(command, dest_entry(currency="USD")) == ("currency_mismatch", {})


def test_transfer_beyond_the_available_balance_is_insufficient_funds() -> None:
    assert step_one_code(transfer(1, "src", "dst", 1_001), dest_entry()) == (
        "insufficient_funds",
        {},
    )


def test_a_second_transfer_cannot_spend_money_already_reserved() -> None:
    first, second = transfer(1, "src", "dst", 600), transfer(2, "src", "dst", 401)
    result = run([first, second], accounts=[SOURCE, DESTINATION])
    assert [(e.type, e.code) for e in events(result)] == [
        ("Debited", None),
        ("Rejected", "insufficient_funds"),
    ]
    assert result.accounts["src"].available_minor == 400


@pytest.mark.parametrize("amount", [0, -1, AMOUNT_MAX_MINOR + 1, True])
def test_transfer_of_an_invalid_amount_is_invalid_amount(amount: int) -> None:
    assert step_one_code(transfer(1, "src", "dst", amount), dest_entry()) == (
        "invalid_amount",
        {},
    )


def test_transfer_beyond_the_transit_shards_128_bit_total_is_balance_overflow() -> None:
    shard = transit(credits_minor=TOTAL_MAX_MINOR - 399)
    result = run([TRANSFER], accounts=[SOURCE, DESTINATION, shard])
    assert (result.accounts, events(result)[-1].code) == ({}, "balance_overflow")


def test_the_source_is_checked_before_the_destination() -> None:
    frozen_source = make_account("src", status="frozen", credits_minor=1_000)
    result = run([TRANSFER], accounts=[frozen_source], directory={})
    assert the_event(result).code == "account_frozen"


# --- finding 10: the directory is a hint at step 1 ---------------------------------------------


def test_finding_10_an_unknown_destination_is_debited_not_rejected() -> None:
    """Finding 10: the directory starts empty after a restart and lags in steady state;
    a destination it does not know is left to the destination's partition (the authority):
    step 1 reserves and sends the leg (``Debited``), it does not answer ``account_not_found``."""
    code, accounts = step_one_code(TRANSFER)
    assert code is None
    assert accounts["src"].pending_debits_minor == 400


def test_finding_10_an_unknown_destination_that_exists_is_credited_at_step_2() -> None:
    """Finding 10: with an empty directory, a transfer to an existing account completes."""
    world = Cluster.of([SOURCE, DESTINATION])
    world.directory.clear()
    world.saga(TRANSFER)
    assert [e.type for e in world.events()] == ["Debited", "Completed"]
    assert world.account("dst").balance_minor == 400


def test_finding_10_an_unknown_destination_that_does_not_exist_is_reversed() -> None:
    """Finding 10: the destination's partition refuses; the source gets its money back."""
    world = Cluster.of([SOURCE])
    world.saga(transfer(1, "src", "ghost", 400))
    assert [(e.type, e.code) for e in world.events()] == [
        ("Debited", None),
        ("Reversed", "account_not_found"),
    ]
    source = world.account("src")
    assert (source.balance_minor, source.available_minor, source.has_pending) == (
        1_000,
        1_000,
        False,
    )


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        (dest_entry("closed"), "account_closed"),
        (dest_entry("frozen"), "account_frozen"),
        (dest_entry(currency="USD"), "currency_mismatch"),
        (dest_entry(partner_id=OTHER_PARTNER), "account_not_found"),
    ],
    ids=["closed", "frozen", "other currency", "other partner"],
)
def test_finding_10_a_known_bad_destination_is_refused_at_step_1(
    entry: DirectoryEntry, code: RejectionCode
) -> None:
    """Finding 10: only what the directory KNOWS is wrong is refused early; nothing moves."""
    assert step_one_code(TRANSFER, entry) == (code, {})


def test_the_directory_is_a_snapshot_and_step_2_is_the_authority() -> None:
    """A destination frozen earlier in the batch is still open in the snapshot: step 1
    reserves, and the destination's partition refuses with its real status."""
    world = Cluster.of([SOURCE, DESTINATION])
    freeze = status_command(FreezeAccount, 2, "dst")
    step_1 = world.apply([freeze, TRANSFER], partition=0)
    assert [e.type for e in events(step_1)] == ["Completed", "Debited"]
    (leg,) = of_type(step_1.outputs, CreditLeg)
    assert world.apply([leg], partition=1).outputs == (compensation_of(LEG, "account_frozen"),)


# --- step 2: CreditLeg ------------------------------------------------------------------------


def test_credit_leg_credits_the_destination_from_this_partitions_transit_shard() -> None:
    result = run([LEG], accounts=[DESTINATION], partition=5)
    assert result.accounts["dst"].balance_minor == 400
    shard = result.accounts["@transit:EUR:5"]
    assert (shard.posted_debits_minor, shard.balance_minor, shard.has_pending) == (
        400,
        -400,
        False,
    )


def test_credit_leg_emits_a_posted_entry_then_the_confirmation() -> None:
    result = run([LEG], accounts=[DESTINATION], partition=5)
    assert result.outputs == (
        JournalEntry(
            entry_id=f"{PAYMENT}:credit",
            payment_id=PAYMENT,
            kind="transfer_credit",
            partner_id=PARTNER,
            account_id="dst",
            issued_at_ms=T0_MS,
            lines=(line("@transit:EUR:5", "debit"), line("dst", "credit")),
        ),
        confirmation_of(LEG),
    )


@pytest.mark.parametrize(
    ("destination", "code"),
    [
        (None, "account_not_found"),
        (make_account("dst", partner_id=OTHER_PARTNER), "account_not_found"),
        (make_account("dst", status="closed"), "account_closed"),
        (make_account("dst", status="frozen"), "account_frozen"),
        (make_account("dst", currency="USD"), "currency_mismatch"),
        (make_account("dst", credits_minor=TOTAL_MAX_MINOR - 399), "balance_overflow"),
    ],
    ids=["missing", "other partner", "closed", "frozen", "other currency", "overflow"],
)
def test_a_refused_credit_leg_sends_a_compensation_and_moves_nothing(
    destination: Account | None, code: RejectionCode
) -> None:
    result = run([LEG], accounts=[] if destination is None else [destination], partition=1)
    assert result.accounts == {}
    assert result.outputs == (compensation_of(LEG, code),)
    assert result.idempotency[("credit", "", PAYMENT)].code == code


def test_a_credit_leg_to_a_system_account_is_refused() -> None:
    leg = credit_leg(PAYMENT, destination="@transit:EUR:1", amount_minor=400)
    result = run([leg], accounts=[transit(1)], partition=1)
    assert result.outputs == (compensation_of(leg, "account_not_found"),)


# --- step 3: Confirmation and Compensation -------------------------------------------------------


def settle(leg: Confirmation | Compensation) -> BatchResult:
    """Step 3 over the state step 1 of TRANSFER left."""
    return run([leg], accounts=[RESERVED_SOURCE, RESERVED_TRANSIT], idempotency=RESERVED_RECORDS)


def test_confirmation_posts_the_reservation() -> None:
    result = settle(confirmation_of(LEG))
    source, shard = result.accounts["src"], result.accounts["@transit:EUR:0"]
    assert (source.posted_debits_minor, source.pending_debits_minor, source.balance_minor) == (
        400,
        0,
        600,
    )
    assert (shard.posted_credits_minor, shard.pending_credits_minor) == (400, 0)


def test_confirmation_emits_the_post_entry_then_completed() -> None:
    result = settle(confirmation_of(LEG))
    assert result.outputs == (
        JournalEntry(
            entry_id=f"{PAYMENT}:post",
            payment_id=PAYMENT,
            kind="transfer_debit",
            partner_id=PARTNER,
            account_id="src",
            issued_at_ms=T0_MS,
            lines=(line("src", "debit"), line("@transit:EUR:0", "credit")),
            phase="post",
            pending_entry_id=f"{PAYMENT}:debit",
        ),
        leg_event("Completed", "completed"),
    )


def test_compensation_voids_the_reservation() -> None:
    result = settle(compensation_of(LEG))
    source, shard = result.accounts["src"], result.accounts["@transit:EUR:0"]
    assert (source.posted_debits_minor, source.pending_debits_minor) == (0, 0)
    assert source.available_minor == 1_000
    assert (shard.posted_credits_minor, shard.pending_credits_minor) == (0, 0)


def test_compensation_emits_the_void_entry_then_reversed_with_the_reason() -> None:
    result = settle(compensation_of(LEG, "account_frozen"))
    (entry,) = entries(result)
    assert (entry.entry_id, entry.phase, entry.pending_entry_id) == (
        f"{PAYMENT}:void",
        "void",
        f"{PAYMENT}:debit",
    )
    assert entry.lines == (line("src", "debit"), line("@transit:EUR:0", "credit"))
    assert result.outputs[-1] == leg_event("Reversed", "reversed", "account_frozen")


@pytest.mark.parametrize("kind", [confirmation_of, compensation_of])
def test_step_3_records_the_settlement_of_the_transfer(kind: object) -> None:
    result = settle(kind(LEG))  # type: ignore[operator]
    assert set(result.idempotency) == {("settlement", "", PAYMENT)}
    record = result.idempotency[("settlement", "", PAYMENT)]
    assert (record.command_id, record.code, record.expires_at_ms) == (
        PAYMENT,
        None,
        T0_MS + RULES.retention_ms,
    )


# --- finding 8: legs are internal; one that cannot be applied stops the worker -------------------

LEG_KINDS = {
    "credit leg": (LEG, [DESTINATION]),
    "confirmation": (confirmation_of(LEG), [RESERVED_SOURCE, RESERVED_TRANSIT]),
    "compensation": (compensation_of(LEG), [RESERVED_SOURCE, RESERVED_TRANSIT]),
}


LEG_REFUSED = r"delivered twice|never reserved|older than the retention window"
"""What the core says when a leg comes that it must not apply."""


def raises_and_changes_nothing(legs: list[Leg], accounts: list[Account], **state: object) -> None:
    """process_batch raises InvariantViolation, and the given state is left as it was
    (idempotency: the records of TRANSFER's step 1 unless given)."""
    given = {a.account_id: a for a in accounts}
    snapshot = dict(given)
    with pytest.raises(InvariantViolation):
        process_batch(
            [Delivery(item=leg, offset=i, log_time_ms=T0_MS) for i, leg in enumerate(legs)],
            partition=0,
            accounts=given,
            idempotency=state.get("idempotency", RESERVED_RECORDS),  # type: ignore[arg-type]
            directory={},
            clock_ms=0,
            rules=RULES,
        )
    assert given == snapshot


@pytest.mark.parametrize("amount", [0, -1, AMOUNT_MAX_MINOR + 1])
@pytest.mark.parametrize(("leg", "accounts"), LEG_KINDS.values(), ids=LEG_KINDS.keys())
def test_finding_8_a_leg_with_an_invalid_amount_is_an_invariant_violation(
    leg: Leg, accounts: list[Account], amount: int
) -> None:
    """Finding 8: a leg with amount 0 (or out of range) was validated like client input
    and sent to the DLQ, stranding money in transit. Legs were validated with their
    command: such a leg is a broken invariant, and the worker stops loudly."""
    raises_and_changes_nothing([dataclasses.replace(leg, amount_minor=amount)], accounts)


@pytest.mark.parametrize(("leg", "accounts"), LEG_KINDS.values(), ids=LEG_KINDS.keys())
def test_finding_8_a_leg_delivered_twice_is_an_invariant_violation(
    leg: Leg, accounts: list[Account]
) -> None:
    """Finding 8: each leg is applied exactly once; a second delivery (in the same batch
    or a later one) is a broken invariant, never a silent re-emit or a second posting."""
    raises_and_changes_nothing([leg, leg], accounts)
    first = run([leg], accounts=accounts, idempotency=RESERVED_RECORDS)
    raises_and_changes_nothing(
        [leg],
        [*accounts, *first.accounts.values()],
        idempotency={**RESERVED_RECORDS, **first.idempotency},
    )


def test_finding_8_a_refused_credit_leg_delivered_again_is_an_invariant_violation() -> None:
    """Finding 8: a refusal is recorded too; the leg cannot be retried into a credit."""
    refused = run([LEG])
    raises_and_changes_nothing([LEG], [DESTINATION], idempotency=refused.idempotency)


NO_RESERVATION = {
    "no source": [RESERVED_TRANSIT],
    "no transit shard": [RESERVED_SOURCE],
    "nothing pending on the source": [SOURCE, RESERVED_TRANSIT],
    "less pending on the source": [
        dataclasses.replace(RESERVED_SOURCE, pending_debits_minor=399),
        RESERVED_TRANSIT,
    ],
    "less pending on transit": [
        RESERVED_SOURCE,
        dataclasses.replace(RESERVED_TRANSIT, pending_credits_minor=399),
    ],
    "source of another partner": [
        make_account(
            "src", partner_id=OTHER_PARTNER, credits_minor=1_000, pending_debits_minor=400
        ),
        RESERVED_TRANSIT,
    ],
    "source in another currency": [
        dataclasses.replace(RESERVED_SOURCE, currency="USD"),
        RESERVED_TRANSIT,
    ],
}


@pytest.mark.parametrize("kind", [confirmation_of, compensation_of])
@pytest.mark.parametrize("accounts", NO_RESERVATION.values(), ids=NO_RESERVATION.keys())
def test_finding_8_step_3_without_a_reservation_is_an_invariant_violation(
    kind: object, accounts: list[Account]
) -> None:
    """Finding 8: a Confirmation or Compensation whose reservation is not there cannot
    be applied; it stops the worker instead of minting or dropping money."""
    raises_and_changes_nothing([kind(LEG)], accounts)  # type: ignore[operator]


def test_finding_8_a_leg_of_unknown_type_is_an_invariant_violation() -> None:
    with pytest.raises(InvariantViolation, match="not an input"):
        run([object()])  # type: ignore[list-item]


def test_finding_8_a_confirmation_of_a_transfer_never_reserved_is_a_violation() -> None:
    """Finding 8: the source holds TRANSFER's reservation (step 1 really ran); a
    Confirmation naming a transfer that reserved nothing must not post it."""
    never_reserved = confirmation_of(credit_leg(cid("never"), amount_minor=400))
    raises_and_changes_nothing([never_reserved], [RESERVED_SOURCE, RESERVED_TRANSIT])


NOT_THE_RESERVED_TRANSFER = {
    "another request id": {"request_id": "r-other"},
    "a smaller amount": {"amount_minor": 300},
    "another destination": {"destination_account_id": "dst-2"},
}


@pytest.mark.parametrize("kind", [confirmation_of, compensation_of])
@pytest.mark.parametrize(
    "changes", NOT_THE_RESERVED_TRANSFER.values(), ids=NOT_THE_RESERVED_TRANSFER.keys()
)
def test_finding_8_step_3_that_is_not_the_transfer_step_1_reserved_is_a_violation(
    kind: object, changes: dict[str, object]
) -> None:
    """Finding 8: the reservation covers the leg, but the transfer's claim proves step 1
    reserved another body: posting or voiding it would settle a transfer never made."""
    leg = kind(LEG, **changes)  # type: ignore[operator]
    with pytest.raises(InvariantViolation, match="never reserved"):
        settle(leg)
    raises_and_changes_nothing([leg], [RESERVED_SOURCE, RESERVED_TRANSIT])


@pytest.mark.parametrize("kind", [confirmation_of, compensation_of])
def test_finding_8_step_3_naming_a_duplicate_of_the_transfer_is_a_violation(kind: object) -> None:
    """Finding 8: a second command id for TRANSFER's request is answered ``Duplicate``; its
    claim has TRANSFER's body but names the original, so it proves no reservation of its own."""
    duplicate = dataclasses.replace(TRANSFER, command_id=cid(99))
    world = Cluster.of([SOURCE, DESTINATION])
    world.apply([TRANSFER, duplicate])
    assert [e.type for e in world.events()] == ["Debited", "Duplicate"]
    with pytest.raises(InvariantViolation, match="never reserved"):
        world.apply([kind(leg_of(duplicate))])  # type: ignore[operator]
    world.apply([confirmation_of(LEG)])  # the original still settles, once
    assert [e.type for e in world.events()] == ["Debited", "Duplicate", "Completed"]


@pytest.mark.parametrize("kind", [confirmation_of, compensation_of])
def test_finding_8_step_3_of_a_refused_transfer_is_a_violation(kind: object) -> None:
    """Finding 8: a refused transfer claims its id too (with its code): it reserved nothing,
    even while another transfer's reservation would cover the amount."""
    refused = transfer(2, "src", "dst", 400)
    world = Cluster.of([SOURCE, DESTINATION])
    world.apply([TRANSFER])
    world.directory["dst"] = dest_entry("frozen")
    world.apply([refused])
    assert [(e.type, e.code) for e in world.events()] == [
        ("Debited", None),
        ("Rejected", "account_frozen"),
    ]
    assert world.account("src").pending_debits_minor == 400
    with pytest.raises(InvariantViolation, match="never reserved"):
        world.apply([kind(leg_of(refused))])  # type: ignore[operator]
    assert world.account("src").pending_debits_minor == 400


@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        (compensation_of(LEG, "account_frozen"), confirmation_of(LEG), "Reversed"),
        (confirmation_of(LEG), compensation_of(LEG, "account_frozen"), "Completed"),
    ],
    ids=["confirmation after compensation", "compensation after confirmation"],
)
def test_finding_8_a_transfer_settles_once(
    first: Confirmation | Compensation, second: Confirmation | Compensation, outcome: str
) -> None:
    """Finding 8: a transfer settles once. Two transfers of 400 are reserved; t1 is settled;
    the other step 3 of t1 must stop the worker, not settle t2's reservation."""
    world = Cluster.of([SOURCE, DESTINATION])
    t2 = transfer(2, "src", "dst", 400)
    world.apply([TRANSFER, t2], partition=0)
    world.apply([first], partition=0)
    with pytest.raises(InvariantViolation, match=LEG_REFUSED):
        world.apply([second], partition=0)
    assert [e.type for e in world.events()] == ["Debited", "Debited", outcome]
    assert world.account("src").pending_debits_minor == 400  # t2's reservation, untouched
    world.apply([confirmation_of(leg_of(t2))], partition=0)
    assert world.events()[-1].type == "Completed"
    assert not world.account("src").has_pending


LEG_RECORD_LIVES = {
    "first delivered when minted": (T0_MS, T0_MS + RULES.retention_ms),
    "first delivered after minting": (T0_MS + 60_000, T0_MS + 60_000 + RULES.retention_ms),
    "first delivered on a clock behind the minting": (T0_MS - 60_000, T0_MS + RULES.retention_ms),
}


@pytest.mark.parametrize(
    ("first_ms", "expiry_ms"), LEG_RECORD_LIVES.values(), ids=LEG_RECORD_LIVES.keys()
)
def test_finding_8_a_credit_leg_delivered_again_within_its_records_life_is_refused(
    first_ms: int, expiry_ms: int
) -> None:
    """Finding 8 with finding 4: a leg's record lives until max(log clock, the transfer id's
    minting time) + retention, so it outlives the transfer's claim; a repeat up to its last
    millisecond stops the worker and credits nothing. (A repeat later than that is not
    recognised: the residual documented at ``core._leg_expiry_ms``; exactly-once delivery
    never repeats a leg.)"""
    world = Cluster.of([DESTINATION])
    first = world.apply([LEG], partition=1, log_time_ms=first_ms)
    record = first.idempotency[("credit", "", PAYMENT)]
    assert (record.command_id, record.code, record.expires_at_ms) == (PAYMENT, None, expiry_ms)
    claim_end_ms = T0_MS + RULES.retention_ms  # the transfer id's own window
    for repeat_ms in (first_ms, claim_end_ms - 1, expiry_ms - 1):
        with pytest.raises(
            InvariantViolation,
            match=LEG_REFUSED,
        ):
            world.apply([LEG], partition=1, log_time_ms=repeat_ms)
    assert world.account("dst").balance_minor == 400
    assert [e.entry_id for e in world.entries()] == [f"{PAYMENT}:credit"]


# --- the saga end to end -----------------------------------------------------------------------


def transit_sum(world: Cluster) -> int:
    return sum(
        a.balance_minor + a.pending_credits_minor - a.pending_debits_minor
        for a in world.accounts.values()
        if a.account_id.startswith("@transit:")
    )


@pytest.mark.parametrize(("destination", "outcome"), [("dst", "Completed"), ("ghost", "Reversed")])
def test_after_the_three_steps_the_transit_shards_sum_to_zero(
    destination: str, outcome: str
) -> None:
    world = Cluster.of([SOURCE, DESTINATION])
    world.saga(transfer(1, "src", destination, 400), source_partition=0, destination_partition=1)
    assert world.events()[-1].type == outcome
    assert transit_sum(world) == 0
    assert not any(a.has_pending for a in world.accounts.values())
    assert balance_sum(world.accounts.values()) == 1_000


def test_transit_holds_the_money_between_the_steps() -> None:
    world = Cluster.of([SOURCE, DESTINATION])
    (leg,) = of_type(world.apply([TRANSFER], partition=0).outputs, CreditLeg)
    assert transit_sum(world) == 400
    (confirmation,) = of_type(world.apply([leg], partition=1).outputs, Confirmation)
    assert world.account("@transit:EUR:1").balance_minor == -400
    assert transit_sum(world) == 0
    world.apply([confirmation], partition=0)
    assert world.account("@transit:EUR:0").balance_minor == 400
    assert world.account("src").balance_minor == 600
    assert world.account("dst").balance_minor == 400


def test_a_saga_on_one_partition_uses_one_transit_shard_that_ends_at_zero() -> None:
    world = Cluster.of([SOURCE, DESTINATION])
    world.saga(TRANSFER, source_partition=0, destination_partition=0)
    shard = world.account("@transit:EUR:0")
    assert (shard.balance_minor, shard.has_pending) == (0, False)


def test_the_events_of_a_saga_are_one_debited_and_one_terminal() -> None:
    world = Cluster.of([SOURCE, DESTINATION])
    world.saga(TRANSFER)
    assert world.events() == [leg_event("Debited", "debited"), leg_event("Completed", "completed")]
    assert [type(o).__name__ for o in world.outputs] == [
        "JournalEntry",
        "CreditLeg",
        "Event",
        "JournalEntry",
        "Confirmation",
        "JournalEntry",
        "Event",
    ]


def test_compensations_are_typed_and_carry_the_reason() -> None:
    world = Cluster.of([SOURCE, make_account("dst", status="closed")])
    world.directory.clear()
    world.saga(TRANSFER)
    (compensation,) = of_type(world.outputs, Compensation)
    assert compensation.reason == "account_closed"
    assert world.events()[-1] == leg_event("Reversed", "reversed", "account_closed")


def test_finding_5_an_overdraft_account_moves_max_amounts_through_transit_repeatedly() -> None:
    """Finding 5: an ``allow_overdraft`` account could saturate transit with 64-bit totals.
    Three transfers of 2**63-1, all in flight at once, push both transit shards past 2**64
    (pending, then posted) and every one Completes; transit still sums to zero."""
    world = Cluster.of([make_account("src", no_overdraft=False), DESTINATION])
    commands = [transfer(n, "src", "dst", AMOUNT_MAX_MINOR) for n in range(3)]
    step_1 = world.apply(commands, partition=0)
    assert [e.type for e in events(step_1)] == ["Debited"] * 3
    assert world.account("@transit:EUR:0").pending_credits_minor > 2**64
    step_2 = world.apply(of_type(step_1.outputs, CreditLeg), partition=1)
    assert world.account("@transit:EUR:1").posted_debits_minor > 2**64
    step_3 = world.apply(of_type(step_2.outputs, Confirmation), partition=0)
    assert [e.type for e in events(step_3)] == ["Completed"] * 3
    assert world.account("@transit:EUR:0").posted_credits_minor == 3 * AMOUNT_MAX_MINOR
    assert world.account("dst").balance_minor == 3 * AMOUNT_MAX_MINOR
    assert world.account("src").balance_minor == -3 * AMOUNT_MAX_MINOR
    assert transit_sum(world) == 0


def test_a_reference_travels_with_every_step_of_a_transfer() -> None:
    """Debited, every leg, Completed and Reversed carry the transfer's reference."""
    world = Cluster.of([SOURCE, DESTINATION])
    completed = dataclasses.replace(transfer(1), reference="invoice 42")
    refused = dataclasses.replace(transfer(2, destination="nobody"), reference="invoice 43")
    world.saga(completed)
    world.saga(refused)
    answers = [(e.payment_id, e.type, e.reference) for e in world.events()]
    assert answers == [
        (cid(1), "Debited", "invoice 42"),
        (cid(1), "Completed", "invoice 42"),
        (cid(2), "Debited", "invoice 43"),
        (cid(2), "Reversed", "invoice 43"),
    ]
    legs = [o for o in world.outputs if isinstance(o, CreditLeg | Confirmation | Compensation)]
    assert [leg.reference for leg in legs] == ["invoice 42"] * 2 + ["invoice 43"] * 2
