"""Structural checks on decoded records; a failure is a poison message.

Only what makes a record meaningless is checked here: ids, reserved system
account ids, currencies, timestamps, enum-like codes, line counts. Money rules
(amounts, funds, balance) are the core's business: it answers them as values.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from paystream.ledger.accounts import SCREENING_KEY_PREFIX
from paystream.ledger.currencies import is_iso4217
from paystream.ledger.journal import LINE_COUNT_MAX, LINE_COUNT_MIN
from paystream.ledger.models import (
    BENEFICIARY_NAME_LENGTH_MAX,
    DECISIONS,
    REASON_LENGTH_MAX,
    REFERENCE_LENGTH_MAX,
    REJECTION_CODES,
    SYSTEM_ACCOUNT_PREFIX,
    Command,
    Compensation,
    ConfigureScreening,
    DecidePayout,
    Deposit,
    Event,
    FailPayout,
    JournalEntry,
    Leg,
    OpenAccount,
    RequestPayout,
    SendPayout,
    SettlePayout,
    Transfer,
    Withdrawal,
)
from paystream.ledger.screening import RULES_JSON_LENGTH_MAX
from paystream.topology.dlq import CommandHeader, PoisonMessage

__all__ = [
    "DERIVED_ID_LENGTH_MAX",
    "ID_LENGTH_MAX",
    "header_is_readable",
    "validate_command",
    "validate_event",
    "validate_journal_entry",
    "validate_leg",
]

ID_LENGTH_MAX: Final = 128
"""Longest id (command, request, partner, account, payment), in characters."""

DERIVED_ID_LENGTH_MAX: Final = 2 * ID_LENGTH_MAX
"""Longest derived id (``entry_id``, ``event_id``: an id plus ``:step``)."""

_VALUE_SHOWN_MAX: Final = 40
_REJECTION_CODES: Final = frozenset(REJECTION_CODES)


def _invalid(field: str, problem: str, value: object) -> PoisonMessage:
    shown = repr(value)
    if len(shown) > _VALUE_SHOWN_MAX:
        shown = shown[:_VALUE_SHOWN_MAX] + "…"
    return PoisonMessage("invalid_field", f"{field}: {problem} ({shown})")


def _check_id(field: str, value: str, *, length_max: int = ID_LENGTH_MAX) -> None:
    if not 0 < len(value) <= length_max:
        raise _invalid(field, f"length must be 1..{length_max}", value)


def _check_client_account(field: str, value: str) -> None:
    _check_id(field, value)
    if value.startswith(SYSTEM_ACCOUNT_PREFIX):
        raise _invalid(field, f"{SYSTEM_ACCOUNT_PREFIX!r} is reserved for system accounts", value)


def _check_currency(field: str, value: str) -> None:
    if not is_iso4217(value):
        raise _invalid(field, "not an active ISO-4217 code", value)


def _check_time(field: str, value: int) -> None:
    if value < 0:
        raise _invalid(field, "must be >= 0", value)


_REFERENCE_REFUSED_CATEGORIES: Final = frozenset(("Cc", "Cs"))
"""Control characters (NUL among them: Postgres text cannot hold it) and lone surrogates."""


def _check_reference(
    field: str, value: str | None, *, length_max: int = REFERENCE_LENGTH_MAX
) -> None:
    """Free text (a reference, a reason): 1..``length_max`` characters, nothing invisible."""
    if value is None:
        return
    if not 0 < len(value) <= length_max:
        raise _invalid(field, f"length must be 1..{length_max}", value)
    if any(unicodedata.category(ch) in _REFERENCE_REFUSED_CATEGORIES for ch in value):
        raise _invalid(field, "control characters and lone surrogates are not allowed", value)


BENEFICIARY_FIELD_LENGTH_MAX: Final = 35
"""Longest IBAN, BIC, account or routing number, or bank reason code (ISO 20022's Max35Text);
their shapes are the core's (``invalid_beneficiary``), their size is bounded here."""


def _check_rejection_code(field: str, value: str) -> None:
    if value not in _REJECTION_CODES:
        raise _invalid(field, "unknown rejection code", value)


def validate_command(command: Command) -> None:
    """Raise ``PoisonMessage("invalid_field", …)`` if ``command`` is malformed."""
    _check_id("command_id", command.command_id)
    _check_id("request_id", command.request_id)
    _check_id("partner_id", command.partner_id)
    _check_time("issued_at_ms", command.issued_at_ms)
    if isinstance(command, ConfigureScreening):
        _check_screening(command)
        return
    _check_client_account("account_id", command.account_id)
    if isinstance(command, RequestPayout):
        _check_request_payout(command)
    elif isinstance(command, DecidePayout | SendPayout | SettlePayout | FailPayout):
        _check_payout_command(command)
    if isinstance(command, Transfer):
        _check_client_account("destination_account_id", command.destination_account_id)
    if isinstance(command, OpenAccount | Deposit | Withdrawal | Transfer):
        _check_currency("currency", command.currency)
    if isinstance(command, Deposit | Withdrawal | Transfer):
        _check_reference("reference", command.reference)


def _check_screening(command: ConfigureScreening) -> None:
    key = command.account_id
    if not (key.startswith(SCREENING_KEY_PREFIX) and len(key) <= ID_LENGTH_MAX):
        raise _invalid("account_id", f"a screening key is {SCREENING_KEY_PREFIX}<n>", key)
    if len(command.rules_json) > RULES_JSON_LENGTH_MAX:
        raise _invalid(
            "rules_json", f"longer than {RULES_JSON_LENGTH_MAX}", len(command.rules_json)
        )


def _check_request_payout(command: RequestPayout) -> None:
    _check_id("batch_id", command.batch_id)
    _check_currency("currency", command.currency)
    _check_reference("reference", command.reference)
    if len(command.beneficiary_name) > BENEFICIARY_NAME_LENGTH_MAX:
        raise _invalid("beneficiary_name", "too long", len(command.beneficiary_name))
    for field in ("beneficiary_country", "beneficiary_iban", "beneficiary_bic",
                  "beneficiary_account_number", "beneficiary_routing_number"):  # fmt: skip
        value = getattr(command, field)
        if value is not None and len(value) > BENEFICIARY_FIELD_LENGTH_MAX:
            raise _invalid(field, f"longer than {BENEFICIARY_FIELD_LENGTH_MAX}", value)


def _check_payout_command(command: DecidePayout | SendPayout | SettlePayout | FailPayout) -> None:
    _check_id("payout_id", command.payout_id)
    if isinstance(command, DecidePayout):
        if command.decision not in DECISIONS:
            raise _invalid("decision", f"one of {', '.join(DECISIONS)}", command.decision)
        _check_id("officer", command.officer)
        _check_reference("reason", command.reason, length_max=REASON_LENGTH_MAX)
    if isinstance(command, FailPayout):
        _check_id("reason_code", command.reason_code, length_max=BENEFICIARY_FIELD_LENGTH_MAX)
        _check_reference("reason", command.reason, length_max=REASON_LENGTH_MAX)


def validate_leg(leg: Leg) -> None:
    """Raise ``PoisonMessage("invalid_field", …)`` if ``leg`` is malformed."""
    _check_id("transfer_id", leg.transfer_id)
    _check_id("partner_id", leg.partner_id)
    _check_time("issued_at_ms", leg.issued_at_ms)
    _check_client_account("source_account_id", leg.source_account_id)
    _check_client_account("destination_account_id", leg.destination_account_id)
    _check_currency("currency", leg.currency)
    _check_reference("reference", leg.reference)
    if isinstance(leg, Compensation):
        _check_rejection_code("reason", leg.reason)


def validate_journal_entry(entry: JournalEntry) -> None:
    """Raise ``PoisonMessage("invalid_field", …)`` if ``entry`` is malformed (not unbalanced:
    that is an invariant the consumer checks with ``ledger.journal.check_balanced``)."""
    _check_id("entry_id", entry.entry_id, length_max=DERIVED_ID_LENGTH_MAX)
    _check_id("payment_id", entry.payment_id)
    _check_id("partner_id", entry.partner_id)
    _check_id("account_id", entry.account_id)
    _check_time("issued_at_ms", entry.issued_at_ms)
    if not LINE_COUNT_MIN <= len(entry.lines) <= LINE_COUNT_MAX:
        raise _invalid(
            "lines", f"count must be {LINE_COUNT_MIN}..{LINE_COUNT_MAX}", len(entry.lines)
        )
    for line in entry.lines:
        _check_id("lines.account_id", line.account_id)
        _check_currency("lines.currency", line.currency)


def validate_event(event: Event) -> None:
    """Raise ``PoisonMessage("invalid_field", …)`` if ``event`` is malformed."""
    _check_id("event_id", event.event_id, length_max=DERIVED_ID_LENGTH_MAX)
    _check_id("payment_id", event.payment_id)
    _check_id("command_type", event.command_type)
    _check_id("partner_id", event.partner_id)
    _check_id("account_id", event.account_id)
    _check_time("issued_at_ms", event.issued_at_ms)
    if event.counterparty_account_id is not None:
        _check_id("counterparty_account_id", event.counterparty_account_id)
    if event.currency is not None:
        _check_currency("currency", event.currency)
    if event.code is not None:
        _check_rejection_code("code", event.code)
    if event.original_payment_id is not None:
        _check_id("original_payment_id", event.original_payment_id)
    _check_reference("reference", event.reference)


def header_is_readable(header: CommandHeader) -> bool:
    """Whether a poison command's ids can key an answer: a command id, partner and account
    of 1..ID_LENGTH_MAX characters (the request id is only hashed; its length is free)."""
    return all(
        0 < len(value) <= ID_LENGTH_MAX
        for value in (header.command_id, header.partner_id, header.account_id)
    )
