"""Saga throughput (issue 18, scenario 1): payments per second through the crash-safe ledger
workers as shipped, 1 and 2 worker processes, 8 partitions, uniform and Zipf-skewed accounts.

A broker of its own on free ports of 127.0.0.1; per scenario, topics of their own, the
accounts opened and funded, then every transfer produced as fast as the publisher goes.
The figure is payments per second from the first transfer produced to the last terminal
event (the events' broker timestamps), and the terminal events per second over time. The
transfers are honest (no duplicates, conflicts or hostile records: those are the e2e tests'
business), so each payment is one Transfer and its saga: Debited, then Completed or
Reversed, or one Rejected (insufficient funds on a hot account).

    .venv/bin/python -m bench.saga [--transfers 40000] [--accounts 10000] [--workers 1 2]
        [--distribution uniform zipf] [--output bench/results/saga.json]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Final

from confluent_kafka import Consumer, KafkaException, TopicPartition
from tqdm import tqdm

from bench import machine
from bench.report import command_line, machine_line, markdown_table, pyplot, write_result
from paystream import workload
from paystream.ledger import TERMINAL_EVENT_TYPES, is_own_event
from paystream.runner import Platform, running
from paystream.services.kafka import start_on_free_ports
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde

ZIPF_S: Final = 1.1
DISTRIBUTIONS: Final = ("uniform", "zipf")
DEPOSIT_MINOR: Final = 100_000_000
"""Each account's funding (1,000,000.00): a hot account never runs dry, so every payment
runs the whole saga (refused payments are cheaper and would flatter the figure)."""
PARTITIONS: Final = 8
WAIT_TIMEOUT_S: Final = 1_200.0
"""The longest a scenario may take to answer every transfer (then it fails)."""
POLL_BATCH_MAX: Final = 10_000
SERIES_BUCKET_MS: Final = 1_000
BROKER_WARMUP_TRANSFERS: Final = 16_000
"""An untimed scenario on the fresh broker before the measured ones: its JIT compiler took
49 % of its CPU 30 s after start (docs/benchmarks.md), which slowed the first scenario only
and made 1 -> 2 workers look super-linear (2.13x in the make bench run of 1 Dec 2026)."""


def honest_mix(*, accounts: int, transfers: int, distribution: str) -> workload.Mix:
    """Honest transfers only, over funded accounts, uniform or Zipf: the transfers every
    scenario of issue 18 runs (the Postgres baseline draws the same ones)."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}")
    return workload.Mix(
        accounts=accounts, transfers=transfers, duplicate_rate=0.0, conflict_rate=0.0,
        to_closed_rate=0.0, overdraft_rate=0.0, hostile_rate=0.0, closing_accounts=0,
        racing_transfers=0, partitions=PARTITIONS, deposit_minor=DEPOSIT_MINOR,
        zipf_s=ZIPF_S if distribution == "zipf" else None,
    )  # fmt: skip


def scenario(
    bootstrap: str, home: Path, *, workers: int, distribution: str, accounts: int, transfers: int
) -> dict[str, Any]:
    """One scenario on its own topics: payments/s and the terminal events over time."""
    settings = Settings(
        environment="test", data_dir=home / f"data-{uuid.uuid4().hex[:6]}",
        kafka_bootstrap=bootstrap, kafka_security="plaintext",
        topic_prefix=f"saga-{uuid.uuid4().hex[:6]}",
        partitions=PARTITIONS,
    )  # fmt: skip
    mix = honest_mix(accounts=accounts, transfers=transfers, distribution=distribution)
    with running(settings, workers=workers, log_dir=home / "logs") as platform:
        load = workload.build(seed=18, mix=mix, run_id="saga", now_ms=int(time.time() * 1000))
        if platform.run_setup(load):
            raise RuntimeError("setup commands without an answer")
        counter = _Terminals(platform, load)
        started_ms = int(time.time() * 1000)
        publisher = platform.publish_paced(load, per_second=10_000_000)
        published: list[int] = []
        threading.Thread(
            target=lambda: (publisher.join(), published.append(int(time.time() * 1000)))
        ).start()
        outcomes = counter.wait(transfers, label=f"{workers} worker(s), {distribution}")
        publisher.join()
        published_ms = published[0] if published else started_ms
    return _figures(started_ms, published_ms, counter, outcomes, workers, distribution, mix)


