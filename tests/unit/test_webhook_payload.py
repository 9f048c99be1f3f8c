"""Webhook payloads, types and signatures: which events partners hear about, the body each
carries, and headers a Standard Webhooks receiver accepts (the library's own verify)."""

from __future__ import annotations

import dataclasses
import datetime
import json

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from paystream.ledger import EVENT_TYPES, Event, InvariantViolation
from paystream.ledger.models import PayoutDetails
from paystream.partners.registry import new_webhook_secret
from paystream.webhooks.payload import (
    WEBHOOK_TYPES,
    body_text,
    delivery_id,
    iso_timestamp,
    payload,
    webhook_type,
)
from paystream.webhooks.receiver import verified_event
from paystream.webhooks.signing import signed_headers

AT_MS = 1_796_119_200_123
PAYOUT = PayoutDetails(
    batch_id="pb_1", beneficiary_name="Seller", beneficiary_country="DE",
    beneficiary_iban="DE89370400440532013000",
)  # fmt: skip


def event(type_: str, command_type: str = "Transfer", **fields: object) -> Event:
    base = Event(
        event_id=f"p1:{type_.lower()}", payment_id="p1", type=type_,  # type: ignore[arg-type]
        command_type=command_type, partner_id="demo-1", account_id="a1", issued_at_ms=AT_MS,
        amount_minor=1_250, currency="EUR",
    )  # fmt: skip
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("type_", "command_type", "expected"),
    [
        ("Completed", "Transfer", "payment.completed"),
        ("Completed", "Deposit", "payment.completed"),
        ("Completed", "Withdrawal", "payment.completed"),
        ("Reversed", "Transfer", "payment.reversed"),
        ("Rejected", "Transfer", "payment.rejected"),
        ("Debited", "Transfer", None),
        ("Duplicate", "Transfer", None),
        ("Held", "RequestPayout", "payout.held"),
        ("Queued", "RequestPayout", "payout.queued"),
        ("Sending", "RequestPayout", None),
        ("Settled", "RequestPayout", "payout.settled"),
        ("Failed", "RequestPayout", "payout.failed"),
        ("Rejected", "RequestPayout", "payout.rejected"),
        ("Completed", "OpenAccount", None),
        ("Rejected", "DecidePayout", None),
        ("Completed", "ConfigureScreening", None),
    ],
)
def test_partners_hear_of_their_payments_and_payouts_status_changes_only(
    type_: str, command_type: str, expected: str | None
) -> None:
    assert webhook_type(event(type_, command_type)) == expected


def test_an_answer_to_a_misused_command_id_is_not_sent() -> None:
    answer = event("Rejected", event_id="p1:rejected:3.41", code="command_id_reused")
    assert webhook_type(answer) is None


def test_every_type_is_named_object_dot_status() -> None:
    assert len(WEBHOOK_TYPES) == 8
    for name in WEBHOOK_TYPES:
        obj, _, status = name.partition(".")
        assert obj in ("payment", "payout") and status.isalpha()
    sent = {webhook_type(event(t, c)) for t in EVENT_TYPES for c in ("Transfer", "RequestPayout")}
    assert sent - {None} == set(WEBHOOK_TYPES)


def test_a_failed_payout_carries_its_failure_code_and_reason_and_its_ids() -> None:
    failed = event(
        "Failed", "RequestPayout", code="review_rejected", reason="sanctions list match",
        payout=PAYOUT, rule_codes=("amount_over_review",), reference="inv-7",
    )  # fmt: skip
    body = payload(failed, "payout.failed")
    assert body == {
        "type": "payout.failed",
        "timestamp": "2026-12-01T10:00:00.123Z",
        "data": {
            "object": "payout", "id": "p1", "payout_id": "p1", "event_id": "p1:failed",
            "status": "failed", "partner_id": "demo-1", "account_id": "a1",
            "amount_minor": 1_250, "currency": "EUR",
            "failure": {"code": "review_rejected", "reason": "sanctions list match"},
            "occurred_at_ms": AT_MS, "batch_id": "pb_1", "reference": "inv-7",
            "rule_codes": ["amount_over_review"],
        },
    }  # fmt: skip


