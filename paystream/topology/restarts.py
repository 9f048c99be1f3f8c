"""Runs of a Kafka client loop, each from the committed offsets, until stopped.

The rail connector and the partner fan-out end a run at any Kafka error (their transaction
aborted, or fenced by a newer member); a new run with new clients starts from the committed
offsets, after a pause, at most ``restarts_max`` times in a row. An error that a restart
cannot mend (``fatal``: e.g. authorization refused) ends the service at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final, Protocol

from confluent_kafka import KafkaException

__all__ = ["RESTARTS_MAX", "RESTART_PAUSE_S", "Restarting"]

RESTARTS_MAX: Final = 1_000
RESTART_PAUSE_S: Final = 2.0
logger = logging.getLogger("paystream.restarts")


class Run(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...


class Restarting:
    """``make()`` a run and run it; after a Kafka error, again (bounded, paused)."""

    def __init__(
        self,
        make: Callable[[], Run],
        *,
        what: str,
        fatal: Callable[[KafkaException], bool] = lambda _error: False,
        restarts_max: int = RESTARTS_MAX,
        pause_s: float = RESTART_PAUSE_S,
    ) -> None:
        self._make = make
        self._what = what
        self._fatal = fatal
        self._restarts_max = restarts_max
        self._pause_s = pause_s
        self._stopping = threading.Event()
        self._current: Run | None = None

    def stop(self) -> None:
        self._stopping.set()
        if self._current is not None:
            self._current.stop()

    def run(self) -> None:
        for _ in range(self._restarts_max):
            if self._stopping.is_set():
                return
            self._current = self._make()
            try:
                self._current.run()
                return
            except KafkaException as error:
                if self._fatal(error):
                    raise
                logger.warning("%s: Kafka error; again from the committed offsets: %s",
                               self._what, error)  # fmt: skip
                self._stopping.wait(self._pause_s)
        raise RuntimeError(f"{self._what}: {self._restarts_max} Kafka errors in a row")
