"""Writing a batch into the analytics store, and reading back where the sink stands.

Order per batch: facts first, then the batch's tallies -- its positions and sums, one row
per partition, in one insert (atomic). A sink killed between the two reads the batch again
from the old positions and writes the same facts, which the ReplacingMergeTree tables
collapse by id, and its tallies once: nothing lost, nothing counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from paystream.analytics.rows import COLUMNS
from paystream.analytics.schema import Client
from paystream.analytics.tallies import RANGES, TALLY_COLUMNS

Position = tuple[str, int]
"""(topic, partition)."""


def write(
    client: Client,
    database: str,
    *,
    rows: Mapping[str, Sequence[Sequence[Any]]],
    tallies: Sequence[Sequence[Any]],
) -> None:
    """Insert the batch's facts (table -> rows, tables of ``rows.COLUMNS``), then its tallies
    (rows of ``tallies.TALLY_COLUMNS``: the positions after it) in one insert."""
    for table, found in rows.items():
        if found:
            client.insert(f"{database}.{table}", found, column_names=COLUMNS[table])
    if tallies:
        client.insert(f"{database}.tallies", tallies, column_names=TALLY_COLUMNS)


def stored_positions(client: Client, database: str) -> dict[Position, int]:
    """The next offset to read per (topic, partition), as far as the sink has written."""
    result = client.query(
        f"SELECT topic, partition, max(next_offset) FROM {database}.tallies"
        f" WHERE {RANGES} GROUP BY topic, partition"
    )
    return {(topic, int(partition)): int(offset) for topic, partition, offset in result.result_rows}
