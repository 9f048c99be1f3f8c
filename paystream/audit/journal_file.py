"""A journal as an Avro object container file: the entries in the ``ledger`` topic's own
schema (``schemas/journal_entry.avsc``), written and read with fastavro, so any Avro tool
reads an exported journal without paystream."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import fastavro

from paystream.ledger import JournalEntry
from paystream.topology import records
from paystream.topology.avro import SCHEMA_DIR, SCHEMA_FILES

__all__ = ["read_journal_file", "write_journal_file"]

_SCHEMA: Final = fastavro.parse_schema(
    json.loads((SCHEMA_DIR / SCHEMA_FILES["journal_entry"]).read_text(encoding="utf-8"))
)


def write_journal_file(
    entries: Iterable[JournalEntry], path: Path, *, metadata: dict[str, str] | None = None
) -> int:
    """Write ``entries`` in order to ``path`` (replaced atomically); how many were written."""
    count = 0

    def counted() -> Iterator[records.Record]:
        nonlocal count
        for entry in entries:
            count += 1
            yield records.journal_entry_to_record(entry)

    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        fastavro.writer(out, _SCHEMA, counted(), codec="deflate", metadata=metadata or {})
    partial.replace(path)
    return count


def read_journal_file(path: Path) -> Iterator[JournalEntry]:
    with path.open("rb") as found:
        for record in fastavro.reader(found, return_record_name=True):
            yield records.journal_entry_from_record(record)  # type: ignore[arg-type]
