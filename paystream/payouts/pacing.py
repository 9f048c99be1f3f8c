"""The rail connector's pure parts: its send rate (AIMD) and its committed progress.

**AIMD** (additive increase, multiplicative decrease: TCP's congestion control, applied to a
send rate): every instruction the rail takes raises the rate by ``increase_per_s`` divided by
the current rate (so about ``increase_per_s`` per second of sending), a ``429`` halves it
(``decrease``) and holds every send until its ``Retry-After`` has passed. A rail's rate limit
slows paystream down to what the rail takes instead of failing payouts. Sends are paced at the
rate: each takes the next slot ``1 / rate`` after the previous one.

**Progress** per events partition: an event is *done* once what it asks for is produced (a
``SendPayout`` for a ``Queued`` event, the bank's outcome for a ``Sending`` one, nothing for
the rest). The committed offset is the lowest event not done (Kafka's committed offset is the
next to read), so a restart re-reads exactly the events whose work was not committed; the
work is idempotent (deterministic request ids at the worker, the end-to-end id at the bank).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Aimd", "Progress"]


@dataclass(slots=True, kw_only=True)
class Aimd:
    rate_per_s: float
    rate_min_per_s: float
    rate_max_per_s: float
    increase_per_s: float
    decrease: float = 0.5
    next_slot_s: float = 0.0
    """Monotonic time of the next send."""
    held_until_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.rate_min_per_s <= self.rate_per_s <= self.rate_max_per_s:
            raise ValueError("rates must satisfy 0 < min <= rate <= max")
        if not 0 < self.decrease < 1 or self.increase_per_s <= 0:
            raise ValueError("decrease must be in (0, 1) and increase positive")

    def slot(self, now_s: float) -> float:
        """Take the next send slot; how long to wait for it (0: send now)."""
        at = max(now_s, self.next_slot_s, self.held_until_s)
        self.next_slot_s = at + 1.0 / self.rate_per_s
        return at - now_s

    def taken(self) -> None:
        """The rail took an instruction: a little faster."""
        self.rate_per_s = min(
            self.rate_max_per_s, self.rate_per_s + self.increase_per_s / self.rate_per_s
        )

    def throttled(self, now_s: float, retry_after_s: float) -> None:
        """The rail said 429: half the rate, and nothing before ``Retry-After``."""
        self.rate_per_s = max(self.rate_min_per_s, self.rate_per_s * self.decrease)
        self.held_until_s = max(self.held_until_s, now_s + retry_after_s)


@dataclass(slots=True)
class Progress:
    """One partition's events in flight: which are done, what may be committed."""

    pending: set[int] = field(default_factory=set)
    last_seen: int = -1

    def add(self, offset: int) -> None:
        if offset <= self.last_seen:
            raise ValueError(f"offset {offset} after {self.last_seen}: not in order")
        self.pending.add(offset)
        self.last_seen = offset

    def done(self, offset: int) -> None:
        self.pending.discard(offset)

    def committable(self) -> int | None:
        """The offset to commit (the next to read after a restart); None: nothing seen."""
        if self.last_seen < 0:
            return None
        return min(self.pending) if self.pending else self.last_seen + 1
