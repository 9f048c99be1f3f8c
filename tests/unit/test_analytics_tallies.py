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


def test_every_entry_kind_has_its_command_and_a_payout_ends_once() -> None:
    """Payouts' entries (issue 19) are counted like payments': each kind names its command,
    and a payout's last entry is its settlement, or the void of its reservation."""
    from collections import Counter

    from paystream.analytics.rows import is_final_entry
    from paystream.analytics.tallies import COMMAND_OF_KIND, Tally
    from paystream.ledger import JournalEntry, SendPayout, SettlePayout
    from paystream.ledger.models import ENTRY_KINDS
    from tests.support.ledger import Cluster, fail_payout, make_account, rail, request_payout

    assert set(COMMAND_OF_KIND) == set(ENTRY_KINDS)
    cluster = Cluster.of([make_account("src", credits_minor=1_000)])
    settled, failed = request_payout(1, amount_minor=100), request_payout(2, amount_minor=200)
    cluster.apply([settled, failed])
    cluster.apply([rail(SendPayout, 3, settled), rail(SendPayout, 4, failed)])
    cluster.apply([rail(SettlePayout, 5, settled), fail_payout(6, failed)])
    entries = [e for e in cluster.entries() if isinstance(e, JournalEntry)]
    finals = Counter(e.payment_id for e in entries if is_final_entry(e))
    assert finals == {settled.command_id: 1, failed.command_id: 1}
    tally = Tally(first_offset=0, next_offset=len(entries))
    for entry in entries:
        tally.count_entry(entry, entry.issued_at_ms + 5)
    assert sum(tally.histograms.values()) == 2
