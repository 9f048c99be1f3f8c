"""The retry schedule and the circuit breaker, as properties over random histories."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.ledger import InvariantViolation
from paystream.webhooks.breaker import (
    COOLDOWN_MAX_S,
    BreakerPolicy,
    BreakerState,
    admit,
    cooldown_s,
    on_result,
)
from paystream.webhooks.schedule import JITTER, SVIX_DELAYS_S, Schedule

units = st.floats(min_value=0.0, max_value=1.0)


def test_the_default_is_svix_schedule_eight_attempts_over_about_28_hours() -> None:
    schedule = Schedule()
    assert schedule.attempts_max == 8
    assert [schedule.delay_s(n, 0.5) for n in range(1, 8)] == list(SVIX_DELAYS_S)
    assert schedule.delay_s(8, 0.5) is None
    assert 27 * 3600 < sum(SVIX_DELAYS_S) < 28 * 3600
    assert schedule.span_s() == pytest.approx(sum(SVIX_DELAYS_S) * 1.2)


@given(attempt=st.integers(min_value=1, max_value=7), unit=units)
def test_each_wait_is_its_slot_jittered_by_at_most_20_percent(attempt: int, unit: float) -> None:
    delay = Schedule().delay_s(attempt, unit)
    base = SVIX_DELAYS_S[attempt - 1]
    assert delay is not None
    assert base * (1 - JITTER) <= delay <= base * (1 + JITTER)


@given(
    delays=st.lists(st.floats(min_value=0.01, max_value=10_000.0), min_size=1, max_size=20),
    unit=units,
)
def test_a_round_ends_after_one_attempt_more_than_it_has_delays(
    delays: list[float], unit: float
) -> None:
    schedule = Schedule(tuple(delays))
    waits = [schedule.delay_s(n, unit) for n in range(1, len(delays) + 2)]
    assert waits[-1] is None and all(w is not None and w > 0 for w in waits[:-1])
    assert sum(w for w in waits if w is not None) <= schedule.span_s() + 1e-6


def test_a_schedule_is_bounded() -> None:
    for bad in ((), (0.0,), (-1.0,), (8 * 24 * 3600.0,), (1.0,) * 21):
        with pytest.raises(InvariantViolation):
            Schedule(bad)
    with pytest.raises(InvariantViolation):
        Schedule().delay_s(0, 0.5)


POLICY = BreakerPolicy(failures_to_open=3, cooldown_s=10.0, concurrency_max=4)
step = st.tuples(
    st.sampled_from(("ok", "fail", "admit")),
    st.floats(min_value=0.0, max_value=120.0),
    st.integers(min_value=0, max_value=6),
)


@given(steps=st.lists(step, max_size=60))
def test_the_breaker_never_lets_more_through_than_its_state_allows(
    steps: list[tuple[str, float, int]],
) -> None:
    state, now_s = BreakerState(), 0.0
    for action, elapsed_s, in_flight in steps:
        now_s += elapsed_s
        if action == "admit":
            before = state
            state, admission = admit(state, now_s=now_s, in_flight=in_flight, policy=POLICY)
            assert 0 <= admission.requests <= POLICY.concurrency_max
            cooling = before.circuit == "open" and now_s < (before.open_until_s or 0)
            assert admission.short_circuit == cooling
            if cooling:
                assert admission.requests == 0 and state == before
            elif state.circuit == "half_open":
                assert admission.requests == (1 if in_flight == 0 else 0)
            else:
                assert admission.requests == max(POLICY.concurrency_max - in_flight, 0)
        else:
            state = on_result(state, ok=action == "ok", now_s=now_s, policy=POLICY)
            if action == "ok":
                assert state == BreakerState()
        if state.circuit == "open":
            assert state.open_until_s is not None
            assert state.open_until_s - now_s <= COOLDOWN_MAX_S


def test_failures_in_a_row_open_the_circuit_and_a_probe_decides() -> None:
    state = BreakerState()
    for _ in range(POLICY.failures_to_open - 1):
        state = on_result(state, ok=False, now_s=0.0, policy=POLICY)
    assert state.circuit == "closed"
    state = on_result(state, ok=False, now_s=0.0, policy=POLICY)
    assert (state.circuit, state.open_until_s) == ("open", 10.0)
    state, admission = admit(state, now_s=9.9, in_flight=0, policy=POLICY)
    assert admission.short_circuit and state.circuit == "open"
    state, admission = admit(state, now_s=10.0, in_flight=0, policy=POLICY)
    assert (state.circuit, admission.requests) == ("half_open", 1)
    state = on_result(state, ok=False, now_s=10.5, policy=POLICY)
    assert (state.circuit, state.open_until_s) == ("open", 30.5)  # the cool-down doubled
    state, _ = admit(state, now_s=31.0, in_flight=0, policy=POLICY)
    assert on_result(state, ok=True, now_s=31.1, policy=POLICY) == BreakerState()


def test_one_success_resets_the_count_of_failures() -> None:
    state = BreakerState()
    for ok in (False, False, True, False, False):
        state = on_result(state, ok=ok, now_s=0.0, policy=POLICY)
    assert (state.circuit, state.consecutive_failures) == ("closed", 2)


@given(opened=st.integers(min_value=0, max_value=10_000))
def test_the_cool_down_doubles_up_to_an_hour(opened: int) -> None:
    policy = BreakerPolicy()
    assert policy.cooldown_s <= cooldown_s(policy, opened) <= COOLDOWN_MAX_S
    assert cooldown_s(policy, 2) == 2 * cooldown_s(policy, 1)
