"""What the batch manifests cost the ledger worker (issue 17: "beyond noise"?).

A broker of its own on free ports of 127.0.0.1, one ledger worker, and a backlog of
``--transfers`` transfers (the workload's mix: duplicates, conflicts, overdrafts, hostile
records) published as fast as the publisher goes; the figure is transfers per second from the
first record published to the last answer seen. The same run is made for each tree given
with ``--tree`` (a checkout of paystream: ``git worktree add /tmp/before <commit>``), in turn,
``--rounds`` times, each in a process of its own with that tree's package first on the path,
so the commit before the manifests and the one with them run on the same machine in the same
minutes.

    .venv/bin/python bench/manifest_cost.py --tree before=/tmp/before --tree after=/tmp/after \\
        [--transfers 20000] [--rounds 3] [--output bench/results/manifest_cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

RUN_TIMEOUT_S = 900.0


def one_run(transfers: int) -> dict[str, Any]:
    """In this process: a broker, one worker, the backlog; transfers per second."""
    from paystream import workload
    from paystream.runner import TRAFFIC_TIMEOUT_S, running
    from paystream.services.kafka import start_on_free_ports
    from paystream.settings import Settings

    with tempfile.TemporaryDirectory(prefix="bench-manifest-") as directory:
        home = Path(directory)
        broker = start_on_free_ports(home / "kafka")
        try:
            settings = Settings(environment="test", data_dir=home / "data",
                                kafka_bootstrap=broker.bootstrap, kafka_security="plaintext",
                                topic_prefix="bench")  # fmt: skip
            with running(settings, workers=1, log_dir=home / "logs") as platform:
                mix = replace(workload.Mix(accounts=2_000, transfers=transfers),
                              partitions=settings.partitions)  # fmt: skip
                load = workload.build(seed=17, mix=mix, run_id="cost",
                                      now_ms=int(time.time() * 1000))  # fmt: skip
                if platform.run_setup(load):
                    raise RuntimeError("setup commands without an answer")
                started = time.monotonic()
                platform.publish_paced(load, per_second=1_000_000).join()
                if platform.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S):
                    raise RuntimeError("traffic without answers")
                seconds = time.monotonic() - started
        finally:
            broker.stop()
    import paystream

    return {"transfers": transfers, "seconds": seconds, "per_s": transfers / seconds,
            "package": str(Path(paystream.__file__).parent)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="name=path, in run order")
    parser.add_argument("--transfers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("bench/results/manifest_cost.json"))
    parser.add_argument("--one-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_run:
        print(json.dumps(one_run(args.transfers)))
        return
    trees = dict(item.split("=", 1) for item in args.tree)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    load = os.getloadavg()[0]
    for round_number in range(1, args.rounds + 1):
        for name, tree in trees.items():
            found = _run_in(Path(tree), args.transfers)
            runs[name].append(found)
            print(f"round {round_number} {name:<8} {found['per_s']:8,.0f} transfers/s "
                  f"({found['seconds']:.1f} s)", flush=True)  # fmt: skip
    summary = {
        name: {"median_per_s": statistics.median(r["per_s"] for r in found),
               "min_per_s": min(r["per_s"] for r in found),
               "max_per_s": max(r["per_s"] for r in found)}
        for name, found in runs.items()
    }  # fmt: skip
    for name, figures in summary.items():
        print(f"{name:<8} median {figures['median_per_s']:,.0f} transfers/s "
              f"(min {figures['min_per_s']:,.0f}, max {figures['max_per_s']:,.0f})")  # fmt: skip
    result = {
        "command": "python bench/manifest_cost.py " + " ".join(f"--tree {t}" for t in args.tree)
        + f" --transfers {args.transfers} --rounds {args.rounds}",
        "machine": {"cores": os.cpu_count(), "python": host.python_version()},
        "load_average_1m_at_start": load, "load_average_1m_at_end": os.getloadavg()[0],
        "runs": runs, "summary": summary,
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.output}")


def _run_in(tree: Path, transfers: int) -> dict[str, Any]:
    """One run in a child process importing paystream from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}  # ahead of the installed package
    done = subprocess.run(
        [sys.executable, __file__, "--one-run", "--transfers", str(transfers)],
        env=env, cwd=tree, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=True,
    )  # fmt: skip
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(found["package"]).resolve().parent != tree.resolve():
        raise RuntimeError(f"ran {found['package']}, not the tree {tree}")
    return found


if __name__ == "__main__":
    main()
