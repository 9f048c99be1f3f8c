"""The dashboard's questions, each a named function with its SQL beside it.

The page, the JSON endpoints and the tests all ask through these. Every query reads the
deduplicated state (``FINAL``), so a batch written twice never counts twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paystream.analytics.rows import at
from paystream.analytics.schema import Client

PAYMENT_COMMANDS = ("Transfer", "Deposit", "Withdrawal")
TERMINAL_EVENTS = ("Completed", "Reversed", "Rejected")
SERIES_POINTS_MAX = 500
"""A series has at most this many intervals: a wider range gets wider intervals."""
STEPS_S = (1, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86_400, 7 * 86_400)
DEAD_LETTERS_SHOWN_MAX = 100

OWN_EVENT = """
      position(event_id, concat(payment_id, ':')) = 1
      AND position(substring(event_id, length(payment_id) + 2), ':') = 0
"""
"""A payment's own events only (``<payment id>:<step>``): answers to records that reused an
id (``<id>:<step>:<partition>.<offset>``) are not steps of that payment."""
PAYMENTS_IN_RANGE = f"""
    command_type IN {{commands:Array(String)}}
      AND issued_at >= {{start:DateTime64(3)}} AND issued_at < {{end:DateTime64(3)}}
      AND {OWN_EVENT}
"""
FUNNEL_COUNTS = """
        countIf(type = 'Debited' OR type = 'Rejected'
                OR (type IN ('Completed', 'Reversed') AND command_type != 'Transfer'))
            AS requested,
        countIf(type = 'Debited') AS debited,
        countIf(type = 'Completed') AS completed,
        countIf(type = 'Reversed') AS reversed,
        countIf(type = 'Rejected') AS rejected,
        countIf(type = 'Duplicate') AS duplicates
