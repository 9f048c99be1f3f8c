"""The worker's local state: one RocksDB (rocksdict) per table and partition.

A store is a cache of its compacted changelog topic and never runs ahead of
it: the worker applies a batch's writes only after the Kafka transaction that
carries the same bytes as changelog records has committed. So an aborted
batch, a fenced worker or a crash leaves nothing to undo.

Stores outlive the process. Each partition's stores sit under
``<directory>/<partition>/`` with a ``.checkpoint`` (:mod:`.checkpoint`): the
changelog offset they reflect, written on release (revoke, clean stop) and
periodically. A partition this worker gains opens its stores and *catches
up*: it reads its changelogs read_committed from the checkpoint's offset (or
from the start, after wiping, when there is no usable checkpoint) up to the
high watermark seen when the catch-up begins. The worker runs the catch-up in
slices from its poll loop, outside the rebalance callback, with the gained
partitions paused (:class:`LedgerWorker`).

A read_committed position only passes the high watermark once every
transaction before it has ended: the catch-up waits for them. And that high
watermark must be taken after every transaction that carries the partition's
input offsets has ended, so a catch-up begins only once the partition's
committed offsets are stable (:func:`offsets_stable`). Otherwise a zombie (a
previous owner past its session timeout, inside its transaction timeout) that
added a batch's offsets to its transaction before its changelog records
reached the broker commits that batch after the watermark: the new owner
starts after the batch with a store that lacks its writes (issue 13, "The
zombie restore race"; tests/integration/test_zombie_restore.py).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

from paystream.agents import checkpoint, metrics
from paystream.agents.checkpoint import ChangelogPosition, ChangelogState, Checkpoint
from paystream.ledger.errors import ensure
from paystream.settings import KafkaConnection
from paystream.tables import codecs

K = TypeVar("K")
V = TypeVar("V")

RESTORE_TIMEOUT_S = 120.0
"""How long a catch-up may go without a record before it gives up."""
RESTORE_SLICE_S = 0.5
"""Longest one catch-up step holds the worker's poll loop (rebalances wait no longer)."""
RESTORE_CONSUME_MAX = 10_000
RESTORE_CONSUME_TIMEOUT_S = 0.1
RESTORE_PROGRESS_LOG_S = 5.0
WATERMARK_TIMEOUT_S = 10.0
TOPIC_IDS_TIMEOUT_S = 10.0
STABLE_CHECK_TIMEOUT_S = RESTORE_SLICE_S
"""How long one check of a gained partition's committed offsets may wait."""

logger = logging.getLogger("paystream.stores")
Clock = Callable[[], int]
TopicIds = Callable[[Sequence[str]], Mapping[str, str]]
"""Changelog topic names -> their topic ids (a recreated topic has a new one)."""
Index = Callable[[bytes, bytes], bytes | None]
"""(key, value) of a row written -> the empty-valued index row it implies in the same store,
or None. Index rows are the store's own: derived as rows are applied, live or restored, and
never on the changelog; deleting a stale one is a TableWrite with no changelog record."""


class RestoreError(RuntimeError):
    """A gained partition could not be restored in time.

    Its committed offsets stayed unstable, or its changelog was not read to its end.
    """


def offsets_stable(
    consumer: Consumer,
    partitions: Sequence[TopicPartition],
    *,
    timeout_s: float = STABLE_CHECK_TIMEOUT_S,
) -> bool:
    """Whether no open transaction holds offsets of ``partitions`` for the group.

    Call it before the stores of partitions this member gains catch up, with
    the member's own ``isolation.level=read_committed`` consumer: librdkafka
    fetches its committed offsets with ``require_stable`` and retries
    ``UNSTABLE_OFFSET_COMMIT`` until ``timeout_s``; False if they are still
    unstable then. A transaction that has added offsets ends by committing
    (its changelog records are on the broker by then: the producer flushes
    before it commits) or aborting. Once the group has a new generation, a
    zombie can add no more offsets (KIP-447).
    """
    try:
        committed = consumer.committed(list(partitions), timeout=timeout_s)
    except KafkaException as error:
        if error.args[0].code() != KafkaError._TIMED_OUT:
            raise
        return False
    failed = [tp for tp in committed if tp.error is not None]
    if failed:
        raise RestoreError(f"committed offsets not fetched: {[str(tp) for tp in failed]}")
    return True


