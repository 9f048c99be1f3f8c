"""Crash test, second run: SIGKILL the Kafka broker once mid-traffic, bring it back.

The broker is the session's own (``<data_dir>/services/kafka``), killed with
SIGKILL at a random moment 1-3 s into paced traffic, kept down a couple of
seconds and brought back by the real ``paystream services up`` on the same
port and log dirs. Workers that die meanwhile are restarted as a supervisor
would; then every invariant of the worker crash test must hold.

A worker inside ``send_offsets_to_transaction`` when the broker dies usually
never returns from it: librdkafka re-bootstraps when its only broker goes
away, decommissions that broker's handle, and the group-coordinator request
waits on the dead handle whatever timeout it was given (librdkafka #5511,
#5456). The worker's watchdog ends it after its batch deadline and it is
restarted, so recovery is bounded by that deadline plus a restart.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from paystream import workload
from paystream.agents.worker import Timeouts
from paystream.runner import Platform
from paystream.settings import Settings
from tests.conftest import SessionBroker
from tests.e2e.harness import (
    assert_every_record_answered_once,
    assert_ledger_exactly_once,
    platform,
    setup_or_fail,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIX = workload.Mix(accounts=300, transfers=6_000)
WORKERS = 3
TRAFFIC_PER_S = 1_000
KILL_AFTER_S = (1.0, 3.0)
"""The broker dies this far into the traffic (uniform)."""
DOWN_S = 2.0
"""How long the broker stays dead before ``services up`` is run."""
PUBLISHER_JOIN_TIMEOUT_S = 120.0
"""6 s of traffic plus the publisher's own 60 s flush bound, with room to spare."""
RESTART_MARGIN_S = 120.0
"""A restarted worker's start, restore and rebalance, and the rest of the traffic."""
RECOVERY_TIMEOUT_S = Timeouts.from_settings(Settings()).batch_deadline_s + RESTART_MARGIN_S
"""Publisher done to every answer in: a stuck worker's watchdog, then its restart."""


@dataclass(frozen=True, slots=True)
class Outage:
    killed_pid: int
    down_s: float
    """SIGKILL to ``services up`` returning (it returns once the broker answers)."""
    up_s: float
    back_at: float
    """``time.monotonic()`` when the broker answered again."""


def test_broker_sigkill_and_services_up(
    settings: Settings, session_broker: SessionBroker, tmp_path: Path
) -> None:
    seed = random.randrange(1_000_000)
    print(f"\nseed {seed}")
    rng = random.Random(seed)
    load = workload.build(seed=4242, mix=MIX, run_id="broker", now_ms=int(time.time() * 1000))
    cluster = _cluster_id(session_broker)
    try:
        with platform(settings, tmp_path, workers=WORKERS) as running:
            setup_or_fail(running, load)
            publisher = running.publish_paced(load, per_second=TRAFFIC_PER_S)
            _sleep_polling(running, rng.uniform(*KILL_AFTER_S))
            outage = _bounce(session_broker)
            dead = [w.name for w in running.workers.workers if not w.alive]
            _join(running, publisher)
            left = running.wait_traffic(load, timeout_s=RECOVERY_TIMEOUT_S)
            recovery_s = time.monotonic() - outage.back_at
            assert not left, f"{len(left)} command ids without their answers{running.logs()}"
            print(f"outcomes {dict(running.outcomes(load))}")
            print(f"answers {dict(running.rejection_codes(load))}")
            assert_every_record_answered_once(running, load)
            report = assert_ledger_exactly_once(running)
    finally:
        if session_broker.pid is None:  # leave the session's broker up for the next tests
            session_broker.up()
    deposited = (MIX.accounts - MIX.closing_accounts) * MIX.deposit_minor
    assert report.customer_total_by_currency == {"EUR": deposited}
    assert _cluster_id(session_broker) == cluster, "the broker came back on other data"
    print(
        f"broker pid {outage.killed_pid} down {outage.down_s:.1f}s (services up {outage.up_s:.1f}s)"
        f"; workers dead when it was back: {dead}; every answer in {recovery_s:.1f}s later"
        f"; journal entries {report.entries}"
    )
    _print_worker_exits(tmp_path / "logs")


def _bounce(broker: SessionBroker) -> Outage:
    """SIGKILL the broker, wait ``DOWN_S``, run ``paystream services up``, check its status."""
    port = broker.broker.port
    killed_pid = broker.kill()
    killed_at = time.monotonic()
    time.sleep(DOWN_S)
    up_started = time.monotonic()
    broker.up()
    back_at = time.monotonic()
    status = broker.status()
    assert status.returncode == 0, status.stdout + status.stderr
    kafka = next(line for line in status.stdout.splitlines() if line.startswith("kafka"))
    assert " healthy " in kafka and f"127.0.0.1:{port}" in kafka, kafka
    assert broker.pid not in (None, killed_pid), kafka
    print(f"status after services up: {kafka}")
    return Outage(killed_pid, back_at - killed_at, back_at - up_started, back_at)


def _join(running: Platform, publisher: threading.Thread) -> None:
    publisher.join(timeout=PUBLISHER_JOIN_TIMEOUT_S)
    assert not publisher.is_alive(), "publisher still flushing"
    running.publisher.flush()  # raises if Kafka refused or lost a command


def _cluster_id(broker: SessionBroker) -> str:
    meta = broker.broker.home / "data" / "meta.properties"
    return next(line for line in meta.read_text().splitlines() if line.startswith("cluster.id"))


def _print_worker_exits(log_dir: Path) -> None:
    """How often workers ended themselves or aborted a batch, and the distinct reasons."""
    fatal: list[str] = []
    aborted = 0
    for log in sorted(log_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        aborted += text.count("batch aborted")
        fatal += [line.split("fatal: ", 1)[1] for line in text.splitlines() if "fatal: " in line]
    print(f"worker exits (failfast, then restarted): {len(fatal)}; batches aborted: {aborted}")
    for reason in dict.fromkeys(fatal):
        print(f"  {reason[:300]}")


def _sleep_polling(running: Platform, seconds: float) -> None:
    """Sleep while keeping the event watcher reading (it is not in a group)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        running.watcher.poll()
