"""The Postgres sink under faults: SIGKILLed at random moments, and Postgres stopped mid-run.

Either way every fact reaches Postgres exactly once (the batch and its
positions commit together), the read models equal the workers' tables, and
each fact has one audit row.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from paystream import workload
from paystream.runner import TRAFFIC_TIMEOUT_S, Platform
from paystream.services.postgres import EmbeddedPostgres
from paystream.settings import Settings
from tests.e2e.harness import (
    assert_audit_store_matches,
    assert_every_record_answered_once,
    assert_ledger_exactly_once,
    platform,
    setup_or_fail,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIX = workload.Mix(accounts=100, transfers=4_000)
TRAFFIC_PER_S = 400
SINK_KILLS_MIN = 10
CHAOS_TIME_MAX_S = 180.0
POSTGRES_DOWN_S = 30.0


def _run(
    settings: Settings,
    tmp_path: Path,
    audit_dsn: str,
    chaos: Callable[[Platform], bool],
) -> None:
    """Traffic while ``chaos`` runs (until it returns False); then every invariant."""
    load = workload.build(seed=41, mix=MIX, run_id="sinkfault", now_ms=int(time.time() * 1000))
    base = settings.model_copy(update={"postgres_dsn": audit_dsn})
    with platform(base, tmp_path, workers=2, sinks=2) as running:
        setup_or_fail(running, load)
        publisher = running.publish_paced(load, per_second=TRAFFIC_PER_S)
        deadline = time.monotonic() + CHAOS_TIME_MAX_S
        while chaos(running) and time.monotonic() < deadline:
            running.watcher.poll()
        publisher.join()
        left = running.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S)
        assert not left, f"{len(left)} command ids without their answers{running.logs()}"
        assert_every_record_answered_once(running, load)
        report = assert_ledger_exactly_once(running)
        assert_audit_store_matches(running, report, load)


def test_sigkilled_sinks_lose_and_double_nothing(
    settings: Settings, tmp_path: Path, audit_dsn: str
) -> None:
    rng = random.Random(1414)
    kills = 0

    def kill(running: Platform) -> bool:
        nonlocal kills
        if kills >= SINK_KILLS_MIN:
            return False
        time.sleep(rng.uniform(0.3, 1.5))
        rng.choice(running.sinks.workers).kill()
        kills += 1
        time.sleep(rng.uniform(0.0, 0.5))
        running.sinks.restart_dead()
        return True

    _run(settings, tmp_path, audit_dsn, kill)
    assert kills >= SINK_KILLS_MIN


def test_postgres_down_for_30_s_the_sinks_wait_and_catch_up(
    settings: Settings, tmp_path: Path, audit_dsn: str, services_home: Path
) -> None:
    if os.environ.get("PAYSTREAM_POSTGRES_DSN"):
        pytest.skip("Postgres is external here: the test stops the embedded server")
    server = EmbeddedPostgres(home=services_home / "postgres")
    outages = 0

    def outage(running: Platform) -> bool:
        nonlocal outages
        if outages:
            return False
        time.sleep(2.0)  # the sinks are writing
        server.stop()
        outages += 1
        try:
            end = time.monotonic() + POSTGRES_DOWN_S
            while time.monotonic() < end:
                running.watcher.poll()
            assert all(sink.alive for sink in running.sinks.workers), running.logs()
        finally:
            assert server.start() is not None
        return False

    _run(settings, tmp_path, audit_dsn, outage)
    assert outages == 1
