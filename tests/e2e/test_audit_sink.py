"""The Postgres audit store after a run with duplicates, conflicts, compensations and hostile
records: it holds exactly what the ``ledger`` topic holds, and the workers' balances."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from paystream import workload
from paystream.agents import metrics
from paystream.audit.replay import AuditStore, replay
from paystream.audit.stored_journal import read_journal as read_stored_journal
from paystream.runner import TRAFFIC_TIMEOUT_S, Platform, child_env
from paystream.services.process import wait_until
from paystream.settings import Settings
from paystream.topology import offsets
from paystream.topology.topics import postgres_sink_group
from tests.e2e.harness import (
    assert_audit_store_matches,
    assert_every_record_answered_once,
    assert_ledger_exactly_once,
    platform,
    setup_or_fail,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIX = workload.Mix(accounts=120, transfers=4_000)
TRAFFIC_PER_S = 2_000
COMMIT_TIMEOUT_S = 30.0
REPLAY_TIMEOUT_S = 300


def test_the_audit_store_holds_the_ledger_exactly(
    settings: Settings, tmp_path: Path, audit_dsn: str
) -> None:
    load = workload.build(seed=14, mix=MIX, run_id="audit", now_ms=int(time.time() * 1000))
    base = settings.model_copy(update={"postgres_dsn": audit_dsn})
    with platform(base, tmp_path, workers=2, sinks=2) as running:
        setup_or_fail(running, load)
        running.publish_paced(load, per_second=TRAFFIC_PER_S).join()
        left = running.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S)
        assert not left, f"{len(left)} command ids without their answers{running.logs()}"
        assert_every_record_answered_once(running, load)
        report = assert_ledger_exactly_once(running)
        assert_audit_store_matches(running, report, load)
        _assert_replay_matches_the_store_and_finds_a_tampered_amount(running, report.entries)
        written = _rows_written(running.settings.data_dir / "metrics")
        assert written["journal_entries"] == report.entries, written  # the sinks' own counts
        assert written["audit_log"] > 0
        _assert_group_caught_up_in_kafka(running)


def _assert_replay_matches_the_store_and_finds_a_tampered_amount(
    running: Platform, entries: int
) -> None:
    """``paystream replay --postgres`` finds every stored entry as the rules produce it; after
    an amount is changed in Postgres (as the tables' owner can), replay pinpoints the entry,
    the line and both amounts."""
    env = {
        **os.environ, **child_env(running.settings, log_level="info"),
        "PAYSTREAM_POSTGRES_DSN": running.postgres_dsn or "",
    }  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "paystream.cli", "replay", "--json", "--quiet",
                           "--postgres"], env=env, capture_output=True, text=True,
                          timeout=REPLAY_TIMEOUT_S)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(done.stdout)
    assert found["postgres"]["matched"] == entries and found["postgres"]["differing"] == 0
    with psycopg.connect(running.postgres_dsn or "", autocommit=True) as owner:
        row = owner.execute(
            "UPDATE ledger_lines SET amount_minor = amount_minor + 1 WHERE (entry_id, line_no) ="
            " (SELECT entry_id, 0 FROM ledger_lines ORDER BY entry_id LIMIT 1)"
            " RETURNING entry_id, amount_minor"
        ).fetchone()
    assert row is not None
    entry_id, amount_minor = row
    store = AuditStore.of(read_stored_journal(running.postgres_dsn or ""),
                          group=postgres_sink_group(running.settings),
                          ledger_topic=running.topics.ledger)  # fmt: skip
    tampered = replay(running.kafka, running.topics, running.serde, stored=store)
    assert not tampered.ok and tampered.postgres is not None
    assert tampered.postgres.differing == [entry_id] and tampered.journal.ok
    first = tampered.first_divergence
    assert first is not None and first.kind == "postgres" and first.subject == entry_id
    assert f"amount_minor replayed {amount_minor - 1}, stored {amount_minor}" in first.detail
    assert first.batch is not None and first.command is not None


def _assert_group_caught_up_in_kafka(running: Platform) -> None:
    """The sinks commit their stored positions to Kafka too (for the tools that watch
    groups' lag, the ops page among them): once caught up, the group stands at the logs'
    ends there as well."""
    admin = AdminClient(running.kafka.config())
    topics = [running.topics.ledger, running.topics.events, running.topics.dlq]
    group = postgres_sink_group(running.settings)

    def behind() -> dict[tuple[str, int], int]:
        ends = offsets.log_ends(admin, topics, running.settings.partitions)
        at = offsets.committed(admin, group)
        return {tp: end - at.get(tp, 0) for tp, end in ends.items() if end != at.get(tp, 0)}

    assert wait_until(lambda: not behind(), timeout_s=COMMIT_TIMEOUT_S), behind()


def _rows_written(metrics_root: Path) -> Counter[str]:
    """``paystream_sink_rows_total`` by table, summed over the sinks' metrics directories."""
    prefix = 'paystream_sink_rows_total{table="'
    rows: Counter[str] = Counter()
    for directory in metrics_root.glob("sink-*"):
        for line in metrics.collect_text(directory).splitlines():
            if line.startswith(prefix):
                table = line[len(prefix) :].split('"')[0]
                rows[table] += int(float(line.rsplit(" ", 1)[1]))
    return rows
