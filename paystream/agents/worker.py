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
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from paystream.agents import failfast, metrics
from paystream.agents.directory import DirectoryFollower
from paystream.agents.processor import INDEXES, Batch, BatchProcessor, changelogs
from paystream.agents.stores import RESTORE_SLICE_S, RestoreError, Stores, offsets_stable
from paystream.agents.watchdog import Watchdog
from paystream.ledger import INPUTS_PER_BATCH_MAX, Event, JournalEntry, ensure
from paystream.runtime import fewer_collections
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.registry import registry_from_url
from paystream.topology.shell import Record, source
from paystream.topology.topics import Topics, app_id_for, ensure_topics

MESSAGES_PER_BATCH_MAX = 2_000
"""Most messages one batch (one transaction) consumes; within the core's limit."""
BATCH_WINDOW_S = 0.01
COMMIT_RETRIES_MAX = 5
SESSION_TIMEOUT_S = 10.0
ABORT_CHECK_INTERVAL_MAX_S = 10.0
"""Kafka's default ``transaction.abort.timed.out.transaction.cleanup.interval.ms``."""
CHECKPOINT_INTERVAL_S = 10.0
"""Stores are checkpointed this often while running: a SIGKILL costs a catch-up over the
changelog records written since (a clean stop or a revoke checkpoints at once)."""
LOG_LEVELS = ("crit", "error", "warn", "info", "debug")
WORKER_LOG_LEVEL = "warn"

