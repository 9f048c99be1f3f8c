"""Deterministic workloads: accounts, funding, and transfers with trouble in them.

Pure (a seed and a time in, records out) so the demo, the end-to-end and crash
tests and the benchmarks all drive the platform with the same kind of traffic:
honest transfers with client mistakes (exact duplicates, conflicting retries,
overdrafts, transfers to accounts that close meanwhile) and, at
``Mix.hostile_rate``, hostile input (resent and reused command ids, ids minted
for another partition, another partner's accounts, records under a wrong key,
garbage bytes, zero amounts, invalid fields, unknown destinations, closing an
account with money in flight).
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from paystream.ledger import CloseAccount, Command, Deposit, OpenAccount, Transfer, mint_command_id
from paystream.topology.partitioner import partition_for

ACCOUNTS_MAX = 1_000_000
TRANSFERS_MAX = 10_000_000
GARBAGE_BYTES_MAX = 2_048
ZIPF_S_MAX = 4.0
REDRAWS_MAX = 64
"""Draws of a skewed workload's destination until it is not the source (then it stays:
``same_account``); a uniform workload never draws again, so its seeds are unchanged."""
INTRUDER_PARTNER_ID = "intruder"
"""A partner that owns none of the workload's accounts."""


@dataclass(frozen=True, slots=True)
class Misrouted:
    """A command published under another key (a producer with another key or partitioner)."""

    command: Command
    key: bytes


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes that are no command at all."""

    key: bytes
    value: bytes


Sent = Command | Misrouted | Garbage


def command_of(sent: Sent) -> Command | None:
    """The command a record carries (``None`` for garbage)."""
    if isinstance(sent, Misrouted):
        return sent.command
    return None if isinstance(sent, Garbage) else sent


@dataclass(frozen=True, slots=True)
class Workload:
    setup: tuple[Command, ...]
    """Open every account and fund the live ones; must be applied before ``traffic``."""
    traffic: tuple[Sent, ...]
    """Transfers with mistakes and hostile records, and the closing of some accounts."""

    @property
    def transfer_ids(self) -> tuple[str, ...]:
        """The payment ids of the transfers, each once (the first record with that id)."""
        seen: dict[str, None] = {}
        for sent in self.traffic:
            command = command_of(sent)
            if isinstance(command, Transfer):
                seen.setdefault(command.command_id, None)
        return tuple(seen)

    @property
    def answers(self) -> Counter[str]:
        """Command id -> how many records carry it: each gets exactly one answer event."""
        return Counter(c.command_id for s in self.traffic if (c := command_of(s)) is not None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Mix:
    accounts: int = 500
    transfers: int = 20_000
    duplicate_rate: float = 0.05
    conflict_rate: float = 0.01
    to_closed_rate: float = 0.02
    overdraft_rate: float = 0.01
    hostile_rate: float = 0.02
    closing_accounts: int = 10
    racing_transfers: int = 3
    """Transfers sent to each closing account right behind its close, from sources on
    the same partition: the directory still says "open", so the credit is refused
    and the saga compensates (exercised on every run, not by luck)."""
    partitions: int = 8
    deposit_minor: int = 100_000
    amount_max_minor: int = 5_000
    zipf_s: float | None = None
    """Honest transfers pick their accounts uniformly (None) or Zipf-skewed with this
    exponent: the account of rank k (ranks shuffled onto the accounts) is picked with a
    probability proportional to k**-zipf_s, so a few hot accounts carry much of the traffic."""


@dataclass(frozen=True, slots=True)
class _Ids:
    """Mints command ids the way the API does: for the account's partition, at ``now_ms``."""

    rng: random.Random
    partitions: int
    now_ms: int

    def mint(self, account_id: str, *, partition: int | None = None) -> str:
        if partition is None:
            partition = partition_for(account_id.encode(), self.partitions)
        return mint_command_id(
            partition=partition, at_ms=self.now_ms, random_bytes=self.rng.randbytes(10)
        )


