"""Avro in the Confluent wire format for everything that leaves a worker.

A message is ``0x00`` + the writer schema's id (4 bytes, big-endian) + the record
in Avro binary. Subjects follow TopicNameStrategy (``<topic>-value``). Decoding
fetches the writer schema by the id in the message (cached per id), resolves it
to this code's reader schema (``schemas/*.avsc``), maps the record onto the
models.py dataclasses and checks it structurally; anything that fails is a
``PoisonMessage`` for the ``dlq``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

from fastavro import parse_schema, schemaless_reader
from fastavro.schema import to_parsing_canonical_form

from paystream.ledger.models import Command, Event, JournalEntry, Leg
from paystream.topology import records, validation
from paystream.topology.avro_writer import Writer, compile_writer
from paystream.topology.dlq import PoisonMessage
from paystream.topology.registry import SchemaNotFound, SchemaRegistry

__all__ = [
    "DEFAULT_TOPICS",
    "HEADER_SIZE",
    "MAGIC_BYTE",
    "SCHEMA_DIR",
    "SCHEMA_FILES",
    "AvroSerde",
    "PayloadKind",
]

SCHEMA_DIR: Final = Path(__file__).resolve().parents[2] / "schemas"
"""The reader schemas: ``schemas/`` at the repository root."""

MAGIC_BYTE: Final = 0
_HEADER: Final = struct.Struct(">BI")
HEADER_SIZE: Final = _HEADER.size

_ERROR_TEXT_MAX: Final = 200

PayloadKind: TypeAlias = Literal["command", "leg", "journal_entry", "event", "batch_manifest"]
SCHEMA_FILES: Final[dict[PayloadKind, str]] = {
    "command": "command.avsc",
    "leg": "leg.avsc",
    "journal_entry": "journal_entry.avsc",
    "event": "event.avsc",
    "batch_manifest": "batch_manifest.avsc",
}
"""Every Avro payload. The directory and the table changelogs are not Avro: they never
leave the workers (``paystream.tables.codecs``; docs/topology.md says what is on each wire)."""


DEFAULT_TOPICS: Final[dict[PayloadKind, str]] = {
    "command": "commands",
    "leg": "legs",
    "journal_entry": "ledger",
    "event": "events",
    "batch_manifest": "batches",
}
"""Payload kind -> the topic it is written to; subjects are ``<topic>-value``."""


@dataclass(frozen=True, slots=True)
class _Writer:
    header: bytes
    write: Writer
    """The payload's compiled writer (``topology.avro_writer``)."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to read one writer schema id as one payload kind."""

    schema_id: int
    writer: Any
    reader: Any  # None when the writer schema is the reader schema: no resolution


