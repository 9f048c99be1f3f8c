"""Avro wire format: every payload type round-trips through the Confluent framing."""

from __future__ import annotations

import dataclasses
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
    DECISIONS,
    ENTRY_KINDS,
    EVENT_TYPES,
    PHASES,
    REFERENCE_LENGTH_MAX,
    REJECTION_CODES,
    SYSTEM_ACCOUNT_PREFIX,
    CloseAccount,
    Compensation,
    ConfigureScreening,
    Confirmation,
    CreditLeg,
    DecidePayout,
    Deposit,
    Event,
    FailPayout,
    FreezeAccount,
    JournalEntry,
    JournalLine,
    OpenAccount,
    PayoutDetails,
    RequestPayout,
    SendPayout,
    SettlePayout,
    Transfer,
    UnfreezeAccount,
    Withdrawal,
)
from paystream.settings import Settings
from paystream.topology import records
from paystream.topology.avro import DEFAULT_TOPICS, SCHEMA_DIR, SCHEMA_FILES, AvroSerde
from paystream.topology.registry import FileSchemaRegistry
from paystream.topology.topics import Topics
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
references = st.none() | st.text(
    st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=REFERENCE_LENGTH_MAX
)


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
    st.builds(
        Deposit, **_common(), amount_minor=amounts, currency=currencies, reference=references
    ),
    st.builds(
        Withdrawal, **_common(), amount_minor=amounts, currency=currencies, reference=references
    ),
    st.builds(
        Transfer,
        **_common(),
        destination_account_id=client_accounts,
        amount_minor=amounts,
        currency=currencies,
        reference=references,
    ),
)
short = st.text(max_size=35)
screening_keys = st.integers(0, 10**6).map(lambda n: f"@screening:{n}")
reasons = st.none() | st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1,
                              max_size=500)  # fmt: skip
payout_commands = st.one_of(
    st.builds(
        RequestPayout, **_common(), batch_id=ids, amount_minor=amounts, currency=currencies,
        beneficiary_name=st.text(max_size=140), beneficiary_country=short,
        beneficiary_iban=st.none() | short, beneficiary_bic=st.none() | short,
        beneficiary_account_number=st.none() | short,
        beneficiary_routing_number=st.none() | short, reference=references,
    ),
    st.builds(DecidePayout, **_common(), payout_id=ids, decision=st.sampled_from(DECISIONS),
              officer=ids, reason=reasons),
    st.builds(SendPayout, **_common(), payout_id=ids),
    st.builds(SettlePayout, **_common(), payout_id=ids),
    st.builds(FailPayout, **_common(), payout_id=ids, reason_code=st.text(min_size=1, max_size=35),
              reason=reasons),
    st.builds(ConfigureScreening, **{**_common(), "account_id": screening_keys},
              rules_json=st.text(max_size=200)),
)  # fmt: skip

