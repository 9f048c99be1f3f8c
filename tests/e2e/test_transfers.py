"""End to end on real Kafka: 20,000 transfers, 2 workers, one consumer group."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from paystream import workload
from paystream.ledger import Compensation
from paystream.runner import TRAFFIC_TIMEOUT_S
from paystream.settings import Settings
from paystream.topology.reader import read_to_end
from tests.e2e.harness import (
    assert_every_record_answered_once,
    assert_ledger_exactly_once,
    assert_replay_matches,
    platform,
    setup_or_fail,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIX = workload.Mix(accounts=500, transfers=20_000)


def test_twenty_thousand_transfers_with_two_workers(settings: Settings, tmp_path: Path) -> None:
    load = workload.build(seed=20_000, mix=MIX, run_id="e2e", now_ms=int(time.time() * 1000))
    with platform(settings, tmp_path, workers=2) as running:
        setup_or_fail(running, load)
        started = time.monotonic()
        running.publish_paced(load, per_second=50_000).join()
        left = running.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S)
        elapsed_s = time.monotonic() - started
        assert not left, f"{len(left)} command ids without their answers{running.logs()}"
        counts = running.outcomes(load)
        print(f"\n{MIX.transfers} transfers in {elapsed_s:.1f}s "
              f"({MIX.transfers / elapsed_s:.0f}/s end to end): {dict(counts)}")  # fmt: skip
        assert all(w.alive for w in running.workers.workers), f"a worker died{running.logs()}"
        assert_every_record_answered_once(running, load)
        report = assert_ledger_exactly_once(running)
        assert_replay_matches(running, report, twice=True)
    assert counts["Completed"] > 0 and counts["Duplicate"] > 0 and counts["Rejected"] > 0
    assert counts["Reversed"] > 0, "no credit was refused: the saga's compensation went untested"
    # A refused credit emits a Compensation on `legs`; the Reversed event must follow soon.
    refused_at_ms = {
        leg.transfer_id: message.timestamp()[1]
        for message in read_to_end(running.kafka, running.topics.legs)
        if isinstance(leg := running.serde.decode_leg(message.value() or b""), Compensation)
    }
    assert len(refused_at_ms) == counts["Reversed"]
    lags_ms = sorted(
        running.watcher.timestamp_ms[f"{transfer_id}:reversed"] - refused_ms
        for transfer_id, refused_ms in refused_at_ms.items()
    )
    # Reported, not asserted: no speed limits in tests on shared machines (docs/benchmarks.md).
    print(
        f"refused credit -> Reversed: median {lags_ms[len(lags_ms) // 2]} ms, max {lags_ms[-1]} ms"
    )
    # No money lost or made: customer money is exactly what was deposited.
    deposited = (MIX.accounts - MIX.closing_accounts) * MIX.deposit_minor
    assert report.customer_total_by_currency == {"EUR": deposited}
