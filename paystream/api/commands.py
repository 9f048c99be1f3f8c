"""The API's Kafka side: commands out (``CommandSender``), answers in (``EventFollower``).

``CommandSender`` produces with idempotence and ``acks=all`` and reports each
delivery to the awaiting request. ``message.timeout.ms`` is shorter than the
request's own wait, so every produce ends in a delivery report -- accepted
(durably in the log) or refused -- and the API never answers without knowing
which.

``EventFollower`` reads ``events`` read_committed in a thread of its own, from
the end offsets it found at start (explicit offsets: an answer produced the
moment after start is never skipped), keeps the recent events of each payment
(bounded), and wakes the requests waiting for them. Every API process follows
the whole topic, so several processes behind one port each answer their own
waits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import (
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from paystream.ledger import Command, Event
from paystream.settings import KafkaConnection
from paystream.topology import offsets
from paystream.topology.avro import AvroSerde

DELIVERY_TIMEOUT_MS = 10_000
"""librdkafka's ``message.timeout.ms``: a command not in the log by then is refused."""
DELIVERY_WAIT_SLACK_S = 5.0
POLL_TIMEOUT_S = 0.1
CONSUME_BATCH_MAX = 1_000
PAYMENTS_REMEMBERED_MAX = 200_000
"""Payments whose recent events the follower keeps (the oldest are forgotten first)."""
WAITERS_MAX = 10_000
"""Requests waiting for an answer at once, per process; beyond it the API answers 503."""
START_TIMEOUT_S = 30.0
START_RETRY_S = 0.2
LOG_END_TIMEOUT_S = 2.0
"""How long ``/readyz`` waits for the logs' end offsets."""

logger = logging.getLogger("paystream.api")
Predicate = Callable[[list["Seen"]], bool]


class KafkaUnavailable(Exception):
    """A command could not be put in the log (it was not accepted)."""


class TooManyWaiters(Exception):
    """WAITERS_MAX requests are already waiting."""


@dataclass(frozen=True, slots=True)
class Seen:
    """An event and where it is in ``events``."""

    event: Event
    partition: int
    offset: int


class CommandSender:
    def __init__(
        self,
        *,
        kafka: KafkaConnection,
        topic: str,
        serde: AvroSerde,
        delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS,
    ) -> None:
        self._producer = Producer(
            kafka.config()
            | {
                "partitioner": "murmur2_random",  # the workers' partitioning (co-partitioning)
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                "message.timeout.ms": delivery_timeout_ms,
            }
        )
        self._delivery_wait_s = delivery_timeout_ms / 1000 + DELIVERY_WAIT_SLACK_S
        self._topic = topic
        self._serde = serde
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="command-sender", daemon=True)
        self._poller.start()

    async def send(self, command: Command) -> None:
        """Put ``command`` in the log; raises KafkaUnavailable if Kafka refused it."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def report(error: object, _message: Message) -> None:
            loop.call_soon_threadsafe(_settle, delivered, error)

        try:
            self._producer.produce(
                self._topic,
                key=command.account_id.encode(),
                value=self._serde.encode_command(command),
                on_delivery=report,
            )
        except (BufferError, KafkaException) as error:
            raise KafkaUnavailable(f"the command was not queued: {error}") from error
        try:
            await asyncio.wait_for(delivered, self._delivery_wait_s)
        except TimeoutError as error:  # not expected: librdkafka reports within its timeout
            raise KafkaUnavailable("no delivery report") from error

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(POLL_TIMEOUT_S)

    def close(self) -> None:
        self._producer.flush(self._delivery_wait_s)
        self._stopping.set()
        self._poller.join(START_TIMEOUT_S)


def _settle(future: asyncio.Future[None], error: object) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(KafkaUnavailable(f"Kafka refused the command: {error}"))


class EventFollower:
    def __init__(self, *, kafka: KafkaConnection, topic: str, serde: AvroSerde, group: str) -> None:
        self._consumer = Consumer(
            kafka.config()
            | {
                "group.id": group,  # never joined: partitions are assigned by hand
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._admin = AdminClient(kafka.config())
        self._topic = topic
        self._serde = serde
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, list[Seen]] = OrderedDict()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._waiting = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-follower", daemon=True)
        self.healthy = False

    def start(self) -> None:
        """Assign every partition at its current end, then follow in the background."""
        metadata = self._consumer.list_topics(self._topic, timeout=START_TIMEOUT_S)
        partitions = sorted(metadata.topics[self._topic].partitions)
        assignment = [
            TopicPartition(self._topic, partition, self._end(partition)) for partition in partitions
        ]
        self._consumer.assign(assignment)
        self.healthy = True
        self._thread.start()

    def _end(self, partition: int) -> int:
        """The partition's end offset; retried while a just-made topic gets its leaders."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self._topic, partition), timeout=START_TIMEOUT_S, cached=False
                )
                return int(high)
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(START_RETRY_S)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(START_TIMEOUT_S)
        self._consumer.close()

    def log_ends(self, topics: list[str], partitions: int) -> dict[tuple[str, int], int]:
        """Each partition's end as read_committed readers see it (:func:`offsets.log_ends`)."""
        return offsets.log_ends(self._admin, topics, partitions, timeout_s=LOG_END_TIMEOUT_S)

    def seen(self, payment_id: str) -> list[Seen]:
        with self._lock:
            return list(self._recent.get(payment_id, ()))

    async def wait(self, payment_id: str, until: Predicate, timeout_s: float) -> list[Seen]:
        """The payment's events once ``until`` holds for them, or as they are at the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.seen(payment_id)
            left_s = deadline - time.monotonic()
            if until(found) or left_s <= 0:
                return found
            future = self._register(payment_id, known=len(found))
            try:
                await asyncio.wait_for(asyncio.shield(future), left_s)
            except TimeoutError:
                pass
            finally:
                self._unregister(payment_id, future)

    def _register(self, payment_id: str, *, known: int) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._waiting >= WAITERS_MAX:
                raise TooManyWaiters(f"{WAITERS_MAX} requests are waiting already")
            self._waiters.setdefault(payment_id, []).append((loop, future))
            self._waiting += 1
            if len(self._recent.get(payment_id, ())) > known:  # arrived since seen()
                loop.call_soon(_wake, future)
        return future

    def _unregister(self, payment_id: str, future: asyncio.Future[None]) -> None:
        with self._lock:
            waiting = self._waiters.get(payment_id, [])
            kept = [(loop, f) for loop, f in waiting if f is not future]
            self._waiting -= len(waiting) - len(kept)
            if kept:
                self._waiters[payment_id] = kept
            else:
                self._waiters.pop(payment_id, None)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                messages = self._consumer.consume(CONSUME_BATCH_MAX, POLL_TIMEOUT_S)
            except KafkaException as error:
                logger.warning("following events failed: %s", error)
                self.healthy = False
                time.sleep(POLL_TIMEOUT_S)
                continue
            self.healthy = True
            for message in messages:
                self._add(message)

    def _add(self, message: Message) -> None:
        if message.error() is not None:
            logger.warning("events: %s", message.error())
            return
        event = self._serde.decode_event(message.value() or b"")
        seen = Seen(event, message.partition() or 0, message.offset() or 0)
        with self._lock:
            self._recent.setdefault(event.payment_id, []).append(seen)
            self._recent.move_to_end(event.payment_id)
            while len(self._recent) > PAYMENTS_REMEMBERED_MAX:
                self._recent.popitem(last=False)
            for loop, future in self._waiters.get(event.payment_id, ()):
                loop.call_soon_threadsafe(_wake, future)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
