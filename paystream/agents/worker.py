"""The ledger worker: one Faust app, one agent over ``commands`` + ``legs``.

Commit order, by construction: process a batch (local store writes, changelog
records and outputs all appended to the source partition's transaction), wait
for Kafka to acknowledge every record, then commit each partition's
transaction with exactly that batch's input offsets. faust's own offset
commits are switched off (timer, rebalance, stop), so a commit never lands in
the middle of a batch and never moves an offset backwards. ``take_events``
still acks the events afterwards, which is what faust's rebalance waits for.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import faust

from paystream.agents import failfast
from paystream.agents.directory import DirectoryFollower
from paystream.agents.outbox import Outbox, TransactionCommitter, disable_faust_commits
from paystream.agents.processor import BatchProcessor, Tables
from paystream.agents.redelivery import RedeliveryFilter
from paystream.agents.state import forget_revoked_partitions
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import (
    Topics,
    app_id_for,
    commit_missing_offsets,
    ensure_topics,
)

BATCH_SIZE_MAX = 1_000
BATCH_WINDOW_S = 0.005
COMMIT_TIMER_OFF_S = 10.0**9
COMMIT_EVERY_OFF = 10**12
WORKER_LOG_LEVEL = "warn"
LOG_LEVELS = ("crit", "error", "warn", "info", "debug")


def worker_dir(settings: Settings, name: str) -> Path:
    return settings.data_dir / "workers" / name


def build_app(settings: Settings, *, name: str) -> faust.App:
    """The Faust app and its agent, wired to ``settings``' Kafka."""
    topics = Topics.from_settings(settings)
    ensure_topics(settings.bootstrap, topics)
    commit_missing_offsets(settings.bootstrap, topics, group_id=app_id_for(settings))
    app = faust.App(
        app_id_for(settings),
        broker=f"kafka://{settings.bootstrap}",
        store="rocksdb://",
        datadir=str(worker_dir(settings, name)),
        processing_guarantee="exactly_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        web_enabled=False,
        broker_commit_interval=COMMIT_TIMER_OFF_S,
        broker_commit_every=COMMIT_EVERY_OFF,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        table_key_serializer="raw",
        table_value_serializer="raw",
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
    tables = Tables(
        balances=app.Table("balances", partitions=settings.partitions, **raw),
        idempotency=app.Table("idempotency", partitions=settings.partitions, **raw),
    )
    for table in (tables.balances, tables.idempotency):
        forget_revoked_partitions(table)
    directory = DirectoryFollower(bootstrap=settings.bootstrap, topic=topics.directory)
    source = app.topic(
        topics.commands,
        topics.legs,
        partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
        **raw,
    )
    serde = AvroSerde(
        registry_from_url(settings.schema_registry_url, settings.data_dir),
        topic_names=topics.names(),
    )
    outbox = Outbox(app)
    committer = TransactionCommitter(app, outbox)
    redelivered = RedeliveryFilter()
    processor = BatchProcessor(
        topics=topics, serde=serde, tables=tables, directory=directory, outbox=outbox
    )
    directory.start()

    async def ledger(stream: Any) -> AsyncIterator[None]:
        failfast.install()  # after faust has configured logging
        disable_faust_commits(app)
        async for events in stream.take_events(BATCH_SIZE_MAX, within=BATCH_WINDOW_S):
            try:
                fresh = redelivered.fresh(events)
                await processor.process(fresh)
                redelivered.on_committed(fresh, await committer.commit(fresh))
            except asyncio.CancelledError:
                raise
            except BaseException as error:  # crash: restart from committed state
                failfast.crash(f"batch failed: {error!r}")
            yield None

    app.agent(source, name="ledger", concurrency=1)(ledger)
    return app


def clear_local_state(settings: Settings, name: str) -> None:
    """Local stores are caches of the changelog: start from committed state.

    After a crash or an abort the local RocksDB store is ahead of what Kafka
    committed; it is deleted so faust restores every table from its
    changelog, read_committed (DESIGN.md, crash consistency 2).
    """
    directory = worker_dir(settings, name)
    shutil.rmtree(directory, ignore_errors=True)
    directory.parent.mkdir(parents=True, exist_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paystream-worker")
    parser.add_argument("--name", default="worker-1", help="worker name (own data directory)")
    parser.add_argument("--log-level", default=WORKER_LOG_LEVEL, choices=LOG_LEVELS)
    args = parser.parse_args(argv)
    settings = Settings()
    clear_local_state(settings, args.name)
    app = build_app(settings, name=args.name)
    worker = faust.Worker(app, loglevel=args.log_level, quiet=True)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
