"""One batch of messages from ``commands`` and ``legs``: decode, core, records.

The agent stays thin: grouping by partition, decoding and routing outputs
live here; every money rule is in :func:`paystream.ledger.process_batch`.
Nothing here touches Kafka or writes a store: a batch becomes the records to
send in one transaction and the table writes to apply once it commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message

from paystream.agents.stores import Stores, TableView, TableWrite
from paystream.ledger import (
    Account,
    Compensation,
    CreditLeg,
    DirectoryEntry,
    Event,
    IdempotencyKey,
    IdempotencyRecord,
    Input,
    JournalEntry,
    Output,
    check_balanced,
    ensure,
    process_batch,
)
from paystream.tables import codecs
from paystream.topology.avro import AvroSerde
from paystream.topology.dlq import PoisonMessage, dlq_headers
from paystream.topology.topics import Topics

BALANCES = "balances"
IDEMPOTENCY = "idempotency"
TABLES = (BALANCES, IDEMPOTENCY)


@dataclass(frozen=True, slots=True)
class Record:
    """One message to send; ``partition=None`` lets the murmur2 partitioner choose."""

    topic: str
    key: bytes
    value: bytes
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class Batch:
    """What one batch produces: records for its transaction, writes for after it."""

    records: list[Record] = field(default_factory=list)
    writes: list[TableWrite] = field(default_factory=list)


def source(message: Message) -> tuple[str, int, int]:
    """A consumed message's topic, partition and offset (always set on one)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("not a consumed message")
    return topic, partition, offset


class BatchProcessor:
    def __init__(
        self,
        *,
        topics: Topics,
        serde: AvroSerde,
        stores: Stores,
        directory: Mapping[str, DirectoryEntry],
    ) -> None:
        self._topics = topics
        self._serde = serde
        self._stores = stores
        self._directory = directory
        self.changelogs = {
            BALANCES: topics.balances_changelog,
            IDEMPOTENCY: topics.idempotency_changelog,
        }

    def process(self, messages: Sequence[Message]) -> Batch:
        """The records and table writes of ``messages`` (any partitions, log order)."""
        by_partition: dict[int, list[Message]] = defaultdict(list)
        for message in messages:
            by_partition[source(message)[1]].append(message)
        batch = Batch()
        for partition, group in by_partition.items():
            self._process_partition(partition, group, batch)
        return batch

    def _process_partition(self, partition: int, messages: list[Message], batch: Batch) -> None:
        inputs: list[Input] = []
        for message in messages:
            try:
                inputs.append(self._decode(message))
            except PoisonMessage as poison:
                batch.records.append(self._dead_letter(message, poison))
        if not inputs:
            return
        result = process_batch(
            inputs,
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
        )
        self._write_accounts(partition, result.accounts, batch)
        self._write_idempotency(partition, result.idempotency, batch)
        batch.records += [self._route(output, partition) for output in result.outputs]

    def _decode(self, message: Message) -> Input:
        value = message.value()
        if not isinstance(value, bytes):
            raise PoisonMessage("undecodable", "empty message value")
        if message.topic() == self._topics.commands:
            return self._serde.decode_command(value)
        return self._serde.decode_leg(value)

    def _dead_letter(self, message: Message, poison: PoisonMessage) -> Record:
        topic, partition, offset = source(message)
        headers = dlq_headers(poison, topic=topic, partition=partition, offset=offset)
        key, value = message.key(), message.value()
        return Record(
            self._topics.dlq,
            key=key if isinstance(key, bytes) else b"",
            value=value if isinstance(value, bytes) else b"",
            headers=headers,
        )

    def _write_accounts(self, partition: int, accounts: dict[str, Account], batch: Batch) -> None:
        for account_id, account in accounts.items():
            key = codecs.encode_account_key(account_id)
            self._write(batch, BALANCES, partition, key, codecs.encode_account(account))

    def _write_idempotency(
        self, partition: int, records: dict[IdempotencyKey, IdempotencyRecord], batch: Batch
    ) -> None:
        for key, record in records.items():
            encoded = codecs.encode_idempotency_key(key)
            value = codecs.encode_idempotency_record(record)
            self._write(batch, IDEMPOTENCY, partition, encoded, value)

    def _write(self, batch: Batch, table: str, partition: int, key: bytes, value: bytes) -> None:
        """A table write, and the same bytes as its changelog record."""
        batch.writes.append(TableWrite(table, partition, key, value))
        batch.records.append(Record(self.changelogs[table], key, value, partition))

    def _route(self, output: Output, partition: int) -> Record:
        serde, topics = self._serde, self._topics
        if isinstance(output, JournalEntry):
            check_balanced(output)  # the boundary check before anything leaves the worker
            key = output.account_id.encode()
            return Record(topics.ledger, key, serde.encode_journal_entry(output))
        if isinstance(output, Event):
            return Record(topics.events, output.payment_id.encode(), serde.encode_event(output))
        if isinstance(output, CreditLeg | Compensation):
            return Record(topics.legs, output.account_id.encode(), serde.encode_leg(output))
        ensure(isinstance(output, DirectoryEntry), f"unroutable output {type(output).__name__}")
        key = codecs.encode_account_key(output.account_id)
        # Every worker follows all partitions of the compacted directory topic.
        return Record(topics.directory, key, codecs.encode_directory_entry(output), partition)
