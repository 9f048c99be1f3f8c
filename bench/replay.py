"""Replay throughput (issue 17: >= 50,000 commands/s, the core alone with decoding).

A broker of its own on free ports of 127.0.0.1 and one ledger worker record a log: the
workload's mix of ``--transfers`` transfers (duplicates, conflicts, overdrafts, hostile
records). The log is read once (timed), then, ``--runs`` times each, in this process:

- **engine**: ``paystream replay``'s batch loop (decode, core, encode every output, digest
  each batch against its manifest, chain the journal), then the comparison (timed apart);
- **core with decoding**: the same batches decoded by the shared shell and run through
  ``process_batch`` only -- the issue's figure.

``--profile`` adds a cProfile run of the engine and prints its top functions.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.backlog import publish_and_wait, set_up
from paystream.audit.replay import read_log, replay_log
from paystream.audit.replay_log import DirectoryReplica, RecordedLog
from paystream.ledger import Account, IdempotencyKey, IdempotencyRecord, process_batch
from paystream.runner import Platform, running
from paystream.runtime import fewer_collections
from paystream.services.kafka import start_on_free_ports
from paystream.settings import Settings
from paystream.topology.shell import Shell

PROFILE_ROWS = 25


def record_log(platform: Platform, transfers: int) -> None:
    load = set_up(platform, transfers, seed=17, run_id="replay")
    publish_and_wait(platform, load, per_second=1_000_000)


def one_replay(log: RecordedLog, shell: Shell) -> dict[str, Any]:
    started = time.monotonic()
    report = replay_log(log, shell)
    if not report.ok:
        raise RuntimeError(f"the replay does not match:\n{report.summary()}")
    return {
        "batches": report.batches, "inputs": report.inputs, "commands": report.commands,
        "loop_s": report.seconds, "inputs_per_s": report.inputs / report.seconds,
        "commands_per_s": report.commands_per_s, "total_s": time.monotonic() - started,
        "journal_sha256": report.journal_sha256,
    }  # fmt: skip


def core_with_decoding(log: RecordedLog, shell: Shell) -> dict[str, Any]:
    """Every batch decoded and run through the core, in each partition's order."""
    inputs = commands = 0
    seconds = 0.0
    for partition, placed in sorted(log.manifests.items()):
        state = _CoreState()
        directory = DirectoryReplica(log.directory)
        for found in placed:
            manifest = found.manifest
            messages = [m for run in manifest.runs for m in log.inputs.run(
                run.topic, partition, run.first_offset, run.last_offset)]  # fmt: skip
            seen = directory.at(manifest.directory)
            started = time.perf_counter()
            decoded = shell.decode(partition, messages)
            result = process_batch(
                decoded.deliveries, partition=partition, accounts=state.accounts,
                idempotency=state.idempotency, directory=seen, clock_ms=state.clock_ms,
                rules=manifest.rules,
            )  # fmt: skip
            state.accounts.update(result.accounts)
            state.idempotency.update(result.idempotency)
            state.clock_ms = result.clock_ms
            seconds += time.perf_counter() - started
            inputs += len(messages)
            commands += sum(1 for run in manifest.runs if run.topic == "commands"
                            for _ in range(run.records))  # fmt: skip
    return {"inputs": inputs, "commands": commands, "seconds": seconds,
            "inputs_per_s": inputs / seconds, "commands_per_s": commands / seconds}  # fmt: skip


@dataclass
class _CoreState:
    accounts: dict[str, Account] = field(default_factory=dict)
    idempotency: dict[IdempotencyKey, IdempotencyRecord] = field(default_factory=dict)
    clock_ms: int = 0


def profiled(log: RecordedLog, shell: Shell) -> str:
    profile = cProfile.Profile()
    profile.enable()
    replay_log(log, shell)
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(PROFILE_ROWS)
    return out.getvalue()


def _show(number: int, found: dict[str, Any], core: dict[str, Any]) -> None:
    print(
        f"  run {number}: engine {found['inputs']:,} inputs in {found['loop_s']:.1f} s = "
        f"{found['inputs_per_s']:,.0f} inputs/s, {found['commands_per_s']:,.0f} commands/s "
        f"(with comparing {found['total_s']:.1f} s); core with decoding "
        f"{core['commands_per_s']:,.0f} commands/s ({core['inputs_per_s']:,.0f} inputs/s)",
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
                kafka_security="plaintext", topic_prefix="bench-replay",
            )  # fmt: skip
            with running(settings, workers=1, log_dir=home / "logs") as platform:
                record_log(platform, args.transfers)
                started = time.monotonic()
                log = read_log(platform.kafka, platform.topics, platform.serde)
                read_s = time.monotonic() - started
                shell = Shell(topics=platform.topics, serde=platform.serde)
            print(f"recorded {args.transfers:,} transfers, read the log in {read_s:.1f} s; "
                  "replaying ...", flush=True)  # fmt: skip
            runs, cores = [], []
            for number in range(1, args.runs + 1):
                with fewer_collections():  # as paystream replay runs
                    runs.append(one_replay(log, shell))
                    cores.append(core_with_decoding(log, shell))
                _show(number, runs[-1], cores[-1])
            with fewer_collections():
                top = profiled(log, shell) if args.profile else None
        finally:
            broker.stop()
    if top is not None:
        print(top)
    result = {
        "command": f"python -m bench.replay --transfers {args.transfers} --runs {args.runs}"
        + (" --profile" if args.profile else ""),
        "machine": {"cores": os.cpu_count(), "python": host.python_version()},
        "load_average_1m_at_start": load, "read_log_s": read_s, "runs": runs,
        "core_with_decoding": cores,
        "median_commands_per_s": statistics.median(r["commands_per_s"] for r in runs),
        "median_inputs_per_s": statistics.median(r["inputs_per_s"] for r in runs),
        "median_core_commands_per_s": statistics.median(c["commands_per_s"] for c in cores),
        "digests_equal": len({r["journal_sha256"] for r in runs}) == 1, "profile": top,
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
