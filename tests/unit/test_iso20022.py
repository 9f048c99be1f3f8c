"""pain.001 and pacs.002 of the bank rail: round trips, and what the schema and the rail refuse."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paystream.rail.iso20022 import (
    MESSAGE_BYTES_MAX,
    PAIN001_AMOUNT_MAX_MINOR,
    STATUSES,
    Instruction,
    InvalidMessage,
    StatusReport,
    build_pacs002,
    build_pain001,
    parse_pacs002,
    parse_pain001,
)

CREATED_AT_MS = 1_767_225_600_123
IBAN_CREDITOR = Instruction(
    end_to_end_id="po-01JABCDEF0123456789",
    amount_minor=1250,
    currency="EUR",
    creditor_name="Zoë Ångström",
    creditor_country="DE",
    creditor_iban="DE89370400440532013000",
    creditor_bic="COBADEFFXXX",
    reference="Rechnung für März",
    debtor_name="Paystream Marketplace",
    debtor_iban="NL91ABNA0417164300",
    debtor_bic="ABNANL2A",
)
US_CREDITOR = dataclasses.replace(
    IBAN_CREDITOR,
    end_to_end_id="po-us-1",
    currency="USD",
    creditor_name="Bob's Garage",
    creditor_country="US",
    creditor_iban=None,
    creditor_bic=None,
    creditor_account_number="123456789012",
    creditor_routing_number="021000021",
    reference=None,
)

# Currencies with 0, 2 and 3 decimals.
CURRENCIES = ("JPY", "KRW", "EUR", "USD", "GBP", "KWD", "BHD")
TEXT = st.text(
    alphabet=st.characters(categories=["L", "N", "P"], include_characters=" "),
    min_size=1,
    max_size=140,
)


def _pain(instruction: Instruction, message_id: str = "msg-1") -> bytes:
    return build_pain001(instruction, message_id=message_id, created_at_ms=CREATED_AT_MS)


@given(
    amount_minor=st.integers(min_value=1, max_value=2**63 - 1),
    currency=st.sampled_from(CURRENCIES),
    base=st.sampled_from([IBAN_CREDITOR, US_CREDITOR]),
    name=TEXT,
    reference=st.none() | TEXT,
)
@settings(max_examples=60, deadline=None)
def test_pain001_round_trips(
    amount_minor: int, currency: str, base: Instruction, name: str, reference: str | None
) -> None:
    instruction = dataclasses.replace(
        base, amount_minor=amount_minor, currency=currency, creditor_name=name, reference=reference
    )
    if amount_minor > PAIN001_AMOUNT_MAX_MINOR:  # ISO amounts have 18 digits at most
        with pytest.raises(InvalidMessage, match="at most 18 digits"):
            _pain(instruction)
        return
    assert parse_pain001(_pain(instruction, "msg-rt")) == ("msg-rt", instruction)


@pytest.mark.parametrize(
    ("currency", "amount_minor", "written"),
    [
        ("JPY", 1000, ">1000<"),
        ("EUR", 1250, ">12.50<"),
        ("EUR", 5, ">0.05<"),
        ("KWD", 1234, ">1.234<"),
        ("BHD", 7, ">0.007<"),
        ("EUR", PAIN001_AMOUNT_MAX_MINOR, ">9999999999999999.99<"),
    ],
)
def test_amounts_are_written_with_the_currency_exponent(
    currency: str, amount_minor: int, written: str
) -> None:
    instruction = dataclasses.replace(IBAN_CREDITOR, currency=currency, amount_minor=amount_minor)
    data = _pain(instruction)
    assert written in data.decode()
    assert parse_pain001(data)[1].amount_minor == amount_minor


def test_iban_and_routing_creditors_are_written_as_the_schema_says() -> None:
    iban = _pain(IBAN_CREDITOR).decode()
    assert "<CdtrAcct><Id><IBAN>DE89370400440532013000</IBAN>" in iban
    assert "<CdtrAgt><FinInstnId><BICFI>COBADEFFXXX</BICFI>" in iban
    assert "<InstrId>po-01JABCDEF0123456789</InstrId>" in iban
    us = _pain(US_CREDITOR).decode()
    assert "<CdtrAcct><Id><Othr><Id>123456789012</Id></Othr>" in us
    assert "<ClrSysId><Cd>USABA</Cd></ClrSysId><MmbId>021000021</MmbId>" in us
    no_bic = dataclasses.replace(IBAN_CREDITOR, creditor_bic=None)
    assert "<CdtrAgt>" not in _pain(no_bic).decode()
    assert parse_pain001(_pain(no_bic))[1] == no_bic


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount_minor": 0}, "amount"),
        ({"currency": "EUX"}, "ISO 4217"),
        ({"end_to_end_id": "x" * 36}, "end_to_end_id"),
        ({"creditor_account_number": "1234"}, "IBAN and an account"),
        ({"creditor_iban": None}, "needs an IBAN"),
        ({"creditor_iban": "not an iban"}, "xsd"),
        ({"reference": "line\nbreak"}, "not printable"),
    ],
)
def test_build_refuses_what_the_rail_cannot_send(change: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        _pain(dataclasses.replace(IBAN_CREDITOR, **change))  # type: ignore[arg-type]


def test_routing_numbers_are_nine_digits() -> None:
    with pytest.raises(InvalidMessage, match="9 digits"):
        _pain(dataclasses.replace(US_CREDITOR, creditor_routing_number="12345"))


def test_parse_refuses_a_missing_end_to_end_id() -> None:
    data = _pain(IBAN_CREDITOR).replace(b"<EndToEndId>po-01JABCDEF0123456789</EndToEndId>", b"")
    with pytest.raises(InvalidMessage, match=r"xsd.*PmtId"):
        parse_pain001(data)


def test_parse_refuses_two_transactions() -> None:
    data = _pain(IBAN_CREDITOR)
    start = data.index(b"<CdtTrfTxInf>")
    end = data.index(b"</CdtTrfTxInf>") + len(b"</CdtTrfTxInf>")
    doubled = data[:end] + data[start:end] + data[end:]
    with pytest.raises(InvalidMessage, match="2 transactions"):
        parse_pain001(doubled)


def test_parse_refuses_more_decimals_than_the_currency_has() -> None:
    yen = _pain(dataclasses.replace(IBAN_CREDITOR, currency="JPY", amount_minor=1000))
    for written in (b">1000.5<", b">1000.0<"):
        with pytest.raises(InvalidMessage, match="JPY has 0 decimals"):
            parse_pain001(yen.replace(b">1000<", written))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\xffgarbage", "not XML"),
        (b"", "not XML"),
        (b"<Document/>", "root element"),
        (
            b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09">&e;</Document>',
            "DTD or entity",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<d>&b;</d>",
            "DTD or entity",
        ),
        (b"<x>" + b"a" * MESSAGE_BYTES_MAX + b"</x>", "over 65536 bytes"),
    ],
)
def test_parse_refuses_garbage_entities_and_oversize(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        parse_pain001(data)
    with pytest.raises(InvalidMessage):
        parse_pacs002(data)


@pytest.mark.parametrize("status", STATUSES)
def test_pacs002_round_trips_each_status(status: str) -> None:
    rejected = status == "RJCT"
    report = StatusReport(
        end_to_end_id="po-ü-1",
        status=status,  # type: ignore[arg-type]
        reason_code="AC04" if rejected else None,
        reason_text="Konto geschlossen (closed account)" if rejected else None,
    )
    data = build_pacs002(
        report, message_id="sts-1", original_message_id="msg-1", created_at_ms=CREATED_AT_MS
    )
    assert f"<TxSts>{status}</TxSts>" in data.decode()
    assert "<OrgnlEndToEndId>po-ü-1</OrgnlEndToEndId>" in data.decode()
    assert parse_pacs002(data) == report


def test_pacs002_refuses_a_reason_code_without_rjct_and_rjct_without_one() -> None:
    for report in (
        StatusReport(end_to_end_id="po-1", status="ACSC", reason_code="AC01"),
        StatusReport(end_to_end_id="po-1", status="RJCT"),
    ):
        with pytest.raises(InvalidMessage, match="reason code"):
            build_pacs002(report, message_id="s", original_message_id="m", created_at_ms=0)


def test_pacs002_parse_checks_the_schema_facets() -> None:
    report = StatusReport(end_to_end_id="po-1", status="RJCT", reason_code="AM05")
    data = build_pacs002(report, message_id="s", original_message_id="m", created_at_ms=0)
    with pytest.raises(InvalidMessage, match="MsgId is longer than 35"):
        parse_pacs002(data.replace(b"<MsgId>s</MsgId>", b"<MsgId>" + b"s" * 36 + b"</MsgId>"))
    with pytest.raises(InvalidMessage, match="not a valid message"):
        parse_pacs002(data.replace(b"<TxSts>", b"<Unknown>x</Unknown><TxSts>"))
    with pytest.raises(InvalidMessage, match="TxSts"):
        parse_pacs002(data.replace(b"<TxSts>RJCT</TxSts>", b"<TxSts>PDNG</TxSts>"))
    without_header = data.replace(data[data.index(b"<GrpHdr>") : data.index(b"</GrpHdr>") + 9], b"")
    with pytest.raises(InvalidMessage):
        parse_pacs002(without_header)
