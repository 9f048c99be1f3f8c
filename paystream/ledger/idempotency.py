"""Idempotency keys and the canonical body hash of an input.

Body encoding, version 1 (``BODY_ENCODING_VERSION``), written so that an
auditor can reimplement it in any language:

    "paystream.body/1\\n" STR(type name) then, for every field sorted by name
    except ``command_id`` and ``issued_at_ms``: STR(field name) VALUE

    STR(s)   = "s" <number of code points of s, decimal> ":" s
    VALUE    = STR(v) for str | "i" <decimal> ";" for int | "t" / "f" for bool | "n" for None

The text is encoded as UTF-8 (lone surrogates passed through) and hashed with
SHA-256; the result is the lowercase hex digest. Field order in the dataclass,
Python's ``repr`` and hash seeds do not matter. Any change to this encoding
must bump the version (and the prefix).
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
    CreditLeg,
    IdempotencyKey,
    Input,
)

BODY_ENCODING_VERSION = 1
BODY_ENCODING_PREFIX = f"paystream.body/{BODY_ENCODING_VERSION}\n"

BODY_EXCLUDED_FIELDS: frozenset[str] = frozenset(("command_id", "issued_at_ms"))
"""Fields that differ between a request and its exact duplicate."""

LEG_KEY_PREFIX = "leg:"
COMPENSATION_KEY_PREFIX = "compensation:"
RESERVED_REQUEST_ID_PREFIXES: tuple[str, ...] = (LEG_KEY_PREFIX, COMPENSATION_KEY_PREFIX)
"""Request ids that would collide with the keys of saga legs; commands may not use them."""

_INPUT_TYPES: tuple[type[Input], ...] = (*COMMAND_TYPES, CreditLeg, Compensation)


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


_BODY_LAYOUTS: dict[type, _BodyLayout] = {cls: _body_layout(cls) for cls in _INPUT_TYPES}


def body_sha256(item: Input) -> str:
    """Hex SHA-256 of the canonical encoding (see module docs) of ``item``'s body."""
    layout = _BODY_LAYOUTS.get(type(item))
    if layout is None:
        raise InvariantViolation(f"body_sha256: not an input type: {type(item).__name__}")
    parts = [layout.head]
    for name_token, value in zip(layout.name_tokens, layout.values(item), strict=True):
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


def idempotency_key(item: Input) -> IdempotencyKey:
    """``(account, request_id)`` for commands; ``(account, prefix + transfer_id)`` for legs."""
    if isinstance(item, CreditLeg):
        return (item.destination_account_id, LEG_KEY_PREFIX + item.transfer_id)
    if isinstance(item, Compensation):
        return (item.source_account_id, COMPENSATION_KEY_PREFIX + item.transfer_id)
    return (item.account_id, item.request_id)


def is_reserved_request_id(request_id: str) -> bool:
    """Whether a client request id would take a key that belongs to a saga leg."""
    return request_id.startswith(RESERVED_REQUEST_ID_PREFIXES)
