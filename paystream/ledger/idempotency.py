"""Idempotency keys and the canonical body hash of an input.

Body encoding, version 1 (``BODY_ENCODING_VERSION``), written so that an
auditor can reimplement it in any language:

    "paystream.body/1\\n" STR(type name) then, for every field sorted by name
    except ``command_id`` and ``issued_at_ms``, and except an optional field added
    since version 1 (``reference``) whose value is None: STR(field name) VALUE

    STR(s)   = "s" <number of code points of s, decimal> ":" s
    VALUE    = STR(v) for str | "i" <decimal> ";" for int | "t" / "f" for bool | "n" for None

The text is encoded as UTF-8 (lone surrogates passed through) and hashed with
SHA-256; the result is the lowercase hex digest. Field order in the dataclass,
Python's ``repr`` and hash seeds do not matter. Any change to this encoding
must bump the version (and the prefix). A field added later is left out while it is
None, so every body written before it existed hashes as it did (stored idempotency
records, open reservations and replays of old commands stay valid): that keeps the
version at 1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from operator import attrgetter

from paystream.ledger.errors import InvariantViolation
from paystream.ledger.models import (
    COMMAND_TYPES,
    Compensation,
    Confirmation,
    CreditLeg,
    IdempotencyKey,
    Input,
    Leg,
    Malformed,
)

BODY_ENCODING_VERSION = 1
BODY_ENCODING_PREFIX = f"paystream.body/{BODY_ENCODING_VERSION}\n"

BODY_EXCLUDED_FIELDS: frozenset[str] = frozenset(("command_id", "issued_at_ms"))
"""Fields that differ between a request and its exact duplicate."""

BODY_OPTIONAL_FIELDS: frozenset[str] = frozenset(("reference",))
"""Fields added after version 1: encoded only when not None."""

_INPUT_TYPES: tuple[type[Input], ...] = (
    *COMMAND_TYPES,
    Malformed,
    CreditLeg,
    Confirmation,
    Compensation,
)


def _str_token(text: str) -> str:
    return f"s{len(text)}:{text}"


@dataclass(frozen=True, slots=True)
class _BodyLayout:
    """Per input type, precomputed: the encoded head, the encoded field names, a getter."""

    head: str
    name_tokens: tuple[str, ...]
    values: Callable[[Input], tuple[object, ...]]


def _body_layout(cls: type[Input]) -> _BodyLayout:
    names = sorted(f.name for f in fields(cls) if f.name not in BODY_EXCLUDED_FIELDS)
    getter = attrgetter(*names)
    return _BodyLayout(
        head=BODY_ENCODING_PREFIX + _str_token(cls.__name__),
        name_tokens=tuple(_str_token(name) for name in names),
        values=lambda item: tuple(getter(item)),
    )


_OPTIONAL_NAME_TOKENS: frozenset[str] = frozenset(map(_str_token, BODY_OPTIONAL_FIELDS))
_BODY_LAYOUTS: dict[type, _BodyLayout] = {cls: _body_layout(cls) for cls in _INPUT_TYPES}


def body_sha256(item: Input) -> str:
    """Hex SHA-256 of the canonical encoding (see module docs) of ``item``'s body."""
    layout = _BODY_LAYOUTS.get(type(item))
    if layout is None:
        raise InvariantViolation(f"body_sha256: not an input type: {type(item).__name__}")
    parts = [layout.head]
    for name_token, value in zip(layout.name_tokens, layout.values(item), strict=True):
        if value is None and name_token in _OPTIONAL_NAME_TOKENS:
            continue
        parts.append(name_token)
        parts.append(f"s{len(value)}:{value}" if type(value) is str else _encode_value(value))
    return hashlib.sha256("".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _encode_value(value: object) -> str:
    if type(value) is str:
        return _str_token(value)
    if type(value) is bool:
        return "t" if value else "f"
    if type(value) is int:
        return f"i{value};"
    if value is None:
        return "n"
    raise InvariantViolation(f"body_sha256: unsupported field value {value!r}")


def request_key(partner_id: str, request_id: str) -> IdempotencyKey:
    """A partner's request id (Stripe's Idempotency-Key): partners never share keys."""
    return ("request", partner_id, request_id)


def command_key(command_id: str) -> IdempotencyKey:
    """The claim of a command id on its partition."""
    return ("command", "", command_id)


def leg_key(leg: Leg) -> IdempotencyKey:
    """A saga leg, applied once on the partition of the account it acts on. A transfer is
    settled once: its Confirmation and its Compensation share one key."""
    if isinstance(leg, CreditLeg):
        return ("credit", "", leg.transfer_id)
    return ("settlement", "", leg.transfer_id)
