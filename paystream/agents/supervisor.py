"""Worker processes: start, kill, stop, and keep one running (restart on crash).

``supervise`` restarts a worker that exits on its own, with exponential backoff,
within a restart budget per sliding window; when the budget is spent it gives up
loudly (why on stderr, a metric, a non-zero exit code) instead of crash-looping.
The decision is the pure ``RestartPolicy.decide`` so tests drive it with fake times.

Metrics use prometheus_client's multiprocess mode: every process of a family
writes to one directory, and prometheus_client picks file-backed values only if
``PROMETHEUS_MULTIPROC_DIR`` is set before it is first imported. This module
therefore imports it lazily, and ``prepare_metrics_dir`` / ``export_metrics_to``
use the standard library only.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from paystream.ledger.errors import InvariantViolation, ensure
from paystream.services.process import tail

STOP_TIMEOUT_S = 60.0
RESTARTS_PER_WINDOW_MAX = 10
RESTART_WINDOW_S = 300.0
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0  # a run this long resets the backoff to BACKOFF_INITIAL_S
EXIT_HISTORY_MAX = 64  # runs remembered; bounds the window count and the backoff streak
STOP_POLL_S = 0.1  # a backoff sleeps in steps this long so SIGTERM cuts it short
GIVE_UP_LOG_LINES = 20
GIVE_UP_CODES_MAX = 10
EXIT_GAVE_UP = 1
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, kw_only=True)
class Run:
    """One life of a child: when it started and exited (monotonic seconds), its exit code."""

    started_at_s: float
    exited_at_s: float
    code: int


@dataclass(frozen=True, kw_only=True)
class Restart:
    delay_s: float


@dataclass(frozen=True, kw_only=True)
class GiveUp:
    exits_in_window: int
    codes: tuple[int, ...]  # the last GIVE_UP_CODES_MAX exit codes in the window, oldest first


@dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    """A restart budget per sliding window and a capped exponential backoff (pure)."""

    restarts_per_window_max: int = RESTARTS_PER_WINDOW_MAX
    window_s: float = RESTART_WINDOW_S
    backoff_initial_s: float = BACKOFF_INITIAL_S
    backoff_max_s: float = BACKOFF_MAX_S
    healthy_after_s: float = HEALTHY_AFTER_S

    def __post_init__(self) -> None:
        ensure(
            0 <= self.restarts_per_window_max < EXIT_HISTORY_MAX,
            f"restarts_per_window_max must be in [0, {EXIT_HISTORY_MAX})",
        )
        ensure(self.window_s > 0, "window_s must be positive")
        ensure(0 < self.backoff_initial_s <= self.backoff_max_s, "0 < backoff initial <= max")
        ensure(self.healthy_after_s > 0, "healthy_after_s must be positive")

    def decide(self, runs: Sequence[Run], *, now_s: float) -> Restart | GiveUp:
        """After the last of ``runs`` exited: restart after a delay, or give up.

        Gives up when more than ``restarts_per_window_max`` exits fall within the
        last ``window_s``: restarting again would exceed the budget.
        """
        ensure(len(runs) > 0, "decide needs the run that just exited")
        newest_first = list(itertools.islice(reversed(runs), EXIT_HISTORY_MAX))
        recent = [run for run in newest_first if now_s - run.exited_at_s < self.window_s]
        if len(recent) > self.restarts_per_window_max:
            codes = tuple(run.code for run in reversed(recent[:GIVE_UP_CODES_MAX]))
            return GiveUp(exits_in_window=len(recent), codes=codes)
        return Restart(delay_s=self.backoff_s(newest_first))

    def backoff_s(self, newest_first: Sequence[Run]) -> float:
        """Initial delay doubled per short run in a row (since the last healthy one), capped."""
        streak = 0
        for run in newest_first[:EXIT_HISTORY_MAX]:
            if run.exited_at_s - run.started_at_s >= self.healthy_after_s:
                break
            streak += 1
        return min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** max(streak - 1, 0))


DEFAULT_RESTART_POLICY = RestartPolicy()


def prepare_metrics_dir(path: Path) -> Path:
    """Wipe and create a prometheus_client multiprocess directory; return it (absolute)."""
    directory = path.resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def export_metrics_to(path: Path) -> Path:
    """Make a fresh ``path`` this process's (and its children's) multiprocess directory.

    Must run before prometheus_client is imported: it chooses file-backed values
    at import time, and metrics made before would silently stay in this process.
    """
    ensure(
        "prometheus_client" not in sys.modules,
        "export_metrics_to must run before prometheus_client is imported",
    )
    directory = prepare_metrics_dir(path)
    os.environ[METRICS_DIR_ENV] = str(directory)
    return directory


@dataclass
class WorkerProcess:
    """One ``paystream.agents.worker`` child with its own name and log file.

    ``metrics_dir`` makes the child export its metrics there (multiprocess mode);
    ``command`` replaces the worker's command line (tests run stand-ins).
    """

    name: str
    env: dict[str, str]
    log_file: Path
    metrics_dir: Path | None = field(default=None, kw_only=True)
    command: tuple[str, ...] | None = field(default=None, kw_only=True)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def argv(self) -> list[str]:
        if self.command is not None:
            return list(self.command)
        level = self.env.get("PAYSTREAM_WORKER_LOG_LEVEL", "warn")
        module = "paystream.agents.worker"
        return [sys.executable, "-m", module, "--name", self.name, "--log-level", level]

    def child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        if self.metrics_dir is not None:
            env[METRICS_DIR_ENV] = str(self.metrics_dir)
        return env

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.metrics_dir is not None:
            self.metrics_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv(),
                env=self.child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self) -> int:
        """Wait for the child to exit; its exit code (negative: killed by that signal)."""
        if self.process is None:
            raise InvariantViolation(f"worker {self.name} was never started")
        return self.process.wait()

    def mark_dead(self) -> None:
        """Drop an exited child's live gauges from the metrics directory."""
        if self.metrics_dir is None or self.process is None or self.alive:
            return
        from prometheus_client import multiprocess

        # prometheus_client.multiprocess has no annotations
        multiprocess.mark_process_dead(self.process.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]

    def send(self, signum: int) -> None:
        """Send ``signum`` if the child runs, without waiting (safe in a signal handler)."""
        if self.process is not None and self.alive:
            self.process.send_signal(signum)

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


