"""The dashboard's queries over a store of 10^7 events (issue 16: each under 200 ms).

A fresh embedded ClickHouse (chdb, a temporary directory) is filled by ClickHouse itself
(``INSERT ... SELECT FROM numbers()``) with facts shaped like a month of traffic:

- ``--payments`` transfers (default 4.9 million) over 30 days of command time, each with a
  ``Debited`` event and a terminal one (98.9 % ``Completed``, 0.8 % ``Reversed``, 0.3 %
  ``Rejected``, which has no ``Debited``), plus 2 % exact duplicates (a ``Duplicate`` answer
  of their own): about 10^7 events in all;
- each event's journal entry (two lines: about 2 x 10^7 ledger lines), log time 5 to
  500 ms after the command;
- 10,000 dead letters.

Every row is inserted twice (as a sink killed between its rows and its positions would),
so the queries' ``FINAL`` has duplicates to collapse: the worst case, not the merged one.
Then each query of ``paystream.analytics.queries`` runs ``--runs`` times over the
dashboard's default range (the last hour of the data) and over all 30 days, first as
written (copies not merged yet: the worst case) and again after ``OPTIMIZE ... FINAL`` (the
state background merges reach); the median and the slowest run of each.

    .venv/bin/python -m bench.analytics_queries [--payments 4900000] [--runs 5]
        [--output bench/results/analytics_queries.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clickhouse_connect

from paystream.analytics import queries, schema, store, tallies
from paystream.analytics.queries import LATENCY_MS

DATABASE = "bench"
DAY_MS = 86_400_000
SPAN_DAYS = 30
HOUR_MS = 3_600_000
START_MS = 1_790_000_000_000
DEAD_LETTERS = 10_000
INSERTS = 2
TABLES = ("events", "ledger_lines", "dead_letters", "balances", "tallies")
"""Each fact is written this many times (a batch written again after a kill)."""

EVENTS_SQL = """
INSERT INTO {db}.events
SELECT
    concat('p', toString(n), ':', step) AS event_id,
    concat('p', toString(n)) AS payment_id,
    type, 'Transfer', 'partner-' || toString(n % 7), 'acct-' || toString(n % 100000),
    toInt128(100 + n % 5000), 'EUR', if(type = 'Rejected', 'insufficient_funds', NULL), true,
    issued, issued + toIntervalMillisecond(5 + (n * 7919) % 495), n % 8, n
FROM (
    SELECT number AS n,
        fromUnixTimestamp64Milli(toInt64({start_ms:Int64} + intDiv(number * {span_ms:Int64},
            {payments:Int64})), 'UTC') AS issued,
        multiIf(number % 1000 < 3, 'Rejected', number % 1000 < 11, 'Reversed', 'Completed')
            AS outcome,
        arrayJoin(if(outcome = 'Rejected', [('reject', 'Rejected')],
            if(number % 50 = 0,
               [('debit', 'Debited'), ('done', outcome), ('dup', 'Duplicate')],
               [('debit', 'Debited'), ('done', outcome)]))) AS pair,
        pair.1 AS step, pair.2 AS type
    FROM numbers({payments:UInt64})
)
"""
"""Duplicates answer with their own id (``<id>:dup``) so the funnel counts them."""

LINES_SQL = """
INSERT INTO {db}.ledger_lines
SELECT concat('p', toString(n), ':', step), line, concat('p', toString(n)), 'transfer',
    'posted', account, 'EUR', side, amount,
    if(side = 'debit', amount, 0), if(side = 'credit', amount, 0),
    if(startsWith(account, '@transit:'), if(side = 'debit', amount, -amount), 0),
    if(side = 'debit', amount, 0), if(side = 'credit', amount, 0), 0, 0, step = 'credit',
    issued, issued + toIntervalMillisecond(5 + (n * 7919) % 495 + if(step = 'credit', 40, 0)),
    n % 8, n
FROM (
    SELECT number AS n,
        fromUnixTimestamp64Milli(toInt64({start_ms:Int64} + intDiv(number * {span_ms:Int64},
            {payments:Int64})), 'UTC') AS issued,
        arrayJoin(if(number % 1000 < 3, [], ['debit', 'credit'])) AS step,
        arrayJoin([0, 1]) AS line,
        if(line = 0, 'debit', 'credit') AS side,
        toInt128(100 + n % 5000) AS amount,
        '@transit:EUR:' || toString(n % 8) AS transit,
        if(line = 0, if(step = 'debit', 'acct-' || toString(n % 100000), transit),
           if(step = 'debit', transit, 'acct-' || toString((n * 31) % 100000))) AS account
    FROM numbers({payments:UInt64})
)
"""
"""J1 (debit the source, credit transit) and J2 (debit transit, credit the destination) over
100,000 accounts, with the money columns the sink computes (``rows.line_money``); transit
shards are posted on both sides, so it drains to 0 as in a quiet ledger. J2, logged 40 ms
after J1, stands for the payment's last entry (``final``: time to consistency ends there)."""

