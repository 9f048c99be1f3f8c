"""Every PoisonMessage code, each produced by a real malformed message."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from paystream.ledger.models import (
    Compensation,
    CreditLeg,
    Deposit,
    DirectoryEntry,
    Event,
    JournalEntry,
    JournalLine,
    OpenAccount,
    Transfer,
    Withdrawal,
)
from paystream.topology import records
from paystream.topology.avro import SCHEMA_DIR, AvroSerde
from paystream.topology.dlq import DETAIL_LENGTH_MAX, PoisonMessage, dlq_headers
from paystream.topology.registry import FileSchemaRegistry
from paystream.topology.validation import ID_LENGTH_MAX

TRANSFER = Transfer(
    "cmd-1", "req-1", "partner-1", 1_700_000_000_000, "acct-1", "acct-2", 500, "EUR"
)
CREDIT_LEG = CreditLeg("cmd-1", "partner-1", 1_700_000_000_000, "acct-1", "acct-2", 500, "EUR")
ENTRY = JournalEntry(
    "cmd-1:debit",
    "cmd-1",
    "transfer_debit",
    "partner-1",
    "acct-1",
    1_700_000_000_000,
    (JournalLine("acct-1", "EUR", "debit", 500), JournalLine("@transit:0", "EUR", "credit", 500)),
)
EVENT = Event("cmd-1:debited", "cmd-1", "Debited", "Transfer", "partner-1", "acct-1", 1, "acct-2")
DIRECTORY_ENTRY = DirectoryEntry("acct-1", "EUR", "partner-1", "open")


@pytest.fixture
def registry(tmp_path: Path) -> FileSchemaRegistry:
    return FileSchemaRegistry(tmp_path / "schema-registry.json")


@pytest.fixture
def serde(registry: FileSchemaRegistry) -> AvroSerde:
    return AvroSerde(registry)


def _poison(decode: Any, data: bytes) -> PoisonMessage:
    with pytest.raises(PoisonMessage) as caught:
        decode(data)
    return caught.value


def _frame(schema_id: int, schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    schemaless_writer(out, parse_schema(schema), record)
    return out.getvalue()


# --- undecodable ------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00\x00\x01"])
def test_shorter_than_the_header_is_undecodable(serde: AvroSerde, data: bytes) -> None:
    assert _poison(serde.decode_command, data).code == "undecodable"


def test_wrong_magic_byte_is_undecodable(serde: AvroSerde) -> None:
    data = bytearray(serde.encode_command(TRANSFER))
    data[0] = 1
    error = _poison(serde.decode_command, bytes(data))
    assert (error.code, "magic" in error.detail) == ("undecodable", True)


def test_json_instead_of_avro_is_undecodable(serde: AvroSerde) -> None:
    assert _poison(serde.decode_command, b'{"command_id": "x"}').code == "undecodable"


def test_truncated_record_is_undecodable(serde: AvroSerde) -> None:
    data = serde.encode_command(TRANSFER)
    assert _poison(serde.decode_command, data[:-3]).code == "undecodable"


def test_trailing_bytes_are_undecodable(serde: AvroSerde) -> None:
    data = serde.encode_command(TRANSFER) + b"\x00"
    error = _poison(serde.decode_command, data)
    assert (error.code, error.detail) == ("undecodable", "1 bytes after the record")


def test_invalid_utf8_in_a_string_is_undecodable(serde: AvroSerde) -> None:
    data = serde.encode_directory_entry(DIRECTORY_ENTRY)
    broken = data.replace(b"acct-1", b"acct\xff1")
    assert _poison(serde.decode_directory_entry, broken).code == "undecodable"


def test_out_of_range_union_index_is_undecodable(serde: AvroSerde) -> None:
    data = serde.encode_leg(CREDIT_LEG)
    broken = data[:5] + b"\x7e" + data[6:]  # zigzag 63: no such branch in any writer
    assert _poison(serde.decode_leg, broken).code == "undecodable"


def test_another_topics_schema_is_undecodable(serde: AvroSerde) -> None:
    data = serde.encode_event(EVENT)
    assert _poison(serde.decode_command, data).code == "undecodable"


# --- unknown_schema_id ----------------------------------------------------------------------


def test_unregistered_schema_id(serde: AvroSerde) -> None:
    data = serde.encode_command(TRANSFER)
    forged = struct.pack(">bI", 0, 4242) + data[5:]
    error = _poison(serde.decode_command, forged)
    assert (error.code, "4242" in error.detail) == ("unknown_schema_id", True)


def test_unknown_schema_id_of_a_fresh_registry(tmp_path: Path, serde: AvroSerde) -> None:
    data = serde.encode_command(TRANSFER)
    elsewhere = AvroSerde(FileSchemaRegistry(tmp_path / "other.json"))
    assert _poison(elsewhere.decode_command, data).code == "unknown_schema_id"


# --- unknown_command ------------------------------------------------------------------------


def _newer_command_schema() -> dict[str, Any]:
    """Today's command schema plus a branch this code does not know."""
    schema = json.loads((SCHEMA_DIR / "command.avsc").read_text())
    body = next(f for f in schema["fields"] if f["name"] == "body")
    payout = {
        "type": "record",
        "name": "Payout",
        "fields": [
            {"name": "amount_minor", "type": "long"},
            {"name": "currency", "type": "string"},
            {"name": "beneficiary_iban", "type": "string"},
        ],
    }
    body["type"].append(payout)
    return dict(schema)