class _StopFlag:
    """Set by SIGTERM/SIGINT (a plain flag: safe to set from a signal handler)."""

    def __init__(self) -> None:
        self.requested = False

    def sleep(self, delay_s: float) -> None:
        """Sleep ``delay_s`` in steps of STOP_POLL_S; return early once stop is requested."""
        steps = max(1, round(delay_s / STOP_POLL_S))
        for _ in range(steps):
            if self.requested:
                return
            time.sleep(delay_s / steps)


def _install_stop_handlers(worker: WorkerProcess) -> _StopFlag:
    """SIGTERM/SIGINT: pass SIGTERM on, and SIGKILL the child STOP_TIMEOUT_S later.

    The handlers only send signals: waiting in one would deadlock with the main
    thread's ``wait()``, which holds the child's lock while it waits.
    """
    stop = _StopFlag()

    def on_stop(_signum: int, _frame: object) -> None:
        if not stop.requested:
            signal.setitimer(signal.ITIMER_REAL, STOP_TIMEOUT_S)
        stop.requested = True
        worker.send(signal.SIGTERM)

    def on_stop_timeout(_signum: int, _frame: object) -> None:
        worker.send(signal.SIGKILL)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGALRM, on_stop_timeout)
    return stop


def _run_once(worker: WorkerProcess, stop: _StopFlag, clock: Callable[[], float]) -> Run:
    started_at_s = clock()
    worker.start()
    if stop.requested:  # the signal may have come before this child existed
        worker.send(signal.SIGTERM)
    code = worker.wait()
    worker.mark_dead()
    return Run(started_at_s=started_at_s, exited_at_s=clock(), code=code)


def give_up_report(worker: WorkerProcess, give_up: GiveUp, policy: RestartPolicy) -> str:
    """Why the supervisor stops: counts, exit codes and the tail of the worker's log."""
    codes = ", ".join(str(code) for code in give_up.codes)
    log_tail = tail(worker.log_file, lines=GIVE_UP_LOG_LINES) or "(empty)"
    return (
        f"worker {worker.name}: giving up: {give_up.exits_in_window} exits within "
        f"{policy.window_s:g}s (budget: {policy.restarts_per_window_max} restarts per "
        f"{policy.window_s:g}s); last exit codes: {codes}\n"
        f"--- last {GIVE_UP_LOG_LINES} lines of {worker.log_file} ---\n{log_tail}\n"
        f"--- end of {worker.log_file} ---"
    )


