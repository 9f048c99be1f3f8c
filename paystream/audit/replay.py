"""Replay: the pure core over the recorded inputs, batch by batch as the manifests say, and
what it produced against what was recorded.

Each partition of ``batches`` lists its source partition's committed batches in the order
they ran (:mod:`paystream.topology.manifest`). For every manifest, replay takes the input
records it names from ``commands`` and ``legs``, rebuilds the directory at the position it
names, checks that the partition's clock is where the manifest says, and runs the same
shell and core the worker ran (:mod:`paystream.topology.shell`,
:func:`paystream.ledger.process_batch`) over the state its own earlier batches left. No
broker writes, no production store, no worker code. Batches run in the order they were
written (their manifests' timestamps), each partition's in its own order.

Then it compares: each batch's output digest against its manifest (the first divergence
names the batch and the input that produced it), the journal entries and events against
``ledger`` and ``events`` (matched, missing, extra, differing), against the Postgres audit
store when one is given, and the accounts against the workers' balances changelog.

The journal digest: each partition chains its batches' journal entries
(``head = sha256(head || entries)`` per batch); the digest is sha256 over the heads in
partition order. Two replays of the same log give the same digest, and a replay from a
snapshot (which carries the heads) gives the full replay's.

Partial replays -- an account subset (replayed as the partitions holding the accounts and
every account their transfers touched: a partition is the smallest unit that replays
exactly, as its idempotency keys and clock are shared by its accounts), a start from a
snapshot, an end at a time -- compare what they replay; only a full replay can say that a
recorded record was produced by no batch.

What-if (``what_if`` rules): the same batches under other rules. Legs are then the
replay's own, not the recorded ones (a leg the recorded rules sent but these did not is
dropped; one these send that was never recorded is delivered with its partition's next
batch), and the report lists the payments that would have ended differently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import struct
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from confluent_kafka import Message

from paystream.audit import whatif
from paystream.audit.replay_log import (
    DirectoryReplica,
    PlacedManifest,
    RecordedLog,
    RecordedOutput,
    build_log,
    read_log,
    read_records,
)
from paystream.audit.replay_report import Compared, Divergence, DivergenceKind, ReplayReport, WhatIf
from paystream.audit.snapshot import PartitionState, Snapshot, SnapshotError
from paystream.audit.stored_journal import StoredJournal, entry_difference, journal_differences
from paystream.ledger import (
    CORE_VERSION,
    REPLAYED_CORE_VERSIONS,
    Account,
    Compensation,
    Confirmation,
    CreditLeg,
    Delivery,
    Event,
    IdempotencyKey,
    IdempotencyRecord,
    InvariantViolation,
    JournalEntry,
    Output,
    Payout,
    PayoutProfile,
    ScreeningRules,
    Transfer,
    process_batch,
)
from paystream.settings import KafkaConnection
from paystream.topology.avro import HEADER_SIZE, AvroSerde
from paystream.topology.manifest import BatchManifest
from paystream.topology.partitioner import partition_for
from paystream.topology.shell import Decoded, Record, Shell
from paystream.topology.topics import Topics

__all__ = [
    "AuditStore",
    "Divergence",
    "ReplayOptions",
    "ReplayReport",
    "build_log",
    "read_log",
    "read_records",
    "replay",
    "replay_log",
]

_LENGTH: Final = struct.Struct(">q")
CHAIN_START: Final = bytes(32)
DETAIL_MAX: Final = 500
"""Characters of an error kept in a divergence."""
LEG_ROUNDS_MAX: Final = 4
"""Extra batches a what-if runs at the end to deliver legs no recorded batch carried (a
transfer's saga is three steps)."""

Progress = Callable[[int, int], None]
"""(batches replayed, batches in all)."""


@dataclass(frozen=True, slots=True)
class AuditStore:
    """What the Postgres audit store holds: its journal entries, the ``ledger`` positions it
    reflects (every entry recorded below them is in it) and the rows no entry can carry."""

    entries: Mapping[str, JournalEntry]
    ledger_positions: Mapping[int, int]
    anomalies: Sequence[str] = ()

    @classmethod
    def of(cls, stored: StoredJournal, *, group: str, ledger_topic: str) -> AuditStore:
        """``stored`` as the Postgres sink group ``group`` left it."""
        return cls(stored.entries, stored.positions_of(group, ledger_topic), stored.anomalies)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayOptions:
    accounts: frozenset[str] = frozenset()
    """Replay only these accounts (and every account their transfers touched)."""
    what_if: Mapping[str, int] = field(default_factory=dict)
    """``Rules`` fields to run with instead of the recorded ones."""
    snapshot: Snapshot | None = None
    until_ms: int | None = None
    """Stop after the batches written at or before this time (their manifests' timestamps)."""
    keep_state: bool = False
    """Keep the end state in the report (``ReplayReport.end_state``) to write a snapshot."""

    @property
    def partial(self) -> bool:
        return bool(self.accounts) or self.snapshot is not None or self.until_ms is not None


def replay(
    kafka: KafkaConnection,
    topics: Topics,
    serde: AvroSerde,
    *,
    options: ReplayOptions | None = None,
    stored: AuditStore | None = None,
    progress: Progress | None = None,
) -> ReplayReport:
    """Read the log (:func:`read_log`) and replay it (:func:`replay_log`)."""
    log = read_log(kafka, topics, serde)
    return replay_log(log, Shell(topics=topics, serde=serde), options=options, stored=stored,
                      progress=progress)  # fmt: skip


def replay_log(
    log: RecordedLog,
    shell: Shell,
    *,
    options: ReplayOptions | None = None,
    stored: AuditStore | None = None,
    progress: Progress | None = None,
) -> ReplayReport:
    """Replay ``log`` and compare (see the module's docstring); ``stored``: the Postgres audit
    store's journal entries, compared too."""
    chosen = options or ReplayOptions()
    run = _Run(shell, log, chosen)
    schedule = run.schedule()
    started = time.monotonic()
    for done, (index, placed) in enumerate(schedule, start=1):
        run.batch(index, placed)
        if progress is not None:
            progress(done, len(schedule))
    run.drain_new_legs()
    run.report.seconds = time.monotonic() - started
    run.finish(stored)
    return run.report


@dataclass(slots=True)
class _Partition:
    accounts: dict[str, Account] = field(default_factory=dict)
    idempotency: dict[IdempotencyKey, IdempotencyRecord] = field(default_factory=dict)
    clock_ms: int = 0
    chain: bytes = CHAIN_START
    batches: int = 0
    last_offset: int = -1
    payouts: dict[str, Payout] = field(default_factory=dict)
    profiles: dict[str, PayoutProfile] = field(default_factory=dict)
    screening: ScreeningRules = field(default_factory=ScreeningRules)

    @classmethod
    def of(cls, state: PartitionState) -> _Partition:
        return cls(dict(state.accounts), dict(state.idempotency), state.clock_ms, state.chain,
                   state.batches, state.last_offset, dict(state.payouts),
                   dict(state.profiles), state.screening)  # fmt: skip

    def frozen(self) -> PartitionState:
        return PartitionState(
            batches=self.batches, last_offset=self.last_offset, clock_ms=self.clock_ms,
            chain=self.chain, accounts=dict(self.accounts), idempotency=dict(self.idempotency),
            payouts=dict(self.payouts), profiles=dict(self.profiles), screening=self.screening,
        )  # fmt: skip


@dataclass(slots=True)
class _Produced:
    body: bytes
    item: JournalEntry | Event
    partition: int
    batch: int
    worker: str
    command: str | None


LegKey = tuple[str, str]
"""(leg type, transfer id)"""


class _Run:
    """The replay's state, and what it produced."""

    def __init__(self, shell: Shell, log: RecordedLog, options: ReplayOptions) -> None:
        self._shell = shell
        self._log = log
        self._options = options
        self._directory = DirectoryReplica(log.directory)
        self._partitions: dict[int, _Partition] = defaultdict(_Partition)
        self._journal: dict[str, _Produced] = {}
        self._events: dict[str, _Produced] = {}
        self._what_if = options.what_if
        self._recorded_legs: set[LegKey] = set()
        self._new_legs: dict[int, list[Output]] = defaultdict(list)
        self._sent_legs: dict[LegKey, Output] = {}
        self.report = ReplayReport(partial=options.partial)

    # --- choosing the batches ---------------------------------------------------------

    def schedule(self) -> list[tuple[int, PlacedManifest]]:
        """The batches to run, each partition's in order, merged by the time written."""
        partitions = self._scope()
        self.report.partitions = sorted(partitions)
        for unread in self._log.unread:
            self._mismatch(
                "manifest",
                unread.partition,
                None,
                None,
                f"batches[{unread.partition}]@{unread.offset}",
                unread.reason,
            )
        queues = [self._queue(p) for p in sorted(partitions)]
        if self._what_if:
            self._recorded_legs = self._leg_keys(partitions)
        return list(
            heapq.merge(
                *queues, key=lambda item: (item[1].timestamp_ms, item[1].manifest.partition)
            )
        )

    def _queue(self, partition: int) -> list[tuple[int, PlacedManifest]]:
        placed = self._log.manifests.get(partition, [])
        snapshot = self._options.snapshot
        start = 0
        if snapshot is not None and partition in snapshot.partitions:
            state = snapshot.partitions[partition]
            _check_snapshot(placed, partition, state)
            self._partitions[partition] = _Partition.of(state)
            start = state.batches
        until = self._options.until_ms
        queue: list[tuple[int, PlacedManifest]] = []
        for index in range(start, len(placed)):
            if until is not None and placed[index].timestamp_ms > until:
                break
            queue.append((index, placed[index]))
        return queue

    def _scope(self) -> set[int]:
        """The partitions to replay: all, or those of the accounts and of every account
        their transfers touched (read from the commands and legs of the accounts)."""
        every = set(self._log.manifests) | {u.partition for u in self._log.unread}
        accounts = self._options.accounts
        if not accounts:
            return every
        count = self._shell.topics.partitions
        touched = set(accounts)
        for partition in {partition_for(a.encode(), count) for a in accounts}:
            for kind in ("commands", "legs"):
                for message in self._log.inputs.of(kind, partition):
                    touched |= self._counterparties(message, accounts)
        self.report.asked_accounts = accounts
        self.report.shown_accounts = frozenset(touched)
        return {partition_for(a.encode(), count) for a in touched}

    def _counterparties(self, message: Message, accounts: frozenset[str]) -> set[str]:
        decoded = self._decode(message.partition() or 0, [message], None)
        found: set[str] = set()
        for delivery in decoded.deliveries:
            item = delivery.item
            if isinstance(item, Transfer) and item.account_id in accounts:
                found.add(item.destination_account_id)
            elif isinstance(item, CreditLeg | Confirmation | Compensation) and (
                item.account_id in accounts
            ):
                found |= {item.source_account_id, item.destination_account_id}
        return found

    def _leg_keys(self, partitions: set[int]) -> set[LegKey]:
        keys: set[LegKey] = set()
        for partition in partitions:
            decoded = self._decode(partition, self._log.inputs.of("legs", partition), None)
            keys |= {_leg_key(d.item) for d in decoded.deliveries}
        return keys

    def _decode(self, partition: int, messages: Sequence[Message], index: int | None) -> Decoded:
        """The shell's decoding; a record only a worker writes (a leg) that does not decode is
        a divergence of the log (the worker would have stopped on it), not a crash of replay."""
        try:
            return self._shell.decode(partition, messages)
        except InvariantViolation as error:
            self._mismatch("unreadable", partition, index, None, f"partition {partition}",
                           str(error)[:DETAIL_MAX])  # fmt: skip
            return Decoded()

    # --- running ----------------------------------------------------------------------

    def batch(self, index: int, placed: PlacedManifest) -> None:
        manifest = placed.manifest
        partition = manifest.partition
        state = self._partitions[partition]
        messages = self._messages(index, manifest)
        state.batches, state.last_offset = index + 1, placed.offset
        self.report.batches += 1
        if messages is None:
            return
        self.report.inputs += len(messages)
        self.report.commands += sum(1 for m in messages if m.topic() == self._shell.topics.commands)
        if not self._what_if:
            self._check_before(index, manifest, state)
        decoded = self._decode(partition, messages, index)
        origins = {
            _id_of(delivery.item): f"{topic}[{partition}]@{offset}"
            for delivery, (topic, offset) in zip(decoded.deliveries, decoded.origins, strict=True)
        }
        deliveries = decoded.deliveries
        if self._what_if:
            deliveries = self._what_if_legs(partition, deliveries, state.clock_ms)
        sent = decoded.sent
        sent += self._run_core(index, manifest, state, deliveries, origins)
        if self._what_if:
            return
        again = self._shell.manifest(
            partition=partition, messages=messages, sent=sent,
            clock_before_ms=manifest.clock_before_ms, directory=manifest.directory,
            worker=manifest.worker, rules=manifest.rules,
        )  # fmt: skip
        if again.outputs != manifest.outputs:
            self._mismatch("digest", partition, index, manifest.worker,
                           f"batch {partition}/{index}",
                           f"replayed {again.outputs}, recorded {manifest.outputs}")  # fmt: skip

    def _run_core(
        self,
        index: int,
        manifest: BatchManifest,
        state: _Partition,
        deliveries: Sequence[Delivery],
        origins: Mapping[str, str],
    ) -> list[Record]:
        if not deliveries:
            return []
        rules = dataclasses.replace(manifest.rules, **self._what_if) if self._what_if else (
            manifest.rules
        )  # fmt: skip
        partition = manifest.partition
        try:
            result = process_batch(
                deliveries, partition=partition, accounts=MappingProxyType(state.accounts),
                idempotency=MappingProxyType(state.idempotency),
                directory=self._directory.at(manifest.directory), clock_ms=state.clock_ms,
                rules=rules, payouts=MappingProxyType(state.payouts),
                profiles=MappingProxyType(state.profiles), screening=state.screening,
            )  # fmt: skip
        except InvariantViolation as error:  # the log is not what the workers ran
            self._mismatch("invariant", partition, index, manifest.worker,
                           f"batch {partition}/{index}", str(error)[:DETAIL_MAX])  # fmt: skip
            return []
        state.accounts.update(result.accounts)
        state.idempotency.update(result.idempotency)
        state.payouts.update(result.payouts)
        state.profiles.update(result.profiles)
        if result.screening is not None:
            state.screening = result.screening
        state.clock_ms = result.clock_ms
        chain = hashlib.sha256(state.chain)
        sent: list[Record] = []
        for output in result.outputs:
            record = self._shell.route(output, partition)
            sent.append(record)
            if isinstance(output, JournalEntry | Event) and record.value is not None:
                body = record.value[HEADER_SIZE:]
                made = _Produced(body, output, partition, index, manifest.worker,
                                 origins.get(output.payment_id))  # fmt: skip
                if isinstance(output, JournalEntry):
                    self._journal[output.entry_id] = made
                    chain.update(_LENGTH.pack(len(body)))
                    chain.update(body)
                else:
                    self._events[output.event_id] = made
            elif self._what_if and isinstance(output, CreditLeg | Confirmation | Compensation):
                self._sent_leg(output)
        state.chain = chain.digest()
        return sent

    def _check_before(self, index: int, manifest: BatchManifest, state: _Partition) -> None:
        partition = manifest.partition
        if manifest.clock_before_ms != state.clock_ms:
            self._mismatch("clock", partition, index, manifest.worker, f"{partition}",
                           f"the manifest says {manifest.clock_before_ms}, replay is at "
                           f"{state.clock_ms}")  # fmt: skip
        if manifest.core_version not in REPLAYED_CORE_VERSIONS:
            ran = manifest.core_version
            self._mismatch("core_version", partition, index, manifest.worker, ran,
                           f"the batch ran core {ran}; this core ({CORE_VERSION}) reproduces "
                           f"{', '.join(sorted(REPLAYED_CORE_VERSIONS))}")  # fmt: skip

    def _messages(self, index: int, manifest: BatchManifest) -> Sequence[Message] | None:
        """The batch's inputs in order; None (and a mismatch) if the log lacks some."""
        found: list[Message] = []
        partition = manifest.partition
        for run in manifest.runs:
            messages = self._log.inputs.run(run.topic, partition, run.first_offset,
                                            run.last_offset)  # fmt: skip
            if len(messages) != run.records:
                subject = f"{run.topic}[{partition}]@{run.first_offset}..{run.last_offset}"
                self._mismatch("inputs", partition, index, manifest.worker, subject,
                               f"the manifest names {run.records} records, the log has "
                               f"{len(messages)}")  # fmt: skip
                return None
            found += messages
        return found

    # --- what-if legs -------------------------------------------------------------------

    def _what_if_legs(
        self, partition: int, deliveries: Sequence[Delivery], clock_ms: int
    ) -> list[Delivery]:
        """The recorded legs swapped for the ones this run sent (dropped when it sent none),
        after the legs it sent that no recorded batch carries."""
        offset = deliveries[0].offset if deliveries else 0
        found = [Delivery(item=leg, offset=offset, log_time_ms=clock_ms)  # type: ignore[arg-type]
                 for leg in self._new_legs.pop(partition, [])]  # fmt: skip
        count = self._shell.topics.partitions
        for delivery in deliveries:
            item = delivery.item
            if not isinstance(item, CreditLeg | Confirmation | Compensation):
                found.append(delivery)
                continue
            ours = self._sent_legs.pop(_leg_key(item), None)
            if ours is not None:
                found.append(dataclasses.replace(delivery, item=ours))  # type: ignore[arg-type]
            elif partition_for(_sender(item).encode(), count) not in self.report.partitions:
                found.append(delivery)  # sent by a partition this replay does not run
        return found

    def _sent_leg(self, leg: CreditLeg | Confirmation | Compensation) -> None:
        key = _leg_key(leg)
        if key in self._recorded_legs:
            self._sent_legs[key] = leg
        else:
            target = partition_for(leg.account_id.encode(), self._shell.topics.partitions)
            self._new_legs[target].append(leg)

    def drain_new_legs(self) -> None:
        """Deliver the legs no recorded batch carried, in extra batches (what-if only)."""
        for _round in range(LEG_ROUNDS_MAX):
            if not self._new_legs:
                return
            for partition in sorted(self._new_legs):
                state = self._partitions[partition]
                legs = self._new_legs.pop(partition)
                deliveries = [Delivery(item=leg, offset=0, log_time_ms=state.clock_ms)  # type: ignore[arg-type]
                              for leg in legs]  # fmt: skip
                manifest = self._last_manifest(partition)
                if manifest is not None:
                    self._run_core(state.batches, manifest, state, deliveries, {})

    def _last_manifest(self, partition: int) -> BatchManifest | None:
        placed = self._log.manifests.get(partition, [])
        return placed[-1].manifest if placed else None

    # --- comparing ----------------------------------------------------------------------

    def finish(self, stored: AuditStore | None) -> None:
        report = self.report
        for partition in report.partitions:
            report.chains[partition] = self._partitions[partition].chain.hex()
        digest = hashlib.sha256()
        for partition in report.partitions:
            digest.update(self._partitions[partition].chain)
        report.journal_sha256 = digest.hexdigest()
        for state in self._partitions.values():
            report.accounts.update(state.accounts)
        report.entries = [
            p.item for p in self._journal.values() if isinstance(p.item, JournalEntry)
        ]
        if self._options.keep_state:
            report.end_state = Snapshot(
                partitions={p: self._partitions[p].frozen() for p in report.partitions},
                until_ms=self._options.until_ms,
            )
        if self._what_if:
            self._compare_what_if()
            return
        full = not self._options.partial
        report.journal = self._compare("entry", self._journal, self._log.journal, full)
        report.events = self._compare("event", self._events, self._log.events, full)
        for where in self._log.unreadable:
            self._mismatch("unreadable", -1, None, None, where, "a recorded record that does "
                           "not decode")  # fmt: skip
        if stored is not None:
            report.postgres = self._compare_stored(stored, full)
        if self._options.until_ms is None:
            self._compare_balances()

    def _compare(
        self,
        what: str,
        replayed: Mapping[str, _Produced],
        recorded: Mapping[str, RecordedOutput],
        full: bool,
    ) -> Compared:
        compared = Compared()
        for found_id in sorted(replayed.keys() | recorded.keys()):
            ours, theirs = replayed.get(found_id), recorded.get(found_id)
            if ours is not None and theirs is not None and ours.body == theirs.body:
                compared.matched += 1
            elif ours is None:
                if not full:
                    compared.not_compared += 1
                    continue
                compared.missing.append(found_id)
                detail = f"the recorded {what} was not produced by replay"
                self.report.diverged(Divergence("missing", -1, None, None, found_id, detail))
            elif theirs is None:
                compared.extra.append(found_id)
                self._diverged("extra", ours, found_id, f"replay produced an {what} not recorded")
            else:
                compared.differing.append(found_id)
                self._diverged("differs", ours, found_id, _difference(ours, theirs))
        return compared

    def _compare_stored(self, stored: AuditStore, full: bool) -> Compared:
        replayed = {i: p.item for i, p in self._journal.items() if isinstance(p.item, JournalEntry)}
        found = journal_differences(replayed, stored.entries)
        compared = Compared(matched=found.matched)
        for entry_id, difference in found.differing:
            compared.differing.append(entry_id)
            self._diverged("postgres", self._journal[entry_id], entry_id, f"Postgres: {difference}")
        for entry_id in found.extra_ids:
            if not self._below_store_position(entry_id, stored):
                compared.not_compared += 1  # the store has not reached it yet
                continue
            compared.extra.append(entry_id)
            self._diverged("postgres", self._journal[entry_id], entry_id, "produced by replay "
                           "and below the store's position, not in the Postgres store")  # fmt: skip
        for entry_id in found.missing_ids:
            if not full:
                compared.not_compared += 1
                continue
            compared.missing.append(entry_id)
            detail = "in the Postgres store, not produced by replay"
            self.report.diverged(Divergence("postgres", -1, None, None, entry_id, detail))
        for anomaly in stored.anomalies:
            compared.differing.append(anomaly)
            self.report.diverged(Divergence("postgres", -1, None, None, "a stored row", anomaly))
        return compared

    def _below_store_position(self, entry_id: str, stored: AuditStore) -> bool:
        recorded = self._log.journal.get(entry_id)
        return recorded is not None and recorded.offset < stored.ledger_positions.get(
            recorded.partition, 0
        )

    def _compare_balances(self) -> None:
        report = self.report
        replayed = report.accounts
        recorded = self._log.accounts
        if report.shown_accounts:
            names = set(report.shown_accounts)
        elif self._options.accounts:
            names = set(self._options.accounts)
        else:
            names = replayed.keys() | recorded.keys()
        for account_id in sorted(names):
            ours, theirs = replayed.get(account_id), recorded.get(account_id)
            report.balances_compared += 1
            if ours != theirs:
                detail = f"replayed {ours}, the workers' table holds {theirs}"
                found = Divergence("balance", -1, None, None, account_id, detail)
                report.balance_differences.append(found)
                report.diverged(found)

    def _compare_what_if(self) -> None:
        ours_entries = [p.item for p in self._journal.values() if isinstance(p.item, JournalEntry)]
        ours_events = [p.item for p in self._events.values() if isinstance(p.item, Event)]
        payments = {e.payment_id for e in ours_entries} | {e.payment_id for e in ours_events}
        recorded_entries = [
            e.item for e in self._log.journal.values()
            if isinstance(e.item, JournalEntry) and e.item.payment_id in payments
        ]  # fmt: skip
        recorded_events = [
            e for e in (self._log.events[i].item for i in self._log.events_order)
            if isinstance(e, Event) and e.payment_id in payments
        ]  # fmt: skip
        recorded = whatif.outcomes(recorded_entries, recorded_events)
        ours = whatif.outcomes(ours_entries, ours_events)
        changed = whatif.changed_payments(recorded, ours)
        self.report.what_if = WhatIf(self._what_if, len(recorded.keys() | ours.keys()), changed)

    # --- divergences --------------------------------------------------------------------

    def _diverged(self, kind: DivergenceKind, ours: _Produced, subject: str, detail: str) -> None:
        self.report.diverged(
            Divergence(kind, ours.partition, ours.batch, ours.worker, subject, detail, ours.command)
        )

    def _mismatch(
        self,
        kind: DivergenceKind,
        partition: int,
        index: int | None,
        worker: str | None,
        subject: str,
        detail: str,
    ) -> None:
        found = Divergence(kind, partition, index, worker, subject, detail)
        self.report.batch_mismatches.append(found)
        self.report.diverged(found)


def _check_snapshot(
    placed: Sequence[PlacedManifest], partition: int, state: PartitionState
) -> None:
    """A snapshot's position must be a manifest of this log."""
    if state.batches == 0:
        return
    if len(placed) < state.batches or placed[state.batches - 1].offset != state.last_offset:
        raise SnapshotError(
            f"the snapshot's partition {partition} ends at batches offset {state.last_offset}, "
            f"which is not batch {state.batches - 1} of this log"
        )


def _difference(ours: _Produced, theirs: RecordedOutput) -> str:
    """What differs between a replayed and a recorded entry or event with one id."""
    a, b = ours.item, theirs.item
    if isinstance(a, JournalEntry) and isinstance(b, JournalEntry):
        found = entry_difference(a, b)
    else:
        names = [f.name for f in dataclasses.fields(a)]
        found = next((f"{n} replayed {getattr(a, n)!r}, recorded {getattr(b, n)!r}"
                      for n in names if getattr(a, n) != getattr(b, n)), None)  # fmt: skip
    return found or f"the same fields, other bytes: replayed {ours.body.hex()}, recorded " + (
        theirs.body.hex()
    )


def _leg_key(item: object) -> LegKey:
    return type(item).__name__, str(getattr(item, "transfer_id", ""))


def _sender(leg: CreditLeg | Confirmation | Compensation) -> str:
    """The account whose partition sends a leg (a credit leg's source, a step 3's
    destination)."""
    return leg.source_account_id if isinstance(leg, CreditLeg) else leg.destination_account_id


def _id_of(item: object) -> str:
    """The payment an input is about (a command's id, a leg's transfer)."""
    return str(getattr(item, "command_id", None) or getattr(item, "transfer_id", ""))
