"""The recorded log replay reads, held in memory: manifests, inputs, the directory log and
what the workers recorded (``ledger``, ``events``, the accounts' changelog).

:func:`read_log` reads it all read_committed from a broker; tests change a
:class:`RecordedLog` to see replay find what was changed (a deleted ledger record, a
reordered manifest). Reading is all the I/O replay does, and it happens before anything
runs: the log is read at rest, manifests first, so a batch committed while it reads shows
as records no replayed batch produced.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, get_args

from confluent_kafka import Message

from paystream.audit.verify import latest_accounts
from paystream.ledger import Account, DirectoryEntry, Event, JournalEntry
from paystream.settings import KafkaConnection
from paystream.tables import directory as directory_records
from paystream.topology.avro import HEADER_SIZE, AvroSerde
from paystream.topology.dlq import PoisonMessage
from paystream.topology.manifest import BatchManifest, InputKind, decode_manifest
from paystream.topology.reader import read_to_end
from paystream.topology.shell import source
from paystream.topology.topics import Topics

__all__ = [
    "ROLES",
    "DirectoryReplica",
    "Inputs",
    "PlacedManifest",
    "RecordedLog",
    "RecordedOutput",
    "Role",
    "UnreadManifest",
    "build_log",
    "read_log",
    "read_records",
    "topic_of",
]

Reading = Callable[[str], None]
"""Told the name of each topic as its reading starts."""
Role = Literal["batches", "commands", "legs", "directory", "ledger", "events", "balances"]
"""What a topic is to replay."""
ROLES: Final[tuple[Role, ...]] = get_args(Role)
_INPUT_ROLES: Final[tuple[InputKind, ...]] = ("commands", "legs")


@dataclass(frozen=True, slots=True)
class PlacedManifest:
    """A manifest with where it is on ``batches`` and when it was written."""

    manifest: BatchManifest
    offset: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class UnreadManifest:
    """A record on ``batches`` that is not a manifest (replay reports it, never skips it)."""

    partition: int
    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class RecordedOutput:
    """A journal entry or event as recorded: its Avro body (without the wire header) and
    the entry or event it decodes to."""

    body: bytes
    item: JournalEntry | Event
    partition: int
    offset: int


class Inputs:
    """The committed records of ``commands`` and ``legs``, per partition, by offset."""

    def __init__(self, messages: Mapping[tuple[InputKind, int], Sequence[Message]]) -> None:
        self._messages = dict(messages)
        self._offsets = {key: [source(m)[2] for m in found] for key, found in messages.items()}

    def run(self, kind: InputKind, partition: int, first: int, last: int) -> Sequence[Message]:
        offsets = self._offsets.get((kind, partition), [])
        low, high = bisect_left(offsets, first), bisect_right(offsets, last)
        return self._messages.get((kind, partition), [])[low:high]

    def of(self, kind: InputKind, partition: int) -> Sequence[Message]:
        return self._messages.get((kind, partition), [])


class DirectoryReplica:
    """The directory at any position: moved forward record by record, rebuilt when a batch
    saw less than the one before it (its partition moved to a worker that had read less)."""

    def __init__(self, records: Mapping[int, Sequence[Message]]) -> None:
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
class RecordedLog:
    """Everything replay reads. ``manifests``: per source partition, in the order its
    batches ran; ``journal`` and ``events``: by id, as recorded."""

    manifests: dict[int, list[PlacedManifest]]
    unread: list[UnreadManifest]
    inputs: Inputs
    directory: dict[int, list[Message]]
    journal: dict[str, RecordedOutput]
    events: dict[str, RecordedOutput]
    accounts: dict[str, Account]
    events_order: list[str] = field(default_factory=list)
    """Event ids in the order recorded (per payment: the order its events were written)."""
    unreadable: list[str] = field(default_factory=list)
    """``topic[partition]@offset`` of recorded ledger and events records that do not decode."""
    records: Mapping[Role, Sequence[Message]] = field(default_factory=dict)
    """The records it was built from, per topic (what a log file holds)."""


def read_records(
    kafka: KafkaConnection, topics: Topics, *, reading: Reading | None = None
) -> dict[Role, list[Message]]:
    """Every committed record (read_committed) of the topics replay reads, manifests first."""
    tell = reading or (lambda _topic: None)
    found: dict[Role, list[Message]] = {}
    for role in ROLES:
        topic = topic_of(topics, role)
        tell(topic)
        found[role] = list(read_to_end(kafka, topic))
    return found


def read_log(
    kafka: KafkaConnection, topics: Topics, serde: AvroSerde, *, reading: Reading | None = None
) -> RecordedLog:
    """The log as committed now (read_committed), manifests first."""
    return build_log(read_records(kafka, topics, reading=reading), serde)


def build_log(records: Mapping[Role, Sequence[Message]], serde: AvroSerde) -> RecordedLog:
    """The log replay needs, from the records of each topic."""
    manifests, unread = _manifests(records["batches"], serde)
    inputs: dict[tuple[InputKind, int], Sequence[Message]] = {}
    for kind in _INPUT_ROLES:
        for partition, found in by_partition(records[kind]).items():
            inputs[(kind, partition)] = found
    unreadable: list[str] = []
    journal: dict[str, RecordedOutput] = {}
    for entry in _outputs(records["ledger"], serde.decode_journal_entry, unreadable):
        journal[_id_of(entry.item)] = entry
    events_order: list[str] = []
    events: dict[str, RecordedOutput] = {}
    for event in _outputs(records["events"], serde.decode_event, unreadable):
        event_id = _id_of(event.item)
        events[event_id] = event
        events_order.append(event_id)
    return RecordedLog(
        manifests=manifests, unread=unread, inputs=Inputs(inputs),
        directory=by_partition(records["directory"]), journal=journal, events=events,
        accounts=latest_accounts(records["balances"]), events_order=events_order,
        unreadable=unreadable, records=records,
    )  # fmt: skip


def topic_of(topics: Topics, role: Role) -> str:
    """The topic that plays ``role``."""
    names: dict[Role, str] = {
        "batches": topics.batches, "commands": topics.commands, "legs": topics.legs,
        "directory": topics.directory, "ledger": topics.ledger, "events": topics.events,
        "balances": topics.balances_changelog,
    }  # fmt: skip
    return names[role]


def by_partition(messages: Iterable[Message]) -> dict[int, list[Message]]:
    found: dict[int, list[Message]] = defaultdict(list)
    for message in messages:
        found[source(message)[1]].append(message)
    return dict(found)


_UNREAD_SHOWN_MAX: Final = 200
"""Characters of a decoding error kept in a report."""


def _manifests(
    messages: Iterable[Message], serde: AvroSerde
) -> tuple[dict[int, list[PlacedManifest]], list[UnreadManifest]]:
    found: dict[int, list[PlacedManifest]] = defaultdict(list)
    unread: list[UnreadManifest] = []
    for message in messages:
        _topic, partition, offset = source(message)
        try:
            manifest = decode_manifest(serde, message.value() or b"")
        except (PoisonMessage, KeyError, TypeError, ValueError) as error:
            unread.append(UnreadManifest(partition, offset, str(error)[:_UNREAD_SHOWN_MAX]))
            continue
        if manifest.partition != partition:
            reason = f"a manifest of partition {manifest.partition} on partition {partition}"
            unread.append(UnreadManifest(partition, offset, reason))
            continue
        _kind, timestamp_ms = message.timestamp()
        found[partition].append(PlacedManifest(manifest, offset, max(int(timestamp_ms), 0)))
    return dict(found), unread


def _outputs(
    messages: Iterable[Message],
    decode: Callable[[bytes], JournalEntry | Event],
    unreadable: list[str],
) -> Iterable[RecordedOutput]:
    for message in messages:
        value = message.value() or b""
        try:
            item = decode(value)
        except PoisonMessage:
            topic, partition, offset = source(message)
            unreadable.append(f"{topic}[{partition}]@{offset}")
            continue
        _topic, partition, offset = source(message)
        yield RecordedOutput(value[HEADER_SIZE:], item, partition, offset)


def _id_of(item: JournalEntry | Event) -> str:
    return item.entry_id if isinstance(item, JournalEntry) else item.event_id
