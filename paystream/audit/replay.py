"""Replay: the pure core over the recorded inputs, batch by batch as the manifests say, and
what it produced against what was recorded.

Each partition of ``batches`` lists its source partition's committed batches in the order
they ran (:mod:`paystream.topology.manifest`). For every manifest, replay takes the input
records it names from ``commands`` and ``legs`` (read_committed), rebuilds the directory at
the position it names from the ``directory`` log, checks that the partition's clock is
where the manifest says, and runs the same shell and core the worker ran
(:mod:`paystream.topology.shell`, :func:`paystream.ledger.process_batch`) over the state
its own earlier batches left. No broker writes, no production store, no worker code.

Then it compares: each batch's digest against its manifest (the first divergence names
the batch and the input that produced it), the journal entries and events it produced
against the ``ledger`` and ``events`` topics (matched, missing, extra, differing), and the
accounts it ends with against the workers' balances changelog. The journal digest is sha256
over the replayed journal stream, partition after partition in batch order: two replays of
the same log give the same digest.

Replay reads a log at rest: manifests first, then the rest, so a batch committed while it
reads shows as records the replay did not produce.
"""

from __future__ import annotations

import hashlib
import struct
import time
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from confluent_kafka import Message

from paystream.audit.verify import read_accounts
from paystream.ledger import (
    CORE_VERSION,
    Account,
    DirectoryEntry,
    Event,
    IdempotencyKey,
    IdempotencyRecord,
    JournalEntry,
    process_batch,
)
from paystream.tables import directory as directory_records
from paystream.topology.avro import HEADER_SIZE, AvroSerde
from paystream.topology.manifest import BatchManifest, InputKind, decode_manifest
from paystream.topology.reader import read_to_end
from paystream.topology.shell import Record, Shell, source
from paystream.topology.topics import Topics

__all__ = ["Divergence", "ReplayReport", "replay"]

DivergenceKind = Literal[
    "inputs", "clock", "core_version", "digest", "missing", "extra", "differs", "balance"
]
SHOWN_MAX: Final = 20
"""Ids listed per kind of mismatch (the counts are complete)."""
_LENGTH: Final = struct.Struct(">q")

Progress = Callable[[int, int], None]
"""(batches replayed, batches in all)."""


@dataclass(frozen=True, slots=True)
class Divergence:
    """One difference between the replay and the record, with where it came from."""

    kind: DivergenceKind
    partition: int
    batch: int | None
    """The manifest's index on its partition (None: found only by the comparison)."""
    worker: str | None
    subject: str
    """What differs: an entry or event id, an account, a run of offsets."""
    detail: str
    command: str | None = None
    """The input that produced it (``topic[partition]@offset``), when replay knows it."""


@dataclass(slots=True)
class Compared:
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    """Recorded, not replayed."""
    extra: list[str] = field(default_factory=list)
    """Replayed, not recorded."""
    differing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.differing)

    def to_json(self) -> dict[str, Any]:
        return {
            "matched": self.matched, "missing": len(self.missing), "extra": len(self.extra),
            "differing": len(self.differing), "missing_ids": self.missing[:SHOWN_MAX],
            "extra_ids": self.extra[:SHOWN_MAX], "differing_ids": self.differing[:SHOWN_MAX],
        }  # fmt: skip


