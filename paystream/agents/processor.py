"""One batch of messages from ``commands`` and ``legs``: decode, core, records.

The agent stays thin: grouping by partition, decoding, the checks only the
shell can make (is this record on its account's partition?) and routing
outputs live here; every money rule is in :func:`paystream.ledger.process_batch`.
Nothing here touches Kafka or writes a store: a batch becomes the records to
send in one transaction and the table writes to apply once it commits.

Bad input never raises out of here. A command that cannot be decoded,
validated or placed goes to ``dlq`` (with its reason; a bounded prefix of an
oversized value), and when its ids can be read the core answers it
``Rejected`` with that reason. A *leg* that cannot be decoded is an internal
error (legs are written by workers only): :class:`InvariantViolation`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message

from paystream.agents.directory import Directory, DirectoryPosition
from paystream.agents.stores import Stores, TableView, TableWrite
from paystream.ledger import (
    CORE_VERSION,
    Account,
    Command,
    Compensation,
    Confirmation,
    CreditLeg,
    Delivery,
    DirectoryEntry,
    Event,
    IdempotencyKey,
    IdempotencyRecord,
    Input,
    InvariantViolation,
    JournalEntry,
    Malformed,
    Output,
    RejectionCode,
    Rules,
    check_balanced,
    ensure,
    process_batch,
)
from paystream.ledger.core import RESERVATION_OPEN_MS
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

BALANCES = "balances"
IDEMPOTENCY = "idempotency"
TABLES = (BALANCES, IDEMPOTENCY)
EXPIRED_PER_BATCH_MAX = 1_000
"""Most expired idempotency rows one batch deletes (the rest wait for the next batch)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One message to send; ``partition=None`` lets the murmur2 partitioner choose.

    ``value=None`` is a tombstone (a deleted table row on a compacted changelog).
    """

    topic: str
    key: bytes
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class Batch:
    """What one batch produces: records for its transaction, writes for after it."""

    records: list[Record] = field(default_factory=list)
    writes: list[TableWrite] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    """The core's outputs, for metrics."""
    dead_letters: list[str] = field(default_factory=list)
    """The DLQ reason of every record sent to ``dlq``, for metrics."""


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


