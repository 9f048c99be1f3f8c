"""The audit store on real Postgres: migrations, one transaction per batch, idempotent facts,
fenced positions, a hash chain, and a sink role that cannot change what was recorded."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from paystream.audit import migrate as migrate_module
from paystream.audit import records, store
from paystream.audit.migrate import Migration, MigrationError, migrate
from paystream.audit.records import Origin
from paystream.audit.store import Batch, ChainHead, Fenced
from paystream.ledger import (
    DirectoryEntry,
    Event,
    JournalEntry,
    SendPayout,
    SettlePayout,
    is_own_event,
)
from paystream.ledger.screening import CurrencyLimits, ScreeningRules, rules_to_json
from tests.support.ledger import (
    T0_MS,
    Cluster,
    configure_screening,
    decide,
    deposit,
    entries,
    events,
    fail_payout,
    make_account,
    open_account,
    rail,
    request_payout,
    run,
    transfer,
)

pytestmark = pytest.mark.integration

CONSUMER = "test-sink"
LEDGER = ("p.ledger", 0)
EVENTS = ("p.events", 0)


@pytest.fixture
def dsn(audit_dsn: str) -> str:
    """A database of this test's own, migrated."""
    migrate(audit_dsn)
    return audit_dsn


def facts() -> tuple[list[JournalEntry], list[Event]]:
    """An account opened and funded twice, through the real core."""
    result = run([open_account(1), deposit(2, amount_minor=500), deposit(3, amount_minor=70)])
    return entries(result), events(result)


def batch(journal: list[JournalEntry], answers: list[Event], *, first: int = 0) -> Batch:
    return Batch(
        entries=[(e, Origin("ledger", 0, first + i)) for i, e in enumerate(journal)],
        events=[(e, Origin("events", 0, first + i)) for i, e in enumerate(answers)],
        directory=[DirectoryEntry("acc-1", "EUR", "p1", "open")],
    )


