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
            own Bool,
            issued_at DateTime64(3, 'UTC'),
            logged_at DateTime64(3, 'UTC'),
            events_partition UInt32,
            events_offset UInt64
        ) ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(logged_at)
          ORDER BY (issued_at, event_id)""",
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
            debits_minor Int128,
            credits_minor Int128,
            transit_minor Int128,
            posted_debits_minor Int128,
            posted_credits_minor Int128,
            pending_debits_minor Int128,
            pending_credits_minor Int128,
            final Bool,
            issued_at DateTime64(3, 'UTC'),
            logged_at DateTime64(3, 'UTC'),
            ledger_partition UInt32,
            ledger_offset UInt64
        ) ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(logged_at)
          ORDER BY (issued_at, entry_id, line_no)""",
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
        ) ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(logged_at)
          ORDER BY (logged_at, dlq_partition, dlq_offset)""",
    "balances": """
        CREATE TABLE IF NOT EXISTS {db}.balances (
            account_id String,
            currency LowCardinality(String),
            posted_debits_minor Int128,
            posted_credits_minor Int128,
            pending_debits_minor Int128,
            pending_credits_minor Int128,
            changelog_partition UInt32,
            changelog_offset UInt64,
            logged_at DateTime64(3, 'UTC')
        ) ENGINE = ReplacingMergeTree(changelog_offset) ORDER BY account_id""",
    "tallies": """
        CREATE TABLE IF NOT EXISTS {db}.tallies (
            topic String,
            partition UInt32,
            hour DateTime64(3, 'UTC'),
            command_type LowCardinality(String),
            type LowCardinality(String),
            currency LowCardinality(String),
            bin UInt16,
            first_offset SimpleAggregateFunction(min, UInt64),
            next_offset SimpleAggregateFunction(max, UInt64),
            covered SimpleAggregateFunction(sum, UInt64),
            events SimpleAggregateFunction(sum, UInt64),
            debits_minor SimpleAggregateFunction(sum, Int128),
            credits_minor SimpleAggregateFunction(sum, Int128),
            transit_minor SimpleAggregateFunction(sum, Int128),
            posted_debits_minor SimpleAggregateFunction(sum, Int128),
            posted_credits_minor SimpleAggregateFunction(sum, Int128),
            pending_debits_minor SimpleAggregateFunction(sum, Int128),
            pending_credits_minor SimpleAggregateFunction(sum, Int128)
        ) ENGINE = AggregatingMergeTree
          ORDER BY (topic, partition, hour, command_type, type, currency, bin)
          SETTINGS non_replicated_deduplication_window = 1000""",
}
"""Table -> DDL. ``balances`` is the workers' table (their changelog), the newest record per
account. ``tallies`` holds the batches' positions, counts and sums
(:mod:`paystream.analytics.tallies`): merges add rows of one key together, so it stays one
row per partition, hour and kind; the same batch inserted twice (the same block) is dropped
by the insert deduplication window.

Facts are sorted by their time first (the dashboard asks for time ranges: the primary index
skips the rest) and partitioned by month of log time (the Kafka record's, always sane, where
a hostile command's own time may not be). A fact read twice has the same times, so its
copies share a partition and a sorting key: ``FINAL`` collapses them partition by
partition."""

RETIRED_TABLES: Final = ("positions",)
"""Tables of earlier versions (v2's positions are the tallies since v3), dropped with the
rest."""
SCHEMA_VERSION: Final = 4
"""Bumped with any change to TABLES. The store is a projection of logs retained forever, so
a store of another version is dropped and rebuilt by reading the logs again."""


def create(client: Client, database: str) -> bool:
    """The database and its tables, if they are not there yet; False when the store was made
    afresh (new, or of another schema version and dropped: the sink then reads every log
    from its beginning)."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_version (version UInt32) "
        "ENGINE = ReplacingMergeTree(version) ORDER BY tuple()"
    )
    found = client.command(f"SELECT max(version) FROM {database}.schema_version")
    kept = int(found or 0) == SCHEMA_VERSION
    if not kept:
        for table in (*TABLES, *RETIRED_TABLES):
            client.command(f"DROP TABLE IF EXISTS {database}.{table}")
    for ddl in TABLES.values():
        client.command(ddl.format(db=database))
    if not kept:
        client.command(f"TRUNCATE TABLE {database}.schema_version")
        client.command(f"INSERT INTO {database}.schema_version VALUES ({SCHEMA_VERSION})")
    return kept
