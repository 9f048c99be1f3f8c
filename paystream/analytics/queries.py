"""The dashboard's questions, each a named function with its SQL beside it.

The page, the JSON endpoints and the tests all ask through these. Every query reads the
deduplicated state (``FINAL``), so a batch written twice never counts twice.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paystream.analytics import tallies
from paystream.analytics.rows import MONEY_COLUMNS, at
from paystream.analytics.schema import Client
from paystream.analytics.tallies import (
    HOUR_MS,
    PAYMENT_COMMANDS,
    TERMINAL_EVENTS,
    Measure,
    bin_ms,
)

SERIES_POINTS_MAX = 500
"""A series has at most this many intervals: a wider range gets wider intervals."""
STEPS_S = (1, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86_400, 7 * 86_400)
HOURLY_AFTER_S = 2 * 86_400
"""A range longer than this has intervals of an hour at least: whole hours are read from the
tallies, not the facts."""
DEAD_LETTERS_SHOWN_MAX = 100
PERCENTILE_LEVELS = (0.5, 0.95, 0.99)
LEVELS = ", ".join(str(level) for level in PERCENTILE_LEVELS)
"""The levels as the exact queries' ``quantilesExact`` takes them."""
LATENCY_MS = "toUnixTimestamp64Milli(logged_at) - toUnixTimestamp64Milli(issued_at)"

PAYMENTS_IN_RANGE = """
    command_type IN {commands:Array(String)}
      AND issued_at >= {start:DateTime64(3)} AND issued_at < {end:DateTime64(3)}
      AND own
"""
"""A payment's own events (``<payment id>:<step>``; :func:`paystream.ledger.is_own_event`):
answers to records that reused an id are not steps of that payment."""


def _funnel_counts(events: str) -> str:
    """The funnel's counts over rows of ``events`` own events each (1 for a fact, a count
    for a tally row).

    Each own event counts once (``FINAL`` leaves one copy of a fact; a tally counts a record
    once): a payment has at most one own event of each type, and exactly one that starts it:
    ``Debited`` (a transfer's step 1), ``Rejected`` (refused at its first step; a refused
    credit is ``Reversed``), or the one terminal event of a single-step payment (deposit,
    withdrawal). Counting is 5x cheaper than ``uniqExact`` over payment ids
    (``bench/analytics_queries.py``)."""
    return f"""
        sumIf({events}, type = 'Debited' OR type = 'Rejected'
                OR (type IN ('Completed', 'Reversed') AND command_type != 'Transfer'))
            AS requested,
        sumIf({events}, type = 'Debited') AS debited,
        sumIf({events}, type = 'Completed') AS completed,
        sumIf({events}, type = 'Reversed') AS reversed,
        sumIf({events}, type = 'Rejected') AS rejected,
        sumIf({events}, type = 'Duplicate') AS duplicates
    """


BUCKET = "toStartOfInterval({column}, toIntervalSecond({{step_s:UInt32}}), 'UTC')"


def series_step_s(start_ms: int, end_ms: int) -> int:
    """The narrowest of STEPS_S that cuts [start, end) into at most SERIES_POINTS_MAX, and
    an hour at least for a range longer than HOURLY_AFTER_S."""
    span_s = max(end_ms - start_ms, 0) / 1000
    least_s = 3600 if span_s > HOURLY_AFTER_S else 0
    for step_s in STEPS_S:
        if step_s >= least_s and span_s / step_s <= SERIES_POINTS_MAX:
            return step_s
    return STEPS_S[-1]


def _range(start_ms: int, end_ms: int) -> dict[str, Any]:
    return {"commands": list(PAYMENT_COMMANDS), "start": at(start_ms), "end": at(end_ms)}


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Funnel:
    requested: int
    debited: int
    completed: int
    reversed: int
    rejected: int
    duplicates: int

    def __add__(self, other: Funnel) -> Funnel:
        return Funnel(
            self.requested + other.requested, self.debited + other.debited,
            self.completed + other.completed, self.reversed + other.reversed,
            self.rejected + other.rejected, self.duplicates + other.duplicates,
        )  # fmt: skip

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


NO_PAYMENTS = Funnel(0, 0, 0, 0, 0, 0)
WHOLE_RANGE_STEP_S = 400 * 86_400
"""Whole hours, and longer than any range the API takes: the total is at most two intervals."""