def test_command_type_from_a_newer_writer_is_unknown_command(
    registry: FileSchemaRegistry, serde: AvroSerde
) -> None:
    newer = _newer_command_schema()
    schema_id = registry.register("commands-value", json.dumps(newer))
    body = {"amount_minor": 5, "currency": "EUR", "beneficiary_iban": "DE00"}
    record = {**records.command_to_record(TRANSFER), "body": ("paystream.v1.Payout", body)}
    error = _poison(serde.decode_command, _frame(schema_id, newer, record))
    assert error.code == "unknown_command"
    assert "paystream.v1.Payout" in error.detail


def test_known_command_from_the_newer_writer_still_decodes(
    registry: FileSchemaRegistry, serde: AvroSerde
) -> None:
    newer = _newer_command_schema()
    schema_id = registry.register("commands-value", json.dumps(newer))
    data = _frame(schema_id, newer, records.command_to_record(TRANSFER))
    assert serde.decode_command(data) == TRANSFER


def test_leg_type_from_a_newer_writer_is_unknown_command(
    registry: FileSchemaRegistry, serde: AvroSerde
) -> None:
    newer = json.loads((SCHEMA_DIR / "leg.avsc").read_text())
    post = {"type": "record", "name": "PostPending", "namespace": "paystream.v1", "fields": []}
    schema_id = registry.register("legs-value", json.dumps([*newer, post]))
    data = _frame(schema_id, [*newer, post], ("paystream.v1.PostPending", {}))
    assert _poison(serde.decode_leg, data).code == "unknown_command"


# --- invalid_field --------------------------------------------------------------------------

_INVALID_COMMANDS = {
    "empty command_id": dataclasses.replace(TRANSFER, command_id=""),
    "long request_id": dataclasses.replace(TRANSFER, request_id="r" * (ID_LENGTH_MAX + 1)),
    "empty partner_id": dataclasses.replace(TRANSFER, partner_id=""),
    "system source": dataclasses.replace(TRANSFER, account_id="@transit:3"),
    "system destination": dataclasses.replace(TRANSFER, destination_account_id="@settlement"),
    "lower-case currency": dataclasses.replace(TRANSFER, currency="eur"),
    "withdrawn currency": Deposit("c", "r", "p", 1, "acct-1", 5, "HRK"),
    "made-up currency": Withdrawal("c", "r", "p", 1, "acct-1", 5, "XYZ"),
    "open with bad currency": OpenAccount("c", "r", "p", 1, "acct-1", "EURO"),
    "negative issued_at_ms": dataclasses.replace(TRANSFER, issued_at_ms=-1),
}


@pytest.mark.parametrize("command", _INVALID_COMMANDS.values(), ids=_INVALID_COMMANDS.keys())
def test_malformed_command_is_invalid_field(serde: AvroSerde, command: Any) -> None:
    assert _poison(serde.decode_command, serde.encode_command(command)).code == "invalid_field"


def test_detail_names_the_field(serde: AvroSerde) -> None:
    command = dataclasses.replace(TRANSFER, destination_account_id="@transit:1")
    error = _poison(serde.decode_command, serde.encode_command(command))
    assert error.detail.startswith("destination_account_id: ")


def test_ids_at_the_bound_are_valid(serde: AvroSerde) -> None:
    longest = "x" * ID_LENGTH_MAX
    command = dataclasses.replace(TRANSFER, command_id=longest, account_id=longest)
    assert serde.decode_command(serde.encode_command(command)) == command


@pytest.mark.parametrize("amount_minor", [0, -1, -(2**63)])
def test_amounts_are_the_cores_business(serde: AvroSerde, amount_minor: int) -> None:
    command = dataclasses.replace(TRANSFER, amount_minor=amount_minor)
    assert serde.decode_command(serde.encode_command(command)) == command


_INVALID_OUTPUTS: dict[str, tuple[str, Any]] = {
    "leg from a system account": ("leg", dataclasses.replace(CREDIT_LEG, source_account_id="@x")),
    "compensation reason": (
        "leg",
        Compensation("t", "p", 1, "a", "b", 5, "EUR", "because"),  # type: ignore[arg-type]
    ),
    "one-line entry": ("journal_entry", dataclasses.replace(ENTRY, lines=ENTRY.lines[:1])),
    "line currency": (
        "journal_entry",
        dataclasses.replace(ENTRY, lines=(ENTRY.lines[0], JournalLine("@t", "XXY", "credit", 5))),
    ),
    "event code": ("event", dataclasses.replace(EVENT, code="nope")),  # type: ignore[arg-type]
    "event time": ("event", dataclasses.replace(EVENT, issued_at_ms=-5)),
    "directory currency": ("directory_entry", dataclasses.replace(DIRECTORY_ENTRY, currency="")),
}


@pytest.mark.parametrize(("kind", "value"), _INVALID_OUTPUTS.values(), ids=_INVALID_OUTPUTS.keys())
def test_malformed_outputs_are_invalid_field(serde: AvroSerde, kind: str, value: Any) -> None:
    encode = getattr(serde, f"encode_{kind}")
    decode = getattr(serde, f"decode_{kind}")
    assert _poison(decode, encode(value)).code == "invalid_field"


# --- dlq headers ----------------------------------------------------------------------------


def test_dlq_headers() -> None:
    error = PoisonMessage("unknown_schema_id", "schema id 7: none")
    assert dlq_headers(error, topic="commands", partition=3, offset=12345) == [
        ("dlq.reason", b"unknown_schema_id"),
        ("dlq.detail", b"schema id 7: none"),
        ("dlq.topic", b"commands"),
        ("dlq.partition", b"3"),
        ("dlq.offset", b"12345"),
    ]


def test_dlq_detail_is_bounded() -> None:
    error = PoisonMessage("invalid_field", "é" * (DETAIL_LENGTH_MAX * 2))
    headers = dict(dlq_headers(error, topic="t", partition=0, offset=0))
    assert headers["dlq.detail"].decode() == "é" * DETAIL_LENGTH_MAX
