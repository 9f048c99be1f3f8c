"""Payouts: the state machine of one payout, pure, without accounts or outputs.

A payout moves money from a client account to an external beneficiary in two phases
(TigerBeetle's pending transfers): its request reserves the amount (a pending DEBIT source /
CREDIT payouts-clearing), and it ends either **posted** (``Settled``: the bank paid, then
clearing pays the external settlement account) or **voided** (``Failed``: the funds are
available again). In between it is screened, maybe reviewed, and sent to the bank::

    request --(screening: no hit)--> queued --send--> sending --settle--> settled
       |                               ^                 |
       |(a hit)                approve |                 +--fail--> failed (bank_rejected)
       v                               |
      held ----------------------------+
       |--reject--> failed (review_rejected)

    override: queued (approved by a person or by the rules) --> failed (review_rejected)
              failed by a review's rejection --> queued (reserved again, if funds allow)

Decisions where the issue is silent, and why:

- **Funds stay reserved while a payout is held**: a payout a person approves an hour later
  must not fail for funds spent meanwhile.
- **The rail asks before it sends** (``SendPayout``: queued -> sending). An override can
  turn an approval around only while the payout is still queued; once ``Sending`` is
  accepted the bank has (or will have) the instruction and only the bank's answer ends it.
  Without the step an override could void the funds of a payout the bank then pays.
- **An override turns an earlier verdict around** (approve <-> reject), the rules'
  automatic approval included: ops can stop a queued payout before the rail takes it. A
  held payout is decided with approve or reject; rejecting twice, approving what is queued
  and the like are refused (``payout_not_held`` / ``payout_not_overridable``). Every
  override needs a reason.
- **Operators and the rail are partners of their own** (``OPS_PARTNER_ID``,
  ``RAIL_PARTNER_ID``): their request ids never meet a client's, and a client cannot decide
  its own payouts (``not_authorized``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final, Literal, TypeAlias

from paystream.ledger.models import (
    BENEFICIARY_NAME_LENGTH_MAX,
    DECISIONS,
    OPS_PARTNER_ID,
    RAIL_PARTNER_ID,
    REASON_LENGTH_MAX,
    DecidePayout,
    EventType,
    FailPayout,
    Payout,
    PayoutCommand,
    PayoutDetails,
    PayoutState,
    RejectionCode,
    RequestPayout,
    SendPayout,
    SettlePayout,
)
from paystream.ledger.screening import COUNTRY_PATTERN

__all__ = [
    "Money",
    "Transition",
    "authorized",
    "beneficiary_code",
    "beneficiary_key",
    "new_payout",
    "payout_details",
    "transition",
]

Money: TypeAlias = Literal["reserve", "post", "void"]
"""What a transition does to the payout's funds."""

_IBAN: Final = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
_BIC: Final = re.compile(r"^[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?$")
_ACCOUNT_NUMBER: Final = re.compile(r"^[0-9A-Z]{4,34}$")
_ROUTING_NUMBER: Final = re.compile(r"^[0-9]{9}$")
_REASON_CODE: Final = re.compile(r"^[A-Z0-9]{1,35}$")
"""An ISO 20022 status reason code (ExternalStatusReason1Code is 4 characters; proprietary
codes up to 35)."""

