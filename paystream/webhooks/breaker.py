"""Each endpoint's circuit breaker: a pure state machine (the caller brings the time).

- **closed**: requests go, at most ``concurrency_max`` at once per endpoint. Each failed
  request (anything but a 2xx, a timeout, a refused connection) counts; a 2xx resets the
  count. ``failures_to_open`` failures in a row open the circuit.
- **open** for a cool-down: no request is made. A delivery that comes due meanwhile has
  that attempt recorded as ``circuit_open`` (a failure that costs the endpoint nothing)
  and moves to its next slot, so the retry schedule stays the one bound on how long a
  delivery lives. The cool-down doubles each time the circuit opens again without having
  closed (30 s, 1 min, 2 min, ... at most ``cooldown_max_s``).
- **half_open** once the cool-down is over: one request at a time (the probe, a real
  delivery). A 2xx closes the circuit (and the dispatcher makes the endpoint's waiting
  deliveries due at once); a failure opens it again for the next, longer cool-down.

Defaults: open after 10 failures in a row, a 30 s first cool-down, at most 1 h (so a dead
endpoint sees about one request an hour), 8 requests in flight per endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal, TypeAlias

from paystream.ledger.errors import ensure

__all__ = [
    "COOLDOWN_MAX_S",
    "Admission",
    "BreakerPolicy",
    "BreakerState",
    "Circuit",
    "admit",
    "cooldown_s",
    "on_result",
]

Circuit: TypeAlias = Literal["closed", "open", "half_open"]
COOLDOWN_MAX_S: Final = 3_600.0
FAILURES_TO_OPEN_MAX: Final = 1_000
OPENED_COUNT_MAX: Final = 64
"""The doubling stops counting here (the cool-down is long capped by then)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    failures_to_open: int = 10
    cooldown_s: float = 30.0
    cooldown_max_s: float = COOLDOWN_MAX_S
    concurrency_max: int = 8
    """Requests in flight to one endpoint, across every dispatcher."""

    def __post_init__(self) -> None:
        ensure(1 <= self.failures_to_open <= FAILURES_TO_OPEN_MAX, "failures_to_open bound")
        ensure(0 < self.cooldown_s <= self.cooldown_max_s, "0 < cooldown_s <= cooldown_max_s")
        ensure(self.concurrency_max >= 1, "concurrency_max >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerState:
    circuit: Circuit = "closed"
    consecutive_failures: int = 0
    opened_count: int = 0
    """Times opened since the circuit last closed (the cool-down doubles with it)."""
    open_until_s: float | None = None
    """Epoch seconds; set while open."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What may happen to an endpoint's due deliveries now."""

    requests: int
    """How many may be sent now."""
    short_circuit: bool
    """Open: record each due one as a ``circuit_open`` attempt instead of sending it."""


def cooldown_s(policy: BreakerPolicy, opened_count: int) -> float:
    """The cool-down after the ``opened_count``-th opening in a row (counting from 1)."""
    doublings = min(max(opened_count, 1), OPENED_COUNT_MAX) - 1
    return min(policy.cooldown_s * 2.0**doublings, policy.cooldown_max_s)


def admit(
    state: BreakerState, *, now_s: float, in_flight: int, policy: BreakerPolicy
) -> tuple[BreakerState, Admission]:
    """The endpoint's state as of ``now_s``, and what its due deliveries may do."""
    if state.circuit == "open":
        if state.open_until_s is not None and now_s < state.open_until_s:
            return state, Admission(requests=0, short_circuit=True)
        state = replace(state, circuit="half_open")
    if state.circuit == "half_open":
        return state, Admission(requests=1 if in_flight == 0 else 0, short_circuit=False)
    free = max(policy.concurrency_max - in_flight, 0)
    return state, Admission(requests=free, short_circuit=False)


def on_result(
    state: BreakerState, *, ok: bool, now_s: float, policy: BreakerPolicy
) -> BreakerState:
    """The state after a request to the endpoint succeeded (``ok``) or failed."""
    if ok:
        return BreakerState()
    failures = state.consecutive_failures + 1
    if state.circuit == "half_open" or (
        state.circuit == "closed" and failures >= policy.failures_to_open
    ):
        opened = min(state.opened_count + 1, OPENED_COUNT_MAX)
        return BreakerState(
            circuit="open",
            consecutive_failures=failures,
            opened_count=opened,
            open_until_s=now_s + cooldown_s(policy, opened),
        )
    return replace(state, consecutive_failures=failures)