def kafka_topic_ids(kafka: KafkaConnection) -> TopicIds:
    """Look topic ids up with an admin client (created on first use)."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AdminClient

    admins: list[Any] = []

    def lookup(names: Sequence[str]) -> dict[str, str]:
        if not admins:
            admins.append(AdminClient(kafka.config()))
        futures = admins[0].describe_topics(
            TopicCollection(list(names)), request_timeout=TOPIC_IDS_TIMEOUT_S
        )
        return {
            name: str(future.result(timeout=TOPIC_IDS_TIMEOUT_S).topic_id)
            for name, future in futures.items()
        }

    return lookup


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)  # not frozen, as shell.Record: its constructor is 9x cheaper
class TableWrite:
    """One key's new bytes in one table partition (and its changelog record, unless the key
    is an index row: see :data:`Index`)."""

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


@dataclass(slots=True)
class _Held:
    """The stores of one partition this worker holds."""

    partition: int
    dbs: dict[str, Rdict]
    """table -> its store."""
    positions: dict[str, ChangelogPosition]
    """table -> the changelog offset its store reflects (every committed record before it)."""
    ready: bool = False
    """Caught up with its changelogs: the worker may process the partition."""


@dataclass(slots=True)
class _CatchUp:
    """Gained partitions reading their changelogs' tails."""

    ends: dict[tuple[str, int], int]
    """(changelog, partition) -> the high watermark to reach."""
    pending: set[tuple[str, int]]
    total: int
    """Changelog offsets to read in all, for progress."""
    started_s: float = field(default_factory=time.monotonic)
    progressed_s: float = field(default_factory=time.monotonic)
    logged_s: float = field(default_factory=time.monotonic)
    records: Counter[str] = field(default_factory=Counter)
    """Records applied, per table."""


