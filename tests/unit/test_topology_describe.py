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
from paystream.agents.processor import Batch, BatchProcessor
from paystream.ledger import (
    Account,
    Compensation,
    CreditLeg,
    DirectoryEntry,
    Event,
    IdempotencyRecord,
    JournalEntry,
    JournalLine,
)
from paystream.settings import Settings
from paystream.tables import codecs
from paystream.topology import describe
from paystream.topology.avro import AvroSerde
from paystream.topology.dlq import PoisonMessage
from paystream.topology.registry import FileSchemaRegistry
from paystream.topology.topics import Topics
from tests.unit.kafka_fakes import FakeMessage

REPO = Path(__file__).resolve().parents[2]
PREFIX = "acme"
SOURCE_PARTITION = 3

SAMPLES: dict[type, Any] = {
    JournalEntry: JournalEntry(
        "cmd-1:debit",
        "cmd-1",
        "transfer_debit",
        "partner-1",
        "acct-s",
        1_700_000_000_000,
        (
            JournalLine("acct-s", "EUR", "debit", 500),
            JournalLine("@transit:3", "EUR", "credit", 500),
        ),
    ),
    Event: Event("cmd-1:debited", "cmd-1", "Debited", "Transfer", "partner-1", "acct-s", 1),
    CreditLeg: CreditLeg("cmd-1", "partner-1", 1, "acct-s", "acct-d", 500, "EUR"),
    Compensation: Compensation(
        "cmd-1", "partner-1", 1, "acct-s", "acct-d", 500, "EUR", "account_closed"
    ),
    DirectoryEntry: DirectoryEntry("acct-s", "EUR", "partner-1", "open"),
}


class NoStores:
    """The processor's stores, for tests that only route outputs (never read)."""

    def get(self, table: str, partition: int) -> Any:
        raise AssertionError("routing reads no table")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(topic_prefix=PREFIX, data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9")


@pytest.fixture
def topics(settings: Settings) -> Topics:
    return Topics.from_settings(settings)


@pytest.fixture
def processor(tmp_path: Path, topics: Topics) -> BatchProcessor:
    serde = AvroSerde(FileSchemaRegistry(tmp_path / "registry.json"), topic_names=topics.names())
    return BatchProcessor(
        topics=topics,
        serde=serde,
        stores=NoStores(),  # type: ignore[arg-type]
        directory={},
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
        "directory",
        "balances_changelog",
        "idempotency_changelog",
    }
    assert topology.topic_names() == {getattr(topics, a) for a in describe.topic_attributes(topics)}


def test_routes_match_batch_processor(processor: BatchProcessor, topics: Topics) -> None:
    assert {route.output for route in describe.ROUTES} == set(SAMPLES)
    for route in describe.ROUTES:
        sample = SAMPLES[route.output]
        record = processor._route(sample, SOURCE_PARTITION)
        assert record.topic == getattr(topics, route.topic), route
        assert record.key == getattr(sample, route.key_field).encode(), route
        expected = SOURCE_PARTITION if route.partition == describe.SOURCE_PARTITION else None
        assert record.partition == expected, route


def test_dead_letters_match_batch_processor(processor: BatchProcessor, topics: Topics) -> None:
    message = FakeMessage(topics.commands, SOURCE_PARTITION, 7, b"acct-s", b"?")
    batch = processor.process([message])  # type: ignore[list-item]
    route = describe.DEAD_LETTERS
    assert route.output is PoisonMessage
    assert route.key_field == "key"
    assert [(r.topic, r.key, r.partition) for r in batch.records] == [
        (getattr(topics, route.topic), message.key(), None)
    ]
    assert route.partition == describe.MURMUR2
    assert batch.writes == []


def test_changelogs_match_batch_processor(processor: BatchProcessor, topics: Topics) -> None:
    account = Account("acct-s", "EUR", "partner-1", "open", True)
    record = IdempotencyRecord("cmd-1", "0" * 64, None)
    writes: dict[str, tuple[Callable[[Batch], None], bytes]] = {
        "balances": (
            lambda batch: processor._write_accounts(SOURCE_PARTITION, {"acct-s": account}, batch),
            codecs.encode_account_key("acct-s"),
        ),
        "idempotency": (
            lambda batch: processor._write_idempotency(
                SOURCE_PARTITION, {("acct-s", "req-1"): record}, batch
            ),
            codecs.encode_idempotency_key(("acct-s", "req-1")),
        ),
    }
    assert {table.name for table in describe.TABLES} == set(writes) == set(processor.changelogs)
    for table in describe.TABLES:
        batch = Batch()
        write, key = writes[table.name]
        write(batch)
        changelog = getattr(topics, table.changelog)
        assert processor.changelogs[table.name] == changelog
        assert [(r.topic, r.key, r.partition) for r in batch.records] == [
            (changelog, key, SOURCE_PARTITION)
        ]
        assert [(w.table, w.partition, w.key) for w in batch.writes] == [
            (table.name, SOURCE_PARTITION, key)
        ]
        assert batch.writes[0].value == batch.records[0].value


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
