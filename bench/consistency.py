"""Time to consistency and throughput of the Postgres audit store (issue 14).

1. **Time to consistency.** Two workers and the Postgres sink(s) under paced
   transfer traffic (the workload's mix: duplicates, conflicts, hostile records).
   For each transfer whose terminal event is its own ``Completed``: the time from
   that event's Kafka record timestamp (the worker's producer stamped it) to the
   first Postgres snapshot in which the payment's ``payments`` row says
   ``Completed`` AND the source account's row in ``accounts`` holds the posting.
   Visibility is judged from outside by a poller (in an observer process of its
   own, so the GIL of the process that publishes and decodes answers cannot
   delay it) that opens a read-only REPEATABLE READ snapshot every
   ``POLL_INTERVAL_S``: it reads the events rows
   written since its last snapshot (range scans on the unique index
   ``(events_partition, events_offset)``; the schema has no index on
   ``updated_at_ms`` or ``last_event_id``), then looks each Completed transfer
   up by primary key in ``payments`` and for its ``<payment>:post`` entry in
   ``journal_entries``. The sink writes that entry and its ``accounts`` update in
   one transaction (``store.write``), so the entry is in a snapshot exactly when
   the source account's totals include the posting. A row seen at a snapshot
   became visible after the previous one: each value overstates the truth by at
   most the gap between two snapshots (reported). A read_committed consumer in
   the observer notes when each Completed event could first be read from Kafka,
   which splits the time into the worker's commit and the sink's share.
2. **Sink throughput.** Sinks stopped; a backlog of transfers published and
   processed by the workers; then 1 (or 2) sinks started, timed until Postgres
   holds every ledger, events and dlq record (the check of
   ``Platform.wait_audit_store``, with its expectations read before the start).
   Rows written per table are Postgres' own counters (``pg_stat_user_tables``:
   inserted plus updated tuples).
3. **Profile.** One more 1-sink drain with two py-spy samplers on the sink:
   wall clock (``--idle``: waiting for Postgres or Kafka counts) and "not
   blocked" (py-spy counts a thread that waits for a CPU as active).

Each phase also records, from /proc, the CPU seconds of every process by role
(sinks, Postgres, Kafka, workers, this bench) and of everything else on the
machine, and where the sinks' main threads spent the wall time (on a CPU,
runnable but waiting for one, blocked). The run first waits (bounded) for a
quiet machine: other benchmarks and test runs share these CPUs.

Every service is our own (a broker on free ports of 127.0.0.1 and the embedded
Postgres over a unix socket, a fresh database per run) and stopped at the end.

    .venv/bin/python -m bench.consistency [--rate 1000 ...] [--traffic-s 25] [--backlog 20000]
        [--drain-sinks 1 2] [--no-profile] [--markdown /tmp/consistency-section.md]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform as host
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import confluent_kafka
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from psycopg import IsolationLevel

from paystream import workload
from paystream.agents.metrics import collect_text
from paystream.audit import db
from paystream.runner import Platform, running
from paystream.services.kafka import start_on_free_ports
from paystream.services.postgres import EmbeddedPostgres
from paystream.services.process import read_pid
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.reader import read_to_end
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics
from paystream.workload import Workload

RESULTS = Path(__file__).parent / "results" / "consistency.json"
WORKERS = 2
ACCOUNTS = 500
OFFERED_PER_S = 1_000
TRAFFIC_S = 25
TARGET_P95_MS = 500.0
BACKLOG_TRANSFERS = 20_000
SEED = 14

PUBLISH_TICK_S = 0.05
PUBLISH_SLACK_S = 120.0
"""How long the paced publisher may run beyond its schedule before the run is refused."""
POLL_INTERVAL_S = 0.025
"""Between the starts of two Postgres snapshots of the visibility poller."""
ROWS_PER_POLL_MAX = 50_000
WAITING_MAX = 200_000
"""Completed transfers seen in ``payment_events`` whose posting is not visible yet."""
CLOCK_BATCH_MAX = 500
CLOCK_CONSUME_TIMEOUT_S = 0.01
CLOCK_FETCH_WAIT_MS = 500
WINDOW_S = 5.0
"""Latency percentiles are also given per window of this many seconds of traffic."""

MIGRATE_TIMEOUT_S = 120.0
ANSWER_TIMEOUT_S = 900.0
STORE_TIMEOUT_S = 900.0
VISIBLE_TIMEOUT_S = 300.0
DRAIN_POLL_S = 0.25
PROGRESS_EVERY_S = 5.0
THREAD_JOIN_TIMEOUT_S = 30.0
OBSERVER_TIMEOUT_S = 60.0
OBSERVER_SETTLE_S = 10 * POLL_INTERVAL_S
"""Once Postgres holds everything, the poller's snapshots must have seen it too."""

QUIET_POLL_S = 5.0
QUIET_REPORT_S = 60.0
QUIET_LOAD_MAX = 1.5
QUIET_WAIT_MAX_S = 1_800.0

PROFILE_RATE_HZ = 100
PYSPY_STOP_TIMEOUT_S = 60.0
PROFILE_TOP_MAX = 12
PROFILE_OUT = Path(tempfile.gettempdir()) / "bench-consistency-profile"
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STORE_TABLES = (
    "journal_entries", "ledger_lines", "payment_events", "payments", "accounts", "dlq_records",
    "audit_log",
)  # fmt: skip
FACT_TABLES = {"journal_entries": "ledger", "payment_events": "events", "dlq_records": "dlq"}


# --- services ---------------------------------------------------------------------------


@contextlib.contextmanager
def services(bootstrap: str | None, work_dir: Path) -> Iterator[tuple[str, EmbeddedPostgres]]:
    """A broker (ours unless given) and the embedded Postgres; both stopped on exit."""
    postgres = EmbeddedPostgres(home=work_dir / "postgres")
    broker = None if bootstrap else start_on_free_ports(work_dir / "kafka")
    try:
        postgres.start()
        yield (broker.bootstrap if broker is not None else str(bootstrap)), postgres
    finally:
        postgres.stop()
        if broker is not None:
            broker.stop()


def broker_pid(work_dir: Path) -> int | None:
    return read_pid(work_dir / "kafka" / "kafka.pid")


def fresh_database(server_dsn: str, name: str) -> str:
    """Create database ``name`` (as tests/conftest.py does) and return a DSN that selects it."""
    with db.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(server_dsn, dbname=name)