STATE_EVENTS: Final[dict[PayoutState, EventType]] = {
    "held": "Held",
    "queued": "Queued",
    "sending": "Sending",
    "settled": "Settled",
    "failed": "Failed",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """A payout's next version and what happens to its money."""

    payout: Payout
    money: Money | None


def beneficiary_code(command: RequestPayout) -> RejectionCode | None:
    """The beneficiary's shape: a name, a country, and either an IBAN (with or without a
    BIC) or an account number with a routing number, never both. Check digits and bank
    directories are the API's (``schwifty``); the core refuses what no rail could carry."""
    c = command
    if not (0 < len(c.beneficiary_name) <= BENEFICIARY_NAME_LENGTH_MAX):
        return "invalid_beneficiary"
    if not c.beneficiary_name.isprintable() or not COUNTRY_PATTERN.match(c.beneficiary_country):
        return "invalid_beneficiary"
    if c.beneficiary_iban is not None:
        if c.beneficiary_account_number is not None or c.beneficiary_routing_number is not None:
            return "invalid_beneficiary"
        if not _IBAN.match(c.beneficiary_iban):
            return "invalid_beneficiary"
        bic = c.beneficiary_bic
        return None if bic is None or _BIC.match(bic) else "invalid_beneficiary"
    if c.beneficiary_bic is not None or c.beneficiary_account_number is None:
        return "invalid_beneficiary"
    if c.beneficiary_routing_number is None:
        return "invalid_beneficiary"
    if not (
        _ACCOUNT_NUMBER.match(c.beneficiary_account_number)
        and _ROUTING_NUMBER.match(c.beneficiary_routing_number)
    ):
        return "invalid_beneficiary"
    return None


def beneficiary_key(payout: Payout | RequestPayout) -> str:
    """The identifier screening knows a beneficiary by: its IBAN, else routing/account."""
    if payout.beneficiary_iban is not None:
        return payout.beneficiary_iban
    return f"{payout.beneficiary_routing_number}/{payout.beneficiary_account_number}"


def new_payout(
    command: RequestPayout, *, requested_at_ms: int, rule_codes: tuple[str, ...]
) -> Payout:
    """The payout as its request leaves it: funds reserved, held on a hit, else queued."""
    c = command
    return Payout(
        payout_id=c.command_id,
        request_id=c.request_id,
        batch_id=c.batch_id,
        partner_id=c.partner_id,
        account_id=c.account_id,
        issued_at_ms=c.issued_at_ms,
        requested_at_ms=requested_at_ms,
        amount_minor=c.amount_minor,
        currency=c.currency,
        beneficiary_name=c.beneficiary_name,
        beneficiary_country=c.beneficiary_country,
        beneficiary_iban=c.beneficiary_iban,
        beneficiary_bic=c.beneficiary_bic,
        beneficiary_account_number=c.beneficiary_account_number,
        beneficiary_routing_number=c.beneficiary_routing_number,
        reference=c.reference,
        state="held" if rule_codes else "queued",
        rule_codes=rule_codes,
        reservation=reservation_id(c.command_id, 1),
        reservations=1,
        version=1,
    )


def payout_details(source: RequestPayout | Payout) -> PayoutDetails:
    """The batch and beneficiary a payout's events carry, from its request or its record."""
    return PayoutDetails(
        batch_id=source.batch_id,
        beneficiary_name=source.beneficiary_name,
        beneficiary_country=source.beneficiary_country,
        beneficiary_iban=source.beneficiary_iban,
        beneficiary_bic=source.beneficiary_bic,
        beneficiary_account_number=source.beneficiary_account_number,
        beneficiary_routing_number=source.beneficiary_routing_number,
    )


def reservation_id(payout_id: str, n: int) -> str:
    """The id of the ``n``-th pending entry of ``payout_id`` (the first: ``<id>:reserve``)."""
    return f"{payout_id}:reserve" if n == 1 else f"{payout_id}:reserve.{n}"


def authorized(command: PayoutCommand) -> bool:
    """Decisions come from operators, the rail's reports from the rail."""
    if isinstance(command, DecidePayout):
        return command.partner_id == OPS_PARTNER_ID
    return command.partner_id == RAIL_PARTNER_ID


def transition(payout: Payout, command: PayoutCommand) -> Transition | RejectionCode:
    """What ``command`` does to ``payout``, or why it may not."""
    if isinstance(command, DecidePayout):
        return _decide(payout, command)
    if isinstance(command, SendPayout):
        return _step(payout, "queued", "sending", None, "payout_not_queued")
    if isinstance(command, SettlePayout):
        return _step(payout, "sending", "settled", "post", "payout_not_sending")
    return _fail(payout, command)


def _decide(payout: Payout, command: DecidePayout) -> Transition | RejectionCode:
    if command.decision not in DECISIONS:
        return "invalid_field"
    if command.reason is not None and len(command.reason) > REASON_LENGTH_MAX:
        return "invalid_field"
    if not command.officer or len(command.officer) > BENEFICIARY_NAME_LENGTH_MAX:
        return "invalid_field"
    if command.decision == "override":
        return _override(payout, command)
    if payout.state != "held":
        return "payout_not_held"
    if command.decision == "approve":
        return _next(payout, command, "queued", None)
    if command.reason is None:
        return "invalid_field"
    return _next(payout, command, "failed", "void")


def _override(payout: Payout, command: DecidePayout) -> Transition | RejectionCode:
    """Turn the verdict around: a queued payout (approved by a person or by the rules) is
    rejected, a payout a review rejected is approved again."""
    if command.reason is None:
        return "invalid_field"
    if payout.state == "queued":
        return _next(payout, command, "failed", "void")
    if payout.state == "failed" and payout.failure_code == "review_rejected":
        return _next(payout, command, "queued", "reserve")
    return "payout_not_overridable"


def _next(
    payout: Payout, command: DecidePayout, state: PayoutState, money: Money | None
) -> Transition:
    """The payout after a decision: approvals (and overrides to one) count as ``approve``."""
    approved = state == "queued"
    reservations = payout.reservations + (1 if money == "reserve" else 0)
    return Transition(
        payout=replace(
            payout,
            state=state,
            decision="approve" if approved else "reject",
            failure_code=None if approved else "review_rejected",
            failure_reason=None if approved else command.reason,
            reservation=_reservation_after(payout, money, reservations),
            reservations=reservations,
            version=payout.version + 1,
        ),
        money=money,
    )


def _reservation_after(payout: Payout, money: Money | None, reservations: int) -> str | None:
    if money == "reserve":
        return reservation_id(payout.payout_id, reservations)
    return None if money is not None else payout.reservation


def _step(
    payout: Payout,
    state_from: PayoutState,
    state_to: PayoutState,
    money: Money | None,
    refused: RejectionCode,
) -> Transition | RejectionCode:
    if payout.state != state_from:
        return refused
    reservation = None if money is not None else payout.reservation
    return Transition(
        payout=replace(payout, state=state_to, reservation=reservation, version=payout.version + 1),
        money=money,
    )


def _fail(payout: Payout, command: FailPayout) -> Transition | RejectionCode:
    if not _REASON_CODE.match(command.reason_code):
        return "invalid_field"
    if command.reason is not None and len(command.reason) > REASON_LENGTH_MAX:
        return "invalid_field"
    if payout.state != "sending":
        return "payout_not_sending"
    reason = (
        command.reason_code
        if command.reason is None
        else f"{command.reason_code}: {command.reason}"
    )
    return Transition(
        payout=replace(
            payout,
            state="failed",
            failure_code="bank_rejected",
            failure_reason=reason,
            reservation=None,
            version=payout.version + 1,
        ),
        money="void",
    )