logger = logging.getLogger("paystream.worker")
ensure(MESSAGES_PER_BATCH_MAX <= INPUTS_PER_BATCH_MAX, "worker batches exceed the core's limit")


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Every bound of the batch loop, from ``PAYSTREAM_TRANSACTION_TIMEOUT_S``.

    The coordinator aborts a transaction open for ``transaction_s``: a worker
    killed mid-batch (and not restarted, which would fence it at once) holds
    its partitions' committed offsets unstable, and so their new owner's
    catch-up, until then (docs/benchmarks.md, "Failover").
    """

    transaction_s: float

    @property
    def call_s(self) -> float:
        """Bound given to each transactional call (librdkafka's default is to wait for ever)."""
        return self.transaction_s

    @property
    def batch_deadline_s(self) -> float:
        """A batch's transaction still open after this is stuck: the watchdog ends the worker."""
        return 4 * self.transaction_s

    @property
    def stable_offsets_s(self) -> float:
        """How long a gained partition's committed offsets may stay unstable: a previous
        owner's transaction is aborted at most the transaction timeout after it began, at
        the coordinator's next check for timed-out transactions (every 10 s by default)."""
        return 2 * self.transaction_s + ABORT_CHECK_INTERVAL_MAX_S

    @property
    def poll_interval_max_s(self) -> float:
        """``max.poll.interval.ms``: the loop consumes between batches (each ends within the
        transaction timeout, or aborts) and between catch-up slices of RESTORE_SLICE_S."""
        return max(2 * self.transaction_s, 2 * SESSION_TIMEOUT_S)

    @classmethod
    def from_settings(cls, settings: Settings) -> Timeouts:
        return cls(transaction_s=settings.transaction_timeout_s)


def member_id_for(settings: Settings, name: str) -> str:
    """The client id of worker ``name``'s group member (and its transactional id)."""
    return f"{app_id_for(settings)}-{name}"


def worker_dir(settings: Settings, name: str) -> Path:
    return settings.data_dir / "workers" / name


def consumer_config(settings: Settings, name: str) -> dict[str, Any]:
    return settings.kafka.config() | {
        "group.id": app_id_for(settings),
        "client.id": member_id_for(settings, name),  # names the member in group descriptions
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",  # also: offsets fetched with require_stable
        "auto.offset.reset": "earliest",
        # range gives every member the same partition numbers of both topics:
        # commands-p and legs-p share the table partition p (co-partitioning).
        "partition.assignment.strategy": "range",
        "session.timeout.ms": int(SESSION_TIMEOUT_S * 1000),
        "heartbeat.interval.ms": 1_000,
        "max.poll.interval.ms": int(Timeouts.from_settings(settings).poll_interval_max_s * 1000),
    }


def producer_config(settings: Settings, name: str) -> dict[str, Any]:
    return settings.kafka.config() | {
        # One id per worker name: a restarted worker fences its previous life
        # and aborts the transaction it left open.
        "transactional.id": member_id_for(settings, name),
        "transaction.timeout.ms": int(settings.transaction_timeout_s * 1000),
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
        timeouts: Timeouts,
    ) -> None:
        self._producer = producer
        self._timeouts = timeouts
        self._consumer = consumer
        self._processor = processor
        self._stores = stores
        self._watchdog = watchdog
        self._tables = {topic: table for table, topic in processor.changelogs.items()}
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
            else self._watchdog.guard(
                "a batch transaction", timeout_s=self._timeouts.batch_deadline_s
            )
        )
        with guard:
            offsets = self._transact(batch, messages)
        if offsets is None:
            return False
        self._stores.apply(batch.writes, offsets)
        _count(batch, messages, self._processor.commands_topic)
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        return True

    def _transact(
        self, batch: Batch, messages: Sequence[Message]
    ) -> dict[tuple[str, int], int] | None:
        """Send the batch and its offsets in one transaction; None if it was aborted.

        Else (table, partition) -> the changelog offset after the batch's last
        record on it: what the store reflects once the batch's writes are applied.
        """
        delivered: dict[tuple[str, int], int] = {}
        self._producer.begin_transaction()
        try:
            self._send(batch.records, delivered)
            self._producer.send_offsets_to_transaction(
                _next_offsets(messages),
                self._consumer.consumer_group_metadata(),
                self._timeouts.call_s,
            )
            self._commit()
        except KafkaException as error:
            if not error.args[0].txn_requires_abort():
                raise
            logger.warning("batch aborted, consuming it again: %s", error.args[0])
            self.aborted += 1
            metrics.BATCHES.labels(outcome="aborted").inc()
            self._producer.abort_transaction(self._timeouts.call_s)
            self._rewind(messages)
            return None
        return self._changelog_offsets(batch.records, delivered)

    def _send(self, records: Sequence[Record], delivered: dict[tuple[str, int], int]) -> None:
        """Produce ``records``; the last one on each changelog partition reports its offset."""

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if error is None and topic is not None and partition is not None and offset is not None:
                delivered[(topic, partition)] = offset

        last = {
            (record.topic, record.partition): index
            for index, record in enumerate(records)
            if record.topic in self._tables
        }
        reported = set(last.values())
        for index, record in enumerate(records):
            self._produce(record, on_delivery if index in reported else None)

    def _changelog_offsets(
        self, records: Sequence[Record], delivered: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], int]:
        """After a commit: (table, partition) -> the offset after its last record."""
        expected = {(r.topic, r.partition) for r in records if r.topic in self._tables}
        if not expected <= delivered.keys():
            self._producer.poll(0)  # the commit flushed: every report is queued or served
        if not expected <= delivered.keys():
            self._producer.flush(self._timeouts.call_s)
        ensure(expected <= delivered.keys(), "committed changelog records with no delivery report")
        return {
            (self._tables[topic], partition): delivered[(topic, partition)] + 1
            for topic, partition in expected
            if partition is not None
        }

    def _produce(
        self, record: Record, on_delivery: Callable[[KafkaError | None, Message], None] | None
    ) -> None:
        kwargs: dict[str, Any] = {"key": record.key, "value": record.value}
        if record.headers is not None:
            kwargs["headers"] = record.headers
        if record.partition is not None:
            kwargs["partition"] = record.partition
        if on_delivery is not None:
            kwargs["on_delivery"] = on_delivery
        try:
            self._producer.produce(record.topic, **kwargs)
        except BufferError:  # the local queue is full: let deliveries drain, then retry
            self._producer.poll(1.0)
            self._producer.produce(record.topic, **kwargs)

    def _commit(self) -> None:
        for attempt in range(COMMIT_RETRIES_MAX):
            try:
                self._producer.commit_transaction(self._timeouts.call_s)
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


@dataclass(slots=True)
class _Gained:
    """An assignment whose stores are catching up; its partitions stay paused until then."""

    sources: list[TopicPartition]
    deadline_s: float
    """Monotonic time by which its committed offsets must be stable."""
    stable: bool = False
    """Its committed offsets are stable: the catch-up has begun."""


