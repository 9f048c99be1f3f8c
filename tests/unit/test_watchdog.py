"""The watchdog ends a worker whose guarded step hangs, and stays quiet otherwise."""

from __future__ import annotations

import threading
import time

from paystream.agents import watchdog as watchdog_module
from paystream.agents.watchdog import Watchdog

WAIT_S = 5.0


def test_a_step_that_overruns_its_bound_fires_once_with_what_it_was() -> None:
    fired: list[str] = []
    done = threading.Event()

    def on_expiry(reason: str) -> None:
        fired.append(reason)
        done.set()

    dog = Watchdog(on_expiry=on_expiry)
    dog.start()
    try:
        with dog.guard("a batch transaction", timeout_s=0.1):
            assert done.wait(WAIT_S), "the watchdog did not fire"
    finally:
        dog.stop()
    assert fired == ["stuck: a batch transaction (0.1s) did not finish in time"]


def test_steps_that_finish_in_time_never_fire() -> None:
    fired: list[str] = []
    dog = Watchdog(on_expiry=fired.append)
    dog.start()
    try:
        for _ in range(3):
            with dog.guard("quick", timeout_s=0.2):
                time.sleep(0.05)
        time.sleep(2 * watchdog_module.TICK_S + 0.3)  # disarmed: idle time is not overdue
    finally:
        dog.stop()
    assert fired == []