class Stores:
    """Every table partition this worker holds, keyed by (table, partition).

    A gained partition (:meth:`gain`) is usable once its catch-up
    (:meth:`begin_catch_up`, then :meth:`catch_up` until it reports the
    partition ready) has read its changelogs to their ends; :meth:`hold` does
    all three, blocking. :meth:`release` checkpoints and closes.
    """

    def __init__(
        self,
        *,
        directory: Path,
        kafka: KafkaConnection,
        changelogs: Mapping[str, str],
        client_id: str,
        indexes: Mapping[str, Index] | None = None,
        topic_ids: TopicIds | None = None,
        clock_ms: Clock = wall_clock_ms,
    ) -> None:
        """``changelogs``: table name -> its changelog topic (read, never committed).
        ``indexes``: table name -> the index row a row implies (see :data:`Index`)."""
        self._directory = directory
        self._changelogs = dict(changelogs)
        self._indexes = dict(indexes or {})
        self._tables = {topic: table for table, topic in self._changelogs.items()}
        self._topic_ids = kafka_topic_ids(kafka) if topic_ids is None else topic_ids
        self._clock_ms = clock_ms
        self._held: dict[int, _Held] = {}
        self._catch_up: _CatchUp | None = None
        common = kafka.config() | {"group.id": f"{client_id}.restore"}
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
        return set(self._held)

    @property
    def caught_up(self) -> bool:
        return all(held.ready for held in self._held.values())

    def position(self, table: str, partition: int) -> int:
        """The changelog offset the store reflects: every committed record before it."""
        return self._held[partition].positions[table].offset

    def get(self, table: str, partition: int) -> Callable[[bytes], bytes | None]:
        """The raw lookup of one table partition (caught up)."""
        held = self._held[partition]
        ensure(held.ready, f"partition {partition} is used before its stores caught up")
        get: Callable[[bytes], bytes | None] = held.dbs[table].get
        return get

    def apply(
        self, writes: Iterable[TableWrite], offsets: Mapping[tuple[str, int], int] | None = None
    ) -> None:
        """Apply writes whose changelog records have committed (``value=None`` deletes).

        ``offsets``: (table, partition) -> the offset after the last of those
        records, which the store reflects from now on.
        """
        batches: dict[tuple[str, int], WriteBatch] = {}
        for write in writes:
            self._add(batches, write.table, write.partition, write.key, write.value)
        for (table, partition), batch in batches.items():
            self._held[partition].dbs[table].write(batch)  # one RocksDB write per store
        for (table, partition), offset in (offsets or {}).items():
            positions = self._held[partition].positions
            ensure(offset >= positions[table].offset, f"{table}[{partition}] offset went back")
            positions[table] = _moved(positions[table], offset)

    def expired(
        self, table: str, partition: int, clock_ms: int, *, limit: int
    ) -> Iterator[tuple[bytes, int, bytes]]:
        """Up to ``limit`` expiry index rows due by ``clock_ms``: (row, expires_at_ms, key)."""
        db = self._held[partition].dbs[table]
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
        """Hold exactly ``partitions``, caught up with their changelogs (blocking)."""
        self.release(self.partitions - partitions)
        self.gain(partitions)
        self.begin_catch_up()
        while not self.caught_up:
            self.catch_up(budget_s=RESTORE_SLICE_S)

    def gain(self, partitions: Iterable[int]) -> None:
        """Open the stores of ``partitions``: from their checkpoint, or wiped."""
        new = sorted(set(partitions) - set(self._held))
        if not new:
            return
        self._cancel_catch_up()
        states = self._changelog_states(new)
        for partition in new:
            self._held[partition] = self._open(partition, states[partition])

    def begin_catch_up(self) -> None:
        """Snapshot the changelogs' ends for every partition not caught up; start reading."""
        self._cancel_catch_up()
        starts = {
            (self._changelogs[table], held.partition): position.offset
            for held in self._held.values()
            if not held.ready
            for table, position in held.positions.items()
        }
        ends = self._high_watermarks(list(starts))
        pending = {tp for tp, start in starts.items() if start < ends[tp]}
        self._reader.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in pending])
        total = sum(ends[tp] - starts[tp] for tp in pending)
        self._catch_up = _CatchUp(ends=ends, pending=pending, total=total)
        metrics.RESTORE_REMAINING.set(total)

    def catch_up(self, *, budget_s: float) -> set[int]:
        """Read changelogs for up to ``budget_s``; the partitions that became ready."""
        run = self._catch_up
        if run is None:
            raise RestoreError("catch_up called with no catch-up begun")
        deadline = time.monotonic() + budget_s
        while run.pending and time.monotonic() < deadline:
            self._read(run)
        ready = self._mark_ready(run)
        if not run.pending:
            self._finish(run)
        return ready

    def checkpoint(self) -> None:
        """Flush every held store and record the changelog offset it reflects."""
        for held in self._held.values():
            self._checkpoint(held)

    def release(self, partitions: Iterable[int]) -> None:
        """Checkpoint and close the stores of ``partitions`` (kept on disk for a later gain)."""
        gone = sorted(set(partitions) & set(self._held))
        if gone:
            self._cancel_catch_up()
        for partition in gone:
            held = self._held.pop(partition)
            self._checkpoint(held)
            for db in held.dbs.values():
                db.close()

    def release_all(self) -> None:
        self.release(self.partitions)

    def close(self) -> None:
        self.release_all()
        self._reader.close()
        self._watermarks.close()

    def _base(self, partition: int) -> Path:
        return self._directory / str(partition)

    def _changelog_states(self, partitions: list[int]) -> dict[int, dict[str, ChangelogState]]:
        ids = self._topic_ids(list(self._changelogs.values()))
        states: dict[int, dict[str, ChangelogState]] = {}
        for partition in partitions:
            states[partition] = {}
            for table, topic in self._changelogs.items():
                low, high = self._watermarks.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=WATERMARK_TIMEOUT_S, cached=False
                )
                states[partition][table] = ChangelogState(
                    topic=topic, topic_id=ids[topic], log_start_offset=low, end_offset=high
                )
        return states

    def _open(self, partition: int, states: Mapping[str, ChangelogState]) -> _Held:
        base = self._base(partition)
        base.mkdir(parents=True, exist_ok=True)
        found = checkpoint.read(base / checkpoint.CHECKPOINT_FILE)
        refused = (
            found
            if isinstance(found, str)
            else checkpoint.refusal(
                found, partition=partition, changelogs=states, now_ms=self._clock_ms()
            )
        )
        if refused is None and isinstance(found, Checkpoint):
            positions = dict(found.positions)
        else:
            logger.info("partition %d: restoring in full (checkpoint %s)", partition, refused)
            checkpoint.remove(base / checkpoint.CHECKPOINT_FILE)
            for table in self._changelogs:
                shutil.rmtree(base / table, ignore_errors=True)
            positions = {
                table: ChangelogPosition(
                    topic=state.topic, topic_id=state.topic_id, offset=state.log_start_offset
                )
                for table, state in states.items()
            }
        metrics.STORE_OPENS.labels(start=refused or "checkpoint").inc()
        dbs = {
            table: Rdict(str(base / table), Options(raw_mode=True)) for table in self._changelogs
        }
        return _Held(partition=partition, dbs=dbs, positions=positions)

    def _read(self, run: _CatchUp) -> None:
        """One consume of the changelogs; applies records, moves positions, checks for a stall.

        The records of one consume go to each store as one RocksDB write batch: one
        write per record was half of a restore's time (py-spy, 22 M records).
        """
        batches: dict[tuple[str, int], WriteBatch] = {}
        for message in self._reader.consume(RESTORE_CONSUME_MAX, RESTORE_CONSUME_TIMEOUT_S):
            table = self._add_restored(message, run, batches)
            if table is not None:
                run.records[table] += 1
                run.progressed_s = time.monotonic()
        for (table, partition), batch in batches.items():
            self._held[partition].dbs[table].write(batch)
        done = []
        for tp in self._reader.position([TopicPartition(t, p) for t, p in run.pending]):
            if tp.offset < 0:
                continue
            positions = self._held[tp.partition].positions
            table = self._tables[tp.topic]
            end = run.ends[(tp.topic, tp.partition)]
            if tp.offset > positions[table].offset:
                positions[table] = _moved(positions[table], min(tp.offset, end))
            if tp.offset >= end:
                run.pending.discard((tp.topic, tp.partition))
                done.append(TopicPartition(tp.topic, tp.partition))
        if done:  # caught up: from now on only the worker's batches write these stores
            self._reader.pause(done)
        now = time.monotonic()
        if run.pending and now - run.progressed_s > RESTORE_TIMEOUT_S:
            raise RestoreError(f"changelogs {sorted(run.pending)} not read to their end")
        if now - run.logged_s > RESTORE_PROGRESS_LOG_S:
            run.logged_s = now
            self._progress(run)

    def _add_restored(
        self, message: Message, run: _CatchUp, batches: dict[tuple[str, int], WriteBatch]
    ) -> str | None:
        """Add one changelog record to its store's batch; its table (None: not applied).

        Only records before the end snapshot of a changelog partition still catching up
        are applied: a partition that has caught up may be processing batches already,
        and its store is theirs alone (an older record written over a batch's newer
        one was seen in bench/restore.py; tests/integration/test_store_checkpoints.py).
        """
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return None
            raise KafkaException(error)
        topic, partition, key = message.topic(), message.partition(), message.key()
        offset = message.offset()
        if topic is None or partition is None or key is None or offset is None:
            return None
        if (topic, partition) not in run.pending or offset >= run.ends[(topic, partition)]:
            return None
        table = self._tables[topic]
        self._add(batches, table, partition, key, message.value())
        return table

    def _add(
        self,
        batches: dict[tuple[str, int], WriteBatch],
        table: str,
        partition: int,
        key: bytes,
        value: bytes | None,
    ) -> None:
        """One row (``None`` deletes it) and the index row it implies, into its store's batch."""
        batch = batches.get((table, partition))
        if batch is None:
            batch = batches[(table, partition)] = WriteBatch(raw_mode=True)
        if value is None:
            batch.delete(key)
            return
        batch.put(key, value)
        index = self._indexes.get(table)
        row = None if index is None else index(key, value)
        if row is not None:
            batch.put(row, b"")

    def _progress(self, run: _CatchUp) -> None:
        """Report how far the catch-up is (a gauge, and a log line every few seconds)."""
        left = 0
        for held in self._held.values():
            for table, position in held.positions.items():
                end = run.ends.get((self._changelogs[table], held.partition), position.offset)
                left += max(end - position.offset, 0)
        metrics.RESTORE_REMAINING.set(left)
        done = run.total - left
        logger.warning(
            "restoring stores: %d of %d changelog offsets read (%.0f%%), %d records, %.1f s",
            done,
            run.total,
            100.0 * done / max(run.total, 1),
            run.records.total(),
            time.monotonic() - run.started_s,
        )

    def _mark_ready(self, run: _CatchUp) -> set[int]:
        waiting = {partition for _topic, partition in run.pending}
        ready = {p for p, held in self._held.items() if not held.ready and p not in waiting}
        for partition in ready:
            self._held[partition].ready = True
        return ready

    def _finish(self, run: _CatchUp) -> None:
        self._reader.unassign()
        self._catch_up = None
        metrics.RESTORE_REMAINING.set(0)
        metrics.RESTORE_SECONDS.labels(stores="tables").observe(time.monotonic() - run.started_s)
        for table, records in run.records.items():
            metrics.RESTORED_RECORDS.labels(store=table).inc(records)

    def _cancel_catch_up(self) -> None:
        if self._catch_up is not None:
            self._reader.unassign()
            self._catch_up = None
            metrics.RESTORE_REMAINING.set(0)

    def _checkpoint(self, held: _Held) -> None:
        started = time.monotonic()
        for db in held.dbs.values():
            db.flush(wait=True)  # memtables to SST files: the state is on disk before the file
        record = Checkpoint(
            partition=held.partition, written_at_ms=self._clock_ms(), positions=held.positions
        )
        checkpoint.write(self._base(held.partition) / checkpoint.CHECKPOINT_FILE, record)
        metrics.CHECKPOINT_SECONDS.observe(time.monotonic() - started)

    def _high_watermarks(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Each partition's end including pending transactions (read_uncommitted)."""
        ends: dict[tuple[str, int], int] = {}
        for topic, partition in tps:
            _low, high = self._watermarks.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=WATERMARK_TIMEOUT_S, cached=False
            )
            ends[(topic, partition)] = high
        return ends


def _moved(position: ChangelogPosition, offset: int) -> ChangelogPosition:
    return ChangelogPosition(topic=position.topic, topic_id=position.topic_id, offset=offset)