def sink_connection(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(f"SET ROLE {store.SINK_ROLE}")
    return conn


def write(
    conn: store.Connection, b: Batch, started: tuple[int, int] | None, heads: dict[str, ChainHead]
) -> dict[str, int]:
    """Write ``b`` from stored positions ``started`` (ledger, events; None: none stored)."""
    ends = {LEDGER: len(b.entries), EVENTS: len(b.events)}
    starts = (
        {LEDGER: None, EVENTS: None} if started is None else dict(zip(ends, started, strict=True))
    )
    return store.write(
        conn, b, consumer=CONSUMER, started_at=starts, next_offsets=ends, heads=heads
    )


def test_migrations_apply_once_and_an_edited_one_is_refused(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert migrate(dsn) == []  # already applied by the fixture
    assert migrate_module.applied_version(dsn) == len(migrate_module.available())
    edited = [
        Migration(m.version, m.name, m.sql + "\n-- edited") for m in migrate_module.available()
    ]
    monkeypatch.setattr(migrate_module, "available", lambda: edited)
    with pytest.raises(MigrationError, match="add a new migration instead"):
        migrate(dsn)


def test_a_batch_is_written_once_with_its_positions_and_a_valid_chain(dsn: str) -> None:
    journal, answers = facts()
    conn = sink_connection(dsn)
    heads = store.chain_heads(conn, ["ledger:0", "events:0"])
    counts = write(conn, batch(journal, answers), None, heads)
    assert counts["journal_entries"] == len(journal) == 2
    assert counts["payment_events"] == len(answers) == 3
    with pytest.raises(Fenced):  # the same batch again, from a position that has moved on
        write(conn, batch(journal, answers), None, dict(heads))
    again = write(conn, batch(journal, answers), (2, 3), dict(heads))  # redelivered: nothing new
    assert (again["journal_entries"], again["payment_events"], again["audit_log"]) == (0, 0, 0)

    rows = conn.execute(
        "SELECT posted_credits_minor, status, partner_id, version FROM accounts"
        " WHERE account_id = 'acc-1'"
    ).fetchone()
    assert rows == (570, "open", "p1", 3)  # two lines + one directory row
    positions = store.stored_positions(conn, CONSUMER, [LEDGER, EVENTS])
    assert positions == {LEDGER: 2, EVENTS: 3}
    statuses = conn.execute("SELECT status FROM payments ORDER BY payment_id").fetchall()
    assert [s for (s,) in statuses] == ["Completed", "Completed", "Completed"]
    chain = conn.execute(
        "SELECT seq, body, prev_hash, hash FROM audit_log WHERE chain = 'ledger:0' ORDER BY seq"
    ).fetchall()
    prev = records.GENESIS_HASH
    for _seq, body, prev_hash, digest in chain:
        assert bytes(prev_hash) == prev
        assert bytes(digest) == records.chain_hash(prev, body)
        prev = bytes(digest)
    assert [seq for seq, *_ in chain] == [1, 2]


def saga_facts() -> tuple[list[JournalEntry], list[Event]]:
    """A completed and a reversed transfer through the real core (each payment has several
    events: Debited, then Completed or Reversed)."""
    cluster = Cluster()
    cluster.apply([open_account(1, "src"), deposit(2, "src", 1000)], partition=0)
    cluster.apply([open_account(3, "dst", partition=1)], partition=1)
    for n, destination, reference in ((4, "dst", "invoice 42"), (5, "nobody", None)):
        cluster.saga(dataclasses.replace(transfer(n, "src", destination, 100), reference=reference))
    return cluster.entries(), cluster.events()


def test_a_payment_read_in_one_batch_equals_one_event_per_batch(audit_dsn: str) -> None:
    """The sink folds a payment's events of one batch into one row: the same row as writing
    each event in a batch of its own (the upsert, one at a time)."""
    journal, answers = saga_facts()
    assert len(answers) > len({e.payment_id for e in answers})  # several events per payment
    migrate(audit_dsn)
    payments = f"SELECT {', '.join(records.PAYMENTS.columns)} FROM payments ORDER BY payment_id"
    conn = sink_connection(audit_dsn)
    heads = store.chain_heads(conn, ["ledger:0", "events:0"])
    write(conn, batch(journal, answers), None, heads)
    in_one = conn.execute(payments).fetchall()
    conn.execute("RESET ROLE")
    conn.execute("TRUNCATE payments")
    conn.execute(f"SET ROLE {store.SINK_ROLE}")
    event_rows = [e for e in answers if is_own_event(e)]
    for event in event_rows:
        with conn.transaction():
            store._create_stages(conn.cursor())
            store._fold(conn.cursor(), records.PAYMENTS, [records.payment_row(event)])
    one_by_one = conn.execute(payments).fetchall()
    assert in_one == one_by_one
    assert {row[7] for row in in_one} >= {"Completed", "Reversed"}
    assert "invoice 42" in {row[-1] for row in in_one}


def test_a_reference_is_recorded_and_chained_only_when_set(dsn: str) -> None:
    """A payment's reference lands in its row and its events; an event without one has no
    ``reference`` in its audit body, so bodies chained before the column existed still match."""
    journal, answers = saga_facts()
    conn = sink_connection(dsn)
    write(conn, batch(journal, answers), None, store.chain_heads(conn, ["ledger:0", "events:0"]))
    references = conn.execute(
        "SELECT command_type, counterparty_account_id, reference FROM payments"
        " WHERE command_type = 'Transfer' ORDER BY counterparty_account_id"
    ).fetchall()
    assert references == [("Transfer", "dst", "invoice 42"), ("Transfer", "nobody", None)]
    stored = conn.execute(
        f"SELECT {', '.join(records.EVENT_COLUMNS)}, a.body FROM payment_events"
        " JOIN audit_log a ON a.kind = 'event' AND a.ref = event_id ORDER BY event_id"
    ).fetchall()
    reference = records.EVENT_COLUMNS.index("reference")
    for *columns, body in stored:
        assert records.event_audit(columns).body == body  # what audit verify rebuilds
        assert ("reference" in json.loads(body)) == (columns[reference] is not None)
    assert {columns[reference] for *columns, _ in stored} == {"invoice 42", None}


def payout_facts() -> tuple[list[JournalEntry], list[Event], dict[str, str]]:
    """Payouts through the real core: settled, failed by the bank, held then approved, held
    then rejected then overridden back, refused for funds; and a duplicate request."""
    rules = ScreeningRules(limits=(CurrencyLimits(currency="EUR", amount_max_minor=500),))
    cluster = Cluster.of([make_account("src", credits_minor=2_000)])
    cluster.apply([configure_screening("rules", rules_to_json(rules))])
    settled, failed = request_payout(1, amount_minor=100), request_payout(2, amount_minor=200)
    approved, overridden = request_payout(3, amount_minor=600), request_payout(4, amount_minor=700)
    cluster.apply([settled, failed, approved, overridden, request_payout(5, amount_minor=5_000)])
    cluster.apply([request_payout(13, amount_minor=100, request_id=settled.request_id)])
    at = T0_MS + 10_000
    cluster.apply([decide(6, approved, "approve", at_ms=at)])
    cluster.apply([decide(7, overridden, "reject", "no documents", at_ms=at + 1)])
    cluster.apply([decide(8, overridden, "override", "documents arrived", at_ms=at + 2)])
    for n, kind, payout in ((9, SendPayout, settled), (10, SendPayout, failed)):
        cluster.apply([rail(kind, n, payout, at_ms=at + 3)])
    cluster.apply([rail(SettlePayout, 11, settled, at_ms=at + 4)])
    cluster.apply([fail_payout(12, failed, at_ms=at + 5)])
    ids = {
        "settled": settled.command_id, "failed": failed.command_id,
        "approved": approved.command_id, "overridden": overridden.command_id,
    }  # fmt: skip
    return cluster.entries(), cluster.events(), ids


def test_payouts_fold_into_their_rows_and_reviews_with_a_chained_history(dsn: str) -> None:
    journal, answers, ids = payout_facts()
    conn = sink_connection(dsn)
    counts = write(
        conn, batch(journal, answers), None, store.chain_heads(conn, ["ledger:0", "events:0"])
    )
    assert any(e.type == "Duplicate" and e.payout is not None for e in answers)
    assert counts["payouts"] == 5  # four reserved, one refused for funds; no duplicate's row
    rows = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT payout_id, status, code, batch_id, beneficiary_name, queued_at_ms,"
            " settled_at_ms FROM payouts"
        )
    }
    assert rows[ids["settled"]][:4] == ("Settled", None, "batch-1", "Ada Lovelace")
    assert rows[ids["settled"]][5] == T0_MS + 10_004
    assert rows[ids["failed"]][:2] == ("Failed", "bank_rejected")
    assert rows[ids["approved"]][0] == "Queued" and rows[ids["approved"]][4] == T0_MS + 10_000
    assert rows[ids["overridden"]][0] == "Queued"
    assert sorted(r[:2] for r in rows.values() if r[1] == "insufficient_funds") == [
        ("Failed", "insufficient_funds")
    ]
    reviews = conn.execute(
        "SELECT payout_id, decision, officer, reason, rule_codes, status_before, status_after,"
        " decided_at_ms - %s FROM payout_reviews ORDER BY decided_at_ms",
        (T0_MS,),
    ).fetchall()
    assert reviews == [
        (ids["approved"], "approve", "officer-1", None, ["amount_over_threshold"], "Held",
         "Queued", 10_000),
        (ids["overridden"], "reject", "officer-1", "no documents", ["amount_over_threshold"],
         "Held", "Failed", 10_001),
        (ids["overridden"], "override", "officer-1", "documents arrived",
         ["amount_over_threshold"], "Failed", "Queued", 10_002),
    ]  # fmt: skip
    stored = conn.execute(
        f"SELECT {', '.join(records.EVENT_COLUMNS)}, a.body FROM payment_events"
        " JOIN audit_log a ON a.kind = 'event' AND a.ref = event_id"
        " WHERE payment_id = %s ORDER BY events_offset",
        (ids["overridden"],),
    ).fetchall()
    for *columns, body in stored:
        assert records.event_audit(columns).body == body  # what audit verify rebuilds
    last = json.loads(stored[-1][-1])
    assert (last["actor"], last["previous_type"], last["payout"]["batch_id"]) == (
        "officer-1", "Failed", "batch-1",
    )  # fmt: skip


