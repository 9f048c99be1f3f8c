"""The journal read back from a real audit store equals what the sink was given, with the
sink's positions of the same snapshot; a line changed behind the sink's back is named."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from paystream.audit import db, stored_journal
from paystream.audit.migrate import migrate
from paystream.audit.stored_journal import journal_differences, read_journal
from paystream.ledger import JournalEntry, JournalLine, check_balanced
from tests.support.audit import CONSUMER, EVENTS_TOPIC, LEDGER_TOPIC, Recorded
from tests.support.ledger import PARTNER, T0_MS, cid, deposit, open_account, transfer, withdrawal

pytestmark = pytest.mark.integration


@pytest.fixture
def dsn(audit_dsn: str) -> str:
    """A database of this test's own, migrated."""
    migrate(audit_dsn)
    return audit_dsn


def multi_line_entry() -> JournalEntry:
    """Four lines in two currencies, in no sorted order (the core builds two-line entries
    only; the store must keep any entry's line order)."""
    lines = (
        JournalLine(account_id="m-zed", currency="EUR", side="debit", amount_minor=300),
        JournalLine(account_id="m-usd-b", currency="USD", side="credit", amount_minor=41),
        JournalLine(account_id="m-abe", currency="EUR", side="credit", amount_minor=300),
        JournalLine(account_id="m-usd-a", currency="USD", side="debit", amount_minor=41),
    )
    payment_id = cid(9)
    entry = JournalEntry(
        entry_id=f"{payment_id}:deposit", payment_id=payment_id, kind="deposit",
        partner_id=PARTNER, account_id="m-abe", issued_at_ms=T0_MS + 9, lines=lines,
    )  # fmt: skip
    check_balanced(entry)
    return entry


@pytest.fixture
def recorded(dsn: str) -> Recorded:
    """A deposit, a withdrawal, a completed transfer (pending, credit, post), a reversed one
    (pending, void) and a four-line entry, on two ledger partitions, written by the sink's
    own write path."""
    r = Recorded()
    r.apply([open_account(1, "src"), deposit(2, "src", 1000), withdrawal(3, "src", 50)], 0)
    r.apply([open_account(4, "dst", partition=1)], 1)
    r.saga(transfer(5, "src", "dst", 100), source=0, destination=1)
    r.saga(transfer(6, "src", "nobody", 70), source=0, destination=1)
    r.entries.append((multi_line_entry(), 1))
    r.write(dsn)
    return r


def originals(recorded: Recorded) -> dict[str, JournalEntry]:
    return {entry.entry_id: entry for entry, _ in recorded.entries}


def test_every_entry_reads_back_equal_with_the_sink_s_positions(
    dsn: str, recorded: Recorded
) -> None:
    emitted = originals(recorded)
    phases = Counter(e.phase for e in emitted.values())
    assert phases == {"posted": 4, "pending": 2, "post": 1, "void": 1}
    assert {e.kind for e in emitted.values()} == {
        "deposit", "withdrawal", "transfer_debit", "transfer_credit",
    }  # fmt: skip
    journal = read_journal(dsn)
    assert journal.entries == emitted
    assert journal.entries[multi_line_entry().entry_id].lines == multi_line_entry().lines
    assert (journal.anomalies, journal.anomalies_total) == ((), 0)
    on_partition = Counter(partition for _, partition in recorded.entries)
    assert journal.positions_of(CONSUMER, LEDGER_TOPIC) == dict(on_partition)
    assert journal.positions_of(CONSUMER, EVENTS_TOPIC) == dict(
        Counter(partition for _, partition in recorded.events)
    )
    assert journal.positions_of("another-group", LEDGER_TOPIC) == {}
    assert journal_differences(emitted, journal.entries) == (len(emitted), [], [], [])


def test_a_tampered_amount_is_pinpointed(dsn: str, recorded: Recorded) -> None:
    """The sink's role may not UPDATE a line; the owner of the tables may (ledger_lines has no
    trigger, only audit_log has): an attacker with the database owner's or a superuser's
    rights. ``audit verify`` would see it too (the line no longer hashes to its audit row)."""
    emitted = originals(recorded)
    posted = next(e for e in emitted.values() if e.phase == "post")
    with psycopg.connect(dsn, autocommit=True) as owner:
        changed = owner.execute(
            "UPDATE ledger_lines SET amount_minor = 5000 WHERE entry_id = %s AND line_no = 1",
            (posted.entry_id,),
        ).rowcount
    assert changed == 1
    found = journal_differences(emitted, read_journal(dsn).entries)
    transit = posted.lines[1]
    assert found.matched == len(emitted) - 1
    assert (found.missing_ids, found.extra_ids) == ([], [])
    assert found.differing == [
        (
            posted.entry_id,
            f"line 1 (account {transit.account_id}, credit): amount_minor replayed 100,"
            " stored 5000",
        )
    ]


def test_rows_no_entry_can_carry_are_listed_as_anomalies(dsn: str, recorded: Recorded) -> None:
    """A deleted line leaves a gap in line_no; a line's phase changed no longer matches its
    entry's. The entry read back has the lines that are there; the rest is an anomaly."""
    emitted = originals(recorded)
    multi = multi_line_entry()
    void = next(e for e in emitted.values() if e.phase == "void")
    with psycopg.connect(dsn, autocommit=True) as owner:
        owner.execute(
            "DELETE FROM ledger_lines WHERE entry_id = %s AND line_no = 1", (multi.entry_id,)
        )
        owner.execute(
            "UPDATE ledger_lines SET phase = 'post' WHERE entry_id = %s AND line_no = 0",
            (void.entry_id,),
        )
    journal = read_journal(dsn)
    assert set(journal.anomalies) == {
        f"ledger_lines of {void.entry_id} line_no 0: phase post, its entry's is void",
        f"ledger_lines of {multi.entry_id}: line_no [0, 2, 3], not 0..2 (the entry's lines"
        " are the stored ones in line_no order)",
    }
    assert journal.anomalies_total == 2
    assert journal.entries[void.entry_id] == void  # the phase of a line is not an entry's
    assert journal.entries[multi.entry_id].lines == (multi.lines[0], *multi.lines[2:])
    found = journal_differences(emitted, journal.entries)
    assert found.differing == [
        (
            multi.entry_id,
            "line 1 (account m-usd-b, credit): account_id replayed 'm-usd-b', stored 'm-abe'",
        )
    ]


@pytest.mark.parametrize("autocommit", [True, False])
def test_a_given_connection_is_read_in_a_read_only_repeatable_read_snapshot_and_restored(
    dsn: str, recorded: Recorded, autocommit: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []
    stream = stored_journal._stream

    def observed(conn: db.Connection) -> Iterator[tuple[object, ...]]:
        isolation = conn.execute("SHOW transaction_isolation").fetchone()
        read_only = conn.execute("SHOW transaction_read_only").fetchone()
        assert isolation is not None and read_only is not None
        seen.append((str(isolation[0]), str(read_only[0])))
        return stream(conn)

    monkeypatch.setattr(stored_journal, "_stream", observed)
    with psycopg.connect(dsn, autocommit=autocommit) as conn:
        assert read_journal(conn).entries == originals(recorded)
        assert seen == [("repeatable read", "on")]
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert (conn.isolation_level, conn.read_only) == (None, None)
        conn.execute("CREATE TEMP TABLE still_writable (x int)")  # read_only was restored