class _Terminals:
    """Counts each transfer's own terminal event on ``events`` (read_committed), cheaply."""

    def __init__(self, platform: Platform, load: workload.Workload) -> None:
        self._serde: AvroSerde = platform.serde
        self._payments = set(load.transfer_ids)
        self._consumer = Consumer({
            "bootstrap.servers": platform.kafka.bootstrap, "group.id": "bench-saga",
            "enable.auto.commit": False, "isolation.level": "read_committed",
        })  # fmt: skip
        topic = platform.topics.events
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.times_ms: list[int] = []

    def wait(self, count: int, *, label: str) -> Counter[str]:
        outcomes: Counter[str] = Counter()
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        with tqdm(total=count, desc=label, unit="payments", leave=False) as bar:
            while len(self.times_ms) < count and time.monotonic() < deadline:
                for message in self._consumer.consume(POLL_BATCH_MAX, 0.5):
                    if message.error() is not None:
                        raise KafkaException(message.error())
                    event = self._serde.decode_event(message.value() or b"")
                    if (event.payment_id in self._payments and is_own_event(event)
                            and event.type in TERMINAL_EVENT_TYPES):  # fmt: skip
                        outcomes[event.type] += 1
                        self.times_ms.append(int(message.timestamp()[1]))
                        bar.update(1)
        self._consumer.close()
        if len(self.times_ms) < count:
            raise RuntimeError(f"{count - len(self.times_ms)} payments unanswered")
        return outcomes