def test_a_payout_read_in_one_batch_equals_one_event_per_batch(audit_dsn: str) -> None:
    journal, answers, _ = payout_facts()
    migrate(audit_dsn)
    payouts = f"SELECT {', '.join(records.PAYOUTS.columns)} FROM payouts ORDER BY payout_id"
    conn = sink_connection(audit_dsn)
    write(conn, batch(journal, answers), None, store.chain_heads(conn, ["ledger:0", "events:0"]))
    in_one = conn.execute(payouts).fetchall()
    conn.execute("RESET ROLE")
    conn.execute("TRUNCATE payouts")
    conn.execute(f"SET ROLE {store.SINK_ROLE}")
    for event in answers:
        if is_own_event(event) and records.is_payout_state(event):
            with conn.transaction():
                store._create_stages(conn.cursor())
                store._fold(conn.cursor(), records.PAYOUTS, [records.payout_row(event)])
    assert conn.execute(payouts).fetchall() == in_one


def test_a_fenced_first_batch_leaves_the_connection_usable(dsn: str) -> None:
    """The staging tables are made in the batch's transaction: one rolled back on a fresh
    connection takes them with it, and the next batch makes them again."""
    journal, answers = facts()
    conn = sink_connection(dsn)
    heads = store.chain_heads(conn, ["ledger:0", "events:0"])
    with pytest.raises(Fenced):
        write(conn, batch(journal, answers), (0, 0), dict(heads))  # nothing stored at 0
    counts = write(conn, batch(journal, answers), None, heads)
    assert counts["journal_entries"] == 2


def test_the_sink_role_cannot_change_a_recorded_fact(dsn: str) -> None:
    journal, answers = facts()
    conn = sink_connection(dsn)
    write(conn, batch(journal, answers), None, store.chain_heads(conn, ["ledger:0", "events:0"]))
    for statement in (
        "UPDATE audit_log SET body = 'x'",
        "DELETE FROM audit_log",
        "UPDATE ledger_lines SET amount_minor = 1",
        "DELETE FROM journal_entries",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    owner = psycopg.connect(dsn, autocommit=True)  # even the owner: the trigger refuses
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        owner.execute("UPDATE audit_log SET body = 'x'")


def test_sinks_starting_together_migrate_once(audit_dsn: str) -> None:
    """Two sinks raced on creating schema_migrations and one died (seen in CI)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        applied = list(pool.map(lambda _: migrate(audit_dsn), range(4)))
    assert sorted(len(a) for a in applied) == [0, 0, 0, len(migrate_module.available())]
