"""End-to-end helpers: the platform on the session's real Kafka, and the invariants."""

from __future__ import annotations

import contextlib
import uuid
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import psycopg

from paystream.audit.audit_verify import ledger_topic_of, verify_store
from paystream.audit.replay import replay
from paystream.audit.verify import LedgerReport, read_journal
from paystream.ledger import is_own_event
from paystream.runner import Platform, running
from paystream.settings import Settings
from paystream.topology.manifest import decode_manifest
from paystream.topology.reader import read_to_end
from paystream.workload import Workload


@contextlib.contextmanager
def platform(
    base: Settings, tmp_path: Path, *, workers: int, supervised: bool = False, sinks: int = 0
) -> Iterator[Platform]:
    """Own topic prefix and data directory per test; worker logs at info for failures."""
    settings = base.model_copy(
        update={
            "topic_prefix": f"{base.topic_prefix}-{uuid.uuid4().hex[:6]}",
            "data_dir": tmp_path / "data",
        }
    )
    with running(
        settings,
        workers=workers,
        log_dir=tmp_path / "logs",
        log_level="info",
        supervised=supervised,
        sinks=sinks,
    ) as p:
        yield p


def setup_or_fail(platform: Platform, workload: Workload) -> None:
    left = platform.run_setup(workload)
    assert not left, f"{len(left)} setup commands without a terminal event{platform.logs()}"


def assert_every_record_answered_once(platform: Platform, workload: Workload) -> None:
    """Each record with a command id has exactly one answer; each payment moved at most once.

    A transfer's own events are ``Debited`` then exactly one of ``Completed`` /
    ``Reversed``; any other payment has at most one own terminal event. Answers to
    repeats of an id carry their log position and are counted, never about the payment.
    """
    for payment_id, records in workload.answers.items():
        events = platform.watcher.events.get(payment_id, [])
        answers = platform.watcher.answers(payment_id)
        assert len(answers) == records, f"{payment_id}: {records} records, answers {answers}"
        own = [e.type for e in events if is_own_event(e)]
        if "Debited" in own:
            assert own[0] == "Debited" and len(own) == 2, f"{payment_id}: {own}"
            assert own[1] in ("Completed", "Reversed"), f"{payment_id}: {own}"
        else:
            assert len(own) <= 1, f"{payment_id}: {own}"


def assert_ledger_exactly_once(platform: Platform) -> LedgerReport:
    report = platform.verify()
    assert report.duplicate_entry_ids == (), report.duplicate_entry_ids[:5]
    assert report.unbalanced_entry_ids == ()
    assert report.unmatched_settlements == (), report.unmatched_settlements[:5]
    assert all(total == 0 for total in report.pending_by_currency.values())
    assert report.balance_mismatches == (), report.balance_mismatches[:5]
    assert all(total == 0 for total in report.sum_by_currency.values()), report.sum_by_currency
    assert all(total == 0 for total in report.in_transit_by_currency.values())
    duplicated_events = {e: n for e, n in platform.watcher.copies.items() if n > 1}
    assert duplicated_events == {}, list(duplicated_events)[:5]
    assert_manifests_cover_the_inputs(platform)
    return report


def assert_replay_matches(platform: Platform, report: LedgerReport, *, twice: bool = False) -> None:
    """Replay re-runs every committed batch and finds exactly the recorded ledger, events and
    accounts; ``twice``: a second replay gives the same journal digest."""
    first = replay(platform.kafka, platform.topics, platform.serde)
    assert first.ok, first.summary()
    assert first.journal.matched == report.entries > 0, first.summary()
    assert first.events.matched == len(platform.watcher.copies), first.summary()
    if twice:
        again = replay(platform.kafka, platform.topics, platform.serde)
        assert again.journal_sha256 == first.journal_sha256
    print(f"\n{first.summary()}")


