"""Compliance screening of payouts: pure rules, configured at run time.

A payout is screened once, on its source account's partition, right after its funds are
reserved. The rules come from the last ``ConfigureScreening`` command (a record on
``commands``, so replay sees exactly the rules the workers saw); what the source did before
comes from its :class:`PayoutProfile` (its recent payouts and the beneficiaries it has
paid). Every rule that holds is reported by its code; no code means the payout is low
risk and approved without a person (the seed's "automate low-risk approvals").

The rules (all amounts in the source account's currency, in minor units):

- ``amount_over_threshold``: the amount is above the currency's ``amount_max_minor``;
- ``new_beneficiary``: the source never had a payout to this beneficiary approved, and the
  amount is above the currency's ``new_beneficiary_amount_max_minor`` (a lower threshold);
- ``velocity_count`` / ``velocity_sum``: with this payout, the source's payouts inside the
  sliding window would number more than ``velocity_count_max`` or sum to more than the
  currency's ``velocity_sum_max_minor``;
- ``velocity_history_full``: the profile holds ``RECENT_PAYOUTS_MAX`` payouts inside the
  window, so the window's count and sum are no longer known exactly: held, never guessed;
- ``beneficiary_blocked`` / ``country_blocked``: the beneficiary's identifier or country
  is on a block list.

**Window math, in log time** (the partition's clock, never a wall clock). The window of
length ``velocity_window_ms`` ending at ``now_ms`` is the half-open interval
``(now_ms - velocity_window_ms, now_ms]``: a payout requested exactly ``velocity_window_ms``
before ``now_ms`` has left it; one requested 1 ms later is still in it. A payout counts
from the moment its funds were reserved, whatever happens to it afterwards (a payout the
bank returns still used the source's velocity).

A currency without limits in the rules has no amount rules (only the count, the block
lists). The empty rules (``ScreeningRules()``, before any configuration) hold nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, get_args

from paystream.ledger.currencies import is_iso4217
from paystream.ledger.errors import ensure
from paystream.ledger.models import AMOUNT_MAX_MINOR

__all__ = [
    "BENEFICIARIES_MAX",
    "RECENT_PAYOUTS_MAX",
    "RULE_CODES",
    "CurrencyLimits",
    "PayoutProfile",
    "RuleCode",
    "ScreeningRules",
    "in_window",
    "profile_after",
    "rules_from_json",
    "rules_to_json",
    "screen",
    "window_totals",
]

RuleCode: TypeAlias = Literal[
    "amount_over_threshold",
    "new_beneficiary",
    "velocity_count",
    "velocity_sum",
    "velocity_history_full",
    "beneficiary_blocked",
    "country_blocked",
]
RULE_CODES: tuple[RuleCode, ...] = get_args(RuleCode)

RECENT_PAYOUTS_MAX: Final = 1_000
"""Most payouts a profile remembers inside the window (older ones leave as it slides)."""
BENEFICIARIES_MAX: Final = 1_000
"""Most beneficiaries a profile remembers; the least recently paid is forgotten first, and a
forgotten one is new again (screened more strictly, never less)."""
WINDOW_MS_MAX: Final = 366 * 24 * 3600 * 1000
"""The longest velocity window: a year."""
BLOCKED_MAX: Final = 10_000
"""Most entries of each block list."""
COUNT_MAX: Final = RECENT_PAYOUTS_MAX - 1
"""The largest ``velocity_count_max`` (the profile must see one past it)."""
RULES_JSON_LENGTH_MAX: Final = 512 * 1024
"""The longest rules document a ``ConfigureScreening`` carries (Kafka's record limit is 1 MB)."""
BLOCKED_ENTRY_LENGTH_MAX: Final = 64
COUNTRY_PATTERN: Final = re.compile(r"^[A-Z]{2}$")
"""An ISO 3166-1 alpha-2 code, upper case."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrencyLimits:
    """The amount rules of one currency; ``None`` turns a rule off."""

    currency: str
    amount_max_minor: int | None = None
    new_beneficiary_amount_max_minor: int | None = None
    velocity_sum_max_minor: int | None = None

    def __post_init__(self) -> None:
        for limit in (
            self.amount_max_minor,
            self.new_beneficiary_amount_max_minor,
            self.velocity_sum_max_minor,
        ):
            if limit is not None and (type(limit) is not int or not 0 <= limit <= AMOUNT_MAX_MINOR):
                raise ValueError(f"a limit must be an integer in 0..{AMOUNT_MAX_MINOR}: {limit!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScreeningRules:
    """The rules every partition screens with; configured by ``ConfigureScreening``.

    Values are checked on construction: a bad configuration is the operator's error,
    a ``ValueError`` the command is refused with, never a broken ledger.
    """

    limits: tuple[CurrencyLimits, ...] = ()
    velocity_window_ms: int = 24 * 3600 * 1000
    velocity_count_max: int | None = None
    blocked_beneficiaries: frozenset[str] = field(default_factory=frozenset)
    """Beneficiary identifiers (``beneficiary_key``) that are always held."""
    blocked_countries: frozenset[str] = field(default_factory=frozenset)
    """ISO 3166-1 alpha-2 codes, upper case."""
    configured_by: str | None = None
    """The command id of the ``ConfigureScreening`` that set these rules."""

    def __post_init__(self) -> None:
        window = self.velocity_window_ms
        if type(window) is not int or not 1 <= window <= WINDOW_MS_MAX:
            raise ValueError(f"velocity_window_ms must be in 1..{WINDOW_MS_MAX}: {window!r}")
        count = self.velocity_count_max
        if count is not None and (type(count) is not int or not 0 <= count <= COUNT_MAX):
            raise ValueError(f"velocity_count_max must be in 0..{COUNT_MAX}: {count!r}")
        currencies = [limit.currency for limit in self.limits]
        if len(set(currencies)) != len(currencies):
            raise ValueError(f"one limit per currency: {currencies}")
        for limit in self.limits:
            if not is_iso4217(limit.currency):
                raise ValueError(f"not an ISO 4217 currency: {limit.currency!r}")
        for blocked in (self.blocked_beneficiaries, self.blocked_countries):
            if len(blocked) > BLOCKED_MAX:
                raise ValueError(f"a block list holds at most {BLOCKED_MAX} entries")
            if any(not 0 < len(entry) <= BLOCKED_ENTRY_LENGTH_MAX for entry in blocked):
                raise ValueError(f"block list entries are 1..{BLOCKED_ENTRY_LENGTH_MAX} long")
        if not all(COUNTRY_PATTERN.match(country) for country in self.blocked_countries):
            raise ValueError("blocked countries are ISO 3166-1 alpha-2 codes, upper case")

    def limits_of(self, currency: str) -> CurrencyLimits:
        for limit in self.limits:
            if limit.currency == currency:
                return limit
        return CurrencyLimits(currency=currency)


@dataclass(frozen=True, slots=True, kw_only=True)
class PayoutProfile:
    """What screening remembers of one source account."""

    account_id: str
    recent: tuple[tuple[int, int], ...] = ()
    """``(requested_at_ms, amount_minor)`` of its latest payouts, oldest first."""
    beneficiaries: tuple[str, ...] = ()
    """Beneficiaries it has had a payout approved to, least recently approved first."""


def in_window(at_ms: int, now_ms: int, window_ms: int) -> bool:
    """Whether a payout requested at ``at_ms`` is inside ``(now_ms - window_ms, now_ms]``."""
    return now_ms - window_ms < at_ms <= now_ms


def window_totals(profile: PayoutProfile, now_ms: int, window_ms: int) -> tuple[int, int]:
    """``(count, sum_minor)`` of the profile's payouts inside the window ending at ``now_ms``."""
    inside = [amount for at_ms, amount in profile.recent if in_window(at_ms, now_ms, window_ms)]
    return len(inside), sum(inside)


def screen(
    rules: ScreeningRules,
    profile: PayoutProfile,
    *,
    now_ms: int,
    amount_minor: int,
    currency: str,
    beneficiary_key: str,
    country: str,
) -> tuple[RuleCode, ...]:
    """The codes of every rule the payout hits, in ``RULE_CODES`` order; empty: low risk."""
    ensure(0 < amount_minor <= AMOUNT_MAX_MINOR, "screened amount out of range")
    limits = rules.limits_of(currency)
    count, sum_minor = window_totals(profile, now_ms, rules.velocity_window_ms)
    hits: set[RuleCode] = set()
    if _above(amount_minor, limits.amount_max_minor):
        hits.add("amount_over_threshold")
    if beneficiary_key not in profile.beneficiaries and _above(
        amount_minor, limits.new_beneficiary_amount_max_minor
    ):
        hits.add("new_beneficiary")
    if count >= RECENT_PAYOUTS_MAX:
        hits.add("velocity_history_full")
    if rules.velocity_count_max is not None and count + 1 > rules.velocity_count_max:
        hits.add("velocity_count")
    if _above(sum_minor + amount_minor, limits.velocity_sum_max_minor):
        hits.add("velocity_sum")
    if beneficiary_key in rules.blocked_beneficiaries:
        hits.add("beneficiary_blocked")
    if country in rules.blocked_countries:
        hits.add("country_blocked")
    return tuple(code for code in RULE_CODES if code in hits)


def _above(amount_minor: int, limit_minor: int | None) -> bool:
    return limit_minor is not None and amount_minor > limit_minor


def profile_after(
    profile: PayoutProfile,
    *,
    now_ms: int,
    window_ms: int,
    amount_minor: int | None = None,
    approved_beneficiary: str | None = None,
) -> PayoutProfile:
    """The profile after a payout was requested (``amount_minor``) and/or approved to a
    beneficiary: payouts that left the window are dropped, the newest ``RECENT_PAYOUTS_MAX``
    kept; the approved beneficiary becomes the most recent one."""
    recent = [entry for entry in profile.recent if in_window(entry[0], now_ms, window_ms)]
    if amount_minor is not None:
        recent.append((now_ms, amount_minor))
    beneficiaries = profile.beneficiaries
    if approved_beneficiary is not None:
        kept = tuple(b for b in beneficiaries if b != approved_beneficiary)
        beneficiaries = (*kept, approved_beneficiary)[-BENEFICIARIES_MAX:]
    return PayoutProfile(
        account_id=profile.account_id,
        recent=tuple(recent[-RECENT_PAYOUTS_MAX:]),
        beneficiaries=beneficiaries,
    )


_RULES_KEYS: Final = frozenset(
    ("limits", "velocity_window_ms", "velocity_count_max", "blocked_beneficiaries",
     "blocked_countries")
)  # fmt: skip
_LIMIT_KEYS: Final = frozenset(
    ("currency", "amount_max_minor", "new_beneficiary_amount_max_minor", "velocity_sum_max_minor")
)


def rules_to_json(rules: ScreeningRules) -> str:
    """The canonical JSON of ``rules`` (sorted keys and lists): what ``ConfigureScreening``
    carries, and what ``rules_from_json`` reads back to equal rules."""
    document = {
        "limits": [
            {key: getattr(limit, key) for key in sorted(_LIMIT_KEYS)}
            for limit in sorted(rules.limits, key=lambda limit: limit.currency)
        ],
        "velocity_window_ms": rules.velocity_window_ms,
        "velocity_count_max": rules.velocity_count_max,
        "blocked_beneficiaries": sorted(rules.blocked_beneficiaries),
        "blocked_countries": sorted(rules.blocked_countries),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def rules_from_json(text: str, *, configured_by: str | None = None) -> ScreeningRules:
    """Rules from a JSON document (keys as ``rules_to_json`` writes them; any left out take
    their defaults; limits in currency order); ``ValueError`` on anything else: unknown keys,
    wrong types, values out of range. Pure: replay reads the same rules from the same text."""
    if len(text) > RULES_JSON_LENGTH_MAX:
        raise ValueError(f"rules longer than {RULES_JSON_LENGTH_MAX} characters")
    try:
        document = json.loads(text)
    except RecursionError as error:  # nesting deeper than the parser's stack
        raise ValueError("rules nested too deeply") from error
    _keys(document, _RULES_KEYS, "rules")
    limits = document.get("limits", [])
    if not isinstance(limits, list):
        raise ValueError("limits must be a list")
    return ScreeningRules(
        limits=tuple(sorted((_limit(entry) for entry in limits), key=lambda lim: lim.currency)),
        velocity_window_ms=_integer(document.get("velocity_window_ms", 24 * 3600 * 1000)),
        velocity_count_max=_optional_integer(document.get("velocity_count_max")),
        blocked_beneficiaries=_strings(document.get("blocked_beneficiaries", [])),
        blocked_countries=_strings(document.get("blocked_countries", [])),
        configured_by=configured_by,
    )


def _keys(document: Any, allowed: frozenset[str], what: str) -> None:
    if not isinstance(document, dict):
        raise ValueError(f"{what} must be an object")
    if unknown := set(document) - allowed:
        raise ValueError(f"unknown keys in {what}: {sorted(unknown)}")


def _limit(entry: Any) -> CurrencyLimits:
    _keys(entry, _LIMIT_KEYS, "a limit")
    currency = entry.get("currency")
    if not isinstance(currency, str):
        raise ValueError("a limit needs its currency")
    return CurrencyLimits(
        currency=currency,
        amount_max_minor=_optional_integer(entry.get("amount_max_minor")),
        new_beneficiary_amount_max_minor=_optional_integer(
            entry.get("new_beneficiary_amount_max_minor")
        ),
        velocity_sum_max_minor=_optional_integer(entry.get("velocity_sum_max_minor")),
    )


def _integer(value: Any) -> int:
    if type(value) is not int:
        raise ValueError(f"not an integer: {value!r}")
    return value


def _optional_integer(value: Any) -> int | None:
    return None if value is None else _integer(value)


def _strings(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise ValueError(f"not a list of strings: {value!r}")
    return frozenset(value)
