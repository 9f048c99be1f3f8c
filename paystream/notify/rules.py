"""Which emails an event makes: pure, from the event alone (the addresses are looked up later).

The rules (each email to the holder of an account that has a contact in ``account_contacts``
when the event is taken in; an account without one gets nothing, then or later):

- ``Completed`` of a ``Transfer``: the payer (``account_id``) gets ``transfer_sent``, the
  payee (``counterparty_account_id``) gets ``transfer_received``. A transfer is complete
  when step 3 posts the reservation, so the payee is told once the money is final.
- ``Completed`` of a ``Deposit`` / ``Withdrawal``: the holder gets ``deposit_completed`` /
  ``withdrawal_completed``.
- A payout's ``Settled``: the holder of the source account gets ``payout_settled``.
- A payout's ``Failed`` after it was accepted (the rail's or a reviewer's; it has a
  ``previous_type``): the holder gets ``payout_failed``. A payout request refused outright
  (nothing reserved) is answered to the API caller, like a ``Rejected`` transfer: no email.
- Nothing else: ``Completed`` of other commands (``OpenAccount``, the payout commands that
  the payout's own state events already cover), ``Rejected``, ``Reversed``, ``Duplicate``,
  and answers to a record that repeated or misused an id (not the payment's own event).

Each email's id is ``<event id>/<role>`` (role ``payer``, ``payee`` or ``holder``): the
event's id is unique per fact, so a re-consumed event yields the same ids and the outbox
keeps one row each.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Literal

from paystream.ledger import Event, is_own_event
from paystream.ledger.errors import InvariantViolation, ensure
from paystream.notify.outbox import NOTIFICATION_ID_LENGTH_MAX

__all__ = ["Role", "Wanted", "notification_id", "wanted"]

Role = Literal["payer", "payee", "holder"]
TRANSFER: Final = "Transfer"
_HOLDER_TEMPLATES: Final = {"Deposit": "deposit_completed", "Withdrawal": "withdrawal_completed"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Wanted:
    """One email an event asks for: to the holder of ``account_id``, if it has a contact."""

    notification_id: str
    account_id: str
    template: str
    context: dict[str, object]


def notification_id(event_id: str, role: Role) -> str:
    """``<event id>/<role>``; an event id too long for the column is replaced by its digest."""
    suffix = f"/{role}"
    if len(event_id) + len(suffix) <= NOTIFICATION_ID_LENGTH_MAX:
        return event_id + suffix
    return f"sha256:{hashlib.sha256(event_id.encode()).hexdigest()}{suffix}"


def wanted(event: Event) -> list[Wanted]:
    """The emails ``event`` asks for (see the module's rules), payer before payee."""
    if not is_own_event(event):
        return []
    if event.type == "Completed" and event.command_type == TRANSFER:
        payee = event.counterparty_account_id
        if payee is None:
            raise InvariantViolation(f"a completed transfer without its payee: {event.event_id}")
        context = _money_context(event) | {"counterparty_account_id": payee}
        return [
            _one(event, "payer", event.account_id, "transfer_sent", context),
            _one(event, "payee", payee, "transfer_received", context),
        ]
    if event.type == "Completed" and event.command_type in _HOLDER_TEMPLATES:
        template = _HOLDER_TEMPLATES[event.command_type]
        return [_one(event, "holder", event.account_id, template, _money_context(event))]
    if event.payout is not None and event.type == "Settled":
        return [_one(event, "holder", event.account_id, "payout_settled", _payout_context(event))]
    if event.payout is not None and event.type == "Failed" and event.previous_type is not None:
        context = _payout_context(event) | {"code": event.code or "failed"}
        return [_one(event, "holder", event.account_id, "payout_failed", context)]
    return []


def _one(
    event: Event, role: Role, account_id: str, template: str, context: dict[str, object]
) -> Wanted:
    return Wanted(
        notification_id=notification_id(event.event_id, role),
        account_id=account_id,
        template=template,
        context=context,
    )


def _money_context(event: Event) -> dict[str, object]:
    """What every email about money shows: integer minor units and the currency, never a float."""
    ensure(
        event.amount_minor is not None and event.currency is not None,
        f"a {event.type} {event.command_type} without its amount: {event.event_id}",
    )
    return {
        "event_id": event.event_id,
        "event_type": event.type,
        "payment_id": event.payment_id,
        "partner_id": event.partner_id,
        "account_id": event.account_id,
        "amount_minor": event.amount_minor,
        "currency": event.currency,
        "reference": event.reference,
        "issued_at_ms": event.issued_at_ms,
    }


def _payout_context(event: Event) -> dict[str, object]:
    payout = event.payout
    if payout is None:
        raise InvariantViolation(f"a payout state without its payout: {event.event_id}")
    return _money_context(event) | {
        "batch_id": payout.batch_id,
        "beneficiary_name": payout.beneficiary_name,
        "reason": event.reason,
    }
