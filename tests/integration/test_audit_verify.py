"""``paystream audit verify`` on real Postgres (and the real ledger topic for its last check).

Stores are written with ``store.write`` from the core's real outputs, as the sink
writes them. Each tamper test starts from a store verify passes (``good_store``),
changes it as a superuser would, and checks verify names what was changed.
"""

from __future__ import annotations

import io
import json
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import psycopg
import pytest
from confluent_kafka import KafkaError, Message, Producer

from paystream import cli
from paystream.audit import audit_verify, records, store
from paystream.audit.audit_verify import (
    LedgerTopic,
    LedgerTotals,
    Problems,
    Progress,
    StoreReport,
    chain_problems,
    compare_totals,
    ledger_topic_of,
    verify_store,
)
from paystream.audit.migrate import migrate
from paystream.audit.records import Origin
from paystream.audit.store import Batch
from paystream.ledger import DirectoryEntry, Event, Input, JournalEntry, Output
from paystream.runner import kafka_env
from paystream.settings import Settings
from paystream.topology.topics import Topics, ensure_topics, postgres_sink_group
from tests.support.ledger import Cluster, deposit, of_type, open_account, transfer

integration = pytest.mark.integration

CONSUMER = "test-sink"
LEDGER_TOPIC = "p.ledger"
EVENTS_TOPIC = "p.events"
DLQ_TOPIC = "p.dlq"
DEAD_LETTER = Origin("dlq", 0, 0)
PARTITIONS = 2
PRODUCE_TIMEOUT_S = 30.0
NewStore = Callable[[], str]


# --- facts through the real core -----------------------------------------------------------


@dataclass
class Facts:
    """What the workers emitted, each with the partition it was emitted on."""

    entries: list[tuple[JournalEntry, int]] = field(default_factory=list)
    events: list[tuple[Event, int]] = field(default_factory=list)
    directory: list[DirectoryEntry] = field(default_factory=list)

    def entry(self, kind: str, phase: str, currency: str = "EUR") -> JournalEntry:
        (found,) = [
            e
            for e, _ in self.entries
            if (e.kind, e.phase, e.lines[0].currency) == (kind, phase, currency)
        ]
        return found


def make_facts() -> Facts:
    """Two currencies, a completed transfer (pending, credit, post), a reversed one (void)."""
    cluster = Cluster()
    facts = Facts()

    def apply(inputs: Sequence[Input], partition: int) -> None:
        _keep(facts, cluster.apply(inputs, partition=partition).outputs, partition)

    usd = [open_account(3, "usd-1", "USD"), deposit(4, "usd-1", 250, currency="USD")]
    apply([open_account(1, "src"), deposit(2, "src", 1000), *usd], 0)
    apply([open_account(5, "dst", partition=1)], 1)
    for n, destination, amount_minor in ((6, "dst", 300), (7, "nobody", 200)):
        steps = cluster.saga(transfer(n, "src", destination, amount_minor))
        for result, partition in zip(steps, (0, 1, 0), strict=True):
            _keep(facts, result.outputs, partition)
    return facts


def _keep(facts: Facts, outputs: Sequence[Output], partition: int) -> None:
    facts.entries += [(e, partition) for e in of_type(outputs, JournalEntry)]
    facts.events += [(e, partition) for e in of_type(outputs, Event)]
    facts.directory += of_type(outputs, DirectoryEntry)


def placed(items: Sequence[tuple[object, int]], kind: Literal["ledger", "events"]) -> list[Origin]:
    """Consecutive offsets per partition, in emission order."""
    offsets: Counter[int] = Counter()
    origins = []
    for _item, partition in items:
        origins.append(Origin(kind, partition, offsets[partition]))
        offsets[partition] += 1
    return origins


# --- stores --------------------------------------------------------------------------------


@pytest.fixture
def new_store(postgres_server_dsn: str) -> NewStore:
    """A function making a fresh migrated database (one test may need several)."""

    def make() -> str:
        name = f"verify_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(postgres_server_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = psycopg.conninfo.make_conninfo(postgres_server_dsn, dbname=name)
        migrate(url)
        return url

    return make


