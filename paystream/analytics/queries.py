"""The dashboard's questions, each a named function with its SQL beside it.

The page, the JSON endpoints and the tests all ask through these. Every query reads the
deduplicated state (``FINAL``), so a batch written twice never counts twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from paystream.analytics.rows import at
from paystream.analytics.schema import Client

PAYMENT_COMMANDS = ("Transfer", "Deposit", "Withdrawal")

FUNNEL_SQL = """
    SELECT
        uniqExactIf(payment_id, type != 'Duplicate') AS requested,
        uniqExactIf(payment_id, type = 'Debited') AS debited,
        uniqExactIf(payment_id, type = 'Completed') AS completed,
        uniqExactIf(payment_id, type = 'Reversed') AS reversed,
        uniqExactIf(payment_id, type = 'Rejected') AS rejected,
        countIf(type = 'Duplicate') AS duplicates
    FROM {db}.events FINAL
    WHERE command_type IN {commands:Array(String)}
      AND issued_at >= {start:DateTime64(3)} AND issued_at < {end:DateTime64(3)}
      AND position(event_id, concat(payment_id, ':')) = 1
      AND position(substring(event_id, length(payment_id) + 2), ':') = 0
"""
"""A payment's own events only (``<payment id>:<step>``): answers to records that reused an
id (``<id>:<step>:<partition>.<offset>``) are not steps of that payment."""


@dataclass(frozen=True, slots=True)
class Funnel:
    requested: int
    debited: int
    completed: int
    reversed: int
    rejected: int
    duplicates: int

    @property
    def success_rate(self) -> float | None:
        ended = self.completed + self.reversed + self.rejected
        return None if ended == 0 else self.completed / ended

    @property
    def compensation_rate(self) -> float | None:
        """Reversed among the transfers that were debited (seed KPI: under 0.2 %)."""
        return None if self.debited == 0 else self.reversed / self.debited


def funnel(client: Client, database: str, *, start_ms: int, end_ms: int) -> Funnel:
    """Payments issued in [start, end): requested -> debited -> completed / reversed / rejected."""
    row = client.query(
        FUNNEL_SQL.replace("{db}", database),
        parameters={"commands": list(PAYMENT_COMMANDS), "start": at(start_ms), "end": at(end_ms)},
    ).result_rows[0]
    return Funnel(*(int(value) for value in row))


CONSISTENCY_SQL = """
    SELECT
        currency,
        sumIf(amount_minor, side = 'debit') AS debits_minor,
        sumIf(amount_minor, side = 'credit') AS credits_minor,
        sumIf(if(side = 'debit', amount_minor, -amount_minor),
              startsWith(account_id, '@transit') AND phase IN ('posted', 'post')) AS transit_minor
    FROM {db}.ledger_lines FINAL
    GROUP BY currency ORDER BY currency
"""


@dataclass(frozen=True, slots=True)
class CurrencyConsistency:
    currency: str
    debits_minor: int
    credits_minor: int
    transit_minor: int
    """Money credited to destinations and not yet posted from the sources: transfers between
    their steps 2 and 3 (the transit shards' posted debits less credits); 0 at quiescence."""

    @property
    def difference_minor(self) -> int:
        """Σ debits - Σ credits: 0 while every journal entry balances."""
        return self.debits_minor - self.credits_minor


def ledger_consistency(client: Client, database: str) -> list[CurrencyConsistency]:
    """Per currency: the ledger's debits, credits, their difference, and money in transit."""
    rows = client.query(CONSISTENCY_SQL.replace("{db}", database)).result_rows
    return [
        CurrencyConsistency(str(currency), int(debits), int(credits), int(transit))
        for currency, debits, credits, transit in rows
    ]
