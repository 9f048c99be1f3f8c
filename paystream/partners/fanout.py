"""``paystream partners fanout``: each partner's events to its own topic, exactly once.

One consumer-group member (several copies share the group) reads ``events`` read_committed
and copies every event whose ``partner_id`` has a topic (``<prefix>.partner.<id>.events``,
made by ``paystream partners add``) to that topic: the same key (the payment or payout id,
so one key's events stay in one partition, in their order) and the same bytes (Avro in
Confluent's wire format; partners read the schemas from the API's registry endpoint). Each
batch is one Kafka transaction: the copies and the ``events`` offsets after the batch
(``send_offsets_to_transaction`` with the group's metadata: a fenced or stale member is
refused), so a partner reading read_committed sees each event once, whatever crashes.

A partner's topic is its subscription: events of a partner without one (not onboarded, or
the platform's ``@ops`` and ``@rail``) are skipped, and the topics are looked up again every
``TOPICS_REFRESH_S``: a partner hears its events from at most that long after ``add``.
Any Kafka error ends the run; :class:`FanoutService` starts a new one from the committed
offsets (a new producer with the same transactional id fences the old life).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from paystream.partners import metrics
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.dlq import PoisonMessage
from paystream.topology.registry import registry_from_url
from paystream.topology.restarts import Restarting
from paystream.topology.topics import Topics, ensure_topics, fanout_group, partner_topic

__all__ = ["BATCH_SIZE_MAX", "Fanout", "FanoutService", "partner_of_topic"]

logger = logging.getLogger("paystream.fanout")

BATCH_SIZE_MAX: Final = 2_000
"""Events per transaction at most."""
POLL_TIMEOUT_S: Final = 0.2
TOPICS_REFRESH_S: Final = 5.0
CALL_TIMEOUT_S: Final = 30.0
SESSION_TIMEOUT_S: Final = 10.0


def partner_of_topic(settings: Settings, topic: str) -> str | None:
    """The partner whose own topic this is, else None."""
    before, after = partner_topic(settings, "\0").split("\0")
    match = re.fullmatch(f"{re.escape(before)}([a-z0-9][a-z0-9-]*){re.escape(after)}", topic)
    return match.group(1) if match else None


class Fanout:
    """One run: from the committed offsets until stopped or a Kafka error."""

    def __init__(self, settings: Settings, *, name: str) -> None:
        self._settings = settings
        topics = Topics.from_settings(settings)
        ensure_topics(settings.kafka, topics)
        self._events_topic = topics.events
        self._serde = AvroSerde(
            registry_from_url(settings.schema_registry_url, settings.data_dir),
            topics=topics.payloads(),
        )
        self._consumer = Consumer(_consumer_config(settings))
        self._producer = Producer(_producer_config(settings, name))
        self._partners: frozenset[str] = frozenset()
        self._looked_at = float("-inf")
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        self._producer.init_transactions(CALL_TIMEOUT_S)
        self._consumer.subscribe([self._events_topic])
        try:
            while not self._stopping.is_set():
                self._refresh_partners()
                batch = self._consumer.consume(BATCH_SIZE_MAX, POLL_TIMEOUT_S)
                if batch:
                    self._forward(batch)
        finally:
            self._consumer.close()

    def _refresh_partners(self) -> None:
        if time.monotonic() - self._looked_at < TOPICS_REFRESH_S:
            return
        names = self._producer.list_topics(timeout=CALL_TIMEOUT_S).topics
        found = (partner_of_topic(self._settings, name) for name in names)
        self._partners = frozenset(p for p in found if p is not None)
        self._looked_at = time.monotonic()
        metrics.FANOUT_PARTNER_TOPICS.set(len(self._partners))

    def _forward(self, batch: Sequence[Message]) -> None:
        """One transaction: the batch's partner events and the offsets after it."""
        started = time.monotonic()
        self._producer.begin_transaction()
        try:
            newest_ms = self._produce(batch)
            self._producer.send_offsets_to_transaction(
                _next_offsets(batch), self._consumer.consumer_group_metadata(), CALL_TIMEOUT_S
            )
            self._producer.commit_transaction(CALL_TIMEOUT_S)
        except KafkaException:
            self._abort()
            raise
        metrics.FANOUT_TRANSACTIONS.observe(time.monotonic() - started)
        if newest_ms is not None:
            metrics.FANOUT_LAG_SECONDS.set(max(0.0, time.time() - newest_ms / 1000))

    def _produce(self, batch: Sequence[Message]) -> int | None:
        """Copy each partner event; the time the newest copied was written to ``events``."""
        newest_ms = None
        for message in batch:
            error = message.error()
            if error is not None:
                raise KafkaException(error)
            partner = self._partner(message)
            if partner is None:
                continue
            self._producer.produce(
                partner_topic(self._settings, partner),
                key=message.key(), value=message.value(), headers=message.headers(),
            )  # fmt: skip
            metrics.FANOUT_FORWARDED.labels(partner).inc()
            newest_ms = max(newest_ms or 0, message.timestamp()[1])
            self._producer.poll(0)
        return newest_ms

    def _partner(self, message: Message) -> str | None:
        value = message.value()
        try:
            partner = self._serde.decode_event(
                value if isinstance(value, bytes) else b""
            ).partner_id
        except PoisonMessage as poison:
            # events are the workers' own writes: an undecodable one is a bug upstream,
            # seen by the audit sink as well; partners' feeds keep flowing meanwhile.
            logger.error("fanout: %s[%d]@%d is not an event: %s", message.topic(),
                         message.partition(), message.offset(), poison)  # fmt: skip
            metrics.FANOUT_SKIPPED.labels("undecodable").inc()
            return None
        if partner not in self._partners:
            metrics.FANOUT_SKIPPED.labels("no_topic").inc()
            return None
        return partner

    def _abort(self) -> None:
        try:
            self._producer.abort_transaction(CALL_TIMEOUT_S)
        except KafkaException as error:  # fenced or broker away: the next run starts over
            logger.warning("fanout: abort failed: %s", error)


