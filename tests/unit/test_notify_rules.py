"""Which events become which emails (paystream.notify.rules), over events the real core made."""

from __future__ import annotations

import dataclasses

import pytest

from paystream.ledger import Event, SendPayout, SettlePayout
from paystream.notify import rules
from paystream.notify.ingest import outbox_rows
from paystream.notify.outbox import NOTIFICATION_ID_LENGTH_MAX
from paystream.notify.rules import Wanted
from tests.support.ledger import (
    Cluster,
    deposit,
    fail_payout,
    make_account,
    open_account,
    rail,
    request_payout,
    transfer,
    withdrawal,
)


def transfer_events() -> list[Event]:
    """A completed transfer src -> dst (with a reference) and one reversed (no such payee);
    the events of the transfers only (not of the accounts' opening and funding)."""
    cluster = Cluster()
    cluster.apply([open_account(1, "src"), deposit(2, "src", 1_000)], partition=0)
    cluster.apply([open_account(3, "dst", partition=1)], partition=1)
    done = dataclasses.replace(transfer(4, "src", "dst", 250), reference="invoice 42")
    cluster.saga(done)
    cluster.saga(transfer(5, "src", "nobody", 100))
    return [e for e in cluster.events() if e.command_type == "Transfer"]


def payout_events() -> tuple[list[Event], dict[str, str]]:
    """A payout settled, one failed by the bank, one refused for funds (nothing reserved)."""
    cluster = Cluster.of([make_account("src", credits_minor=2_000)])
    settled, failed = request_payout(1, amount_minor=100), request_payout(2, amount_minor=200)
    refused = request_payout(3, amount_minor=50_000)
    cluster.apply([settled, failed, refused])
    cluster.apply([rail(SendPayout, 4, settled), rail(SendPayout, 5, failed)])
    cluster.apply([rail(SettlePayout, 6, settled), fail_payout(7, failed)])
    ids = {"settled": settled.command_id, "failed": failed.command_id,
           "refused": refused.command_id}  # fmt: skip
    return cluster.events(), ids


def emails(events: list[Event]) -> list[Wanted]:
    return [w for e in events for w in rules.wanted(e)]


def test_a_completed_transfer_emails_the_payer_and_the_payee_and_nothing_else_does() -> None:
    events = transfer_events()
    assert {e.type for e in events} == {"Completed", "Debited", "Reversed"}
    found = emails(events)
    [completed] = [e for e in events if e.type == "Completed" and e.command_type == "Transfer"]
    assert [(w.template, w.account_id, w.notification_id) for w in found] == [
        ("transfer_sent", "src", f"{completed.event_id}/payer"),
        ("transfer_received", "dst", f"{completed.event_id}/payee"),
    ]
    context = found[0].context
    assert context["amount_minor"] == 250 and type(context["amount_minor"]) is int
    assert context["currency"] == "EUR" and context["reference"] == "invoice 42"
    assert context["payment_id"] == completed.payment_id
    assert context["counterparty_account_id"] == "dst"


def test_deposits_and_withdrawals_email_their_holder_account_openings_do_not() -> None:
    cluster = Cluster()
    cluster.apply([open_account(1, "acc"), deposit(2, "acc", 700), withdrawal(3, "acc", 200)])
    found = emails(cluster.events())
    assert [(w.template, w.account_id, w.context["amount_minor"]) for w in found] == [
        ("deposit_completed", "acc", 700),
        ("withdrawal_completed", "acc", 200),
    ]
    assert all(w.notification_id.endswith("/holder") for w in found)


def test_payouts_email_their_holder_when_settled_or_failed_after_acceptance() -> None:
    events, ids = payout_events()
    found = emails(events)
    assert [(w.template, w.context["payment_id"]) for w in found] == [
        ("payout_settled", ids["settled"]),
        ("payout_failed", ids["failed"]),
    ]
    settled, failed = found
    assert settled.account_id == failed.account_id == "src"
    assert settled.context["beneficiary_name"] == "Ada Lovelace"
    assert settled.context["batch_id"] == "batch-1"
    assert failed.context["code"] and failed.context["amount_minor"] == 200
    refusals = [e for e in events if e.payment_id == ids["refused"]]
    assert [e.type for e in refusals] == ["Failed"] and not emails(refusals)


def test_an_answer_to_a_repeated_record_emails_nobody() -> None:
    """A Duplicate, or any event that is not its payment's own (``<id>:<step>:<p>.<o>``)."""
    [completed] = [e for e in transfer_events() if e.type == "Completed"]
    repeat = dataclasses.replace(completed, event_id=f"{completed.event_id}:0.17")
    duplicate = dataclasses.replace(completed, type="Duplicate")
    assert rules.wanted(repeat) == [] and rules.wanted(duplicate) == []


def test_the_same_event_twice_wants_the_same_ids_and_the_outbox_keeps_one_each() -> None:
    events = transfer_events()
    once, twice = emails(events), emails(events + events)
    assert [w.notification_id for w in twice] == [w.notification_id for w in once] * 2
    rows = outbox_rows(twice, {"src": "payer@example.com", "dst": "payee@example.com"})
    assert [(row[0], row[2]) for row in rows] == [
        (once[0].notification_id, "payer@example.com"),
        (once[1].notification_id, "payee@example.com"),
    ]


def test_only_accounts_with_a_contact_get_a_row() -> None:
    found = emails(transfer_events())
    rows = outbox_rows(found, {"dst": "payee@example.com"})
    assert [(row[1], row[2]) for row in rows] == [("transfer_received", "payee@example.com")]
    assert outbox_rows(found, {}) == []


@pytest.mark.parametrize("length", [10, NOTIFICATION_ID_LENGTH_MAX - 6, 500])
def test_a_notification_id_always_fits_its_column_and_stays_deterministic(length: int) -> None:
    event_id = "e" * length
    first = rules.notification_id(event_id, "payee")
    assert (
        first
        == rules.notification_id(event_id, "payee")
        != rules.notification_id(event_id, "payer")
    )
    assert len(first) <= NOTIFICATION_ID_LENGTH_MAX and first.endswith("/payee")
    assert (first == f"{event_id}/payee") == (length + 6 <= NOTIFICATION_ID_LENGTH_MAX)