def run_settings(base: Settings, name: str, server_dsn: str, work_dir: Path) -> Settings:
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    return base.model_copy(
        update={
            "topic_prefix": f"bench-consistency-{tag}",
            "data_dir": work_dir / tag,
            "postgres_dsn": fresh_database(server_dsn, f"bench_{tag.replace('-', '_')}"),
        }
    )


def dsn_of(platform: Platform) -> str:
    if platform.postgres_dsn is None:
        raise RuntimeError("the platform runs no Postgres sink")
    return platform.postgres_dsn


def wait_migrated(dsn: str) -> None:
    """Until the sinks' migration created the tables (they migrate on start)."""
    deadline = time.monotonic() + MIGRATE_TIMEOUT_S
    while time.monotonic() < deadline:
        with db.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass('sink_offsets') IS NOT NULL").fetchone()
        if row and row[0]:
            return
        time.sleep(DRAIN_POLL_S)
    raise RuntimeError(f"the audit store was not migrated within {MIGRATE_TIMEOUT_S} s")


def build_load(*, transfers: int, run_id: str) -> Workload:
    mix = workload.Mix(accounts=ACCOUNTS, transfers=transfers)
    return workload.build(seed=SEED, mix=mix, run_id=run_id, now_ms=int(time.time() * 1000))


def setup(platform: Platform, load: Workload) -> None:
    if left := platform.run_setup(load):
        raise RuntimeError(f"{len(left)} setup commands unanswered{platform.logs()}")


# --- percentiles ------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_ms": percentile(ordered, 50),
        "p95_ms": percentile(ordered, 95),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1] if ordered else float("nan"),
    }


# --- phase 1: time to consistency -------------------------------------------------------


class PacedPublisher:
    """Publishes ``traffic`` at ``per_second`` on a fixed schedule (a late tick catches up)."""

    def __init__(self, platform: Platform, traffic: Sequence[workload.Sent], per_second: int):
        self._platform, self._traffic, self._per_second = platform, traffic, per_second
        self.started_ms = 0
        self.finished_ms = 0
        self._thread = threading.Thread(target=self._run, name="paced-publisher")

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"publishing did not finish within {timeout_s} s")

    def _run(self) -> None:
        chunk = max(1, int(self._per_second * PUBLISH_TICK_S))
        started = time.monotonic()
        self.started_ms = int(time.time() * 1000)
        for tick, start in enumerate(range(0, len(self._traffic), chunk)):
            delay_s = started + tick * PUBLISH_TICK_S - time.monotonic()
            if delay_s > 0:
                time.sleep(delay_s)
            self._platform.publisher.publish_sent(self._traffic[start : start + chunk])
        self._platform.publisher.flush()
        self.finished_ms = int(time.time() * 1000)


class EventClock:
    """When a read_committed consumer could first read each Completed event: its worker's
    transaction had committed by then."""

    def __init__(self, *, bootstrap: str, topic: str, serde: AvroSerde, partitions: int):
        self._serde = serde
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-consistency-clock",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                # The broker answers a waiting fetch as soon as records become readable;
                # a short wait only makes it spin (10 ms cost an idle broker 0.36 CPUs).
                "fetch.wait.max.ms": CLOCK_FETCH_WAIT_MS,
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.read_ms: dict[str, int] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-clock")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(THREAD_JOIN_TIMEOUT_S)
        self._consumer.close()
        if self.error is not None:
            raise RuntimeError("the event clock failed") from self.error

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                messages = self._consumer.consume(CLOCK_BATCH_MAX, CLOCK_CONSUME_TIMEOUT_S)
                now_ms = int(time.time() * 1000)
                for message in messages:
                    if message.error() is not None:
                        raise KafkaException(message.error())
                    event = self._serde.decode_event(message.value() or b"")
                    if event.type == "Completed":
                        self.read_ms.setdefault(event.event_id, now_ms)
        except BaseException as error:  # reported by stop(); the thread must not die silently
            self.error = error


NEW_EVENTS_SQL = """
SELECT e.events_partition, e.events_offset, e.payment_id,
       e.type = 'Completed' AND e.command_type = 'Transfer'
           AND e.event_id = e.payment_id || ':completed'
FROM unnest(%s::int[], %s::bigint[]) AS w(part, after)
JOIN payment_events e ON e.events_partition = w.part AND e.events_offset > w.after
ORDER BY e.events_partition, e.events_offset
LIMIT %s
"""
COMPLETED_SQL = """
SELECT p.payment_id, j.entry_id IS NOT NULL
FROM payments p
LEFT JOIN journal_entries j ON j.entry_id = p.payment_id || ':post'
WHERE p.payment_id = ANY(%s) AND p.status = 'Completed'
"""

VISIBLE_COUNT_SQL = """
SELECT count(*) FROM payments p
JOIN journal_entries j ON j.entry_id = p.payment_id || ':post'
WHERE p.payment_id = ANY(%s) AND p.status = 'Completed'
"""


@dataclass
class Sightings:
    payment_ms: dict[str, int] = field(default_factory=dict)
    """payment id -> first snapshot whose ``payments`` row said Completed."""
    consistent_ms: dict[str, int] = field(default_factory=dict)
    """payment id -> first snapshot with that row AND the source account's posting."""
    gaps_ms: list[float] = field(default_factory=list)
    """Between the starts of consecutive snapshots: the bound on each value's error."""
    query_ms: list[float] = field(default_factory=list)


