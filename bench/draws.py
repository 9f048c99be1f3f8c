"""Who pays whom: (source, destination) account index pairs for the benchmarks.

Two samplers, shared by the Postgres baseline (``bench/baseline_postgres.py``) and the
saga benchmark, so both put the same traffic on the same accounts:

- ``uniform_pairs``: every ordered pair of distinct accounts equally likely.
- ``zipf_pairs``: hot accounts. A bounded Zipf law over ranks ``1..n``,
  ``P(rank = k) = k**-s / H(n, s)`` with ``H(n, s) = sum(j**-s for j in 1..n)``
  (numpy's ``Generator.zipf`` is unbounded, so the weights are written out and drawn
  with ``Generator.choice``). The ranks are shuffled onto the account indexes by one
  seeded permutation, so the hottest account is a random one, not index 0, and the same
  account is hot as a payer and as a payee. Source and destination are drawn
  independently from that law; a pair whose two ends are equal is drawn again (both
  ends), which yields exactly the law of two independent draws given that they differ.

An index ``i`` in ``0..n_accounts-1`` stands for whatever account id the caller gives it.
Each function is pure: the same arguments give the same pairs.

    .venv/bin/python -m bench.draws    # self-check: the share of draws on the top 1%
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from paystream.ledger.errors import ensure

__all__ = ["hottest_share", "uniform_pairs", "zipf_pairs", "zipf_weights"]

Pair = tuple[int, int]

N_ACCOUNTS_MAX = 10_000_000
COUNT_MAX = 100_000_000
REDRAW_ROUNDS_MAX = 64
"""Rounds of redrawing equal pairs; the chance of equal ends is sum(P(k)^2) < 1/2 for n >= 2."""


def uniform_pairs(n_accounts: int, count: int, seed: int) -> list[Pair]:
    """``count`` pairs, each ordered pair of distinct accounts equally likely.

    The destination is the source plus an offset uniform in ``1..n-1`` (mod n): uniform
    over the other ``n - 1`` accounts, with no redraws.
    """
    _check_sizes(n_accounts, count)
    rng = np.random.default_rng(seed)
    sources = rng.integers(0, n_accounts, size=count)
    destinations = (sources + rng.integers(1, n_accounts, size=count)) % n_accounts
    return _pairs(sources, destinations, n_accounts)


def zipf_pairs(n_accounts: int, count: int, s: float, seed: int) -> list[Pair]:
    """``count`` pairs whose ends follow a bounded Zipf law of exponent ``s`` (module doc)."""
    _check_sizes(n_accounts, count)
    ensure(s > 0, f"the Zipf exponent must be positive, not {s}")
    rng = np.random.default_rng(seed)
    account_of_rank = rng.permutation(n_accounts)
    weights = zipf_weights(n_accounts, s)
    sources = rng.choice(n_accounts, size=count, p=weights)
    destinations = rng.choice(n_accounts, size=count, p=weights)
    for _ in range(REDRAW_ROUNDS_MAX):
        equal = np.flatnonzero(sources == destinations)
        if equal.size == 0:
            break
        sources[equal] = rng.choice(n_accounts, size=equal.size, p=weights)
        destinations[equal] = rng.choice(n_accounts, size=equal.size, p=weights)
    return _pairs(account_of_rank[sources], account_of_rank[destinations], n_accounts)


def zipf_weights(n_accounts: int, s: float) -> NDArray[np.float64]:
    """``P(rank = k)`` for ranks ``1..n`` (index ``k - 1``), summing to 1."""
    weights: NDArray[np.float64] = np.arange(1, n_accounts + 1, dtype=np.float64) ** -s
    normalised: NDArray[np.float64] = weights / weights.sum()
    return normalised


def hottest_share(pairs: list[Pair], n_accounts: int, fraction: float) -> float:
    """The share of pair ends that land on the ``fraction`` of accounts drawn most often."""
    ensure(0 < fraction <= 1, f"fraction must be in (0, 1], not {fraction}")
    ends = np.asarray(pairs, dtype=np.int64).ravel()
    hits = np.bincount(ends, minlength=n_accounts)
    top = max(1, round(n_accounts * fraction))
    return float(np.sort(hits)[::-1][:top].sum() / ends.size)


def _check_sizes(n_accounts: int, count: int) -> None:
    ensure(2 <= n_accounts <= N_ACCOUNTS_MAX, f"n_accounts must be in 2..{N_ACCOUNTS_MAX:,}")
    ensure(0 <= count <= COUNT_MAX, f"count must be in 0..{COUNT_MAX:,}")


def _pairs(sources: NDArray[np.int64], destinations: NDArray[np.int64], n: int) -> list[Pair]:
    """Checked at the boundary: every end an account index, no account paying itself."""
    ensure(bool(np.all(sources != destinations)), "a pair pays itself (redraws ran out)")
    ensure(bool(np.all((sources >= 0) & (sources < n))), "a source is out of range")
    ensure(bool(np.all((destinations >= 0) & (destinations < n))), "a destination out of range")
    return list(zip(sources.tolist(), destinations.tolist(), strict=True))


def _self_check(n_accounts: int = 10_000, count: int = 200_000, s: float = 1.1) -> None:
    """Invariants and the hot share of both laws; raises if a check fails."""
    seed = 18
    uniform = uniform_pairs(n_accounts, count, seed)
    zipf = zipf_pairs(n_accounts, count, s, seed)
    ensure(uniform == uniform_pairs(n_accounts, count, seed), "uniform: not reproducible")
    ensure(zipf == zipf_pairs(n_accounts, count, s, seed), "zipf: not reproducible")
    ensure(zipf != zipf_pairs(n_accounts, count, s, seed + 1), "zipf: the seed is ignored")
    top = max(1, round(n_accounts * 0.01))
    expected = float(zipf_weights(n_accounts, s)[:top].sum())
    shares = {"uniform": hottest_share(uniform, n_accounts, 0.01),
              "zipf": hottest_share(zipf, n_accounts, 0.01)}  # fmt: skip
    print(f"{count:,} pairs over {n_accounts:,} accounts; share of pair ends on the top 1% "
          f"({top} accounts) drawn most often:")  # fmt: skip
    print(f"  uniform         {shares['uniform']:7.2%}   (1% + sampling noise)")
    print(f"  zipf (s = {s})  {shares['zipf']:7.2%}   (law: {expected:.2%} before redraws)")
    ensure(shares["uniform"] < 0.02, "uniform: the top 1% take too much")
    ensure(abs(shares["zipf"] - expected) < 0.02, "zipf: the top 1% share is off the law")
    hottest = float(zipf_weights(n_accounts, s)[0])
    print(f"  the hottest account: {hottest:.2%} of zipf ends by law; all checks passed")


if __name__ == "__main__":
    _self_check()
