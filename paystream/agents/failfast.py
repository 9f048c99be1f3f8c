"""End the worker at once when it cannot go on correctly.

Exiting like SIGKILL (nothing more is committed, no clean-up that could
commit) is always safe: the open transaction is aborted when the worker's
next life fences its transactional id, and the supervisor restarts it from
committed state. Carrying on past a lost update is how money gets lost.
"""

from __future__ import annotations

import os
import sys

EXIT_CODE_FAILFAST = 70


def crash(reason: str) -> None:
    """End the worker now, committing nothing more."""
    sys.stderr.write(f"paystream worker: fatal: {reason}\n")
    sys.stderr.flush()
    os._exit(EXIT_CODE_FAILFAST)
