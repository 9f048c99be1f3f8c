"""What every command endpoint takes: the idempotency key, Prefer, bounded ids, a partner."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header
from pydantic import AfterValidator, StringConstraints, WithJsonSchema

from paystream.api.auth import Principal
from paystream.api.problems import Problem
from paystream.api.submit import IDEMPOTENCY_KEY_LENGTH_MAX
from paystream.ledger import ISO4217_CODES, is_iso4217
from paystream.ledger.models import REFERENCE_LENGTH_MAX
from paystream.topology.validation import ID_LENGTH_MAX

PREFER_LENGTH_MAX = 200

ClientAccountId = Annotated[
    str, StringConstraints(min_length=1, max_length=ID_LENGTH_MAX, pattern=r"^[^@\s][^\s]*$")
]
"""A client account id (``@`` starts system accounts' ids only)."""


def _active_currency(code: str) -> str:
    if not is_iso4217(code):
        raise ValueError("not an active ISO-4217 currency code")
    return code


Currency = Annotated[
    str,
    AfterValidator(_active_currency),
    WithJsonSchema({"type": "string", "enum": sorted(ISO4217_CODES)}),
]
"""An active ISO-4217 code (the OpenAPI document lists them)."""
Reference = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=REFERENCE_LENGTH_MAX, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$"
    ),
]
"""The sender's own words for a payment (an invoice number, a remittance line): at most a
SEPA remittance line's 140 characters, no control characters."""
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_LENGTH_MAX,
        description="The request's id: a retry with the same key and body gets the same answer",
    ),
]
Prefer = Annotated[
    str | None,
    Header(max_length=PREFER_LENGTH_MAX, description="`wait=N`: wait up to N s for the end"),
]


def writer_partner(who: Principal) -> str:
    """The partner a command is submitted for: the token's (commands need one)."""
    if who.partner_id is None:
        raise Problem(403, "forbidden", "commands need a partner's token (a partner_id claim)")
    return who.partner_id