def assert_manifests_cover_the_inputs(platform: Platform) -> None:
    """The committed batch manifests name every committed input record exactly once, in log
    order per partition, and count every output record (what replay relies on)."""
    topics, kafka = platform.topics, platform.kafka
    offsets: dict[tuple[str, int], list[int]] = defaultdict(list)
    for kind, topic in (("commands", topics.commands), ("legs", topics.legs)):
        for message in read_to_end(kafka, topic):
            offsets[(kind, message.partition() or 0)].append(message.offset() or 0)
    named: dict[tuple[str, int], list[int]] = defaultdict(list)
    outputs: Counter[str] = Counter()
    for message in read_to_end(kafka, topics.batches):
        manifest = decode_manifest(platform.serde, message.value() or b"")
        assert manifest.partition == message.partition()
        assert [p for p, _ in manifest.directory] == list(range(topics.partitions))
        for run in manifest.runs:
            found = offsets[(run.topic, manifest.partition)]
            inside = found[
                bisect_left(found, run.first_offset) : bisect_right(found, run.last_offset)
            ]
            assert len(inside) == run.records, (manifest, run)
            named[(run.topic, manifest.partition)] += inside
        outputs.update(asdict(manifest.outputs))
    assert dict(named) == dict(offsets)  # each once, in order: a batch's runs, batch after batch
    logged = {
        name: sum(1 for _ in read_to_end(kafka, topic))
        for name, topic in (("journal_entries", topics.ledger), ("events", topics.events),
                            ("legs", topics.legs), ("dead_letters", topics.dlq),
                            ("directory_entries", topics.directory))
    }  # fmt: skip
    assert {name: outputs[name] for name in logged} == logged


def assert_audit_store_matches(platform: Platform, report: LedgerReport, load: Workload) -> None:
    """Postgres holds the ledger topic exactly: entries, line sums, accounts, payment states."""
    dsn = platform.postgres_dsn
    assert dsn is not None, "no sink ran"
    counts = platform.wait_audit_store()
    journal = read_journal(platform.kafka, platform.topics, platform.serde)
    lines: Counter[tuple[str, str]] = Counter()
    for entry in journal:
        for line in entry.lines:
            lines[(line.currency, line.side)] += line.amount_minor
    with psycopg.connect(dsn) as conn:
        stored_lines = {
            (currency, side): int(total)
            for currency, side, total in conn.execute(
                "SELECT currency, side, sum(amount_minor) FROM ledger_lines GROUP BY 1, 2"
            ).fetchall()
        }
        accounts = {
            row[0]: (*(int(x) for x in row[1:5]), row[5])
            for row in conn.execute(
                "SELECT account_id, posted_debits_minor, posted_credits_minor,"
                " pending_debits_minor, pending_credits_minor, status FROM accounts"
            ).fetchall()
        }
        statuses = dict(conn.execute("SELECT payment_id, status FROM payments").fetchall())
    assert counts["journal_entries"] == report.entries == len(journal), counts
    assert counts["ledger_lines"] == sum(len(e.lines) for e in journal), counts
    facts = counts["journal_entries"] + counts["payment_events"] + counts["dlq_records"]
    assert counts["audit_log"] == facts, counts  # each fact chained once
    assert stored_lines == dict(lines)
    tables = {
        a.account_id: (
            a.posted_debits_minor, a.posted_credits_minor, a.pending_debits_minor,
            a.pending_credits_minor, a.status,
        )
        for a in report.accounts.values()
    }  # fmt: skip
    differ = {k: (accounts.get(k), v) for k, v in tables.items() if accounts.get(k) != v}
    assert differ == {}, list(differ.items())[:5]
    audit = verify_store(dsn, ledger_topic=ledger_topic_of(platform.settings), progress=None)
    assert audit.ok, audit.summary()
    for payment_id in load.transfer_ids:  # a payment is an id's own outcome, never an answer
        event = platform.watcher.terminal(payment_id)  # to a record that misused the id
        assert event is not None, payment_id
        expected = event.type if is_own_event(event) else None
        assert statuses.get(payment_id) == expected, (payment_id, statuses.get(payment_id), event)
