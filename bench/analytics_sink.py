"""The analytics sink: rows per second into ClickHouse, and how soon a terminal event is on
the dashboard (issue 16: visible within 2 s P95).

Everything is our own: a broker on free ports of 127.0.0.1 (its own topics), two ledger
workers, and the analytics sink in this process (the ``paystream analytics`` loop and
ClickHouse target, on a fresh embedded engine in a temporary directory).

1. **Drain.** A backlog of ``--backlog`` transfers (the workload's mix: duplicates,
   conflicts, overdrafts, hostile records) is published and processed by the workers with
   no analytics sink running; then the sink starts and is timed until its stored positions
   equal the logs' last stable offsets. Rows per second are the rows it inserted (events,
   ledger lines, dead letters) over that time.
2. **Visibility.** The sink keeps running; transfers are published at ``--rate`` per
   second for ``--traffic-s`` seconds. A poller asks the store every ``POLL_S`` for the
   terminal events (``Completed``, ``Reversed``, ``Rejected``) logged since its last look,
   under the same lock the dashboard's queries take; an event's visibility is the poll's
   wall time minus the event's Kafka record time (stamped by the worker's producer on this
   machine). Each value overstates the truth by at most ``POLL_S``.

    .venv/bin/python -m bench.analytics_sink [--backlog 20000] [--rate 500] [--traffic-s 20]
        [--output bench/results/analytics_sink.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import clickhouse_connect
from confluent_kafka.admin import AdminClient

from bench.backlog import publish_and_wait, set_up
from paystream.analytics import metrics, schema, sink, store
from paystream.analytics.rows import at
from paystream.analytics.sink import LIMITS
from paystream.runner import TRAFFIC_TIMEOUT_S, Platform, running
from paystream.services.kafka import start_on_free_ports
from paystream.settings import Settings
from paystream.topology import offsets
from paystream.topology.topics import analytics_group

DATABASE = "bench"
POLL_S = 0.05
DRAIN_TIMEOUT_S = 600.0
TERMINAL = ("Completed", "Reversed", "Rejected")


@contextmanager
def platform(home: Path) -> Iterator[Platform]:
    broker = start_on_free_ports(home / "kafka")
    try:
        settings = Settings(
            environment="test", data_dir=home / "data", kafka_bootstrap=broker.bootstrap,
            kafka_security="plaintext", topic_prefix="bench-analytics",
        )  # fmt: skip
        with running(settings, workers=2, log_dir=home / "logs") as started:
            yield started
    finally:
        broker.stop()


class Sink:
    """The analytics sink in a thread of this process, on its own embedded ClickHouse."""

    def __init__(self, platform: Platform, dsn: str) -> None:
        self.client = clickhouse_connect.get_client(dsn=dsn)
        schema.create(self.client, DATABASE)
        self.lock = threading.Lock()
        self.group = analytics_group(platform.settings)
        topics = platform.topics
        self.topics = [topics.events, topics.ledger, topics.dlq, topics.balances_changelog]
        self.loop = sink.build(platform.settings, "bench", client=self.client, database=DATABASE,
                               lock=self.lock)  # fmt: skip
        self.thread = threading.Thread(target=self.loop.run, name="sink", daemon=True)
        self.admin = AdminClient(platform.kafka.config())
        self.partitions = platform.settings.partitions

    def behind(self) -> int:
        ends = offsets.log_ends(self.admin, self.topics, self.partitions)
        with self.lock:
            stored = store.stored_positions(self.client, DATABASE)
        return sum(max(0, end - stored.get(p, 0)) for p, end in ends.items())


def rows_inserted() -> int:
    return int(sum(sample.value for m in metrics.ROWS.collect() for sample in m.samples
                   if sample.name.endswith("_total")))  # fmt: skip


def drain(platform: Platform, sink: Sink, backlog: int) -> dict[str, Any]:
    load = set_up(platform, backlog, seed=16, run_id="drain")
    publish_and_wait(platform, load, per_second=100_000)
    print(f"backlog of {backlog:,} transfers processed; starting the sink ...", flush=True)
    started = time.monotonic()
    sink.thread.start()
    deadline = started + DRAIN_TIMEOUT_S
    while sink.behind() > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    seconds = time.monotonic() - started
    rows = rows_inserted()
    print(f"  drained {rows:,} rows in {seconds:.1f} s: {rows / seconds:,.0f} rows/s", flush=True)
    return {"backlog_transfers": backlog, "rows": rows, "seconds": seconds,
            "rows_per_s": rows / seconds}  # fmt: skip


def visibility(platform: Platform, sink: Sink, rate: int, traffic_s: float) -> dict[str, Any]:
    load = set_up(platform, int(rate * traffic_s), seed=17, run_id="visible")
    seen: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(sink, seen, stop), name="poller")
    poller.start()
    platform.publish_paced(load, per_second=rate).join()
    platform.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S)
    time.sleep(2.0)
    stop.set()
    poller.join()
    ordered = sorted(seen)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    found = {
        "rate_per_s": rate, "traffic_s": traffic_s, "terminal_events": len(ordered),
        "p50_ms": pick(0.5), "p95_ms": pick(0.95), "p99_ms": pick(0.99),
        "max_ms": ordered[-1], "mean_ms": statistics.fmean(ordered), "poll_s": POLL_S,
    }  # fmt: skip
    shown = ", ".join(f"P{q} {found[f'p{q}_ms']:.0f} ms" for q in (50, 95, 99))
    print(f"  {len(ordered):,} terminal events at {rate}/s: visible after {shown}")
    return found


def _poll(sink: Sink, seen: list[float], stop: threading.Event) -> None:
    """Terminal events logged since this phase began (the drain's are older), each once."""
    floor_ms = since_ms = int(time.time() * 1000)
    known: set[str] = set()
    while not stop.is_set():
        with sink.lock:
            rows = sink.client.query(
                f"SELECT event_id, toUnixTimestamp64Milli(logged_at) FROM {DATABASE}.events "
                "WHERE type IN {terminal:Array(String)} AND logged_at >= {since:DateTime64(3)}",
                parameters={"terminal": list(TERMINAL), "since": at(since_ms)},
            ).result_rows
        now_ms = time.time() * 1000
        for event_id, logged_ms in rows:
            if event_id not in known:
                known.add(event_id)
                seen.append(now_ms - int(logged_ms))
        if rows:
            since_ms = max(floor_ms, max(int(r[1]) for r in rows) - 5_000)  # late rows too
        time.sleep(POLL_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--traffic-s", type=float, default=20.0)
    parser.add_argument("--output", type=Path, default=Path("bench/results/analytics_sink.json"))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-analytics-sink-") as directory:
        home = Path(directory)
        with platform(home) as started:
            analytics = Sink(started, f"chdb://{home / 'clickhouse'}")
            try:
                drained = drain(started, analytics, args.backlog)
                visible = visibility(started, analytics, args.rate, args.traffic_s)
            finally:
                analytics.loop.stop()
                analytics.thread.join(30)
    result = {
        "command": f"python -m bench.analytics_sink --backlog {args.backlog} --rate {args.rate} "
                   f"--traffic-s {args.traffic_s:g}",
        "machine": {"cores": os.cpu_count(), "python": host.python_version()},
        "load_average_1m_at_start": load, "load_average_1m_at_end": os.getloadavg()[0],
        "limits": {"records_max": LIMITS.records_max, "window_s": LIMITS.window_s},
        "drain": drained, "visibility": visible,
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
