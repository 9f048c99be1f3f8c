"""`paystream topology describe`: the declared graph matches the real wiring."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from paystream.agents import worker
from paystream.agents.directory import FixedDirectory
from paystream.agents.processor import Batch, BatchProcessor
from paystream.ledger import (
    Account,
    BatchResult,
    Compensation,
    Confirmation,
    CreditLeg,
    DirectoryEntry,
    Event,
    IdempotencyRecord,
    JournalEntry,
    JournalLine,
    Rules,
)
from paystream.settings import Settings
from paystream.tables import codecs, payout_codecs
from paystream.topology import describe
from paystream.topology.avro import AvroSerde
from paystream.topology.dlq import DLQ_VALUE_BYTES_MAX, PoisonMessage
from paystream.topology.partitioner import partition_for
from paystream.topology.registry import FileSchemaRegistry
from paystream.topology.topics import Topics
from tests.support.ledger import a_payout
from tests.unit.kafka_fakes import FakeMessage

REPO = Path(__file__).resolve().parents[2]
PREFIX = "acme"
SOURCE_PARTITION = 3

LEG_FIELDS: dict[str, Any] = {
    "transfer_id": "cmd-1",
    "request_id": "r1",
    "partner_id": "partner-1",
    "issued_at_ms": 1,
    "source_account_id": "acct-s",
    "destination_account_id": "acct-d",
    "amount_minor": 500,
    "currency": "EUR",
}
SAMPLES: dict[type, Any] = {
    JournalEntry: JournalEntry(
        entry_id="cmd-1:debit",
        payment_id="cmd-1",
        kind="transfer_debit",
        partner_id="partner-1",
        account_id="acct-s",
        issued_at_ms=1_700_000_000_000,
        lines=(
            JournalLine(account_id="acct-s", currency="EUR", side="debit", amount_minor=500),
            JournalLine(account_id="@transit:3", currency="EUR", side="credit", amount_minor=500),
        ),
        phase="pending",
    ),
    Event: Event(
        event_id="cmd-1:debited",
        payment_id="cmd-1",
        type="Debited",
        command_type="Transfer",
        partner_id="partner-1",
        account_id="acct-s",
        issued_at_ms=1,
    ),
    CreditLeg: CreditLeg(**LEG_FIELDS),
    Confirmation: Confirmation(**LEG_FIELDS),
    Compensation: Compensation(**LEG_FIELDS, reason="account_closed"),
    DirectoryEntry: DirectoryEntry("acct-s", "EUR", "partner-1", "open"),
}


class NoStores:
    """The processor's stores, for tests that only route outputs: empty tables (a manifest
    reads the partition's clock, absent here)."""

    def get(self, table: str, partition: int) -> Any:
        return lambda _key: None


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(topic_prefix=PREFIX, data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9")


@pytest.fixture
def topics(settings: Settings) -> Topics:
    return Topics.from_settings(settings)


@pytest.fixture
def processor(tmp_path: Path, topics: Topics) -> BatchProcessor:
    serde = AvroSerde(FileSchemaRegistry(tmp_path / "registry.json"), topics=topics.payloads())
    return BatchProcessor(
        topics=topics,
        serde=serde,
        stores=NoStores(),  # type: ignore[arg-type]
        directory=FixedDirectory(),
        rules=Rules(),
        worker="test",
    )


def test_text_names_every_topic_and_the_agent(settings: Settings, topics: Topics) -> None:
    text = describe.describe(describe.build(settings))
    for attr in describe.topic_attributes(topics):
        assert getattr(topics, attr) in text, attr
    assert f"    Processor: {describe.AGENT} (agent;" in text
    assert text.startswith("Topologies:\n   Sub-topology: 0 (app: acme-ledger, partitions: 8)")
    for kind in ("Source", "Processor", "Sink"):
        assert f"    {kind}: " in text
    assert "      --> ledger\n" in text
    assert "      <-- ledger\n" in text


def test_every_topic_of_topics_is_a_node(settings: Settings, topics: Topics) -> None:
    topology = describe.build(settings)
    assert set(describe.topic_attributes(topics)) == {
        "commands",
        "legs",
        "ledger",
        "events",
        "dlq",
        "batches",
        "directory",
        "balances_changelog",
        "idempotency_changelog",
        "payouts_changelog",
    }
    assert topology.topic_names() == {getattr(topics, a) for a in describe.topic_attributes(topics)}


def test_every_topic_is_prefix_dot_name(topics: Topics) -> None:
    """One separator: the tables' topics are named like the rest, under the app's name."""
    assert {a: getattr(topics, a) for a in describe.topic_attributes(topics)} == {
        "commands": "acme.commands",
        "legs": "acme.legs",
        "ledger": "acme.ledger",
        "events": "acme.events",
        "dlq": "acme.dlq",
        "batches": "acme.batches",
        "directory": "acme.ledger.directory",
        "balances_changelog": "acme.ledger.balances-changelog",
        "idempotency_changelog": "acme.ledger.idempotency-changelog",
        "payouts_changelog": "acme.ledger.payouts-changelog",
    }
    assert topics.payloads() == {
        "command": "acme.commands",
        "leg": "acme.legs",
        "journal_entry": "acme.ledger",
        "event": "acme.events",
        "batch_manifest": "acme.batches",
    }


def test_routes_match_batch_processor(processor: BatchProcessor, topics: Topics) -> None:
    assert {route.output for route in describe.ROUTES} == set(SAMPLES)
    for route in describe.ROUTES:
        sample = SAMPLES[route.output]
        record = processor._shell.route(sample, SOURCE_PARTITION)
        assert record.topic == getattr(topics, route.topic), route
        assert record.key == getattr(sample, route.key_field).encode(), route
        expected = SOURCE_PARTITION if route.partition == describe.SOURCE_PARTITION else None
        assert record.partition == expected, route


def _key_on(partition: int, partitions: int) -> bytes:
    """An account id whose murmur2 partition is ``partition``."""
    return next(
        key
        for key in (f"acct-{n}".encode() for n in range(10_000))
        if partition_for(key, partitions) == partition
    )


@pytest.mark.parametrize("placed", [True, False])
def test_dead_letters_match_batch_processor(
    processor: BatchProcessor, topics: Topics, placed: bool
) -> None:
    key = _key_on(SOURCE_PARTITION if placed else SOURCE_PARTITION + 1, topics.partitions)
    message = FakeMessage(topics.commands, SOURCE_PARTITION, 7, key, b"?")
    batch = processor.process([message])  # type: ignore[list-item]
    route = describe.DEAD_LETTERS
    assert route.output is PoisonMessage
    assert route.key_field == "key"
    manifests = describe.MANIFESTS
    assert [(r.topic, r.key, r.partition) for r in batch.records] == [
        (getattr(topics, route.topic), message.key(), None),
        (getattr(topics, manifests.topic), str(SOURCE_PARTITION).encode(), SOURCE_PARTITION),
    ]
    assert manifests.partition == describe.SOURCE_PARTITION
    assert route.partition == describe.MURMUR2
    assert batch.writes == []
    # No ids could be read, so placed or not the reason is why it did not decode.
    assert batch.dead_letters == ["undecodable"]


PAYOUT_RESULT = BatchResult(
    accounts={}, idempotency={}, outputs=(), clock_ms=0, profiles={}, screening=None,
    payouts={"po-1": a_payout()},
)  # fmt: skip


def test_changelogs_match_batch_processor(processor: BatchProcessor, topics: Topics) -> None:
    account = Account(
        account_id="acct-s",
        currency="EUR",
        partner_id="partner-1",
        status="open",
        debits_must_not_exceed_credits=True,
    )
    record = IdempotencyRecord(command_id="cmd-1", body_sha256="0" * 64, code=None, expires_at_ms=9)
    request = codecs.encode_idempotency_key(("request", "partner-1", "req-1"))
    writes: dict[str, tuple[Callable[[Batch], object], list[bytes]]] = {
        "balances": (
            lambda batch: processor._write_accounts(SOURCE_PARTITION, {"acct-s": account}, batch),
            [codecs.encode_account_key("acct-s")],
        ),
        "idempotency": (  # the record (its expiry index row is the store's own)
            lambda batch: processor._write_idempotency(
                SOURCE_PARTITION, {("request", "partner-1", "req-1"): record}, batch
            ),
            [request],
        ),
        "payouts": (
            lambda batch: processor._write_payouts(SOURCE_PARTITION, PAYOUT_RESULT, batch),
            [payout_codecs.payout_key("po-1")],
        ),
    }
    assert {table.name for table in describe.TABLES} == set(writes) == set(processor.changelogs)
    for table in describe.TABLES:
        batch = Batch()
        write, keys = writes[table.name]
        write(batch)
        changelog = getattr(topics, table.changelog)
        assert processor.changelogs[table.name] == changelog
        assert [(r.topic, r.key, r.partition) for r in batch.records] == [
            (changelog, key, SOURCE_PARTITION) for key in keys
        ]
        assert [(w.table, w.partition, w.key) for w in batch.writes] == [
            (table.name, SOURCE_PARTITION, key) for key in keys
        ]
        assert [w.value for w in batch.writes] == [r.value for r in batch.records]


def test_the_wire_table_names_every_topic(topics: Topics) -> None:
    assert [attr for attr, _key, _format in describe.WIRES] == list(
        describe.topic_attributes(topics)
    )
    table = describe.wire_table(topics)
    for attr in describe.topic_attributes(topics):
        assert f"| `{getattr(topics, attr)}` |" in table
    assert DLQ_VALUE_BYTES_MAX == 64 * 1024  # as the wire table and "Bad input" say
    assert "64 KiB" in describe.markdown(describe.build(Settings(topic_prefix=PREFIX)))


def test_sources_match_the_worker(topics: Topics) -> None:
    assert worker.source_topics(topics) == [
        getattr(topics, source.topic) for source in describe.SOURCES
    ]
    assert describe.GLOBAL_STORE.topic == "directory"


def test_build_refuses_an_unrouted_output(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setattr(describe, "ROUTES", describe.ROUTES[:-1])
    with pytest.raises(ValueError, match="no route for outputs \\['DirectoryEntry'\\]"):
        describe.build(settings)


def test_mermaid_has_every_edge(settings: Settings) -> None:
    topology = describe.build(settings)
    diagram = describe.mermaid(topology)
    assert diagram.startswith("flowchart LR\n")
    assert '    topic_commands[/"acme.commands"/]' in diagram
    assert '    agent_ledger[["agent: ledger"]]' in diagram
    assert '    table_balances[("balances")]' in diagram
    assert '    topic_legs -->|"key: target account"| agent_ledger' in diagram
    assert '    agent_ledger -->|"Confirmation, key: source account"| topic_legs' in diagram
    assert '    agent_ledger -->|"Compensation, key: source account"| topic_legs' in diagram
    assert '    table_directory -.->|"lookup"| agent_ledger' in diagram
    edges = [line for line in diagram.splitlines() if "-->|" in line or "-.->|" in line]
    expected = sum(len(sub.edges) for sub in topology.sub_topologies) + len(topology.lookups)
    assert len(edges) == expected


def test_write_makes_a_markdown_file_with_mermaid(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "docs" / "topology.md"
    describe.write(describe.build(settings), path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Topology\n")
    assert "```mermaid\nflowchart LR\n" in text
    assert "```text\nTopologies:\n" in text
    assert "partition(S)" in text and "partition(D)" in text


def test_docs_topology_md_is_current() -> None:
    """Regenerate with `paystream topology describe` when this fails."""
    expected = describe.markdown(describe.build(Settings(topic_prefix="paystream", partitions=8)))
    assert (REPO / "docs" / "topology.md").read_text(encoding="utf-8") == expected


def test_cli_prints_and_writes(tmp_path: Path) -> None:
    path = tmp_path / "out" / "topology.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
    env["PAYSTREAM_TOPIC_PREFIX"] = PREFIX
    run = subprocess.run(
        [sys.executable, "-m", "paystream.cli", "topology", "describe", "--write", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Topologies:\n")
    assert "Source: commands-source (topic: acme.commands" in run.stdout
    assert "```mermaid" in path.read_text(encoding="utf-8")
