"""Writing a batch into the analytics store, and reading back where the sink stands.

Order per batch: facts first, then the consumer positions. A sink killed between the two
reads the batch again from the old positions and writes the same rows, which the
ReplacingMergeTree tables collapse by id: nothing lost, nothing counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from paystream.analytics.rows import COLUMNS
from paystream.analytics.schema import Client

Position = tuple[str, int]
"""(topic, partition)."""
POSITION_COLUMNS = ("consumer", "topic", "partition", "next_offset")


def write(
    client: Client,
    database: str,
    *,
    consumer: str,
    rows: Mapping[str, Sequence[Sequence[Any]]],
    next_offsets: Mapping[Position, int],
) -> None:
    """Insert the batch's rows (table -> rows, tables of ``rows.COLUMNS``), then the positions
    after it."""
    for table, found in rows.items():
        if found:
            client.insert(f"{database}.{table}", found, column_names=COLUMNS[table])
    positions = [
        [consumer, topic, partition, offset] for (topic, partition), offset in next_offsets.items()
    ]
    if positions:
        client.insert(f"{database}.positions", positions, column_names=POSITION_COLUMNS)


def stored_positions(client: Client, database: str, consumer: str) -> dict[Position, int]:
    """The next offset to read per (topic, partition), as far as ``consumer`` has written."""
    result = client.query(
        f"SELECT topic, partition, max(next_offset) FROM {database}.positions"
        " WHERE consumer = {consumer:String} GROUP BY topic, partition",
        parameters={"consumer": consumer},
    )
    return {(topic, int(partition)): int(offset) for topic, partition, offset in result.result_rows}
