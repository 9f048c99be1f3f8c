"""Malformed: commands the shell refused (DLQ) whose ids could still be read (finding 9).

Each is answered ``Rejected`` with the DLQ reason as its code; a valid, free command id
is claimed by that answer (not on a wrong partition, whose ids belong elsewhere); the
request id is never recorded.
"""

from __future__ import annotations

import pytest

from paystream.ledger import (
    Event,
    IdempotencyRecord,
    RejectionCode,
    body_sha256,
    command_key,
)
from tests.support.ledger import (
    PARTNER,
    RULES,
    T0_MS,
    Cluster,
    cid,
    deposit,
    events,
    make_account,
    malformed,
    run,
    the_event,
)


@pytest.mark.parametrize(
    ("code", "command_type"),
    [("invalid_field", "Deposit"), ("unknown_command", "Refund")],
)
def test_finding_9_malformed_with_a_valid_free_id_is_rejected_with_its_code_and_claims_it(
    code: RejectionCode, command_type: str
) -> None:
    """Finding 9: a command that went to the DLQ got no event. Now its sender hears
    ``Rejected`` with the DLQ reason, under the canonical event id, and the id is claimed
    (so a later command under it is ``command_id_reused``); no request id is recorded."""
    item = malformed(cid(1), code, command_type=command_type)
    result = run([item])
    assert result.outputs == (
        Event(
            event_id=f"{cid(1)}:rejected",
            payment_id=cid(1),
            type="Rejected",
            command_type=command_type,
            partner_id=PARTNER,
            account_id="acc-1",
            issued_at_ms=T0_MS,
            code=code,
        ),
    )
    assert result.idempotency == {
        command_key(cid(1)): IdempotencyRecord(
            command_id=cid(1),
            body_sha256=body_sha256(item),
            code=code,
            expires_at_ms=T0_MS + RULES.retention_ms,
        )
    }
    assert result.accounts == {}


def test_finding_9_an_id_claimed_by_a_malformed_command_cannot_move_money_later() -> None:
    """Finding 9: the rejection holds the payment id: a valid command under it is refused."""
    world = Cluster.of([make_account("acc-1")])
    world.apply([malformed(cid(1), "invalid_field")])
    later = world.apply([deposit(1, "acc-1")])
    assert the_event(later).code == "command_id_reused"
    assert (later.accounts, later.idempotency) == ({}, {})


def test_finding_9_wrong_partition_never_claims_the_id() -> None:
    """Finding 9: a record on the wrong partition is answered (offset form) but claims
    nothing: its id belongs to the partition it should have gone to."""
    world = Cluster.of([make_account("acc-1")])
    answer = world.apply([malformed(cid(1), "wrong_partition")])
    event = the_event(answer)
    assert (event.event_id, event.type, event.code) == (
        f"{cid(1)}:rejected:0.0",
        "Rejected",
        "wrong_partition",
    )
    assert answer.idempotency == {}
    proper = world.apply([deposit(1, "acc-1")])
    assert events(proper)[-1].type == "Completed"


@pytest.mark.parametrize(
    "command_id",
    ["not-an-id", "", cid(1, partition=4), cid(1, at_ms=T0_MS - RULES.retention_ms)],
    ids=["unreadable", "empty", "other partition", "expired"],
)
def test_finding_9_malformed_with_an_invalid_id_is_answered_in_the_offset_form(
    command_id: str,
) -> None:
    """Finding 9: an id that cannot be claimed still gets its answer, made unique by the
    record's partition and offset; nothing is recorded."""
    result = run([malformed(command_id, "invalid_field")], first_offset=12)
    event = the_event(result)
    assert (event.event_id, event.payment_id, event.code) == (
        f"{command_id}:rejected:0.12",
        command_id,
        "invalid_field",
    )
    assert result.idempotency == {}


def test_malformed_on_a_claimed_id_is_answered_in_the_offset_form_and_keeps_the_claim() -> None:
    world = Cluster.of([make_account("acc-1")])
    applied = deposit(1, "acc-1")
    world.apply([applied])
    answer = world.apply([malformed(applied.command_id, "invalid_field")])
    assert the_event(answer).event_id == f"{applied.command_id}:rejected:0.1"
    assert answer.idempotency == {}
    again = world.apply([applied])
    assert (the_event(again).type, the_event(again).code) == ("Duplicate", None)


def test_a_malformed_command_does_not_record_its_request_id() -> None:
    """Stripe saves no result for a request that failed validation: the fixed request
    under the same request id (and a new command id) applies."""
    world = Cluster.of([make_account("acc-1")])
    world.apply([malformed(cid(1), "invalid_field", request_id="r7")])
    fixed = world.apply([deposit(2, "acc-1", request_id="r7")])
    assert events(fixed)[-1].type == "Completed"


def test_the_same_malformed_record_twice_gets_two_answers_with_distinct_ids() -> None:
    item = malformed(cid(1), "invalid_field")
    result = run([item, item])
    assert [e.event_id for e in events(result)] == [f"{cid(1)}:rejected", f"{cid(1)}:rejected:0.1"]
    assert {e.code for e in events(result)} == {"invalid_field"}