def write_store(
    dsn: str,
    facts: Facts,
    *,
    ledger_origins: list[Origin] | None = None,
    ledger_topic: str = LEDGER_TOPIC,
    consumer: str = CONSUMER,
    skip_entry: int | None = None,
) -> None:
    """Write ``facts`` in one sink batch; positions claim every entry, even a skipped one."""
    entry_origins = ledger_origins or placed(facts.entries, "ledger")
    event_origins = placed(facts.events, "events")
    entries = [(e, o) for (e, _), o in zip(facts.entries, entry_origins, strict=True)]
    next_offsets = {(DLQ_TOPIC, DEAD_LETTER.partition): DEAD_LETTER.offset + 1}
    for topic, origins in ((ledger_topic, entry_origins), (EVENTS_TOPIC, event_origins)):
        for origin in origins:
            next_offsets[(topic, origin.partition)] = origin.offset + 1
    batch = Batch(
        entries=[x for i, x in enumerate(entries) if i != skip_entry],
        events=[(e, o) for (e, _), o in zip(facts.events, event_origins, strict=True)],
        dead_letters=[(dead_letter_row(), DEAD_LETTER)],
        directory=facts.directory,
    )
    chains = [o.chain for o in [*entry_origins, *event_origins, DEAD_LETTER]]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET ROLE {store.SINK_ROLE}")
        heads = store.chain_heads(conn, chains)
        store.write(
            conn,
            batch,
            consumer=consumer,
            started_at=dict.fromkeys(next_offsets),
            next_offsets=next_offsets,
            heads=heads,
        )


def dead_letter_row() -> tuple[object, ...]:
    """A command the workers could not decode, as the sink stores it."""
    headers = {
        "dlq.reason": b"undecodable",
        "dlq.topic": b"p.commands",
        "dlq.partition": b"0",
        "dlq.offset": b"7",
    }
    return records.dlq_row(headers, b"acc-1", b"\x00not avro", DEAD_LETTER)


