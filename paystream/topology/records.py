"""models.py dataclasses <-> the dicts fastavro reads and writes (``schemas/*.avsc``).

Union branches are written in fastavro's tuple notation ``(full name, record)``
and read with ``return_record_name=True``, so a branch is chosen by name, never
guessed from the record's shape (three command bodies are empty records).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from paystream.ledger.models import (
    CloseAccount,
    Command,
    Compensation,
    ConfigureScreening,
    Confirmation,
    CreditLeg,
    DecidePayout,
    Deposit,
    Event,
    FailPayout,
    FreezeAccount,
    JournalEntry,
    JournalLine,
    Leg,
    OpenAccount,
    PayoutDetails,
    RequestPayout,
    SendPayout,
    SettlePayout,
    Transfer,
    UnfreezeAccount,
    Withdrawal,
)
from paystream.topology.dlq import CommandHeader

__all__ = [
    "COMMAND_BRANCHES",
    "LEG_BRANCHES",
    "NAMESPACE",
    "Record",
    "command_from_record",
    "command_header",
    "command_to_record",
    "event_from_record",
    "event_to_record",
    "journal_entry_from_record",
    "journal_entry_to_record",
    "leg_from_record",
    "leg_to_record",
    "record_header",
]

NAMESPACE: Final = "paystream.v1"

Record: TypeAlias = dict[str, Any]
_Branch: TypeAlias = tuple[str, Record]
_BodyReader: TypeAlias = Callable[[Record, Record], Command]

_OPEN_ACCOUNT: Final = f"{NAMESPACE}.OpenAccount"
_FREEZE_ACCOUNT: Final = f"{NAMESPACE}.FreezeAccount"
_UNFREEZE_ACCOUNT: Final = f"{NAMESPACE}.UnfreezeAccount"
_CLOSE_ACCOUNT: Final = f"{NAMESPACE}.CloseAccount"
_DEPOSIT: Final = f"{NAMESPACE}.Deposit"
_WITHDRAWAL: Final = f"{NAMESPACE}.Withdrawal"
_TRANSFER: Final = f"{NAMESPACE}.Transfer"
_PAYOUT_BODIES: Final[dict[type, tuple[str, ...]]] = {
    RequestPayout: (
        "batch_id", "amount_minor", "currency", "beneficiary_name", "beneficiary_country",
        "beneficiary_iban", "beneficiary_bic", "beneficiary_account_number",
        "beneficiary_routing_number", "reference",
    ),
    DecidePayout: ("payout_id", "decision", "officer", "reason"),
    SendPayout: ("payout_id",),
    SettlePayout: ("payout_id",),
    FailPayout: ("payout_id", "reason_code", "reason"),
    ConfigureScreening: ("rules_json",),
}  # fmt: skip
"""The body fields of the payout commands, named as in their dataclasses: one generic writer
and reader each (the envelope's fields are every command's)."""
_CREDIT_LEG: Final = f"{NAMESPACE}.CreditLeg"
_CONFIRMATION: Final = f"{NAMESPACE}.Confirmation"
_COMPENSATION: Final = f"{NAMESPACE}.Compensation"

# --- commands ------------------------------------------------------------------------


def _open_account_body(c: OpenAccount) -> _Branch:
    return _OPEN_ACCOUNT, {"currency": c.currency, "allow_overdraft": c.allow_overdraft}


def _money_body(name: str) -> Callable[[Deposit | Withdrawal], _Branch]:
    def body(c: Deposit | Withdrawal) -> _Branch:
        return name, {
            "amount_minor": c.amount_minor,
            "currency": c.currency,
            "reference": c.reference,
        }

    return body


def _transfer_body(c: Transfer) -> _Branch:
    return _TRANSFER, {
        "destination_account_id": c.destination_account_id,
        "amount_minor": c.amount_minor,
        "currency": c.currency,
        "reference": c.reference,
    }


def _payout_body(cls: type) -> Callable[[Any], _Branch]:
    name, names = f"{NAMESPACE}.{cls.__name__}", _PAYOUT_BODIES[cls]

    def body(c: Any) -> _Branch:
        return name, {field: getattr(c, field) for field in names}

    return body


def _payout_reader(cls: type) -> _BodyReader:
    names = _PAYOUT_BODIES[cls]

    def read(r: Record, b: Record) -> Command:
        command: Command = cls(
            command_id=r["command_id"],
            request_id=r["request_id"],
            partner_id=r["partner_id"],
            issued_at_ms=r["issued_at_ms"],
            account_id=r["account_id"],
            **{field: b[field] for field in names},
        )
        return command

    return read


def _empty_body(name: str) -> Callable[[Command], _Branch]:
    def body(_: Command) -> _Branch:
        return name, {}

    return body


_BODY_WRITERS: Final[dict[type, Callable[[Any], _Branch]]] = {
    OpenAccount: _open_account_body,
    FreezeAccount: _empty_body(_FREEZE_ACCOUNT),
    UnfreezeAccount: _empty_body(_UNFREEZE_ACCOUNT),
    CloseAccount: _empty_body(_CLOSE_ACCOUNT),
    Deposit: _money_body(_DEPOSIT),
    Withdrawal: _money_body(_WITHDRAWAL),
    Transfer: _transfer_body,
    **{cls: _payout_body(cls) for cls in _PAYOUT_BODIES},
}


def command_to_record(command: Command) -> Record:
    return {
        "command_id": command.command_id,
        "request_id": command.request_id,
        "partner_id": command.partner_id,
        "issued_at_ms": command.issued_at_ms,
        "account_id": command.account_id,
        "body": _BODY_WRITERS[type(command)](command),
    }


def _open_account(r: Record, b: Record) -> OpenAccount:
    return OpenAccount(
        command_id=r["command_id"],
        request_id=r["request_id"],
        partner_id=r["partner_id"],
        issued_at_ms=r["issued_at_ms"],
        account_id=r["account_id"],
        currency=b["currency"],
        allow_overdraft=b["allow_overdraft"],
    )


def _no_body(cls: type[FreezeAccount | UnfreezeAccount | CloseAccount]) -> _BodyReader:
    def read(r: Record, _: Record) -> Command:
        return cls(
            command_id=r["command_id"],
            request_id=r["request_id"],
            partner_id=r["partner_id"],
            issued_at_ms=r["issued_at_ms"],
            account_id=r["account_id"],
        )

    return read


def _money(cls: type[Deposit | Withdrawal]) -> _BodyReader:
    def read(r: Record, b: Record) -> Command:
        return cls(
            command_id=r["command_id"],
            request_id=r["request_id"],
            partner_id=r["partner_id"],
            issued_at_ms=r["issued_at_ms"],
            account_id=r["account_id"],
            amount_minor=b["amount_minor"],
            currency=b["currency"],
            reference=b["reference"],
        )

    return read


def _transfer(r: Record, b: Record) -> Transfer:
    return Transfer(
        command_id=r["command_id"],
        request_id=r["request_id"],
        partner_id=r["partner_id"],
        issued_at_ms=r["issued_at_ms"],
        account_id=r["account_id"],
        destination_account_id=b["destination_account_id"],
        amount_minor=b["amount_minor"],
        currency=b["currency"],
        reference=b["reference"],
    )


_BODY_READERS: Final[dict[str, _BodyReader]] = {
    _OPEN_ACCOUNT: _open_account,
    _FREEZE_ACCOUNT: _no_body(FreezeAccount),
    _UNFREEZE_ACCOUNT: _no_body(UnfreezeAccount),
    _CLOSE_ACCOUNT: _no_body(CloseAccount),
    _DEPOSIT: _money(Deposit),
    _WITHDRAWAL: _money(Withdrawal),
    _TRANSFER: _transfer,
    **{f"{NAMESPACE}.{cls.__name__}": _payout_reader(cls) for cls in _PAYOUT_BODIES},
}

COMMAND_BRANCHES: Final = frozenset(_BODY_READERS)
"""Full names of the command body records this code reads and writes."""


def command_from_record(record: Record) -> Command:
    """``record`` as read with ``return_record_name=True`` (body is ``(name, fields)``)."""
    name, body = record["body"]
    return _BODY_READERS[name](record, body)


def command_header(command: Command) -> CommandHeader:
    """The ids of a decoded command (for the answer to one that failed validation)."""
    return CommandHeader(
        command_id=command.command_id,
        request_id=command.request_id,
        partner_id=command.partner_id,
        account_id=command.account_id,
        issued_at_ms=command.issued_at_ms,
        command_type=type(command).__name__,
    )


def record_header(record: Record, branch: str) -> CommandHeader | None:
    """The ids of a command record of a type this reader does not know, if they read."""
    try:
        return CommandHeader(
            command_id=str(record["command_id"]),
            request_id=str(record["request_id"]),
            partner_id=str(record["partner_id"]),
            account_id=str(record["account_id"]),
            issued_at_ms=int(record["issued_at_ms"]),
            command_type=branch.rsplit(".", 1)[-1],
        )
    except (KeyError, TypeError, ValueError):  # a writer schema without the envelope fields
        return None


# --- legs ---------------------------------------------------------------------------


def leg_to_record(leg: Leg) -> _Branch:
    fields: Record = {
        "transfer_id": leg.transfer_id,
        "request_id": leg.request_id,
        "partner_id": leg.partner_id,
        "issued_at_ms": leg.issued_at_ms,
        "source_account_id": leg.source_account_id,
        "destination_account_id": leg.destination_account_id,
        "amount_minor": leg.amount_minor,
        "currency": leg.currency,
        "reference": leg.reference,
    }
    if isinstance(leg, CreditLeg):
        return _CREDIT_LEG, fields
    if isinstance(leg, Confirmation):
        return _CONFIRMATION, fields
    fields["reason"] = leg.reason
    return _COMPENSATION, fields


_LEG_TYPES: Final[dict[str, type[CreditLeg] | type[Confirmation]]] = {
    _CREDIT_LEG: CreditLeg,
    _CONFIRMATION: Confirmation,
}
LEG_BRANCHES: Final = frozenset((*_LEG_TYPES, _COMPENSATION))
"""Full names of the leg records this code reads and writes."""


def leg_from_record(record: _Branch) -> Leg:
    name, r = record
    parties = {
        "transfer_id": r["transfer_id"],
        "request_id": r["request_id"],
        "partner_id": r["partner_id"],
        "issued_at_ms": r["issued_at_ms"],
        "source_account_id": r["source_account_id"],
        "destination_account_id": r["destination_account_id"],
        "amount_minor": r["amount_minor"],
        "currency": r["currency"],
        "reference": r["reference"],
    }
    if name in _LEG_TYPES:
        return _LEG_TYPES[name](**parties)
    if name != _COMPENSATION:
        raise KeyError(f"no leg type {name!r}")  # the reader schema and this module disagree
    return Compensation(**parties, reason=r["reason"])


# --- journal entries ---------------------------------------------------------------------


def journal_entry_to_record(entry: JournalEntry) -> Record:
    return {
        "entry_id": entry.entry_id,
        "payment_id": entry.payment_id,
        "kind": entry.kind,
        "partner_id": entry.partner_id,
        "account_id": entry.account_id,
        "issued_at_ms": entry.issued_at_ms,
        "lines": [
            {
                "account_id": line.account_id,
                "currency": line.currency,
                "side": line.side,
                "amount_minor": line.amount_minor,
            }
            for line in entry.lines
        ],
        "phase": entry.phase,
        "pending_entry_id": entry.pending_entry_id,
    }


def journal_entry_from_record(r: Record) -> JournalEntry:
    return JournalEntry(
        entry_id=r["entry_id"],
        payment_id=r["payment_id"],
        kind=r["kind"],
        partner_id=r["partner_id"],
        account_id=r["account_id"],
        issued_at_ms=r["issued_at_ms"],
        lines=tuple(
            JournalLine(
                account_id=line["account_id"],
                currency=line["currency"],
                side=line["side"],
                amount_minor=line["amount_minor"],
            )
            for line in r["lines"]
        ),
        phase=r["phase"],
        pending_entry_id=r["pending_entry_id"],
    )


# --- events ------------------------------------------------------


def event_to_record(event: Event) -> Record:
    return {
        "event_id": event.event_id,
        "payment_id": event.payment_id,
        "type": event.type,
        "command_type": event.command_type,
        "partner_id": event.partner_id,
        "account_id": event.account_id,
        "issued_at_ms": event.issued_at_ms,
        "counterparty_account_id": event.counterparty_account_id,
        "amount_minor": event.amount_minor,
        "currency": event.currency,
        "code": event.code,
        "original_payment_id": event.original_payment_id,
        "reference": event.reference,
        "rule_codes": list(event.rule_codes),
        "reason": event.reason,
        "actor": event.actor,
        "previous_type": event.previous_type,
        "payout": _payout_details_record(event.payout),
    }


def event_from_record(r: Record) -> Event:
    return Event(
        event_id=r["event_id"],
        payment_id=r["payment_id"],
        type=r["type"],
        command_type=r["command_type"],
        partner_id=r["partner_id"],
        account_id=r["account_id"],
        issued_at_ms=r["issued_at_ms"],
        counterparty_account_id=r["counterparty_account_id"],
        amount_minor=r["amount_minor"],
        currency=r["currency"],
        code=r["code"],
        original_payment_id=r["original_payment_id"],
        reference=r["reference"],
        rule_codes=tuple(r["rule_codes"]),
        reason=r["reason"],
        actor=r["actor"],
        previous_type=_branch_value(r["previous_type"]),
        payout=_payout_details(_branch_value(r["payout"])),
    )


_PAYOUT_DETAILS_FIELDS: Final = tuple(field.name for field in dataclasses.fields(PayoutDetails))


def _payout_details_record(details: PayoutDetails | None) -> Record | None:
    """A record alone beside null in its union: written as a plain dict."""
    if details is None:
        return None
    return {name: getattr(details, name) for name in _PAYOUT_DETAILS_FIELDS}


def _payout_details(r: Record | None) -> PayoutDetails | None:
    """An event's payout details (absent from events written before event schema v4)."""
    return None if r is None else PayoutDetails(**r)


def _branch_value(value: Any) -> Any:
    """A named type inside a union reads as ``(full name, value)`` under fastavro's
    ``return_record_name=True`` (enums too): the value."""
    return value[1] if isinstance(value, tuple) else value
