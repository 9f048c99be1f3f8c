"""End the worker when one guarded step hangs past its bound.

librdkafka can block a transactional call for ever when its only broker dies
and comes back (``send_offsets_to_transaction`` waiting on a decommissioned
broker handle, whatever timeout it was given: seen in
``tests/e2e/test_broker_restart.py``). A worker stuck there stays alive, so no
supervisor restarts it, and its partitions stall for ``max.poll.interval.ms``
or for ever. Ending the process is always safe (``failfast``): the open
transaction is aborted when the next life fences the transactional id.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from paystream.agents import failfast

TICK_S = 0.5
"""How often the watchdog looks at the clock."""


class Watchdog:
    """A background thread that calls ``on_expiry`` once a guarded step overruns."""

    def __init__(self, *, on_expiry: Callable[[str], None] = failfast.crash) -> None:
        self._on_expiry = on_expiry
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._what = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @contextlib.contextmanager
    def guard(self, what: str, *, timeout_s: float) -> Iterator[None]:
        """Arm for ``timeout_s`` around the body; disarm when it ends, however it ends."""
        with self._lock:
            self._deadline, self._what = time.monotonic() + timeout_s, f"{what} ({timeout_s}s)"
        try:
            yield
        finally:
            with self._lock:
                self._deadline = None

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                overdue = self._deadline is not None and time.monotonic() > self._deadline
                what = self._what
            if overdue:
                self._on_expiry(f"stuck: {what} did not finish in time")
                return