class BatchProcessor:
    def __init__(
        self,
        *,
        topics: Topics,
        serde: AvroSerde,
        stores: Stores,
        directory: Directory,
        rules: Rules,
        worker: str,
    ) -> None:
        """``worker``: the transactional id the manifests name."""
        self._topics = topics
        self._worker = worker
        self._kinds: dict[str, OutputKind] = {
            topics.ledger: "ledger", topics.events: "events", topics.legs: "legs",
            topics.directory: "directory", topics.dlq: "dlq",
        }  # fmt: skip
        self._serde = serde
        self._stores = stores
        self._directory = directory
        self._rules = rules
        self.commands_topic = topics.commands
        self.changelogs = {
            BALANCES: topics.balances_changelog,
            IDEMPOTENCY: topics.idempotency_changelog,
        }

    def process(self, messages: Sequence[Message]) -> Batch:
        """The records and table writes of ``messages`` (any partitions, log order), with a
        manifest per partition; the directory holds still meanwhile."""
        by_partition: dict[int, list[Message]] = defaultdict(list)
        for message in messages:
            by_partition[source(message)[1]].append(message)
        batch = Batch()
        with self._directory.frozen() as position:
            for partition, group in by_partition.items():
                self._process_partition(partition, group, batch, position)
        return batch

    def _process_partition(
        self, partition: int, messages: list[Message], batch: Batch, position: DirectoryPosition
    ) -> None:
        sent: list[Record] = []
        deliveries: list[Delivery] = []
        for message in messages:
            item = self._input(message, partition, batch, sent)
            if item is not None:
                offset = source(message)[2]
                deliveries.append(
                    Delivery(item=item, offset=offset, log_time_ms=log_time_ms(message))
                )
        clock_ms = self._clock_ms(partition)
        if deliveries:
            self._run_core(partition, deliveries, clock_ms, batch, sent)
        batch.records += sent
        batch.records.append(self._manifest(partition, messages, sent, clock_ms, position))

    def _run_core(
        self,
        partition: int,
        deliveries: list[Delivery],
        clock_ms: int,
        batch: Batch,
        sent: list[Record],
    ) -> None:
        result = process_batch(
            deliveries,
            partition=partition,
            accounts=TableView(
                self._stores.get(BALANCES, partition),
                encode_key=codecs.encode_account_key,
                decode_value=codecs.decode_account,
            ),
            idempotency=TableView(
                self._stores.get(IDEMPOTENCY, partition),
                encode_key=codecs.encode_idempotency_key,
                decode_value=codecs.decode_idempotency_record,
            ),
            directory=self._directory,
            clock_ms=clock_ms,
            rules=self._rules,
        )
        self._write_accounts(partition, result.accounts, batch)
        written = self._write_idempotency(partition, result.idempotency, batch)
        if result.clock_ms != clock_ms:
            self._write(
                batch,
                IDEMPOTENCY,
                partition,
                codecs.CLOCK_KEY,
                codecs.encode_clock(result.clock_ms),
            )
        self._expire(partition, result.clock_ms, written, batch)
        batch.outputs += result.outputs
        sent += [self._route(output, partition) for output in result.outputs]

    def _manifest(
        self,
        partition: int,
        messages: list[Message],
        sent: list[Record],
        clock_ms: int,
        position: DirectoryPosition,
    ) -> Record:
        """The batch's manifest on this partition: its inputs in order, the directory
        position, and the digest of ``sent`` (written in the same transaction)."""
        hasher = OutputHasher()
        for record in sent:
            hasher.add(self._kinds[record.topic], record.key, record.value)
        inputs: list[tuple[InputKind, int]] = [
            ("commands" if topic == self.commands_topic else "legs", offset)
            for topic, _partition, offset in map(source, messages)
        ]
        manifest = BatchManifest(
            partition=partition, worker=self._worker, core_version=CORE_VERSION,
            rules=self._rules, clock_before_ms=clock_ms, runs=runs_of(inputs),
            directory=position, outputs=hasher.digest(),
        )  # fmt: skip
        value = encode_manifest(self._serde, manifest)
        return Record(self._topics.batches, str(partition).encode(), value, partition)

    # --- decoding --------------------------------------------------------------------

    def _input(
        self, message: Message, partition: int, batch: Batch, sent: list[Record]
    ) -> Input | None:
        """The message as the core's input; ``None`` when only the DLQ can take it."""
        topic, _, offset = source(message)
        if topic == self._topics.commands:
            command = self._command(message, partition)
            if isinstance(command, PoisonMessage):
                sent.append(self._dead_letter(message, command))
                batch.dead_letters.append(command.code)
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
        return partition_for(key, self._topics.partitions) == partition

    def _dead_letter(self, message: Message, poison: PoisonMessage) -> Record:
        topic, partition, offset = source(message)
        headers = dlq_headers(poison, topic=topic, partition=partition, offset=offset)
        key, value = message.key(), message.value()
        key, value, headers = dlq_copy(
            key if isinstance(key, bytes) else b"",
            value if isinstance(value, bytes) else b"",
            headers,
        )
        return Record(self._topics.dlq, key=key, value=value, headers=headers)

    # --- tables ----------------------------------------------------------------------

    def _clock_ms(self, partition: int) -> int:
        raw = self._stores.get(IDEMPOTENCY, partition)(codecs.CLOCK_KEY)
        return 0 if raw is None else codecs.decode_clock(raw)

    def _write_accounts(self, partition: int, accounts: dict[str, Account], batch: Batch) -> None:
        for account_id, account in accounts.items():
            key = codecs.encode_account_key(account_id)
            self._write(batch, BALANCES, partition, key, codecs.encode_account(account))

    def _write_idempotency(
        self, partition: int, records: dict[IdempotencyKey, IdempotencyRecord], batch: Batch
    ) -> set[bytes]:
        """Each record and its expiry index row; returns the keys written."""
        written: set[bytes] = set()
        for key, record in records.items():
            encoded = codecs.encode_idempotency_key(key)
            written.add(encoded)
            value = codecs.encode_idempotency_record(record)
            self._write(batch, IDEMPOTENCY, partition, encoded, value)
            if record.expires_at_ms != RESERVATION_OPEN_MS:  # open reservations never expire
                index = codecs.encode_expiry_index_key(record.expires_at_ms, encoded)
                self._write(batch, IDEMPOTENCY, partition, index, b"")
        return written

    def _expire(self, partition: int, clock_ms: int, written: set[bytes], batch: Batch) -> None:
        """Delete rows the core already treats as absent (expired by ``clock_ms``), bounded.

        Storage only: results never depend on when this runs, so replay agrees.
        A row rewritten since its index row was made (a later expiry) is kept.
        """
        get = self._stores.get(IDEMPOTENCY, partition)
        for index, expires_at_ms, key in self._stores.expired(
            IDEMPOTENCY, partition, clock_ms, limit=EXPIRED_PER_BATCH_MAX
        ):
            self._write(batch, IDEMPOTENCY, partition, index, None)
            raw = get(key)
            if key in written or raw is None:
                continue
            if codecs.decode_idempotency_record(raw).expires_at_ms == expires_at_ms:
                self._write(batch, IDEMPOTENCY, partition, key, None)

    def _write(
        self, batch: Batch, table: str, partition: int, key: bytes, value: bytes | None
    ) -> None:
        """A table write (``None`` deletes), and the same bytes as its changelog record."""
        batch.writes.append(TableWrite(table, partition, key, value))
        batch.records.append(Record(self.changelogs[table], key, value, partition))

    # --- outputs ---------------------------------------------------------------------

    def _route(self, output: Output, partition: int) -> Record:
        serde, topics = self._serde, self._topics
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
        # Every worker follows all partitions of the compacted directory topic.
        return Record(topics.directory, key, codecs.encode_directory_entry(output), partition)


_WRONG: PoisonCode = "wrong_partition"
_ANSWER_CODES: dict[PoisonCode, RejectionCode] = {
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
