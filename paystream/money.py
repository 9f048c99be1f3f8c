"""Amounts as people type and read them, and as the ledger keeps them (``int`` minor units).

Pure and exact: :class:`decimal.Decimal` in a context that traps any rounding, never a float.
A currency's exponent is ISO 4217's (:data:`paystream.ledger.currencies.EXPONENTS`):
``"12.50" EUR`` is 1250 minor units, ``"1000" JPY`` is 1000, ``"1.234" KWD`` is 1234.
"""

from __future__ import annotations

import decimal
import re

from paystream.ledger.currencies import EXPONENTS
from paystream.ledger.models import AMOUNT_MAX_MINOR

__all__ = ["AmountError", "format_major", "format_money", "parse_major"]

AMOUNT_TEXT_LENGTH_MAX = 40
"""Longest amount text read: 2**63-1 minor units with separators and decimals fits easily."""
_DIGITS_MAX = 64
_EXACT = decimal.Context(
    prec=_DIGITS_MAX, traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation]
)
_AMOUNT = re.compile(r"(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.(?P<fraction>[0-9]+))?")
"""ASCII digits with an optional decimal point; commas only as thousands separators."""


class AmountError(ValueError):
    """An amount a person typed that is not a positive, exact amount of the currency."""


def _exponent(currency: str) -> int:
    exponent = EXPONENTS.get(currency)
    if exponent is None:
        raise AmountError(f"{currency!r} is not an active ISO-4217 currency code")
    return exponent


def parse_major(text: str, currency: str) -> int:
    """``text`` in major units (``"12.50"``, ``"1,900"``) as minor units of ``currency``.

    Refuses a sign, zero, anything but digits, a decimal point and thousands commas, more
    decimals than the currency has (``"12.345"`` EUR), and more than ``AMOUNT_MAX_MINOR``.
    """
    exponent = _exponent(currency)
    stripped = text.strip()
    if len(stripped) > AMOUNT_TEXT_LENGTH_MAX:
        raise AmountError(f"amount is longer than {AMOUNT_TEXT_LENGTH_MAX} characters")
    found = _AMOUNT.fullmatch(stripped)
    if found is None:
        raise AmountError(f"{text!r} is not an amount like 12.50 (digits, one '.', no sign)")
    fraction = found["fraction"] or ""
    if len(fraction) > exponent:
        raise AmountError(
            f"{currency} has {exponent} decimal{'' if exponent == 1 else 's'}; {text!r} has "
            f"{len(fraction)}"
        )
    major = decimal.Decimal(f"{found['whole'].replace(',', '')}.{fraction or '0'}")
    minor = int(_EXACT.scaleb(major, exponent))  # integral: at most ``exponent`` decimals
    if minor <= 0:
        raise AmountError("the amount must be more than zero")
    if minor > AMOUNT_MAX_MINOR:
        raise AmountError(f"{text} {currency} is more than the ledger can hold in one amount")
    return minor


def format_major(amount_minor: int, currency: str) -> str:
    """``amount_minor`` in major units with thousands separators: 19000000 EUR -> ``190,000.00``.

    Negative amounts (an overdrawn balance) keep their sign: ``-12.50``.
    """
    exponent = _exponent(currency)
    major = _EXACT.scaleb(decimal.Decimal(amount_minor), -exponent)
    return f"{major:,.{exponent}f}"


def format_money(amount_minor: int, currency: str) -> str:
    """``format_major`` and the code: ``1,900.00 EUR``, ``1,000 JPY``."""
    return f"{format_major(amount_minor, currency)} {currency}"
