"""Avro wire format: every payload type round-trips through the Confluent framing."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from paystream.ledger.currencies import ISO4217_CODES
from paystream.ledger.models import (
    REJECTION_CODES,
    SYSTEM_ACCOUNT_PREFIX,
    CloseAccount,
    Compensation,
    CreditLeg,
    Deposit,
    DirectoryEntry,
    Event,
    FreezeAccount,
    JournalEntry,
    JournalLine,
    OpenAccount,
    Transfer,
    UnfreezeAccount,
    Withdrawal,
)
from paystream.topology import records
from paystream.topology.avro import SCHEMA_DIR, SCHEMA_FILES, AvroSerde, TopicNames
from paystream.topology.registry import FileSchemaRegistry
from paystream.topology.validation import DERIVED_ID_LENGTH_MAX, ID_LENGTH_MAX

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1

ids = st.text(min_size=1, max_size=ID_LENGTH_MAX)
derived_ids = st.text(min_size=1, max_size=DERIVED_ID_LENGTH_MAX)
client_accounts = ids.filter(lambda s: not s.startswith(SYSTEM_ACCOUNT_PREFIX))
currencies = st.sampled_from(sorted(ISO4217_CODES))
times_ms = st.integers(min_value=0, max_value=LONG_MAX)
amounts = st.integers(min_value=LONG_MIN, max_value=LONG_MAX)  # the core judges amounts
codes = st.sampled_from(REJECTION_CODES)


def _common() -> dict[str, Any]:
    return {
        "command_id": ids,
        "request_id": ids,
        "partner_id": ids,
        "issued_at_ms": times_ms,
        "account_id": client_accounts,
    }


commands = st.one_of(
    st.builds(OpenAccount, **_common(), currency=currencies, allow_overdraft=st.booleans()),
    st.builds(FreezeAccount, **_common()),
    st.builds(UnfreezeAccount, **_common()),
    st.builds(CloseAccount, **_common()),
    st.builds(Deposit, **_common(), amount_minor=amounts, currency=currencies),
    st.builds(Withdrawal, **_common(), amount_minor=amounts, currency=currencies),
    st.builds(
        Transfer,
        **_common(),
        destination_account_id=client_accounts,
        amount_minor=amounts,
        currency=currencies,
    ),
)

_leg_fields: dict[str, Any] = {
    "transfer_id": ids,
    "partner_id": ids,
    "issued_at_ms": times_ms,
    "source_account_id": client_accounts,
    "destination_account_id": client_accounts,
    "amount_minor": amounts,
    "currency": currencies,
}
legs = st.one_of(
    st.builds(CreditLeg, **_leg_fields),
    st.builds(Compensation, **_leg_fields, reason=codes),
)

journal_lines = st.builds(
    JournalLine,
    account_id=ids,
    currency=currencies,
    side=st.sampled_from(["debit", "credit"]),
    amount_minor=amounts,
)
journal_entries = st.builds(
    JournalEntry,
    entry_id=derived_ids,
    payment_id=ids,
    kind=st.sampled_from(
        ["deposit", "withdrawal", "transfer_debit", "transfer_credit", "transfer_reversal"]
    ),
    partner_id=ids,
    account_id=ids,
    issued_at_ms=times_ms,
    lines=st.lists(journal_lines, min_size=2, max_size=8).map(tuple),
)
events = st.builds(
    Event,
    event_id=derived_ids,
    payment_id=ids,
    type=st.sampled_from(
        ["Accepted", "Debited", "Completed", "Failed", "Reversed", "Duplicate", "Rejected"]
    ),
    command_type=ids,
    partner_id=ids,
    account_id=ids,
    issued_at_ms=times_ms,
    counterparty_account_id=st.none() | ids,
    amount_minor=st.none() | amounts,
    currency=st.none() | currencies,
    code=st.none() | codes,
    original_payment_id=st.none() | ids,
)
directory_entries = st.builds(
    DirectoryEntry,
    account_id=ids,
    currency=currencies,
    partner_id=ids,
    status=st.sampled_from(["open", "frozen", "closed"]),
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> FileSchemaRegistry:
    return FileSchemaRegistry(tmp_path_factory.mktemp("registry") / "schema-registry.json")


@pytest.fixture(scope="module")
def serde(registry: FileSchemaRegistry) -> AvroSerde:
    return AvroSerde(registry, topic_names=TopicNames())


@given(command=commands)
def test_command_round_trip(serde: AvroSerde, command: Any) -> None:
    assert serde.decode_command(serde.encode_command(command)) == command


@given(leg=legs)
def test_leg_round_trip(serde: AvroSerde, leg: Any) -> None:
    assert serde.decode_leg(serde.encode_leg(leg)) == leg


@given(entry=journal_entries)
def test_journal_entry_round_trip(serde: AvroSerde, entry: JournalEntry) -> None:
    assert serde.decode_journal_entry(serde.encode_journal_entry(entry)) == entry


@given(event=events)
def test_event_round_trip(serde: AvroSerde, event: Event) -> None:
    assert serde.decode_event(serde.encode_event(event)) == event


@given(entry=directory_entries)
def test_directory_entry_round_trip(serde: AvroSerde, entry: DirectoryEntry) -> None:
    assert serde.decode_directory_entry(serde.encode_directory_entry(entry)) == entry


@settings(max_examples=20)
@given(command=commands)
def test_every_command_type_has_its_own_union_branch(serde: AvroSerde, command: Any) -> None:
    record = records.command_to_record(command)
    assert record["body"][0] == f"{records.NAMESPACE}.{type(command).__name__}"


def test_command_branches_match_the_reader_schema() -> None:
    schema = json.loads((SCHEMA_DIR / "command.avsc").read_text())
    body = next(f for f in schema["fields"] if f["name"] == "body")
    names = {f"{records.NAMESPACE}.{branch['name']}" for branch in body["type"]}
    assert names == records.COMMAND_BRANCHES


def test_leg_branches_match_the_reader_schema() -> None:
    schema = json.loads((SCHEMA_DIR / "leg.avsc").read_text())
    assert {f"{b['namespace']}.{b['name']}" for b in schema} == records.LEG_BRANCHES


def test_confluent_framing_and_topic_name_subjects(tmp_path: Path) -> None:
    registry = FileSchemaRegistry(tmp_path / "registry.json")
    serde = AvroSerde(registry, topic_names=TopicNames.prefixed("ps."))
    entry = DirectoryEntry("acct-1", "EUR", "partner-1", "open")
    data = serde.encode_directory_entry(entry)
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    text = (SCHEMA_DIR / SCHEMA_FILES["directory_entry"]).read_text()
    assert schema_id == registry.register("ps.directory-value", text)
    assert serde.subject("command") == "ps.commands-value"
    assert data[5:] == b"\x0cacct-1\x06EUR\x12partner-1\x00"  # Avro binary, by hand


def test_money_is_long_everywhere() -> None:
    for path in SCHEMA_DIR.glob("*.avsc"):
        text = path.read_text()
        assert '"float"' not in text
        assert '"double"' not in text


class CountingRegistry(FileSchemaRegistry):
    lookups = 0

    def schema_for_id(self, schema_id: int) -> str:
        self.lookups += 1
        return super().schema_for_id(schema_id)


def test_writer_schema_is_fetched_once_per_id(tmp_path: Path) -> None:
    registry = CountingRegistry(tmp_path / "registry.json")
    producer = AvroSerde(registry)
    consumer = AvroSerde(registry)
    entry = DirectoryEntry("acct-1", "EUR", "partner-1", "frozen")
    for _ in range(3):
        assert consumer.decode_directory_entry(producer.encode_directory_entry(entry)) == entry
    assert registry.lookups == 1


def test_newer_writer_with_an_extra_field_resolves_to_the_reader(tmp_path: Path) -> None:
    registry = FileSchemaRegistry(tmp_path / "registry.json")
    newer = json.loads((SCHEMA_DIR / "event.avsc").read_text())
    newer["fields"].append({"name": "fee_minor", "type": "long", "default": 0})
    schema_id = registry.register("events-value", json.dumps(newer))
    record = {**records.event_to_record(_event()), "fee_minor": 7}
    data = _frame(schema_id, newer, record)
    assert AvroSerde(registry).decode_event(data) == _event()


def _event() -> Event:
    return Event(
        "p-1:debit", "p-1", "Debited", "Transfer", "partner", "acct-1", 5, "acct-2", 10, "EUR"
    )


def _frame(schema_id: int, schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    schemaless_writer(out, parse_schema(schema), record)
    return out.getvalue()
