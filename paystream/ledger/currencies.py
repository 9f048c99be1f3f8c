"""Active ISO-4217 alphabetic codes (SIX List One, edition of 2026-01-01).

Includes fund codes (e.g. ``CHE``, ``USN``) and the ``X`` codes of List One
(precious metals, SDR, ``XTS``, ``XXX``). Withdrawn codes (``HRK``, ``SLL``,
``ZWL``, ``ANG``, ``CUC``) are absent. Update from List One when SIX publishes a
new edition; the list is pinned so that replay gives the same answers.
"""

from __future__ import annotations

from paystream.ledger.errors import ensure

_LIST_ONE = """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BOV BRL BSD
    BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK
    DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF
    IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP
    LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD
    NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD
    SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD
    TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAD XAF XAG XAU XBA
    XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWG
"""

ISO4217_CODES: frozenset[str] = frozenset(_LIST_ONE.split())
"""Every active code; exact, upper case, three letters."""


def is_iso4217(code: str) -> bool:
    """Whether ``code`` is an active ISO-4217 code (case-sensitive: ``eur`` is not)."""
    return code in ISO4217_CODES


_EXPONENT_NOT_TWO: dict[int, str] = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
    # List One's "N.A." (metals, units of account, XTS, XXX): counted in whole units here
    " XAG XAU XBA XBB XBC XBD XDR XPD XPT XSU XTS XUA XXX",
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}
"""List One's minor units where they are not 2 (same edition as the codes)."""
EXPONENTS: dict[str, int] = {code: 2 for code in ISO4217_CODES} | {
    code: exponent for exponent, codes in _EXPONENT_NOT_TWO.items() for code in codes.split()
}
"""Each active code's minor-unit exponent: 1 EUR is 10**2 minor units, 1 JPY is 10**0."""
ensure(EXPONENTS.keys() == ISO4217_CODES, "an exponent for a code that is not in List One")


def minor_unit_exponent(code: str) -> int:
    """The number of decimals of ``code``'s major unit; KeyError for an inactive code."""
    return EXPONENTS[code]
