"""Poison messages: input a worker cannot process, sent to ``dlq`` with the reason.

Decoding raises ``PoisonMessage``; the agent catches it, sends the original
record to the ``dlq`` topic (same key and value) with ``dlq_headers(...)`` and
moves on. It is an operating error, never a crash and never a silent drop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, get_args

__all__ = [
    "DETAIL_LENGTH_MAX",
    "DLQ_KEY_BYTES_MAX",
    "DLQ_VALUE_BYTES_MAX",
    "POISON_CODES",
    "CommandHeader",
    "PoisonCode",
    "PoisonMessage",
    "dlq_copy",
    "dlq_headers",
]

PoisonCode: TypeAlias = Literal[
    "undecodable", "unknown_schema_id", "unknown_command", "invalid_field", "wrong_partition"
]
POISON_CODES: Final[tuple[PoisonCode, ...]] = get_args(PoisonCode)

DLQ_VALUE_BYTES_MAX: Final = 64 * 1024
"""Longest value a DLQ record keeps. A longer original (up to the broker's message size,
which the DLQ copy's headers would push past) keeps this prefix, with its full length
in ``dlq.size`` and its SHA-256 in ``dlq.sha256``: never a produce error, nothing lost
that an operator needs to find the original at ``dlq.topic``/``dlq.partition``/``dlq.offset``."""


DLQ_KEY_BYTES_MAX: Final = 1024
"""Longest key a DLQ record keeps (keys are account ids, at most 128 characters)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandHeader:
    """The ids of a poison command, when they could be read: its sender gets an answer."""

    command_id: str
    request_id: str
    partner_id: str
    account_id: str
    issued_at_ms: int
    command_type: str


DETAIL_LENGTH_MAX: Final = 1024
"""Longest ``dlq.detail`` header, in characters; longer details are cut."""


class PoisonMessage(Exception):
    """A message that can never be processed; ``code`` is stable, ``detail`` is for humans."""

    def __init__(
        self, code: PoisonCode, detail: str, *, header: CommandHeader | None = None
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code: PoisonCode = code
        self.detail = detail
        self.header = header


def dlq_headers(
    error: PoisonMessage, *, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """Kafka headers that say why and where a poison message came from."""
    return [
        ("dlq.reason", error.code.encode()),
        ("dlq.detail", error.detail[:DETAIL_LENGTH_MAX].encode("utf-8", "backslashreplace")),
        ("dlq.topic", topic.encode()),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
    ]


def dlq_copy(
    key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The key, value and headers a DLQ record carries: the original, or bounded prefixes
    (with the original's size and SHA-256 in ``dlq.key_size``/``dlq.key_sha256`` and
    ``dlq.size``/``dlq.sha256``)."""
    headers = list(headers)
    if len(key) > DLQ_KEY_BYTES_MAX:
        headers += _digest("dlq.key_", key)
        key = key[:DLQ_KEY_BYTES_MAX]
    if len(value) > DLQ_VALUE_BYTES_MAX:
        headers += _digest("dlq.", value)
        value = value[:DLQ_VALUE_BYTES_MAX]
    return key, value, headers


def _digest(prefix: str, data: bytes) -> list[tuple[str, bytes]]:
    return [
        (f"{prefix}size", str(len(data)).encode()),
        (f"{prefix}sha256", hashlib.sha256(data).hexdigest().encode()),
    ]
