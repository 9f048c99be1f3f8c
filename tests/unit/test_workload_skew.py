"""Workloads with Zipf-skewed accounts: a few hot accounts carry much of the traffic, the
same seed gives the same records, and the uniform default is untouched."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from paystream import workload
from paystream.ledger import Transfer

NOW_MS = 1_790_000_000_000


def sources(mix: workload.Mix, seed: int = 7) -> Counter[str]:
    load = workload.build(seed=seed, mix=mix, run_id="skew", now_ms=NOW_MS)
    return Counter(
        c.account_id for s in load.traffic if isinstance(c := workload.command_of(s), Transfer)
    )


def top_share(counts: Counter[str], accounts: int) -> float:
    top = counts.most_common(max(1, accounts // 100))
    return sum(n for _, n in top) / sum(counts.values())


def test_zipf_puts_much_of_the_traffic_on_the_top_one_percent() -> None:
    base = workload.Mix(accounts=1_000, transfers=20_000, hostile_rate=0.0)
    uniform = top_share(sources(base), 1_000)
    skewed = top_share(sources(dataclasses.replace(base, zipf_s=1.1)), 1_000)
    assert uniform < 0.03 < 0.25 < skewed, (uniform, skewed)


def test_the_same_seed_gives_the_same_skewed_workload() -> None:
    mix = workload.Mix(accounts=300, transfers=2_000, zipf_s=1.1)
    first = workload.build(seed=3, mix=mix, run_id="a", now_ms=NOW_MS)
    again = workload.build(seed=3, mix=mix, run_id="a", now_ms=NOW_MS)
    assert first == again


@pytest.mark.parametrize("zipf_s", [0.0, -1.0, 4.5])
def test_an_exponent_out_of_range_is_refused(zipf_s: float) -> None:
    with pytest.raises(ValueError, match="zipf_s"):
        workload.build(seed=1, mix=workload.Mix(accounts=10, transfers=10, zipf_s=zipf_s),
                       run_id="x", now_ms=NOW_MS)  # fmt: skip


def test_a_skewed_transfer_does_not_pay_its_own_account() -> None:
    mix = workload.Mix(accounts=1_000, transfers=20_000, hostile_rate=0.0, zipf_s=1.1)
    load = workload.build(seed=5, mix=mix, run_id="self", now_ms=NOW_MS)
    transfers = [c for s in load.traffic if isinstance(c := workload.command_of(s), Transfer)]
    to_itself = [t for t in transfers if t.account_id == t.destination_account_id]
    assert len(to_itself) == 0, len(to_itself)
