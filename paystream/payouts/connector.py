"""``paystream rail``: queued payouts to the bank, the bank's answers back to the ledger.

One consumer-group member (several copies share the group) reads ``events``
read_committed and acts on payouts' own states:

- ``Queued`` -> a ``SendPayout`` command: the payout's source partition moves it to
  ``Sending`` (or refuses, if an officer stopped it meanwhile). The bank never sees a payout
  its worker has not first marked as sent, so an override cannot void funds the bank pays.
- ``Sending`` -> the payout goes to the bank as a pain.001 (:mod:`paystream.payouts.bank`:
  retries, AIMD on 429), the connector follows its pacs.002 status to the end, and puts
  ``SettlePayout`` or ``FailPayout`` (the bank's ISO reason code and text) on Kafka.

Every command's request id is derived from the payout (``rail <step> <payout id>``) and its
body from the payout's event and the bank's stored answer, so a command sent twice is a
``Duplicate`` at the worker, never a second effect. Progress is committed with the outputs:
each transaction carries the commands produced since the last one and the events partitions'
offsets up to the first event whose work is not done (:class:`paystream.payouts.pacing.
Progress`), through ``send_offsets_to_transaction`` (a fenced member is refused). A
restarted connector reads again exactly the events whose outcome was not committed; for a
payout already at the bank it sends the same instruction under the same end-to-end id and
gets the bank's stored status back. Any Kafka error ends the connector's run; ``run_forever``
starts a new one from the committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from paystream.ledger import (
    RAIL_PARTNER_ID,
    Event,
    FailPayout,
    PayoutDetails,
    SendPayout,
    SettlePayout,
    is_own_event,
    mint_command_id,
)
from paystream.ledger.ids import ULID_RANDOM_BYTES
from paystream.payouts import metrics
from paystream.payouts.bank import Bank, GivenUp
from paystream.payouts.pacing import Aimd, Progress
from paystream.rail.iso20022 import Instruction, StatusReport
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.partitioner import partition_for
from paystream.topology.registry import registry_from_url
from paystream.topology.restarts import Restarting
from paystream.topology.topics import Topics, ensure_topics, rail_group

__all__ = [
    "Debtor",
    "RailConnector",
    "RailOptions",
    "RailService",
    "instruction_of",
    "rail_command",
]

CONSUME_BATCH_MAX: Final = 500
POLL_TIMEOUT_S: Final = 0.1
COMMIT_INTERVAL_S: Final = 0.1
CALL_TIMEOUT_S: Final = 30.0
SESSION_TIMEOUT_S: Final = 10.0
REASON_TEXT_LENGTH_MAX: Final = 500

logger = logging.getLogger("paystream.rail")
RailCommand = SendPayout | SettlePayout | FailPayout


@dataclass(frozen=True, slots=True, kw_only=True)
class Debtor:
    """The platform's own account at the bank, which every payout is paid from."""

    name: str = "paystream payouts"
    iban: str = "DE02100100100006820101"
    bic: str = "PBNKDEFFXXX"


@dataclass(frozen=True, slots=True, kw_only=True)
class RailOptions:
    url: str
    debtor: Debtor = field(default_factory=Debtor)
    in_flight_max: int = 512
    """Payouts at the bank at once; beyond it the connector stops reading events."""
    rate_per_s: float = 100.0
    rate_min_per_s: float = 1.0
    rate_max_per_s: float = 5_000.0
    rate_increase_per_s: float = 50.0


def instruction_of(event: Event, debtor: Debtor) -> Instruction:
    """The bank instruction of a payout's event (the same for every event of the payout)."""
    details = _details(event)
    if event.amount_minor is None or event.currency is None:
        raise ValueError(f"{event.event_id}: a payout's event without its amount")
    return Instruction(
        end_to_end_id=event.payment_id, amount_minor=event.amount_minor,
        currency=event.currency, creditor_name=details.beneficiary_name,
        creditor_country=details.beneficiary_country, creditor_iban=details.beneficiary_iban,
        creditor_bic=details.beneficiary_bic,
        creditor_account_number=details.beneficiary_account_number,
        creditor_routing_number=details.beneficiary_routing_number,
        reference=event.reference, debtor_name=debtor.name, debtor_iban=debtor.iban,
        debtor_bic=debtor.bic,
    )  # fmt: skip


def _details(event: Event) -> PayoutDetails:
    if event.payout is None:
        raise ValueError(f"{event.event_id} is not a payout's event")
    return event.payout


