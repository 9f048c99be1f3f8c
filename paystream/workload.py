"""Deterministic workloads: accounts, funding, and transfers with trouble in them.

Pure (a seed in, commands out) so the demo, the end-to-end and crash tests and
the benchmarks all drive the platform with the same kind of traffic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from paystream.ledger import CloseAccount, Command, Deposit, OpenAccount, Transfer
from paystream.topology.partitioner import partition_for

ACCOUNTS_MAX = 1_000_000
TRANSFERS_MAX = 10_000_000


@dataclass(frozen=True, slots=True)
class Workload:
    setup: tuple[Command, ...]
    """Open every account and fund the live ones; must be applied before ``traffic``."""
    traffic: tuple[Command, ...]
    """Transfers (with duplicates, conflicts, overdrafts) and the closing of some accounts."""

    @property
    def transfer_ids(self) -> tuple[str, ...]:
        return tuple(c.command_id for c in self.traffic if isinstance(c, Transfer))


@dataclass(frozen=True, slots=True, kw_only=True)
class Mix:
    accounts: int = 500
    transfers: int = 20_000
    duplicate_rate: float = 0.05
    conflict_rate: float = 0.01
    to_closed_rate: float = 0.02
    overdraft_rate: float = 0.01
    closing_accounts: int = 10
    racing_transfers: int = 3
    """Transfers sent to each closing account right behind its close, from sources on
    the same partition: the directory still says "open", so the credit is refused
    and the saga compensates (exercised on every run, not by luck)."""
    partitions: int = 8
    deposit_minor: int = 100_000
    amount_max_minor: int = 5_000


def build(
    *, seed: int, mix: Mix, run_id: str, partner_id: str = "demo", currency: str = "EUR",
    issued_at_ms: int = 1_700_000_000_000,
) -> Workload:  # fmt: skip
    if not (2 <= mix.accounts <= ACCOUNTS_MAX and 0 <= mix.transfers <= TRANSFERS_MAX):
        raise ValueError("accounts must be 2..1,000,000 and transfers 0..10,000,000")
    rng = random.Random(seed)
    ids = [f"{run_id}-acct-{i:06d}" for i in range(mix.accounts)]
    closing = ids[: min(mix.closing_accounts, mix.accounts // 2)]
    live = ids[len(closing) :]
    setup: list[Command] = [
        OpenAccount(f"{run_id}-open-{a}", f"open-{a}", partner_id, issued_at_ms, a, currency)
        for a in ids
    ]
    setup += [
        Deposit(
            f"{run_id}-fund-{a}",
            f"fund-{a}",
            partner_id,
            issued_at_ms,
            a,
            mix.deposit_minor,
            currency,
        )
        for a in live
    ]
    traffic = _traffic(rng, mix, run_id, live, closing, partner_id, currency, issued_at_ms)
    return Workload(setup=tuple(setup), traffic=tuple(traffic))


def _traffic(
    rng: random.Random, mix: Mix, run_id: str, live: list[str], closing: list[str],
    partner_id: str, currency: str, issued_at_ms: int,
) -> list[Command]:  # fmt: skip
    traffic: list[Command] = []
    originals: list[Transfer] = []
    close_at = mix.transfers // 4
    for i in range(mix.transfers):
        if i == close_at:
            for a in closing:
                traffic.append(
                    CloseAccount(f"{run_id}-close-{a}", f"close-{a}", partner_id, issued_at_ms, a)
                )
                traffic += _racing(rng, mix, run_id, a, live, partner_id, currency, issued_at_ms)
        roll = rng.random()
        cid = f"{run_id}-tx-{i:08d}"
        at_ms = issued_at_ms + i
        if originals and roll < mix.duplicate_rate:
            original = rng.choice(originals)
            traffic.append(_again(original, cid, at_ms, original.amount_minor))
            continue
        if originals and roll < mix.duplicate_rate + mix.conflict_rate:
            original = rng.choice(originals)
            traffic.append(_again(original, cid, at_ms, original.amount_minor + 1))
            continue
        source = rng.choice(live)
        to_closed = i > close_at and closing and rng.random() < mix.to_closed_rate
        destination = rng.choice(closing) if to_closed else rng.choice(live)
        amount = rng.randint(1, mix.amount_max_minor)
        if rng.random() < mix.overdraft_rate:
            amount = mix.deposit_minor * 10
        transfer = Transfer(
            cid, f"req-{i}", partner_id, at_ms, source, destination, amount, currency
        )
        originals.append(transfer)
        traffic.append(transfer)
    return traffic


def _racing(
    rng: random.Random, mix: Mix, run_id: str, closing: str, live: list[str],
    partner_id: str, currency: str, issued_at_ms: int,
) -> list[Command]:  # fmt: skip
    partition = partition_for(closing.encode(), mix.partitions)
    neighbours = [a for a in live if partition_for(a.encode(), mix.partitions) == partition]
    return [
        Transfer(
            f"{run_id}-race-{closing}-{n}",
            f"race-{closing}-{n}",
            partner_id,
            issued_at_ms,
            rng.choice(neighbours),
            closing,
            1,
            currency,
        )
        for n in range(mix.racing_transfers if neighbours else 0)
    ]


def _again(original: Transfer, command_id: str, issued_at_ms: int, amount_minor: int) -> Transfer:
    """The same request id again: an exact duplicate, or a conflict if the amount differs."""
    return Transfer(
        command_id, original.request_id, original.partner_id, issued_at_ms,
        original.account_id, original.destination_account_id, amount_minor, original.currency,
    )  # fmt: skip