_leg_fields: dict[str, Any] = {
    "transfer_id": ids,
    "request_id": ids,
    "partner_id": ids,
    "issued_at_ms": times_ms,
    "source_account_id": client_accounts,
    "destination_account_id": client_accounts,
    "amount_minor": amounts,
    "currency": currencies,
    "reference": references,
}
legs = st.one_of(
    st.builds(CreditLeg, **_leg_fields),
    st.builds(Confirmation, **_leg_fields),
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
    kind=st.sampled_from(ENTRY_KINDS),
    partner_id=ids,
    account_id=ids,
    issued_at_ms=times_ms,
    lines=st.lists(journal_lines, min_size=2, max_size=8).map(tuple),
    phase=st.sampled_from(PHASES),
    pending_entry_id=st.none() | derived_ids,
)
events = st.builds(
    Event,
    event_id=derived_ids,
    payment_id=ids,
    type=st.sampled_from(EVENT_TYPES),
    command_type=ids,
    partner_id=ids,
    account_id=ids,
    issued_at_ms=times_ms,
    counterparty_account_id=st.none() | ids,
    amount_minor=st.none() | amounts,
    currency=st.none() | currencies,
    code=st.none() | codes,
    original_payment_id=st.none() | ids,
    reference=references,
    rule_codes=st.lists(ids, max_size=3).map(tuple),
    reason=st.none() | st.text(max_size=50),
    actor=st.none() | ids,
    previous_type=st.none() | st.sampled_from(EVENT_TYPES),
    payout=st.none()
    | st.builds(
        PayoutDetails,
        batch_id=ids,
        beneficiary_name=st.text(min_size=1, max_size=20),
        beneficiary_country=st.sampled_from(["DE", "US", "FR"]),
        beneficiary_iban=st.none() | ids,
        beneficiary_bic=st.none() | ids,
        beneficiary_account_number=st.none() | ids,
        beneficiary_routing_number=st.none() | ids,
    ),
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> FileSchemaRegistry:
    return FileSchemaRegistry(tmp_path_factory.mktemp("registry") / "schema-registry.json")


@pytest.fixture(scope="module")
def serde(registry: FileSchemaRegistry) -> AvroSerde:
    return AvroSerde(registry)


@given(command=commands)
def test_command_round_trip(serde: AvroSerde, command: Any) -> None:
    assert serde.decode_command(serde.encode_command(command)) == command


@given(command=payout_commands)
def test_payout_command_round_trip(serde: AvroSerde, command: Any) -> None:
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


def test_the_directory_has_no_avro_path() -> None:
    """One format per topic: the directory is the struct codec only (paystream.tables.codecs)."""
    assert set(SCHEMA_FILES) == {"command", "leg", "journal_entry", "event", "batch_manifest"}
    assert not (SCHEMA_DIR / "directory_entry.avsc").exists()
    assert not list((SCHEMA_DIR / "history").glob("directory_entry.*"))
    assert not [name for name in dir(AvroSerde) if "directory" in name]
    assert not [name for name in dir(records) if "directory" in name]


def test_a_confirmation_stays_a_confirmation(serde: AvroSerde) -> None:
    """CreditLeg and Confirmation have the same fields: only the union branch tells them apart."""
    fields: dict[str, Any] = {
        "transfer_id": "t-1",
        "request_id": "r1",
        "partner_id": "p-1",
        "issued_at_ms": 5,
        "source_account_id": "a",
        "destination_account_id": "b",
        "amount_minor": 10,
        "currency": "EUR",
    }
    for leg in (CreditLeg(**fields), Confirmation(**fields)):
        decoded = serde.decode_leg(serde.encode_leg(leg))
        assert (type(decoded), decoded) == (type(leg), leg)


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
    topics = Topics.from_settings(Settings(topic_prefix="ps", kafka_bootstrap="127.0.0.1:9"))
    serde = AvroSerde(registry, topics=topics.payloads())
    leg = Confirmation(
        transfer_id="t-1",
        request_id="r1",
        partner_id="p-1",
        issued_at_ms=5,
        source_account_id="a",
        destination_account_id="b",
        amount_minor=10,
        currency="EUR",
    )
    data = serde.encode_leg(leg)
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    text = (SCHEMA_DIR / SCHEMA_FILES["leg"]).read_text()
    assert schema_id == registry.register("ps.legs-value", text)
    assert {kind: serde.subject(kind) for kind in SCHEMA_FILES} == {
        "command": "ps.commands-value",
        "leg": "ps.legs-value",
        "journal_entry": "ps.ledger-value",
        "event": "ps.events-value",
        "batch_manifest": "ps.batches-value",
    }
    # Avro binary, by hand: branch 2 of the leg union (appended: older branches keep
    # their index), then the fields in order (request_id second), longs zigzag-encoded,
    # and last the reference: branch 0 (null) of its union.
    assert data[5:] == b"\x04\x06t-1\x04r1\x06p-1\x0a\x02a\x02b\x14\x06EUR\x00"


def test_default_subjects_are_the_default_topics(serde: AvroSerde) -> None:
    assert DEFAULT_TOPICS == {
        "command": "commands",
        "leg": "legs",
        "journal_entry": "ledger",
        "event": "events",
        "batch_manifest": "batches",
    }
    assert {kind: serde.subject(kind) for kind in SCHEMA_FILES} == {
        kind: f"{topic}-value" for kind, topic in DEFAULT_TOPICS.items()
    }


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
    event = _event()
    for _ in range(3):
        assert consumer.decode_event(producer.encode_event(event)) == event
    assert registry.lookups == 1


def test_newer_writer_with_an_extra_field_resolves_to_the_reader(tmp_path: Path) -> None:
    registry = FileSchemaRegistry(tmp_path / "registry.json")
    newer = json.loads((SCHEMA_DIR / "event.avsc").read_text())
    newer["fields"].append({"name": "fee_minor", "type": "long", "default": 0})
    schema_id = registry.register("events-value", json.dumps(newer))
    record = {**records.event_to_record(_event()), "fee_minor": 7}
    data = _frame(schema_id, newer, record)
    assert AvroSerde(registry).decode_event(data) == _event()


def test_an_event_from_before_payout_details_reads_without_them(tmp_path: Path) -> None:
    registry = FileSchemaRegistry(tmp_path / "registry.json")
    v3 = json.loads((SCHEMA_DIR / "history" / "event.v3.avsc").read_text())
    schema_id = registry.register("events-value", json.dumps(v3))
    old = records.event_to_record(_event())
    del old["payout"]
    assert AvroSerde(registry).decode_event(_frame(schema_id, v3, old)) == _event()


def test_a_journal_entry_from_before_two_phase_reads_as_posted(tmp_path: Path) -> None:
    registry = FileSchemaRegistry(tmp_path / "registry.json")
    v1 = json.loads((SCHEMA_DIR / "history" / "journal_entry.v1.avsc").read_text())
    schema_id = registry.register("ledger-value", json.dumps(v1))
    entry = JournalEntry(
        entry_id="p-1:deposit",
        payment_id="p-1",
        kind="deposit",
        partner_id="partner",
        account_id="acct-1",
        issued_at_ms=5,
        lines=(
            JournalLine(account_id="@settlement", currency="EUR", side="debit", amount_minor=7),
            JournalLine(account_id="acct-1", currency="EUR", side="credit", amount_minor=7),
        ),
    )
    old = records.journal_entry_to_record(entry)
    del old["phase"], old["pending_entry_id"]
    decoded = AvroSerde(registry).decode_journal_entry(_frame(schema_id, v1, old))
    assert decoded == entry
    assert (decoded.phase, decoded.pending_entry_id) == ("posted", None)


def test_a_leg_from_before_request_ids_reads_with_an_empty_request_id(tmp_path: Path) -> None:
    registry = FileSchemaRegistry(tmp_path / "registry.json")
    v1 = json.loads((SCHEMA_DIR / "history" / "leg.v1.avsc").read_text())
    schema_id = registry.register("legs-value", json.dumps(v1))
    leg = CreditLeg(
        transfer_id="t-1",
        request_id="r1",
        partner_id="p-1",
        issued_at_ms=5,
        source_account_id="a",
        destination_account_id="b",
        amount_minor=10,
        currency="EUR",
    )
    name, old = records.leg_to_record(leg)
    del old["request_id"]
    decoded = AvroSerde(registry).decode_leg(_frame(schema_id, v1, (name, old)))
    assert decoded == dataclasses.replace(leg, request_id="")


def _event() -> Event:
    return Event(
        event_id="p-1:debit",
        payment_id="p-1",
        type="Debited",
        command_type="Transfer",
        partner_id="partner",
        account_id="acct-1",
        issued_at_ms=5,
        counterparty_account_id="acct-2",
        amount_minor=10,
        currency="EUR",
    )


def _frame(schema_id: int, schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    schemaless_writer(out, parse_schema(schema), record)
    return out.getvalue()
