"""The analytics store on the real ClickHouse engine (chdb, one database per test): facts
deduplicated by id, tallies that count each record once (and are not trusted when their
ranges overlap), the balance projection against the journal, and the dashboard's queries over
facts the real core produced."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import clickhouse_connect
import pytest

from paystream.analytics import queries, schema, store
from paystream.analytics.rows import dead_letter_row, is_final_entry
from paystream.analytics.tallies import BIN_SQL, TERMINAL_EVENTS, Batch, Place, latency_bin
from paystream.ledger import Account, Event, JournalEntry, is_own_event
from tests.support.ledger import T0_MS, Cluster, cid, deposit, open_account, transfer

pytestmark = pytest.mark.integration

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def client(clickhouse_dsn: str) -> Iterator[tuple[Any, str]]:
    """A client of the session's ClickHouse and a database of this test's own."""
    connection = clickhouse_connect.get_client(dsn=clickhouse_dsn)
    database = f"analytics_{uuid.uuid4().hex[:10]}"
    schema.create(connection, database)
    yield connection, database
    connection.command(f"DROP DATABASE IF EXISTS {database}")


def facts() -> tuple[Cluster, list[JournalEntry], list[Event]]:
    """Deposits, a completed and a reversed transfer, an exact duplicate, an overdraft."""
    cluster = Cluster()
    cluster.apply([open_account(1, "src"), deposit(2, "src", 1_000)], partition=0)
    cluster.apply([open_account(3, "dst", partition=1)], partition=1)
    cluster.saga(transfer(4, "src", "dst", 100))
    cluster.saga(transfer(5, "src", "nobody", 50))
    cluster.apply([dataclasses.replace(transfer(4, "src", "dst", 100), command_id=cid(40))])
    cluster.apply([transfer(6, "src", "dst", 10_000)])
    return cluster, cluster.entries(), cluster.events()


def batch(
    entries: Sequence[JournalEntry],
    events: Sequence[Event],
    accounts: Sequence[Account] = (),
    *,
    first: int = 0,
    delay_ms: Callable[[int], int] = lambda _i: 0,
) -> Batch:
    """One batch of the sink: ``entries``, ``events`` and ``accounts`` at offsets from
    ``first`` on partition 0 of their topics, logged ``delay_ms(i)`` after their command."""
    facts: dict[str, Sequence[Any]] = {"ledger": entries, "events": events, "balances": accounts}
    ends = {(topic, 0): first + len(found) for topic, found in facts.items() if found}
    made = Batch(next_offsets=ends, started_at=dict.fromkeys(ends, first))
    for i, entry in enumerate(entries):
        made.entry(entry, Place("ledger", 0, first + i, entry.issued_at_ms + delay_ms(i)))
    for i, event in enumerate(events):
        made.event(event, Place("events", 0, first + i, event.issued_at_ms + delay_ms(i)))
    for i, account in enumerate(accounts):
        made.account(account, Place("balances", 0, first + i, T0_MS))
    return made


def write(
    client: Any,
    database: str,
    entries: Sequence[JournalEntry],
    events: Sequence[Event],
    accounts: Sequence[Account] = (),
    *,
    first: int = 0,
) -> None:
    made = batch(entries, events, accounts, first=first)
    store.write(client, database, rows=made.facts, tallies=made.tallies())


def test_the_funnel_counts_each_payment_once_even_when_a_batch_is_written_twice(
    client: tuple[Any, str],
) -> None:
    connection, database = client
    _cluster, entries, events = facts()
    write(connection, database, entries, events)
    write(connection, database, entries, events)  # killed after its rows: the batch again
    found = queries.funnel(connection, database, start_ms=T0_MS - DAY_MS, end_ms=T0_MS + DAY_MS)
    own = [e for e in events if is_own_event(e) and e.command_type != "OpenAccount"]
    expected = {
        kind: len({e.payment_id for e in own if e.type == kind})
        for kind in ("Debited", "Completed", "Reversed", "Rejected")
    }
    assert (found.debited, found.completed, found.reversed, found.rejected) == (
        expected["Debited"], expected["Completed"], expected["Reversed"], expected["Rejected"],
    )  # fmt: skip
    assert (found.completed, found.reversed, found.rejected, found.duplicates) == (2, 1, 1, 1)
    assert found.requested == len({e.payment_id for e in own if e.type != "Duplicate"}) == 4
    assert found.compensation_rate == 0.5  # one of the two debited transfers came back
    empty = queries.funnel(connection, database, start_ms=0, end_ms=T0_MS - DAY_MS)
    assert empty.requested == 0 and empty.success_rate is None


def test_the_ledger_balances_and_transit_drains_at_quiescence(client: tuple[Any, str]) -> None:
    connection, database = client
    cluster, entries, events = facts()
    write(connection, database, entries, events, list(cluster.accounts.values()))
    assert queries.tallies_tile(connection, database)
    debits = sum(line.amount_minor for e in entries for line in e.lines if line.side == "debit")
    [eur] = queries.ledger_consistency(connection, database)  # from the tallies
    assert (eur.currency, eur.difference_minor, eur.transit_minor) == ("EUR", 0, 0)
    assert (eur.debits_minor, eur.projection_difference_minor) == (debits, 0)
    assert eur.accounts == len(cluster.accounts) and eur.ledger_totals == eur.account_totals
    write(connection, database, entries[:3], [], first=1)  # an overlapping range: a zombie's
    assert not queries.tallies_tile(connection, database)
    assert queries.ledger_consistency(connection, database) == [eur]  # from the facts


def test_a_batch_inserted_twice_counts_once(client: tuple[Any, str]) -> None:
    """A second copy of the sink that read the same range writes the same block: dropped."""
    connection, database = client
    cluster, entries, events = facts()
    write(connection, database, entries, events, list(cluster.accounts.values()))
    write(connection, database, entries, events, list(cluster.accounts.values()))
    assert queries.tallies_tile(connection, database)
    [eur] = queries.ledger_consistency(connection, database)
    assert (eur.difference_minor, eur.projection_difference_minor) == (0, 0)
    assert eur.debits_minor == sum(
        line.amount_minor for e in entries for line in e.lines if line.side == "debit"
    )


def test_accounts_that_disagree_with_the_journal_are_seen(client: tuple[Any, str]) -> None:
    connection, database = client
    cluster, entries, events = facts()
    minted = dataclasses.replace(
        cluster.account("dst"), posted_credits_minor=cluster.account("dst").posted_credits_minor + 7
    )
    accounts = [minted if a.account_id == "dst" else a for a in cluster.accounts.values()]
    write(connection, database, entries, events, accounts)
    [eur] = queries.ledger_consistency(connection, database)
    assert (eur.difference_minor, eur.projection_difference_minor) == (0, 7)
    assert eur.account_totals[1] - eur.ledger_totals[1] == 7  # posted credits


def test_the_funnel_from_tallies_equals_the_funnel_from_facts(client: tuple[Any, str]) -> None:
    """Whole hours come from the tallies, the edges from the facts: the same counts as the
    facts alone (intervals under an hour), wherever the range starts and ends."""
    connection, database = client
    _cluster, entries, events = facts()
    write(connection, database, entries, events)
    assert queries.tallies_tile(connection, database)
    hour_ms = 3_600_000
    for start_ms, end_ms in [
        (T0_MS - DAY_MS, T0_MS + DAY_MS),  # facts inside the whole hours
        (T0_MS - 1, T0_MS + 3 * hour_ms),  # facts in the starting edge
        (T0_MS - 3 * hour_ms, T0_MS + 1),  # facts in the closing edge
        (T0_MS // hour_ms * hour_ms, T0_MS // hour_ms * hour_ms + hour_ms),  # one whole hour
        (T0_MS + 1, T0_MS + DAY_MS),  # none
    ]:
        window = {"start_ms": start_ms, "end_ms": end_ms}
        from_facts = sum(
            (f for _s, f in queries.funnel_series(connection, database, **window, step_s=60)),
            queries.NO_PAYMENTS,
        )
        assert queries.funnel(connection, database, **window) == from_facts, window
    assert queries.funnel(connection, database, start_ms=0, end_ms=2**41).requested == 4


def test_a_transfer_between_its_steps_2_and_3_is_in_transit(client: tuple[Any, str]) -> None:
    connection, database = client
    cluster = Cluster()
    cluster.apply([open_account(1, "src"), deposit(2, "src", 2**62)], partition=0)
    cluster.apply([open_account(3, "dst", partition=1)], partition=1)
    steps = cluster.saga(transfer(4, "src", "dst", 2**62))  # Int128 sums: no Int64 wrap
    written = len(cluster.entries()) - len(
        [o for o in steps[-1].outputs if isinstance(o, JournalEntry)]
    )
    write(connection, database, cluster.entries()[:written], [])
    [eur] = queries.ledger_consistency(connection, database)
    assert (eur.difference_minor, eur.transit_minor) == (0, 2**62)
    write(connection, database, cluster.entries(), [])  # step 3 lands
    [eur] = queries.ledger_consistency(connection, database)
    assert (eur.difference_minor, eur.transit_minor) == (0, 0)
    assert eur.debits_minor > 2**63  # past Int64: the sums are Int128


def test_positions_are_the_tallies_ranges(client: tuple[Any, str]) -> None:
    connection, database = client
    assert store.stored_positions(connection, database) == {}
    for first, end in ((0, 5), (5, 9)):  # a batch past transaction markers only has no facts
        made = Batch(next_offsets={("events", 3): end}, started_at={("events", 3): first})
        store.write(connection, database, rows={}, tallies=made.tallies())
    assert store.stored_positions(connection, database) == {("events", 3): 9}
    assert queries.tallies_tile(connection, database)


def test_latency_and_time_to_consistency_per_interval(client: tuple[Any, str]) -> None:
    connection, database = client
    _cluster, entries, events = facts()
    delay_ms = {e.event_id: 10 * (i + 1) for i, e in enumerate(events)}
    store.write(connection, database, rows={
        **batch([], events, delay_ms=lambda i: delay_ms[events[i].event_id]).facts,
        "ledger_lines": batch(entries, [], delay_ms=lambda i: 7 * (i + 1)).facts["ledger_lines"],
    }, tallies=[])  # fmt: skip
    window = {"start_ms": T0_MS - DAY_MS, "end_ms": T0_MS + DAY_MS, "step_s": 2 * 86_400}
    [bucket] = queries.latency(connection, database, **window)
    terminal = sorted(
        delay_ms[e.event_id]
        for e in events
        if is_own_event(e) and e.type in TERMINAL_EVENTS and e.command_type != "OpenAccount"
    )
    assert bucket.payments == len(terminal) == 4  # a deposit, completed, reversed, rejected
    assert bucket.p50_ms >= terminal[0] and bucket.p99_ms <= terminal[-1]
    [settled] = queries.time_to_consistency(connection, database, **window)
    assert settled.payments == 3  # the rejected transfer has no journal entry
    assert 0 < settled.p50_ms <= settled.p99_ms <= 7 * len(entries)


def test_the_funnel_series_sums_to_the_funnel(client: tuple[Any, str]) -> None:
    connection, database = client
    _cluster, entries, events = facts()
    write(connection, database, entries, events)
    window = {"start_ms": T0_MS - DAY_MS, "end_ms": T0_MS + DAY_MS}
    series = queries.funnel_series(connection, database, **window, step_s=1)
    total = queries.funnel(connection, database, **window)
    assert len(series) >= 1
    assert sum(f.completed for _start, f in series) == total.completed
    assert sum(f.duplicates for _start, f in series) == total.duplicates == 1
    assert total.dedupe_rate == 1 / (total.requested + 1)
    assert queries.series_step_s(0, 10_000) == 1
    assert queries.series_step_s(0, 30 * DAY_MS) == 3 * 3600
    assert queries.series_step_s(0, 3 * DAY_MS) == 3600  # 864 s would do; long ranges: hours


def test_dead_letters_depth_reasons_and_freshness(client: tuple[Any, str]) -> None:
    connection, database = client
    assert all(f.newest_ms is None for f in queries.freshness(connection, database, now_ms=T0_MS))
    dead = [
        dead_letter_row({"dlq.reason": reason.encode(), "dlq.topic": b"commands"}, b"\x00garbage",
                        partition=0, offset=i, logged_at_ms=T0_MS + 1_000 * i)
        for i, reason in enumerate(["malformed", "wrong_partition", "malformed"])
    ]  # fmt: skip
    for _ in range(2):  # written twice: counted once
        store.write(connection, database, rows={"dead_letters": dead}, tallies=[])
    window = {"start_ms": T0_MS + 500, "end_ms": T0_MS + 10_000}
    depth = queries.dlq_depth(connection, database, **window, step_s=1)
    assert [(d.arrived, d.depth) for d in depth] == [(1, 2), (1, 3)]  # one before the window
    newest = queries.newest_dead_letters(connection, database, **window, limit=10)
    assert [(d.offset, d.reason, d.origin_topic) for d in newest] == [
        (2, "malformed", "commands"), (1, "wrong_partition", "commands"),
    ]  # fmt: skip
    fresh = {f.source: f for f in queries.freshness(connection, database, now_ms=T0_MS + 5_000)}
    assert fresh["dlq"].age_ms == 3_000 and fresh["events"].newest_ms is None


def test_a_store_of_another_schema_version_is_rebuilt(client: tuple[Any, str]) -> None:
    connection, database = client
    _cluster, entries, events = facts()
    write(connection, database, entries, events)
    assert schema.create(connection, database) is True  # same version: kept as it is
    assert store.stored_positions(connection, database)
    connection.command(f"INSERT INTO {database}.schema_version VALUES (999)")
    assert schema.create(connection, database) is False  # dropped: read the logs again
    assert store.stored_positions(connection, database) == {}
    assert queries.funnel(connection, database, start_ms=0, end_ms=2**41).requested == 0
    assert schema.create(connection, database) is True


def test_long_ranges_read_percentiles_from_the_tallies_histograms(
    client: tuple[Any, str],
) -> None:
    """Over more than two days: the same payments counted, each percentile within 2.2 % of
    the exact one (the middle of its log-spaced bin), the edges of the range from the facts."""
    connection, database = client
    _cluster, entries, events = facts()
    delays = [17, 230, 1_900, 45_000, 75, 3, 640, 12_345, 999, 88, 5_000, 31]
    made = batch(entries, events, delay_ms=lambda i: delays[i % len(delays)])
    store.write(connection, database, rows=made.facts, tallies=made.tallies())
    terminal = sorted(
        delays[i % len(delays)]
        for i, e in enumerate(events)
        if is_own_event(e) and e.type in TERMINAL_EVENTS and e.command_type != "OpenAccount"
    )
    settled = sorted(delays[i % len(delays)] for i, e in enumerate(entries) if is_final_entry(e))
    hour_ms = 3_600_000
    for start_ms in (T0_MS - 3 * DAY_MS, T0_MS // hour_ms * hour_ms - 3 * DAY_MS + 1):
        window = {"start_ms": start_ms, "end_ms": T0_MS + DAY_MS, "step_s": 86_400}
        for found, exact in (
            (queries.latency(connection, database, **window), terminal),
            (queries.time_to_consistency(connection, database, **window), settled),
        ):
            [bucket] = found
            assert bucket.payments == len(exact) > 0
            for level, value in zip(
                queries.PERCENTILE_LEVELS,
                (bucket.p50_ms, bucket.p95_ms, bucket.p99_ms),
                strict=True,
            ):
                wanted = exact[min(int(level * len(exact)), len(exact) - 1)]
                assert abs(value - wanted) <= 0.022 * wanted, (level, value, wanted)


def test_the_bins_sql_twin_agrees_with_python(client: tuple[Any, str]) -> None:
    connection, _database = client
    values = [-5, 0, 1, 2, 3, 4, 7, 8, 9, 1000, 1024, 1025, 65_535, 2**20, 2**40, 2**50, 3**30]
    sql = "SELECT " + ", ".join(BIN_SQL.format(ms=f"toInt64({v})") for v in values)
    [row] = connection.query(sql).result_rows
    assert list(row) == [latency_bin(v) for v in values]
