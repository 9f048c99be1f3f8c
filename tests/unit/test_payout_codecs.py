"""The payouts table's codecs (``paystream.tables.payout_codecs``): every value round-trips,
and bytes that are not what an encoder writes are refused with ``CodecError``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.ledger.models import DECISIONS, PAYOUT_STATES, REJECTION_CODES, Payout
from paystream.ledger.screening import CurrencyLimits, PayoutProfile, ScreeningRules
from paystream.tables.codecs import CodecError
from paystream.tables.payout_codecs import (
    RULES_KEY,
    decode_payout,
    decode_profile,
    decode_rules,
    encode_payout,
    encode_profile,
    encode_rules,
    payout_key,
    profile_key,
)
from tests.support.ledger import a_payout

text = st.text(max_size=30)
optional = st.none() | text
longs = st.integers(-(2**63), 2**63 - 1)

payouts = st.builds(
    Payout,
    payout_id=text,
    request_id=text,
    batch_id=text,
    partner_id=text,
    account_id=text,
    issued_at_ms=longs,
    requested_at_ms=longs,
    amount_minor=longs,
    currency=text,
    beneficiary_name=text,
    beneficiary_country=text,
    beneficiary_iban=optional,
    beneficiary_bic=optional,
    beneficiary_account_number=optional,
    beneficiary_routing_number=optional,
    reference=optional,
    state=st.sampled_from(PAYOUT_STATES),
    rule_codes=st.lists(text, max_size=3).map(tuple),
    decision=st.none() | st.sampled_from(DECISIONS),
    failure_code=st.none() | st.sampled_from(REJECTION_CODES),
    failure_reason=optional,
    reservation=optional,
    reservations=longs,
    version=longs,
)
profiles = st.builds(
    PayoutProfile,
    account_id=text,
    recent=st.lists(st.tuples(longs, longs), max_size=5).map(tuple),
    beneficiaries=st.lists(text, max_size=5).map(tuple),
)
rules = st.builds(
    ScreeningRules,
    limits=st.lists(st.sampled_from(["EUR", "USD", "JPY"]), unique=True, max_size=3).map(
        lambda currencies: tuple(
            CurrencyLimits(currency=c, amount_max_minor=i * 100)
            for i, c in enumerate(sorted(currencies))
        )
    ),
    velocity_window_ms=st.integers(1, 10**9),
    velocity_count_max=st.none() | st.integers(0, 999),
    blocked_beneficiaries=st.frozensets(st.text(min_size=1, max_size=20), max_size=3),
    blocked_countries=st.frozensets(st.sampled_from(["KP", "IR", "SY"])),
    configured_by=optional,
)


@given(payouts)
def test_a_payout_round_trips(payout: Payout) -> None:
    assert decode_payout(encode_payout(payout)) == payout


@given(profiles)
def test_a_profile_round_trips(profile: PayoutProfile) -> None:
    assert decode_profile(encode_profile(profile)) == profile


@given(rules)
def test_rules_round_trip(found: ScreeningRules) -> None:
    assert decode_rules(encode_rules(found)) == found


def test_the_three_kinds_of_row_have_keys_apart() -> None:
    keys = {payout_key("x")[:1], profile_key("x")[:1], RULES_KEY[:1]}
    assert len(keys) == 3


PAYOUT = a_payout()


@pytest.mark.parametrize(
    ("decode", "data"),
    [
        (decode_payout, b""),
        (decode_payout, b"\x02{}"),
        (decode_payout, b"\x01not json"),
        (decode_payout, b"\x01\xff"),
        (decode_payout, b"\x01" + b"[" * 100_000),
        (decode_payout, encode_payout(PAYOUT).replace(b'"queued"', b'"lost"')),
        (decode_payout, encode_payout(PAYOUT).replace(b'"amount_minor":5', b'"amount_minor":5.0')),
        (decode_payout, encode_payout(PAYOUT).replace(b'"amount_minor":5', b'"amount_minor":true')),
        (decode_payout, encode_payout(PAYOUT).replace(b'"reservations":0,', b"")),
        (decode_payout, encode_payout(PAYOUT).replace(b'"currency":"EUR"', b'"currency":null')),
        (decode_profile, b'\x01{"account_id":"a","recent":[[1]],"beneficiaries":[]}'),
        (decode_profile, b'\x01{"account_id":"a","recent":[],"beneficiaries":[1]}'),
        (decode_rules, b'\x01{"configured_by":null,"rules":"{\\"velocity_window_ms\\":0}"}'),
        (decode_rules, b'\x01{"configured_by":1,"rules":"{}"}'),
    ],
)
def test_what_no_encoder_writes_is_refused(decode: object, data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)  # type: ignore[operator]
