"""``paystream analytics`` as a child process of a test: start, SIGKILL, stop, ask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from paystream.analytics import remote
from paystream.cli.up import answers
from paystream.runner import Platform, child_env
from paystream.services.process import free_port, wait_until

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


def analytics_env(running: Platform, issuer: str, chdb: Path) -> dict[str, str]:
    """The environment of an analytics process of ``running``'s platform, on its own embedded
    ClickHouse directory ``chdb``, taking tokens from ``issuer``."""
    return {
        **os.environ,
        **child_env(running.settings, log_level="info"),
        "PAYSTREAM_CLICKHOUSE_URL": f"chdb://{chdb}", "PAYSTREAM_OIDC_ISSUER": issuer,
    }  # fmt: skip


class AnalyticsProcess:
    """One analytics process on its own embedded ClickHouse directory."""

    def __init__(self, env: dict[str, str], *, log_file: Path, extra: tuple[str, ...] = ()) -> None:
        self.env = env
        self.log_file = log_file
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._extra = extra
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "paystream.cli", "analytics", "--port", str(self.port),
                   *self._extra]  # fmt: skip
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        if not wait_until(self._answers, timeout_s=START_TIMEOUT_S):
            raise AssertionError(f"analytics did not answer:\n{self.log()}")

    def _answers(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(f"analytics exited with {self._process.returncode}:\n{self.log()}")
        return answers(self.url)

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(STOP_TIMEOUT_S)
            self._process = None

    def stop(self) -> int:
        """SIGTERM: the sink finishes its batch, the server stops; the exit code."""
        if self._process is None:
            return 0
        self._process.send_signal(signal.SIGTERM)
        code = self._process.wait(STOP_TIMEOUT_S)
        self._process = None
        return code

    def get(self, path: str, token: str, **params: Any) -> Any:
        return remote.get(self.url, path, token, **params)

    def wait_caught_up(self, token: str, group: str, *, timeout_s: float) -> Any:
        """The lag report once ``group`` has stored every record (fails the test at the
        timeout, with the process's log)."""
        report = remote.wait_caught_up(self.url, token, group, timeout_s=timeout_s)
        if report is None:
            raise AssertionError(f"the analytics sink did not catch up:\n{self.log()}")
        return report

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-6_000:] if self.log_file.exists() else ""


COUNT_SCRIPT = """
import json, sys
import clickhouse_connect
client = clickhouse_connect.get_client(dsn=sys.argv[1])
db = sys.argv[2]
found = {}
for table, key in (("events", "event_id"), ("ledger_lines", "(entry_id, line_no)"),
                   ("dead_letters", "(dlq_partition, dlq_offset)"), ("balances", "account_id")):
    final, distinct = client.query(
        f"SELECT count(), uniqExact({key}) FROM {db}.{table} FINAL").result_rows[0]
    found[table] = {"final": int(final), "distinct": int(distinct)}
from paystream.analytics import queries
found["tallies_tile"] = queries.tallies_tile(client, db)
print(json.dumps(found))
"""


def stored_counts(dsn: str, database: str) -> dict[str, Any]:
    """Rows per table as the dashboard sees them (FINAL) and distinct ids, and whether the
    tallies tile, read by a process of its own (one embedded engine per process; run it
    after the analytics process stops)."""
    result = subprocess.run(
        [sys.executable, "-c", COUNT_SCRIPT, dsn, database], capture_output=True, text=True,
        timeout=STOP_TIMEOUT_S, env=os.environ.copy(), check=True,
    )  # fmt: skip
    found: dict[str, Any] = json.loads(result.stdout)
    return found
