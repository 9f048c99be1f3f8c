"""The ledger worker: one consumer-group member over ``commands`` + ``legs``.

Each batch is one Kafka transaction (exactly-once v2, KIP-447): the worker
consumes a batch, turns it into records and table writes
(:class:`~paystream.agents.processor.BatchProcessor`), sends every record,
adds the batch's input offsets with the group's metadata, and commits. Only
then are the table writes applied to the local stores. The broker fences a
worker whose group generation is stale, so a worker that lost its partitions
in a rebalance cannot commit their offsets; an aborted batch is consumed
again from where it started and left no trace in the stores.

faust-streaming's runtime was used here first, and failed the SIGKILL crash
test: with rebalances it committed offsets of messages it had never handed
to the agent (README, "Why not faust's consumer loop"). librdkafka owns
fetching, positions and the transactional producer instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from paystream.agents import failfast, metrics
from paystream.agents.directory import DirectoryFollower
from paystream.agents.processor import Batch, BatchProcessor, Record, source
from paystream.agents.stores import Stores, wait_for_stable_offsets
from paystream.agents.watchdog import Watchdog
from paystream.ledger import INPUTS_PER_BATCH_MAX, Event, JournalEntry, ensure
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, app_id_for, ensure_topics

MESSAGES_PER_BATCH_MAX = 2_000
"""Most messages one batch (one transaction) consumes; within the core's limit."""
BATCH_WINDOW_S = 0.01
TRANSACTION_TIMEOUT_S = 30.0
TRANSACTION_CALL_TIMEOUT_S = TRANSACTION_TIMEOUT_S
"""Bound given to each transactional call (librdkafka's default is to wait for ever)."""
BATCH_DEADLINE_S = 4 * TRANSACTION_TIMEOUT_S
"""A batch's transaction still open after this is stuck: the watchdog ends the worker."""
COMMIT_RETRIES_MAX = 5
LOG_LEVELS = ("crit", "error", "warn", "info", "debug")
WORKER_LOG_LEVEL = "warn"

logger = logging.getLogger("paystream.worker")
ensure(MESSAGES_PER_BATCH_MAX <= INPUTS_PER_BATCH_MAX, "worker batches exceed the core's limit")


def worker_dir(settings: Settings, name: str) -> Path:
    return settings.data_dir / "workers" / name


def consumer_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap,
        "group.id": app_id_for(settings),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",  # also: offsets fetched with require_stable
        "auto.offset.reset": "earliest",
        # range gives every member the same partition numbers of both topics:
        # commands-p and legs-p share the table partition p (co-partitioning).
        "partition.assignment.strategy": "range",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
    }


def producer_config(settings: Settings, name: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap,
        # One id per worker name: a restarted worker fences its previous life
        # and aborts the transaction it left open.
        "transactional.id": f"{app_id_for(settings)}-{name}",
        "transaction.timeout.ms": int(TRANSACTION_TIMEOUT_S * 1000),
        "partitioner": "murmur2_random",  # what Java clients use for keys
        # librdkafka's default re-bootstrap after its only broker restarts can leave
        # send_offsets_to_transaction waiting for ever on a decommissioned broker handle
        # (seen in tests/e2e/test_broker_restart.py; librdkafka #5511). A process that
        # loses every broker address is restarted instead (watchdog, supervisor).
        "metadata.recovery.strategy": "none",
        "linger.ms": 2,
        "queue.buffering.max.messages": 1_000_000,
    }


def source_topics(topics: Topics) -> list[str]:
    """What the agent consumes, co-partitioned (same keys, same partition count)."""
    return [topics.commands, topics.legs]


class CoPartitioningError(RuntimeError):
    """The group gave this worker different partitions of ``commands`` and ``legs``."""


def table_partitions(topics: Topics, assigned: Sequence[TopicPartition]) -> set[int]:
    """The table partitions an assignment needs: the same numbers of both sources, or an error."""
    by_topic: dict[str, set[int]] = {topic: set() for topic in source_topics(topics)}
    for tp in assigned:
        by_topic[tp.topic].add(tp.partition)
    commands, legs = by_topic[topics.commands], by_topic[topics.legs]
    if commands != legs:
        raise CoPartitioningError(f"commands {sorted(commands)} != legs {sorted(legs)}")
    return commands


