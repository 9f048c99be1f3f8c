"""Which events a partner hears about, and the JSON body each webhook carries. Pure.

A partner's endpoints receive the status changes of the partner's own payments and payouts,
named like Stripe's and Svix's event types (``<object>.<status>``, the API's status words):

============================  =====================================================
type                          sent when
============================  =====================================================
``payment.completed``         a transfer, deposit or withdrawal is done
``payment.reversed``          a transfer was undone (the destination refused it)
``payment.rejected``          a transfer, deposit or withdrawal was refused (``failure``)
``payout.held``               a payout waits for a compliance officer (``rule_codes``)
``payout.queued``             a payout goes to the bank (screened, or approved)
``payout.settled``            the bank paid the beneficiary
``payout.failed``             a payout failed: refused at the request, rejected in review,
                              or rejected by the bank (``failure``: code and reason)
``payout.rejected``           a payout request was refused before it was a payout
============================  =====================================================

Not sent (internal steps or echoes of the partner's own calls): ``Debited`` (a transfer's
first step; ``payment.completed`` or ``payment.reversed`` follows), ``Duplicate`` (the
answer to a retried request), ``Sending`` (the rail's hand-off, seconds before the bank's
answer), answers to a record that misused a command id, and the events of account commands,
review decisions' own refusals and screening configuration.

The body follows the Standard Webhooks payload shape, ``{"type", "timestamp", "data"}``::

    {"type": "payout.failed",
     "timestamp": "2026-12-01T10:00:00.123Z",
     "data": {"object": "payout", "id": "<payout id>", "payout_id": "<payout id>",
              "event_id": "<event id>", "status": "failed", "partner_id": "demo-1",
              "account_id": "...", "amount_minor": 1250, "currency": "EUR",
              "failure": {"code": "review_rejected", "reason": "sanctions list match"},
              "occurred_at_ms": 1796119200123, "batch_id": "pb_...", "reference": "...",
              "rule_codes": ["amount_over_review"]}}

Amounts are integer minor units with their currency, never floats; ``failure`` is null
unless the event carries a code or a reason; optional fields are left out when empty.
The body is serialised once per attempt from the stored payload (sorted keys, no spaces),
so every attempt of a delivery sends the same bytes.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any, Final

from paystream.ledger import Event, InvariantViolation, ensure, is_own_event
from paystream.ledger.models import EventType

__all__ = [
    "DELIVERY_ID_PREFIX",
    "PAYMENT_COMMANDS",
    "PAYOUT_COMMAND",
    "WEBHOOK_TYPES",
    "body_text",
    "delivery_id",
    "payload",
    "webhook_type",
]

PAYMENT_COMMANDS: Final = frozenset(("Transfer", "Deposit", "Withdrawal"))
PAYOUT_COMMAND: Final = "RequestPayout"
PAYMENT_TYPES: Final[dict[EventType, str]] = {
    "Completed": "payment.completed",
    "Reversed": "payment.reversed",
    "Rejected": "payment.rejected",
}
PAYOUT_TYPES: Final[dict[EventType, str]] = {
    "Held": "payout.held",
    "Queued": "payout.queued",
    "Settled": "payout.settled",
    "Failed": "payout.failed",
    "Rejected": "payout.rejected",
}
WEBHOOK_TYPES: Final = tuple(sorted({*PAYMENT_TYPES.values(), *PAYOUT_TYPES.values()}))
DELIVERY_ID_PREFIX: Final = "msg_"
DELIVERY_ID_DIGEST_CHARS: Final = 32
NESTING_MAX: Final = 8
"""How deep a body's JSON goes (``data.failure`` is the deepest: 3)."""


def webhook_type(event: Event) -> str | None:
    """The webhook type ``event`` is sent as, or None when partners do not hear of it."""
    if not is_own_event(event):
        return None
    if event.command_type in PAYMENT_COMMANDS:
        return PAYMENT_TYPES.get(event.type)
    if event.command_type == PAYOUT_COMMAND:
        return PAYOUT_TYPES.get(event.type)
    return None


def delivery_id(endpoint_id: str, event_id: str) -> str:
    """The delivery's id and ``webhook-id``: the same for the same endpoint and event."""
    digest = hashlib.sha256(f"{endpoint_id}\x00{event_id}".encode()).hexdigest()
    return DELIVERY_ID_PREFIX + digest[:DELIVERY_ID_DIGEST_CHARS]


def payload(event: Event, kind: str) -> dict[str, Any]:
    """The webhook body of ``event`` sent as ``kind`` (a :data:`WEBHOOK_TYPES` name)."""
    obj, _, status = kind.partition(".")
    data: dict[str, Any] = {
        "object": obj,
        "id": event.payment_id,
        f"{obj}_id": event.payment_id,
        "event_id": event.event_id,
        "status": status,
        "partner_id": event.partner_id,
        "account_id": event.account_id,
        "amount_minor": event.amount_minor,
        "currency": event.currency,
        "failure": _failure(event),
        "occurred_at_ms": event.issued_at_ms,
    }
    optional: dict[str, Any] = {
        "counterparty_account_id": event.counterparty_account_id,
        "reference": event.reference,
        "rule_codes": list(event.rule_codes) or None,
        "batch_id": event.payout.batch_id if event.payout is not None else None,
    }
    data |= {name: value for name, value in optional.items() if value is not None}
    return {"type": kind, "timestamp": iso_timestamp(event.issued_at_ms), "data": data}


def _failure(event: Event) -> dict[str, str | None] | None:
    if event.code is None and (event.reason is None or event.type not in ("Failed", "Rejected")):
        return None
    return {"code": event.code, "reason": event.reason}


def iso_timestamp(at_ms: int) -> str:
    """RFC 3339 in UTC with milliseconds: ``2026-12-01T10:00:00.123Z``."""
    seconds, ms = divmod(at_ms, 1000)
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms:03d}Z"


def body_text(body: dict[str, Any]) -> str:
    """The bytes on the wire (as text): sorted keys, no spaces, ASCII. A float anywhere in a
    payload is a bug and is refused (money is never a float)."""
    _check_no_float(body, 0)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _check_no_float(value: object, depth: int) -> None:
    ensure(depth <= NESTING_MAX, f"a webhook body nested deeper than {NESTING_MAX}")
    if isinstance(value, float):
        raise InvariantViolation("a float in a webhook body")
    if isinstance(value, dict):
        for child in value.values():
            _check_no_float(child, depth + 1)
    elif isinstance(value, list):
        for child in value:
            _check_no_float(child, depth + 1)