class VisibilityPoller:
    """Looks at Postgres as a user would, every POLL_INTERVAL_S, in a read-only snapshot."""

    def __init__(self, dsn: str, partitions: int) -> None:
        self._dsn = dsn
        self._after = [-1] * partitions
        self._waiting: set[str] = set()
        self.seen = Sightings()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="visibility-poller")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(THREAD_JOIN_TIMEOUT_S)
        if self.error is not None:
            raise RuntimeError("the visibility poller failed") from self.error

    def _run(self) -> None:
        try:
            with db.connect(self._dsn, autocommit=False) as conn:
                conn.isolation_level = IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                previous_ms: float | None = None
                while not self._stop.is_set():
                    started = time.monotonic()
                    snapshot_ms = time.time() * 1000
                    with conn.transaction():
                        self._look(conn, int(snapshot_ms))
                    self.seen.query_ms.append((time.monotonic() - started) * 1000)
                    if previous_ms is not None:
                        self.seen.gaps_ms.append(snapshot_ms - previous_ms)
                    previous_ms = snapshot_ms
                    self._stop.wait(max(0.0, started + POLL_INTERVAL_S - time.monotonic()))
        except BaseException as error:  # reported by stop(); the thread must not die silently
            self.error = error

    def _look(self, conn: psycopg.Connection[Any], snapshot_ms: int) -> None:
        parts = list(range(len(self._after)))
        rows = conn.execute(NEW_EVENTS_SQL, (parts, self._after, ROWS_PER_POLL_MAX)).fetchall()
        for partition, offset, payment_id, completed in rows:
            self._after[partition] = offset
            if completed:
                self._waiting.add(payment_id)
        if len(self._waiting) > WAITING_MAX:
            raise RuntimeError(f"over {WAITING_MAX} payments wait for their posting")
        if not self._waiting:
            return
        found = conn.execute(COMPLETED_SQL, (list(self._waiting),)).fetchall()
        for payment_id, posted in found:
            self.seen.payment_ms.setdefault(payment_id, snapshot_ms)
            if posted:
                self.seen.consistent_ms[payment_id] = snapshot_ms
                self._waiting.discard(payment_id)


@dataclass(frozen=True, slots=True)
class Observations:
    seen: Sightings
    read_ms: dict[str, int]
    """Completed event id -> when the event clock could first read it."""


def observe(settings: Settings, dsn: str, control: Connection) -> None:
    """The observer process: the poller and the event clock, away from the GIL of the
    process that publishes and decodes every answer."""
    topics = Topics.from_settings(settings)
    registry = registry_from_url(settings.schema_registry_url, settings.data_dir)
    serde = AvroSerde(registry, topics=topics.payloads())
    poller = VisibilityPoller(dsn, settings.partitions)
    clock = EventClock(
        bootstrap=settings.kafka.bootstrap, topic=topics.events, serde=serde,
        partitions=settings.partitions,
    )  # fmt: skip
    poller.start()
    clock.start()
    control.send("ready")
    with contextlib.suppress(EOFError):
        control.recv()
    clock.stop()
    poller.stop()
    control.send(Observations(poller.seen, clock.read_ms))


