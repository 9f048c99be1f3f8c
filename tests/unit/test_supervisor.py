"""The supervisor: restart budget per window, capped backoff, giving up loudly, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paystream.agents import metrics
from paystream.agents.supervisor import (
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    DEFAULT_RESTART_POLICY,
    HEALTHY_AFTER_S,
    METRICS_DIR_ENV,
    RESTART_WINDOW_S,
    RESTARTS_PER_WINDOW_MAX,
    GiveUp,
    Restart,
    RestartPolicy,
    Run,
    WorkerGroup,
    WorkerProcess,
    prepare_metrics_dir,
)
from paystream.ledger.errors import InvariantViolation

SUPERVISOR_TIMEOUT_S = 60.0


def crashes(*exited_at_s: float, run_s: float = 1.0, code: int = 3) -> list[Run]:
    """Short runs (each ``run_s`` long) that exited at the given times."""
    return [Run(started_at_s=t - run_s, exited_at_s=t, code=code) for t in exited_at_s]


# --- the pure policy, with fake times -------------------------------------------------


def test_production_defaults() -> None:
    policy = DEFAULT_RESTART_POLICY
    assert policy.restarts_per_window_max == RESTARTS_PER_WINDOW_MAX == 10
    assert policy.window_s == RESTART_WINDOW_S == 300.0
    assert (policy.backoff_initial_s, policy.backoff_max_s) == (BACKOFF_INITIAL_S, BACKOFF_MAX_S)
    assert policy.healthy_after_s == HEALTHY_AFTER_S


def test_budget_allows_max_restarts_within_the_window_then_gives_up() -> None:
    policy = RestartPolicy(restarts_per_window_max=3, window_s=100.0)
    runs = crashes(10.0, 20.0, 30.0)
    assert isinstance(policy.decide(runs, now_s=30.0), Restart)
    runs += crashes(40.0, code=7)
    decision = policy.decide(runs, now_s=40.0)
    assert decision == GiveUp(exits_in_window=4, codes=(3, 3, 3, 7))


def test_exits_older_than_the_window_do_not_count() -> None:
    policy = RestartPolicy(restarts_per_window_max=3, window_s=100.0)
    runs = crashes(10.0, 20.0, 30.0, 115.0)
    # at 115 the exit at 10 is 105 s old: three exits in the window, a restart is allowed
    assert isinstance(policy.decide(runs, now_s=115.0), Restart)
    assert isinstance(policy.decide(runs, now_s=105.0), GiveUp)


def test_zero_budget_gives_up_on_the_first_exit() -> None:
    policy = RestartPolicy(restarts_per_window_max=0)
    assert policy.decide(crashes(5.0), now_s=5.0) == GiveUp(exits_in_window=1, codes=(3,))


def test_give_up_reports_at_most_the_last_ten_codes() -> None:
    policy = RestartPolicy(restarts_per_window_max=12, window_s=1000.0)
    runs = [Run(started_at_s=t - 1, exited_at_s=t, code=int(t)) for t in range(1, 15)]
    decision = policy.decide(runs, now_s=14.0)
    assert decision == GiveUp(exits_in_window=14, codes=tuple(range(5, 15)))


def test_backoff_doubles_per_short_run_and_is_capped() -> None:
    policy = RestartPolicy(
        restarts_per_window_max=50, window_s=1.0, backoff_initial_s=0.5, backoff_max_s=30.0
    )
    delays = [policy.backoff_s(list(reversed(crashes(*range(1, n + 1))))) for n in range(1, 10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    # exits spread wider than the window never spend the budget, but the delay stays capped
    runs = crashes(*[float(100 * n) for n in range(1, 40)])
    assert policy.decide(runs, now_s=3900.0) == Restart(delay_s=30.0)


def test_a_healthy_run_resets_the_backoff() -> None:
    policy = RestartPolicy(window_s=10.0, backoff_initial_s=0.5, healthy_after_s=60.0)
    short = crashes(100.0, 200.0, 300.0, 400.0)
    assert policy.decide(short, now_s=400.0) == Restart(delay_s=4.0)
    healthy = [*short, Run(started_at_s=400.0, exited_at_s=460.0, code=1)]
    assert policy.decide(healthy, now_s=460.0) == Restart(delay_s=0.5)
    after = [*healthy, *crashes(500.0, 600.0)]
    assert policy.decide(after, now_s=600.0) == Restart(delay_s=1.0)


def test_a_long_history_is_bounded() -> None:
    policy = RestartPolicy(window_s=1e9, restarts_per_window_max=63)
    runs = crashes(*[float(n) for n in range(1, 10_001)])
    decision = policy.decide(runs, now_s=10_000.0)
    assert decision == GiveUp(exits_in_window=64, codes=(3,) * 10)


@pytest.mark.parametrize(
    "options",
    [
        {"restarts_per_window_max": -1},
        {"restarts_per_window_max": 64},
        {"window_s": 0.0},
        {"backoff_initial_s": 0.0},
        {"backoff_initial_s": 2.0, "backoff_max_s": 1.0},
        {"healthy_after_s": 0.0},
    ],
)
def test_policy_refuses_nonsense(options: dict[str, float]) -> None:
    with pytest.raises(InvariantViolation):
        RestartPolicy(**options)  # type: ignore[arg-type]


def test_decide_needs_a_run() -> None:
    with pytest.raises(InvariantViolation):
        DEFAULT_RESTART_POLICY.decide([], now_s=0.0)


# --- processes: metrics directory wiring -------------------------------------------------


def test_worker_process_passes_its_metrics_dir(tmp_path: Path) -> None:
    directory = prepare_metrics_dir(tmp_path / "m")
    worker = WorkerProcess("w", {"A": "1"}, tmp_path / "w.log", metrics_dir=directory)
    env = worker.child_env()
    assert env[METRICS_DIR_ENV] == str(directory)
    assert env["A"] == "1"
    assert worker.argv()[1:4] == ["-m", "paystream.agents.worker", "--name"]


def test_prepare_metrics_dir_wipes(tmp_path: Path) -> None:
    directory = prepare_metrics_dir(tmp_path / "m")
    (directory / "counter_1.db").write_bytes(b"old")
    assert list(prepare_metrics_dir(tmp_path / "m").iterdir()) == []


def test_worker_group_gives_every_worker_one_metrics_dir(tmp_path: Path) -> None:
    directory = prepare_metrics_dir(tmp_path / "m")
    group = WorkerGroup(count=2, env={}, log_dir=tmp_path, prefix="w", metrics_dir=directory)
    assert [w.metrics_dir for w in group.workers] == [directory, directory]
    plain = WorkerGroup(count=1, env={}, log_dir=tmp_path, prefix="w")
    assert plain.workers[0].metrics_dir is None


# --- a real supervisor process ---------------------------------------------------------

# Runs the supervisor in its own process: the metrics directory must be set before
# prometheus_client is imported, which this test process has done long ago.
SUPERVISOR_SCRIPT = """
import sys
from pathlib import Path
from paystream.agents.supervisor import (
    RestartPolicy, WorkerProcess, export_metrics_to, supervise,
)
metrics_dir, log_file, child_code, budget, backoff_s = sys.argv[1:6]
directory = export_metrics_to(Path(metrics_dir))
child = (sys.executable, "-c", child_code)
worker = WorkerProcess("flaky", {}, Path(log_file), metrics_dir=directory, command=child)
policy = RestartPolicy(
    restarts_per_window_max=int(budget), window_s=60.0,
    backoff_initial_s=float(backoff_s), backoff_max_s=float(backoff_s) * 2,
)
sys.exit(supervise(worker, policy=policy))
"""
CRASH = "import sys; print('boom: ledger on fire', flush=True); sys.exit(3)"
RUN_UNTIL_TERM = "import time; print('ready', flush=True); time.sleep(60)"


def start_supervisor(
    tmp_path: Path, *, child_code: str, budget: int, backoff_s: float
) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if key != METRICS_DIR_ENV}
    argv = [str(tmp_path / "metrics"), str(tmp_path / "flaky.log"), child_code]
    return subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR_SCRIPT, *argv, str(budget), str(backoff_s)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sample(text: str, name: str) -> float:
    """The value of one sample line (``name`` with its labels) in Prometheus text."""
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, text
    return float(values[0])


def test_gives_up_after_the_budget_says_why_and_exports_it(tmp_path: Path) -> None:
    supervisor = start_supervisor(tmp_path, child_code=CRASH, budget=2, backoff_s=0.01)
    _out, err = supervisor.communicate(timeout=SUPERVISOR_TIMEOUT_S)

    assert supervisor.returncode != 0
    assert "worker flaky: giving up: 3 exits within 60s" in err
    assert "last exit codes: 3, 3, 3" in err
    assert "boom: ledger on fire" in err  # the tail of the worker's log
    assert str(tmp_path / "flaky.log") in err
    text = metrics.collect_text(tmp_path / "metrics")
    assert sample(text, 'paystream_supervisor_gave_up{worker="flaky"}') == 1.0
    assert sample(text, 'paystream_supervisor_restarts_total{worker="flaky"}') == 2.0
    assert sample(text, 'paystream_supervisor_last_exit_code{worker="flaky"}') == 3.0


def wait_for_log_line(path: Path, line: str, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and line in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{line!r} never appeared in {path}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_running_worker_and_exits_zero(tmp_path: Path, signum: int) -> None:
    supervisor = start_supervisor(tmp_path, child_code=RUN_UNTIL_TERM, budget=2, backoff_s=0.01)
    wait_for_log_line(tmp_path / "flaky.log", "ready", timeout_s=SUPERVISOR_TIMEOUT_S)
    supervisor.send_signal(signum)
    _out, err = supervisor.communicate(timeout=SUPERVISOR_TIMEOUT_S)
    assert supervisor.returncode == 0, err
    assert "giving up" not in err


def test_sigterm_cuts_a_backoff_short(tmp_path: Path) -> None:
    supervisor = start_supervisor(tmp_path, child_code=CRASH, budget=5, backoff_s=30.0)
    assert supervisor.stderr is not None
    notice = supervisor.stderr.readline()  # the child crashed: now in a 30 s backoff
    assert "exited with 3; restarting in 30s" in notice
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    supervisor.communicate(timeout=SUPERVISOR_TIMEOUT_S)
    assert supervisor.returncode == 0
    assert time.monotonic() - started < 5.0
    text = metrics.collect_text(tmp_path / "metrics")
    assert sample(text, 'paystream_supervisor_gave_up{worker="flaky"}') == 0.0
