"""The one function through which a worker sends anything.

Every output goes through the transactional producer of the *source*
partition being processed (DESIGN.md, crash consistency 1), so the input
offsets, the changelog records and all outputs of a partition commit or abort
together. faust's own ``topic.send()`` is not used: in exactly-once mode it is
not part of the source partition's transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

from faust.types import TP, AppT

Headers = Sequence[tuple[str, bytes]]


class Outbox:
    def __init__(self, app: AppT) -> None:
        self._app = app

    def transactional_id(self, tp: TP) -> str:
        """The id faust commits ``tp``'s offsets under (its ``TransactionManager``)."""
        group = self._app.assignor.group_for_topic(tp.topic)
        return f"{self._app.conf.id}-{group}-{tp.partition}"

    async def send(
        self,
        transactional_id: str,
        topic: str,
        *,
        key: bytes,
        value: bytes,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]:
        """Append to the transaction; returns the delivery future (not awaited here).

        ``partition=None`` lets aiokafka's murmur2 partitioner choose, as Java
        clients and our confluent-kafka producers (``murmur2_random``) do.
        """
        producer = self._app.consumer.transactions.producer
        future: Awaitable[Any] = await producer.send(
            topic,
            key,
            value,
            partition,
            None,
            list(headers) if headers is not None else None,
            transactional_id=transactional_id,
        )
        return future
