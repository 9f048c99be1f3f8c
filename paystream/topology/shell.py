"""What the ledger worker does around the core, in one place that replay shares.

Records in: a partition's consumed ``commands`` and ``legs`` records become the core's
deliveries -- or dead letters (with their reason; a bounded prefix of an oversized value),
answered ``Rejected`` by the core when their ids can be read. Records out: the core's
outputs become the records to send, each to its topic, key and partition. Then the batch's
manifest: its inputs in order and the digest of what it sent.

Bad input never raises out of here. A *leg* that cannot be decoded is an internal error
(legs are written by workers only): :class:`InvariantViolation`. Nothing here touches
Kafka or a store: the worker (``paystream.agents``) sends and stores; replay
(``paystream.audit.replay``) compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from confluent_kafka import Message

from paystream.ledger import (
    CORE_VERSION,
    Command,
    Compensation,
    Confirmation,
    CreditLeg,
    Delivery,
    DirectoryEntry,
    Event,
    Input,
    InvariantViolation,
    JournalEntry,
    Malformed,
    Output,
    RejectionCode,
    Rules,
    check_balanced,
    ensure,
)
from paystream.tables import codecs
from paystream.topology import records, validation
from paystream.topology.avro import AvroSerde
from paystream.topology.dlq import PoisonCode, PoisonMessage, dlq_copy, dlq_headers
from paystream.topology.manifest import (
    BatchManifest,
    InputKind,
    OutputHasher,
    OutputKind,
    encode_manifest,
    runs_of,
)
from paystream.topology.partitioner import partition_for
from paystream.topology.topics import Topics

__all__ = ["Decoded", "Record", "Shell", "log_time_ms", "source"]


@dataclass(slots=True)
class Record:
    """One message to send; ``partition=None`` lets the murmur2 partitioner choose.

    ``value=None`` is a tombstone (a deleted table row on a compacted changelog). Not frozen,
    though nothing changes one: a batch makes about 15 a payment, and a frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field) took 2.0 µs against 0.23 µs; frozen
    dataclasses' constructors were 15 % of the worker's batch path (py-spy).
    """

    topic: str
    key: bytes
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class Decoded:
    """A partition's records as the core takes them."""

    deliveries: list[Delivery] = field(default_factory=list)
    origins: list[tuple[str, int]] = field(default_factory=list)
    """The (topic, offset) each delivery came from."""
    sent: list[Record] = field(default_factory=list)
    """The dead letters, in input order (the core's outputs follow them)."""
    dead_letters: list[str] = field(default_factory=list)
    """The DLQ reason of each."""


def source(message: Message) -> tuple[str, int, int]:
    """A consumed message's topic, partition and offset (always set on one)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("not a consumed message")
    return topic, partition, offset


def log_time_ms(message: Message) -> int:
    """The record's timestamp (``LogAppendTime`` on the inputs); 0 when it has none."""
    _kind, timestamp_ms = message.timestamp()
    return max(int(timestamp_ms), 0)