def as_superuser(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def verify(dsn: str, ledger_topic: LedgerTopic | None = None) -> StoreReport:
    return verify_store(dsn, ledger_topic=ledger_topic, progress=None)


def audit_row(dsn: str, ref: str) -> tuple[str, int]:
    """(chain, seq) of the audit row of the fact ``ref``."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT chain, seq FROM audit_log WHERE ref = %s", (ref,)).fetchone()
    assert row is not None
    return row[0], row[1]


@pytest.fixture(scope="module")
def facts() -> Facts:
    return make_facts()


@pytest.fixture
def good_store(new_store: NewStore, facts: Facts) -> str:
    """A store the sink wrote from ``facts``; verify passes on it."""
    dsn = new_store()
    write_store(dsn, facts)
    report = verify(dsn)
    assert report.ok, report.summary()
    return dsn


# --- an untampered store --------------------------------------------------------------------


@integration
def test_a_store_written_by_the_sink_passes(good_store: str, facts: Facts) -> None:
    report = verify(good_store)
    assert report.ok and report.problems == () and report.problems_total == 0
    assert report.counts["journal_entries"] == len(facts.entries) == 7
    assert report.counts["ledger_lines"] == sum(len(e.lines) for e, _ in facts.entries)
    assert report.counts["payment_events"] == len(facts.events)
    assert report.counts["dlq_records"] == 1
    assert report.counts["audit_log"] == len(facts.entries) + len(facts.events) + 1
    assert {e.phase for e, _ in facts.entries} == {"posted", "pending", "post", "void"}
    eur = report.ledger_by_currency["EUR"]
    assert eur["debits_minor"] == eur["credits_minor"] > 0
    assert report.ledger_by_currency["USD"]["debits_minor"] == 250
    assert report.topic is None
    assert report.summary().endswith(f"audit verify: ok ({report.seconds:.1f} s)")
    assert json.loads(json.dumps(report.to_json()))["ok"] is True


# --- tamper tests ---------------------------------------------------------------------------


@integration
def test_an_audit_body_changed_behind_the_trigger_is_named_by_chain_and_seq(
    good_store: str, facts: Facts
) -> None:
    chain, seq = audit_row(good_store, facts.entry("deposit", "posted").entry_id)
    as_superuser(
        good_store,
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "UPDATE audit_log SET body = replace(body, '1000', '1001')"
        f" WHERE chain = '{chain}' AND seq = {seq}",
    )
    report = verify(good_store)
    assert not report.ok
    assert report.problems == (f"audit_log {chain} seq {seq}: hash does not match its body",)


@integration
def test_an_audit_row_rehashed_behind_the_trigger_breaks_the_chain_and_its_fact(
    good_store: str, facts: Facts
) -> None:
    """A forger who recomputes the changed row's hash: the next row and the fact disagree."""
    entry = facts.entry("deposit", "posted")
    chain, seq = audit_row(good_store, entry.entry_id)
    forged = "replace(body, '1000', '1001')"
    as_superuser(
        good_store,
        "SET session_replication_role = replica",
        f"UPDATE audit_log SET body = {forged},"
        f" hash = sha256(prev_hash || convert_to({forged}, 'UTF8'))"
        f" WHERE chain = '{chain}' AND seq = {seq}",
    )
    report = verify(good_store)
    assert report.problems == (
        f"audit_log {chain} seq {seq + 1}: prev_hash is not the hash of seq {seq}",
        f"audit_log {chain} seq {seq}: journal entry {entry.entry_id} as stored in"
        " journal_entries does not match its audited body",
    )


@integration
def test_a_deleted_ledger_line_names_its_entry(good_store: str, facts: Facts) -> None:
    entry = facts.entry("deposit", "posted")
    chain, seq = audit_row(good_store, entry.entry_id)
    assert (entry.lines[1].account_id, entry.lines[1].side) == ("src", "credit")
    as_superuser(
        good_store, f"DELETE FROM ledger_lines WHERE entry_id = '{entry.entry_id}' AND line_no = 1"
    )
    report = verify(good_store)
    assert not report.ok
    assert report.problems[:2] == (
        f"ledger_lines: entry {entry.entry_id} does not balance in EUR (debits 1000, credits 0)",
        f"audit_log {chain} seq {seq}: journal entry {entry.entry_id} as stored in"
        " journal_entries does not match its audited body",
    )
    assert report.problems[2].startswith("ledger_lines: EUR debits")
    assert report.problems[3].startswith("accounts src: stored (posted_debits")


@integration
def test_a_changed_account_amount_names_the_account(good_store: str) -> None:
    as_superuser(
        good_store,
        "UPDATE accounts SET posted_credits_minor = posted_credits_minor + 1"
        " WHERE account_id = 'dst'",
    )
    report = verify(good_store)
    assert report.problems == (
        "accounts dst: stored (posted_debits 0, posted_credits 301, pending_debits 0,"
        " pending_credits 0) != ledger lines (posted_debits 0, posted_credits 300,"
        " pending_debits 0, pending_credits 0)",
    )


@integration
def test_a_deleted_entry_and_a_deleted_audit_row_are_named(good_store: str, facts: Facts) -> None:
    void = facts.entry("transfer_debit", "void")
    chain, seq = audit_row(good_store, void.entry_id)
    credit = facts.entry("transfer_credit", "posted")
    credit_chain, credit_seq = audit_row(good_store, credit.entry_id)
    as_superuser(
        good_store,
        "SET session_replication_role = replica",  # the foreign key and the trigger stand aside
        f"DELETE FROM ledger_lines WHERE entry_id = '{void.entry_id}'",
        f"DELETE FROM journal_entries WHERE entry_id = '{void.entry_id}'",
        f"DELETE FROM audit_log WHERE chain = '{credit_chain}' AND seq = {credit_seq}",
    )
    problems = verify(good_store).problems
    assert f"journal_entries {credit.entry_id}: no audit_log row" in problems
    assert (
        f"audit_log {chain} seq {seq}: journal entry {void.entry_id} is not in journal_entries"
        in problems
    )
    assert any(p.startswith("accounts src: stored") for p in problems)  # its release is gone


@integration
def test_a_changed_event_a_changed_dead_letter_and_a_missing_account_row_are_named(
    good_store: str, facts: Facts
) -> None:
    event = facts.events[0][0]
    chain, seq = audit_row(good_store, event.event_id)
    as_superuser(
        good_store,
        f"UPDATE payment_events SET partner_id = 'p9' WHERE event_id = '{event.event_id}'",
        "UPDATE dlq_records SET payload_size = 1",
        "DELETE FROM accounts WHERE account_id = 'usd-1'",
    )
    assert verify(good_store).problems == (
        f"audit_log {chain} seq {seq}: event {event.event_id} as stored in payment_events"
        " does not match its audited body",
        "audit_log dlq:0 seq 1: dead letter 0.0 as stored in dlq_records does not match its"
        " audited body",
        "accounts usd-1: no row; its 1 ledger lines give (posted_debits 0, posted_credits 250,"
        " pending_debits 0, pending_credits 0)",
    )


# --- the ledger topic -----------------------------------------------------------------------


@dataclass(frozen=True)
class Produced:
    settings: Settings
    source: LedgerTopic
    origins: list[Origin]
    """Where each of the facts' entries was produced."""


@pytest.fixture(scope="module")
def produced(settings: Settings, facts: Facts) -> Produced:
    """The facts' entries on a real ledger topic of a prefix of this module's own, and one
    more entry after them that no store has (beyond every stored position)."""
    prefix = f"{settings.topic_prefix}-v{uuid.uuid4().hex[:6]}"
    ours = settings.model_copy(update={"topic_prefix": prefix, "partitions": PARTITIONS})
    topics = Topics.from_settings(ours)
    ensure_topics(ours.kafka, topics)
    source = ledger_topic_of(ours)
    producer = Producer(
        {"bootstrap.servers": ours.bootstrap, "acks": "all", "enable.idempotence": True}
    )
    delivered: list[Origin] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        assert error is None, error
        delivered.append(Origin("ledger", message.partition() or 0, message.offset() or 0))

    later = replace(facts.entry("deposit", "posted"), entry_id="later:deposit")
    for entry, partition in [*facts.entries, (later, 0)]:
        producer.produce(
            topics.ledger,
            key=entry.account_id.encode(),
            value=source.serde.encode_journal_entry(entry),
            partition=partition,
            on_delivery=on_delivery,
        )
        assert producer.flush(PRODUCE_TIMEOUT_S) == 0  # one at a time: offsets in emission order
    assert delivered[:-1] == placed(facts.entries, "ledger")
    return Produced(ours, source, delivered[:-1])


def write_produced(dsn: str, facts: Facts, produced: Produced, *, skip_entry: int | None) -> None:
    write_store(
        dsn,
        facts,
        ledger_origins=produced.origins,
        ledger_topic=produced.source.topic,
        consumer=postgres_sink_group(produced.settings),
        skip_entry=skip_entry,
    )


@integration
def test_the_store_agrees_with_the_ledger_topic_up_to_the_stored_positions(
    new_store: NewStore, facts: Facts, produced: Produced
) -> None:
    dsn = new_store()
    write_produced(dsn, facts, produced, skip_entry=None)
    report = verify(dsn, produced.source)
    assert report.ok, report.summary()
    assert report.topic is not None
    assert report.topic["entries"] == len(facts.entries)  # not the one beyond the positions
    assert report.topic["lines"] == report.counts["ledger_lines"]


@integration
def test_a_store_missing_an_entry_it_claims_differs_from_the_ledger_topic(
    new_store: NewStore, facts: Facts, produced: Produced
) -> None:
    dsn = new_store()
    skipped = facts.entry("deposit", "posted")
    write_produced(dsn, facts, produced, skip_entry=[e for e, _ in facts.entries].index(skipped))
    assert verify(dsn).ok  # consistent in itself: only the topic shows what is missing
    report = verify(dsn, produced.source)
    topic = LedgerTotals()
    for entry, partition in facts.entries:
        topic.add(partition, entry)
    end = max(o.offset for o in produced.origins if o.partition == 0) + 1
    eur = (0, "EUR")
    assert report.problems == (
        f"ledger partition 0: {topic.entries[0] - 1} journal entries in journal_entries,"
        f" {topic.entries[0]} in the topic up to offset {end}",
        f"ledger partition 0 EUR: journal_entries has {topic.lines[eur] - 2} lines, debits"
        f" {topic.debits[eur] - 1000}, credits {topic.credits[eur] - 1000}; the topic up to"
        f" offset {end} has {topic.of(eur)}",
    )


@integration
def test_the_cli_prints_json_and_exits_by_the_verdict(
    new_store: NewStore,
    facts: Facts,
    produced: Produced,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good, bad = new_store(), new_store()
    write_produced(good, facts, produced, skip_entry=None)
    write_produced(bad, facts, produced, skip_entry=0)
    environment = {
        "PAYSTREAM_ENVIRONMENT": "test",
        "PAYSTREAM_DATA_DIR": str(produced.settings.data_dir),
        **kafka_env(produced.settings),
        "PAYSTREAM_TOPIC_PREFIX": produced.settings.topic_prefix,
        "PAYSTREAM_PARTITIONS": str(PARTITIONS),
        "PAYSTREAM_POSTGRES_DSN": good,
    }
    monkeypatch.delenv("PAYSTREAM_SETTINGS_FILE", raising=False)
    monkeypatch.delenv("PAYSTREAM_SCHEMA_REGISTRY_URL", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["audit", "verify", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] is True and printed["topic"]["entries"] == len(facts.entries)
    monkeypatch.setenv("PAYSTREAM_POSTGRES_DSN", bad)
    assert cli.main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "audit verify: FAILED, 2 problems\n  ledger partition 0: " in out


# --- the pure checks ------------------------------------------------------------------------


def _chain(
    bodies: Sequence[str], name: str = "ledger:0"
) -> list[tuple[str, int, bytes, bytes, str]]:
    rows, prev = [], records.GENESIS_HASH
    for seq, body in enumerate(bodies, 1):
        digest = records.chain_hash(prev, body)
        rows.append((name, seq, prev, digest, body))
        prev = digest
    return rows


def test_the_chain_walk_names_a_changed_body_a_gap_and_a_broken_link() -> None:
    rows = _chain(["a", "b", "c", "d"]) + _chain(["x"], "events:0")
    assert list(chain_problems(rows)) == []
    changed = [rows[0], (*rows[1][:4], "B"), *rows[2:]]
    assert list(chain_problems(changed)) == [
        "audit_log ledger:0 seq 2: hash does not match its body"
    ]
    assert list(chain_problems(rows[:1] + rows[2:])) == [
        "audit_log ledger:0 seq 3: follows seq 1 (seq 2..2 missing)"
    ]
    relinked = [*rows[:2], ("ledger:0", 3, bytes(32), records.chain_hash(bytes(32), "c"), "c")]
    assert list(chain_problems(relinked)) == [
        "audit_log ledger:0 seq 3: prev_hash is not the hash of seq 2"
    ]
    assert list(chain_problems(_chain(["a", "b"])[1:])) == [
        "audit_log ledger:0 seq 2: follows seq 0 (seq 1..1 missing)"
    ]


def test_problems_are_listed_up_to_the_limit_and_counted_beyond() -> None:
    problems = Problems(limit=3)
    problems.extend(f"p{i}" for i in range(10))
    problems.count_more(5)
    assert (problems.listed, problems.total) == (["p0", "p1", "p2"], 15)
    assert Problems().limit == audit_verify.PROBLEMS_LISTED_MAX


def test_totals_compare_per_partition_and_currency() -> None:
    topic, stored = LedgerTotals(), LedgerTotals()
    for entry, partition in make_facts().entries:
        topic.add(partition, entry)
        if entry.lines[0].currency != "USD":
            stored.add(partition, entry)
    assert compare_totals(topic, topic, {0: 6, 1: 1}) == []
    assert compare_totals(stored, topic, {0: 6, 1: 1}) == [
        "ledger partition 0: 5 journal entries in journal_entries, 6 in the topic up to offset 6",
        "ledger partition 0 USD: journal_entries has 0 lines, debits 0, credits 0; the topic up"
        " to offset 6 has 2 lines, debits 250, credits 250",
    ]


def test_progress_is_a_line_per_so_many_rows_and_nothing_without_a_stream() -> None:
    out = io.StringIO()
    rows = list(Progress(out, every_rows=2).track("audit_log", range(5), 5))
    assert rows == [0, 1, 2, 3, 4]
    assert out.getvalue() == (
        "audit verify: audit_log 2/5 rows (40%)\naudit verify: audit_log 4/5 rows (80%)\n"
    )
    assert list(Progress(None, every_rows=1).track("x", range(3), 3)) == [0, 1, 2]
