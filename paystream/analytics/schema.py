"""The analytics store's tables in ClickHouse (one database per deployment).

Facts are deduplicated by their ids (ReplacingMergeTree; queries read ``FINAL``), so a batch
written twice -- a sink killed after its rows and before its positions -- counts once.
Money is ``Int128``: sums over any volume stay exact (``Int64`` would wrap).
"""

from __future__ import annotations

from typing import Any, Final

Client = Any
"""A clickhouse-connect client (``chdb://`` embedded or ``http(s)://`` server)."""

TABLES: Final[dict[str, str]] = {
    "events": """
        CREATE TABLE IF NOT EXISTS {db}.events (
            event_id String,
            payment_id String,
            type LowCardinality(String),
            command_type LowCardinality(String),
            partner_id String,
            account_id String,
            amount_minor Nullable(Int128),
            currency LowCardinality(Nullable(String)),
            code LowCardinality(Nullable(String)),
            issued_at DateTime64(3, 'UTC'),
            logged_at DateTime64(3, 'UTC'),
            events_partition UInt32,
            events_offset UInt64
        ) ENGINE = ReplacingMergeTree ORDER BY event_id""",
    "ledger_lines": """
        CREATE TABLE IF NOT EXISTS {db}.ledger_lines (
            entry_id String,
            line_no UInt16,
            payment_id String,
            kind LowCardinality(String),
            phase LowCardinality(String),
            account_id String,
            currency LowCardinality(String),
            side LowCardinality(String),
            amount_minor Int128,
            issued_at DateTime64(3, 'UTC'),
            logged_at DateTime64(3, 'UTC'),
            ledger_partition UInt32,
            ledger_offset UInt64
        ) ENGINE = ReplacingMergeTree ORDER BY (entry_id, line_no)""",
    "dead_letters": """
        CREATE TABLE IF NOT EXISTS {db}.dead_letters (
            dlq_partition UInt32,
            dlq_offset UInt64,
            reason LowCardinality(String),
            detail Nullable(String),
            origin_topic Nullable(String),
            origin_partition Nullable(Int64),
            origin_offset Nullable(Int64),
            payload_size UInt64,
            payload_sha256 String,
            logged_at DateTime64(3, 'UTC')
        ) ENGINE = ReplacingMergeTree ORDER BY (dlq_partition, dlq_offset)""",
    "positions": """
        CREATE TABLE IF NOT EXISTS {db}.positions (
            consumer String,
            topic String,
            partition UInt32,
            next_offset UInt64
        ) ENGINE = ReplacingMergeTree(next_offset) ORDER BY (consumer, topic, partition)""",
}
"""Table -> DDL. ``positions`` keeps the greatest offset per key: offsets only move forward."""


def create(client: Client, database: str) -> None:
    """The database and its tables, if they are not there yet."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    for ddl in TABLES.values():
        client.command(ddl.format(db=database))