def rail_command(
    event: Event, report: StatusReport | None, *, partitions: int, now_ms: int
) -> RailCommand:
    """``SendPayout`` (no report yet), or the bank's outcome as ``SettlePayout`` /
    ``FailPayout``; keyed by the payout's source account, request id derived from the
    payout so a repeat is a ``Duplicate``."""
    command_id = mint_command_id(
        partition=partition_for(event.account_id.encode(), partitions),
        at_ms=now_ms,
        random_bytes=os.urandom(ULID_RANDOM_BYTES),
    )
    envelope: dict[str, Any] = {
        "command_id": command_id, "partner_id": RAIL_PARTNER_ID, "issued_at_ms": now_ms,
        "account_id": event.account_id, "payout_id": event.payment_id,
    }  # fmt: skip
    if report is None:
        return SendPayout(request_id=f"rail send {event.payment_id}", **envelope)
    if report.status == "ACSC":
        return SettlePayout(request_id=f"rail settle {event.payment_id}", **envelope)
    if report.status != "RJCT" or report.reason_code is None:
        raise ValueError(f"not a final status: {report!r}")
    text = report.reason_text[:REASON_TEXT_LENGTH_MAX] if report.reason_text else None
    return FailPayout(
        request_id=f"rail fail {event.payment_id}", reason_code=report.reason_code,
        reason=text, **envelope,
    )  # fmt: skip


def _acts_on(event: Event) -> bool:
    return event.payout is not None and is_own_event(event) and event.type in ("Queued", "Sending")


