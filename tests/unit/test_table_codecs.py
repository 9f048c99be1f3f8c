"""Table key and value codecs: exact round trips, unambiguous keys, loud corruption."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.ledger.models import (
    AMOUNT_MAX_MINOR,
    REJECTION_CODES,
    Account,
    DirectoryEntry,
    IdempotencyRecord,
)
from paystream.tables import codecs
from paystream.tables.codecs import CodecError

texts = st.text(max_size=200)
statuses = st.sampled_from(["open", "frozen", "closed"])
totals = st.integers(min_value=0, max_value=AMOUNT_MAX_MINOR)

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
    version=st.integers(min_value=0, max_value=2**63 - 1),
)
idempotency_records = st.builds(
    IdempotencyRecord,
    command_id=texts,
    body_sha256=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64) | texts,
    code=st.none() | st.sampled_from(REJECTION_CODES),
)
directory_entries = st.builds(
    DirectoryEntry, account_id=texts, currency=texts, partner_id=texts, status=statuses
)
separators = st.sampled_from(["", ":", "\x00", "|", "/", "::", "\x00\x01"])
key_parts = st.builds(lambda a, b, c: a + b + c, texts, separators, texts)


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


@given(account_id=key_parts, request_id=key_parts)
def test_idempotency_key_round_trip(account_id: str, request_id: str) -> None:
    key = (account_id, request_id)
    assert codecs.decode_idempotency_key(codecs.encode_idempotency_key(key)) == key


@given(a=st.tuples(key_parts, key_parts), b=st.tuples(key_parts, key_parts))
def test_idempotency_keys_are_unambiguous(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert (codecs.encode_idempotency_key(a) == codecs.encode_idempotency_key(b)) == (a == b)


def test_separators_inside_ids_do_not_collide() -> None:
    assert codecs.encode_idempotency_key(("a:b", "c")) != codecs.encode_idempotency_key(
        ("a", "b:c")
    )
    assert codecs.encode_idempotency_key(("a\x00", "")) != codecs.encode_idempotency_key(
        ("a", "\x00")
    )


def test_keys_of_one_account_share_a_prefix() -> None:
    first = codecs.encode_idempotency_key(("acct-1", "req-1"))
    second = codecs.encode_idempotency_key(("acct-1", "zzz"))
    prefix = codecs.encode_idempotency_key(("acct-1", ""))
    assert first.startswith(prefix)
    assert second.startswith(prefix)


ACCOUNT = Account("acct-1", "EUR", "partner-1", "frozen", True, 1, 2, 3, 4, 5)


def test_account_is_compact() -> None:
    header_size = 3 + 5 * 8 + 3 * 2  # format, status, flag; five i64; three u16 lengths
    assert len(codecs.encode_account(ACCOUNT)) == header_size + len("acct-1EURpartner-1")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        codecs.encode_account(ACCOUNT)[:10],
        codecs.encode_account(ACCOUNT)[:-1],
        codecs.encode_account(ACCOUNT) + b"x",
        b"\x02" + codecs.encode_account(ACCOUNT)[1:],  # unknown format
        codecs.encode_account(ACCOUNT)[:1] + b"\x09" + codecs.encode_account(ACCOUNT)[2:],
        codecs.encode_account(ACCOUNT)[:2] + b"\x07" + codecs.encode_account(ACCOUNT)[3:],
        codecs.encode_account(ACCOUNT).replace(b"acct-1", b"acct\xff1"),
    ],
)
def test_corrupt_account_raises(data: bytes) -> None:
    with pytest.raises(CodecError):
        codecs.decode_account(data)


def test_corrupt_idempotency_record_raises() -> None:
    data = codecs.encode_idempotency_record(IdempotencyRecord("c", "h", "insufficient_funds"))
    with pytest.raises(CodecError, match="rejection code"):
        codecs.decode_idempotency_record(data.replace(b"insufficient", b"unsufficient"))
    with pytest.raises(CodecError):
        codecs.decode_idempotency_record(data[:-1])


def test_corrupt_directory_entry_and_key_raise() -> None:
    with pytest.raises(CodecError):
        codecs.decode_directory_entry(
            codecs.encode_directory_entry(DirectoryEntry("a", "EUR", "p", "open"))[:-1]
        )
    with pytest.raises(CodecError):
        codecs.decode_idempotency_key(b"\x00\x09abc")


def test_totals_outside_long_are_refused() -> None:
    with pytest.raises(CodecError):
        codecs.encode_account(Account("a", "EUR", "p", "open", True, posted_credits_minor=2**63))
