"""``paystream worker`` stops cleanly on SIGTERM and SIGINT, and restarts from its checkpoints.

Issue 13, section 2: systemd, Kubernetes and a person's Ctrl-C stop a
process this way. The supervisor passes the signal on; its worker finishes
the batch in hand, checkpoints its stores and leaves the group; both exit 0.
The next start opens every store from its checkpoint and reads no changelog
record again (this worker was the only writer), and the traffic the signal
interrupted is answered exactly once.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from paystream import workload
from paystream.agents import metrics
from paystream.runner import TRAFFIC_TIMEOUT_S, Platform
from paystream.settings import Settings
from paystream.topology.topics import app_id_for
from tests.e2e.harness import (
    assert_every_record_answered_once,
    assert_ledger_exactly_once,
    platform,
    setup_or_fail,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIX = workload.Mix(accounts=60, transfers=3_000)
TRAFFIC_PER_S = 500
SIGNAL_AFTER_S = 2.0
STOP_BOUND_S = 30.0
"""A clean stop is a batch, a checkpoint and a LeaveGroup; this only catches a hang."""
ADMIN_TIMEOUT_S = 10.0


def _sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        rest = series[len(name) :]
        if rest and not rest.startswith("{"):
            continue
        if all(f'{key}="{val}"' in rest for key, val in labels.items()):
            total += float(value)
    return total


def _group_state(running: Platform) -> tuple[ConsumerGroupState, int]:
    admin = AdminClient(running.kafka.config())
    group_id = app_id_for(running.settings)
    group = admin.describe_consumer_groups([group_id])[group_id].result(timeout=ADMIN_TIMEOUT_S)
    return group.state, len(group.members)


def _metrics_text(running: Platform) -> str:
    return metrics.collect_text(running.settings.data_dir / "metrics" / "worker-1")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_paystream_worker_cleanly_and_it_restarts_from_its_checkpoints(
    settings: Settings, tmp_path: Path, signum: int
) -> None:
    load = workload.build(seed=13, mix=MIX, run_id="stop", now_ms=int(time.time() * 1000))
    with platform(settings, tmp_path, workers=1, supervised=True) as running:
        setup_or_fail(running, load)
        supervisor = running.workers.workers[0]
        assert supervisor.process is not None
        publisher = running.publish_paced(load, per_second=TRAFFIC_PER_S)
        time.sleep(SIGNAL_AFTER_S)  # mid-traffic: the worker has a batch in hand
        supervisor.send(signum)
        code = supervisor.process.wait(timeout=STOP_BOUND_S)
        worker_exit = _sample(_metrics_text(running), "paystream_supervisor_last_exit_code")
        state, members = _group_state(running)
        publisher.join()

        assert (code, worker_exit) == (0, 0.0), supervisor.log_file.read_text()
        # It left the group: nobody waits out its session timeout.
        assert (state, members) == (ConsumerGroupState.EMPTY, 0)
        partitions = running.settings.partitions
        worker_dir = running.settings.data_dir / "workers" / "worker-1"
        assert sorted(p.parent.name for p in worker_dir.glob("*/.checkpoint")) == sorted(
            str(p) for p in range(partitions)
        )

        running.workers.restart_dead()
        left = running.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S)
        assert not left, f"{len(left)} command ids without their answers{running.logs()}"
        text = _metrics_text(running)
        opens = _sample(text, "paystream_worker_store_opens_total", start="checkpoint")
        assert opens == partitions, text
        for store in ("balances", "idempotency"):
            restored = _sample(text, "paystream_worker_restored_records_total", store=store)
            assert restored == 0, text
        assert_every_record_answered_once(running, load)
        assert_ledger_exactly_once(running)
