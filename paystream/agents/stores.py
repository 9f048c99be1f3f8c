"""The worker's local state: one RocksDB (rocksdict) per table and partition.

A store is a cache of its compacted changelog topic and never runs ahead of
it: the worker applies a batch's writes only after the Kafka transaction that
carries the same bytes as changelog records has committed. So an aborted
batch, a fenced worker or a crash leaves nothing to undo; a partition this
worker gains is restored from its changelog, read_committed.

A restore reads read_committed up to the high watermark seen when it starts,
which a read_committed position only passes once every transaction before
it has ended: it waits for them. Otherwise a previous owner's transaction
that is committed but whose markers are not yet written would be missing
from the restored state, while its input offsets (fetched with
``require_stable``) already count as processed.

That high watermark must be taken after every transaction that carries the
partition's input offsets has ended, so a gained partition's restore starts
only once its committed offsets are stable (:func:`wait_for_stable_offsets`).
Otherwise a zombie (a previous owner past its session timeout, inside its
transaction timeout) that added a batch's offsets to its transaction before
its changelog records reached the broker commits that batch after the
watermark: the new owner starts after the batch with a store that lacks its
writes (issue 13, "The zombie restore race";
tests/integration/test_zombie_restore.py).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from rocksdict import Options, Rdict

from paystream.agents import metrics
from paystream.tables import codecs
from paystream.topology.reader import drain

K = TypeVar("K")
V = TypeVar("V")

RESTORE_TIMEOUT_S = 120.0
"""How long a restore may go without a record before it gives up."""
WATERMARK_TIMEOUT_S = 10.0
STABLE_OFFSETS_TIMEOUT_S = 60.0
"""How long a gained partition's committed offsets may stay unstable. A
previous owner's transaction ends within its ``transaction.timeout.ms`` (the
workers' is 30 s), when its coordinator aborts it; twice that, then give up."""


class RestoreError(RuntimeError):
    """A gained partition could not be restored in time.

    Its committed offsets stayed unstable, or its changelog was not read to its end.
    """


def wait_for_stable_offsets(
    consumer: Consumer,
    partitions: Sequence[TopicPartition],
    *,
    timeout_s: float = STABLE_OFFSETS_TIMEOUT_S,
) -> None:
    """Return once no open transaction holds offsets of ``partitions`` for the group.

    Call it before restoring the stores of partitions this member gains, with
    the member's own ``isolation.level=read_committed`` consumer: librdkafka
    fetches its committed offsets with ``require_stable`` and retries
    ``UNSTABLE_OFFSET_COMMIT`` until ``timeout_s``. A transaction that has
    added offsets ends by committing (its changelog records are on the broker
    by then: the producer flushes before it commits) or aborting. Once the
    group has a new generation, a zombie can add no more offsets (KIP-447).
    """
    try:
        committed = consumer.committed(list(partitions), timeout=timeout_s)
    except KafkaException as error:
        if error.args[0].code() != KafkaError._TIMED_OUT:
            raise
        raise RestoreError(
            f"committed offsets of {_names(partitions)} not stable within {timeout_s} s "
            f"(a previous owner's transaction still open, or no group coordinator): {error}"
        ) from error
    failed = [tp for tp in committed if tp.error is not None]
    if failed:
        raise RestoreError(f"committed offsets not fetched: {[str(tp) for tp in failed]}")


