"""``make bench`` (issue 18): every scenario, one at a time, then the report.

    .venv/bin/python -m bench.harness [--only NAME [NAME ...]] [--report-only]

Each scenario is a module ``bench/<name>.py`` with

- ``main()``: a command line (argparse) that measures and writes
  ``bench/results/<name>.json``, a dict with at least ``"command"`` (the exact command
  line that reproduces it) and ``"machine"`` (``bench.machine.facts(...)``);
- ``markdown(result) -> str``: a markdown fragment that starts with a ``### `` heading:
  tables of the figures, the exact command in a code span, the machine line;
- ``plots(result, img_dir) -> list[Path]``: PNG files (matplotlib, Agg), maybe none.

The harness runs ``python -m bench.<name> <SCENARIOS[name]>`` as a subprocess per
scenario, in the order of ``SCENARIOS``, with a progress line for each (the scenarios
draw their own tqdm bars), at most ``SCENARIO_TIMEOUT_S`` each. A scenario that fails
(exit status, missing module, timeout) is reported and the others still run; the harness
then exits non-zero. Last, ``python -m bench.report`` rewrites the generated section of
docs/benchmarks.md from every result that exists.

The budget: the whole run under 15 minutes on the quiet 2-core development machine. The
saga and the passthrough and Postgres baselines take about 5.5 of them together (measured
and extrapolated beside each entry), which leaves about 9.5 for latency, growth and faust,
whose owners size them. Other benchmarks on the same cores make every scenario slower.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["SCENARIOS", "main", "run_scenario"]

ROOT: Final = Path(__file__).resolve().parent.parent


def _argv(line: str) -> tuple[str, ...]:
    return tuple(shlex.split(line))


SCENARIOS: Final[dict[str, tuple[str, ...]]] = {
    # 1 and 2 workers x uniform and Zipf over 10,000 accounts, a broker of its own. Measured
    # 2026-12-01: 309 s at these sizes under a load average of 7-14 from other benchmarks
    # (143 s of it timed, at 317-1,319 payments/s), 131 s with 4,000 transfers; quiet
    # (about 1,000-1,300 payments/s): about 160 s.
    # Its broker is warmed up first by an untimed scenario (--broker-warmup-transfers 16000):
    # 91 s in all on 1 Dec 2026, quiet.
    "saga": _argv("--transfers 16000 --accounts 10000 --workers 1 2 --distribution uniform zipf"),
    # P50/P95/P99 command -> Completed at 500, 1,000 and 2,000 payments/s offered, 20 s each,
    # the first 5 s of each left out. Measured: 212 s under load (every load fell behind);
    # about 2 minutes quiet.
    # First 45 s at 1,000/s, untimed, warm the fresh broker's JIT compiler up.
    "latency": _argv(
        "--rates 500 1000 2000 --duration-s 20 --warmup-s 5 --accounts 10000 --broker-warmup-s 45"
    ),
    # Cost against size: 10^3, 10^4, 10^5 accounts, and the 10^3 platform again after 10,000
    # more transfers grew its idempotency store, after 45 s warming the broker up; floods of
    # 20,000 transfers (5,000 gave a CPU figure per payment that moved 2x between sizes).
    # Measured quiet: 196 s. 10^6 accounts run on their own (bench.growth.LARGE_RESULTS,
    # 388 s); this run carries their rows.
    "growth": _argv(
        "--sizes 1000 10000 100000 --transfers 20000 --paced-rate 500 --paced-s 8 --warmup-s 3"
        " --prior-transfers 10000 --store-accounts 1000 --broker-warmup-s 45"
    ),
    # The wire profile (500 transfers), then the passthrough with 1 and 2 processes. Measured:
    # 106 s with 10,000 payments under load (18 s of it timed); 20,000: about 100-125 s.
    "baseline_passthrough": _argv("--payments 20000 --processes 1 2 --profile-transfers 500"),
    # Uniform and Zipf, 8 connections; at most 30 s of waiting for a quiet machine (the
    # default waits up to 15 minutes). Measured: 75 s with 4,000 transfers under load
    # (250 transfers/s); 10,000: about 70 s quiet (800-900/s), 150 s under load.
    "baseline_postgres": _argv(
        "--accounts 10000 --transfers 10000 --connections 8 --distribution both"
        " --quiet-wait-s-max 30"
    ),
    # A faust-streaming agent, exactly-once mode, 1 and 2 processes (throughput only; 2
    # processes fail: faust sends through the target partition's transactional producer,
    # which only its owner holds). Measured: 64 s quiet, 113 s under load.
    "baseline_faust": _argv("--transfers 2000 --accounts 10000 --processes 1 2"),
}
"""Scenario -> the arguments ``make bench`` passes to ``python -m bench.<name>``."""

SCENARIO_TIMEOUT_S: Final = 600.0
"""A scenario still running after this long is interrupted and counts as failed."""
INTERRUPT_GRACE_S: Final = 60.0
"""After SIGINT (its ``finally`` blocks stop its broker or database), this long before
SIGKILL."""
REPORT_TIMEOUT_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    seconds: float
    problem: str | None
    """None: the scenario wrote its result."""


def command(name: str) -> list[str]:
    return [sys.executable, "-m", f"bench.{name}", *SCENARIOS[name]]


def run_scenario(name: str, *, position: str) -> Outcome:
    """``python -m bench.<name> ...`` in the repository, its output passed through."""
    started = time.monotonic()
    shown = shlex.join(["python", "-m", f"bench.{name}", *SCENARIOS[name]])
    print(f"==> [{position}] {name}: {shown}", flush=True)
    if importlib.util.find_spec(f"bench.{name}") is None:
        return _finished(name, started, f"bench/{name}.py does not exist (yet)", position)
    # Its own process group: a timeout interrupts the scenario and whatever it spawned.
    process = subprocess.Popen(command(name), cwd=ROOT, start_new_session=True)
    try:
        returncode = process.wait(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _interrupt(process)
        return _finished(name, started, f"timed out after {SCENARIO_TIMEOUT_S:.0f} s", position)
    except KeyboardInterrupt:
        _interrupt(process)
        raise
    problem = None if returncode == 0 else f"exit status {returncode}"
    return _finished(name, started, problem, position)


def _interrupt(process: subprocess.Popen[bytes]) -> None:
    """SIGINT to the scenario's process group, SIGKILL if it is still there after the
    grace period."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=INTERRUPT_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _finished(name: str, started: float, problem: str | None, position: str) -> Outcome:
    outcome = Outcome(name, time.monotonic() - started, problem)
    verdict = "ok" if problem is None else f"FAILED: {problem}"
    print(f"==> [{position}] {name}: {verdict} ({outcome.seconds:.0f} s)", flush=True)
    return outcome


