"""A payout's beneficiary as a client sends it, checked and normalised before anything is sent.

IBANs and BICs are checked with ``schwifty`` (a well-kept registry of national IBAN formats,
check digits and bank codes) rather than by hand: an IBAN must have valid check digits and
its country's length and structure, a BIC a registered shape and country. US accounts are
an account number with an ABA routing number, whose check digit (3-7-1 weights, the ABA's
published rule) schwifty does not cover and is computed here. Normalised forms (upper case,
no spaces) are what the command carries, so a retry typed differently is the same request.
The core checks the shape again (``ledger.payouts.beneficiary_code``): the API's checks are
stricter, never looser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException

__all__ = ["Beneficiary", "BeneficiaryError", "checked_beneficiary"]

ABA_WEIGHTS: Final = (3, 7, 1, 3, 7, 1, 3, 7, 1)
ROUTING_COUNTRIES: Final = frozenset({"US"})
"""Countries paid by account number and routing number (the rest by IBAN)."""
_ACCOUNT_NUMBER: Final = re.compile(r"^[0-9]{4,17}$")
"""A US bank account number: 4 to 17 digits (NACHA's field is 17 characters)."""
_ROUTING_NUMBER: Final = re.compile(r"^[0-9]{9}$")


class BeneficiaryError(ValueError):
    """Why a beneficiary cannot be paid; ``field`` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class Beneficiary:
    name: str
    country: str
    iban: str | None = None
    bic: str | None = None
    account_number: str | None = None
    routing_number: str | None = None


def checked_beneficiary(
    *,
    name: str,
    country: str | None,
    iban: str | None,
    bic: str | None,
    account_number: str | None,
    routing_number: str | None,
) -> Beneficiary:
    """The beneficiary, normalised; ``BeneficiaryError`` if it cannot be paid."""
    if iban is not None:
        if account_number is not None or routing_number is not None:
            raise BeneficiaryError("iban", "give an IBAN or an account and routing number")
        return _by_iban(name, country, iban, bic)
    if account_number is None or routing_number is None:
        raise BeneficiaryError("iban", "an IBAN, or an account number with a routing number")
    if bic is not None:
        raise BeneficiaryError("bic", "a BIC goes with an IBAN")
    return _by_routing(name, country, account_number, routing_number)


def _by_iban(name: str, country: str | None, iban: str, bic: str | None) -> Beneficiary:
    try:
        parsed = IBAN(iban)
    except SchwiftyException as error:
        raise BeneficiaryError("iban", f"not a valid IBAN ({error})") from error
    if country is not None and country != parsed.country_code:
        raise BeneficiaryError("country", f"the IBAN is of {parsed.country_code}")
    bic_text = None
    if bic is not None:
        try:
            bic_text = BIC(bic).compact
        except SchwiftyException as error:
            raise BeneficiaryError("bic", f"not a valid BIC ({error})") from error
    return Beneficiary(name=name, country=parsed.country_code, iban=parsed.compact, bic=bic_text)


def _by_routing(
    name: str, country: str | None, account_number: str, routing_number: str
) -> Beneficiary:
    country = country or "US"
    if country not in ROUTING_COUNTRIES:
        raise BeneficiaryError("country", f"{country} is paid by IBAN")
    number = account_number.replace(" ", "").replace("-", "")
    if not _ACCOUNT_NUMBER.match(number):
        raise BeneficiaryError("account_number", "4 to 17 digits")
    if not aba_valid(routing_number):
        raise BeneficiaryError("routing_number", "not a valid ABA routing number")
    return Beneficiary(
        name=name, country=country, account_number=number, routing_number=routing_number
    )


def aba_valid(routing_number: str) -> bool:
    """Nine digits whose weighted sum (3, 7, 1, ...) is a multiple of 10."""
    if not _ROUTING_NUMBER.match(routing_number):
        return False
    total = sum(int(d) * w for d, w in zip(routing_number, ABA_WEIGHTS, strict=True))
    return total % 10 == 0
