"""Payout screening (``paystream.ledger.screening``): the window math at its edges, the
profile against a full history kept by brute force, and the rules' monotonicity."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.ledger.models import AMOUNT_MAX_MINOR
from paystream.ledger.screening import (
    BENEFICIARIES_MAX,
    RECENT_PAYOUTS_MAX,
    CurrencyLimits,
    PayoutProfile,
    ScreeningRules,
    in_window,
    profile_after,
    screen,
    window_totals,
)

DAY_MS = 24 * 3600 * 1000
amounts = st.integers(1, 10**12)
limits = st.one_of(st.none(), st.integers(0, 10**13))


@given(now_ms=st.integers(0, 2**48), window_ms=st.integers(1, 366 * DAY_MS))
def test_the_window_is_half_open_at_its_old_end(now_ms: int, window_ms: int) -> None:
    assert not in_window(now_ms - window_ms, now_ms, window_ms)
    assert in_window(now_ms - window_ms + 1, now_ms, window_ms)
    assert in_window(now_ms, now_ms, window_ms)
    assert not in_window(now_ms + 1, now_ms, window_ms)


@given(
    steps=st.lists(st.tuples(st.integers(0, 2 * DAY_MS), amounts), max_size=60),
    window_ms=st.integers(1, 2 * DAY_MS),
)
def test_window_totals_match_the_whole_history(
    steps: list[tuple[int, int]], window_ms: int
) -> None:
    """The profile forgets what left the window; its totals stay those of the full log."""
    profile, history, now_ms = PayoutProfile(account_id="a"), [], 0
    for gap_ms, amount in steps:
        now_ms += gap_ms
        inside = [a for at, a in history if now_ms - window_ms < at <= now_ms]
        assert window_totals(profile, now_ms, window_ms) == (len(inside), sum(inside))
        profile = profile_after(profile, now_ms=now_ms, window_ms=window_ms, amount_minor=amount)
        history.append((now_ms, amount))
        assert all(in_window(at, now_ms, window_ms) for at, _ in profile.recent)


@given(
    steps=st.lists(st.tuples(st.integers(0, DAY_MS), amounts), min_size=1, max_size=40),
    count_max=st.integers(0, 10),
    sum_max=limits,
)
def test_velocity_rules_hit_exactly_when_the_full_history_exceeds_them(
    steps: list[tuple[int, int]], count_max: int, sum_max: int | None
) -> None:
    rules = ScreeningRules(
        limits=(CurrencyLimits(currency="EUR", velocity_sum_max_minor=sum_max),),
        velocity_window_ms=DAY_MS,
        velocity_count_max=count_max,
    )
    profile, history, now_ms = PayoutProfile(account_id="a"), [], 0
    for gap_ms, amount in steps:
        now_ms += gap_ms
        inside = [a for at, a in history if now_ms - DAY_MS < at <= now_ms]
        codes = screen(
            rules,
            profile,
            now_ms=now_ms,
            amount_minor=amount,
            currency="EUR",
            beneficiary_key="DE89370400440532013000",
            country="DE",
        )
        assert ("velocity_count" in codes) == (len(inside) + 1 > count_max)
        assert ("velocity_sum" in codes) == (sum_max is not None and sum(inside) + amount > sum_max)
        profile = profile_after(profile, now_ms=now_ms, window_ms=DAY_MS, amount_minor=amount)
        history.append((now_ms, amount))


def test_a_full_history_holds_instead_of_guessing() -> None:
    full = PayoutProfile(
        account_id="a", recent=tuple((1_000, 1) for _ in range(RECENT_PAYOUTS_MAX))
    )
    codes = screen(
        ScreeningRules(),
        full,
        now_ms=1_000,
        amount_minor=1,
        currency="EUR",
        beneficiary_key="b",
        country="DE",
    )
    assert codes == ("velocity_history_full",)
    kept = profile_after(full, now_ms=1_000, window_ms=DAY_MS, amount_minor=5)
    assert len(kept.recent) == RECENT_PAYOUTS_MAX and kept.recent[-1] == (1_000, 5)


@given(
    amount=amounts,
    amount_max=limits,
    new_max=limits,
    sum_max=limits,
    count_max=st.one_of(st.none(), st.integers(0, 20)),
    raise_by=st.integers(0, 10**6),
    known=st.booleans(),
    blocked=st.booleans(),
)
def test_raising_a_limit_never_holds_more(
    amount: int,
    amount_max: int | None,
    new_max: int | None,
    sum_max: int | None,
    count_max: int | None,
    raise_by: int,
    known: bool,
    blocked: bool,
) -> None:
    def rules(extra: int) -> ScreeningRules:
        def up(limit: int | None) -> int | None:
            return None if limit is None else min(limit + extra, AMOUNT_MAX_MINOR)

        return ScreeningRules(
            limits=(
                CurrencyLimits(
                    currency="EUR",
                    amount_max_minor=up(amount_max),
                    new_beneficiary_amount_max_minor=up(new_max),
                    velocity_sum_max_minor=up(sum_max),
                ),
            ),
            velocity_count_max=None if count_max is None else min(count_max + extra, 999),
            blocked_countries=frozenset({"KP"} if blocked else ()),
        )

    profile = PayoutProfile(
        account_id="a", recent=((0, 7), (1, 9)), beneficiaries=("b",) if known else ()
    )
    args = {
        "now_ms": 2,
        "amount_minor": amount,
        "currency": "EUR",
        "beneficiary_key": "b",
        "country": "KP",
    }
    strict, lax = screen(rules(0), profile, **args), screen(rules(raise_by), profile, **args)
    assert set(lax) <= set(strict)
    assert screen(ScreeningRules(), PayoutProfile(account_id="a"), **args) == ()


def test_each_rule_and_its_threshold_edge() -> None:
    rules = ScreeningRules(
        limits=(
            CurrencyLimits(
                currency="EUR", amount_max_minor=1_000, new_beneficiary_amount_max_minor=100
            ),
        ),
        blocked_beneficiaries=frozenset({"GB33BUKB20201555555555"}),
        blocked_countries=frozenset({"KP"}),
    )
    fresh = PayoutProfile(account_id="a")

    def codes(
        amount: int,
        key: str = "DE89370400440532013000",
        country: str = "DE",
        profile: PayoutProfile = fresh,
    ) -> tuple[str, ...]:
        return screen(
            rules,
            profile,
            now_ms=0,
            amount_minor=amount,
            currency="EUR",
            beneficiary_key=key,
            country=country,
        )

    assert codes(100) == ()
    assert codes(101) == ("new_beneficiary",)
    assert codes(1_001) == ("amount_over_threshold", "new_beneficiary")
    paid = profile_after(
        fresh, now_ms=0, window_ms=DAY_MS, approved_beneficiary="DE89370400440532013000"
    )
    assert codes(1_000, profile=paid) == ()
    assert codes(1, key="GB33BUKB20201555555555") == ("beneficiary_blocked",)
    assert codes(1, country="KP") == ("country_blocked",)
    assert (
        screen(
            rules,
            fresh,
            now_ms=0,
            amount_minor=10**9,
            currency="USD",
            beneficiary_key="x",
            country="US",
        )
        == ()
    )


def test_beneficiaries_are_remembered_most_recent_last_and_bounded() -> None:
    profile = PayoutProfile(account_id="a")
    for n in range(BENEFICIARIES_MAX + 1):
        profile = profile_after(profile, now_ms=n, window_ms=DAY_MS, approved_beneficiary=f"b{n}")
    assert len(profile.beneficiaries) == BENEFICIARIES_MAX and "b0" not in profile.beneficiaries
    again = profile_after(profile, now_ms=0, window_ms=DAY_MS, approved_beneficiary="b1")
    assert again.beneficiaries[-1] == "b1" and len(again.beneficiaries) == BENEFICIARIES_MAX


@pytest.mark.parametrize(
    "bad",
    [
        {"velocity_window_ms": 0},
        {"velocity_count_max": -1},
        {"velocity_count_max": RECENT_PAYOUTS_MAX},
        {"limits": (CurrencyLimits(currency="EUR"), CurrencyLimits(currency="EUR"))},
    ],
)
def test_bad_rules_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ScreeningRules(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CurrencyLimits(currency="EUR", amount_max_minor=-1)
