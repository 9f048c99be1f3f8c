"""Programmer errors of the money core.

Operating errors (bad input, insufficient funds) are rejection codes, never
exceptions. An :class:`InvariantViolation` means the code or the state is wrong:
the worker stops loudly instead of moving money on a broken ledger.
"""

from __future__ import annotations


class InvariantViolation(Exception):
    """A money invariant does not hold; never caught inside the core."""


def ensure(condition: bool, message: str) -> None:
    """Always-on invariant check (Python's ``assert`` disappears under ``-O``)."""
    if not condition:
        raise InvariantViolation(message)