class BatchTransactions:
    """One batch, one transaction; the stores change only if it commits."""

    def __init__(
        self,
        *,
        producer: Producer,
        consumer: Consumer,
        processor: BatchProcessor,
        stores: Stores,
        watchdog: Watchdog | None = None,
    ) -> None:
        self._producer = producer
        self._consumer = consumer
        self._processor = processor
        self._stores = stores
        self._watchdog = watchdog
        self.aborted = 0

    def run(self, messages: Sequence[Message]) -> bool:
        """Process and commit ``messages``; False if the transaction was aborted.

        An abortable error (a rebalance fenced this member's generation, a
        record Kafka refused) aborts everything the batch sent and rewinds the
        consumer to the batch's first offsets, so the batch is consumed again
        (by this worker, or by the partition's new owner). Any other error
        propagates: the worker restarts from committed state.
        """
        started = time.monotonic()
        batch = self._processor.process(messages)
        guard = (
            contextlib.nullcontext()
            if self._watchdog is None
            else self._watchdog.guard("a batch transaction", timeout_s=BATCH_DEADLINE_S)
        )
        with guard:
            if not self._transact(batch, messages):
                return False
        self._stores.apply(batch.writes)
        _count(batch, messages, self._processor.commands_topic)
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        return True

    def _transact(self, batch: Batch, messages: Sequence[Message]) -> bool:
        """Send the batch and its offsets in one transaction; False if it was aborted."""
        self._producer.begin_transaction()
        try:
            for record in batch.records:
                self._produce(record)
            self._producer.send_offsets_to_transaction(
                _next_offsets(messages),
                self._consumer.consumer_group_metadata(),
                TRANSACTION_CALL_TIMEOUT_S,
            )
            self._commit()
        except KafkaException as error:
            if not error.args[0].txn_requires_abort():
                raise
            logger.warning("batch aborted, consuming it again: %s", error.args[0])
            self.aborted += 1
            metrics.BATCHES.labels(outcome="aborted").inc()
            self._producer.abort_transaction(TRANSACTION_CALL_TIMEOUT_S)
            self._rewind(messages)
            return False
        return True

    def _produce(self, record: Record) -> None:
        kwargs: dict[str, Any] = {"key": record.key, "value": record.value}
        if record.headers is not None:
            kwargs["headers"] = record.headers
        if record.partition is not None:
            kwargs["partition"] = record.partition
        try:
            self._producer.produce(record.topic, **kwargs)
        except BufferError:  # the local queue is full: let deliveries drain, then retry
            self._producer.poll(1.0)
            self._producer.produce(record.topic, **kwargs)

    def _commit(self) -> None:
        for attempt in range(COMMIT_RETRIES_MAX):
            try:
                self._producer.commit_transaction(TRANSACTION_CALL_TIMEOUT_S)
                return
            except KafkaException as error:
                if not error.args[0].retriable() or attempt == COMMIT_RETRIES_MAX - 1:
                    raise

    def _rewind(self, messages: Sequence[Message]) -> None:
        """Consume the aborted batch again, from each partition's first offset in it."""
        for tp in _first_offsets(messages):
            try:
                self._consumer.seek(tp)
            except KafkaException as error:  # revoked meanwhile: its new owner reads it
                if error.args[0].code() not in (KafkaError._STATE, KafkaError._UNKNOWN_PARTITION):
                    raise


