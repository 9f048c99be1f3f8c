"""Failover: how long a SIGKILLed worker that nobody restarts holds up its partitions.

Two workers share 8 partitions under steady Deposit traffic (one command, one
answer, produced by the account's own partition). One worker is SIGKILLed
mid-batch and left dead. Its partitions wait for the group to notice (the
session timeout, 10 s), then for its open transaction to end -- the
coordinator aborts it ``transaction.timeout.ms`` after it began, at its next
check for timed-out transactions -- and then for their stores' catch-up.
(A restarted worker fences its own transaction at once: this is the case of
a machine that is gone.)

Measured per partition: the longest a Deposit published around the kill
waited for its answer. The dead worker's partitions show the failover time;
the survivor's own partitions only the rebalance.

    .venv/bin/python -m bench.failover [--timeouts 30 10] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from paystream import workload
from paystream.agents.worker import member_id_for
from paystream.ledger import Deposit, mint_command_id
from paystream.runner import Platform, running
from paystream.services.kafka import start_on_free_ports
from paystream.settings import Settings
from paystream.topology.partitioner import partition_for
from paystream.topology.topics import app_id_for

RESULTS = Path(__file__).parent / "results" / "failover.json"
ACCOUNTS = 64
DEPOSITS_PER_S = 200
PUBLISH_TICK_S = 0.05
WARMUP_S = 5.0
AROUND_KILL_S = 1.0
"""Deposits published this long before or after the kill are the ones measured."""
SETTLE_MARGIN_S = 20.0
ANSWER_TIMEOUT_S = 180.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    transaction_timeout_s: float
    dead_partitions: dict[int, float]
    """partition -> its longest wait around the kill, of the killed worker's partitions."""
    live_partitions: dict[int, float]
    """the same for the survivor's own partitions."""


class Deposits:
    """Publishes one Deposit per tick and partition, remembering when each was sent."""

    def __init__(self, platform: Platform, accounts: Sequence[str]) -> None:
        self._platform = platform
        partitions = platform.settings.partitions
        self._by_partition: dict[int, list[str]] = {}
        for account in accounts:
            partition = partition_for(account.encode(), partitions)
            self._by_partition.setdefault(partition, []).append(account)
        self.sent_at_ms: dict[str, tuple[int, int]] = {}
        """command id -> (partition, wall time it was published)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deposits")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._platform.publisher.flush()

    def _run(self) -> None:
        per_tick = max(1, int(DEPOSITS_PER_S * PUBLISH_TICK_S / len(self._by_partition)))
        tick = 0
        while not self._stop.is_set():
            for partition, accounts in self._by_partition.items():
                for i in range(per_tick):
                    self._publish(partition, accounts[(tick * per_tick + i) % len(accounts)])
            tick += 1
            time.sleep(PUBLISH_TICK_S)

    def _publish(self, partition: int, account: str) -> None:
        now_ms = int(time.time() * 1000)
        command_id = mint_command_id(partition=partition, at_ms=now_ms, random_bytes=os.urandom(10))
        deposit = Deposit(command_id, f"bench-{command_id}", "demo", now_ms, account, 1, "EUR")
        self.sent_at_ms[command_id] = (partition, now_ms)
        self._platform.publisher.publish(deposit)


def measure(base: Settings, transaction_timeout_s: float, work_dir: Path) -> Outcome:
    settings = base.model_copy(
        update={
            "topic_prefix": f"bench-failover-{uuid.uuid4().hex[:8]}",
            "data_dir": work_dir / f"timeout-{transaction_timeout_s:g}",
            "transaction_timeout_s": transaction_timeout_s,
        }
    )
    mix = workload.Mix(accounts=ACCOUNTS, transfers=0, closing_accounts=0)
    load = workload.build(seed=1, mix=mix, run_id="failover", now_ms=int(time.time() * 1000))
    accounts = sorted({c.account_id for c in load.setup})
    with running(settings, workers=2, log_dir=settings.data_dir / "logs") as platform:
        if platform.run_setup(load):
            raise RuntimeError(f"setup unanswered{platform.logs()}")
        deposits = Deposits(platform, accounts)
        deposits.start()
        time.sleep(WARMUP_S)
        victim = platform.workers.workers[1]
        dead = held_partitions(platform, victim.name)
        killed_at_ms = int(time.time() * 1000)
        victim.kill()
        print(f"  killed {victim.name} (partitions {sorted(dead)}); waiting", flush=True)
        time.sleep(transaction_timeout_s + SETTLE_MARGIN_S)
        deposits.stop()
        left = platform.watcher.wait(list(deposits.sent_at_ms), timeout_s=ANSWER_TIMEOUT_S)
        if left:
            raise RuntimeError(f"{len(left)} deposits unanswered{platform.logs()}")
        waits = longest_waits(platform, deposits, killed_at_ms)
    return Outcome(
        transaction_timeout_s=transaction_timeout_s,
        dead_partitions={p: w for p, w in waits.items() if p in dead},
        live_partitions={p: w for p, w in waits.items() if p not in dead},
    )


def held_partitions(platform: Platform, worker: str) -> set[int]:
    """The partitions group member ``worker`` holds now."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(platform.kafka.config())
    group_id = app_id_for(platform.settings)
    group = admin.describe_consumer_groups([group_id])[group_id].result(timeout=10)
    member_id = member_id_for(platform.settings, worker)
    held = {
        tp.partition
        for member in group.members
        if member.client_id == member_id
        for tp in member.assignment.topic_partitions
    }
    if not held:
        raise RuntimeError(f"{member_id} holds no partition of {group_id}: {group.members}")
    return held


