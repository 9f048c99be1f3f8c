"""Postgres and ClickHouse are real engines."""

from __future__ import annotations

import uuid

import clickhouse_connect
import psycopg
import pytest

pytestmark = pytest.mark.integration


def test_postgres_transaction_commits_and_rolls_back(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("CREATE TABLE probe (id int PRIMARY KEY, amount_minor bigint NOT NULL)")
        with conn.transaction():
            conn.execute("INSERT INTO probe VALUES (1, 100), (2, 250)")
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("INSERT INTO probe VALUES (3, 5)")
            conn.execute("INSERT INTO probe VALUES (1, 7)")
        row = conn.execute("SELECT count(*), sum(amount_minor) FROM probe").fetchone()
    assert row == (2, 350)


def test_clickhouse_mergetree_aggregates_exactly(clickhouse_dsn: str) -> None:
    database = f"probe_{uuid.uuid4().hex[:8]}"
    client = clickhouse_connect.get_client(dsn=clickhouse_dsn)
    try:
        client.command(f"CREATE DATABASE {database}")
        client.command(
            f"CREATE TABLE {database}.lines (currency String, amount_minor Int64) "
            "ENGINE = MergeTree ORDER BY currency"
        )
        big = 2**63 - 1
        rows = [["EUR", big], ["EUR", big], ["USD", 5], ["USD", -2]]
        client.insert(f"{database}.lines", rows, column_names=["currency", "amount_minor"])
        result = client.query(
            f"SELECT currency, sum(toInt128(amount_minor)) FROM {database}.lines "
            "GROUP BY currency ORDER BY currency"
        ).result_rows
        client.command(f"DROP DATABASE {database}")
    finally:
        client.close()
    assert [(c, int(s)) for c, s in result] == [("EUR", 2 * big), ("USD", 3)]
