"""money: major units as people type them <-> the ledger's int minor units, exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.ledger.currencies import EXPONENTS, ISO4217_CODES, minor_unit_exponent
from paystream.ledger.models import AMOUNT_MAX_MINOR
from paystream.money import AmountError, format_major, format_money, parse_major


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.50", "EUR", 1250),
        ("12.5", "EUR", 1250),
        ("12", "EUR", 1200),
        ("0.01", "EUR", 1),
        ("1,900", "EUR", 190_000),
        ("1,234,567.89", "USD", 123_456_789),
        (" 7.25 ", "GBP", 725),
        ("1000", "JPY", 1000),
        ("1.234", "KWD", 1234),
        ("1.0001", "CLF", 10_001),
        ("92233720368547758.07", "EUR", AMOUNT_MAX_MINOR),
        ("9223372036854775807", "JPY", AMOUNT_MAX_MINOR),
    ],
)
def test_amounts_people_type_become_exact_minor_units(text: str, currency: str, minor: int) -> None:
    assert parse_major(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency", "says"),
    [
        ("12.345", "EUR", "EUR has 2 decimals; '12.345' has 3"),
        ("12.500", "EUR", "has 3"),  # exact, but more decimals than the currency: a typo
        ("1.5", "JPY", "JPY has 0 decimals"),
        ("1.2345", "KWD", "KWD has 3 decimals"),
        ("-1", "EUR", "not an amount"),
        ("+1", "EUR", "not an amount"),
        ("0", "EUR", "more than zero"),
        ("0.00", "EUR", "more than zero"),
        ("abc", "EUR", "not an amount"),
        ("", "EUR", "not an amount"),
        ("1.", "EUR", "not an amount"),
        (".5", "EUR", "not an amount"),
        ("1e3", "EUR", "not an amount"),
        ("NaN", "EUR", "not an amount"),
        ("Infinity", "EUR", "not an amount"),
        ("1,90", "EUR", "not an amount"),
        ("1.000,50", "EUR", "not an amount"),
        ("1 000", "EUR", "not an amount"),
        ("١٢", "EUR", "not an amount"),  # Arabic-Indic digits: ASCII only
        ("92233720368547758.08", "EUR", "more than the ledger can hold"),
        ("9223372036854775808", "JPY", "more than the ledger can hold"),
        ("1" * 41, "EUR", "longer than 40"),
        ("1", "eur", "not an active ISO-4217"),
        ("1", "HRK", "not an active ISO-4217"),
    ],
)
def test_bad_amounts_are_refused_with_the_reason(text: str, currency: str, says: str) -> None:
    with pytest.raises(AmountError) as refused:
        parse_major(text, currency)
    assert says in str(refused.value)


@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [
        (19_000_000, "EUR", "190,000.00 EUR"),
        (1000, "JPY", "1,000 JPY"),
        (5, "EUR", "0.05 EUR"),
        (0, "EUR", "0.00 EUR"),
        (-1250, "EUR", "-12.50 EUR"),
        (1_234_567, "KWD", "1,234.567 KWD"),
        (AMOUNT_MAX_MINOR, "EUR", "92,233,720,368,547,758.07 EUR"),
    ],
)
def test_minor_units_are_shown_in_major_units(minor: int, currency: str, shown: str) -> None:
    assert format_money(minor, currency) == shown


def test_formatting_an_unknown_currency_is_refused() -> None:
    with pytest.raises(AmountError):
        format_major(1, "EURO")


def test_every_active_code_has_an_exponent_and_the_usual_ones_are_right() -> None:
    assert EXPONENTS.keys() == ISO4217_CODES
    assert {c: minor_unit_exponent(c) for c in ("EUR", "USD", "JPY", "KRW", "BHD", "CLF")} == {
        "EUR": 2, "USD": 2, "JPY": 0, "KRW": 0, "BHD": 3, "CLF": 4,
    }  # fmt: skip


@given(
    currency=st.sampled_from(sorted(ISO4217_CODES)),
    minor=st.integers(min_value=1, max_value=AMOUNT_MAX_MINOR),
)
def test_what_is_shown_reads_back_as_the_same_minor_units(currency: str, minor: int) -> None:
    assert parse_major(format_major(minor, currency), currency) == minor