def longest_waits(platform: Platform, deposits: Deposits, killed_at_ms: int) -> dict[int, float]:
    """partition -> the longest wait (s) of the deposits sent within AROUND_KILL_S of the kill."""
    around_ms = int(AROUND_KILL_S * 1000)
    waits: dict[int, float] = {}
    for command_id, (partition, sent_ms) in deposits.sent_at_ms.items():
        if abs(sent_ms - killed_at_ms) > around_ms:
            continue
        event = platform.watcher.terminal(command_id)
        if event is None:
            raise RuntimeError(f"no answer to {command_id}")
        answered_ms = platform.watcher.timestamp_ms[event.event_id]
        waits[partition] = max(waits.get(partition, 0.0), (answered_ms - sent_ms) / 1000)
    return waits


@contextlib.contextmanager
def broker(bootstrap: str | None, work_dir: Path) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    local = start_on_free_ports(work_dir / "kafka")
    try:
        yield local.bootstrap
    finally:
        local.stop()


def report(outcomes: Sequence[Outcome]) -> str:
    rows = [
        "| transaction.timeout.ms | killed worker's partitions: longest wait (s), max / median |"
        " survivor's partitions: longest wait (s), max |",
        "| ---: | ---: | ---: |",
    ]
    for o in outcomes:
        dead = list(o.dead_partitions.values())
        live = list(o.live_partitions.values()) or [0.0]
        rows.append(
            f"| {o.transaction_timeout_s * 1000:,.0f} | {max(dead):.1f} /"
            f" {statistics.median(dead):.1f} | {max(live):.1f} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.failover", description=__doc__.split("\n")[0])
    parser.add_argument("--timeouts", type=float, nargs="+", default=[30.0, 10.0])
    parser.add_argument("--bootstrap", help="an existing Kafka (default: a broker of our own)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        work_dir = Path(tmp)
        with broker(args.bootstrap, work_dir) as bootstrap:
            base = Settings(
                environment="test", kafka_bootstrap=bootstrap, kafka_security="plaintext"
            )
            outcomes = []
            for timeout_s in args.timeouts:
                print(f"transaction timeout {timeout_s:g} s:", flush=True)
                outcomes.append(measure(base, timeout_s, work_dir))
    table = report(outcomes)
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python -m bench.failover " + " ".join(argv or []),
                "deposits_per_s": DEPOSITS_PER_S,
                "outcomes": [dataclasses.asdict(o) for o in outcomes],
                "table": table,
            },
            indent=2,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
