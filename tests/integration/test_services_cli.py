"""`paystream services up|status|down` on a data directory of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from paystream.services.process import free_port_pair, pid_alive

pytestmark = pytest.mark.integration


EXTERNAL_URLS = (
    "PAYSTREAM_KAFKA_BOOTSTRAP", "PAYSTREAM_POSTGRES_DSN", "PAYSTREAM_CLICKHOUSE_URL",
    "PAYSTREAM_OIDC_ISSUER",
)  # fmt: skip


def _paystream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI on the embedded defaults (external URLs of the session removed)."""
    base = {k: v for k, v in os.environ.items() if k not in EXTERNAL_URLS}
    return subprocess.run(
        [sys.executable, "-m", "paystream.cli", *args],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _pids(text: str) -> list[int]:
    return [
        int(word[4:]) for word in text.split() if word.startswith("pid=") and word[4:].isdigit()
    ]


def test_up_twice_is_harmless_and_down_leaves_no_process(tmp_path: Path) -> None:
    env = {
        "PAYSTREAM_DATA_DIR": str(tmp_path / "data"),
        "PAYSTREAM_KAFKA_PORT": str(free_port_pair()),
        "PAYSTREAM_KEYCLOAK_PORT": str(free_port_pair()),
    }
    try:
        first = _paystream(env, "services", "up")
        assert first.returncode == 0, first.stderr
        second = _paystream(env, "services", "up")
        assert second.returncode == 0, second.stderr
        status = _paystream(env, "services", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        lines = {line.split()[0]: line for line in status.stdout.splitlines()}
        assert "healthy" in lines["kafka"] and "version=4." in lines["kafka"]
        assert "healthy" in lines["postgres"] and "version=16" in lines["postgres"]
        assert "healthy" in lines["clickhouse"]
        assert "healthy" in lines["keycloak"] and "/realms/paystream" in lines["keycloak"]
        assert "oidc       http://127.0.0.1:" in first.stdout
        pids = _pids(status.stdout)
        assert len(pids) == 3  # broker, postmaster, Keycloak; ClickHouse is in-process
    finally:
        down = _paystream(env, "services", "down")
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in pids if pid_alive(pid)]
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == []
    after = _paystream(env, "services", "status")
    assert after.returncode == 1 and "DOWN" in after.stdout
