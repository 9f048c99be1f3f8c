"""idempotency: the canonical body hash, the three key spaces, and the records the core keeps.

Request ids are a partner's idempotency keys, ``("request", partner, request id)``,
forgotten ``Rules.retention_ms`` of log time after their first use (finding 4).
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from paystream.ledger import (
    Event,
    FreezeAccount,
    IdempotencyRecord,
    InvariantViolation,
    OpenAccount,
    Rules,
    Transfer,
    UnfreezeAccount,
    body_sha256,
    command_key,
    leg_key,
    request_key,
)
from tests.support.ledger import (
    OTHER_PARTNER,
    PARTNER,
    T0_MS,
    Cluster,
    cid,
    compensation_of,
    confirmation_of,
    credit_leg,
    deposit,
    events,
    make_account,
    malformed,
    run,
    status_command,
    the_event,
    withdrawal,
)

TRANSFER = Transfer(
    command_id="cmd-1",
    request_id="req-1",
    partner_id="p1",
    issued_at_ms=1_700_000_000_000,
    account_id="acc-1",
    destination_account_id="acc-2",
    amount_minor=12345,
    currency="EUR",
)

# --- the body hash (encoding version 1, unchanged) ----------------------------------------------


def test_body_hash_is_pinned_for_encoding_version_1() -> None:
    """Changing this value changes every stored record: bump BODY_ENCODING_VERSION instead.
    ``TRANSFER`` has no reference: a field added since version 1 is not encoded while None."""
    expected = "8017bf292802a72ff0db51b7f159783b74c343cb041da65a02691bd66fae74f1"
    assert body_sha256(TRANSFER) == expected


def test_a_reference_is_part_of_the_body() -> None:
    with_reference = dataclasses.replace(TRANSFER, reference="invoice 42")
    text = (
        "paystream.body/1\ns8:Transfer"
        "s10:account_ids5:acc-1s12:amount_minori12345;s8:currencys3:EUR"
        "s22:destination_account_ids5:acc-2s10:partner_ids2:p1"
        "s9:references10:invoice 42s10:request_ids5:req-1"
    )
    assert body_sha256(with_reference) == hashlib.sha256(text.encode()).hexdigest()
    assert body_sha256(with_reference) != body_sha256(TRANSFER)
    assert body_sha256(with_reference) != body_sha256(
        dataclasses.replace(TRANSFER, reference="invoice 43")
    )


def test_the_same_request_with_another_reference_is_duplicate_conflict() -> None:
    first = dataclasses.replace(DEPOSIT, reference="march rent")
    retry = dataclasses.replace(first, command_id=cid(2))
    changed = dataclasses.replace(first, command_id=cid(3), reference="april rent")
    result = run([first, retry, changed], accounts=[ACCOUNT])
    answers = [(e.type, e.code, e.reference) for e in events(result)]
    assert answers == [
        ("Completed", None, "march rent"),
        ("Duplicate", None, "march rent"),
        ("Rejected", "duplicate_conflict", "april rent"),
    ]


def test_body_hash_follows_the_documented_encoding() -> None:
    text = (
        "paystream.body/1\n"
        "s8:Transfer"
        "s10:account_id" "s5:acc-1"
        "s12:amount_minor" "i12345;"
        "s8:currency" "s3:EUR"
        "s22:destination_account_id" "s5:acc-2"
        "s10:partner_id" "s2:p1"
        "s10:request_id" "s5:req-1"
    )  # fmt: skip
    assert body_sha256(TRANSFER) == hashlib.sha256(text.encode()).hexdigest()


def test_body_hash_counts_code_points_and_encodes_utf8() -> None:
    command = OpenAccount("c", "r", "p1", 1, "acc-é", "EUR", True)
    text = (
        "paystream.body/1\ns11:OpenAccount"
        "s10:account_id" "s5:acc-é"
        "s15:allow_overdraft" "t"
        "s8:currency" "s3:EUR"
        "s10:partner_id" "s2:p1"
        "s10:request_id" "s1:r"
    )  # fmt: skip
    assert body_sha256(command) == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_body_hash_ignores_command_id_and_issue_time() -> None:
    again = dataclasses.replace(TRANSFER, command_id="cmd-9", issued_at_ms=42)
    assert body_sha256(again) == body_sha256(TRANSFER)


def test_body_hash_includes_the_request_id_and_the_partner() -> None:
    assert body_sha256(dataclasses.replace(TRANSFER, request_id="req-2")) != body_sha256(TRANSFER)
    assert body_sha256(dataclasses.replace(TRANSFER, partner_id="p2")) != body_sha256(TRANSFER)


def test_body_hash_includes_the_command_type() -> None:
    assert body_sha256(deposit(1)) != body_sha256(withdrawal(1))


def test_body_hash_tells_booleans_apart() -> None:
    allowed = OpenAccount("c", "r", "p1", 0, "acc", "EUR", True)
    refused = dataclasses.replace(allowed, allow_overdraft=False)
    assert body_sha256(allowed) != body_sha256(refused)


def test_body_hash_covers_malformed_inputs_and_legs() -> None:
    leg = credit_leg("t1")
    hashes = {
        body_sha256(leg),
        body_sha256(confirmation_of(leg)),
        body_sha256(compensation_of(leg)),
        body_sha256(malformed("c", "invalid_field")),
        body_sha256(malformed("c", "unknown_command")),
    }
    assert len(hashes) == 5


def test_body_hash_refuses_a_value_outside_the_encoding() -> None:
    with pytest.raises(InvariantViolation, match="unsupported"):
        body_sha256(dataclasses.replace(deposit(1), amount_minor=1.5))  # type: ignore[arg-type]


def test_body_hash_refuses_a_non_input() -> None:
    with pytest.raises(InvariantViolation, match="not an input"):
        body_sha256("Deposit")  # type: ignore[arg-type]


# --- keys ------------------------------------------------------------------------------------


def test_request_key_is_partner_and_request_id() -> None:
    assert request_key("p1", "req-1") == ("request", "p1", "req-1")


def test_command_key_is_the_command_id_alone() -> None:
    assert command_key("cmd-1") == ("command", "", "cmd-1")


def test_leg_keys_name_the_step_and_the_transfer() -> None:
    """A transfer is credited once and settled once: its Confirmation and its
    Compensation share one key, so at most one of them ever applies."""
    leg = credit_leg("t1")
    assert leg_key(leg) == ("credit", "", "t1")
    assert leg_key(confirmation_of(leg)) == ("settlement", "", "t1")
    assert leg_key(compensation_of(leg)) == ("settlement", "", "t1")
    assert leg_key(compensation_of(leg, "account_frozen", request_id="r9")) == (
        "settlement",
        "",
        "t1",
    )


# --- records the core keeps ------------------------------------------------------------------

ACCOUNT = make_account("acc-1", credits_minor=100)
DEPOSIT = deposit(1, amount_minor=50)
RETENTION_MS = Rules().retention_ms


def test_an_applied_command_records_its_request_and_claims_its_command_id() -> None:
    result = run([DEPOSIT], accounts=[ACCOUNT])
    record = IdempotencyRecord(
        command_id=DEPOSIT.command_id,
        body_sha256=body_sha256(DEPOSIT),
        code=None,
        expires_at_ms=T0_MS + RETENTION_MS,
    )
    assert result.idempotency == {
        request_key(PARTNER, "r1"): record,
        command_key(DEPOSIT.command_id): record,
    }


def test_the_request_expires_from_its_log_time_and_the_claim_from_its_minting_time() -> None:
    minted_ms = T0_MS - 60_000
    command = deposit(1, at_ms=minted_ms)
    result = run([command], accounts=[ACCOUNT], log_time_ms=T0_MS)
    assert result.idempotency[request_key(PARTNER, "r1")].expires_at_ms == T0_MS + RETENTION_MS
    assert result.idempotency[command_key(command.command_id)].expires_at_ms == (
        minted_ms + RETENTION_MS
    )


def test_the_retention_window_is_a_setting() -> None:
    result = run([DEPOSIT], accounts=[ACCOUNT], rules=Rules(retention_ms=1_000))
    assert {r.expires_at_ms for r in result.idempotency.values()} == {T0_MS + 1_000}


def test_a_rejected_command_is_recorded_with_its_code() -> None:
    result = run([withdrawal(1, amount_minor=500)], accounts=[ACCOUNT])
    assert {r.code for r in result.idempotency.values()} == {"insufficient_funds"}


def test_an_exact_duplicate_under_a_new_command_id_answers_duplicate_and_moves_nothing() -> None:
    cluster = Cluster.of([ACCOUNT])
    cluster.apply([DEPOSIT])
    again = dataclasses.replace(DEPOSIT, command_id=cid(2), issued_at_ms=T0_MS + 5)
    result = cluster.apply([again])
    assert result.accounts == {}
    assert the_event(result) == Event(
        event_id=f"{cid(2)}:duplicate",
        payment_id=cid(2),
        type="Duplicate",
        command_type="Deposit",
        partner_id=PARTNER,
        account_id="acc-1",
        issued_at_ms=T0_MS + 5,
        amount_minor=50,
        currency="EUR",
        original_payment_id=DEPOSIT.command_id,
    )
    assert result.idempotency == {
        command_key(cid(2)): IdempotencyRecord(
            command_id=DEPOSIT.command_id,
            body_sha256=body_sha256(DEPOSIT),
            code=None,
            expires_at_ms=T0_MS + RETENTION_MS,
        )
    }
    assert cluster.account("acc-1").balance_minor == 150


def test_a_duplicate_of_a_rejection_carries_the_original_code() -> None:
    first = withdrawal(1, amount_minor=500)
    result = run([first, dataclasses.replace(first, command_id=cid(2))], accounts=[ACCOUNT])
    event = events(result)[-1]
    assert (event.type, event.code, event.original_payment_id) == (
        "Duplicate",
        "insufficient_funds",
        first.command_id,
    )


def test_the_same_request_id_with_another_body_is_duplicate_conflict() -> None:
    conflict = dataclasses.replace(DEPOSIT, command_id=cid(2), amount_minor=51)
    result = run([DEPOSIT, conflict], accounts=[ACCOUNT])
    event = events(result)[-1]
    assert (event.event_id, event.type, event.code) == (
        f"{cid(2)}:rejected",
        "Rejected",
        "duplicate_conflict",
    )
    assert result.accounts["acc-1"].balance_minor == 150
    assert result.idempotency[request_key(PARTNER, "r1")].command_id == DEPOSIT.command_id
    assert result.idempotency[command_key(cid(2))].code == "duplicate_conflict"


def test_a_conflict_leaves_the_original_record_answering_duplicates() -> None:
    conflict = dataclasses.replace(DEPOSIT, command_id=cid(2), amount_minor=51)
    duplicate = dataclasses.replace(DEPOSIT, command_id=cid(3))
    result = run([DEPOSIT, conflict, duplicate], accounts=[ACCOUNT])
    assert events(result)[-1].original_payment_id == DEPOSIT.command_id
    assert result.accounts["acc-1"].balance_minor == 150


def test_another_command_type_under_the_same_request_id_is_a_conflict() -> None:
    freeze = status_command(FreezeAccount, 1, request_id="r1")
    unfreeze = status_command(UnfreezeAccount, 2, request_id="r1")
    result = run([freeze, unfreeze], accounts=[ACCOUNT])
    assert events(result)[-1].code == "duplicate_conflict"
    assert result.accounts["acc-1"].status == "frozen"


def test_finding_4_another_partners_rejected_request_does_not_touch_p1s_key() -> None:
    """Finding 4: keys are (partner, request id). P2 sends a command on P1's account with
    P1's request id ``req-42`` and gets ``account_not_found``; P1's real ``req-42`` then
    applies (it used to answer ``duplicate_conflict``)."""
    cluster = Cluster.of([make_account("acc-1")])
    hostile = deposit(1, "acc-1", 10, partner_id=OTHER_PARTNER, request_id="req-42")
    refused = cluster.apply([hostile])
    assert the_event(refused).code == "account_not_found"
    assert request_key(PARTNER, "req-42") not in refused.idempotency
    assert set(refused.idempotency) == {
        request_key(OTHER_PARTNER, "req-42"),
        command_key(hostile.command_id),
    }
    real = cluster.apply([deposit(2, "acc-1", 10, request_id="req-42")])
    assert events(real)[-1].type == "Completed"
    assert cluster.account("acc-1").balance_minor == 10


def test_two_partners_may_use_one_request_id_on_their_own_accounts() -> None:
    accounts = [make_account("a"), make_account("b", partner_id=OTHER_PARTNER)]
    first = deposit(1, "a", 10, request_id="same")
    second = deposit(2, "b", 10, partner_id=OTHER_PARTNER, request_id="same")
    result = run([first, second], accounts=accounts)
    assert [e.type for e in events(result)] == ["Completed", "Completed"]


def test_finding_4_a_request_key_is_live_until_just_before_it_expires() -> None:
    """Finding 4 (retention edge, live side): at log time ``expires_at - 1`` the key still
    answers a new command id with the same body as a Duplicate; nothing moves."""
    cluster = Cluster.of([make_account("acc-1")])
    cluster.apply([DEPOSIT], log_time_ms=T0_MS)
    edge_ms = T0_MS + RETENTION_MS - 1
    again = dataclasses.replace(DEPOSIT, command_id=cid(2, at_ms=edge_ms))
    result = cluster.apply([again], log_time_ms=edge_ms)
    event = the_event(result)
    assert (event.type, event.original_payment_id) == ("Duplicate", DEPOSIT.command_id)
    assert cluster.account("acc-1").balance_minor == 50


def test_finding_4_a_request_key_is_forgotten_at_exactly_its_expiry() -> None:
    """Finding 4 (retention edge, forgotten side): at log time ``expires_at`` the key is
    absent: the same request id with a new, valid command id is applied afresh."""
    cluster = Cluster.of([make_account("acc-1")])
    cluster.apply([DEPOSIT], log_time_ms=T0_MS)
    expiry_ms = cluster.records[0][request_key(PARTNER, "r1")].expires_at_ms
    assert expiry_ms == T0_MS + RETENTION_MS
    again = dataclasses.replace(DEPOSIT, command_id=cid(2, at_ms=expiry_ms), amount_minor=7)
    result = cluster.apply([again], log_time_ms=expiry_ms)
    assert events(result)[-1].type == "Completed"
    assert result.idempotency[request_key(PARTNER, "r1")].command_id == again.command_id
    assert cluster.account("acc-1").balance_minor == 57


def test_an_expired_record_in_the_given_state_counts_as_absent() -> None:
    """The worker deletes expired records later; until then the core ignores them."""
    stale = IdempotencyRecord(
        command_id="old", body_sha256="x", code="insufficient_funds", expires_at_ms=T0_MS
    )
    result = run([DEPOSIT], accounts=[ACCOUNT], idempotency={request_key(PARTNER, "r1"): stale})
    assert events(result)[-1].type == "Completed"


def test_a_live_record_in_the_given_state_answers() -> None:
    live = IdempotencyRecord(
        command_id="old", body_sha256=body_sha256(DEPOSIT), code=None, expires_at_ms=T0_MS + 1
    )
    result = run([DEPOSIT], accounts=[ACCOUNT], idempotency={request_key(PARTNER, "r1"): live})
    assert (the_event(result).type, the_event(result).original_payment_id) == ("Duplicate", "old")


def test_leg_records_use_their_own_key_spaces() -> None:
    leg = credit_leg(cid("t"), destination="acc-1")
    result = run([leg], accounts=[ACCOUNT])
    assert set(result.idempotency) == {("credit", "", cid("t"))}
    assert result.idempotency[("credit", "", cid("t"))].code is None
