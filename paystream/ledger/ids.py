"""Command ids: time-ordered, bound to one partition, valid for a window of log time.

A command id is a payment id, and a payment id names one payment forever: its
journal ids (``<payment id>:<step>``) must stay unique on ``ledger``. Workers
only see their own partitions, so an id carries what lets one worker alone
refuse a second use:

- **the partition it was minted for** (Instagram/Snowflake ids carry their
  shard the same way): a command whose id names another partition is refused,
  so one id can be claimed on one partition only;
- **its minting time** (a ULID: 48-bit Unix milliseconds + 80 random bits,
  Crockford base32): an id is accepted only while its time lies inside the
  retention window of the partition's log clock, and its claim is kept for
  exactly that long, so forgetting old claims never makes an id usable again.

Text form: ``<26-char ULID>-<partition>``, e.g. ``01JDQ3V7W5K8Y2M4N6P8R0T2V4-3``.
Pure: minting takes the time and the randomness as arguments.
"""

from __future__ import annotations

import re
from typing import Final

from ulid import ULID

from paystream.ledger.errors import ensure

__all__ = [
    "COMMAND_ID_PATTERN",
    "ULID_RANDOM_BYTES",
    "command_id_parts",
    "mint_command_id",
]

ULID_RANDOM_BYTES: Final = 10
PARTITION_DIGITS_MAX: Final = 10
COMMAND_ID_PATTERN: Final = re.compile(
    rf"^([0-7][0-9A-HJKMNP-TV-Z]{{25}})-(0|[1-9][0-9]{{0,{PARTITION_DIGITS_MAX - 1}}})$"
)
"""A ULID (first character 0-7: 48-bit time) and a partition number without leading zeros."""
ULID_TIME_CHARS: Final = 10
"""The ULID's first 10 characters: its 48-bit time, big-endian, in Crockford base32."""
_CROCKFORD_AS_BASE32: Final = str.maketrans(
    "0123456789ABCDEFGHJKMNPQRSTVWXYZ", "0123456789ABCDEFGHIJKLMNOPQRSTUV"
)
"""Crockford's digits as the digits ``int(text, 32)`` reads (both in value order)."""


def mint_command_id(*, partition: int, at_ms: int, random_bytes: bytes) -> str:
    """A command id for ``partition`` minted at ``at_ms`` (Unix ms) with 10 random bytes."""
    ensure(len(random_bytes) == ULID_RANDOM_BYTES, "a ULID needs 10 random bytes")
    ensure(0 <= at_ms < 2**48, "ULID time out of range")
    ensure(0 <= partition < 10**PARTITION_DIGITS_MAX, "partition out of range")
    ulid = ULID.from_bytes(at_ms.to_bytes(6, "big") + random_bytes)
    return f"{ulid}-{partition}"


def command_id_parts(command_id: str) -> tuple[int, int] | None:
    """``(partition, minted_at_ms)`` of a well-formed command id, else ``None``."""
    match = COMMAND_ID_PATTERN.match(command_id)
    if match is None:
        return None
    # The ULID's time read directly (0.8 us) instead of parsing the whole ULID with
    # python-ulid (10 us): every command and leg reads it, worker and replay alike.
    minted_at_ms = int(match.group(1)[:ULID_TIME_CHARS].translate(_CROCKFORD_AS_BASE32), 32)
    return int(match.group(2)), minted_at_ms
