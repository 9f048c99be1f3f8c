"""Bytes codecs of the ``payouts`` table (a RocksDB store and its changelog topic).

One table holds a partition's payout state, three kinds of rows told apart by their key's
first byte:

- ``b"p" + payout id`` -> a :class:`~paystream.ledger.models.Payout`;
- ``b"a" + account id`` -> the source account's screening
  :class:`~paystream.ledger.screening.PayoutProfile`;
- ``b"r"`` -> the partition's :class:`~paystream.ledger.screening.ScreeningRules`.

Values are a format byte (1) and canonical JSON (sorted keys, no spaces, UTF-8), not the
``struct`` layouts of ``tables.codecs``: a payout's rows are written a few times in its life,
not on every transfer, so speed does not matter here and JSON stays readable in a changelog
dump. Decoders check every field's type and vocabulary and raise ``CodecError`` otherwise
(corrupt state is a programmer error: the worker stops).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from typing import Any, Final

from paystream.ledger.models import DECISIONS, PAYOUT_STATES, REJECTION_CODES, Payout
from paystream.ledger.screening import (
    PayoutProfile,
    ScreeningRules,
    rules_from_json,
    rules_to_json,
)
from paystream.tables.codecs import CodecError

__all__ = [
    "RULES_KEY",
    "decode_payout",
    "decode_profile",
    "decode_rules",
    "encode_payout",
    "encode_profile",
    "encode_rules",
    "payout_key",
    "profile_key",
]

_FORMAT: Final = b"\x01"
RULES_KEY: Final = b"r"
"""The row of the partition's screening rules."""
_PAYOUT_PREFIX: Final = b"p"
_PROFILE_PREFIX: Final = b"a"
_OPTIONAL_TEXT: Final = frozenset(
    ("beneficiary_iban", "beneficiary_bic", "beneficiary_account_number",
     "beneficiary_routing_number", "reference", "failure_reason", "reservation")
)  # fmt: skip
_INTEGERS: Final = frozenset(
    ("issued_at_ms", "requested_at_ms", "amount_minor", "reservations", "version")
)
_VOCABULARY: Final[Mapping[str, frozenset[str | None]]] = {
    "state": frozenset(PAYOUT_STATES),
    "decision": frozenset((*DECISIONS, None)),
    "failure_code": frozenset((*REJECTION_CODES, None)),
}
_PAYOUT_FIELDS: Final = frozenset(f.name for f in fields(Payout))


def payout_key(payout_id: str) -> bytes:
    return _PAYOUT_PREFIX + payout_id.encode("utf-8")


def profile_key(account_id: str) -> bytes:
    return _PROFILE_PREFIX + account_id.encode("utf-8")


def _encode(document: Mapping[str, Any]) -> bytes:
    return _FORMAT + json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _decode(kind: str, data: bytes) -> Any:
    if data[:1] != _FORMAT:
        raise CodecError(f"{kind}: unknown format {data[:1]!r}")
    try:
        return json.loads(data[1:].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CodecError(f"{kind}: not JSON: {error}") from error


def encode_payout(payout: Payout) -> bytes:
    return _encode(asdict(payout))


def decode_payout(data: bytes) -> Payout:
    document = _decode("payout", data)
    if not isinstance(document, dict) or set(document) != _PAYOUT_FIELDS:
        raise CodecError(
            f"payout: fields {sorted(document) if isinstance(document, dict) else document!r}"
        )
    for name, value in document.items():
        _check_field(name, value)
    return Payout(**{**document, "rule_codes": tuple(document["rule_codes"])})


def _check_field(name: str, value: Any) -> None:
    if name in _INTEGERS:
        ok = type(value) is int
    elif name in _VOCABULARY:
        ok = value in _VOCABULARY[name]
    elif name == "rule_codes":
        ok = isinstance(value, list) and all(isinstance(code, str) for code in value)
    elif name in _OPTIONAL_TEXT:
        ok = value is None or isinstance(value, str)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise CodecError(f"payout: {name} = {value!r}")


def encode_profile(profile: PayoutProfile) -> bytes:
    return _encode(
        {
            "account_id": profile.account_id,
            "recent": [list(entry) for entry in profile.recent],
            "beneficiaries": list(profile.beneficiaries),
        }
    )


def decode_profile(data: bytes) -> PayoutProfile:
    document = _decode("profile", data)
    checks: dict[str, Callable[[Any], bool]] = {
        "account_id": lambda v: isinstance(v, str),
        "recent": lambda v: (
            isinstance(v, list)
            and all(
                isinstance(e, list) and len(e) == 2 and all(type(n) is int for n in e) for e in v
            )
        ),
        "beneficiaries": lambda v: isinstance(v, list) and all(isinstance(b, str) for b in v),
    }
    if not isinstance(document, dict) or set(document) != set(checks):
        raise CodecError(f"profile: {document!r:.200}")
    for name, check in checks.items():
        if not check(document[name]):
            raise CodecError(f"profile: {name} = {document[name]!r:.200}")
    return PayoutProfile(
        account_id=document["account_id"],
        recent=tuple((at_ms, amount) for at_ms, amount in document["recent"]),
        beneficiaries=tuple(document["beneficiaries"]),
    )


def encode_rules(rules: ScreeningRules) -> bytes:
    return _encode({"configured_by": rules.configured_by, "rules": rules_to_json(rules)})


def decode_rules(data: bytes) -> ScreeningRules:
    document = _decode("rules", data)
    if not isinstance(document, dict) or set(document) != {"configured_by", "rules"}:
        raise CodecError(f"rules: {document!r:.200}")
    configured_by, text = document["configured_by"], document["rules"]
    if not (configured_by is None or isinstance(configured_by, str)) or not isinstance(text, str):
        raise CodecError(f"rules: {document!r:.200}")
    try:
        return rules_from_json(text, configured_by=configured_by)
    except ValueError as error:
        raise CodecError(f"rules: {error}") from error
