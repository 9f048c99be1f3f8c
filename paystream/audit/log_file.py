"""The recorded log as one Avro object container file, for replay away from the broker.

An auditor takes the log once (``paystream replay --save-log FILE``) and replays it anywhere
(``paystream replay --log FILE``): every committed record of the topics replay reads, each
with its topic's role, partition, offset, timestamp, key, value and headers, bytes for
bytes. The header's metadata names the topics and their partition count, and carries every
Avro schema the records' values were written with, by id, so the file decodes without the
schema registry it came from. fastavro writes and reads it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import fastavro
from confluent_kafka import Message

from paystream.audit.replay_log import ROLES, Role, topic_of
from paystream.topology.avro import HEADER_SIZE, MAGIC_BYTE
from paystream.topology.registry import MemorySchemaRegistry, SchemaNotFound, SchemaRegistry
from paystream.topology.topics import Topics

__all__ = ["LoadedLog", "LogFileError", "read_log_file", "write_log_file"]

FORMAT: Final = "paystream.replay-log.v1"
_METADATA_KEY: Final = "paystream.log"
_AVRO_ROLES: Final = frozenset({"batches", "commands", "legs", "ledger", "events"})
_RECORD_SCHEMA: Final = fastavro.parse_schema({
    "type": "record", "name": "LogRecord", "namespace": "paystream.v1",
    "doc": "One committed record of a topic replay reads, as the broker held it.",
    "fields": [
        {"name": "role", "type": {"type": "enum", "name": "LogRole", "symbols": list(ROLES)}},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp_type", "type": "int"},
        {"name": "timestamp_ms", "type": "long"},
        {"name": "key", "type": ["null", "bytes"]},
        {"name": "value", "type": ["null", "bytes"]},
        {"name": "headers", "type": {"type": "array", "items": {
            "type": "record", "name": "LogHeader",
            "fields": [{"name": "key", "type": "string"},
                       {"name": "value", "type": ["null", "bytes"]}],
        }}},
    ],
})  # fmt: skip


class LogFileError(ValueError):
    """A file that is not a paystream log, or one whose schemas are missing."""


@dataclass(frozen=True, slots=True)
class LoadedLog:
    records: dict[Role, list[Message]]
    topics: Topics
    registry: SchemaRegistry


def write_log_file(
    records: Mapping[Role, Sequence[Message]],
    topics: Topics,
    registry: SchemaRegistry,
    path: Path,
) -> int:
    """Write ``records`` to ``path`` (replaced atomically); how many were written."""
    header = {
        "format": FORMAT, "topics": _topics_json(topics),
        "schemas": _schemas(registry, _schema_ids(records)),
    }  # fmt: skip
    rows = (_row(role, m) for role in ROLES for m in records.get(role, ()))
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        fastavro.writer(out, _RECORD_SCHEMA, rows, codec="deflate",
                        metadata={_METADATA_KEY: json.dumps(header)})  # fmt: skip
    partial.replace(path)
    return sum(len(found) for found in records.values())


def _topics(names: Mapping[str, Any]) -> Topics:
    """The header's topics; files written before the payouts table name no payouts changelog
    (replay reads none), so it is named after the idempotency changelog's prefix."""
    idempotency = str(names["idempotency_changelog"])
    derived = idempotency.removesuffix("idempotency-changelog") + "payouts-changelog"
    return Topics(**{"payouts_changelog": derived, **names})


def read_log_file(path: Path) -> LoadedLog:
    try:
        with path.open("rb") as found:
            reader = fastavro.reader(found)
            header = json.loads(reader.metadata[_METADATA_KEY])
            if header.get("format") != FORMAT:
                raise LogFileError(f"{path}: format {header.get('format')!r}, not {FORMAT}")
            topics = _topics(header["topics"])
            records: dict[Role, list[Message]] = {role: [] for role in ROLES}
            for row in reader:
                role, message = _message(cast(Mapping[str, Any], row), topics)
                records[role].append(message)
    except (OSError, KeyError, TypeError, ValueError, EOFError) as error:
        if isinstance(error, LogFileError):
            raise
        raise LogFileError(f"{path}: not a paystream log file ({error})") from error
    schemas = {int(i): text for i, text in header["schemas"].items()}
    return LoadedLog(records, topics, MemorySchemaRegistry(schemas))


def _schemas(registry: SchemaRegistry, ids: set[int]) -> dict[str, str]:
    """The registry's schemas with these ids (an id it does not know -- a hostile record
    that only looks like Avro -- decodes as poison anyway, with or without the file)."""
    found: dict[str, str] = {}
    for schema_id in sorted(ids):
        try:
            found[str(schema_id)] = registry.schema_for_id(schema_id)
        except SchemaNotFound:
            continue
    return found


def _schema_ids(records: Mapping[Role, Sequence[Message]]) -> set[int]:
    """The schema ids in the wire headers of the Avro-valued records (others are skipped:
    a client's garbage bytes on ``commands`` name no schema)."""
    ids: set[int] = set()
    for role in _AVRO_ROLES:
        for message in records.get(role, ()):  # type: ignore[call-overload]
            value = message.value()
            if isinstance(value, bytes) and len(value) >= HEADER_SIZE and value[0] == MAGIC_BYTE:
                ids.add(int.from_bytes(value[1:HEADER_SIZE], "big"))
    return ids


def _topics_json(topics: Topics) -> dict[str, Any]:
    return {name: getattr(topics, name) for name in Topics.__dataclass_fields__}


def _row(role: Role, message: Message) -> dict[str, Any]:
    kind, timestamp_ms = message.timestamp()
    return {
        "role": role, "partition": message.partition(), "offset": message.offset(),
        "timestamp_type": kind, "timestamp_ms": timestamp_ms, "key": message.key(),
        "value": message.value(),
        "headers": [{"key": k, "value": v} for k, v in _headers(message)],
    }  # fmt: skip


def _headers(message: Message) -> list[tuple[str, bytes | None]]:
    found: Any = message.headers() or []
    return [(str(k), v) for k, v in found]


def _message(row: Mapping[str, Any], topics: Topics) -> tuple[Role, Message]:
    role: Role = row["role"]
    message = Message(
        topic=topic_of(topics, role), partition=row["partition"], offset=row["offset"],
        key=row["key"], value=row["value"],
        headers=[(h["key"], h["value"]) for h in row["headers"]] or None,
        timestamp=(row["timestamp_type"], row["timestamp_ms"]),
    )  # fmt: skip
    return role, message