def funnel(client: Client, database: str, *, start_ms: int, end_ms: int) -> Funnel:
    """Payments issued in [start, end): requested -> debited -> completed / reversed / rejected."""
    found = funnel_series(
        client, database, start_ms=start_ms, end_ms=end_ms, step_s=WHOLE_RANGE_STEP_S
    )
    return sum((counts for _start, counts in found), NO_PAYMENTS)


FUNNEL_SERIES_SQL = f"""
    SELECT {BUCKET.format(column="issued_at")} AS bucket, {_funnel_counts("1")}
    FROM {{db}}.events FINAL
    WHERE {PAYMENTS_IN_RANGE}
    GROUP BY bucket ORDER BY bucket
"""
TALLIES_FUNNEL_SQL = f"""
    SELECT {BUCKET.format(column="hour")} AS bucket, {_funnel_counts("events")}
    FROM {{db}}.tallies
    WHERE command_type IN {{commands:Array(String)}}
      AND hour >= {{start:DateTime64(3)}} AND hour < {{end:DateTime64(3)}}
    GROUP BY bucket ORDER BY bucket
"""
"""The same counts from the tallies, whole hours of command time (no ``FINAL``: the tallies
count each record once, and their rows add up)."""


def funnel_series(
    client: Client, database: str, *, start_ms: int, end_ms: int, step_s: int
) -> list[tuple[int, Funnel]]:
    """The funnel per interval of ``step_s`` (interval start in ms), intervals with payments.

    With intervals of whole hours the whole hours of [start, end) are read from the tallies
    (when they tile) and only the edges from the facts."""
    found: dict[int, Funnel] = {}
    use_tallies = step_s % 3600 == 0 and tallies_tile(client, database)
    parts = _parts(start_ms, end_ms, TALLIES_FUNNEL_SQL if use_tallies else None,
                   FUNNEL_SERIES_SQL)  # fmt: skip
    for sql, lo_ms, hi_ms in parts:
        parameters = {**_range(lo_ms, hi_ms), "step_s": step_s}
        for bucket, *values in client.query(
            sql.replace("{db}", database), parameters=parameters
        ).result_rows:
            counts = Funnel(*(int(v) for v in values))
            found[_ms(bucket)] = found.get(_ms(bucket), NO_PAYMENTS) + counts
    return sorted(found.items())