def _names(partitions: Sequence[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)


@dataclass(frozen=True, slots=True)
class TableWrite:
    """One key's new bytes in one table partition (and its changelog record)."""

    table: str
    partition: int
    key: bytes
    value: bytes | None
    """``None`` deletes the row (a tombstone on the changelog)."""


class TableView(Mapping[K, V], Generic[K, V]):
    """A read-only typed mapping over one store (raw bytes in, values out)."""

    def __init__(
        self,
        get_raw: Callable[[bytes], bytes | None],
        *,
        encode_key: Callable[[K], bytes],
        decode_value: Callable[[bytes], V],
    ) -> None:
        self._get_raw = get_raw
        self._encode_key = encode_key
        self._decode_value = decode_value

    def __getitem__(self, key: K) -> V:
        raw = self._get_raw(self._encode_key(key))
        if raw is None:
            raise KeyError(key)
        return self._decode_value(raw)

    def get(self, key: K, default: Any = None) -> Any:
        raw = self._get_raw(self._encode_key(key))
        return default if raw is None else self._decode_value(raw)

    def __iter__(self) -> Iterator[K]:
        raise TypeError("table views are for lookups; iterate the changelog instead")

    def __len__(self) -> int:
        raise TypeError("table views are for lookups; iterate the changelog instead")


class Stores:
    """Every table partition this worker holds, keyed by (table, partition)."""

    def __init__(
        self, *, directory: Path, bootstrap: str, changelogs: Mapping[str, str], client_id: str
    ) -> None:
        """``changelogs``: table name -> its changelog topic (read, never committed)."""
        self._directory = directory
        self._changelogs = dict(changelogs)
        self._dbs: dict[tuple[str, int], Rdict] = {}
        common = {"bootstrap.servers": bootstrap, "group.id": f"{client_id}.restore"}
        self._reader = Consumer(
            {
                **common,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        self._watermarks = Consumer({**common, "isolation.level": "read_uncommitted"})

    @property
    def partitions(self) -> set[int]:
        return {partition for _table, partition in self._dbs}

    def get(self, table: str, partition: int) -> Callable[[bytes], bytes | None]:
        """The raw lookup of one table partition."""
        db = self._dbs[(table, partition)]
        get: Callable[[bytes], bytes | None] = db.get
        return get

    def apply(self, writes: Iterable[TableWrite]) -> None:
        """Apply writes whose changelog records have committed (``value=None`` deletes)."""
        for write in writes:
            _put(self._dbs[(write.table, write.partition)], write.key, write.value)

    def expired(
        self, table: str, partition: int, clock_ms: int, *, limit: int
    ) -> Iterator[tuple[bytes, int, bytes]]:
        """Up to ``limit`` expiry index rows due by ``clock_ms``: (row, expires_at_ms, key)."""
        db = self._dbs[(table, partition)]
        for count, row in enumerate(db.keys(from_key=codecs.EXPIRY_INDEX_PREFIX)):
            if (
                count >= limit
                or not isinstance(row, bytes)
                or not row.startswith(codecs.EXPIRY_INDEX_PREFIX)
            ):
                return
            expires_at_ms, key = codecs.decode_expiry_index_key(row)
            if expires_at_ms > clock_ms:
                return
            yield row, expires_at_ms, key

    def hold(self, partitions: set[int]) -> None:
        """Hold exactly ``partitions``: drop the others, restore the new ones."""
        for partition in self.partitions - partitions:
            self.drop(partition)
        new = sorted(partitions - self.partitions)
        if new:
            self._restore(new)

    def drop(self, partition: int) -> None:
        for table in self._changelogs:
            db = self._dbs.pop((table, partition), None)
            if db is not None:
                db.close()
            shutil.rmtree(self._path(table, partition), ignore_errors=True)

    def drop_all(self) -> None:
        for partition in sorted(self.partitions):
            self.drop(partition)

    def close(self) -> None:
        self.drop_all()
        self._reader.close()
        self._watermarks.close()

    def _path(self, table: str, partition: int) -> Path:
        return self._directory / f"{table}-{partition}"

    def _restore(self, partitions: list[int]) -> None:
        owners: dict[tuple[str, int], Rdict] = {}
        for table in self._changelogs:
            for partition in partitions:
                path = self._path(table, partition)
                shutil.rmtree(path, ignore_errors=True)
                path.parent.mkdir(parents=True, exist_ok=True)
                owners[(table, partition)] = Rdict(str(path), Options(raw_mode=True))
        by_topic = {topic: table for table, topic in self._changelogs.items()}
        tps = [TopicPartition(topic, p) for topic in by_topic for p in partitions]
        ends = self._high_watermarks(tps)
        self._reader.assign(
            [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in tps]
        )
        started, records = time.monotonic(), 0
        try:
            for message in drain(self._reader, ends, stall_s=RESTORE_TIMEOUT_S):
                topic, p, key = message.topic(), message.partition(), message.key()
                if topic and p is not None and key is not None:
                    _put(owners[(by_topic[topic], p)], key, message.value())
                    records += 1
        except TimeoutError as error:
            raise RestoreError(f"changelogs not read to their end: {error}") from error
        finally:
            self._reader.unassign()
        self._dbs.update(owners)
        metrics.RESTORE_SECONDS.observe(time.monotonic() - started)
        metrics.RESTORED_RECORDS.inc(records)

    def _high_watermarks(self, tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """Each partition's end including pending transactions (read_uncommitted)."""
        ends: dict[tuple[str, int], int] = {}
        for tp in tps:
            _low, high = self._watermarks.get_watermark_offsets(
                tp, timeout=WATERMARK_TIMEOUT_S, cached=False
            )
            ends[(tp.topic, tp.partition)] = high
        return ends


def _put(db: Rdict, key: bytes, value: bytes | None) -> None:
    """Write or (for a tombstone) delete one row."""
    if value is None:
        db.delete(key)
    else:
        db[key] = value
