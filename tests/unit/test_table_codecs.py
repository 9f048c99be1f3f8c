"""Table key and value codecs: exact round trips, unambiguous keys, loud corruption."""

from __future__ import annotations

import dataclasses
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.ledger.models import (
    REJECTION_CODES,
    RESERVATION_OPEN_MS,
    TOTAL_MAX_MINOR,
    Account,
    DirectoryEntry,
    IdempotencyKey,
    IdempotencyRecord,
    KeySpace,
)
from paystream.tables import codecs
from paystream.tables.codecs import CodecError

I64_MAX = 2**63 - 1
U64_MAX = 2**64 - 1

texts = st.text(max_size=200)
statuses = st.sampled_from(["open", "frozen", "closed"])
totals = st.integers(min_value=0, max_value=TOTAL_MAX_MINOR)
times_ms = st.integers(min_value=0, max_value=I64_MAX)
key_spaces = st.sampled_from(get_args(KeySpace))

accounts = st.builds(
    Account,
    account_id=texts,
    currency=texts,
    partner_id=texts,
    status=statuses,
    debits_must_not_exceed_credits=st.booleans(),
    posted_debits_minor=totals,
    posted_credits_minor=totals,
    pending_debits_minor=totals,
    pending_credits_minor=totals,
    version=st.integers(min_value=0, max_value=I64_MAX),
)
idempotency_records = st.builds(
    IdempotencyRecord,
    command_id=texts,
    body_sha256=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64) | texts,
    code=st.none() | st.sampled_from(REJECTION_CODES),
    expires_at_ms=times_ms,
)
directory_entries = st.builds(
    DirectoryEntry, account_id=texts, currency=texts, partner_id=texts, status=statuses
)
separators = st.sampled_from(["", ":", "\x00", "|", "/", "::", "\x00\x01"])
key_parts = st.builds(lambda a, b, c: a + b + c, texts, separators, texts)
idempotency_keys = st.tuples(key_spaces, key_parts, key_parts)


@given(account=accounts)
def test_account_round_trip(account: Account) -> None:
    assert codecs.decode_account(codecs.encode_account(account)) == account


@given(record=idempotency_records)
def test_idempotency_record_round_trip(record: IdempotencyRecord) -> None:
    assert codecs.decode_idempotency_record(codecs.encode_idempotency_record(record)) == record


@given(entry=directory_entries)
def test_directory_entry_round_trip(entry: DirectoryEntry) -> None:
    assert codecs.decode_directory_entry(codecs.encode_directory_entry(entry)) == entry


@given(account_id=texts)
def test_account_key_round_trip(account_id: str) -> None:
    assert codecs.decode_account_key(codecs.encode_account_key(account_id)) == account_id


# --- idempotency keys ----------------------------------------------------------------------


@pytest.mark.parametrize("space", get_args(KeySpace))
@given(scope=key_parts, name=key_parts)
def test_idempotency_key_round_trip_in_every_space(space: KeySpace, scope: str, name: str) -> None:
    key: IdempotencyKey = (space, scope, name)
    assert codecs.decode_idempotency_key(codecs.encode_idempotency_key(key)) == key


@pytest.mark.parametrize("space", get_args(KeySpace))
@given(record=idempotency_records, name=key_parts)
def test_a_record_under_a_key_of_every_space_round_trips(
    space: KeySpace, record: IdempotencyRecord, name: str
) -> None:
    """A key and its record, as one changelog row: both come back exactly."""
    key: IdempotencyKey = (space, "partner-1" if space == "request" else "", name)
    row = codecs.encode_idempotency_key(key), codecs.encode_idempotency_record(record)
    assert (codecs.decode_idempotency_key(row[0]), codecs.decode_idempotency_record(row[1])) == (
        key,
        record,
    )


@given(a=idempotency_keys, b=idempotency_keys)
def test_idempotency_keys_are_unambiguous(a: IdempotencyKey, b: IdempotencyKey) -> None:
    assert (codecs.encode_idempotency_key(a) == codecs.encode_idempotency_key(b)) == (a == b)


def test_key_space_wire_numbers_never_change() -> None:
    numbers = {
        space: codecs.encode_idempotency_key((space, "", "x"))[0] for space in get_args(KeySpace)
    }
    assert numbers == {"request": 1, "command": 2, "credit": 3, "settlement": 4}


def test_separators_inside_ids_do_not_collide() -> None:
    encode = codecs.encode_idempotency_key
    assert encode(("request", "a:b", "c")) != encode(("request", "a", "b:c"))
    assert encode(("request", "a\x00", "")) != encode(("request", "a", "\x00"))
    assert encode(("request", "", "x")) != encode(("command", "", "x"))
    assert encode(("credit", "", "t-1")) != encode(("settlement", "", "t-1"))


