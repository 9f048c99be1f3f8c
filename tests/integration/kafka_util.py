"""Small confluent-kafka helpers for the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, Message
from confluent_kafka.admin import AdminClient, NewTopic

POLL_TIMEOUT_S = 1.0


def create_topic(bootstrap: str, name: str, *, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=30)


def consume(
    consumer: Consumer,
    *,
    count: int,
    timeout_s: float,
    give_up: Callable[[], bool] = lambda: False,
) -> list[Message]:
    """Poll until ``count`` messages arrived, ``timeout_s`` passed or ``give_up()``."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < count and time.monotonic() < deadline and not give_up():
        message = consumer.poll(POLL_TIMEOUT_S)
        if message is None:
            continue
        if message.error() is not None:
            raise RuntimeError(str(message.error()))
        messages.append(message)
    return messages