class LedgerWorker:
    """One consumer-group member: catch-up of gained stores, then one transaction per batch.

    Rebalance callbacks only assign (paused) and release: the stores of gained
    partitions catch up in slices from the poll loop, so the member keeps
    polling, rejoins a rebalance at once, and processes the partitions it
    already has meanwhile.
    """

    def __init__(self, settings: Settings, *, name: str) -> None:
        self._topics = Topics.from_settings(settings)
        self._timeouts = Timeouts.from_settings(settings)
        kafka = settings.kafka
        ensure_topics(kafka, self._topics)
        serde = AvroSerde(
            registry_from_url(settings.schema_registry_url, settings.data_dir),
            topics=self._topics.payloads(),
        )
        self._directory = DirectoryFollower(kafka=kafka, topic=self._topics.directory)
        self._stores = Stores(
            directory=worker_dir(settings, name),
            kafka=kafka,
            changelogs=changelogs(self._topics),
            indexes=INDEXES,
            client_id=f"{app_id_for(settings)}-{name}",
        )
        self._processor = BatchProcessor(
            topics=self._topics,
            serde=serde,
            stores=self._stores,
            directory=self._directory,
            rules=settings.rules,
            worker=member_id_for(settings, name),
        )
        self._consumer = Consumer(consumer_config(settings, name))
        self._producer = Producer(producer_config(settings, name))
        self._watchdog = Watchdog()
        self._transactions = BatchTransactions(
            producer=self._producer,
            consumer=self._consumer,
            processor=self._processor,
            stores=self._stores,
            watchdog=self._watchdog,
            timeouts=self._timeouts,
        )
        self._stopping = False
        self._gained: _Gained | None = None
        self._checkpointed_s = time.monotonic()

    def stop(self) -> None:
        """Finish the batch in hand, then leave the group (from a signal handler)."""
        self._stopping = True

    def run(self) -> None:
        self._watchdog.start()
        self._producer.init_transactions(self._timeouts.call_s)
        self._directory.start()  # restored to its end before anything is consumed
        metrics.RESTORE_SECONDS.labels(stores="directory").observe(self._directory.restore_seconds)
        metrics.RESTORED_RECORDS.labels(store="directory").inc(self._directory.restored_records)
        self._consumer.subscribe(
            source_topics(self._topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not self._stopping:
                self._step()
        finally:
            self._consumer.close()  # revokes (checkpoints) and leaves the group: others take over
            self._stores.close()
            self._directory.stop()
            self._watchdog.stop()

    def _step(self) -> None:
        """One turn of the loop: a catch-up slice, a batch, a checkpoint when due."""
        if self._gained is not None:
            self._catch_up(self._gained)
        messages = self._consume()
        if messages:
            self._transactions.run(messages)
        if time.monotonic() - self._checkpointed_s > CHECKPOINT_INTERVAL_S:
            self._stores.checkpoint()
            self._checkpointed_s = time.monotonic()

    def _catch_up(self, gained: _Gained) -> None:
        """Wait for stable offsets, then read the stores' changelogs, one slice at a time."""
        if not gained.stable:
            if not offsets_stable(self._consumer, gained.sources):
                if time.monotonic() > gained.deadline_s:
                    raise RestoreError(
                        f"committed offsets of {sorted(map(str, gained.sources))} not stable"
                        f" within {self._timeouts.stable_offsets_s} s (a previous owner's"
                        " transaction"
                        " still open, or no group coordinator)"
                    )
                return
            gained.stable = True
            self._stores.begin_catch_up()
        ready = self._stores.catch_up(budget_s=RESTORE_SLICE_S)
        if ready:
            self._consumer.resume([tp for tp in gained.sources if tp.partition in ready])
        if self._stores.caught_up:
            self._gained = None

    def _consume(self) -> list[Message]:
        messages = self._consumer.consume(MESSAGES_PER_BATCH_MAX, BATCH_WINDOW_S)
        for message in messages:
            error = message.error()
            if error is not None:
                raise KafkaException(error)
        return messages

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Paused until their stores caught up (LedgerWorker._catch_up), which begins
        # only once no previous owner's transaction can still commit their offsets.
        held = table_partitions(self._topics, partitions)
        consumer.assign(partitions)
        consumer.pause(partitions)
        self._stores.gain(held)
        self._gained = _Gained(
            sources=list(partitions),
            deadline_s=time.monotonic() + self._timeouts.stable_offsets_s,
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # No transaction is open here (batches commit before the next consume). The
        # stores are checkpointed and closed; kept on disk, a later gain reads the tail.
        self._release(consumer)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Others may have processed these partitions meanwhile: the stores are not
        # ahead of their changelogs (written only after commits), so a checkpoint of
        # them is still exact, and a later gain catches up with the others' writes.
        self._release(consumer)

    def _release(self, consumer: Consumer) -> None:
        self._gained = None
        self._stores.release_all()
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
    worker = LedgerWorker(settings, name=args.name)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal(worker.stop))
    try:
        with fewer_collections():  # the collector took 12 % of a batch's CPU (runtime.py)
            worker.run()
    except Exception as error:  # restart from committed state; nothing half-done survives
        logger.exception("worker failed")
        metrics.INTERNAL_ERRORS.labels(kind=type(error).__name__).inc()
        failfast.crash(f"worker failed: {error!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