def run_report() -> str | None:
    """``python -m bench.report``; the problem, if it failed."""
    print("==> report: docs/benchmarks.md's generated section, docs/img/", flush=True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.report"], cwd=ROOT, check=False, timeout=REPORT_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return f"the report timed out after {REPORT_TIMEOUT_S:.0f} s"
    return None if done.returncode == 0 else f"the report failed: exit status {done.returncode}"


def summary(outcomes: Sequence[Outcome]) -> str:
    lines = [f"{'scenario':<22} {'seconds':>8}  result"]
    for outcome in outcomes:
        verdict = "ok" if outcome.problem is None else f"FAILED: {outcome.problem}"
        lines.append(f"{outcome.name:<22} {outcome.seconds:>8.0f}  {verdict}")
    lines.append(f"{'total':<22} {sum(o.seconds for o in outcomes):>8.0f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"run these scenarios only (of {', '.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run no scenario: only regenerate the report from the results",
    )
    args = parser.parse_args(argv)
    chosen = [] if args.report_only else [n for n in SCENARIOS if n in (args.only or SCENARIOS)]
    outcomes = [
        run_scenario(name, position=f"{i}/{len(chosen)}") for i, name in enumerate(chosen, start=1)
    ]
    report_problem = run_report()
    if outcomes:
        print(summary(outcomes), flush=True)
    failed = [o.name for o in outcomes if o.problem is not None]
    if failed:
        print(f"failed scenarios: {', '.join(failed)}", file=sys.stderr)
    if report_problem is not None:
        print(report_problem, file=sys.stderr)
    if failed or report_problem is not None:
        sys.exit(1)


if __name__ == "__main__":
    main()