class LedgerWorker:
    def __init__(self, settings: Settings, *, name: str) -> None:
        self._topics = Topics.from_settings(settings)
        ensure_topics(settings.bootstrap, self._topics)
        serde = AvroSerde(
            registry_from_url(settings.schema_registry_url, settings.data_dir),
            topics=self._topics.payloads(),
        )
        self._directory = DirectoryFollower(
            bootstrap=settings.bootstrap, topic=self._topics.directory
        )
        self._stores = Stores(
            directory=worker_dir(settings, name),
            bootstrap=settings.bootstrap,
            changelogs={
                "balances": self._topics.balances_changelog,
                "idempotency": self._topics.idempotency_changelog,
            },
            client_id=f"{app_id_for(settings)}-{name}",
        )
        self._processor = BatchProcessor(
            topics=self._topics,
            serde=serde,
            stores=self._stores,
            directory=self._directory,
            rules=settings.rules,
        )
        self._consumer = Consumer(consumer_config(settings))
        self._producer = Producer(producer_config(settings, name))
        self._watchdog = Watchdog()
        self._transactions = BatchTransactions(
            producer=self._producer,
            consumer=self._consumer,
            processor=self._processor,
            stores=self._stores,
            watchdog=self._watchdog,
        )
        self._stopping = False

    def stop(self) -> None:
        """Finish the batch in hand, then leave the group (from a signal handler)."""
        self._stopping = True

    def run(self) -> None:
        self._watchdog.start()
        self._producer.init_transactions(TRANSACTION_CALL_TIMEOUT_S)
        self._directory.start()  # restored to its end before anything is consumed
        metrics.RESTORE_SECONDS.observe(self._directory.restore_seconds)
        metrics.RESTORED_RECORDS.inc(self._directory.restored_records)
        self._consumer.subscribe(
            source_topics(self._topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not self._stopping:
                messages = self._consume()
                if messages:
                    self._transactions.run(messages)
        finally:
            self._consumer.close()  # leaves the group: the others take over at once
            self._stores.close()
            self._directory.stop()
            self._watchdog.stop()

    def _consume(self) -> list[Message]:
        messages = self._consumer.consume(MESSAGES_PER_BATCH_MAX, BATCH_WINDOW_S)
        for message in messages:
            error = message.error()
            if error is not None:
                raise KafkaException(error)
        return messages

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        held = table_partitions(self._topics, partitions)
        # A previous owner's open transaction may yet commit these partitions'
        # offsets with changelog records: restore only after it has ended.
        wait_for_stable_offsets(consumer, partitions)
        self._stores.hold(held)
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # No transaction is open here (batches commit before the next consume);
        # stores are kept until the next assignment says which ones go.
        consumer.unassign()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Others may have processed these partitions meanwhile.
        self._stores.drop_all()
        consumer.unassign()


def _count(batch: Batch, messages: Sequence[Message], commands_topic: str) -> None:
    """Metrics of a committed batch."""
    metrics.BATCHES.labels(outcome="committed").inc()
    commands = sum(1 for message in messages if message.topic() == commands_topic)
    metrics.INPUTS.labels(topic="commands").inc(commands)
    metrics.INPUTS.labels(topic="legs").inc(len(messages) - commands)
    for output in batch.outputs:
        if isinstance(output, Event):
            metrics.EVENTS.labels(type=output.type, code=output.code or "").inc()
        elif isinstance(output, JournalEntry):
            metrics.JOURNAL_ENTRIES.inc()
    for reason in batch.dead_letters:
        metrics.DLQ_RECORDS.labels(reason=reason).inc()


def _offset_ranges(messages: Sequence[Message]) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (first, last) offset of the batch's messages."""
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for message in messages:
        topic, partition, offset = source(message)
        first = ranges.get((topic, partition), (offset, offset))[0]
        ranges[(topic, partition)] = (first, offset)
    return ranges


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    return [
        TopicPartition(t, p, last + 1) for (t, p), (_, last) in _offset_ranges(messages).items()
    ]


def _first_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    return [TopicPartition(t, p, first) for (t, p), (first, _) in _offset_ranges(messages).items()]


def clear_local_state(settings: Settings, name: str) -> None:
    """Local stores are caches of the changelogs: every start restores from Kafka."""
    directory = worker_dir(settings, name)
    shutil.rmtree(directory, ignore_errors=True)
    directory.parent.mkdir(parents=True, exist_ok=True)


def _on_signal(stop: Callable[[], None]) -> Callable[[int, FrameType | None], None]:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop()

    return handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paystream-worker")
    parser.add_argument("--name", default="worker-1", help="worker name (own data directory)")
    parser.add_argument("--log-level", default=WORKER_LOG_LEVEL, choices=LOG_LEVELS)
    args = parser.parse_args(argv)
    level = {"crit": "CRITICAL", "warn": "WARNING"}.get(args.log_level, args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    clear_local_state(settings, args.name)
    worker = LedgerWorker(settings, name=args.name)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal(worker.stop))
    try:
        worker.run()
    except Exception as error:  # restart from committed state; nothing half-done survives
        logger.exception("worker failed")
        metrics.INTERNAL_ERRORS.labels(kind=type(error).__name__).inc()
        failfast.crash(f"worker failed: {error!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
