"""Every PoisonMessage code, each produced by a real malformed message."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from paystream.ledger.models import (
    REFERENCE_LENGTH_MAX,
    Compensation,
    Confirmation,
    CreditLeg,
    Deposit,
    Event,
    JournalEntry,
    JournalLine,
    OpenAccount,
    Transfer,
    Withdrawal,
)
from paystream.topology import records
from paystream.topology.avro import SCHEMA_DIR, AvroSerde
from paystream.topology.dlq import (
    DETAIL_LENGTH_MAX,
    DLQ_KEY_BYTES_MAX,
    DLQ_VALUE_BYTES_MAX,
    POISON_CODES,
    CommandHeader,
    PoisonMessage,
    dlq_copy,
    dlq_headers,
)
from paystream.topology.registry import FileSchemaRegistry
from paystream.topology.validation import ID_LENGTH_MAX, header_is_readable

TRANSFER = Transfer(
    command_id="cmd-1",
    request_id="req-1",
    partner_id="partner-1",
    issued_at_ms=1_700_000_000_000,
    account_id="acct-1",
    destination_account_id="acct-2",
    amount_minor=500,
    currency="EUR",
)
TRANSFER_HEADER = CommandHeader(
    command_id="cmd-1",
    request_id="req-1",
    partner_id="partner-1",
    account_id="acct-1",
    issued_at_ms=1_700_000_000_000,
    command_type="Transfer",
)
CREDIT_LEG = CreditLeg(
    transfer_id="cmd-1",
    request_id="r1",
    partner_id="partner-1",
    issued_at_ms=1_700_000_000_000,
    source_account_id="acct-1",
    destination_account_id="acct-2",
    amount_minor=500,
    currency="EUR",
)
ENTRY = JournalEntry(
    entry_id="cmd-1:debit",
    payment_id="cmd-1",
    kind="transfer_debit",
    partner_id="partner-1",
    account_id="acct-1",
    issued_at_ms=1_700_000_000_000,
    lines=(
        JournalLine(account_id="acct-1", currency="EUR", side="debit", amount_minor=500),
        JournalLine(account_id="@transit:0", currency="EUR", side="credit", amount_minor=500),
    ),
    phase="pending",
)
EVENT = Event(
    event_id="cmd-1:debited",
    payment_id="cmd-1",
    type="Debited",
    command_type="Transfer",
    partner_id="partner-1",
    account_id="acct-1",
    issued_at_ms=1,
    counterparty_account_id="acct-2",
)


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
    error = _poison(serde.decode_command, data)
    assert (error.code, error.header) == ("undecodable", None)


def test_wrong_magic_byte_is_undecodable(serde: AvroSerde) -> None:
    data = bytearray(serde.encode_command(TRANSFER))
    data[0] = 1
    error = _poison(serde.decode_command, bytes(data))
    assert (error.code, "magic" in error.detail) == ("undecodable", True)


def test_json_instead_of_avro_is_undecodable(serde: AvroSerde) -> None:
    assert _poison(serde.decode_command, b'{"command_id": "x"}').code == "undecodable"


def test_truncated_record_is_undecodable(serde: AvroSerde) -> None:
    data = serde.encode_command(TRANSFER)
    error = _poison(serde.decode_command, data[:-3])
    assert (error.code, error.header) == ("undecodable", None)  # bytes, not ids: no answer


def test_trailing_bytes_are_undecodable(serde: AvroSerde) -> None:
    data = serde.encode_command(TRANSFER) + b"\x00"
    error = _poison(serde.decode_command, data)
    assert (error.code, error.detail) == ("undecodable", "1 bytes after the record")


def test_invalid_utf8_in_a_string_is_undecodable(serde: AvroSerde) -> None:
    data = serde.encode_command(TRANSFER)
    broken = data.replace(b"acct-1", b"acct\xff1")
    assert broken != data
    error = _poison(serde.decode_command, broken)
    assert (error.code, error.header) == ("undecodable", None)


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
    assert error.header is None


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
    assert error.header == dataclasses.replace(TRANSFER_HEADER, command_type="Payout")


def test_unknown_command_without_the_envelope_has_no_header(
    registry: FileSchemaRegistry, serde: AvroSerde
) -> None:
    """A writer whose envelope lacks an id reads as unknown_command, but cannot be answered."""
    newer = _newer_command_schema()
    newer["fields"] = [f for f in newer["fields"] if f["name"] != "request_id"]
    schema_id = registry.register("commands-value", json.dumps(newer))
    body = {"amount_minor": 5, "currency": "EUR", "beneficiary_iban": "DE00"}
    record = {**records.command_to_record(TRANSFER), "body": ("paystream.v1.Payout", body)}
    del record["request_id"]
    error = _poison(serde.decode_command, _frame(schema_id, newer, record))
    assert (error.code, error.header) == ("unknown_command", None)


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
    error = _poison(serde.decode_leg, data)
    assert (error.code, error.header) == ("unknown_command", None)  # legs are never answered


# --- invalid_field --------------------------------------------------------------------------

_INVALID_COMMANDS = {
    "empty command_id": dataclasses.replace(TRANSFER, command_id=""),
    "long request_id": dataclasses.replace(TRANSFER, request_id="r" * (ID_LENGTH_MAX + 1)),
    "empty partner_id": dataclasses.replace(TRANSFER, partner_id=""),
    "system source": dataclasses.replace(TRANSFER, account_id="@transit:3"),
    "system destination": dataclasses.replace(TRANSFER, destination_account_id="@settlement"),
    "lower-case currency": dataclasses.replace(TRANSFER, currency="eur"),
    "withdrawn currency": Deposit("c", "r", "p", 1, "acct-1", amount_minor=5, currency="HRK"),
    "made-up currency": Withdrawal("c", "r", "p", 1, "acct-1", amount_minor=5, currency="XYZ"),
    "open with bad currency": OpenAccount("c", "r", "p", 1, "acct-1", currency="EURO"),
    "negative issued_at_ms": dataclasses.replace(TRANSFER, issued_at_ms=-1),
    "empty reference": dataclasses.replace(TRANSFER, reference=""),
    "long reference": dataclasses.replace(TRANSFER, reference="r" * (REFERENCE_LENGTH_MAX + 1)),
    "NUL in a reference": dataclasses.replace(TRANSFER, reference="inv\x00 42"),
    "newline in a deposit's reference": Deposit(
        "c", "r", "p", 1, "acct-1", amount_minor=5, currency="EUR", reference="a\nb"
    ),
}


@pytest.mark.parametrize("command", _INVALID_COMMANDS.values(), ids=_INVALID_COMMANDS.keys())
def test_malformed_command_is_invalid_field(serde: AvroSerde, command: Any) -> None:
    error = _poison(serde.decode_command, serde.encode_command(command))
    assert error.code == "invalid_field"
    assert error.header == records.command_header(command)  # its sender gets an answer


def test_invalid_field_carries_the_commands_ids(serde: AvroSerde) -> None:
    command = dataclasses.replace(TRANSFER, currency="eur")
    error = _poison(serde.decode_command, serde.encode_command(command))
    assert error.header == TRANSFER_HEADER
    assert isinstance(error.__cause__, PoisonMessage)  # the validator's own, chained
    assert error.detail == error.__cause__.detail


def _header_with(field: str, value: str) -> CommandHeader:
    changes: dict[str, Any] = {field: value}
    return dataclasses.replace(TRANSFER_HEADER, **changes)


def test_header_readability() -> None:
    """An answer is keyed by command id, partner and account; the request id is only hashed."""
    assert header_is_readable(TRANSFER_HEADER)
    longest = "x" * ID_LENGTH_MAX
    for field in ("command_id", "partner_id", "account_id"):
        assert header_is_readable(_header_with(field, longest))
        assert not header_is_readable(_header_with(field, ""))
        assert not header_is_readable(_header_with(field, longest + "x"))
    assert header_is_readable(dataclasses.replace(TRANSFER_HEADER, request_id=""))
    assert header_is_readable(dataclasses.replace(TRANSFER_HEADER, request_id=longest * 4))


def test_detail_names_the_field(serde: AvroSerde) -> None:
    command = dataclasses.replace(TRANSFER, destination_account_id="@transit:1")
    error = _poison(serde.decode_command, serde.encode_command(command))
    assert error.detail.startswith("destination_account_id: ")


def test_a_reference_at_the_bound_in_any_script_is_valid(serde: AvroSerde) -> None:
    reference = ("Rechnung Nº 7, 請求書 " * 10)[:REFERENCE_LENGTH_MAX]
    command = dataclasses.replace(TRANSFER, reference=reference)
    assert serde.decode_command(serde.encode_command(command)) == command


def test_ids_at_the_bound_are_valid(serde: AvroSerde) -> None:
    longest = "x" * ID_LENGTH_MAX
    command = dataclasses.replace(TRANSFER, command_id=longest, account_id=longest)
    assert serde.decode_command(serde.encode_command(command)) == command


@pytest.mark.parametrize("amount_minor", [0, -1, -(2**63)])
def test_amounts_are_the_cores_business(serde: AvroSerde, amount_minor: int) -> None:
    command = dataclasses.replace(TRANSFER, amount_minor=amount_minor)
    assert serde.decode_command(serde.encode_command(command)) == command


def _leg_fields(leg: CreditLeg) -> dict[str, Any]:
    return {f.name: getattr(leg, f.name) for f in dataclasses.fields(leg)}


_INVALID_OUTPUTS: dict[str, tuple[str, Any]] = {
    "leg from a system account": ("leg", dataclasses.replace(CREDIT_LEG, source_account_id="@x")),
    "confirmation to a system account": (
        "leg",
        Confirmation(
            **{**_leg_fields(CREDIT_LEG), "destination_account_id": "@transit:0"},
        ),
    ),
    "compensation reason": (
        "leg",
        Compensation(**_leg_fields(CREDIT_LEG), reason="because"),  # type: ignore[arg-type]
    ),
    "one-line entry": ("journal_entry", dataclasses.replace(ENTRY, lines=ENTRY.lines[:1])),
    "line currency": (
        "journal_entry",
        dataclasses.replace(
            ENTRY,
            lines=(
                ENTRY.lines[0],
                JournalLine(account_id="@t", currency="XXY", side="credit", amount_minor=5),
            ),
        ),
    ),
    "event code": ("event", dataclasses.replace(EVENT, code="nope")),  # type: ignore[arg-type]
    "event time": ("event", dataclasses.replace(EVENT, issued_at_ms=-5)),
    "event reference": ("event", dataclasses.replace(EVENT, reference="\x07")),
    "leg reference": ("leg", dataclasses.replace(CREDIT_LEG, reference="x" * 141)),
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


def test_wrong_partition_is_a_poison_code() -> None:
    assert POISON_CODES == (
        "undecodable",
        "unknown_schema_id",
        "unknown_command",
        "invalid_field",
        "wrong_partition",
    )


# --- dlq copy ---------------------------------------------------------------------------------

HEADERS = [("dlq.reason", b"undecodable"), ("dlq.offset", b"9")]


@pytest.mark.parametrize("size", [0, 1, DLQ_VALUE_BYTES_MAX - 1, DLQ_VALUE_BYTES_MAX])
def test_a_value_within_the_bound_is_copied_untouched(size: int) -> None:
    value = bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)
    assert dlq_copy(b"key", value, HEADERS) == (b"key", value, HEADERS)


@pytest.mark.parametrize("size", [DLQ_VALUE_BYTES_MAX + 1, 999_900, 2 * DLQ_VALUE_BYTES_MAX])
def test_an_oversized_value_keeps_a_bounded_prefix_its_size_and_its_hash(size: int) -> None:
    value = hashlib.shake_256(str(size).encode()).digest(size)
    key, copied, headers = dlq_copy(b"key", value, HEADERS)
    assert key == b"key"
    assert DLQ_VALUE_BYTES_MAX == 64 * 1024
    assert copied == value[:DLQ_VALUE_BYTES_MAX]
    assert headers == [
        *HEADERS,
        ("dlq.size", str(size).encode()),
        ("dlq.sha256", hashlib.sha256(value).hexdigest().encode()),
    ]
    assert HEADERS == [("dlq.reason", b"undecodable"), ("dlq.offset", b"9")]  # not mutated


@pytest.mark.parametrize("size", [0, 1, DLQ_KEY_BYTES_MAX])
def test_a_key_within_the_bound_is_copied_untouched(size: int) -> None:
    key = b"k" * size
    assert dlq_copy(key, b"v", HEADERS) == (key, b"v", HEADERS)


@pytest.mark.parametrize("size", [DLQ_KEY_BYTES_MAX + 1, 999_000])
def test_an_oversized_key_keeps_a_bounded_prefix_its_size_and_its_hash(size: int) -> None:
    key = hashlib.shake_256(str(size).encode()).digest(size)
    assert DLQ_KEY_BYTES_MAX == 1024
    copied_key, value, headers = dlq_copy(key, b"v", HEADERS)
    assert copied_key == key[:DLQ_KEY_BYTES_MAX] and value == b"v"
    assert headers == [
        *HEADERS,
        ("dlq.key_size", str(len(key)).encode()),
        ("dlq.key_sha256", hashlib.sha256(key).hexdigest().encode()),
    ]