def test_keys_of_one_partner_share_a_prefix() -> None:
    first = codecs.encode_idempotency_key(("request", "partner-1", "req-1"))
    second = codecs.encode_idempotency_key(("request", "partner-1", "zzz"))
    prefix = codecs.encode_idempotency_key(("request", "partner-1", ""))
    other = codecs.encode_idempotency_key(("request", "partner-2", "req-1"))
    assert first.startswith(prefix)
    assert second.startswith(prefix)
    assert not other.startswith(prefix)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "shorter"),
        (b"\x01\x00", "shorter"),
        (b"\x00\x00\x00abc", "unknown key space 0"),
        (b"\x05\x00\x00abc", "unknown key space 5"),
        (b"\x06\x00\x00abc", "unknown key space 6"),
        (b"\x01\x00\x09abc", "scope needs 9"),
        (b"\x01\x00\x01\xff", "not UTF-8"),
    ],
)
def test_corrupt_idempotency_key_raises(data: bytes, problem: str) -> None:
    with pytest.raises(CodecError, match=problem):
        codecs.decode_idempotency_key(data)


# --- the idempotency table's own rows: the clock and the expiry index ----------------------


@pytest.mark.parametrize("clock_ms", [0, 1, 1_764_500_000_000, I64_MAX])
def test_clock_round_trip(clock_ms: int) -> None:
    data = codecs.encode_clock(clock_ms)
    assert len(data) == 8
    assert codecs.decode_clock(data) == clock_ms


@pytest.mark.parametrize("data", [b"", b"\x00" * 7, b"\x00" * 9])
def test_corrupt_clock_raises(data: bytes) -> None:
    with pytest.raises(CodecError, match="clock"):
        codecs.decode_clock(data)


@given(expires_at_ms=st.integers(min_value=0, max_value=2**63 - 2), key=idempotency_keys)
def test_a_record_implies_its_expiry_index_row(expires_at_ms: int, key: IdempotencyKey) -> None:
    encoded = codecs.encode_idempotency_key(key)
    record = IdempotencyRecord(
        command_id="c", body_sha256="0" * 64, code=None, expires_at_ms=expires_at_ms
    )
    value = codecs.encode_idempotency_record(record)
    assert codecs.expiry_index_row(encoded, value) == codecs.encode_expiry_index_key(
        expires_at_ms, encoded
    )
    open_reservation = dataclasses.replace(record, expires_at_ms=RESERVATION_OPEN_MS)
    assert (
        codecs.expiry_index_row(encoded, codecs.encode_idempotency_record(open_reservation)) is None
    )


def test_the_clock_and_index_rows_imply_no_index_row() -> None:
    assert codecs.expiry_index_row(codecs.CLOCK_KEY, codecs.encode_clock(5)) is None
    assert codecs.expiry_index_row(codecs.encode_expiry_index_key(5, b"k"), b"") is None
    with pytest.raises(CodecError, match="idempotency record"):
        codecs.expiry_index_row(b"\x01\x00\x00k", b"\x07" + b"\x00" * 13)


@given(expires_at_ms=st.integers(min_value=0, max_value=U64_MAX), key=idempotency_keys)
def test_expiry_index_key_round_trip(expires_at_ms: int, key: IdempotencyKey) -> None:
    encoded = codecs.encode_idempotency_key(key)
    row = codecs.encode_expiry_index_key(expires_at_ms, encoded)
    assert row.startswith(codecs.EXPIRY_INDEX_PREFIX)
    assert codecs.decode_expiry_index_key(row) == (expires_at_ms, encoded)


@given(
    a=st.tuples(times_ms, idempotency_keys),
    b=st.tuples(times_ms, idempotency_keys),
)
def test_expiry_index_rows_sort_by_expiry(
    a: tuple[int, IdempotencyKey], b: tuple[int, IdempotencyKey]
) -> None:
    """RocksDB iterates bytes in order: the due rows come first, whatever their keys."""
    (first_ms, first_key), (second_ms, second_key) = sorted([a, b], key=lambda row: row[0])
    first = codecs.encode_expiry_index_key(first_ms, codecs.encode_idempotency_key(first_key))
    second = codecs.encode_expiry_index_key(second_ms, codecs.encode_idempotency_key(second_key))
    if first_ms < second_ms:
        assert first < second


def test_expiry_index_rows_sort_by_expiry_across_byte_boundaries() -> None:
    expiries = [0, 1, 255, 256, 2**32 - 1, 2**32, 1_764_500_000_000, I64_MAX, U64_MAX]
    long_key = codecs.encode_idempotency_key(("request", "\U0010ffff" * 50, "\xff" * 100))
    short_key = codecs.encode_idempotency_key(("command", "", ""))
    rows = [
        codecs.encode_expiry_index_key(ms, long_key if i % 2 else short_key)
        for i, ms in enumerate(expiries)
    ]
    assert sorted(rows) == rows
    assert [codecs.decode_expiry_index_key(row)[0] for row in sorted(rows)] == expiries