def test_a_completed_payment_has_no_failure_and_leaves_empty_fields_out() -> None:
    done = event("Completed", counterparty_account_id="a2")
    data = payload(done, "payment.completed")["data"]
    assert data["failure"] is None and data["payment_id"] == "p1" and data["object"] == "payment"
    assert data["counterparty_account_id"] == "a2"
    assert "reference" not in data and "batch_id" not in data and "rule_codes" not in data


def test_a_rejected_payment_says_why_and_a_queued_payouts_reason_is_not_a_failure() -> None:
    rejected = payload(event("Rejected", code="insufficient_funds"), "payment.rejected")
    assert rejected["data"]["failure"] == {"code": "insufficient_funds", "reason": None}
    approved = event("Queued", "RequestPayout", reason="documents checked", payout=PAYOUT)
    assert payload(approved, "payout.queued")["data"]["failure"] is None


def test_the_body_is_canonical_json_and_money_is_never_a_float() -> None:
    body = payload(event("Completed", amount_minor=2**63 - 1), "payment.completed")
    text = body_text(body)
    assert text == body_text(json.loads(text))  # stored as jsonb, sent again: the same bytes
    assert json.loads(text)["data"]["amount_minor"] == 2**63 - 1
    assert " " not in text and text.isascii()
    body["data"]["amount_minor"] = 12.5
    with pytest.raises(InvariantViolation):
        body_text(body)


def test_the_delivery_id_is_the_same_for_the_same_endpoint_and_event_only() -> None:
    one = delivery_id("ep_1", "p1:completed")
    assert one == delivery_id("ep_1", "p1:completed")
    assert one.startswith("msg_") and len(one) == 36
    assert len({one, delivery_id("ep_2", "p1:completed"), delivery_id("ep_1", "p2:completed")}) == 3


def test_timestamps_are_rfc3339_utc_with_milliseconds() -> None:
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert iso_timestamp(AT_MS) == "2026-12-01T10:00:00.123Z"


def test_signed_headers_verify_with_the_library_and_the_documented_receiver() -> None:
    secret = new_webhook_secret()
    body = body_text(payload(event("Completed"), "payment.completed"))
    now = datetime.datetime.now(datetime.UTC)
    headers = signed_headers(secret=secret, webhook_id="msg_1", body=body, at=now)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers)["type"] == "payment.completed"
    assert verified_event(secret, body.encode(), headers)["data"]["id"] == "p1"


def test_the_receiver_refuses_another_secret_a_changed_body_and_old_or_future_timestamps() -> None:
    secret = new_webhook_secret()
    body = body_text(payload(event("Completed"), "payment.completed"))
    now = datetime.datetime.now(datetime.UTC)
    headers = signed_headers(secret=secret, webhook_id="msg_1", body=body, at=now)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verified_event(new_webhook_secret(), body.encode(), headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verified_event(secret, body.replace("1250", "9999").encode(), headers)
    for minutes, message in ((-6, "too old"), (6, "too new")):
        at = now + datetime.timedelta(minutes=minutes)
        shifted = signed_headers(secret=secret, webhook_id="msg_1", body=body, at=at)
        with pytest.raises(WebhookVerificationError, match=message):
            verified_event(secret, body.encode(), shifted)
    within = signed_headers(
        secret=secret, webhook_id="msg_1", body=body, at=now - datetime.timedelta(minutes=4)
    )
    assert verified_event(secret, body.encode(), within)["type"] == "payment.completed"


def test_signing_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        signed_headers(
            secret=new_webhook_secret(), webhook_id="msg_1", body="{}",
            at=datetime.datetime(2026, 1, 1),  # naive: the point of the test
        )  # fmt: skip