class Observer:
    """Runs :func:`observe` in a process of its own (spawned: no threads inherited)."""

    def __init__(self, settings: Settings, dsn: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._control, child = context.Pipe()
        self._process = context.Process(target=observe, args=(settings, dsn, child))

    @property
    def pid(self) -> int:
        if self._process.pid is None:
            raise RuntimeError("the observer was never started")
        return self._process.pid

    def __enter__(self) -> Observer:
        self._process.start()
        if not self._control.poll(OBSERVER_TIMEOUT_S):
            raise RuntimeError(f"the observer did not start within {OBSERVER_TIMEOUT_S} s")
        self._control.recv()
        return self

    def finish(self) -> Observations:
        self._control.send("stop")
        if not self._control.poll(OBSERVER_TIMEOUT_S):
            raise RuntimeError(f"the observer did not report within {OBSERVER_TIMEOUT_S} s")
        found = self._control.recv()
        if not isinstance(found, Observations):
            raise RuntimeError(f"the observer sent {found!r}")
        return found

    def __exit__(self, *_exc: object) -> None:
        self._control.close()
        self._process.join(OBSERVER_TIMEOUT_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(OBSERVER_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class Completion:
    payment_id: str
    produced_ms: int
    """The Completed event's Kafka record timestamp."""
    readable_ms: int | None
    payment_ms: int
    consistent_ms: int


def completions(platform: Platform, load: Workload, seen: Observations) -> list[Completion]:
    """Every transfer whose terminal event is its own Completed, with its times."""
    found = []
    for payment_id in load.transfer_ids:
        event = platform.watcher.terminal(payment_id)
        if event is None or event.type != "Completed":
            continue
        found.append(
            Completion(
                payment_id=payment_id,
                produced_ms=platform.watcher.timestamp_ms[event.event_id],
                readable_ms=seen.read_ms.get(event.event_id),
                payment_ms=seen.seen.payment_ms[payment_id],
                consistent_ms=seen.seen.consistent_ms[payment_id],
            )
        )
    return found


def measure_consistency(
    base: Settings, server_dsn: str, work_dir: Path, postgres: EmbeddedPostgres, *,
    per_second: int, traffic_s: int, sinks: int,
) -> dict[str, Any]:  # fmt: skip
    settings = run_settings(base, "consistency", server_dsn, work_dir)
    load = build_load(transfers=per_second * traffic_s, run_id="consistency")
    with running(
        settings, workers=WORKERS, log_dir=settings.data_dir / "logs", sinks=sinks
    ) as platform:
        dsn = dsn_of(platform)
        wait_migrated(dsn)
        setup(platform, load)
        platform.wait_audit_store(timeout_s=STORE_TIMEOUT_S)
        with Observer(settings, dsn) as observer:
            usage = Usage.of(platform, postgres, work_dir, observer.pid)
            before, counted = usage.snapshot(), worker_counters(platform)
            publisher = traffic(platform, load, per_second=per_second, traffic_s=traffic_s)
            completed = completed_transfers(platform, load)
            wait_visible(dsn, completed)
            used = Usage.since(before, usage.snapshot())
            used["worker_transactions"] = worker_transactions(
                counted, worker_counters(platform), used["seconds"]
            )
            late_s = time.time() - publisher.finished_ms / 1000
            print(f"  store caught up {late_s:.1f} s after the last publish", flush=True)
            time.sleep(OBSERVER_SETTLE_S)
            seen = observer.finish()
        if missed := completed - seen.seen.consistent_ms.keys():
            raise RuntimeError(f"{len(missed)} completed transfers never seen by the poller")
        done = completions(platform, load, seen)
        outcome = consistency_outcome(
            done, publisher, seen.seen, load, platform, sinks=sinks, per_second=per_second
        )
        return {**outcome, "usage": used, **batch_summary(sink_metrics(settings, platform))}


def traffic(
    platform: Platform, load: Workload, *, per_second: int, traffic_s: int
) -> PacedPublisher:
    publisher = PacedPublisher(platform, load.traffic, per_second)
    print(f"  publishing {len(load.traffic):,} records at {per_second:,}/s", flush=True)
    publisher.start()
    publisher.join(traffic_s + PUBLISH_SLACK_S)
    seconds = (publisher.finished_ms - publisher.started_ms) / 1000
    print(f"  published in {seconds:.1f} s; waiting for every answer", flush=True)
    if left := platform.wait_traffic(load, timeout_s=ANSWER_TIMEOUT_S):
        raise RuntimeError(f"{len(left)} command ids unanswered{platform.logs()}")
    return publisher


def completed_transfers(platform: Platform, load: Workload) -> set[str]:
    """The transfers whose terminal event is Completed."""
    return {
        p
        for p in load.transfer_ids
        if (event := platform.watcher.terminal(p)) is not None and event.type == "Completed"
    }


def wait_visible(dsn: str, payment_ids: set[str]) -> None:
    """Until Postgres shows every one of ``payment_ids`` Completed and posted."""
    deadline = time.monotonic() + VISIBLE_TIMEOUT_S
    with db.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(VISIBLE_COUNT_SQL, (list(payment_ids),)).fetchone()
            if row is not None and row[0] == len(payment_ids):
                return
            time.sleep(DRAIN_POLL_S)
    raise RuntimeError(f"completed transfers not all visible within {VISIBLE_TIMEOUT_S} s")


def consistency_outcome(
    done: list[Completion], publisher: PacedPublisher, seen: Sightings, load: Workload,
    platform: Platform, *, sinks: int, per_second: int,
) -> dict[str, Any]:  # fmt: skip
    publish_s = (publisher.finished_ms - publisher.started_ms) / 1000
    answers = [
        platform.watcher.timestamp_ms[e.event_id]
        for p in load.answers for e in platform.watcher.answers(p)
    ]  # fmt: skip
    last_answer_s = (max(answers) - publisher.started_ms) / 1000
    last_visible_s = (max(c.consistent_ms for c in done) - publisher.started_ms) / 1000
    readable = [c.readable_ms - c.produced_ms for c in done if c.readable_ms is not None]
    return {
        "workers": WORKERS,
        "sinks": sinks,
        "offered_per_s": per_second,
        "traffic_records": len(load.traffic),
        "transfers": len(load.transfer_ids),
        "outcomes": dict(platform.outcomes(load)),
        "publish_s": publish_s,
        "published_per_s": len(load.traffic) / publish_s,
        "answered_per_s": len(answers) / last_answer_s,
        "last_answer_after_s": last_answer_s,
        "last_visible_after_s": last_visible_s,
        "visible_per_s": len(done) / last_visible_s,
        "poll_interval_ms": POLL_INTERVAL_S * 1000,
        "snapshot_gap_ms": summary_ms(seen.gaps_ms),
        "poll_query_ms": summary_ms(seen.query_ms),
        "consistent": summary_ms([c.consistent_ms - c.produced_ms for c in done]),
        "payment_row": summary_ms([c.payment_ms - c.produced_ms for c in done]),
        "kafka_readable": summary_ms(readable),
        "sink_share": summary_ms(
            [c.consistent_ms - c.readable_ms for c in done if c.readable_ms is not None]
        ),
        "windows": windows(done, publisher.started_ms),
    }


def windows(done: list[Completion], started_ms: int) -> list[dict[str, Any]]:
    """Latency percentiles per WINDOW_S of Completed timestamps (does the lag grow?)."""
    by_window: dict[int, list[float]] = {}
    for c in done:
        index = int((c.produced_ms - started_ms) / 1000 // WINDOW_S)
        by_window.setdefault(index, []).append(c.consistent_ms - c.produced_ms)
    return [
        {"from_s": i * WINDOW_S, "to_s": (i + 1) * WINDOW_S, **summary_ms(values)}
        for i, values in sorted(by_window.items())
    ]


# --- phase 2: sink throughput -----------------------------------------------------------


def descendants(pids: Sequence[int]) -> set[int]:
    """``pids`` and every process below them."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    family, frontier = set(pids), list(pids)
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in family]
        family.update(children)
        frontier += children
    return family


def process_usage(pid: int) -> dict[str, float]:
    """CPU seconds of the process (all threads); of its main thread: seconds on a CPU, seconds
    runnable but waiting for one, and how often it blocked (voluntary context switches)."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        on_cpu_ns, runqueue_ns, _slices = Path(f"/proc/{pid}/schedstat").read_text().split()
        status = Path(f"/proc/{pid}/status").read_text()
        switches = status.split("voluntary_ctxt_switches:")[1].split()[0]
        found["cpu_s"] = round((int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S, 2)
        found["main_on_cpu_s"] = round(int(on_cpu_ns) / 1e9, 3)
        found["main_runqueue_s"] = round(int(runqueue_ns) / 1e9, 3)
        found["main_blocked_count"] = int(switches)
        found["processes"] = 1
    return found


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


Snapshot = dict[str, dict[str, float]]


class Usage:
    """Snapshots of what each role's processes used; ``since`` gives the difference."""

    def __init__(self, roles: dict[str, tuple[list[int], bool]]) -> None:
        self._roles = roles
        """role -> (pids, whether their descendants count too)."""

    @classmethod
    def of(
        cls, platform: Platform, postgres: EmbeddedPostgres, work_dir: Path, *extra: int
    ) -> Usage:
        pids = {
            "sinks": ([w.process.pid for w in platform.sinks.workers if w.process], True),
            "workers": ([w.process.pid for w in platform.workers.workers if w.process], True),
            "postgres": ([pid] if (pid := postgres.pid()) else [], True),
            "kafka": ([pid] if (pid := broker_pid(work_dir)) else [], True),
            "bench": ([os.getpid(), *extra], False),
        }
        return cls(pids)

    def snapshot(self) -> Snapshot:
        found: Snapshot = {}
        for role, (pids, below) in self._roles.items():
            found[role] = defaultdict(float)
            for pid in descendants(pids) if below else set(pids):
                for key, value in process_usage(pid).items():
                    found[role][key] += value
        busy, total = machine_jiffies()
        found["machine"] = {"busy": busy, "total": total, "at": time.monotonic()}
        return found

    @staticmethod
    def since(before: Snapshot, after: Snapshot) -> dict[str, Any]:
        """CPU seconds per role between two snapshots, and how busy the machine's CPUs were."""
        seconds = after["machine"]["at"] - before["machine"]["at"]
        busy = after["machine"]["busy"] - before["machine"]["busy"]
        total = after["machine"]["total"] - before["machine"]["total"]
        roles = {
            role: Usage._role_since(before[role], after[role], seconds)
            for role in after
            if role != "machine"
        }
        busy_s = busy / CLOCK_TICKS_PER_S
        others_s = busy_s - sum(r.get("cpu_s", 0.0) for r in roles.values())
        return {
            "seconds": seconds,
            "machine_busy_share": busy / total if total else None,
            "machine_busy_cpu_s": round(busy_s, 2),
            "others_cpu_s": round(others_s, 2),
            "loadavg_1m_after": os.getloadavg()[0],
            **roles,
        }

    @staticmethod
    def _role_since(
        before: dict[str, float], after: dict[str, float], seconds: float
    ) -> dict[str, float]:
        found = {k: round(after[k] - before.get(k, 0), 3) for k in after if k != "processes"}
        found["processes"] = after["processes"]
        found["main_blocked_s"] = round(
            seconds * after["processes"] - found.get("main_on_cpu_s", 0)
            - found.get("main_runqueue_s", 0), 3,
        )  # fmt: skip
        return found


def table_writes(dsn: str) -> dict[str, int]:
    """Inserted plus updated tuples per table, by Postgres' own statistics."""
    with db.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, n_tup_ins + n_tup_upd FROM pg_stat_user_tables"
        ).fetchall()
    return {name: int(n) for name, n in rows}


def fact_counts(dsn: str) -> dict[str, int]:
    with db.connect(dsn, autocommit=True) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in FACT_TABLES
        }


def expected_facts(platform: Platform) -> dict[str, int]:
    """Records of ``ledger``, ``events``, ``dlq`` now (what wait_audit_store expects)."""
    topics = {
        "ledger": platform.topics.ledger,
        "events": platform.topics.events,
        "dlq": platform.topics.dlq,
    }
    return {
        table: sum(1 for _ in read_to_end(platform.kafka, topics[kind]))
        for table, kind in FACT_TABLES.items()
    }


@dataclass
class Drain:
    """A timed drain: the wall times of its first written row and of the last."""

    started: float
    first_row: float | None = None
    done: float | None = None
    usage: Snapshot = field(default_factory=dict)
    """What the processes had used when the first row was written."""


def wait_drained(
    dsn: str, expected: dict[str, int], drain: Drain, on_first_row: Callable[[], None]
) -> None:
    total = sum(expected.values())
    deadline = drain.started + STORE_TIMEOUT_S
    reported = drain.started
    while time.monotonic() < deadline:
        counts = fact_counts(dsn)
        now = time.monotonic()
        if drain.first_row is None and any(counts.values()):
            drain.first_row = now
            on_first_row()
        if counts == expected:
            drain.done = now
            return
        if now - reported > PROGRESS_EVERY_S:
            reported = now
            print(
                f"    {sum(counts.values()):,} / {total:,} facts after {now - drain.started:.0f} s",
                flush=True,
            )
        time.sleep(DRAIN_POLL_S)
    raise RuntimeError(
        f"the store did not catch up within {STORE_TIMEOUT_S} s: {counts} of {expected}"
    )


def prepare_backlog(platform: Platform, load: Workload) -> dict[str, int]:
    """Sinks stopped, the backlog published and processed; the facts the sinks must write."""
    wait_migrated(dsn_of(platform))
    for sink in platform.sinks.workers:
        sink.stop()
    setup(platform, load)
    print(f"  sinks stopped; publishing a backlog of {len(load.traffic):,} records", flush=True)
    platform.publisher.publish_sent(load.traffic)
    platform.publisher.flush()
    if left := platform.watcher.wait_answers(load.answers, timeout_s=ANSWER_TIMEOUT_S):
        raise RuntimeError(f"{len(left)} command ids unanswered{platform.logs()}")
    expected = expected_facts(platform)
    print(f"  workers done: {sum(expected.values()):,} facts waiting ({expected})", flush=True)
    return expected


def measure_drain(
    base: Settings, server_dsn: str, work_dir: Path, postgres: EmbeddedPostgres, *,
    sinks: int, backlog: int, profile_dir: Path | None,
) -> dict[str, Any]:  # fmt: skip
    settings = run_settings(base, f"drain{sinks}", server_dsn, work_dir)
    load = build_load(transfers=backlog, run_id=f"drain{sinks}")
    with running(
        settings, workers=WORKERS, log_dir=settings.data_dir / "logs", sinks=sinks
    ) as platform:
        dsn = dsn_of(platform)
        expected = prepare_backlog(platform, load)
        before = table_writes(dsn)
        drain = Drain(started=time.monotonic())
        for sink in platform.sinks.workers:
            sink.start()
        usage = Usage.of(platform, postgres, work_dir)
        with profiled(platform, profile_dir) as start_profile:

            def first_row() -> None:
                drain.usage.update(usage.snapshot())
                start_profile()

            wait_drained(dsn, expected, drain, first_row)
            used = Usage.since(drain.usage, usage.snapshot())
        metrics = sink_metrics(settings, platform)
        for sink in platform.sinks.workers:
            sink.stop()  # a backend flushes its table statistics as it exits
        writes = {t: n - before.get(t, 0) for t, n in table_writes(dsn).items()}
    return drain_outcome(sinks, expected, writes, drain, used, metrics)


def worker_counters(platform: Platform) -> dict[str, float]:
    """The workers' batches (one Kafka transaction each) and inputs so far, from their metrics."""
    found: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(collect_text(platform.workers.metrics_dir)):
        for sample in family.samples:
            if sample.name in ("paystream_worker_batches_total", "paystream_worker_inputs_total"):
                found[sample.name] += sample.value
    return found


def worker_transactions(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    transactions = (
        after["paystream_worker_batches_total"] - before["paystream_worker_batches_total"]
    )
    inputs = after["paystream_worker_inputs_total"] - before["paystream_worker_inputs_total"]
    return {
        "count": transactions,
        "per_s": transactions / seconds,
        "inputs_per_transaction": inputs / transactions if transactions else 0.0,
    }


def sink_metrics(settings: Settings, platform: Platform) -> dict[str, float]:
    """The sinks' own counters, summed: rows by table, batches, seconds writing them."""
    found: dict[str, float] = defaultdict(float)
    for sink in platform.sinks.workers:
        text = collect_text(settings.data_dir / "metrics" / sink.name)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "paystream_sink_rows_total":
                    found[f"rows:{sample.labels['table']}"] += sample.value
                elif sample.name in (
                    "paystream_sink_batch_seconds_sum", "paystream_sink_batch_seconds_count",
                    "paystream_sink_batch_records_sum",
                ):  # fmt: skip
                    found[sample.name.removeprefix("paystream_sink_")] += sample.value
    return dict(found)


def drain_outcome(
    sinks: int, expected: dict[str, int], writes: dict[str, int], drain: Drain,
    used: dict[str, Any], metrics: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    if drain.first_row is None or drain.done is None:
        raise RuntimeError("the drain never finished")
    total_s = drain.done - drain.started
    steady_s = drain.done - drain.first_row
    facts = sum(expected.values())
    rows = sum(writes.get(t, 0) for t in STORE_TABLES)
    return {
        "sinks": sinks,
        "facts": facts,
        "facts_by_table": expected,
        "rows_written": rows,
        "rows_by_table": {t: writes.get(t, 0) for t in (*STORE_TABLES, "sink_offsets")},
        "start_to_first_row_s": drain.first_row - drain.started,
        "first_row_to_done_s": steady_s,
        "start_to_done_s": total_s,
        "facts_per_s": facts / steady_s,
        "rows_per_s": rows / steady_s,
        "facts_per_s_from_start": facts / total_s,
        "rows_per_s_from_start": rows / total_s,
        "usage_first_row_to_done": used,
        **batch_summary(metrics),
    }


def batch_summary(metrics: dict[str, float]) -> dict[str, Any]:
    """The sinks' batches, from their metrics."""
    batches = metrics.get("batch_seconds_count", 0.0)
    write_s = metrics.get("batch_seconds_sum", 0.0)
    return {
        "batches": batches,
        "records_per_batch": metrics.get("batch_records_sum", 0.0) / batches if batches else None,
        "batch_write_s_total": write_s,
        "batch_write_ms_mean": 1000 * write_s / batches if batches else None,
        "sink_rows_metric": {
            k.removeprefix("rows:"): v for k, v in metrics.items() if k.startswith("rows:")
        },
    }


# --- phase 3: profile -------------------------------------------------------------------


@contextlib.contextmanager
def profiled(platform: Platform, profile_dir: Path | None) -> Iterator[Any]:
    """Yields a callable that starts two py-spy samplers on the first sink; stops them on exit."""
    samplers: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        if profile_dir is None:
            return
        pid = platform.sinks.workers[0].process.pid  # type: ignore[union-attr]
        for mode, extra in (("wall", ["--idle"]), ("cpu", [])):
            samplers.append(
                subprocess.Popen(
                    [
                        pyspy(), "record", "--pid", str(pid), "--rate", str(PROFILE_RATE_HZ),
                        "--format", "raw", "--threads", "--nonblocking",
                        "--output", str(profile_dir / f"sink-{mode}.txt"), *extra,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=(profile_dir / f"py-spy-{mode}.log").open("wb"),
                )
            )  # fmt: skip

    try:
        yield start
    finally:
        for sampler in samplers:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for sampler in samplers:
            try:
                sampler.wait(PYSPY_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                sampler.kill()


def pyspy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed (.venv/bin/pip install py-spy)")
    return found


CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("audit chain sha256", ("chain_hash (",)),
    (
        "audit canonical JSON bodies",
        ("entry_audit (", "event_audit (", "dlq_audit (", "canonical ("),
    ),
    ("commit (fsync wait)", ("transaction.py",)),
    ("SQL: COPY and statements (psycopg + server)", ("psycopg/",)),
    ("row tuples, filters, account deltas", ("records.py", "projection.py", "audit/store.py")),
    ("Avro decode + validation", ("decode_journal_entry (", "decode_event (")),
    ("dead letters, directory", ("dlq_row (", "classify (")),
    ("Kafka consume (librdkafka)", ("_read (",)),
)


def classify(stack: str) -> str:
    for name, needles in CATEGORIES:
        if any(needle in stack for needle in needles):
            return name
    return "other"


def read_profile(path: Path) -> Counter[str]:
    """Main-thread stacks of a py-spy raw file -> samples."""
    stacks: Counter[str] = Counter()
    if not path.is_file():
        return stacks
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, _, frames = stack.partition(";")
        if "MainThread" in thread and count.isdigit():
            stacks[frames] += int(count)
    return stacks


def call_site(stack: str) -> str:
    """The deepest frames of paystream's own code, e.g. ``_facts:153 > _insert_new:170``."""
    frames = [f for f in stack.split(";") if "paystream/" in f]
    if not frames:
        return "(outside paystream)"
    names = [f.split(" (")[0] + ":" + f.rsplit(":", 1)[-1].rstrip(")") for f in frames[-2:]]
    return " > ".join(names)


def profile_summary(profile_dir: Path) -> dict[str, Any]:
    found: dict[str, Any] = {"rate_hz": PROFILE_RATE_HZ}
    for mode in ("wall", "cpu"):
        stacks = read_profile(profile_dir / f"sink-{mode}.txt")
        total = sum(stacks.values()) or 1
        categories: Counter[str] = Counter()
        sites: Counter[str] = Counter()
        for stack, n in stacks.items():
            categories[classify(stack)] += n
            sites[call_site(stack)] += n
        found[mode] = {
            "samples": sum(stacks.values()),
            "categories": {k: round(100 * v / total, 1) for k, v in categories.most_common()},
            "call_sites": {
                k: round(100 * v / total, 1) for k, v in sites.most_common(PROFILE_TOP_MAX)
            },
        }
    return found


# --- report -----------------------------------------------------------------------------


def machine_facts(server_dsn: str) -> dict[str, Any]:
    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        host.processor(),
    )  # fmt: skip
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    with db.connect(server_dsn, autocommit=True) as conn:
        pg = {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
        }
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kb / 2**20, 1),
        "os": host.platform(),
        "python": host.python_version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__}, libpq {psycopg.pq.version()})",
        "postgres": pg,
    }


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """A markdown table; the first ``left`` columns left-aligned, the others right-aligned."""
    align = ["---" if i < left else "---:" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def ms(value: float) -> str:
    return f"{value:,.0f}"


def latency_cells(s: dict[str, float]) -> list[str]:
    return [f"{s['count']:,}", ms(s["p50_ms"]), ms(s["p95_ms"]), ms(s["p99_ms"]), ms(s["max_ms"])]


def consistency_table(c: dict[str, Any]) -> str:
    labels = {
        "consistent": "**payments row Completed and source account posted (visible)**",
        "payment_row": "payments row Completed",
        "kafka_readable": "readable on `events` (read_committed): the worker's commit",
        "sink_share": "(visible minus readable: the sink's share)",
    }
    header = ["from the Completed event's Kafka timestamp to", "count", "P50 ms", "P95 ms"]
    return md_table(
        [*header, "P99 ms", "max ms"],
        [[label, *latency_cells(c[key])] for key, label in labels.items()],
    )


def rates_table(c: dict[str, Any]) -> str:
    header = ["offered", "published", "answered (workers)", "visible in Postgres"]
    row = [
        f"{c['offered_per_s']:,}/s",
        f"{c['published_per_s']:,.0f}/s over {c['publish_s']:.1f} s",
        f"{c['answered_per_s']:,.0f}/s (last {c['last_answer_after_s']:.1f} s after start)",
        f"{c['visible_per_s']:,.0f}/s (last {c['last_visible_after_s']:.1f} s after start)",
    ]
    return md_table(header, [row], left=0)


def windows_table(c: dict[str, Any]) -> str:
    rows = [[f"{w['from_s']:.0f}-{w['to_s']:.0f}", *latency_cells(w)] for w in c["windows"]]
    header = ["Completed at (s after start)", "count", "P50 ms", "P95 ms", "P99 ms", "max ms"]
    return md_table(header, rows)


def drain_table(drains: Sequence[dict[str, Any]]) -> str:
    header = [
        "sinks", "facts", "rows written", "first row after", "drain (first row to done)",
        "facts/s", "rows/s", "rows/s from start", "batches", "records/batch", "mean write ms",
    ]  # fmt: skip
    rows = [
        [
            str(d["sinks"]), f"{d['facts']:,}", f"{d['rows_written']:,}",
            f"{d['start_to_first_row_s']:.1f} s", f"{d['first_row_to_done_s']:.1f} s",
            f"{d['facts_per_s']:,.0f}", f"{d['rows_per_s']:,.0f}",
            f"{d['rows_per_s_from_start']:,.0f}", f"{d['batches']:,.0f}",
            f"{d['records_per_batch'] or 0:,.0f}", f"{d['batch_write_ms_mean'] or 0:,.0f}",
        ]
        for d in drains
    ]  # fmt: skip
    return md_table(header, rows, left=0)


USAGE_ROLES = ("sinks", "postgres", "kafka", "workers", "bench")


def usage_table(runs: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """CPU per role over a phase, and where the sinks' main threads spent the wall time."""
    header = [
        "phase", "wall s", "machine CPUs busy",
        *(f"CPU s {role}" for role in USAGE_ROLES),
        "CPU s others (not this bench)",
        "sink main thread: on CPU / waiting for a CPU / blocked s (times blocked)",
    ]  # fmt: skip
    rows = []
    for label, used in runs:
        sinks = used["sinks"]
        rows.append(
            [
                label, f"{used['seconds']:.1f}", f"{100 * (used['machine_busy_share'] or 0):.0f}%",
                *(f"{used[role].get('cpu_s', 0):.1f}" for role in USAGE_ROLES),
                f"{used['others_cpu_s']:.1f}",
                f"{sinks.get('main_on_cpu_s', 0):.1f} / {sinks.get('main_runqueue_s', 0):.1f}"
                f" / {sinks.get('main_blocked_s', 0):.1f}"
                f" ({sinks.get('main_blocked_count', 0):,.0f})",
            ]
        )  # fmt: skip
    return md_table(header, rows)


def rows_table(drains: Sequence[dict[str, Any]]) -> str:
    tables = list(drains[0]["rows_by_table"])
    rows = [[str(d["sinks"]), *(f"{d['rows_by_table'][t]:,}" for t in tables)] for d in drains]
    return md_table(["sinks", *tables], rows, left=0)


def profile_table(p: dict[str, Any]) -> str:
    wall, cpu = p["wall"]["categories"], p["cpu"]["categories"]
    names = dict.fromkeys([*wall, *cpu])
    categories = md_table(
        ["where the sink's main thread is", "wall %", "not blocked % (on or waiting for a CPU)"],
        [[name, f"{wall.get(name, 0):.1f}", f"{cpu.get(name, 0):.1f}"] for name in names],
    )
    sites = [
        md_table(
            [f"call site (deepest paystream frames), {mode}", "%"],
            [[f"`{site}`", f"{share:.1f}"] for site, share in p[mode]["call_sites"].items()],
        )
        for mode in ("wall", "cpu")
    ]
    return "\n\n".join([categories, *sites])


def consistency_report(c: dict[str, Any]) -> list[str]:
    verdict = "met" if c["consistent"]["p95_ms"] < TARGET_P95_MS else "NOT met"
    gap, tx = c["snapshot_gap_ms"], c["usage"]["worker_transactions"]
    return [
        f"### {c['offered_per_s']:,} transfers/s offered",
        "",
        f"Time to consistency: {c['workers']} workers, {c['sinks']} sink(s). The poller takes a"
        f" snapshot every {c['poll_interval_ms']:.0f} ms (measured gap P50 {gap['p50_ms']:.0f} ms,"
        f" P99 {gap['p99_ms']:.0f} ms, max {gap['max_ms']:.0f} ms): each value overstates the"
        " truth by at most the gap before its snapshot.",
        f"Target P95 < {TARGET_P95_MS:.0f} ms: **{verdict}**.",
        "", rates_table(c), "", consistency_table(c), "", windows_table(c), "",
        f"The sink wrote {c['batches']:,.0f} batches of {c['records_per_batch'] or 0:,.0f}"
        f" records on average, {c['batch_write_ms_mean'] or 0:,.0f} ms each. The workers"
        f" committed {tx['count']:,.0f} Kafka transactions ({tx['per_s']:,.0f}/s,"
        f" {tx['inputs_per_transaction']:,.1f} inputs each).",
        "",
    ]  # fmt: skip


def report(results: dict[str, Any]) -> str:
    parts = []
    consistency = results.get("consistency") or []
    for c in consistency:
        parts += consistency_report(c)
    drains = results.get("throughput") or []
    if drains:
        parts += ["Sink throughput on a backlog:", "", drain_table(drains), "", rows_table(drains)]
        parts += [""]
    if p := results.get("profile"):
        parts += ["Profile of one sink draining the backlog (py-spy, main thread):", ""]
        parts += [drain_table([p["drain"]]), "", profile_table(p), ""]
    runs = [(f"consistency at {c['offered_per_s']:,}/s", c["usage"]) for c in consistency]
    runs += [(f"drain, {d['sinks']} sink(s)", d["usage_first_row_to_done"]) for d in drains]
    runs += [("drain, 1 sink, under py-spy", p["drain"]["usage_first_row_to_done"])] if p else []
    if runs:
        parts += ["Where the CPU went (per phase, from /proc):", "", usage_table(runs), ""]
    return "\n".join(parts)


HOW_MEASURED = """\
How it is measured (`bench/consistency.py`). Two workers and one `paystream sink postgres`
take paced transfers (the workload's mix: duplicates, conflicts, hostile records) for 25 s.
For each transfer whose terminal event is its own `Completed`, the time runs from that event's
Kafka record timestamp (stamped by the worker's producer) to the first Postgres snapshot in
which the `payments` row says `Completed` and the source account's posting (`<payment>:post`,
written with its `accounts` update in one sink transaction) is there. An observer process,
like a user, opens a read-only REPEATABLE READ snapshot every 25 ms and reads the events rows
written since the last one (a range scan on the unique `(events_partition, events_offset)`
index; the schema has no index on `updated_at_ms` or `last_event_id`), then looks those
payments up by key. A value is at most one snapshot gap too high (gap percentiles given).
"Readable" is when a read_committed consumer in the observer first read the event: the part
that is the worker's commit. Sink throughput: sinks stopped, a backlog of 20,000 transfers
processed by the workers, then the sink(s) started and timed until Postgres holds every
`ledger`, `events` and `dlq` record; rows are Postgres' own counters (`pg_stat_user_tables`,
inserted plus updated). CPU per role comes from /proc; "others" is everything on the machine
that is not this benchmark (other test runs share these 2 CPUs)."""


def markdown_section(results: dict[str, Any]) -> str:
    m = results["machine"]
    pg = m["postgres"]
    return "\n".join(
        [
            "## Audit store: time to consistency and sink throughput",
            "",
            f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, {m['os']},"
            f" Python {m['python']}, PostgreSQL {pg['server_version']} (embedded, fsync"
            f" {pg['fsync']}, synchronous_commit {pg['synchronous_commit']}), one local Kafka"
            f" broker, librdkafka {m['librdkafka']}, psycopg {m['psycopg']}. Broker, Postgres,"
            " workers, sinks and the load generator all share this one machine.",
            "",
            "```",
            results["command"],
            "```",
            "",
            HOW_MEASURED,
            "",
            report(results),
        ]
    )


def wait_quiet(load_max: float, timeout_s: float) -> dict[str, Any]:
    """Wait (bounded) until the 1-minute load average is under ``load_max``: other work on this
    machine (other benchmarks, test runs) takes the CPUs these numbers depend on."""
    started = time.monotonic()
    reported = started
    while os.getloadavg()[0] >= load_max and time.monotonic() - started < timeout_s:
        if time.monotonic() - reported > QUIET_REPORT_S:
            reported = time.monotonic()
            print(f"  waiting for a quiet machine: load {os.getloadavg()[0]:.1f}", flush=True)
        time.sleep(QUIET_POLL_S)
    load = os.getloadavg()[0]
    return {"loadavg_1m": load, "quiet": load < load_max, "waited_s": time.monotonic() - started}


# --- main -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.consistency", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rate", type=int, nargs="+", default=[OFFERED_PER_S], help="transfers offered per s"
    )
    parser.add_argument("--traffic-s", type=int, default=TRAFFIC_S)
    parser.add_argument("--sinks", type=int, default=1, help="sinks during the consistency run")
    parser.add_argument("--backlog", type=int, default=BACKLOG_TRANSFERS)
    parser.add_argument("--drain-sinks", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--no-consistency", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--profile-out", type=Path, default=PROFILE_OUT, help="py-spy's raw stacks go here"
    )
    parser.add_argument("--bootstrap", help="an existing Kafka (default: a broker of our own)")
    parser.add_argument(
        "--quiet-load", type=float, default=QUIET_LOAD_MAX,
        help="wait (at most 30 min) for a 1-minute load average under this before starting",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--markdown", type=Path, help="also write a docs/benchmarks.md section here"
    )
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "command": "python -m bench.consistency " + " ".join(argv or sys.argv[1:])
    }
    results["load_at_start"] = wait_quiet(args.quiet_load, QUIET_WAIT_MAX_S)
    with tempfile.TemporaryDirectory(prefix="bench-consistency-") as tmp:
        work_dir = Path(tmp)
        with services(args.bootstrap, work_dir) as (bootstrap, postgres):
            server_dsn = postgres.dsn()
            results["machine"] = machine_facts(server_dsn)
            base = Settings(
                environment="test", kafka_bootstrap=bootstrap, kafka_security="plaintext"
            )
            run_phases(args, results, base, server_dsn, work_dir, postgres)
    table = report(results)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({**results, "table": table}, indent=2, default=str) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown_section(results) + "\n")
    return 0