def _figures(
    started_ms: int, published_ms: int, counter: _Terminals, outcomes: Counter[str],
    workers: int, distribution: str, mix: workload.Mix,
) -> dict[str, Any]:  # fmt: skip
    times = sorted(counter.times_ms)
    seconds = (times[-1] - started_ms) / 1000
    buckets = Counter((t - started_ms) // SERIES_BUCKET_MS for t in times)
    return {
        "workers": workers, "distribution": distribution, "accounts": mix.accounts,
        "transfers": mix.transfers, "zipf_s": mix.zipf_s, "seconds": seconds,
        "payments_per_s": mix.transfers / seconds, "outcomes": dict(outcomes),
        "per_second": [buckets.get(i, 0) for i in range(int(max(buckets)) + 1)],
        "publish_seconds": (published_ms - started_ms) / 1000,
    }  # fmt: skip


def run(
    *, transfers: int, accounts: int, workers: list[int], distributions: list[str],
    broker_warmup_transfers: int = BROKER_WARMUP_TRANSFERS,
) -> dict[str, Any]:  # fmt: skip
    load_1m = os.getloadavg()[0]
    results = []
    warmup = None
    with tempfile.TemporaryDirectory(prefix="bench-saga-") as directory:
        home = Path(directory)
        broker = start_on_free_ports(home / "kafka")
        try:
            if broker_warmup_transfers:
                warmup = scenario(broker.bootstrap, home, workers=max(workers),
                                  distribution="uniform", accounts=accounts,
                                  transfers=broker_warmup_transfers)  # fmt: skip
                print(f"broker warm-up, untimed: {warmup['payments_per_s']:,.0f} payments/s")
            for count in workers:
                for distribution in distributions:
                    found = scenario(broker.bootstrap, home, workers=count,
                                     distribution=distribution, accounts=accounts,
                                     transfers=transfers)  # fmt: skip
                    _show(found)
                    results.append(found)
        finally:
            broker.stop()
    return {
        "command": f"python -m bench.saga --transfers {transfers} --accounts {accounts} "
        f"--workers {' '.join(map(str, workers))} --distribution {' '.join(distributions)} "
        f"--broker-warmup-transfers {broker_warmup_transfers}",
        "machine": machine.facts(load_average_1m_at_start=load_1m), "scenarios": results,
        "broker_warmup": warmup,
    }  # fmt: skip


def _show(found: dict[str, Any]) -> None:
    print(f"{found['workers']} worker(s), {found['distribution']:>7}: {found['transfers']:,} "
          f"payments in {found['seconds']:.1f} s = {found['payments_per_s']:,.0f} payments/s "
          f"(published in {found['publish_seconds']:.1f} s; {found['outcomes']})",
          flush=True)  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown fragment (bench/report.py puts it in docs/benchmarks.md)."""
    scenarios = result["scenarios"]
    rows = [
        (
            found["workers"], found["distribution"], f"{found['transfers']:,}",
            f"{found['seconds']:.1f}", f"**{found['payments_per_s']:,.0f}**",
            f"{found['publish_seconds']:.1f}",
            ", ".join(f"{kind} {n:,}" for kind, n in sorted(found["outcomes"].items())),
        )
        for found in scenarios
    ]  # fmt: skip
    table = markdown_table(
        ("workers", "distribution", "payments", "seconds", "payments/s", "published in s",
         "outcomes"),
        rows, right=(True, False, True, True, True, True, False),
    )  # fmt: skip
    accounts = scenarios[0]["accounts"] if scenarios else 0
    intro = (
        f"The crash-safe workers as shipped, {PARTITIONS} partitions, {accounts:,} accounts, "
        f"honest transfers (uniform, or Zipf s = {ZIPF_S}) produced as fast as the publisher "
        "goes; payments/s from the first transfer produced to the last terminal event."
    )
    warmup = result.get("broker_warmup")
    if warmup:
        intro += (
            f" First, untimed, {warmup['transfers']:,} transfers with {warmup['workers']} "
            f"workers warmed the fresh broker's JIT compiler up ({warmup['payments_per_s']:,.0f}"
            " payments/s then)."
        )
    return "\n\n".join((
        "### Saga throughput (`bench/saga.py`)", intro, table, command_line(result),
        machine_line(result.get("machine", {})),
    ))  # fmt: skip


def plots(result: dict[str, Any], img_dir: Path) -> list[Path]:
    """Terminal events per second over each run, and the payments answered so far (PNG)."""
    scenarios = [s for s in result["scenarios"] if s.get("per_second")]
    if not scenarios:
        return []
    plt = pyplot()
    figure, (rate, answered) = plt.subplots(1, 2, figsize=(11, 4))
    for found in scenarios:
        series = found["per_second"]
        seconds = [i * SERIES_BUCKET_MS / 1000 for i in range(len(series))]
        label = f"{found['workers']} worker(s), {found['distribution']}"
        rate.step(seconds, series, where="post", label=label)
        answered.plot(seconds, list(itertools.accumulate(series)), label=label)
    rate.set_ylabel("terminal events per second")
    rate.set_title("Saga: payments answered per second")
    answered.set_ylabel("payments answered")
    answered.set_title("Saga: payments answered so far")
    for axes in (rate, answered):
        axes.set_xlabel("seconds since the first transfer was produced")
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    answered.legend()
    figure.tight_layout()
    img_dir.mkdir(parents=True, exist_ok=True)
    path = img_dir / "bench-saga-throughput.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=40_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--distribution", nargs="+", default=["uniform", "zipf"],
                        choices=DISTRIBUTIONS)  # fmt: skip
    parser.add_argument("--broker-warmup-transfers", type=int, default=BROKER_WARMUP_TRANSFERS,
                        help="an untimed scenario first, of this many (0: none)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=Path("bench/results/saga.json"))
    args = parser.parse_args()
    result = run(transfers=args.transfers, accounts=args.accounts, workers=args.workers,
                 distributions=args.distribution,
                 broker_warmup_transfers=args.broker_warmup_transfers)  # fmt: skip
    write_result(args.output, result)


if __name__ == "__main__":
    main()