"""
"""Counts of own events, each of which ``FINAL`` leaves once: a payment has at most one own
event of each type, and exactly one that starts it: ``Debited`` (a transfer's step 1),
``Rejected`` (refused at its first step; a refused credit is ``Reversed``), or the one
terminal event of a single-step payment (deposit, withdrawal). Counting is 5x cheaper here
than ``uniqExact`` over payment ids (``bench/analytics_queries.py``)."""
BUCKET = "toStartOfInterval({column}, toIntervalSecond({{step_s:UInt32}}), 'UTC')"


def series_step_s(start_ms: int, end_ms: int) -> int:
    """The narrowest of STEPS_S that cuts [start, end) into at most SERIES_POINTS_MAX."""
    span_s = max(end_ms - start_ms, 0) / 1000
    for step_s in STEPS_S:
        if span_s / step_s <= SERIES_POINTS_MAX:
            return step_s
    return STEPS_S[-1]


def _range(start_ms: int, end_ms: int) -> dict[str, Any]:
    return {"commands": list(PAYMENT_COMMANDS), "start": at(start_ms), "end": at(end_ms)}


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


FUNNEL_SQL = f"""
    SELECT {FUNNEL_COUNTS}
    FROM {{db}}.events FINAL
    WHERE {PAYMENTS_IN_RANGE}
"""


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

    @property
    def dedupe_rate(self) -> float | None:
        """Idempotent repeats among all the payment requests that arrived."""
        arrived = self.requested + self.duplicates
        return None if arrived == 0 else self.duplicates / arrived


def funnel(client: Client, database: str, *, start_ms: int, end_ms: int) -> Funnel:
    """Payments issued in [start, end): requested -> debited -> completed / reversed / rejected."""
    row = client.query(
        FUNNEL_SQL.replace("{db}", database), parameters=_range(start_ms, end_ms)
    ).result_rows[0]
    return Funnel(*(int(value) for value in row))


FUNNEL_SERIES_SQL = f"""
    SELECT {BUCKET.format(column="issued_at")} AS bucket, {FUNNEL_COUNTS}
    FROM {{db}}.events FINAL
    WHERE {PAYMENTS_IN_RANGE}
    GROUP BY bucket ORDER BY bucket
"""


def funnel_series(
    client: Client, database: str, *, start_ms: int, end_ms: int, step_s: int
) -> list[tuple[int, Funnel]]:
    """The funnel per interval of ``step_s`` (interval start in ms), intervals with payments."""
    rows = client.query(
        FUNNEL_SERIES_SQL.replace("{db}", database),
        parameters={**_range(start_ms, end_ms), "step_s": step_s},
    ).result_rows
    return [(_ms(bucket), Funnel(*(int(v) for v in values))) for bucket, *values in rows]


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


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Milliseconds from a payment's command time, per interval of its command time."""

    start_ms: int
    payments: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


LATENCY_SQL = f"""
    SELECT {BUCKET.format(column="issued_at")} AS bucket, count(),
        quantilesExact(0.5, 0.95, 0.99)(
            toUnixTimestamp64Milli(logged_at) - toUnixTimestamp64Milli(issued_at))
    FROM {{db}}.events FINAL
    WHERE type IN {{terminal:Array(String)}} AND {PAYMENTS_IN_RANGE}
    GROUP BY bucket ORDER BY bucket
"""
"""End to end: command time -> the terminal event (Completed, Reversed, Rejected) logged."""


def latency(
    client: Client, database: str, *, start_ms: int, end_ms: int, step_s: int
) -> list[Percentiles]:
    """End-to-end latency P50/P95/P99 per interval: command time -> terminal event."""
    return _percentiles(client, LATENCY_SQL, database, start_ms, end_ms, step_s)


CONSISTENCY_TIME_SQL = f"""
    SELECT {BUCKET.format(column="issued")} AS bucket, count(),
        quantilesExact(0.5, 0.95, 0.99)(
            toUnixTimestamp64Milli(settled) - toUnixTimestamp64Milli(issued))
    FROM (
        SELECT payment_id, min(issued_at) AS issued, max(logged_at) AS settled
        FROM {{db}}.ledger_lines FINAL
        WHERE issued_at >= {{start:DateTime64(3)}} AND issued_at < {{end:DateTime64(3)}}
          AND payment_id IN (
              SELECT payment_id FROM {{db}}.events FINAL
              WHERE type IN {{terminal:Array(String)}} AND {PAYMENTS_IN_RANGE})
        GROUP BY payment_id)
    GROUP BY bucket ORDER BY bucket
"""
"""Time to consistency: command time -> the payment's last journal entry logged (its money
no longer in transit), for payments that have ended."""


def time_to_consistency(
    client: Client, database: str, *, start_ms: int, end_ms: int, step_s: int
) -> list[Percentiles]:
    """P50/P95/P99 per interval of the time until a payment's ledger is settled."""
    return _percentiles(client, CONSISTENCY_TIME_SQL, database, start_ms, end_ms, step_s)


def _percentiles(
    client: Client, sql: str, database: str, start_ms: int, end_ms: int, step_s: int
) -> list[Percentiles]:
    rows = client.query(
        sql.replace("{db}", database),
        parameters={
            **_range(start_ms, end_ms), "step_s": step_s, "terminal": list(TERMINAL_EVENTS),
        },
    ).result_rows  # fmt: skip
    return [
        Percentiles(_ms(bucket), int(count), float(q[0]), float(q[1]), float(q[2]))
        for bucket, count, q in rows
    ]


@dataclass(frozen=True, slots=True)
class Freshness:
    """The newest fact of one kind in the store, and how old it is."""

    source: str
    facts: int
    newest_ms: int | None
    age_ms: int | None


FRESHNESS_SQL = """
    SELECT 'events', count(), max(logged_at) FROM {db}.events
    UNION ALL SELECT 'ledger', count(), max(logged_at) FROM {db}.ledger_lines
    UNION ALL SELECT 'dlq', count(), max(logged_at) FROM {db}.dead_letters
"""
"""Counts here are of stored rows (a batch written twice may count twice until a merge);
only the newest time matters."""


def freshness(client: Client, database: str, *, now_ms: int) -> list[Freshness]:
    """Event lag per log: ``now`` minus the newest record's log time in the store."""
    found = []
    for source, count, newest in client.query(FRESHNESS_SQL.replace("{db}", database)).result_rows:
        newest_ms = _ms(newest) if int(count) else None
        age_ms = None if newest_ms is None else max(now_ms - newest_ms, 0)
        found.append(Freshness(str(source), int(count), newest_ms, age_ms))
    return sorted(found, key=lambda f: f.source)


@dataclass(frozen=True, slots=True)
class DeadLetterDepth:
    start_ms: int
    arrived: int
    depth: int
    """Dead letters logged before the end of this interval (the DLQ is a log: none leave)."""


DLQ_DEPTH_SQL = f"""
    SELECT {BUCKET.format(column="logged_at")} AS bucket, count()
    FROM {{db}}.dead_letters FINAL
    WHERE logged_at >= {{start:DateTime64(3)}} AND logged_at < {{end:DateTime64(3)}}
    GROUP BY bucket ORDER BY bucket
"""
DLQ_BEFORE_SQL = """
    SELECT count() FROM {db}.dead_letters FINAL WHERE logged_at < {start:DateTime64(3)}
"""


def dlq_depth(
    client: Client, database: str, *, start_ms: int, end_ms: int, step_s: int
) -> list[DeadLetterDepth]:
    """Dead letters per interval of their log time, and the DLQ's depth after each."""
    parameters = {"start": at(start_ms), "end": at(end_ms), "step_s": step_s}
    before = client.query(DLQ_BEFORE_SQL.replace("{db}", database), parameters=parameters)
    depth = int(before.result_rows[0][0])
    series = []
    for bucket, count in client.query(
        DLQ_DEPTH_SQL.replace("{db}", database), parameters=parameters
    ).result_rows:
        depth += int(count)
        series.append(DeadLetterDepth(_ms(bucket), int(count), depth))
    return series


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    reason: str
    detail: str | None
    origin_topic: str | None
    logged_at_ms: int


NEWEST_DEAD_LETTERS_SQL = """
    SELECT dlq_partition, dlq_offset, reason, detail, origin_topic, logged_at
    FROM {db}.dead_letters FINAL
    WHERE logged_at >= {start:DateTime64(3)} AND logged_at < {end:DateTime64(3)}
    ORDER BY logged_at DESC, dlq_partition, dlq_offset DESC LIMIT {limit:UInt32}
"""


def newest_dead_letters(
    client: Client, database: str, *, start_ms: int, end_ms: int, limit: int
) -> list[DeadLetter]:
    """The newest dead letters in [start, end) with their reasons, newest first."""
    rows = client.query(
        NEWEST_DEAD_LETTERS_SQL.replace("{db}", database),
        parameters={
            "start": at(start_ms), "end": at(end_ms),
            "limit": min(limit, DEAD_LETTERS_SHOWN_MAX),
        },
    ).result_rows  # fmt: skip
    return [
        DeadLetter(int(p), int(o), str(reason), detail, origin, _ms(logged))
        for p, o, reason, detail, origin, logged in rows
    ]