def _parts(
    start_ms: int, end_ms: int, tallies_sql: str | None, facts_sql: str
) -> list[tuple[str, int, int]]:
    """[start, end) as the whole hours in it, read with ``tallies_sql``, and the edges
    around them read with ``facts_sql``; all with ``facts_sql`` if there is no tallies'
    query or no whole hour."""
    first_hour_ms = -(-start_ms // HOUR_MS) * HOUR_MS
    last_hour_ms = end_ms // HOUR_MS * HOUR_MS
    if tallies_sql is None or first_hour_ms >= last_hour_ms:
        return [(facts_sql, start_ms, end_ms)]
    edges = [(start_ms, first_hour_ms), (last_hour_ms, end_ms)]
    return [
        (tallies_sql, first_hour_ms, last_hour_ms),
        *((facts_sql, lo, hi) for lo, hi in edges if lo < hi),
    ]


TALLIES_TILE_SQL = f"""
    SELECT count() FROM (
        SELECT sum(covered) AS covered_sum, max(next_offset) - min(first_offset) AS span
        FROM {{db}}.tallies WHERE {tallies.RANGES} GROUP BY topic, partition
        HAVING covered_sum != span)
"""


def tallies_tile(client: Client, database: str) -> bool:
    """Whether each partition's tallied ranges add up to its span exactly: no range counted
    twice (a second copy of the sink), none missing. Only then are sums of tallies exact."""
    return int(client.query(TALLIES_TILE_SQL.replace("{db}", database)).result_rows[0][0]) == 0


MONEY_SUMS = ", ".join(f"sum({column}) AS {column}" for column in MONEY_COLUMNS)
TALLIES_CONSISTENCY_SQL = f"""
    SELECT currency, {MONEY_SUMS}
    FROM {{db}}.tallies WHERE currency != ''
    GROUP BY currency ORDER BY currency
"""
CONSISTENCY_SQL = f"""
    SELECT currency, {MONEY_SUMS}
    FROM {{db}}.ledger_lines FINAL
    GROUP BY currency ORDER BY currency
"""
"""The same sums from the facts: what the tallies answer for when they do not tile."""
ACCOUNTS_SQL = """
    SELECT currency, count(), sum(posted_debits_minor), sum(posted_credits_minor),
        sum(pending_debits_minor), sum(pending_credits_minor)
    FROM {db}.balances FINAL
    GROUP BY currency ORDER BY currency
"""
"""The workers' accounts (their balances table, as its changelog last recorded each)."""
Totals = tuple[int, int, int, int]
"""TigerBeetle's four totals: posted debits, posted credits, pending debits, pending credits."""
TOTALS_NAMES = ("posted_debits", "posted_credits", "pending_debits", "pending_credits")


@dataclass(frozen=True, slots=True)
class CurrencyConsistency:
    currency: str
    debits_minor: int
    credits_minor: int
    transit_minor: int
    """Money credited to destinations and not yet posted from the sources: transfers between
    their steps 2 and 3 (the transit shards' posted debits less credits); 0 at quiescence."""
    ledger_totals: Totals
    """The four totals of every account of this currency, projected from the journal."""
    accounts: int
    account_totals: Totals
    """The same four totals as the workers' accounts hold them."""

    @property
    def difference_minor(self) -> int:
        """Σ debits - Σ credits: 0 while every journal entry balances."""
        return self.debits_minor - self.credits_minor

    @property
    def projection_difference_minor(self) -> int:
        """How far the accounts are from the journal's projection (Σ |difference| over the
        four totals): 0 when the workers' balances are exactly what the ledger says. While
        traffic flows the sink may have read one log further than the other; at rest it is
        0 or something is wrong."""
        return sum(abs(a - b) for a, b in zip(self.account_totals, self.ledger_totals, strict=True))


def ledger_consistency(client: Client, database: str) -> list[CurrencyConsistency]:
    """Per currency: the ledger's debits, credits, their difference, money in transit, and the
    balance projection against the workers' accounts. All time: read from the tallies when
    they tile, else from the facts."""
    sql = TALLIES_CONSISTENCY_SQL if tallies_tile(client, database) else CONSISTENCY_SQL
    ledger = {
        str(currency): tuple(int(v) for v in values)
        for currency, *values in client.query(sql.replace("{db}", database)).result_rows
    }
    accounts = {
        str(currency): (int(count), tuple(int(v) for v in totals))
        for currency, count, *totals in client.query(
            ACCOUNTS_SQL.replace("{db}", database)
        ).result_rows
    }
    found = []
    for currency in sorted({*ledger, *accounts}):
        debits, credits, transit, *totals = ledger.get(currency, (0,) * len(MONEY_COLUMNS))
        count, held = accounts.get(currency, (0, (0, 0, 0, 0)))
        found.append(
            CurrencyConsistency(
                currency,
                debits,
                credits,
                transit,
                ledger_totals=_totals(totals),
                accounts=count,
                account_totals=_totals(held),
            )
        )
    return found


def _totals(values: Sequence[int]) -> Totals:
    return (values[0], values[1], values[2], values[3])


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
        quantilesExact({LEVELS})({LATENCY_MS})
    FROM {{db}}.events FINAL
    WHERE type IN {{terminal:Array(String)}} AND {PAYMENTS_IN_RANGE}
    GROUP BY bucket ORDER BY bucket
"""
"""End to end: command time -> the terminal event (Completed, Reversed, Rejected) logged."""
TALLIES_LATENCY_EDGES_SQL = f"""
    SELECT {BUCKET.format(column="issued_at")} AS bucket,
        {tallies.BIN_SQL.format(ms=LATENCY_MS)} AS bin, count()
    FROM {{db}}.events FINAL
    WHERE type IN {{terminal:Array(String)}} AND {PAYMENTS_IN_RANGE}
    GROUP BY bucket, bin ORDER BY bucket, bin
"""
"""The same, as histogram bins: the edges of a long range, around the tallies' hours."""


def latency(
    client: Client, database: str, *, start_ms: int, end_ms: int, step_s: int
) -> list[Percentiles]:
    """End-to-end latency P50/P95/P99 per interval: command time -> terminal event.

    Over more than two days, from histograms (the tallies' hours; each percentile within
    2.2 % above 1 ms); exact otherwise."""
    return _percentiles(
        client, database, start_ms, end_ms, step_s, exact=LATENCY_SQL,
        binned=TALLIES_LATENCY_EDGES_SQL, measure="latency",
    )  # fmt: skip


SETTLED_IN_RANGE = """
    final AND line_no = 0
      AND issued_at >= {start:DateTime64(3)} AND issued_at < {end:DateTime64(3)}
"""
"""Each payment's last journal entry (``rows.is_final_entry``), once (its first line)."""
CONSISTENCY_TIME_SQL = f"""
    SELECT {BUCKET.format(column="issued_at")} AS bucket, count(),
        quantilesExact({LEVELS})({LATENCY_MS})
    FROM {{db}}.ledger_lines FINAL
    WHERE {SETTLED_IN_RANGE}
    GROUP BY bucket ORDER BY bucket
"""
"""Time to consistency: command time -> the payment's last journal entry logged (its money
no longer in transit), for payments whose last entry is logged."""
TALLIES_SETTLED_EDGES_SQL = f"""
    SELECT {BUCKET.format(column="issued_at")} AS bucket,
        {tallies.BIN_SQL.format(ms=LATENCY_MS)} AS bin, count()
    FROM {{db}}.ledger_lines FINAL
    WHERE {SETTLED_IN_RANGE}
    GROUP BY bucket, bin ORDER BY bucket, bin
"""


def time_to_consistency(
    client: Client, database: str, *, start_ms: int, end_ms: int, step_s: int
) -> list[Percentiles]:
    """P50/P95/P99 per interval of the time until a payment's ledger is settled (binned over
    more than two days, as ``latency``)."""
    return _percentiles(
        client, database, start_ms, end_ms, step_s, exact=CONSISTENCY_TIME_SQL,
        binned=TALLIES_SETTLED_EDGES_SQL, measure="settled",
    )  # fmt: skip


TALLIES_HISTOGRAM_SQL = f"""
    SELECT {BUCKET.format(column="hour")} AS bucket, bin, sum(events)
    FROM {{db}}.tallies
    WHERE type = {{measure:String}} AND command_type IN {{commands:Array(String)}}
      AND hour >= {{start:DateTime64(3)}} AND hour < {{end:DateTime64(3)}}
    GROUP BY bucket, bin ORDER BY bucket, bin
"""


def _percentiles(
    client: Client,
    database: str,
    start_ms: int,
    end_ms: int,
    step_s: int,
    *,
    exact: str,
    binned: str,
    measure: Measure,
) -> list[Percentiles]:
    parameters = {
        **_range(start_ms, end_ms), "step_s": step_s, "terminal": list(TERMINAL_EVENTS),
        "measure": measure,
    }  # fmt: skip
    long = end_ms - start_ms > HOURLY_AFTER_S * 1000 and step_s % 3600 == 0
    if not (long and tallies_tile(client, database)):
        rows = client.query(exact.replace("{db}", database), parameters=parameters).result_rows
        return [
            Percentiles(_ms(bucket), int(count), float(q[0]), float(q[1]), float(q[2]))
            for bucket, count, q in rows
        ]
    bins: dict[int, Counter[int]] = defaultdict(Counter)
    for sql, lo_ms, hi_ms in _parts(start_ms, end_ms, TALLIES_HISTOGRAM_SQL, binned):
        found = client.query(
            sql.replace("{db}", database), parameters={**parameters, **_range(lo_ms, hi_ms)}
        ).result_rows
        for bucket, number, count in found:
            bins[_ms(bucket)][int(number)] += int(count)
    return [_from_bins(start, counts) for start, counts in sorted(bins.items())]


def _from_bins(start_ms: int, counts: Counter[int]) -> Percentiles:
    """P50/P95/P99 of a histogram: the middle of the bin holding the value of rank
    ``floor(level * n)`` (``quantilesExact``'s choice)."""
    payments = sum(counts.values())
    found = []
    for level in PERCENTILE_LEVELS:
        rank, seen = min(int(level * payments), payments - 1), 0
        for number in sorted(counts):
            seen += counts[number]
            if seen > rank:
                found.append(bin_ms(number))
                break
    return Percentiles(start_ms, payments, found[0], found[1], found[2])


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