class RailConnector:
    """One run: from the committed offsets until stopped or a Kafka error."""

    def __init__(self, settings: Settings, options: RailOptions, *, name: str) -> None:
        self._topics = Topics.from_settings(settings)
        ensure_topics(settings.kafka, self._topics)
        self._serde = AvroSerde(
            registry_from_url(settings.schema_registry_url, settings.data_dir),
            topics=self._topics.payloads(),
        )
        self._options = options
        self._consumer = Consumer(_consumer_config(settings))
        self._producer = Producer(_producer_config(settings, name))
        self._progress: dict[int, Progress] = {}
        self._ready: list[tuple[int, int, RailCommand]] = []
        self._tasks: dict[tuple[int, int], asyncio.Task[None]] = {}
        self._stopping = threading.Event()
        self._revoked: list[int] = []
        self._lock = threading.Lock()
        self._failure: BaseException | None = None

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        self._producer.init_transactions(CALL_TIMEOUT_S)
        self._consumer.subscribe(
            [self._topics.events], on_assign=self._assigned, on_revoke=self._lost,
            on_lost=self._lost,
        )  # fmt: skip
        try:
            asyncio.run(self._loop())
        finally:
            self._consumer.close()

    async def _loop(self) -> None:
        pacing = Aimd(
            rate_per_s=self._options.rate_per_s, rate_min_per_s=self._options.rate_min_per_s,
            rate_max_per_s=self._options.rate_max_per_s,
            increase_per_s=self._options.rate_increase_per_s,
        )  # fmt: skip
        bank = Bank(self._options.url, pacing=pacing)
        last_commit_s = time.monotonic()
        try:
            while not self._stopping.is_set():
                if self._failure is not None:
                    raise self._failure
                self._forget_revoked()
                room = len(self._tasks) < self._options.in_flight_max
                messages = await asyncio.to_thread(
                    self._consumer.consume, CONSUME_BATCH_MAX if room else 0, POLL_TIMEOUT_S
                )
                for message in messages:
                    self._dispatch(message, bank)
                if time.monotonic() - last_commit_s >= COMMIT_INTERVAL_S:
                    ready, offsets = self._take_ready()
                    if ready or offsets:
                        await asyncio.to_thread(self._transact, ready, offsets)
                    last_commit_s = time.monotonic()
        finally:
            for task in self._tasks.values():
                task.cancel()
            await bank.close()

    def _dispatch(self, message: Message, bank: Bank) -> None:
        if message.error() is not None:
            logger.warning("events: %s", message.error())
            return
        partition, offset = message.partition() or 0, message.offset() or 0
        progress = self._progress.setdefault(partition, Progress())
        progress.add(offset)
        event = self._serde.decode_event(message.value() or b"")
        if not _acts_on(event):
            progress.done(offset)
        elif event.type == "Queued":
            self._ready.append((partition, offset, self._command(event, None)))
        else:
            task = asyncio.get_running_loop().create_task(self._pay(partition, offset, event, bank))
            task.add_done_callback(self._failed)
            self._tasks[(partition, offset)] = task
            metrics.RAIL_IN_FLIGHT.set(len(self._tasks))

    def _failed(self, task: asyncio.Task[None]) -> None:
        """A payout's work broke an invariant (the rail holds other content for its id): the
        loop stops loudly with it."""
        if not task.cancelled() and task.exception() is not None:
            self._failure = task.exception()

    async def _pay(self, partition: int, offset: int, event: Event, bank: Bank) -> None:
        started_s = time.monotonic()
        try:
            report = await bank.outcome(instruction_of(event, self._options.debtor))
        except GivenUp as error:
            logger.error("payout %s left Sending: %s", event.payment_id, error)
            metrics.RAIL_GIVEN_UP.inc()
            return
        finally:
            self._tasks.pop((partition, offset), None)
            metrics.RAIL_IN_FLIGHT.set(len(self._tasks))
        outcome = "settled" if report.status == "ACSC" else "failed"
        metrics.RAIL_OUTCOMES.labels(outcome=outcome, reason_code=report.reason_code or "").inc()
        metrics.RAIL_BANK_SECONDS.observe(time.monotonic() - started_s)
        self._ready.append((partition, offset, self._command(event, report)))

    def _command(self, event: Event, report: StatusReport | None) -> RailCommand:
        return rail_command(
            event, report, partitions=self._topics.partitions, now_ms=int(time.time() * 1000)
        )

    def _take_ready(self) -> tuple[list[RailCommand], list[TopicPartition]]:
        """The commands ready since the last transaction and the offsets they complete. On
        the event loop's thread, the only one that touches ``_ready`` and ``_progress``: a
        task finishing during the transaction lands in the next one."""
        ready, self._ready = self._ready, []
        for partition, offset, _ in ready:
            self._progress[partition].done(offset)
        offsets = [
            TopicPartition(self._topics.events, partition, committable)
            for partition, progress in sorted(self._progress.items())
            if (committable := progress.committable()) is not None
        ]
        return [command for _, _, command in ready], offsets

    def _transact(self, commands: list[RailCommand], offsets: list[TopicPartition]) -> None:
        """Produce ``commands`` and commit ``offsets``, in one transaction (a thread's work)."""
        self._producer.begin_transaction()
        for command in commands:
            self._producer.produce(
                self._topics.commands, key=command.account_id.encode(),
                value=self._serde.encode_command(command),
            )  # fmt: skip
            metrics.RAIL_COMMANDS.labels(type=type(command).__name__).inc()
        self._producer.send_offsets_to_transaction(
            offsets, self._consumer.consumer_group_metadata(), CALL_TIMEOUT_S
        )
        self._producer.commit_transaction(CALL_TIMEOUT_S)

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("rail: assigned %s", sorted(tp.partition for tp in partitions))

    def _lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions gone: their work is dropped (the new owner redoes it, idempotently)."""
        with self._lock:
            self._revoked += [tp.partition for tp in partitions]

    def _forget_revoked(self) -> None:
        with self._lock:
            revoked, self._revoked = self._revoked, []
        for partition in revoked:
            self._progress.pop(partition, None)
            self._ready = [r for r in self._ready if r[0] != partition]
            for key in [k for k in self._tasks if k[0] == partition]:
                self._tasks.pop(key).cancel()


def _consumer_config(settings: Settings) -> dict[str, Any]:
    return settings.kafka.config() | {
        "group.id": rail_group(settings),
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        # A killed connector's partitions move on after 10 s, not Kafka's default 45 s: its
        # payouts wait at most that long (the workers' choice too).
        "session.timeout.ms": int(SESSION_TIMEOUT_S * 1000),
        "heartbeat.interval.ms": 1_000,
    }


def _producer_config(settings: Settings, name: str) -> dict[str, Any]:
    return settings.kafka.config() | {
        "transactional.id": f"{rail_group(settings)}-{name}",  # a restart fences its old life
        "transaction.timeout.ms": int(settings.transaction_timeout_s * 1000),
        "partitioner": "murmur2_random",  # the workers' partitioning
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
    }


class RailService(Restarting):
    """Connector runs, each from the committed offsets, until stopped (bounded restarts)."""

    def __init__(self, settings: Settings, options: RailOptions, *, name: str) -> None:
        super().__init__(lambda: RailConnector(settings, options, name=name), what="rail")
