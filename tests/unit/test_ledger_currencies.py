"""currencies: the pinned ISO-4217 List One."""

from __future__ import annotations

import pytest

from paystream.ledger import ISO4217_CODES, is_iso4217


@pytest.mark.parametrize("code", ["EUR", "USD", "JPY", "CHF", "XCG", "ZWG", "SLE", "XAU"])
def test_active_codes_are_recognised(code: str) -> None:
    assert is_iso4217(code)


@pytest.mark.parametrize("code", ["HRK", "ZWL", "SLL", "CUC", "ANG", "eur", "EURO", "", "@@@"])
def test_withdrawn_or_malformed_codes_are_not(code: str) -> None:
    assert not is_iso4217(code)


def test_every_code_is_three_upper_case_letters() -> None:
    assert all(len(code) == 3 and code.isalpha() and code.isupper() for code in ISO4217_CODES)
