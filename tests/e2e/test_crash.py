"""Crash test: SIGKILL workers at random moments during a long run; nothing lost or doubled."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from paystream import workload
from paystream.runner import TRAFFIC_TIMEOUT_S
from paystream.settings import Settings
from tests.e2e.harness import (
    assert_ledger_exactly_once,
    assert_sagas_end_once,
    platform,
    setup_or_fail,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIX = workload.Mix(accounts=500, transfers=20_000)
KILLS_MIN = 6
CHAOS_TIME_MAX_S = 240.0
TRAFFIC_PER_S = 1_000


def test_sigkill_workers_at_random_moments(settings: Settings, tmp_path: Path) -> None:
    load = workload.build(seed=4242, mix=MIX, run_id="crash")
    rng = random.Random(4242)
    kills = 0
    with platform(settings, tmp_path, workers=2) as running:
        setup_or_fail(running, load)
        publisher = running.publish_paced(load, per_second=TRAFFIC_PER_S)
        deadline = time.monotonic() + CHAOS_TIME_MAX_S
        while (publisher.is_alive() or kills < KILLS_MIN) and time.monotonic() < deadline:
            _sleep_polling(running.watcher.poll, rng.uniform(0.5, 4.0))
            rng.choice(running.workers.workers).kill()
            kills += 1
            _sleep_polling(running.watcher.poll, rng.uniform(0.0, 1.5))
            running.workers.restart_dead()  # what the supervisor does
        publisher.join()
        left = running.wait_supervised(load.transfer_ids, timeout_s=TRAFFIC_TIMEOUT_S)
        assert not left, f"{len(left)} transfers without a terminal event{running.logs()}"
        counts = running.outcomes(load)
        print(f"\n{kills} SIGKILLs; outcomes {dict(counts)}")
        assert_sagas_end_once(running, load)
        report = assert_ledger_exactly_once(running)
    assert kills >= KILLS_MIN
    deposited = (MIX.accounts - MIX.closing_accounts) * MIX.deposit_minor
    assert report.customer_total_by_currency == {"EUR": deposited}


def _sleep_polling(poll: object, seconds: float) -> None:
    """Sleep while keeping the event watcher reading (it is not in a group)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        poll()  # type: ignore[operator]