def run_phases(
    args: argparse.Namespace, results: dict[str, Any], base: Settings, server_dsn: str,
    work_dir: Path, postgres: EmbeddedPostgres,
) -> None:  # fmt: skip
    results["consistency"] = []
    for rate in [] if args.no_consistency else args.rate:
        print(f"time to consistency at {rate:,}/s for {args.traffic_s} s:", flush=True)
        outcome = measure_consistency(
            base, server_dsn, work_dir, postgres, per_second=rate,
            traffic_s=args.traffic_s, sinks=args.sinks,
        )  # fmt: skip
        results["consistency"].append(outcome)
    results["throughput"] = []
    for sinks in args.drain_sinks:
        print(
            f"sink throughput, {sinks} sink(s), backlog of {args.backlog:,} transfers:", flush=True
        )
        results["throughput"].append(
            measure_drain(
                base,
                server_dsn,
                work_dir,
                postgres,
                sinks=sinks,
                backlog=args.backlog,
                profile_dir=None,
            )
        )
    if not args.no_profile:
        print("profile: 1 sink under py-spy:", flush=True)
        profile_dir = args.profile_out.resolve()
        shutil.rmtree(profile_dir, ignore_errors=True)
        profile_dir.mkdir(parents=True)
        drain = measure_drain(
            base,
            server_dsn,
            work_dir,
            postgres,
            sinks=1,
            backlog=args.backlog,
            profile_dir=profile_dir,
        )
        results["profile"] = {
            "drain": drain,
            "raw": str(profile_dir),
            **profile_summary(profile_dir),
        }


if __name__ == "__main__":
    raise SystemExit(main())
