"""The retry schedule of a webhook delivery. Pure: the caller brings the random number.

The default is Svix's schedule (what Standard Webhooks' authors run), written down:

=======  ===============================  =================================
attempt  when (after the previous fails)  since the state change (about)
=======  ===============================  =================================
1        immediately                      < 1 s
2        5 seconds                        5 s
3        5 minutes                        5 min
4        30 minutes                       35 min
5        2 hours                          2 h 35 min
6        5 hours                          7 h 35 min
7        10 hours                         17 h 35 min
8        10 hours                         27 h 35 min
=======  ===============================  =================================

Each delay is jittered by ±20 % (uniform), so that deliveries that failed together (an
endpoint down for a minute) do not come back together. After the 8th attempt fails the
delivery is ``dead`` (the DLQ): its partner's contact is emailed and the delivery stays
listed for a retry by hand (``POST /v1/webhooks/deliveries/{id}/retry``), which starts a
new round of the same schedule.

``PAYSTREAM_WEBHOOK_RETRY_DELAYS_S`` replaces the delays (tests and benchmarks use seconds);
the number of attempts is always one more than the number of delays, and both are bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from paystream.ledger.errors import ensure

__all__ = [
    "DELAYS_MAX",
    "DELAY_MAX_S",
    "JITTER",
    "SVIX_DELAYS_S",
    "Schedule",
]

SVIX_DELAYS_S: Final = (5.0, 300.0, 1_800.0, 7_200.0, 18_000.0, 36_000.0, 36_000.0)
"""The waits after attempts 1..7 (seconds)."""
JITTER: Final = 0.2
"""Each wait is multiplied by a uniform factor in [1 - JITTER, 1 + JITTER]."""
DELAYS_MAX: Final = 20
"""At most 21 attempts per round."""
DELAY_MAX_S: Final = 7 * 24 * 3600.0
"""No single wait longer than a week."""


@dataclass(frozen=True, slots=True)
class Schedule:
    delays_s: tuple[float, ...] = SVIX_DELAYS_S
    jitter: float = JITTER

    def __post_init__(self) -> None:
        ensure(0 < len(self.delays_s) <= DELAYS_MAX, f"1..{DELAYS_MAX} retry delays")
        ensure(
            all(0 < d <= DELAY_MAX_S for d in self.delays_s),
            f"retry delays in (0, {DELAY_MAX_S}] s: {self.delays_s}",
        )
        ensure(0 <= self.jitter < 1, f"jitter in [0, 1): {self.jitter}")

    @property
    def attempts_max(self) -> int:
        """Attempts in one round: the first, then one after each delay."""
        return len(self.delays_s) + 1

    def delay_s(self, attempts_done: int, unit: float) -> float | None:
        """How long to wait after the ``attempts_done``-th attempt of a round failed; None
        when it was the last one (the delivery is dead). ``unit`` is uniform in [0, 1)."""
        ensure(attempts_done >= 1, f"attempts_done counts from 1, not {attempts_done}")
        ensure(0 <= unit <= 1, f"unit in [0, 1]: {unit}")
        if attempts_done >= self.attempts_max:
            return None
        base = self.delays_s[attempts_done - 1]
        return base * (1 + self.jitter * (2 * unit - 1))

    def span_s(self) -> float:
        """The longest a round can take, every wait at its jittered maximum."""
        return sum(self.delays_s) * (1 + self.jitter)
