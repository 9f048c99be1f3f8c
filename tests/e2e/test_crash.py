"""Crash tests: SIGKILL workers (mixed with clean restarts) at random moments, or stall one
until its group gives up on it.

Either way nothing may be lost or doubled: every transfer ends once, the
read_committed ledger holds each journal id once and balances. Workers keep
their stores across lives: a clean stop checkpoints them, and a SIGKILLed
worker restarts from its last periodic checkpoint, so the restarts exercise
tail restores as well as full ones.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from paystream import workload
from paystream.agents import metrics
from paystream.agents.supervisor import WorkerProcess
from paystream.runner import TRAFFIC_TIMEOUT_S, Platform
from paystream.settings import Settings
from tests.e2e.harness import (
    assert_every_record_answered_once,
    assert_ledger_exactly_once,
    assert_replay_matches,
    platform,
    setup_or_fail,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILL_MIX = workload.Mix(accounts=500, transfers=20_000)
KILL_ROUNDS_MIN = 12
WORKERS = 3
ALL_WORKERS_PERCENT = 25
CLEAN_STOP_PERCENT = 30
PAUSE_MIX = workload.Mix(accounts=300, transfers=8_000)
PAUSES = 3
PAUSE_S = 13.0  # longer than the workers' session timeout (10 s): the group moves on
CHAOS_TIME_MAX_S = 240.0
TRAFFIC_PER_S = 1_000


def test_sigkill_workers_at_random_moments(settings: Settings, tmp_path: Path) -> None:
    """SIGKILL one or every worker, or stop one cleanly (SIGTERM), then restart them."""
    rng = random.Random(4242)

    kills = stops = 0

    def kill(running: Platform) -> None:
        nonlocal kills, stops
        _sleep_polling(running, rng.uniform(0.2, 2.0))
        workers = running.workers.workers
        if rng.randrange(100) < CLEAN_STOP_PERCENT:
            rng.choice(workers).stop()  # a rolling restart: finish the batch, checkpoint, leave
            stops += 1
        else:
            every = rng.randrange(100) < ALL_WORKERS_PERCENT
            for worker in workers if every else [rng.choice(workers)]:
                worker.kill()
                kills += 1
        _sleep_polling(running, rng.uniform(0.0, 1.0))
        running.workers.restart_dead()  # what the supervisor does

    rounds = _run_with_chaos(settings, tmp_path, KILL_MIX, kill, minimum=KILL_ROUNDS_MIN)
    opens = _store_opens(tmp_path)
    print(f"{kills} SIGKILLs and {stops} clean stops in {rounds} rounds; store opens {opens}")
    assert stops > 0
    assert opens.get("checkpoint", 0) > 0, "no restart used a checkpoint"


def _store_opens(tmp_path: Path) -> dict[str, float]:
    """How the workers' partition stores were opened: from a checkpoint, or why not."""
    text = metrics.collect_text(tmp_path / "data" / "metrics" / "workers")
    prefix = 'paystream_worker_store_opens_total{start="'
    return {
        line[len(prefix) :].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def test_a_stalled_worker_is_fenced_and_its_work_redone(settings: Settings, tmp_path: Path) -> None:
    """SIGSTOP past the session timeout, then SIGCONT: a zombie with a batch in hand.

    Its group has given its partitions to the other worker meanwhile, so its
    commit must fail (the broker fences its generation) and everything it
    sent must be aborted; the partitions' new owner redoes the work.
    """
    rng = random.Random(77)

    def stall(running: Platform) -> None:
        _sleep_polling(running, rng.uniform(1.0, 3.0))
        worker: WorkerProcess = rng.choice(running.workers.workers)
        worker.pause()
        try:
            _sleep_polling(running, PAUSE_S)
        finally:
            worker.resume()

    actions = _run_with_chaos(settings, tmp_path, PAUSE_MIX, stall, minimum=PAUSES)
    aborted = sum(
        log.read_text(errors="replace").count("batch aborted")
        for log in (tmp_path / "logs").glob("*.log")
    )
    print(f"{actions} stalls; {aborted} batches aborted by the stalled workers")


def _run_with_chaos(
    settings: Settings,
    tmp_path: Path,
    mix: workload.Mix,
    chaos: Callable[[Platform], None],
    *,
    minimum: int,
) -> int:
    """Paced traffic while ``chaos`` runs at least ``minimum`` times; then every invariant."""
    load = workload.build(seed=4242, mix=mix, run_id="crash", now_ms=int(time.time() * 1000))
    actions = 0
    with platform(settings, tmp_path, workers=WORKERS) as running:
        setup_or_fail(running, load)
        publisher = running.publish_paced(load, per_second=TRAFFIC_PER_S)
        deadline = time.monotonic() + CHAOS_TIME_MAX_S
        while (publisher.is_alive() or actions < minimum) and time.monotonic() < deadline:
            chaos(running)
            actions += 1
        publisher.join()
        left = running.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S)
        assert not left, f"{len(left)} command ids without their answers{running.logs()}"
        print(f"\noutcomes {dict(running.outcomes(load))}")
        assert_every_record_answered_once(running, load)
        report = assert_ledger_exactly_once(running)
        assert_replay_matches(running, report)
    assert actions >= minimum
    deposited = (mix.accounts - mix.closing_accounts) * mix.deposit_minor
    assert report.customer_total_by_currency == {"EUR": deposited}
    return actions


def _sleep_polling(running: Platform, seconds: float) -> None:
    """Sleep while keeping the event watcher reading (it is not in a group)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        running.watcher.poll()