def _next_offsets(batch: Sequence[Message]) -> list[TopicPartition]:
    """Per partition, the offset after the last message of the batch."""
    last: dict[tuple[str, int], int] = {}
    for message in batch:
        key = (str(message.topic()), int(message.partition() or 0))
        last[key] = max(last.get(key, -1), int(message.offset() or 0))
    return [
        TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()
    ]


def _consumer_config(settings: Settings) -> dict[str, Any]:
    return settings.kafka.config() | {
        "group.id": fanout_group(settings),
        "isolation.level": "read_committed",  # only committed events reach partners
        "enable.auto.commit": False,  # offsets go in the transaction
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "session.timeout.ms": int(SESSION_TIMEOUT_S * 1000),
        "heartbeat.interval.ms": 1_000,
    }


def _producer_config(settings: Settings, name: str) -> dict[str, Any]:
    return settings.kafka.config() | {
        "transactional.id": f"{fanout_group(settings)}-{name}",  # a restart fences its old life
        "transaction.timeout.ms": int(settings.transaction_timeout_s * 1000),
        "partitioner": "murmur2_random",  # a key's partition, as Java clients compute it
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "allow.auto.create.topics": False,  # a removed partner's topic is not made again
    }


class FanoutService(Restarting):
    """Fan-out runs, each from the committed offsets, until stopped (bounded restarts)."""

    def __init__(self, settings: Settings, *, name: str) -> None:
        super().__init__(lambda: Fanout(settings, name=name), what="fanout", fatal=_fatal)


def _fatal(error: KafkaException) -> bool:
    """Authorization refused: restarting will not help."""
    code = error.args[0].code() if error.args and isinstance(error.args[0], KafkaError) else None
    return code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED)
