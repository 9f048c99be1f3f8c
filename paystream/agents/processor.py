"""One batch of events from ``commands`` and ``legs``: decode, core, write, send.

The agent stays thin: grouping by partition, decoding, and routing outputs
live here; every money rule is in :func:`paystream.ledger.process_batch`.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faust.types import EventT

from paystream.agents.outbox import Outbox
from paystream.agents.state import TableView, partition_db
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


@dataclass(frozen=True, slots=True)
class Tables:
    balances: Any
    idempotency: Any


class BatchProcessor:
    def __init__(
        self,
        *,
        topics: Topics,
        serde: AvroSerde,
        tables: Tables,
        directory: Mapping[str, DirectoryEntry],
        outbox: Outbox,
    ) -> None:
        self._topics = topics
        self._serde = serde
        self._tables = tables
        self._directory = directory
        self._outbox = outbox

    async def process(self, events: Sequence[EventT[bytes]]) -> int:
        """Apply ``events``; returns once every output is acknowledged by Kafka."""
        by_partition: dict[int, list[EventT[bytes]]] = defaultdict(list)
        for event in events:
            by_partition[event.message.partition].append(event)
        deliveries: list[Awaitable[Any]] = []
        for partition, group in by_partition.items():
            deliveries += await self._process_partition(partition, group)
        await asyncio.gather(*deliveries)
        return len(deliveries)

    async def _process_partition(
        self, partition: int, events: list[EventT[bytes]]
    ) -> list[Awaitable[Any]]:
        tid = self._outbox.transactional_id(events[0].message.tp)
        deliveries: list[Awaitable[Any]] = []
        inputs: list[Input] = []
        for event in events:
            try:
                inputs.append(self._decode(event))
            except PoisonMessage as poison:
                deliveries.append(await self._dead_letter(tid, event, poison))
        if not inputs:
            return deliveries
        balances = partition_db(self._tables.balances, partition)
        idempotency = partition_db(self._tables.idempotency, partition)
        result = process_batch(
            inputs,
            partition=partition,
            accounts=TableView(
                balances.get,
                encode_key=codecs.encode_account_key,
                decode_value=codecs.decode_account,
            ),
            idempotency=TableView(
                idempotency.get,
                encode_key=codecs.encode_idempotency_key,
                decode_value=codecs.decode_idempotency_record,
            ),
            directory=self._directory,
        )
        deliveries += await self._write_accounts(tid, partition, balances, result.accounts)
        deliveries += await self._write_idempotency(tid, partition, idempotency, result.idempotency)
        for output in result.outputs:
            deliveries.append(await self._send_output(tid, partition, output))
        return deliveries

    def _decode(self, event: EventT[bytes]) -> Input:
        message = event.message
        value = message.value
        if not isinstance(value, bytes):
            raise PoisonMessage("undecodable", "empty message value")
        if message.topic == self._topics.commands:
            return self._serde.decode_command(value)
        return self._serde.decode_leg(value)

    async def _dead_letter(
        self, tid: str, event: EventT[bytes], poison: PoisonMessage
    ) -> Awaitable[Any]:
        message = event.message
        headers = dlq_headers(
            poison, topic=message.topic, partition=message.partition, offset=message.offset
        )
        return await self._outbox.send(
            tid,
            self._topics.dlq,
            key=message.key or b"",
            value=message.value or b"",
            headers=headers,
        )

    async def _write_accounts(
        self, tid: str, partition: int, db: Any, accounts: dict[str, Account]
    ) -> list[Awaitable[Any]]:
        records = [
            (codecs.encode_account_key(account_id), codecs.encode_account(account))
            for account_id, account in accounts.items()
        ]
        return await self._write_table(tid, partition, db, self._topics.balances_changelog, records)

    async def _write_idempotency(
        self,
        tid: str,
        partition: int,
        db: Any,
        records: dict[IdempotencyKey, IdempotencyRecord],
    ) -> list[Awaitable[Any]]:
        encoded = [
            (codecs.encode_idempotency_key(key), codecs.encode_idempotency_record(record))
            for key, record in records.items()
        ]
        topic = self._topics.idempotency_changelog
        return await self._write_table(tid, partition, db, topic, encoded)

    async def _write_table(
        self, tid: str, partition: int, db: Any, topic: str, records: list[tuple[bytes, bytes]]
    ) -> list[Awaitable[Any]]:
        """Write the local store and send the same bytes as its changelog record."""
        deliveries = []
        for key, value in records:
            db.put(key, value)
            deliveries.append(
                await self._outbox.send(tid, topic, key=key, value=value, partition=partition)
            )
        return deliveries

    async def _send_output(self, tid: str, partition: int, output: Output) -> Awaitable[Any]:
        topic, key, value, target = self._route(output, partition)
        return await self._outbox.send(tid, topic, key=key, value=value, partition=target)

    def _route(self, output: Output, partition: int) -> tuple[str, bytes, bytes, int | None]:
        """(topic, key, value, partition or None for the murmur2 partitioner)."""
        serde, topics = self._serde, self._topics
        if isinstance(output, JournalEntry):
            check_balanced(output)  # the boundary check before anything leaves the worker
            key = output.account_id.encode()
            return topics.ledger, key, serde.encode_journal_entry(output), None
        if isinstance(output, Event):
            return topics.events, output.payment_id.encode(), serde.encode_event(output), None
        if isinstance(output, CreditLeg | Compensation):
            return topics.legs, output.account_id.encode(), serde.encode_leg(output), None
        ensure(isinstance(output, DirectoryEntry), f"unroutable output {type(output).__name__}")
        key = codecs.encode_account_key(output.account_id)
        # Every worker follows all partitions of the compacted directory topic.
        return topics.directory, key, codecs.encode_directory_entry(output), partition
