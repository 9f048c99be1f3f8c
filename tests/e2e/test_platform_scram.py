"""The platform on the broker's SASL/SCRAM port, as ``make demo`` runs it: workers, the
Postgres sink, the publisher, the watcher and the audit readers all authenticate as the
platform principal (a client without credentials is not served on that port, so one that
did not authenticate would never get an answer)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from paystream import workload
from paystream.runner import TRAFFIC_TIMEOUT_S, child_env
from paystream.settings import KafkaConnection, Settings
from tests.e2e.harness import (
    assert_every_record_answered_once,
    assert_ledger_exactly_once,
    platform,
    setup_or_fail,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIX = workload.Mix(accounts=100, transfers=2_000)


def test_the_platform_runs_as_its_principal_over_scram(
    settings: Settings, kafka_scram: KafkaConnection, audit_dsn: str, tmp_path: Path
) -> None:
    if kafka_scram.username is None or kafka_scram.password is None:
        raise AssertionError("the SCRAM fixture names the platform's principal")
    scram = settings.model_copy(
        update={
            "kafka_security": "scram",
            "kafka_bootstrap": kafka_scram.bootstrap,
            "kafka_username": kafka_scram.username,
            "kafka_password": SecretStr(kafka_scram.password),
            "postgres_dsn": audit_dsn,
        }
    )
    env = child_env(scram, log_level="info")
    assert env["PAYSTREAM_KAFKA_SECURITY"] == "scram"
    assert env["PAYSTREAM_KAFKA_BOOTSTRAP"] == kafka_scram.bootstrap
    load = workload.build(seed=7, mix=MIX, run_id=f"scram{uuid.uuid4().hex[:4]}",
                          now_ms=int(time.time() * 1000))  # fmt: skip
    with platform(scram, tmp_path, workers=2, sinks=1) as running:
        assert running.kafka == scram.kafka and running.kafka.security == "scram"
        setup_or_fail(running, load)
        running.publish_paced(load, per_second=10_000).join()
        left = running.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S)
        assert not left, f"{len(left)} command ids without their answers{running.logs()}"
        assert_every_record_answered_once(running, load)
        report = assert_ledger_exactly_once(running)
        stored = running.wait_audit_store()
        assert stored["journal_entries"] == report.entries > 0, stored