@given(key=idempotency_keys)
def test_the_tables_own_rows_sort_apart_from_every_key(key: IdempotencyKey) -> None:
    """The clock before every key, the expiry index after: a scan of one never meets another."""
    encoded = codecs.encode_idempotency_key(key)
    assert codecs.CLOCK_KEY < encoded < codecs.EXPIRY_INDEX_PREFIX
    assert codecs.encode_expiry_index_key(0, b"") > codecs.CLOCK_KEY


def test_the_clock_row_is_no_idempotency_key() -> None:
    with pytest.raises(CodecError, match="unknown key space 0"):
        codecs.decode_idempotency_key(codecs.CLOCK_KEY)


def test_corrupt_expiry_index_key_raises() -> None:
    with pytest.raises(CodecError, match="shorter"):
        codecs.decode_expiry_index_key(codecs.EXPIRY_INDEX_PREFIX + b"\x00" * 7)
    with pytest.raises(CodecError, match="prefix"):
        codecs.decode_expiry_index_key(b"\x01" + b"\x00" * 8 + b"key")
    with pytest.raises(CodecError):
        codecs.encode_expiry_index_key(-1, b"key")  # no expiry before the epoch


# --- accounts: 128-bit totals -----------------------------------------------------------

ACCOUNT = Account(
    account_id="acct-1",
    currency="EUR",
    partner_id="partner-1",
    status="frozen",
    debits_must_not_exceed_credits=True,
    posted_debits_minor=1,
    posted_credits_minor=2,
    pending_debits_minor=3,
    pending_credits_minor=4,
    version=5,
)
TOTALS = (
    "posted_debits_minor",
    "posted_credits_minor",
    "pending_debits_minor",
    "pending_credits_minor",
)


def _with(field: str, total: int) -> Account:
    changes: dict[str, Any] = {field: total}
    return dataclasses.replace(ACCOUNT, **changes)


def test_account_is_compact() -> None:
    header_size = 3 + 4 * 16 + 8 + 3 * 2  # format, status, flag; four u128; i64; three u16
    assert len(codecs.encode_account(ACCOUNT)) == header_size + len("acct-1EURpartner-1")


@pytest.mark.parametrize("field", TOTALS)
@pytest.mark.parametrize("total", [0, 2**63, 2**64 + 1, TOTAL_MAX_MINOR])
def test_totals_are_128_bit(field: str, total: int) -> None:
    account = _with(field, total)
    assert codecs.decode_account(codecs.encode_account(account)) == account


@pytest.mark.parametrize("field", TOTALS)
@pytest.mark.parametrize("total", [-1, -(2**63), TOTAL_MAX_MINOR + 1, 2**200])
def test_totals_outside_u128_are_refused(field: str, total: int) -> None:
    with pytest.raises(CodecError, match="not a u128"):
        codecs.encode_account(_with(field, total))


def test_the_totals_are_big_endian_u128_on_the_wire() -> None:
    account = dataclasses.replace(ACCOUNT, posted_credits_minor=2**64 + 1)
    data = codecs.encode_account(account)
    assert data[:3] == b"\x02\x01\x01"  # format 2, frozen, no overdraft
    assert data[3 + 16 : 3 + 32] == (2**64 + 1).to_bytes(16, "big")


_ENCODED = codecs.encode_account(ACCOUNT)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        _ENCODED[:10],
        _ENCODED[:-1],
        _ENCODED + b"x",
        b"\x01" + _ENCODED[1:],  # format 1: i64 totals, no longer read
        b"\x03" + _ENCODED[1:],  # unknown format
        _ENCODED[:1] + b"\x09" + _ENCODED[2:],  # unknown status
        _ENCODED[:2] + b"\x07" + _ENCODED[3:],  # flag neither 0 nor 1
        _ENCODED.replace(b"acct-1", b"acct\xff1"),
    ],
)
def test_corrupt_account_raises(data: bytes) -> None:
    with pytest.raises(CodecError):
        codecs.decode_account(data)


# --- corrupt records -------------------------------------------------------------------------


def test_corrupt_idempotency_record_raises() -> None:
    record = IdempotencyRecord(
        command_id="c", body_sha256="h", code="insufficient_funds", expires_at_ms=7
    )
    data = codecs.encode_idempotency_record(record)
    with pytest.raises(CodecError, match="rejection code"):
        codecs.decode_idempotency_record(data.replace(b"insufficient", b"unsufficient"))
    with pytest.raises(CodecError):
        codecs.decode_idempotency_record(data[:-1])
    with pytest.raises(CodecError, match="format 1"):
        codecs.decode_idempotency_record(b"\x01" + data[1:])  # before expiry: no longer read
    with pytest.raises(CodecError):
        codecs.encode_idempotency_record(dataclasses.replace(record, expires_at_ms=2**63))


def test_corrupt_directory_entry_raises() -> None:
    with pytest.raises(CodecError):
        codecs.decode_directory_entry(
            codecs.encode_directory_entry(DirectoryEntry("a", "EUR", "p", "open"))[:-1]
        )
