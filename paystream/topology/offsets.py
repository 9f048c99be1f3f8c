"""Where logs end and where consumer groups stand, from the broker's admin API."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

ADMIN_TIMEOUT_S = 2.0

Position = tuple[str, int]
"""(topic, partition)."""


def log_ends(
    admin: AdminClient,
    topics: Sequence[str],
    partitions: int,
    *,
    timeout_s: float = ADMIN_TIMEOUT_S,
) -> dict[Position, int]:
    """Each partition's end as read_committed readers see it (its last stable offset), in
    one ListOffsets round trip. Not a consumer's watermark query: that took 0.5 s per
    partition here, and blocked past its timeout while the consumer polled."""
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    wanted = {TopicPartition(t, p): latest for t in topics for p in range(partitions)}
    found = admin.list_offsets(
        wanted, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout_s
    )
    return {
        (tp.topic, tp.partition): int(future.result(timeout_s).offset)
        for tp, future in found.items()
    }


def committed(
    admin: AdminClient, group: str, *, timeout_s: float = ADMIN_TIMEOUT_S
) -> dict[Position, int]:
    """The offsets ``group`` committed to Kafka (partitions it never committed are absent)."""
    found = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=timeout_s
    )
    result = found[group].result(timeout_s)
    return {
        (tp.topic, tp.partition): int(tp.offset)
        for tp in result.topic_partitions or []
        if tp.offset >= 0
    }