class Shell:
    """Decoding, routing and manifests for ``topics``, with ``serde``."""

    def __init__(self, *, topics: Topics, serde: AvroSerde) -> None:
        self.topics = topics
        self._serde = serde
        self._kinds: dict[str, OutputKind] = {
            topics.ledger: "ledger", topics.events: "events", topics.legs: "legs",
            topics.directory: "directory", topics.dlq: "dlq",
        }  # fmt: skip

    def decode(self, partition: int, messages: Sequence[Message]) -> Decoded:
        """``messages`` (all of ``partition``, in the order consumed) as deliveries."""
        decoded = Decoded()
        for message in messages:
            item = self._input(message, partition, decoded)
            if item is not None:
                topic, _partition, offset = source(message)
                decoded.deliveries.append(
                    Delivery(item=item, offset=offset, log_time_ms=log_time_ms(message))
                )
                decoded.origins.append((topic, offset))
        return decoded

    def route(self, output: Output, partition: int) -> Record:
        """Where an output of the core on ``partition`` goes, encoded."""
        serde, topics = self._serde, self.topics
        if isinstance(output, JournalEntry):
            check_balanced(output)  # the boundary check before anything leaves the worker
            key = output.account_id.encode()
            return Record(topics.ledger, key, serde.encode_journal_entry(output))
        if isinstance(output, Event):
            return Record(topics.events, output.payment_id.encode(), serde.encode_event(output))
        if isinstance(output, CreditLeg | Confirmation | Compensation):
            return Record(topics.legs, output.account_id.encode(), serde.encode_leg(output))
        ensure(isinstance(output, DirectoryEntry), f"unroutable output {type(output).__name__}")
        key = codecs.encode_account_key(output.account_id)
        # Written to the source's partition; every worker follows all of them.
        return Record(topics.directory, key, codecs.encode_directory_entry(output), partition)

    def manifest(
        self,
        *,
        partition: int,
        messages: Sequence[Message],
        sent: Sequence[Record],
        clock_before_ms: int,
        directory: tuple[tuple[int, int], ...],
        worker: str,
        rules: Rules,
    ) -> BatchManifest:
        """The manifest of a batch on ``partition``: its inputs in order, the directory
        position, and the digest of ``sent`` (dead letters and routed outputs, in order)."""
        hasher = OutputHasher()
        for record in sent:
            hasher.add(self._kinds[record.topic], record.key, record.value)
        inputs: list[tuple[InputKind, int]] = [
            ("commands" if topic == self.topics.commands else "legs", offset)
            for topic, _partition, offset in map(source, messages)
        ]
        return BatchManifest(
            partition=partition, worker=worker, core_version=CORE_VERSION, rules=rules,
            clock_before_ms=clock_before_ms, runs=runs_of(inputs), directory=directory,
            outputs=hasher.digest(),
        )  # fmt: skip

    def manifest_record(self, manifest: BatchManifest) -> Record:
        value = encode_manifest(self._serde, manifest)
        partition = manifest.partition
        return Record(self.topics.batches, str(partition).encode(), value, partition)

    # --- decoding --------------------------------------------------------------------

    def _input(self, message: Message, partition: int, decoded: Decoded) -> Input | None:
        """The message as the core's input; ``None`` when only the DLQ can take it."""
        topic, _, offset = source(message)
        if topic == self.topics.commands:
            command = self._command(message, partition)
            if isinstance(command, PoisonMessage):
                decoded.sent.append(self._dead_letter(message, command))
                decoded.dead_letters.append(command.code)
                return _malformed(command)
            return command
        try:
            return self._serde.decode_leg(_value(message))
        except PoisonMessage as poison:  # only workers write legs: a bug, never client data
            raise InvariantViolation(
                f"undecodable leg at {topic}[{partition}]@{offset}: {poison}"
            ) from poison

    def _command(self, message: Message, partition: int) -> Command | PoisonMessage:
        """The command, or why not: undecodable, invalid, or not on its account's partition."""
        key = message.key()
        try:
            command = self._serde.decode_command(_value(message))
        except PoisonMessage as poison:
            header = poison.header
            if header is None or not validation.header_is_readable(header):
                return poison  # no ids to answer with: the decoding reason, DLQ only
            if key == header.account_id.encode() and self._placed(key, partition):
                return poison  # its own partition: answered with the decoding reason
            return PoisonMessage(_WRONG, _misplaced(key, partition), header=header)
        if key != command.account_id.encode() or not self._placed(key, partition):
            return PoisonMessage(
                _WRONG, _misplaced(key, partition), header=records.command_header(command)
            )
        return command

    def _placed(self, key: bytes, partition: int) -> bool:
        """Co-partitioning: an account's records live on murmur2(key) % partitions."""
        return partition_for(key, self.topics.partitions) == partition

    def _dead_letter(self, message: Message, poison: PoisonMessage) -> Record:
        topic, partition, offset = source(message)
        headers = dlq_headers(poison, topic=topic, partition=partition, offset=offset)
        key, value = message.key(), message.value()
        key, value, headers = dlq_copy(
            key if isinstance(key, bytes) else b"",
            value if isinstance(value, bytes) else b"",
            headers,
        )
        return Record(self.topics.dlq, key=key, value=value, headers=headers)


_WRONG: Final[PoisonCode] = "wrong_partition"
_ANSWER_CODES: Final[dict[PoisonCode, RejectionCode]] = {
    "invalid_field": "invalid_field",
    "unknown_command": "unknown_command",
    "wrong_partition": "wrong_partition",
}
"""DLQ reasons that can come with readable ids, as the code of their ``Rejected`` answer."""


def _value(message: Message) -> bytes:
    value = message.value()
    if not isinstance(value, bytes):
        raise PoisonMessage("undecodable", "empty message value")
    return value


def _misplaced(key: object, partition: int) -> str:
    shown = repr(key)[:80]
    return f"key {shown} is not this command's account, or not on partition {partition}"


def _malformed(poison: PoisonMessage) -> Malformed | None:
    """The core's input for a dead-lettered command whose ids can key an answer."""
    header, code = poison.header, _ANSWER_CODES.get(poison.code)
    if header is None or code is None or not validation.header_is_readable(header):
        return None
    return Malformed(
        command_id=header.command_id,
        request_id=header.request_id,
        partner_id=header.partner_id,
        issued_at_ms=max(header.issued_at_ms, 0),
        account_id=header.account_id,
        command_type=header.command_type[: validation.ID_LENGTH_MAX],
        code=code,
    )