def build(
    *, seed: int, mix: Mix, run_id: str, now_ms: int, partner_id: str = "demo",
    currency: str = "EUR",
) -> Workload:  # fmt: skip
    """``now_ms``: when the records will be sent (command ids must be minted near it)."""
    if not (2 <= mix.accounts <= ACCOUNTS_MAX and 0 <= mix.transfers <= TRANSFERS_MAX):
        raise ValueError("accounts must be 2..1,000,000 and transfers 0..10,000,000")
    rng = random.Random(seed)
    ids = _Ids(rng, mix.partitions, now_ms)
    accounts = [f"{run_id}-acct-{i:06d}" for i in range(mix.accounts)]
    closing = accounts[: min(mix.closing_accounts, mix.accounts // 2)]
    live = accounts[len(closing) :]
    setup: list[Command] = [
        OpenAccount(ids.mint(a), f"open-{a}", partner_id, now_ms, a, currency) for a in accounts
    ]
    setup += [
        Deposit(ids.mint(a), f"fund-{a}", partner_id, now_ms, a, mix.deposit_minor, currency)
        for a in live
    ]
    traffic = _Traffic(rng, mix, ids, run_id, live, closing, partner_id, currency).build()
    return Workload(setup=tuple(setup), traffic=tuple(traffic))


def _picker(rng: random.Random, accounts: list[str], zipf_s: float | None) -> Callable[[], str]:
    """Draws an account: uniformly, or Zipf-skewed over ``accounts`` in a shuffled rank order."""
    if zipf_s is None:
        return lambda: rng.choice(accounts)
    if not 0 < zipf_s <= ZIPF_S_MAX:
        raise ValueError(f"zipf_s must be in (0, {ZIPF_S_MAX}]")
    ranked = list(accounts)
    rng.shuffle(ranked)
    cumulative = list(itertools.accumulate(k**-zipf_s for k in range(1, len(ranked) + 1)))
    return lambda: rng.choices(ranked, cum_weights=cumulative)[0]


class _Traffic:
    def __init__(
        self, rng: random.Random, mix: Mix, ids: _Ids, run_id: str, live: list[str],
        closing: list[str], partner_id: str, currency: str,
    ) -> None:  # fmt: skip
        self.rng, self.mix, self.ids, self.run_id = rng, mix, ids, run_id
        self.live, self.closing = live, closing
        self.partner_id, self.currency = partner_id, currency
        self.originals: list[Transfer] = []
        self.sent: list[Sent] = []
        self.pick = _picker(rng, live, mix.zipf_s)

    def build(self) -> list[Sent]:
        close_at = self.mix.transfers // 4
        for i in range(self.mix.transfers):
            if i == close_at:
                self._close_and_race()
            self._one(i, closed=i > close_at)
        return self.sent

    def _one(self, i: int, *, closed: bool) -> None:
        mix, roll = self.mix, self.rng.random()
        if self.originals and roll < mix.hostile_rate:
            self.sent.append(self._hostile(i))
        elif self.originals and roll < mix.hostile_rate + mix.duplicate_rate:
            self.sent.append(self._again(self.rng.choice(self.originals), 0))
        elif self.originals and roll < mix.hostile_rate + mix.duplicate_rate + mix.conflict_rate:
            self.sent.append(self._again(self.rng.choice(self.originals), 1))
        else:
            self._honest(i, closed=closed)

    def _honest(self, i: int, *, closed: bool) -> None:
        rng, mix = self.rng, self.mix
        source = self.pick()
        to_closed = closed and self.closing and rng.random() < mix.to_closed_rate
        destination = rng.choice(self.closing) if to_closed else self.pick()
        for _ in range(REDRAWS_MAX if mix.zipf_s is not None else 0):
            if destination != source:
                break
            destination = self.pick()  # a hot account would pay itself often: draw again
        amount = rng.randint(1, mix.amount_max_minor)
        if rng.random() < mix.overdraft_rate:
            amount = mix.deposit_minor * 10
        transfer = self._transfer(source, destination, amount, f"req-{i}")
        self.originals.append(transfer)
        self.sent.append(transfer)

    def _transfer(
        self, source: str, destination: str, amount: int, request_id: str, *,
        partner_id: str | None = None,
    ) -> Transfer:  # fmt: skip
        return Transfer(
            self.ids.mint(source), self._request(request_id), partner_id or self.partner_id,
            self.ids.now_ms,
            source, destination, amount, self.currency,
        )  # fmt: skip

    def _request(self, name: str) -> str:
        """A request id of this run's own: runs on the same topics must not collide."""
        return f"{self.run_id}-{name}"

    def _again(self, original: Transfer, extra_minor: int) -> Transfer:
        """The same request id again: an exact duplicate, or a conflict if the amount differs."""
        amount = original.amount_minor + extra_minor
        return replace(original, command_id=self.ids.mint(original.account_id), amount_minor=amount)

    def _hostile(self, i: int) -> Sent:
        rng, original = self.rng, self.rng.choice(self.originals)
        source, destination = rng.choice(self.live), rng.choice(self.live)
        kind = rng.randrange(9)
        if kind == 0:  # the very same record again: a Duplicate answer, no second effect
            return original
        if kind == 1:  # its command id with another request: command_id_reused
            return replace(original, request_id=self._request(f"reuse-{i}"))
        if kind == 2:  # an id minted for another partition: command_id_invalid
            other = (partition_for(source.encode(), self.mix.partitions) + 1) % self.mix.partitions
            t = self._transfer(source, destination, 1, f"alien-{i}")
            return replace(t, command_id=self.ids.mint(source, partition=other))
        if kind == 3:  # another partner's account: account_not_found, no key of theirs touched
            return self._transfer(
                source, destination, 1, f"req-{i}", partner_id=INTRUDER_PARTNER_ID
            )
        if kind == 4:  # published under another account's key: wrong_partition
            return Misrouted(
                self._transfer(source, destination, 1, f"misrouted-{i}"), b"x" + source.encode()
            )
        if kind == 5:  # garbage: dead-lettered, no answer possible
            return Garbage(source.encode(), rng.randbytes(rng.randint(1, GARBAGE_BYTES_MAX)))
        if kind == 6:  # zero amount: invalid_amount
            return self._transfer(source, destination, 0, f"zero-{i}")
        if kind == 7:  # a destination nobody opened: Debited, then Reversed by its partition
            return self._transfer(source, f"{self.run_id}-nobody-{i}", 1, f"nobody-{i}")
        # closing a funded account, often with money in flight: refused
        return CloseAccount(
            self.ids.mint(source), f"close-{i}", self.partner_id, self.ids.now_ms, source
        )

    def _close_and_race(self) -> None:
        for account in self.closing:
            self.sent.append(
                CloseAccount(
                    self.ids.mint(account), f"close-{account}", self.partner_id,
                    self.ids.now_ms, account,
                )
            )  # fmt: skip
            self._race(account)

    def _race(self, closing: str) -> None:
        partition = partition_for(closing.encode(), self.mix.partitions)
        neighbours = [
            a for a in self.live if partition_for(a.encode(), self.mix.partitions) == partition
        ]
        for n in range(self.mix.racing_transfers if neighbours else 0):
            source = self.rng.choice(neighbours)
            self.sent.append(self._transfer(source, closing, 1, f"race-{closing}-{n}"))