BALANCES_SQL = """
INSERT INTO {db}.balances
SELECT account_id, currency, sum(posted_debits_minor), sum(posted_credits_minor),
    sum(pending_debits_minor), sum(pending_credits_minor), 0, 1, max(logged_at)
FROM {db}.ledger_lines FINAL GROUP BY account_id, currency
"""
"""The workers' accounts: the journal's projection (the changelog's newest record each)."""

RECORDS_PER_BATCH = 1_000
"""Tallies as a sink writing batches of this many records per partition would leave them."""
TALLY_RANGES_SQL = """
INSERT INTO {db}.tallies (topic, partition, first_offset, next_offset, covered)
SELECT topic, p, b * {per:UInt64}, (b + 1) * {per:UInt64}, {per:UInt64}
FROM (SELECT arrayJoin(['events', 'ledger']) AS topic, number % 8 AS p,
             intDiv(number, 8) AS b
      FROM numbers(8 * intDiv({payments:UInt64} * 3, 8 * {per:UInt64}) + 8))
"""
TALLY_FUNNEL_SQL = """
INSERT INTO {db}.tallies (topic, partition, hour, command_type, type, first_offset,
                          next_offset, events)
SELECT 'events', 0, toStartOfHour(issued_at), command_type, type, 0, 0, count()
FROM (SELECT *, events_partition AS p, intDiv(events_offset, 8 * {per:UInt64}) AS b
      FROM {db}.events FINAL WHERE own)
GROUP BY p, b, toStartOfHour(issued_at), command_type, type
"""
TALLY_HISTOGRAMS_SQL = f"""
INSERT INTO {{db}}.tallies (topic, partition, hour, command_type, type, bin, first_offset,
                          next_offset, events)
SELECT topic, 0, toStartOfHour(issued_at), command_type, measure, bin, 0, 0, count()
FROM (
    SELECT 'events' AS topic, events_partition AS p,
        intDiv(events_offset, 8 * {{per:UInt64}}) AS b, issued_at, command_type,
        'latency' AS measure, {tallies.BIN_SQL.format(ms=LATENCY_MS)} AS bin
    FROM {{db}}.events FINAL WHERE own AND type IN ('Completed', 'Reversed', 'Rejected')
    UNION ALL
    SELECT 'ledger', ledger_partition, intDiv(ledger_offset, 8 * {{per:UInt64}}), issued_at,
        'Transfer', 'settled', {tallies.BIN_SQL.format(ms=LATENCY_MS)}
    FROM {{db}}.ledger_lines FINAL WHERE final AND line_no = 0)
GROUP BY topic, p, b, toStartOfHour(issued_at), command_type, measure, bin
"""
"""The latency and time-to-consistency histograms, binned as the sink bins them."""
TALLY_MONEY_SQL = """
INSERT INTO {db}.tallies (topic, partition, currency, first_offset, next_offset,
    debits_minor, credits_minor, transit_minor, posted_debits_minor, posted_credits_minor,
    pending_debits_minor, pending_credits_minor)
SELECT 'ledger', 0, currency, 0, 0, sum(debits_minor), sum(credits_minor), sum(transit_minor),
    sum(posted_debits_minor), sum(posted_credits_minor), sum(pending_debits_minor),
    sum(pending_credits_minor)
FROM (SELECT *, ledger_partition AS p, intDiv(ledger_offset, 8 * {per:UInt64}) AS b
      FROM {db}.ledger_lines FINAL)
GROUP BY p, b, currency
"""
"""Tallies as the sink counts them (each record once): one row per partition and batch for
its range, and per batch and hour, type, bin or currency its counts and sums, pooled over
partitions (partition 0): the rows background merges add up, not yet merged."""

DEAD_LETTERS_SQL = """
INSERT INTO {db}.dead_letters
SELECT intDiv(number, 1250), number, ['malformed', 'wrong_partition', 'oversized'][number % 3 + 1],
    NULL, 'commands', number % 8, number, 64, hex(number),
    fromUnixTimestamp64Milli(toInt64({start_ms:Int64} + intDiv(number * {span_ms:Int64},
        {dead:Int64})), 'UTC')
FROM numbers({dead:UInt64})
"""


