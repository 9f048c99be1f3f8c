"""Replay throughput (issue 17: >= 50,000 commands/s, the core alone with decoding).

A broker of its own on free ports of 127.0.0.1 and one ledger worker record a log: the
workload's mix of ``--transfers`` transfers (duplicates, conflicts, overdrafts, hostile
records). Then ``paystream replay``'s engine runs over it ``--runs`` times in this process;
the figure is inputs and commands per second of the batch loop (reading the topics and the
comparison are timed apart). ``--profile`` adds a cProfile run and prints its top functions.

    .venv/bin/python -m bench.replay [--transfers 20000] [--runs 3] [--profile]
        [--output bench/results/replay.json]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform as host
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.backlog import publish_and_wait, set_up
from paystream.audit.replay import replay
from paystream.runner import Platform, running
from paystream.services.kafka import start_on_free_ports
from paystream.settings import Settings

PROFILE_ROWS = 25


def record_log(platform: Platform, transfers: int) -> None:
    load = set_up(platform, transfers, seed=17, run_id="replay")
    publish_and_wait(platform, load, per_second=1_000_000)


def one_replay(platform: Platform) -> dict[str, Any]:
    started = time.monotonic()
    report = replay(platform.bootstrap, platform.topics, platform.serde)
    if not report.ok:
        raise RuntimeError(f"the replay does not match:\n{report.summary()}")
    return {
        "batches": report.batches, "inputs": report.inputs, "commands": report.commands,
        "loop_s": report.seconds, "inputs_per_s": report.inputs / report.seconds,
        "commands_per_s": report.commands_per_s, "total_s": time.monotonic() - started,
        "journal_sha256": report.journal_sha256,
    }  # fmt: skip


def profiled(platform: Platform) -> str:
    profile = cProfile.Profile()
    profile.enable()
    replay(platform.bootstrap, platform.topics, platform.serde)
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(PROFILE_ROWS)
    return out.getvalue()


def _show(number: int, found: dict[str, Any]) -> None:
    print(
        f"  run {number}: {found['inputs']:,} inputs in {found['loop_s']:.1f} s = "
        f"{found['inputs_per_s']:,.0f} inputs/s, {found['commands_per_s']:,.0f} commands/s "
        f"(with reading and comparing {found['total_s']:.1f} s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--output", type=Path, default=Path("bench/results/replay.json"))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as directory:
        home = Path(directory)
        broker = start_on_free_ports(home / "kafka")
        try:
            settings = Settings(
                environment="test", data_dir=home / "data", kafka_bootstrap=broker.bootstrap,
                topic_prefix="bench-replay",
            )  # fmt: skip
            with running(settings, workers=1, log_dir=home / "logs") as platform:
                record_log(platform, args.transfers)
                print(f"recorded {args.transfers:,} transfers; replaying ...", flush=True)
                runs = []
                for number in range(1, args.runs + 1):
                    runs.append(one_replay(platform))
                    _show(number, runs[-1])
                top = profiled(platform) if args.profile else None
        finally:
            broker.stop()
    if top is not None:
        print(top)
    result = {
        "command": f"python -m bench.replay --transfers {args.transfers} --runs {args.runs}"
        + (" --profile" if args.profile else ""),
        "machine": {"cores": os.cpu_count(), "python": host.python_version()},
        "load_average_1m_at_start": load, "runs": runs,
        "median_commands_per_s": statistics.median(r["commands_per_s"] for r in runs),
        "median_inputs_per_s": statistics.median(r["inputs_per_s"] for r in runs),
        "digests_equal": len({r["journal_sha256"] for r in runs}) == 1, "profile": top,
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
