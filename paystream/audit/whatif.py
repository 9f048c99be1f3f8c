"""What-if: how each payment ended under the recorded rules and under others (pure).

A payment's *end* is its last own terminal event (``Completed``, ``Reversed``, ``Rejected``
with its code; a transfer's ``Debited`` is a step, not an end). What it *moved* is read from
its posted journal lines on client accounts: the larger of what they were debited and what
they were credited (a transfer of 100 moves 100; a fee on it would make it 101; a refused
one moves 0). Reserved (``pending``) and voided amounts move nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from paystream.ledger import (
    TERMINAL_EVENT_TYPES,
    Event,
    JournalEntry,
    is_own_event,
    is_system_account_id,
)

__all__ = ["ChangedPayment", "Outcome", "changed_payments", "outcomes", "totals_by_currency"]

_MOVING_PHASES: Final = frozenset(("posted", "post"))
NO_END: Final = "no end"
"""The end of a payment with no terminal event (a transfer still in flight)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    end: str
    """``Completed``, ``Reversed <code>``, ``Rejected <code>``, ``Duplicate`` or NO_END."""
    currency: str | None
    moved_minor: int


@dataclass(frozen=True, slots=True)
class ChangedPayment:
    payment_id: str
    currency: str | None
    recorded: Outcome
    what_if: Outcome

    @property
    def difference_minor(self) -> int:
        return self.what_if.moved_minor - self.recorded.moved_minor

    def to_json(self) -> dict[str, Any]:
        return {
            "payment_id": self.payment_id, "currency": self.currency,
            "recorded": self.recorded.end, "what_if": self.what_if.end,
            "recorded_moved_minor": self.recorded.moved_minor,
            "what_if_moved_minor": self.what_if.moved_minor,
            "difference_minor": self.difference_minor,
        }  # fmt: skip


def outcomes(entries: Iterable[JournalEntry], events: Iterable[Event]) -> dict[str, Outcome]:
    """Each payment's end and what it moved; ``events`` in the order they were written."""
    ends: dict[str, str] = {}
    currencies: dict[str, str | None] = {}
    for event in events:
        if is_own_event(event) and event.type in TERMINAL_EVENT_TYPES:
            ends[event.payment_id] = _end(event)
            currencies[event.payment_id] = event.currency
    debited: dict[str, int] = defaultdict(int)
    credited: dict[str, int] = defaultdict(int)
    for entry in entries:
        if entry.phase not in _MOVING_PHASES:
            continue
        for line in entry.lines:
            if is_system_account_id(line.account_id):
                continue
            moved = debited if line.side == "debit" else credited
            moved[entry.payment_id] += line.amount_minor
            currencies.setdefault(entry.payment_id, line.currency)
    payments = ends.keys() | debited.keys() | credited.keys()
    return {
        p: Outcome(ends.get(p, NO_END), currencies.get(p), max(debited[p], credited[p]))
        for p in payments
    }


def changed_payments(
    recorded: Mapping[str, Outcome], what_if: Mapping[str, Outcome]
) -> list[ChangedPayment]:
    """Payments that end differently or move a different amount, by id."""
    nothing = Outcome(NO_END, None, 0)
    found: list[ChangedPayment] = []
    for payment_id in sorted(recorded.keys() | what_if.keys()):
        before, after = recorded.get(payment_id, nothing), what_if.get(payment_id, nothing)
        if (before.end, before.moved_minor) != (after.end, after.moved_minor):
            currency = before.currency or after.currency
            found.append(ChangedPayment(payment_id, currency, before, after))
    return found


def totals_by_currency(changed: Iterable[ChangedPayment]) -> dict[str, dict[str, int]]:
    """Per currency: payments changed, and money moved as recorded, under the what-if and
    the difference, over the changed payments."""
    totals: dict[str, dict[str, int]] = {}
    for payment in changed:
        total = totals.setdefault(
            payment.currency or "", dict.fromkeys(
                ("payments", "recorded_moved_minor", "what_if_moved_minor", "difference_minor"), 0
            ),
        )  # fmt: skip
        total["payments"] += 1
        total["recorded_moved_minor"] += payment.recorded.moved_minor
        total["what_if_moved_minor"] += payment.what_if.moved_minor
        total["difference_minor"] += payment.difference_minor
    return totals


def _end(event: Event) -> str:
    return event.type if event.code is None or event.type == "Duplicate" else (
        f"{event.type} {event.code}"
    )  # fmt: skip
