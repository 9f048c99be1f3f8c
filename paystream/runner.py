"""A running paystream: topics, a group of workers, a publisher and an event watcher.

The demo, the end-to-end and crash tests and the benchmarks all drive the
platform through this one context manager.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from paystream import services
from paystream.agents.supervisor import (
    WorkerGroup,
    prepare_metrics_dir,
    sink_command,
    supervisor_command,
)
from paystream.audit.store import row_counts
from paystream.audit.verify import LedgerReport, verify
from paystream.services.process import tail
from paystream.settings import KafkaConnection, Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.publisher import CommandPublisher
from paystream.topology.reader import read_to_end
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import (
    Topics,
    app_id_for,
    ensure_topics,
    wait_group_stable,
)
from paystream.topology.watch import EventWatcher
from paystream.workload import Workload

SETUP_TIMEOUT_S = 180.0
TRAFFIC_TIMEOUT_S = 600.0
PUBLISH_TICK_S = 0.1
LOG_TAIL_LINES = 15
SUPERVISE_TICK_S = 2.0
SINK_TIMEOUT_S = 300.0
SINK_POLL_S = 0.5


@dataclass
class Platform:
    settings: Settings
    kafka: KafkaConnection
    topics: Topics
    serde: AvroSerde
    publisher: CommandPublisher
    watcher: EventWatcher
    workers: WorkerGroup
    sinks: WorkerGroup
    postgres_dsn: str | None

    def run_setup(self, workload: Workload) -> set[str]:
        """Publish the setup and wait for it; returns the command ids still open."""
        self.publisher.publish_all(workload.setup)
        self.publisher.flush()
        return self.watcher.wait([c.command_id for c in workload.setup], timeout_s=SETUP_TIMEOUT_S)

    def publish_paced(self, workload: Workload, *, per_second: int) -> threading.Thread:
        """Publish the traffic at about ``per_second`` in a background thread."""

        def run() -> None:
            chunk = max(1, int(per_second * PUBLISH_TICK_S))
            for start in range(0, len(workload.traffic), chunk):
                self.publisher.publish_sent(workload.traffic[start : start + chunk])
                time.sleep(PUBLISH_TICK_S)
            self.publisher.flush()

        thread = threading.Thread(target=run, name="publisher")
        thread.start()
        return thread

    def wait_traffic(self, workload: Workload, *, timeout_s: float) -> set[str]:
        """Wait until every traffic record with a command id has its one answer, restarting any
        worker that died meanwhile (a supervisor's job); returns the ids still short."""
        expected = workload.answers
        left = set(expected)
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            pending = {p: expected[p] for p in left}
            left = self.watcher.wait_answers(pending, timeout_s=SUPERVISE_TICK_S)
            self.workers.restart_dead()
            self.sinks.restart_dead()
        return left

    def wait_audit_store(self, *, timeout_s: float = SINK_TIMEOUT_S) -> dict[str, int]:
        """Wait until Postgres holds every record of ``ledger``, ``events`` and ``dlq``.

        Restarts a sink that died meanwhile; returns the row counts (of every table).
        """
        if self.postgres_dsn is None:
            raise ValueError("no Postgres sink runs here")
        expected = {
            table: sum(1 for _ in read_to_end(self.kafka, topic))
            for table, topic in (
                ("journal_entries", self.topics.ledger),
                ("payment_events", self.topics.events),
                ("dlq_records", self.topics.dlq),
            )
        }
        deadline = time.monotonic() + timeout_s
        while True:
            counts = row_counts(self.postgres_dsn)
            caught_up = all(counts[table] == n for table, n in expected.items())
            if caught_up or time.monotonic() > deadline:
                return counts
            self.sinks.restart_dead()
            time.sleep(SINK_POLL_S)

    def outcomes(self, workload: Workload) -> Counter[str]:
        """Each transfer payment's outcome ("missing" when there is none yet)."""
        counts: Counter[str] = Counter()
        for payment_id in workload.transfer_ids:
            event = self.watcher.terminal(payment_id)
            counts[event.type if event else "missing"] += 1
        return counts

    def rejection_codes(self, workload: Workload) -> Counter[str]:
        """How many answers to the traffic's records carried each code (or none)."""
        counts: Counter[str] = Counter()
        for payment_id in workload.answers:
            for event in self.watcher.answers(payment_id):
                counts[f"{event.type} {event.code or ''}".strip()] += 1
        return counts

    def verify(self) -> LedgerReport:
        return verify(self.kafka, self.topics, self.serde)

    def logs(self) -> str:
        """The end of every worker's log, for error messages."""
        return "".join(
            f"\n--- {w.name} (alive={w.alive}):\n{tail(w.log_file, lines=LOG_TAIL_LINES)}"
            for w in [*self.workers.workers, *self.sinks.workers]
        )


def child_env(settings: Settings, *, log_level: str) -> dict[str, str]:
    """The settings a child process of the platform (worker, sink, API) must share.

    The local broker's platform password is not among them: a child reads it where the
    parent does (``<data_dir>/services/kafka``); a configured one is passed on."""
    env = {
        **kafka_env(settings),
        "PAYSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "PAYSTREAM_DATA_DIR": str(settings.data_dir),
        "PAYSTREAM_PARTITIONS": str(settings.partitions),
        "PAYSTREAM_TRANSACTION_TIMEOUT_S": str(settings.transaction_timeout_s),
        "PAYSTREAM_IDEMPOTENCY_RETENTION_S": str(settings.idempotency_retention_s),
        "PAYSTREAM_AMOUNT_MAX_MINOR": str(settings.amount_max_minor),
        "PAYSTREAM_WORKER_LOG_LEVEL": log_level,
    }
    if settings.schema_registry_url:
        env["PAYSTREAM_SCHEMA_REGISTRY_URL"] = settings.schema_registry_url
    return env


def kafka_env(settings: Settings) -> dict[str, str]:
    """The environment under which a child's ``Settings().kafka`` is ``settings.kafka``."""
    env = {
        "PAYSTREAM_KAFKA_SECURITY": settings.kafka_security,
        "PAYSTREAM_KAFKA_USERNAME": settings.kafka_username,
    }
    if settings.kafka_bootstrap is None:
        env["PAYSTREAM_KAFKA_PORT"] = str(settings.kafka_port)
    else:
        env["PAYSTREAM_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    if settings.kafka_password is not None:
        env["PAYSTREAM_KAFKA_PASSWORD"] = settings.kafka_password.get_secret_value()
    return env


@contextlib.contextmanager
def running(
    settings: Settings,
    *,
    workers: int,
    log_dir: Path,
    log_level: str = "warn",
    supervised: bool = False,
    sinks: int = 0,
) -> Iterator[Platform]:
    """Topics created, ``workers`` worker processes started; all stopped on exit.

    ``supervised``: each worker runs under ``paystream worker`` (see WorkerGroup).
    ``sinks``: copies of ``paystream sink postgres`` (settings' Postgres, or the
    embedded one ``services up`` started).
    """
    kafka = settings.kafka
    topics = Topics.from_settings(settings)
    ensure_topics(kafka, topics)
    serde = AvroSerde(
        registry_from_url(settings.schema_registry_url, settings.data_dir),
        topics=topics.payloads(),
    )
    env = child_env(settings, log_level=log_level)
    publisher = CommandPublisher(kafka=kafka, topic=topics.commands, serde=serde)
    watcher = EventWatcher(
        kafka=kafka, topic=topics.events, serde=serde, partitions=settings.partitions
    )
    group = WorkerGroup(
        count=workers,
        env=env,
        log_dir=log_dir,
        prefix="worker",
        metrics_dir=prepare_metrics_dir(settings.data_dir / "metrics" / "workers"),
        command=supervisor_command if supervised else None,
    )
    postgres_dsn = services.postgres_dsn(settings) if sinks else None
    sink_group = WorkerGroup(
        count=sinks,
        env={**env, "PAYSTREAM_POSTGRES_DSN": postgres_dsn or ""},
        log_dir=log_dir,
        prefix="sink",
        command=sink_command,
    )
    try:
        with group, sink_group:
            group_id = app_id_for(settings)
            if not wait_group_stable(kafka, group_id=group_id, members=workers):
                raise RuntimeError(f"workers did not form a stable group {group_id}")
            yield Platform(
                settings=settings, kafka=kafka, topics=topics, serde=serde, publisher=publisher,
                watcher=watcher, workers=group, sinks=sink_group, postgres_dsn=postgres_dsn,
            )  # fmt: skip
    finally:
        watcher.close()
