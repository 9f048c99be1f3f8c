"""The analytics process on real Kafka and the real ClickHouse engine: after a run with
duplicates, conflicts, compensations and hostile records, SIGKILLed five times mid-run, the
dashboard's numbers are the logs' numbers, and no row is missing or counted twice."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from paystream import workload
from paystream.analytics.tallies import PAYMENT_COMMANDS
from paystream.audit.verify import read_accounts
from paystream.ledger import is_own_event
from paystream.runner import TRAFFIC_TIMEOUT_S, Platform
from paystream.services.keycloak import KeycloakServer
from paystream.settings import Settings
from paystream.topology.reader import read_to_end
from paystream.topology.topics import analytics_group
from tests.e2e.harness import platform, setup_or_fail
from tests.support.analytics import AnalyticsProcess, analytics_env, stored_counts
from tests.support.keycloak import client_token

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIX = workload.Mix(accounts=80, transfers=3_000)
TRAFFIC_PER_S = 300
KILLS = 5
CATCH_UP_TIMEOUT_S = 180.0
DATABASE = "paystream"


def test_the_dashboard_equals_the_logs_after_five_sigkills(
    settings: Settings, tmp_path: Path, keycloak: KeycloakServer
) -> None:
    load = workload.build(seed=16, mix=MIX, run_id="analytics", now_ms=int(time.time() * 1000))
    token = client_token(keycloak, "ops-console")
    with platform(settings, tmp_path, workers=2) as running:
        dsn = f"chdb://{tmp_path / 'clickhouse'}"
        env = analytics_env(running, keycloak.issuer, tmp_path / "clickhouse")
        analytics = AnalyticsProcess(env, log_file=tmp_path / "analytics.log")
        setup_or_fail(running, load)
        publisher = running.publish_paced(load, per_second=TRAFFIC_PER_S)
        rng = random.Random(16)
        for _ in range(KILLS):  # killed while the traffic flows: batches in flight die
            analytics.start()
            time.sleep(rng.uniform(0.3, 1.5))
            analytics.kill()
        analytics.start()
        publisher.join()
        left = running.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S)
        assert not left, f"{len(left)} command ids without their answers{running.logs()}"
        try:
            _check_dashboard(running, analytics, token)
        finally:
            code = analytics.stop()
        assert code == 0, analytics.log()
        _check_rows(running, dsn)


def _check_dashboard(running: Platform, analytics: AnalyticsProcess, token: str) -> None:
    group = analytics_group(running.settings)
    lag = analytics.wait_caught_up(token, group, timeout_s=CATCH_UP_TIMEOUT_S)
    assert lag["stale"] is False
    now = datetime.now(UTC)
    span = {
        "since": (now - timedelta(days=1)).isoformat(),
        "until": (now + timedelta(days=1)).isoformat(),
    }
    funnel = analytics.get("/v1/analytics/funnel", token, **span)["total"]
    events = [running.serde.decode_event(m.value() or b"")
              for m in read_to_end(running.kafka, running.topics.events)]  # fmt: skip
    own = [e for e in events if is_own_event(e) and e.command_type in PAYMENT_COMMANDS]
    for kind in ("Debited", "Completed", "Reversed", "Rejected"):
        assert funnel[kind.lower()] == len({e.payment_id for e in own if e.type == kind}), kind
    assert funnel["duplicates"] == sum(1 for e in own if e.type == "Duplicate") > 0
    assert funnel["reversed"] > 0 and funnel["rejected"] > 0  # compensations, refusals
    journal = [running.serde.decode_journal_entry(m.value() or b"")
               for m in read_to_end(running.kafka, running.topics.ledger)]  # fmt: skip
    debits: Counter[str] = Counter()
    for entry in journal:
        for line in entry.lines:
            debits[line.currency] += line.amount_minor if line.side == "debit" else 0
    shown = analytics.get("/v1/analytics/consistency", token)["currencies"]
    assert {c["currency"]: int(c["debits_minor"]) for c in shown} == dict(debits)
    assert all(c["difference_minor"] == "0" and c["transit_minor"] == "0" for c in shown)
    assert all(c["projection_difference_minor"] == "0" and c["accounts"] > 0 for c in shown)
    dead = analytics.get("/v1/analytics/dead-letters", token, **span)
    assert dead["depth"] and dead["depth"][-1]["depth"] == _count(running, running.topics.dlq)


def _check_rows(running: Platform, dsn: str) -> None:
    """No row missing, none twice: FINAL counts equal the logs' records exactly, and the
    tallies' ranges tile every partition (the funnel and sums above came from them)."""
    counts = stored_counts(dsn, DATABASE)
    assert counts["tallies_tile"] is True
    journal = [running.serde.decode_journal_entry(m.value() or b"")
               for m in read_to_end(running.kafka, running.topics.ledger)]  # fmt: skip
    lines = sum(len(entry.lines) for entry in journal)
    expected = {
        "events": _count(running, running.topics.events),
        "ledger_lines": lines,
        "dead_letters": _count(running, running.topics.dlq),
        "balances": len(read_accounts(running.kafka, running.topics)),
    }
    for table, records in expected.items():
        assert counts[table] == {"final": records, "distinct": records}, (table, counts)


def _count(running: Platform, topic: str) -> int:
    return sum(1 for _ in read_to_end(running.kafka, topic))