def supervise(
    worker: WorkerProcess,
    *,
    policy: RestartPolicy = DEFAULT_RESTART_POLICY,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run ``worker`` until SIGTERM/SIGINT (returns 0); restart it whenever it exits on its own.

    Returns EXIT_GAVE_UP once ``policy`` gives up. The loop has no count limit of
    its own: the policy bounds it to ``restarts_per_window_max`` per window.
    Call ``export_metrics_to`` first for the supervisor's metrics to be exported.
    """
    stop = _install_stop_handlers(worker)
    try:
        return _restart_until_stopped(worker, stop, policy=policy, clock=clock)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)  # a pending SIGKILL timer is moot now


def _restart_until_stopped(
    worker: WorkerProcess,
    stop: _StopFlag,
    *,
    policy: RestartPolicy,
    clock: Callable[[], float],
) -> int:
    from paystream.agents import metrics

    metrics.SUPERVISOR_GAVE_UP.labels(worker=worker.name).set(0)
    runs: deque[Run] = deque(maxlen=EXIT_HISTORY_MAX)
    while not stop.requested:
        run = _run_once(worker, stop, clock)
        metrics.SUPERVISOR_LAST_EXIT_CODE.labels(worker=worker.name).set(run.code)
        if stop.requested:
            break
        runs.append(run)
        decision = policy.decide(runs, now_s=clock())
        if isinstance(decision, GiveUp):
            metrics.SUPERVISOR_GAVE_UP.labels(worker=worker.name).set(1)
            print(give_up_report(worker, decision, policy), file=sys.stderr, flush=True)
            return EXIT_GAVE_UP
        print(
            f"worker {worker.name} exited with {run.code}; restarting in {decision.delay_s:g}s",
            file=sys.stderr,
            flush=True,
        )
        stop.sleep(decision.delay_s)
        if not stop.requested:
            metrics.SUPERVISOR_RESTARTS.labels(worker=worker.name).inc()
    return 0


def supervisor_command(name: str) -> tuple[str, ...]:
    """``paystream worker --name <name>``: a supervisor that runs and restarts one worker."""
    return (sys.executable, "-m", "paystream.cli", "worker", "--name", name, "--metrics-port", "0")


def sink_command(name: str) -> tuple[str, ...]:
    """``paystream sink postgres --name <name>``: one copy of the Postgres sink."""
    cli = (sys.executable, "-m", "paystream.cli")
    return (*cli, "sink", "postgres", "--name", name, "--metrics-port", "0")


class WorkerGroup:
    """Several workers in one consumer group (demo, tests, benchmarks).

    With ``metrics_dir`` (see ``prepare_metrics_dir``) every worker exports its
    metrics to that one multiprocess directory; read them with
    ``paystream.agents.metrics.collect_text``. ``command`` gives each process's
    command line by name instead of a bare worker's: :func:`supervisor_command`
    (``paystream worker``: a supervisor and its worker child) or
    :func:`sink_command`; those export to ``<data dir>/metrics/<name>``.
    """

    def __init__(
        self,
        *,
        count: int,
        env: dict[str, str],
        log_dir: Path,
        prefix: str,
        metrics_dir: Path | None = None,
        command: Callable[[str], tuple[str, ...]] | None = None,
    ) -> None:
        self.metrics_dir = metrics_dir
        names = [f"{prefix}-{i + 1}" for i in range(count)]
        self.workers = [
            WorkerProcess(
                name,
                env,
                log_dir / (f"{name}.log" if command is None else f"{name}.out.log"),
                metrics_dir=metrics_dir if command is None else None,
                command=None if command is None else command(name),
            )
            for name in names
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
            worker.mark_dead()

    def restart_dead(self) -> int:
        """Start every worker that is not running (what a supervisor does)."""
        dead = [worker for worker in self.workers if not worker.alive]
        for worker in dead:
            worker.mark_dead()
            worker.start()
        return len(dead)
