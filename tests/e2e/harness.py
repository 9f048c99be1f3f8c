"""A running paystream on the session's real Kafka: topics, workers, traffic, checks."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from paystream.agents.supervisor import WorkerGroup
from paystream.audit.verify import LedgerReport, verify
from paystream.ledger import Transfer
from paystream.services.process import tail
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.publisher import CommandPublisher
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, ensure_topics
from paystream.topology.watch import EventWatcher
from paystream.workload import Workload

SETUP_TIMEOUT_S = 180.0
TRAFFIC_TIMEOUT_S = 600.0


@dataclass
class Platform:
    settings: Settings
    topics: Topics
    serde: AvroSerde
    publisher: CommandPublisher
    watcher: EventWatcher
    workers: WorkerGroup

    @property
    def bootstrap(self) -> str:
        assert self.settings.kafka_bootstrap is not None
        return self.settings.kafka_bootstrap

    def run_setup(self, workload: Workload) -> None:
        self.publisher.publish_all(workload.setup)
        self.publisher.flush()
        left = self.watcher.wait([c.command_id for c in workload.setup], timeout_s=SETUP_TIMEOUT_S)
        assert not left, f"{len(left)} setup commands without a terminal event{self.logs()}"

    def publish_paced(self, workload: Workload, *, per_second: int) -> threading.Thread:
        """Publish the traffic at about ``per_second`` in a background thread."""

        def run() -> None:
            chunk = max(1, per_second // 10)
            for start in range(0, len(workload.traffic), chunk):
                self.publisher.publish_all(workload.traffic[start : start + chunk])
                time.sleep(0.1)
            self.publisher.flush()

        thread = threading.Thread(target=run, name="publisher")
        thread.start()
        return thread

    def logs(self) -> str:
        """The end of every worker's log, for assertion messages."""
        return "".join(
            f"\n--- {w.name} (alive={w.alive}):\n{tail(w.log_file, lines=15)}"
            for w in self.workers.workers
        )

    def verify(self) -> LedgerReport:
        return verify(self.bootstrap, self.topics, self.serde)


@contextlib.contextmanager
def platform(base: Settings, tmp_path: Path, *, workers: int) -> Iterator[Platform]:
    settings = base.model_copy(
        update={
            "topic_prefix": f"{base.topic_prefix}-{uuid.uuid4().hex[:6]}",
            "data_dir": tmp_path / "data",
        }
    )
    assert settings.kafka_bootstrap is not None
    topics = Topics.from_settings(settings)
    ensure_topics(settings.kafka_bootstrap, topics)
    serde = AvroSerde(registry_from_url(None, settings.data_dir), topic_names=topics.names())
    env = {
        "PAYSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "PAYSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "PAYSTREAM_DATA_DIR": str(settings.data_dir),
        "PAYSTREAM_PARTITIONS": str(settings.partitions),
        "PAYSTREAM_WORKER_LOG_LEVEL": "info",
    }
    publisher = CommandPublisher(
        bootstrap=settings.kafka_bootstrap, topic=topics.commands, serde=serde
    )
    watcher = EventWatcher(
        bootstrap=settings.kafka_bootstrap, topic=topics.events, serde=serde,
        partitions=settings.partitions,
    )  # fmt: skip
    group = WorkerGroup(count=workers, env=env, log_dir=tmp_path / "logs", prefix="worker")
    with group:
        try:
            yield Platform(settings, topics, serde, publisher, watcher, group)
        finally:
            watcher.close()


def outcome_counts(platform: Platform, workload: Workload) -> Counter[str]:
    counts: Counter[str] = Counter()
    for command in workload.traffic:
        if isinstance(command, Transfer):
            event = platform.watcher.terminal(command.command_id)
            counts[event.type if event else "missing"] += 1
    return counts


def assert_sagas_end_once(platform: Platform, workload: Workload) -> None:
    """Every Debited transfer has exactly one of Completed / Reversed, nothing else."""
    for payment_id in workload.transfer_ids:
        types = [e.type for e in platform.watcher.events.get(payment_id, [])]
        if "Debited" in types:
            endings = [t for t in types if t in ("Completed", "Reversed")]
            assert len(endings) == 1, f"{payment_id}: {types}"
        else:
            assert len(types) == 1 and types[0] in ("Rejected", "Duplicate"), (
                f"{payment_id}: {types}"
            )


def assert_ledger_exactly_once(platform: Platform) -> LedgerReport:
    report = platform.verify()
    assert report.duplicate_entry_ids == (), report.duplicate_entry_ids[:5]
    assert report.unbalanced_entry_ids == ()
    assert report.balance_mismatches == (), report.balance_mismatches[:5]
    assert all(total == 0 for total in report.sum_by_currency.values()), report.sum_by_currency
    assert all(total == 0 for total in report.in_transit_by_currency.values())
    duplicated_events = {e: n for e, n in platform.watcher.copies.items() if n > 1}
    assert duplicated_events == {}, list(duplicated_events)[:5]
    return report