@dataclass(slots=True)
class ReplayReport:
    batches: int = 0
    inputs: int = 0
    commands: int = 0
    seconds: float = 0.0
    journal_sha256: str = ""
    journal: Compared = field(default_factory=Compared)
    events: Compared = field(default_factory=Compared)
    batch_mismatches: list[Divergence] = field(default_factory=list)
    balance_differences: list[Divergence] = field(default_factory=list)
    first_divergence: Divergence | None = None

    @property
    def ok(self) -> bool:
        return (
            self.journal.ok and self.events.ok and not self.batch_mismatches
            and not self.balance_differences
        )  # fmt: skip

    @property
    def commands_per_s(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        first = self.first_divergence
        return {
            "ok": self.ok, "batches": self.batches, "inputs": self.inputs,
            "commands": self.commands, "seconds": round(self.seconds, 3),
            "commands_per_s": round(self.commands_per_s), "journal_sha256": self.journal_sha256,
            "journal": self.journal.to_json(), "events": self.events.to_json(),
            "batch_mismatches": len(self.batch_mismatches),
            "balance_differences": len(self.balance_differences),
            "first_divergence": None if first is None else _divergence_json(first),
        }  # fmt: skip

    def summary(self) -> str:
        lines = [
            f"replayed {self.batches:,} batches, {self.inputs:,} inputs ({self.commands:,} "
            f"commands) in {self.seconds:.1f} s: {self.commands_per_s:,.0f} commands/s",
            f"journal sha256 {self.journal_sha256}",
            _compared_line("journal entries", self.journal),
            _compared_line("events", self.events),
            f"batches whose outputs differ from their manifest: {len(self.batch_mismatches):,}",
            f"accounts that differ from the workers' tables: {len(self.balance_differences):,}",
        ]
        first = self.first_divergence
        if first is not None:
            lines.append("first divergence:")
            lines += [f"  {k}: {v}" for k, v in _divergence_json(first).items() if v is not None]
        lines.append("OK: the recorded ledger is what the rules produce" if self.ok else "MISMATCH")
        return "\n".join(lines)


def replay(
    bootstrap: str,
    topics: Topics,
    serde: AvroSerde,
    *,
    progress: Progress | None = None,
) -> ReplayReport:
    """Replay every committed batch and compare (see the module's docstring)."""
    manifests = _manifests(bootstrap, topics, serde)
    inputs = _Inputs(bootstrap, topics)
    directory = _DirectoryReplica(_by_partition(read_to_end(bootstrap, topics.directory)))
    run = _Run(Shell(topics=topics, serde=serde), inputs, directory)
    total = sum(len(found) for found in manifests.values())
    started = time.monotonic()
    for partition in sorted(manifests):
        for index, manifest in enumerate(manifests[partition]):
            run.batch(index, manifest)
            run.report.batches += 1
            if progress is not None:
                progress(run.report.batches, total)
    run.report.seconds = time.monotonic() - started
    run.compare(_recorded(bootstrap, topics, serde), read_accounts(bootstrap, topics))
    return run.report


# --- reading --------------------------------------------------------------------------


def _manifests(bootstrap: str, topics: Topics, serde: AvroSerde) -> dict[int, list[BatchManifest]]:
    found: dict[int, list[BatchManifest]] = defaultdict(list)
    for message in read_to_end(bootstrap, topics.batches):
        manifest = decode_manifest(serde, message.value() or b"")
        found[manifest.partition].append(manifest)
    return dict(found)


def _by_partition(messages: Iterable[Message]) -> dict[int, list[Message]]:
    found: dict[int, list[Message]] = defaultdict(list)
    for message in messages:
        found[source(message)[1]].append(message)
    return dict(found)


class _Inputs:
    """The committed records of ``commands`` and ``legs``, per partition, by offset."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self._messages: dict[tuple[InputKind, int], list[Message]] = {}
        self._offsets: dict[tuple[InputKind, int], list[int]] = {}
        sources: tuple[tuple[InputKind, str], ...] = (
            ("commands", topics.commands), ("legs", topics.legs),
        )  # fmt: skip
        for kind, topic in sources:
            for partition, messages in _by_partition(read_to_end(bootstrap, topic)).items():
                self._messages[(kind, partition)] = messages
                self._offsets[(kind, partition)] = [source(m)[2] for m in messages]

    def run(self, kind: InputKind, partition: int, first: int, last: int) -> list[Message]:
        offsets = self._offsets.get((kind, partition), [])
        low, high = bisect_left(offsets, first), bisect_right(offsets, last)
        return self._messages.get((kind, partition), [])[low:high]


class _DirectoryReplica:
    """The directory at any position: moved forward record by record, rebuilt when a batch
    saw less than the one before it (its partition moved to a worker that had read less)."""

    def __init__(self, records: dict[int, list[Message]]) -> None:
        self._records = records
        self._offsets = {p: [source(m)[2] for m in found] for p, found in records.items()}
        self._entries: dict[str, DirectoryEntry] = {}
        self._next: dict[int, int] = {}
        """Per directory partition: the index of the next record to apply."""

    def at(self, position: Sequence[tuple[int, int]]) -> Mapping[str, DirectoryEntry]:
        wanted = dict(position)
        targets = {p: self._index(p, offset) for p, offset in wanted.items()}
        if any(targets[p] < self._next.get(p, 0) for p in targets):
            self._entries, self._next = {}, {}
        for partition, target in targets.items():
            records = self._records.get(partition, [])
            for message in records[self._next.get(partition, 0) : target]:
                directory_records.apply(self._entries, message.key(), message.value())
            self._next[partition] = target
        return MappingProxyType(self._entries)

    def _index(self, partition: int, next_offset: int) -> int:
        return bisect_left(self._offsets.get(partition, []), next_offset)


@dataclass(slots=True)
class _Partition:
    accounts: dict[str, Account] = field(default_factory=dict)
    idempotency: dict[IdempotencyKey, IdempotencyRecord] = field(default_factory=dict)
    clock_ms: int = 0


@dataclass(slots=True)
class _Produced:
    value: bytes
    partition: int
    batch: int
    worker: str
    command: str | None


class _Run:
    """The replay's state, and what it produced."""

    def __init__(self, shell: Shell, inputs: _Inputs, directory: _DirectoryReplica) -> None:
        self._shell = shell
        self._inputs = inputs
        self._directory = directory
        self._partitions: dict[int, _Partition] = defaultdict(_Partition)
        self._journal: dict[str, _Produced] = {}
        self._events: dict[str, _Produced] = {}
        self._hash = hashlib.sha256()
        self.report = ReplayReport()

    def batch(self, index: int, manifest: BatchManifest) -> None:
        partition = manifest.partition
        state = self._partitions[partition]
        messages = self._messages(index, manifest)
        if messages is None:
            return
        self.report.inputs += len(messages)
        self.report.commands += sum(1 for m in messages if m.topic() == self._shell.topics.commands)
        if manifest.clock_before_ms != state.clock_ms:
            self._mismatch("clock", index, manifest, f"{partition}",
                           f"the manifest says {manifest.clock_before_ms}, replay is at "
                           f"{state.clock_ms}")  # fmt: skip
        if manifest.core_version != CORE_VERSION:
            ran = manifest.core_version
            self._mismatch("core_version", index, manifest, ran,
                           f"the batch ran core {ran}, this is {CORE_VERSION}")  # fmt: skip
        decoded = self._shell.decode(partition, messages)
        origins = {
            _id_of(delivery.item): f"{topic}[{partition}]@{offset}"
            for delivery, (topic, offset) in zip(decoded.deliveries, decoded.origins, strict=True)
        }
        if decoded.deliveries:
            result = process_batch(
                decoded.deliveries, partition=partition,
                accounts=MappingProxyType(state.accounts),
                idempotency=MappingProxyType(state.idempotency),
                directory=self._directory.at(manifest.directory), clock_ms=state.clock_ms,
                rules=manifest.rules,
            )  # fmt: skip
            state.accounts.update(result.accounts)
            state.idempotency.update(result.idempotency)
            state.clock_ms = result.clock_ms
            for output in result.outputs:
                record = self._shell.route(output, partition)
                decoded.sent.append(record)
                self._keep(output, record, index, manifest, origins)
        again = self._shell.manifest(
            partition=partition, messages=messages, sent=decoded.sent,
            clock_before_ms=manifest.clock_before_ms, directory=manifest.directory,
            worker=manifest.worker, rules=manifest.rules,
        )  # fmt: skip
        if again.outputs != manifest.outputs:
            self._mismatch("digest", index, manifest, f"batch {partition}/{index}",
                           f"replayed {again.outputs}, recorded {manifest.outputs}")  # fmt: skip

    def _messages(self, index: int, manifest: BatchManifest) -> list[Message] | None:
        """The batch's inputs in order; None (and a mismatch) if the log lacks some."""
        found: list[Message] = []
        for run in manifest.runs:
            messages = self._inputs.run(run.topic, manifest.partition, run.first_offset,
                                        run.last_offset)  # fmt: skip
            if len(messages) != run.records:
                subject = f"{run.topic}[{manifest.partition}]@{run.first_offset}..{run.last_offset}"
                self._mismatch("inputs", index, manifest, subject,
                               f"the manifest names {run.records} records, the log has "
                               f"{len(messages)}")  # fmt: skip
                return None
            found += messages
        return found

    def _keep(
        self,
        output: object,
        record: Record,
        index: int,
        manifest: BatchManifest,
        origins: Mapping[str, str],
    ) -> None:
        if not isinstance(output, JournalEntry | Event) or record.value is None:
            return
        value = record.value[HEADER_SIZE:]
        payment_id = output.payment_id
        made = _Produced(value, manifest.partition, index, manifest.worker, origins.get(payment_id))
        if isinstance(output, JournalEntry):
            self._journal[output.entry_id] = made
            self._hash.update(_LENGTH.pack(len(value)))
            self._hash.update(value)
        else:
            self._events[output.event_id] = made

    def _mismatch(
        self, kind: DivergenceKind, index: int, manifest: BatchManifest, subject: str, detail: str
    ) -> None:
        found = Divergence(kind, manifest.partition, index, manifest.worker, subject, detail)
        self.report.batch_mismatches.append(found)
        if self.report.first_divergence is None:
            self.report.first_divergence = found

    # --- comparing ----------------------------------------------------------------------

    def compare(self, recorded: _Recorded, accounts: Mapping[str, Account]) -> None:
        self.report.journal_sha256 = self._hash.hexdigest()
        self.report.journal = self._compare("entry", self._journal, recorded.journal)
        self.report.events = self._compare("event", self._events, recorded.events)
        replayed: dict[str, Account] = {}
        for state in self._partitions.values():
            replayed.update(state.accounts)
        for account_id in sorted(replayed.keys() | accounts.keys()):
            ours, theirs = replayed.get(account_id), accounts.get(account_id)
            if ours != theirs:
                detail = f"replayed {ours}, the workers' table holds {theirs}"
                found = Divergence("balance", -1, None, None, account_id, detail)
                self.report.balance_differences.append(found)
                self._first(found)

    def _compare(
        self, what: str, replayed: Mapping[str, _Produced], recorded: Mapping[str, bytes]
    ) -> Compared:
        compared = Compared()
        for found_id in sorted(replayed.keys() | recorded.keys()):
            ours, theirs = replayed.get(found_id), recorded.get(found_id)
            if ours is not None and theirs is not None and ours.value == theirs:
                compared.matched += 1
                continue
            if ours is None:
                compared.missing.append(found_id)
                detail = f"the recorded {what} was not produced by replay"
                self._first(Divergence("missing", -1, None, None, found_id, detail))
            elif theirs is None:
                compared.extra.append(found_id)
                self._first(Divergence("extra", ours.partition, ours.batch, ours.worker,
                                       found_id, f"replay produced an {what} not recorded",
                                       ours.command))  # fmt: skip
            else:
                compared.differing.append(found_id)
                self._first(Divergence("differs", ours.partition, ours.batch, ours.worker,
                                       found_id, f"replayed {ours.value.hex()}, recorded "
                                       f"{theirs.hex()}", ours.command))  # fmt: skip
        return compared

    def _first(self, found: Divergence) -> None:
        if self.report.first_divergence is None:
            self.report.first_divergence = found


@dataclass(slots=True)
class _Recorded:
    journal: dict[str, bytes]
    events: dict[str, bytes]


def _recorded(bootstrap: str, topics: Topics, serde: AvroSerde) -> _Recorded:
    """The ledger's entries and the events by id, as the Avro body each was written with."""
    journal: dict[str, bytes] = {}
    for message in read_to_end(bootstrap, topics.ledger):
        value = message.value() or b""
        journal[serde.decode_journal_entry(value).entry_id] = value[HEADER_SIZE:]
    events: dict[str, bytes] = {}
    for message in read_to_end(bootstrap, topics.events):
        value = message.value() or b""
        events[serde.decode_event(value).event_id] = value[HEADER_SIZE:]
    return _Recorded(journal, events)


def _id_of(item: object) -> str:
    """The payment an input is about (a command's id, a leg's transfer)."""
    return str(getattr(item, "command_id", None) or getattr(item, "transfer_id", ""))


def _compared_line(what: str, compared: Compared) -> str:
    return (
        f"{what}: {compared.matched:,} matched, {len(compared.missing):,} missing, "
        f"{len(compared.extra):,} extra, {len(compared.differing):,} differing"
    )


def _divergence_json(found: Divergence) -> dict[str, Any]:
    return {
        "kind": found.kind, "partition": None if found.partition < 0 else found.partition,
        "batch": found.batch, "worker": found.worker, "subject": found.subject,
        "detail": found.detail, "command": found.command,
    }  # fmt: skip
