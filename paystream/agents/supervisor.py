"""Worker processes: start, kill, stop, and keep one running (restart on crash)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

STOP_TIMEOUT_S = 60.0
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
RESTARTS_MAX = 100


@dataclass
class WorkerProcess:
    """One ``paystream.agents.worker`` child with its own name and log file."""

    name: str
    env: dict[str, str]
    log_file: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "paystream.agents.worker",
                    "--name",
                    self.name,
                    "--log-level",
                    self.env.get("PAYSTREAM_WORKER_LOG_LEVEL", "warn"),
                ],
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash the design must survive."""
        if self.process is not None and self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: a stalled worker (GC pause, frozen VM) that its group gives up on."""
        if self.process is not None and self.alive:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: the stalled worker carries on where it was, as a zombie."""
        if self.process is not None and self.alive:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM and wait: the worker finishes its batch and leaves the group."""
        if self.process is None or not self.alive:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()


def supervise(worker: WorkerProcess) -> int:
    """Run ``worker`` until SIGTERM/SIGINT; restart it whenever it exits on its own."""
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for restart in range(RESTARTS_MAX + 1):
        worker.start()
        code = worker.process.wait() if worker.process is not None else -1
        if stopping:
            return 0
        backoff = RESTART_BACKOFF_S[min(restart, len(RESTART_BACKOFF_S) - 1)]
        print(f"worker {worker.name} exited with {code}; restarting in {backoff}s", flush=True)
        time.sleep(backoff)
    print(f"worker {worker.name}: {RESTARTS_MAX} restarts, giving up", flush=True)
    return 1


class WorkerGroup:
    """Several workers in one consumer group (demo, tests, benchmarks)."""

    def __init__(self, *, count: int, env: dict[str, str], log_dir: Path, prefix: str) -> None:
        self.workers = [
            WorkerProcess(f"{prefix}-{i + 1}", env, log_dir / f"{prefix}-{i + 1}.log")
            for i in range(count)
        ]

    def __enter__(self) -> WorkerGroup:
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def restart_dead(self) -> int:
        """Start every worker that is not running (what a supervisor does)."""
        dead = [worker for worker in self.workers if not worker.alive]
        for worker in dead:
            worker.start()
        return len(dead)