def fill(client: Any, payments: int) -> dict[str, Any]:
    """The store, filled; its row counts and how long each table took."""
    schema.create(client, DATABASE)
    parameters = {
        "start_ms": START_MS, "span_ms": SPAN_DAYS * DAY_MS, "payments": payments,
        "dead": DEAD_LETTERS,
    }  # fmt: skip
    seconds: dict[str, float] = {}
    for table, sql in (("events", EVENTS_SQL), ("ledger_lines", LINES_SQL),
                       ("dead_letters", DEAD_LETTERS_SQL), ("balances", BALANCES_SQL)):  # fmt: skip
        started = time.perf_counter()
        for _ in range(INSERTS):
            client.command(sql.replace("{db}", DATABASE), parameters=parameters)
        seconds[table] = time.perf_counter() - started
    started = time.perf_counter()
    for sql in (TALLY_RANGES_SQL, TALLY_FUNNEL_SQL, TALLY_HISTOGRAMS_SQL, TALLY_MONEY_SQL):
        client.command(sql.replace("{db}", DATABASE),
                       parameters={**parameters, "per": RECORDS_PER_BATCH})  # fmt: skip
    seconds["tallies"] = time.perf_counter() - started
    rows = {
        table: int(client.command(f"SELECT count() FROM {DATABASE}.{table}")) for table in TABLES
    }
    return {"rows_stored": rows, "fill_seconds": seconds}


def questions(end_ms: int, span_ms: int) -> dict[str, Callable[[Any], Any]]:
    """Each dashboard query, over [end - span, end)."""
    start_ms = end_ms - span_ms
    step_s = queries.series_step_s(start_ms, end_ms)
    series = {"start_ms": start_ms, "end_ms": end_ms, "step_s": step_s}
    return {
        "funnel": lambda c: queries.funnel(c, DATABASE, start_ms=start_ms, end_ms=end_ms),
        "funnel_series": lambda c: queries.funnel_series(c, DATABASE, **series),
        "ledger_consistency": lambda c: queries.ledger_consistency(c, DATABASE),
        "latency": lambda c: queries.latency(c, DATABASE, **series),
        "time_to_consistency": lambda c: queries.time_to_consistency(c, DATABASE, **series),
        "freshness": lambda c: queries.freshness(c, DATABASE, now_ms=end_ms),
        "dlq_depth": lambda c: queries.dlq_depth(c, DATABASE, **series),
        "newest_dead_letters": lambda c: queries.newest_dead_letters(
            c, DATABASE, start_ms=start_ms, end_ms=end_ms, limit=20
        ),
        "stored_positions": lambda c: store.stored_positions(c, DATABASE),
        "tallies_tile": lambda c: queries.tallies_tile(c, DATABASE),
    }


def time_queries(client: Any, runs: int) -> dict[str, dict[str, dict[str, float]]]:
    end_ms = START_MS + SPAN_DAYS * DAY_MS
    found: dict[str, dict[str, dict[str, float]]] = {}
    for label, span_ms in (("last hour", HOUR_MS), ("30 days", SPAN_DAYS * DAY_MS)):
        found[label] = {}
        for name, ask in questions(end_ms, span_ms).items():
            timings = []
            for _ in range(runs):
                started = time.perf_counter()
                ask(client)
                timings.append((time.perf_counter() - started) * 1000)
            found[label][name] = {
                "median_ms": statistics.median(timings), "max_ms": max(timings),
            }  # fmt: skip
            print(f"  {label:<9} {name:<20} median {statistics.median(timings):8.1f} ms  "
                  f"max {max(timings):8.1f} ms", flush=True)  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=4_900_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path("bench/results/analytics_queries.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as directory:
        client = clickhouse_connect.get_client(dsn=f"chdb://{directory}")
        print(f"filling the store: {args.payments:,} transfers x {INSERTS} inserts ...", flush=True)
        filled = fill(client, args.payments)
        print(f"  rows stored: {filled['rows_stored']}, seconds: {filled['fill_seconds']}")
        load = os.getloadavg()[0]
        print(f"as written (copies not merged yet), load average {load:.2f}:", flush=True)
        unmerged = time_queries(client, args.runs)
        for table in TABLES:
            client.command(f"OPTIMIZE TABLE {DATABASE}.{table} FINAL")
        print("after OPTIMIZE ... FINAL (copies merged):", flush=True)
        merged = time_queries(client, args.runs)
        engine = str(client.command("SELECT version()"))
    result = {
        "command": "python -m bench.analytics_queries " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "output"),
        "machine": {"cores": os.cpu_count(), "python": host.python_version(),
                    "clickhouse": engine},
        "load_average_1m_at_start": load, **filled,
        "queries": {"unmerged": unmerged, "merged": merged},
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
