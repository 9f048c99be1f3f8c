"""One batch of messages from ``commands`` and ``legs``: the shell, the core, the tables.

The agent stays thin: the shell (:mod:`paystream.topology.shell`, shared with replay)
decodes records into deliveries or dead letters, routes outputs and writes manifests;
every money rule is in :func:`paystream.ledger.process_batch`; this module holds the
partition's tables and the order of the batch. Nothing here touches Kafka or writes a
store: a batch becomes the records to send in one transaction and the table writes to
apply once it commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message

from paystream.agents.directory import Directory, DirectoryPosition
from paystream.agents.stores import Index, Stores, TableView, TableWrite
from paystream.ledger import (
    Account,
    BatchResult,
    Delivery,
    IdempotencyKey,
    IdempotencyRecord,
    Output,
    Rules,
    ScreeningRules,
    process_batch,
)
from paystream.tables import codecs, payout_codecs
from paystream.topology.avro import AvroSerde
from paystream.topology.shell import Record, Shell, source
from paystream.topology.topics import Topics

__all__ = [
    "BALANCES",
    "IDEMPOTENCY",
    "INDEXES",
    "PAYOUTS",
    "Batch",
    "BatchProcessor",
    "Record",
    "changelogs",
]

BALANCES = "balances"
IDEMPOTENCY = "idempotency"
PAYOUTS = "payouts"
"""Payouts, their sources' screening profiles and the partition's screening rules
(``paystream.tables.payout_codecs``)."""
TABLES = (BALANCES, IDEMPOTENCY, PAYOUTS)
INDEXES: dict[str, Index] = {IDEMPOTENCY: codecs.expiry_index_row}
"""The stores' own index rows (derived, never on a changelog): which idempotency rows expire
when. Deriving them instead of sending them took 4 of the 17.4 records a payment wrote."""
EXPIRED_PER_BATCH_MAX = 1_000
"""Most expired idempotency rows one batch deletes (the rest wait for the next batch)."""


def changelogs(topics: Topics) -> dict[str, str]:
    """Each table's changelog topic."""
    return {
        BALANCES: topics.balances_changelog,
        IDEMPOTENCY: topics.idempotency_changelog,
        PAYOUTS: topics.payouts_changelog,
    }


@dataclass(slots=True)
class Batch:
    """What one batch produces: records for its transaction, writes for after it."""

    records: list[Record] = field(default_factory=list)
    writes: list[TableWrite] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    """The core's outputs, for metrics."""
    dead_letters: list[str] = field(default_factory=list)
    """The DLQ reason of every record sent to ``dlq``, for metrics."""


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
        self._shell = Shell(topics=topics, serde=serde)
        self._worker = worker
        self._stores = stores
        self._directory = directory
        self._rules = rules
        self.commands_topic = topics.commands
        self.changelogs = changelogs(topics)

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
        decoded = self._shell.decode(partition, messages)
        batch.dead_letters += decoded.dead_letters
        clock_ms = self._clock_ms(partition)
        if decoded.deliveries:
            outputs = self._run_core(partition, decoded.deliveries, clock_ms, batch)
            decoded.sent += [self._shell.route(output, partition) for output in outputs]
        batch.records += decoded.sent
        manifest = self._shell.manifest(
            partition=partition, messages=messages, sent=decoded.sent, clock_before_ms=clock_ms,
            directory=position, worker=self._worker, rules=self._rules,
        )  # fmt: skip
        batch.records.append(self._shell.manifest_record(manifest))

    def _run_core(
        self, partition: int, deliveries: list[Delivery], clock_ms: int, batch: Batch
    ) -> list[Output]:
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
            payouts=TableView(
                self._stores.get(PAYOUTS, partition),
                encode_key=payout_codecs.payout_key,
                decode_value=payout_codecs.decode_payout,
            ),
            profiles=TableView(
                self._stores.get(PAYOUTS, partition),
                encode_key=payout_codecs.profile_key,
                decode_value=payout_codecs.decode_profile,
            ),
            screening=self._screening(partition),
        )
        self._write_accounts(partition, result.accounts, batch)
        self._write_payouts(partition, result, batch)
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
        return list(result.outputs)

    # --- tables ----------------------------------------------------------------------

    def _clock_ms(self, partition: int) -> int:
        raw = self._stores.get(IDEMPOTENCY, partition)(codecs.CLOCK_KEY)
        return 0 if raw is None else codecs.decode_clock(raw)

    def _screening(self, partition: int) -> ScreeningRules:
        raw = self._stores.get(PAYOUTS, partition)(payout_codecs.RULES_KEY)
        return ScreeningRules() if raw is None else payout_codecs.decode_rules(raw)

    def _write_payouts(self, partition: int, result: BatchResult, batch: Batch) -> None:
        for payout_id, payout in result.payouts.items():
            key = payout_codecs.payout_key(payout_id)
            self._write(batch, PAYOUTS, partition, key, payout_codecs.encode_payout(payout))
        for account_id, profile in result.profiles.items():
            key = payout_codecs.profile_key(account_id)
            self._write(batch, PAYOUTS, partition, key, payout_codecs.encode_profile(profile))
        if result.screening is not None:
            value = payout_codecs.encode_rules(result.screening)
            self._write(batch, PAYOUTS, partition, payout_codecs.RULES_KEY, value)

    def _write_accounts(self, partition: int, accounts: dict[str, Account], batch: Batch) -> None:
        for account_id, account in accounts.items():
            key = codecs.encode_account_key(account_id)
            self._write(batch, BALANCES, partition, key, codecs.encode_account(account))

    def _write_idempotency(
        self, partition: int, records: dict[IdempotencyKey, IdempotencyRecord], batch: Batch
    ) -> set[bytes]:
        """Each record (the store derives its expiry index row: INDEXES); returns the keys."""
        written: set[bytes] = set()
        for key, record in records.items():
            encoded = codecs.encode_idempotency_key(key)
            written.add(encoded)
            value = codecs.encode_idempotency_record(record)
            self._write(batch, IDEMPOTENCY, partition, encoded, value)
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
            batch.writes.append(TableWrite(IDEMPOTENCY, partition, index, None))  # store only
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
