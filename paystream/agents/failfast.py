"""Turn the errors faust only logs into a worker crash.

faust logs and carries on after errors that lose state or work: recovery
errors, begin/commit errors, "Commit invoked for unknown transaction", a
crashed agent. Carrying on past them is how money gets lost, so this handler
ends the process at once (like SIGKILL: nothing more is committed) and the
supervisor restarts it from committed state.
"""

from __future__ import annotations

import logging
import os
import sys

EXIT_CODE_FAILFAST = 70
FATAL_WARNINGS = (
    "Error in recovery",
    "Commit invoked for unknown transaction",
    "ProducerFenced",
    "Error adding to take buffer",
    "No transaction producer found",
)
WATCHED_LOGGERS = ("faust", "mode", "paystream")


class FailFastHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if not _is_fatal(record):
            return
        sys.stderr.write(f"paystream worker: fatal: {record.name}: {record.getMessage()}\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE_FAILFAST)


def _is_fatal(record: logging.LogRecord) -> bool:
    if not record.name.startswith(WATCHED_LOGGERS):
        return False
    if record.levelno >= logging.ERROR:
        return True
    if record.levelno >= logging.WARNING:
        message = record.getMessage()
        return any(pattern in message for pattern in FATAL_WARNINGS)
    return False


def install() -> None:
    """Watch faust's, mode's and our own loggers (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(handler, FailFastHandler) for handler in root.handlers):
        root.addHandler(FailFastHandler(level=logging.WARNING))


def crash(reason: str) -> None:
    """End the worker now, committing nothing more."""
    sys.stderr.write(f"paystream worker: fatal: {reason}\n")
    sys.stderr.flush()
    os._exit(EXIT_CODE_FAILFAST)
