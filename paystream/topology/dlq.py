"""Poison messages: input a worker cannot process, sent to ``dlq`` with the reason.

Decoding raises ``PoisonMessage``; the agent catches it, sends the original
record to the ``dlq`` topic (same key and value) with ``dlq_headers(...)`` and
moves on. It is an operating error, never a crash and never a silent drop.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

__all__ = [
    "DETAIL_LENGTH_MAX",
    "POISON_CODES",
    "PoisonCode",
    "PoisonMessage",
    "dlq_headers",
]

PoisonCode: TypeAlias = Literal[
    "undecodable", "unknown_schema_id", "unknown_command", "invalid_field"
]
POISON_CODES: Final[tuple[PoisonCode, ...]] = (
    "undecodable",
    "unknown_schema_id",
    "unknown_command",
    "invalid_field",
)

DETAIL_LENGTH_MAX: Final = 1024
"""Longest ``dlq.detail`` header, in characters; longer details are cut."""


class PoisonMessage(Exception):
    """A message that can never be processed; ``code`` is stable, ``detail`` is for humans."""

    def __init__(self, code: PoisonCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code: PoisonCode = code
        self.detail = detail


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
