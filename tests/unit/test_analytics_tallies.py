"""The tallies' histogram bins (pure): every value lands in a bin whose middle is within
2.2 % of it, bins only grow with the value, and the last bin holds everything longer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from paystream.analytics.tallies import BIN_MAX, bin_ms, latency_bin


@given(st.integers(min_value=2, max_value=2**40))
def test_a_bins_middle_is_within_2_2_percent(ms: int) -> None:
    assert abs(bin_ms(latency_bin(ms)) - ms) <= 0.022 * ms


@given(st.integers(min_value=-(2**40), max_value=2**45), st.integers(min_value=0, max_value=2**20))
def test_bins_grow_with_the_value(ms: int, more: int) -> None:
    assert latency_bin(ms) <= latency_bin(ms + more) <= BIN_MAX


def test_a_millisecond_or_less_is_bin_0_and_the_last_bin_holds_the_rest() -> None:
    assert [latency_bin(ms) for ms in (-1, 0, 1)] == [0, 0, 0]
    assert bin_ms(0) == 0.0
    assert latency_bin(2**60) == BIN_MAX