class AvroSerde:
    """Encode and decode every Avro payload. One instance per process is enough:
    its caches (writer id per kind, parsed writer schema per id) only grow, bounded
    by the registry's schemas, and a race on first use at most looks an id up twice."""

    def __init__(
        self,
        registry: SchemaRegistry,
        *,
        topics: Mapping[PayloadKind, str] = DEFAULT_TOPICS,
        schema_dir: Path = SCHEMA_DIR,
    ) -> None:
        """``topics``: payload kind -> its topic (subjects follow TopicNameStrategy)."""
        self._registry = registry
        self._subjects = {kind: f"{topics[kind]}-value" for kind in SCHEMA_FILES}
        self._texts = {
            k: (schema_dir / f).read_text(encoding="utf-8") for k, f in SCHEMA_FILES.items()
        }
        self._readers = {kind: parse_schema(json.loads(t)) for kind, t in self._texts.items()}
        self._forms = {kind: to_parsing_canonical_form(s) for kind, s in self._readers.items()}
        self._writers: dict[PayloadKind, _Writer] = {}
        self._writer_schemas: dict[int, Any] = {}
        self._plans: dict[tuple[int, PayloadKind], _Plan] = {}

    def subject(self, kind: PayloadKind) -> str:
        return self._subjects[kind]

    def schema_id(self, kind: PayloadKind) -> int:
        """The id this serde writes ``kind`` with (registers the schema on first use)."""
        return _HEADER.unpack(self._writer(kind).header)[1]  # type: ignore[no-any-return]

    # --- typed surface ----------------------------------------------------------------

    def encode_command(self, command: Command) -> bytes:
        return self._encode("command", records.command_to_record(command))

    def decode_command(self, data: bytes) -> Command:
        """The command, or ``PoisonMessage`` (with the command's ids when they could be read)."""
        command = records.command_from_record(self._decode("command", data))
        try:
            validation.validate_command(command)
        except PoisonMessage as poison:
            raise PoisonMessage(
                poison.code, poison.detail, header=records.command_header(command)
            ) from poison
        return command

    def encode_leg(self, leg: Leg) -> bytes:
        return self._encode("leg", records.leg_to_record(leg))

    def decode_leg(self, data: bytes) -> Leg:
        leg = records.leg_from_record(self._decode("leg", data))
        validation.validate_leg(leg)
        return leg

    def encode_journal_entry(self, entry: JournalEntry) -> bytes:
        return self._encode("journal_entry", records.journal_entry_to_record(entry))

    def decode_journal_entry(self, data: bytes) -> JournalEntry:
        entry = records.journal_entry_from_record(self._decode("journal_entry", data))
        validation.validate_journal_entry(entry)
        return entry

    def encode_event(self, event: Event) -> bytes:
        return self._encode("event", records.event_to_record(event))

    def decode_event(self, data: bytes) -> Event:
        event = records.event_from_record(self._decode("event", data))
        validation.validate_event(event)
        return event

    def encode_record(self, kind: PayloadKind, record: Any) -> bytes:
        """A record (fastavro's dict form) of ``kind`` in the wire format; for payloads whose
        dataclasses live with their topic (``topology.manifest``)."""
        return self._encode(kind, record)

    def decode_record(self, kind: PayloadKind, data: bytes) -> Any:
        """The dict form of a ``kind`` payload (``PoisonMessage`` when it does not decode)."""
        return self._decode(kind, data)

    # --- wire format ------------------------------------------------------------------

    def _encode(self, kind: PayloadKind, record: Any) -> bytes:
        writer = self._writers.get(kind) or self._writer(kind)
        out = bytearray(writer.header)
        writer.write(record, out)
        return bytes(out)

    def _writer(self, kind: PayloadKind) -> _Writer:
        writer = self._writers.get(kind)
        if writer is None:
            schema_id = self._registry.register(self._subjects[kind], self._texts[kind])
            writer = _Writer(
                _HEADER.pack(MAGIC_BYTE, schema_id), compile_writer(self._readers[kind])
            )
            self._writers[kind] = writer
        return writer

    def _decode(self, kind: PayloadKind, data: bytes) -> Any:
        if len(data) < HEADER_SIZE:
            raise PoisonMessage("undecodable", f"{len(data)} bytes, shorter than the header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise PoisonMessage("undecodable", f"magic byte {magic}, expected {MAGIC_BYTE}")
        plan = self._plans.get((schema_id, kind)) or self._plan(schema_id, kind)
        source = BytesIO(data)
        source.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(source, plan.writer, plan.reader, return_record_name=True)
        except Exception as error:  # untrusted bytes: any parser failure is poison
            raise self._read_failure(kind, data, plan, error) from error
        if source.tell() != len(data):
            raise PoisonMessage(
                "undecodable", f"{len(data) - source.tell()} bytes after the record"
            )
        return record

    def _plan(self, schema_id: int, kind: PayloadKind) -> _Plan:
        writer = self._writer_schema(schema_id)
        same = to_parsing_canonical_form(writer) == self._forms[kind]
        plan = _Plan(schema_id, writer, None if same else self._readers[kind])
        self._plans[(schema_id, kind)] = plan
        return plan

    def _writer_schema(self, schema_id: int) -> Any:
        schema = self._writer_schemas.get(schema_id)
        if schema is not None:
            return schema
        try:
            text = self._registry.schema_for_id(schema_id)
        except SchemaNotFound as error:
            raise PoisonMessage("unknown_schema_id", f"schema id {schema_id}: {error}") from error
        try:
            schema = parse_schema(json.loads(text))
        except Exception as error:  # a registry entry that is not Avro
            raise PoisonMessage("undecodable", f"schema id {schema_id}: {_text(error)}") from error
        self._writer_schemas[schema_id] = schema
        return schema

    def _read_failure(
        self, kind: PayloadKind, data: bytes, plan: _Plan, error: Exception
    ) -> PoisonMessage:
        """Why reading failed: a command or leg type unknown here, or bad bytes."""
        unknown = _unknown_branch(kind, data, plan) if plan.reader is not None else None
        if unknown is not None:
            branch, record = unknown
            detail = f"{kind} type {branch} (schema id {plan.schema_id}) is unknown to this reader"
            header = records.record_header(record, branch) if kind == "command" else None
            return PoisonMessage("unknown_command", detail, header=header)
        return PoisonMessage("undecodable", f"schema id {plan.schema_id}: {_text(error)}")


def _unknown_branch(kind: PayloadKind, data: bytes, plan: _Plan) -> tuple[str, Any] | None:
    """The writer's union branch name (and the record read with the writer's schema) if this
    reader does not know the branch, else ``None``."""
    known = {"command": records.COMMAND_BRANCHES, "leg": records.LEG_BRANCHES}.get(kind)
    if known is None:
        return None
    source = BytesIO(data)
    source.seek(HEADER_SIZE)
    try:
        record: Any = schemaless_reader(source, plan.writer, None, return_record_name=True)
        name = record["body"][0] if kind == "command" else record[0]
    except Exception:  # not even the writer's own schema reads it: undecodable
        return None
    return None if name in known else (str(name), record)


def _text(error: Exception) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _ERROR_TEXT_MAX else text[:_ERROR_TEXT_MAX] + "…"
