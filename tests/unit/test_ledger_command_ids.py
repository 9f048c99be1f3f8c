"""Command ids: minted per partition with a time, valid inside the log-time window, claimed
by their first use; a second use is answered, never applied (findings 1, 2 and 4).

Replaces the old redelivery tests: under exactly-once a repeated command id only comes
from a client resend, and it gets a ``Duplicate`` (same request) or ``command_id_reused``.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from paystream.ledger import (
    Command,
    CreditLeg,
    Delivery,
    Event,
    InvariantViolation,
    JournalEntry,
    Rules,
    body_sha256,
    command_id_parts,
    command_key,
    is_own_event,
    mint_command_id,
    process_batch,
)
from paystream.ledger.ids import COMMAND_ID_PATTERN, ULID_RANDOM_BYTES
from tests.support.ledger import (
    OTHER_PARTNER,
    PARTNER,
    RULES,
    T0_MS,
    Cluster,
    cid,
    deposit,
    entries,
    events,
    make_account,
    of_type,
    open_account,
    run,
    the_event,
    transfer,
    withdrawal,
)

RETENTION_MS = RULES.retention_ms
SKEW_MS = RULES.future_skew_ms
SOURCE = make_account("src", credits_minor=1_000)
DESTINATION = make_account("dst")


def cluster() -> Cluster:
    return Cluster.of([SOURCE, DESTINATION, make_account("acc-1", credits_minor=1_000)])


# --- the id format (ids.py) ---------------------------------------------------------------------


def test_a_minted_id_is_a_ulid_and_the_partition() -> None:
    command_id = mint_command_id(partition=3, at_ms=T0_MS, random_bytes=bytes(10))
    ulid, partition = command_id.split("-")
    assert (len(ulid), partition) == (26, "3")
    assert COMMAND_ID_PATTERN.match(command_id)
    assert command_id_parts(command_id) == (3, T0_MS)


def test_ids_sort_by_minting_time() -> None:
    earlier = mint_command_id(partition=0, at_ms=T0_MS, random_bytes=b"\xff" * 10)
    later = mint_command_id(partition=0, at_ms=T0_MS + 1, random_bytes=bytes(10))
    assert earlier < later


def test_the_test_builder_mints_the_same_id_for_the_same_inputs() -> None:
    assert cid(1) == cid(1)
    assert len({cid(1), cid(2), cid(1, partition=1), cid(1, at_ms=T0_MS + 1)}) == 4
    assert command_id_parts(cid(7, partition=5, at_ms=T0_MS + 9)) == (5, T0_MS + 9)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "c1",
        cid(1).split("-")[0],  # no partition
        cid(1).replace("-0", "-00"),  # leading zero
        cid(1).replace("-0", "--1"),
        cid(1).lower(),
        "8" + cid(1)[1:],  # beyond the 48-bit time
        "I" + cid(1)[1:],  # not Crockford base32
        cid(1) + " ",
        " " + cid(1),
        cid(1).replace("-0", "-12345678901"),  # more partition digits than int32 needs
    ],
)
def test_malformed_ids_have_no_parts(text: str) -> None:
    assert command_id_parts(text) is None


def test_minting_refuses_bad_arguments() -> None:
    with pytest.raises(InvariantViolation, match="random"):
        mint_command_id(partition=0, at_ms=T0_MS, random_bytes=bytes(ULID_RANDOM_BYTES - 1))
    with pytest.raises(InvariantViolation, match="time"):
        mint_command_id(partition=0, at_ms=2**48, random_bytes=bytes(ULID_RANDOM_BYTES))
    with pytest.raises(InvariantViolation, match="partition"):
        mint_command_id(partition=-1, at_ms=T0_MS, random_bytes=bytes(ULID_RANDOM_BYTES))


# --- finding 1: the same command id and body again -------------------------------------------


def test_finding_1_same_command_id_same_body_is_one_duplicate_pointing_at_the_original() -> None:
    """Finding 1: a Transfer published twice with one command id re-emitted its journals.
    Now the second copy gets exactly one ``Duplicate`` pointing at the original, and no
    journal entry, no leg, no second ``Debited``; no money moves and nothing is recorded."""
    world = cluster()
    command = transfer(1, amount_minor=400)
    world.apply([command])
    before = dict(world.accounts)
    again = world.apply([dataclasses.replace(command, issued_at_ms=T0_MS + 99)])
    assert again.outputs == (
        Event(
            event_id=f"{command.command_id}:duplicate:0.1",
            payment_id=command.command_id,
            type="Duplicate",
            command_type="Transfer",
            partner_id=PARTNER,
            account_id="src",
            issued_at_ms=T0_MS + 99,
            counterparty_account_id="dst",
            amount_minor=400,
            currency="EUR",
            original_payment_id=command.command_id,
        ),
    )
    assert (again.accounts, again.idempotency) == ({}, {})
    assert world.accounts == before
    assert world.account("src").pending_debits_minor == 400


def test_finding_1_in_one_batch_too_the_copy_emits_no_journal_and_no_leg() -> None:
    """Finding 1, within one batch: one ``:debit`` entry, one CreditLeg, one Debited."""
    command = transfer(1, amount_minor=400)
    result = run([command, command, command], accounts=[SOURCE, DESTINATION])
    assert len(entries(result)) == len(of_type(result.outputs, CreditLeg)) == 1
    assert [e.type for e in events(result)] == ["Debited", "Duplicate", "Duplicate"]
    assert result.accounts["src"].pending_debits_minor == 400


def test_each_copy_of_a_duplicate_has_its_own_event_id() -> None:
    command = deposit(1, "acc-1")
    result = run([command, command, command], accounts=[make_account("acc-1")], first_offset=7)
    assert [e.event_id for e in events(result)] == [
        f"{command.command_id}:completed",
        f"{command.command_id}:duplicate:0.8",
        f"{command.command_id}:duplicate:0.9",
    ]


def test_a_duplicate_of_a_rejected_command_carries_its_code() -> None:
    command = withdrawal(1, "acc-1", 5_000)
    result = run([command, command], accounts=[make_account("acc-1")])
    assert [(e.type, e.code) for e in events(result)] == [
        ("Rejected", "insufficient_funds"),
        ("Duplicate", "insufficient_funds"),
    ]


def test_a_claim_made_by_a_request_duplicate_points_at_the_first_payment() -> None:
    """cid2 repeated r1 (Duplicate of cid1); cid2 sent again still points at cid1."""
    first = deposit(1, "acc-1")
    second = dataclasses.replace(first, command_id=cid(2))
    result = run([first, second, second], accounts=[make_account("acc-1")])
    last = events(result)[-1]
    assert (last.event_id, last.type, last.original_payment_id) == (
        f"{cid(2)}:duplicate:0.2",
        "Duplicate",
        first.command_id,
    )
    assert result.accounts["acc-1"].balance_minor == 100


# --- finding 2: the same command id for something else -------------------------------------------


OTHER_USES = {
    "other request id": {"request_id": "r2"},
    "other amount": {"amount_minor": 401},
    "other destination": {"destination_account_id": "acc-1"},
    "other partner": {"partner_id": OTHER_PARTNER},
}


@pytest.mark.parametrize("changes", OTHER_USES.values(), ids=OTHER_USES.keys())
def test_finding_2_same_command_id_other_request_or_body_is_command_id_reused(
    changes: dict[str, object],
) -> None:
    """Finding 2: two Transfers with one command id and request ids r1, r2 debited the
    source twice. The second use is ``Rejected`` ``command_id_reused`` (answered in the
    offset form, as it holds no claim) and nothing moves."""
    world = cluster()
    command = transfer(1, amount_minor=400)
    world.apply([command])
    before = dict(world.accounts)
    reuse = world.apply([dataclasses.replace(command, **changes)])  # type: ignore[arg-type]
    event = the_event(reuse)
    assert (event.event_id, event.type, event.code) == (
        f"{command.command_id}:rejected:0.1",
        "Rejected",
        "command_id_reused",
    )
    assert (reuse.accounts, reuse.idempotency) == ({}, {})
    assert world.accounts == before


@pytest.mark.parametrize(
    "reuse",
    [
        deposit(1, "acc-1", 400, request_id="r1"),
        withdrawal(1, "src", 400, request_id="r1"),
        open_account(1, "acc-new", request_id="r1"),
    ],
    ids=["deposit", "withdrawal", "open account"],
)
def test_finding_2_same_command_id_for_another_command_type_is_command_id_reused(
    reuse: Command,
) -> None:
    """Finding 2: the command id names one payment whatever the command type."""
    world = cluster()
    world.apply([transfer(1, amount_minor=400)])
    result = world.apply([reuse])
    assert the_event(result).code == "command_id_reused"
    assert (result.accounts, result.idempotency) == ({}, {})


def test_finding_2_an_id_minted_for_another_partition_is_command_id_invalid() -> None:
    """Finding 2: an id minted for partition 1 is refused on partition 0 (and the other way
    round), so one id can only ever be claimed on one partition; nothing moves."""
    foreign = transfer(1, amount_minor=400, partition=1)
    result = run([foreign], accounts=[SOURCE, DESTINATION], partition=0, first_offset=4)
    event = the_event(result)
    assert (event.event_id, event.type, event.code) == (
        f"{foreign.command_id}:rejected:0.4",
        "Rejected",
        "command_id_invalid",
    )
    assert (result.accounts, result.idempotency) == ({}, {})


def test_finding_2_a_claimed_id_replayed_on_another_partition_is_command_id_invalid() -> None:
    world = cluster()
    command = transfer(1, amount_minor=400, partition=0)
    world.apply([command], partition=0)
    elsewhere = world.apply([command], partition=1)
    assert the_event(elsewhere).code == "command_id_invalid"
    assert (elsewhere.accounts, elsewhere.idempotency) == ({}, {})


@pytest.mark.parametrize("command_id", ["", "c1", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "x" * 200])
def test_an_unreadable_command_id_is_command_id_invalid_and_not_recorded(command_id: str) -> None:
    command = dataclasses.replace(deposit(1, "acc-1"), command_id=command_id)
    result = run([command], accounts=[make_account("acc-1")], first_offset=3)
    event = the_event(result)
    assert (event.event_id, event.code) == (f"{command_id}:rejected:0.3", "command_id_invalid")
    assert (result.accounts, result.idempotency) == ({}, {})


def test_every_journal_id_stays_unique_under_reused_ids() -> None:
    world = cluster()
    command = transfer(1, amount_minor=10)
    for changes in ({}, {"request_id": "r2"}, {"amount_minor": 11}, {}):
        world.saga(dataclasses.replace(command, **changes))
    ids = [e.entry_id for e in of_type(world.outputs, JournalEntry)]
    assert len(ids) == len(set(ids)) == 3
    assert world.account("dst").balance_minor == 10


# --- finding 4: the window in log time ---------------------------------------------------------


def deliver_at(command: Command, log_time_ms: int, *, clock_ms: int = 0) -> Event:
    """The answer to ``command`` delivered at ``log_time_ms`` on a partition at ``clock_ms``."""
    accounts = [make_account("acc-1")]
    result = run([command], accounts=accounts, log_time_ms=log_time_ms, clock_ms=clock_ms)
    return events(result)[-1]


def test_finding_4_an_id_is_valid_until_just_before_minted_at_plus_retention() -> None:
    """Finding 4 (command id window, too old, valid side): ``minted_at + retention - 1``."""
    command = deposit(1, "acc-1", at_ms=T0_MS)
    assert deliver_at(command, T0_MS + RETENTION_MS - 1).type == "Completed"


def test_finding_4_an_id_is_invalid_at_exactly_minted_at_plus_retention() -> None:
    """Finding 4 (command id window, too old): ``minted_at + retention <= clock`` is
    ``command_id_invalid``."""
    command = deposit(1, "acc-1", at_ms=T0_MS)
    assert deliver_at(command, T0_MS + RETENTION_MS).code == "command_id_invalid"


def test_finding_4_an_id_may_be_minted_up_to_the_future_skew_ahead() -> None:
    """Finding 4 (command id window, too new, valid side): ``minted_at == clock + skew``."""
    command = deposit(1, "acc-1", at_ms=T0_MS + SKEW_MS)
    assert deliver_at(command, T0_MS).type == "Completed"


def test_finding_4_an_id_minted_further_ahead_than_the_skew_is_invalid() -> None:
    """Finding 4 (command id window, too new): ``minted_at > clock + skew``."""
    command = deposit(1, "acc-1", at_ms=T0_MS + SKEW_MS + 1)
    assert deliver_at(command, T0_MS).code == "command_id_invalid"


def test_the_window_follows_the_rules() -> None:
    rules = Rules(retention_ms=1_000, future_skew_ms=10)
    old, new = deposit(1, "acc-1", at_ms=T0_MS - 1_000), deposit(2, "acc-1", at_ms=T0_MS + 11)
    result = run([old, new], accounts=[make_account("acc-1")], rules=rules)
    assert [e.code for e in events(result)] == ["command_id_invalid", "command_id_invalid"]


def test_finding_4_an_expired_claim_never_makes_the_id_usable_again() -> None:
    """Finding 4: a claim lives exactly as long as its id is valid. Just before
    ``minted_at + retention`` a second use is still answered from the claim; at that time
    the window itself refuses the id, so forgetting the claim reopens nothing (the journal
    id ``<id>:deposit`` can never be written twice)."""
    world = cluster()
    command = deposit(1, "acc-1", 10, at_ms=T0_MS)
    world.apply([command], log_time_ms=T0_MS)
    claim = world.records[0][command_key(command.command_id)]
    assert claim.expires_at_ms == T0_MS + RETENTION_MS
    other_body = dataclasses.replace(command, request_id="r-other")
    last_live_ms = claim.expires_at_ms - 1
    assert [e.type for e in events(world.apply([command], log_time_ms=last_live_ms))] == [
        "Duplicate"
    ]
    assert the_event(world.apply([other_body], log_time_ms=last_live_ms)).code == (
        "command_id_reused"
    )
    for item in (command, other_body):
        late = world.apply([item], log_time_ms=claim.expires_at_ms)
        assert the_event(late).code == "command_id_invalid"
        assert (late.accounts, late.idempotency) == ({}, {})
    assert world.account("acc-1").balance_minor == 1_010
    deposits = [e.entry_id for e in world.entries()]
    assert deposits == [f"{command.command_id}:deposit"]


def test_the_window_is_judged_against_the_partition_clock_not_the_records_own_time() -> None:
    """The log clock never goes back: a record with an older log time is judged at the
    latest time the partition has seen (replay sees the same clock)."""
    command = deposit(1, "acc-1", at_ms=T0_MS)
    late_ms = T0_MS + RETENTION_MS
    assert deliver_at(command, T0_MS, clock_ms=late_ms).code == "command_id_invalid"
    result = process_batch(
        [
            Delivery(item=deposit(2, "acc-1", at_ms=late_ms), offset=0, log_time_ms=late_ms),
            Delivery(item=command, offset=1, log_time_ms=T0_MS),
        ],
        partition=0,
        accounts={"acc-1": make_account("acc-1")},
        idempotency={},
        directory={},
        clock_ms=0,
        rules=RULES,
    )
    assert [e.code for e in events(result)] == [None, "command_id_invalid"]
    assert result.clock_ms == late_ms


def test_a_too_new_id_is_refused_without_a_claim_and_applies_once_the_clock_catches_up() -> None:
    world = cluster()
    command = deposit(1, "acc-1", 10, at_ms=T0_MS + SKEW_MS + 1)
    early = world.apply([command], log_time_ms=T0_MS)
    assert (the_event(early).code, early.idempotency) == ("command_id_invalid", {})
    later = world.apply([command], log_time_ms=T0_MS + 1)
    assert events(later)[-1].type == "Completed"
    assert later.idempotency[command_key(command.command_id)].body_sha256 == body_sha256(command)


def test_own_events_and_answers_to_repeats_are_told_apart() -> None:
    """The payment's own events are ``<id>:<step>``; answers to records that could not claim
    the id carry their log position and never speak for the payment."""
    first = transfer(1, "src", "dst", 400)
    result = run([first, first], accounts=[make_account("src", credits_minor=1_000)])
    own, repeat = events(result)
    assert (own.type, repeat.type) == ("Debited", "Duplicate")
    assert is_own_event(own) and not is_own_event(repeat)


@given(
    at_ms=st.integers(min_value=0, max_value=2**48 - 1),
    partition=st.integers(min_value=0, max_value=10**9),
    random_bytes=st.binary(min_size=10, max_size=10),
)
def test_the_time_read_from_an_id_is_the_ulids_time(
    at_ms: int, partition: int, random_bytes: bytes
) -> None:
    """command_id_parts reads the ULID's time itself (for speed): python-ulid agrees."""
    command_id = mint_command_id(partition=partition, at_ms=at_ms, random_bytes=random_bytes)
    ulid_text = command_id.rsplit("-", 1)[0]
    assert command_id_parts(command_id) == (partition, ULID.from_str(ulid_text).milliseconds)
    assert ULID.from_str(ulid_text).milliseconds == at_ms
