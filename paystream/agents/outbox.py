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

from faust.types import TP, AppT, EventT

Headers = Sequence[tuple[str, bytes]]


class Outbox:
    def __init__(self, app: AppT) -> None:
        self._app = app
        self.producers: dict[str, object] = {}
        """transactional id -> the producer instance that took this batch's records."""

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
        driver: Any = self._app.consumer.transactions.producer
        self.producers.setdefault(
            transactional_id, driver._transaction_producers.get(transactional_id)
        )
        future: Awaitable[Any] = await driver.send(
            topic,
            key,
            value,
            partition,
            None,
            list(headers) if headers is not None else None,
            transactional_id=transactional_id,
        )
        return future


class TransactionLost(RuntimeError):
    """The batch's transaction is gone; the worker must restart from committed state."""


class TransactionCommitter:
    """Commits a batch: its exact input offsets and everything sent for it, per partition.

    faust's own offset tracking is not used for this: with the same events
    acked once, its ``_acked`` lists were seen holding repeated offsets
    (``[450, 451, 451, 452, ...]``) and its "consecutive offsets" rule then
    committed only a prefix of a batch whose outputs were all in the
    committed transaction; the next owner of the partition ran the rest
    again (duplicate journal entries in read_committed ``ledger``).
    """

    def __init__(self, app: AppT, outbox: Outbox) -> None:
        self._app = app
        self._outbox = outbox

    async def commit(self, events: Sequence[EventT[bytes]]) -> dict[TP, int]:
        """Commit every partition of ``events``; returns the offsets committed."""
        by_tid: dict[str, dict[TP, int]] = {}
        for event in events:
            tp = event.message.tp
            offsets = by_tid.setdefault(self._outbox.transactional_id(tp), {})
            offsets[tp] = max(offsets.get(tp, 0), event.message.offset + 1)
        committed: dict[TP, int] = {}
        try:
            for tid, offsets in by_tid.items():
                if await self._commit_one(tid, offsets):
                    committed.update(offsets)
        finally:
            self._outbox.producers.clear()
        return committed

    async def _commit_one(self, tid: str, offsets: dict[TP, int]) -> bool:
        driver: Any = self._app.consumer.transactions.producer
        async with driver._trn_locks[tid]:
            producer: Any = driver._transaction_producers.get(tid)
            if producer is None:
                # Revoked meanwhile: the new owner's producer fences this id,
                # which aborts the open transaction; the new owner redoes it.
                return False
            used: Any = self._outbox.producers.get(tid, producer)
            if used is not producer:
                # The records went to a producer that was replaced (and fenced, which
                # aborted them); committing the offsets now would lose them.
                raise TransactionLost(f"{tid}: producer replaced during the batch")
            await producer.send_offsets_to_transaction(offsets, self._app.conf.id)
            await producer.commit_transaction()
            await producer.begin_transaction()
        return True


def disable_faust_commits(app: AppT) -> None:
    """Offsets are committed only by :class:`TransactionCommitter`, batch by batch.

    faust would otherwise also commit (on rebalance and at stop) from its own
    bookkeeping, which can move a committed offset backwards or commit a
    transaction without the offsets of what it holds.
    """

    async def no_commit(*_args: object, **_kwargs: object) -> bool:
        return False

    app.consumer._commit_offsets = no_commit  # type: ignore[attr-defined]
