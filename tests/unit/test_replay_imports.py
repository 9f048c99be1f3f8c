"""Replay runs the core and the shell the workers run, never the worker itself: importing it
(and its command) loads no module of ``paystream.agents``."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import paystream.audit.replay, paystream.cli.replay
print(",".join(sorted(m for m in sys.modules if m.startswith("paystream."))))
"""


def test_replay_imports_the_core_and_the_shell_and_no_worker_code() -> None:
    loaded = (
        subprocess.run(
            [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=60
        )
        .stdout.strip()
        .split(",")
    )
    assert "paystream.ledger.core" in loaded and "paystream.topology.shell" in loaded
    assert [m for m in loaded if m.startswith("paystream.agents")] == []
