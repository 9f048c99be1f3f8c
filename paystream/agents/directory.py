"""Every worker's view of every account: a follower of the ``directory`` topic.

The directory topic is compacted and written (inside the source partition's
transaction) whenever an account opens, freezes, unfreezes or closes. Every
partition of it is read read_committed into a dict, so the debit step sees
only committed facts about any account (a global store, in Kafka Streams'
words).

``start()`` restores the directory to its end before it returns, as Kafka
Streams does for a global store before processing: the end is each
partition's high watermark (read_uncommitted, so it includes transactions
still open), and the read_committed position only passes an open transaction
once it has ended, so the restore waits for them. A background thread then
follows the topic from where the restore stopped.

A batch reads the directory inside ``frozen()``: the follower applies nothing
meanwhile, and the position it gives (per partition, the offset after the last
record applied) goes into the batch's manifests, so replay can rebuild exactly
the directory each batch saw.

A record that is not a directory entry (a tombstone, bytes that do not decode,
an entry under another account's key) is skipped, counted in ``skipped`` by
reason and logged: client-reachable bytes on a topic must not stop every
worker (:mod:`paystream.tables.directory`, which replay applies the same way).
Kafka errors while following stay fatal: a directory that silently stops
following lies.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Final, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from paystream.agents import failfast, metrics
from paystream.ledger import DirectoryEntry
from paystream.settings import KafkaConnection
from paystream.tables import directory as directory_records
from paystream.tables.directory import SKIP_REASONS, SkipReason, classify
from paystream.topology.reader import drain

__all__ = [
    "SKIP_REASONS",
    "Directory",
    "DirectoryFollower",
    "DirectoryPosition",
    "DirectoryRestoreError",
    "FixedDirectory",
    "SkipReason",
    "classify",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

POLL_TIMEOUT_S = 0.05
POLL_BATCH_MAX = 10_000
METADATA_TIMEOUT_S = 30.0
WATERMARK_TIMEOUT_S = 10.0
KAFKA_TRIES_MAX = 5
"""Tries of a metadata or watermark request that fails transiently."""
KAFKA_BACKOFF_S = 0.25
"""First pause between tries, doubled each time (0.25 + 0.5 + 1 + 2 s at most)."""
_TRANSIENT: Final = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)
RESTORE_TIMEOUT_S = 120.0
"""How long the restore may go without reading a record before it gives up."""

DirectoryPosition = tuple[tuple[int, int], ...]
"""(directory partition, next offset) for every partition, in partition order."""


class DirectoryRestoreError(RuntimeError):
    """The directory topic could not be read to its end in time."""


def _retrying(ask: Callable[[], T], *, what: str) -> T:
    """``ask()``, asked again (backed off, bounded) while the error is transient."""
    for attempt in range(KAFKA_TRIES_MAX - 1):
        try:
            return ask()
        except KafkaException as error:
            if not _transient(error):
                raise
            logger.warning("%s: %s; asking again", what, error)
            time.sleep(KAFKA_BACKOFF_S * 2**attempt)
    return ask()  # the last try: its error goes to the caller


def _transient(error: KafkaException) -> bool:
    """A retriable error, or a topic or leader not known yet (new topic, restarted broker)."""
    kafka_error = error.args[0]
    return isinstance(kafka_error, KafkaError) and (
        kafka_error.retriable() or kafka_error.code() in _TRANSIENT
    )


def _high_watermark(consumer: Consumer, tp: TopicPartition) -> int:
    _low, high = consumer.get_watermark_offsets(tp, timeout=WATERMARK_TIMEOUT_S, cached=False)
    return int(high)


class DirectoryFollower(Mapping[str, DirectoryEntry]):
    """account id -> its latest committed entry, restored by ``start()`` then followed.

    After ``start()``: ``restored_records`` (records read by the restore,
    skipped ones included) and ``restore_seconds``. ``skipped`` counts the
    records skipped so far, by reason, restore and following together.
    """

    def __init__(
        self, *, kafka: KafkaConnection, topic: str, restore_timeout_s: float = RESTORE_TIMEOUT_S
    ) -> None:
        self._topic = topic
        self._kafka = kafka
        self._restore_timeout_s = restore_timeout_s
        self._entries: dict[str, DirectoryEntry] = {}
        self._positions: dict[int, int] = {}
        self._lock = threading.Lock()
        """Held while a record is applied and while a batch reads (``frozen``)."""
        self._stop = threading.Event()
        self._consumer = Consumer(
            kafka.config()
            | {
                "group.id": f"{topic}.follower",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        self._thread = threading.Thread(target=self._run, name="directory", daemon=True)
        self._closed = False
        self.skipped: Counter[SkipReason] = Counter()
        self.restored_records: int = 0
        self.restore_seconds: float = 0.0

    def start(self) -> None:
        """Restore every partition to its end (open transactions included), then follow."""
        started = time.monotonic()
        partitions = self._partitions()
        self._positions = dict.fromkeys(partitions, 0)
        ends = self._high_watermarks(partitions)
        self._consumer.assign(
            [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in partitions]
        )
        try:
            for message in drain(self._consumer, ends, stall_s=self._restore_timeout_s):
                self._apply(message)
                self.restored_records += 1
        except TimeoutError as error:
            raise DirectoryRestoreError(
                f"directory {self._topic!r} not read to its end "
                f"(nothing read for {self._restore_timeout_s} s): {error}"
            ) from error
        self.restore_seconds = time.monotonic() - started
        logger.info(
            "directory %s restored: %d records, %d accounts, %.3f s, skipped %s",
            self._topic,
            self.restored_records,
            len(self._entries),
            self.restore_seconds,
            dict(self.skipped),
        )
        self._thread.start()

    @contextmanager
    def frozen(self) -> Iterator[DirectoryPosition]:
        """The directory held still for a batch; yields the position it stands at."""
        with self._lock:
            yield tuple(sorted(self._positions.items()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def _partitions(self) -> list[int]:
        def ask() -> list[int]:
            metadata = self._consumer.list_topics(self._topic, timeout=METADATA_TIMEOUT_S)
            topic = metadata.topics[self._topic]
            if topic.error is not None:
                raise KafkaException(topic.error)
            return sorted(topic.partitions)

        return _retrying(ask, what=f"partitions of {self._topic}")

    def _high_watermarks(self, partitions: list[int]) -> dict[tuple[str, int], int]:
        """Each partition's end including open transactions (read_uncommitted)."""
        watermarks = Consumer(
            self._kafka.config()
            | {
                "group.id": f"{self._topic}.follower",
                "isolation.level": "read_uncommitted",
            }
        )
        try:
            return {
                (self._topic, p): _retrying(
                    functools.partial(_high_watermark, watermarks, TopicPartition(self._topic, p)),
                    what=f"high watermark of {self._topic}[{p}]",
                )
                for p in partitions
            }
        finally:
            watermarks.close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                messages = self._consumer.consume(POLL_BATCH_MAX, POLL_TIMEOUT_S)
                with self._lock:
                    for message in messages:
                        error = message.error()
                        if error is None:
                            self._apply(message)
                        elif error.code() != KafkaError._PARTITION_EOF:
                            raise KafkaException(error)
        except Exception as error:  # a directory that stops following is a silent liar
            failfast.crash(f"directory follower failed: {error!r}")

    def _apply(self, message: Message) -> None:
        partition, offset = message.partition(), message.offset()
        if partition is not None and offset is not None:
            self._positions[partition] = offset + 1
        skipped = directory_records.apply(self._entries, message.key(), message.value())
        if skipped is None:
            return
        self.skipped[skipped] += 1
        metrics.DIRECTORY_SKIPPED.labels(reason=skipped).inc()
        logger.warning(
            "directory %s: skipped a record (%s) at partition %s offset %s, key %r",
            self._topic,
            skipped,
            message.partition(),
            message.offset(),
            message.key(),
        )

    def __getitem__(self, account_id: str) -> DirectoryEntry:
        return self._entries[account_id]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


class FixedDirectory(Mapping[str, DirectoryEntry]):
    """A directory that never moves (tests, benchmarks): ``frozen()`` yields no position."""

    def __init__(self, entries: Mapping[str, DirectoryEntry] | None = None) -> None:
        self._entries = dict(entries or {})

    @contextmanager
    def frozen(self) -> Iterator[DirectoryPosition]:
        yield ()

    def __getitem__(self, account_id: str) -> DirectoryEntry:
        return self._entries[account_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


Directory = DirectoryFollower | FixedDirectory
"""What a batch processor reads accounts' directory entries from."""
