"""Latency at fixed offered load (issue 18, scenario 2): command -> ``Completed`` through the
crash-safe ledger workers as shipped (2 worker processes, 8 partitions), honest transfers
uniform over 10,000 funded accounts, offered at 500, 1,000 and 2,000 payments/s.

A broker of its own on free ports of 127.0.0.1, topics of their own, the accounts opened
and funded; then, per offered load and in turn, ``rate x duration`` transfers published on
a fixed schedule (``bench.consistency.PacedPublisher``: a chunk every 50 ms, a late chunk
catches up), and every answer awaited before the next load starts.

**What is timed** (``bench.answers``): from the transfer's record timestamp on ``commands``
(LogAppendTime: the broker's clock when it appended the command, so the command was in
Kafka and readable by the workers; the publisher's own linger is not counted, and a
command is stamped when it arrives whether or not the workers keep up, so a backlog is
counted, not hidden) to

- **produced**: the ``Completed`` event's record timestamp (CreateTime: the worker's
  producer stamped it inside its transaction, before the commit), the figure issue 18
  names; and
- **readable**: the moment a read_committed consumer of this process first read it, after
  the worker's transaction committed: what a client waiting for the answer (the API's
  ``Prefer: wait``) can see first. This is the figure to hold against a target; it
  includes the transaction's commit and this consumer's fetch.

Both ends are on this machine's one clock. Achieved: transfers / (last answer produced -
first command in Kafka). A load above what the machine sustains shows as an achieved rate
under 90% of the offered one or a backlog at the end (last answer - last command > 1 s):
the table says "not sustained", its latency grows with the backlog for as long as the
load lasts, and its percentiles describe that run's length, not a steady state.

**Through the REST API** (``POST /v1/payments`` with ``Prefer: wait``): measured by
``bench.api_latency`` (its own platform with Keycloak, Postgres, a sink and API
processes). Its result files, when present, are summarised here at run time: the API
saturated far below these loads when they were measured, so running it at 500-2,000/s
would only measure its queue.

    .venv/bin/python -m bench.latency [--rates 500 1000 2000] [--duration-s 20]
        [--accounts 10000] [--quiet-load 2.0] [--output bench/results/latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench import machine
from bench.answers import (
    WORKERS,
    Answer,
    Answers,
    answers_of,
    command_times,
    end_offsets,
    latencies,
    platform,
    worker_usage,
)
from bench.consistency import PacedPublisher, Usage, md_table, setup, wait_quiet
from bench.report import command_line, machine_line, pyplot, write_result
from bench.saga import PARTITIONS, honest_mix
from paystream import workload
from paystream.ledger import Transfer
from paystream.runner import Platform
from paystream.services.kafka import start_on_free_ports

__all__ = [
    "above_capacity",
    "cores",
    "main",
    "markdown",
    "offered_load",
    "plots",
    "quiet_line",
    "run",
    "warmup_line",
]

RESULTS: Final = Path(__file__).parent / "results" / "latency.json"
API_RESULTS: Final = (
    Path(__file__).parent / "results" / "api_latency.json",
    Path(__file__).parent / "results" / "api_latency_quiet.json",
)
RATES: Final = (500, 1_000, 2_000)
DURATION_S: Final = 20
WARMUP_S: Final = 5.0
"""The first seconds of each load are published and answered but not in its percentiles:
each load starts with a transient (the first second's latency is several times the fifth's
in the runs of 1 Dec 2026), and the target is about the load, not its start."""
BROKER_WARMUP_S: Final = 45
BROKER_WARMUP_RATE: Final = 1_000
"""Before the measured loads, an untimed one at this rate for BROKER_WARMUP_S: a broker in
service has compiled its hot code, a fresh one has not. 30 s after a fresh broker started,
49 % of its CPU was its JIT compiler (C2; perf, cpu-clock), and over three 15 s loads of
500/s in a row its cores fell from 1.39 to 1.31 to 0.94 and the readable P99 from 1,120 to
536 to 446 ms (1 Dec 2026)."""
ACCOUNTS: Final = 10_000
SEED: Final = 18
TARGET_RATE: Final = 1_000
TARGET_P99_MS: Final = 100.0
"""Issue 18: P99 command -> Completed under 100 ms at 1,000 payments/s."""
ANSWER_SLACK_S: Final = 300.0
ANSWERED_PER_S_MIN: Final = 200
"""A load must be answered within its transfers at this rate (or its schedule, if slower)
plus ``ANSWER_SLACK_S``; then the run fails."""
PUBLISH_SLACK_S: Final = 120.0
QUIET_WAIT_MAX_S: Final = 120.0
SETTLE_S: Final = 2.0
"""Between two loads: the workers' last batches and the broker's flushes."""
BACKLOG_FLAG_S: Final = 1.0
ACHIEVED_FLAG_SHARE: Final = 0.9
"""A load is above what the machine sustained when its last answer came more than
``BACKLOG_FLAG_S`` after its last command, or it achieved under this share of its offer."""


def offered_load(
    p: Platform, home: Path, answers: Answers, traffic: Sequence[Transfer], *,
    per_second: int, label: str, warmup_s: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
    """Publish ``traffic`` at ``per_second`` and await every answer: latencies (of the
    commands after the first ``warmup_s``), rates and the CPU each role used (from the first
    publish to the last answer)."""
    ids = [t.command_id for t in traffic]
    commands_start = end_offsets(p.kafka.bootstrap, p.topics.commands, PARTITIONS)
    usage = worker_usage(p, home)
    before = usage.snapshot()
    publisher = PacedPublisher(p, traffic, per_second)
    publisher.start()
    timeout_s = len(ids) / min(per_second, ANSWERED_PER_S_MIN) + ANSWER_SLACK_S
    found = answers.wait(ids, timeout_s=timeout_s, label=label)
    publisher.join(PUBLISH_SLACK_S)
    used = Usage.since(before, usage.snapshot())
    commands_ms = command_times(p, commands_start, set(ids))
    if missing := len(ids) - len(commands_ms):
        raise RuntimeError(f"{missing} commands not found on {p.topics.commands}")
    return {
        "offered_per_s": per_second, **_rates(commands_ms, found),
        **latencies(commands_ms, found, warmup_ms=int(warmup_s * 1000)), "usage": used,
        "worker_cpu_ms_per_payment": 1000 * used["workers"].get("cpu_s", 0.0) / len(ids),
    }  # fmt: skip


def _rates(commands_ms: dict[str, int], found: dict[str, Answer]) -> dict[str, Any]:
    count = len(commands_ms)
    first_ms, last_ms = min(commands_ms.values()), max(commands_ms.values())
    answered_ms = max(a.produced_ms for a in found.values())
    return {
        "transfers": count,
        "published_per_s": count / max(0.001, (last_ms - first_ms) / 1000),
        "achieved_per_s": count / max(0.001, (answered_ms - first_ms) / 1000),
        "backlog_at_end_s": (answered_ms - last_ms) / 1000,
    }


def above_capacity(load: dict[str, Any]) -> bool:
    return bool(
        load["backlog_at_end_s"] > BACKLOG_FLAG_S
        or load["achieved_per_s"] < ACHIEVED_FLAG_SHARE * load["offered_per_s"]
    )


def run(
    *, rates: Sequence[int], duration_s: int, accounts: int, warmup_s: float = WARMUP_S,
    quiet_load: float | None = None, broker_warmup_s: int = BROKER_WARMUP_S,
) -> dict[str, Any]:  # fmt: skip
    quiet = None if quiet_load is None else wait_quiet(quiet_load, QUIET_WAIT_MAX_S)
    load_1m = os.getloadavg()[0]
    started = time.monotonic()
    loads: list[dict[str, Any]] = []
    broker_warmup: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as directory:
        home = Path(directory)
        broker = start_on_free_ports(home / "kafka")
        try:
            with platform(broker.bootstrap, home, name="latency", partitions=PARTITIONS) as p:
                warming = BROKER_WARMUP_RATE * broker_warmup_s
                mix = honest_mix(accounts=accounts, transfers=sum(rates) * duration_s + warming,
                                 distribution="uniform")  # fmt: skip
                built = workload.build(seed=SEED, mix=mix, run_id="latency",
                                       now_ms=int(time.time() * 1000))  # fmt: skip
                setup(p, built)
                traffic = [t for t in built.traffic if isinstance(t, Transfer)]
                with answers_of(p) as answers:
                    if warming:
                        warm, traffic = traffic[:warming], traffic[warming:]
                        broker_warmup = offered_load(
                            p, home, answers, warm, per_second=BROKER_WARMUP_RATE,
                            label="broker warm-up",
                        )  # fmt: skip
                    for rate in rates:
                        mine, traffic = traffic[: rate * duration_s], traffic[rate * duration_s :]
                        found = offered_load(p, home, answers, mine, per_second=rate,
                                             label=f"{rate:,}/s", warmup_s=warmup_s)  # fmt: skip
                        _show(found)
                        loads.append(found)
                        time.sleep(SETTLE_S)
        finally:
            broker.stop()
    return {
        "command": f"python -m bench.latency --rates {' '.join(map(str, rates))} "
        f"--duration-s {duration_s} --warmup-s {warmup_s:g} --accounts {accounts}"
        f" --broker-warmup-s {broker_warmup_s}"
        + ("" if quiet_load is None else f" --quiet-load {quiet_load}"),
        "quiet": quiet,
        "machine": machine.facts(load_average_1m_at_start=round(load_1m, 2)),
        "accounts": accounts, "duration_s": duration_s, "warmup_s": warmup_s,
        "partitions": PARTITIONS,
        "workers": WORKERS, "loads": loads, "wall_s": round(time.monotonic() - started, 1),
        "broker_warmup_s": broker_warmup_s, "broker_warmup": broker_warmup,
        "api": api_summaries(API_RESULTS),
    }  # fmt: skip


def _show(load: dict[str, Any]) -> None:
    r, q = load["readable"], load["produced"]
    print(f"{load['offered_per_s']:>6,}/s offered: {load['achieved_per_s']:,.0f}/s achieved, "
          f"readable P50/P99 {r['p50_ms']:,.0f}/{r['p99_ms']:,.0f} ms, produced P50/P99 "
          f"{q['p50_ms']:,.0f}/{q['p99_ms']:,.0f} ms, backlog at end "
          f"{load['backlog_at_end_s']:.1f} s, worker CPU {load['worker_cpu_ms_per_payment']:.2f}"
          " ms/payment", flush=True)  # fmt: skip


# --- the REST API's figures (bench.api_latency's result files) --------------------------


def api_summaries(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Each of ``bench.api_latency``'s result files that exists, its phases in brief."""
    found = []
    for path in paths:
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        phases = [
            {"run": r["run"], "apis": p["apis"], "offered_per_s": p["offered_per_s"],
             "achieved_per_s": p["achieved_per_s"], **p["latency"], "status": p["status"]}
            for r in data["runs"] for p in r["phases"]
        ]  # fmt: skip
        written = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
        found.append({
            "file": f"bench/results/{path.name}", "command": data["command"],
            "written_at": written.strftime("%Y-%m-%d %H:%M UTC"), "phases": phases,
        })  # fmt: skip
    return found


# --- report -----------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def cores(usage: dict[str, Any]) -> str:
    """Cores the broker and every process not ours used on average over a load: what the
    workers competed with (the machine has ``os.cpu_count()``)."""
    seconds = max(0.001, usage["seconds"])
    kafka_s = usage.get("kafka", {}).get("cpu_s", 0.0)
    return f"{kafka_s / seconds:.2f} / {max(0.0, usage['others_cpu_s']) / seconds:.2f}"


def _loads_table(loads: Sequence[dict[str, Any]]) -> str:
    header = ["offered/s", "published/s", "achieved/s", "transfers",
              "readable P50 / P95 / P99 / max ms", "produced P50 / P95 / P99 / max ms",
              "worker CPU ms/payment", "cores used: broker / others", "note",
              "warm-up readable P99 ms"]  # fmt: skip
    rows = []
    for load in loads:
        r, q = load["readable"], load["produced"]
        note = (f"**not sustained**: last answer {load['backlog_at_end_s']:.1f} s after the last"
                " command; latency grew with the backlog" if above_capacity(load)
                else "sustained")  # fmt: skip
        rows.append([
            f"{load['offered_per_s']:,}", f"{load['published_per_s']:,.0f}",
            f"{load['achieved_per_s']:,.0f}", f"{load['transfers']:,}",
            " / ".join(_ms(r[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")),
            " / ".join(_ms(q[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")),
            f"{load['worker_cpu_ms_per_payment']:.2f}", cores(load["usage"]), note,
            _ms(load["warmup"]["readable"]["p99_ms"]) if load.get("warmup") else "-",
        ])  # fmt: skip
    return md_table(header, rows, left=0)


def _target(loads: Sequence[dict[str, Any]]) -> str:
    at = [x for x in loads if x["offered_per_s"] == TARGET_RATE]
    if not at:
        return f"The target (P99 < {TARGET_P99_MS:.0f} ms at {TARGET_RATE:,}/s) was not run."
    p99 = at[0]["readable"]["p99_ms"]
    verdict = "met" if p99 < TARGET_P99_MS else "not met"
    return (f"Target of issue 18, P99 command -> Completed < {TARGET_P99_MS:.0f} ms at "
            f"{TARGET_RATE:,} payments/s: **{verdict}** (readable P99 {_ms(p99)} ms; produced "
            f"P99 {_ms(at[0]['produced']['p99_ms'])} ms).")  # fmt: skip


def _api_section(api: Sequence[dict[str, Any]]) -> list[str]:
    if not api:
        return ["Through the REST API (`Prefer: wait`): no `bench.api_latency` result file was"
                " present at run time; run `python -m bench.api_latency`."]  # fmt: skip
    most = max(p["achieved_per_s"] for found in api for p in found["phases"])
    parts = [
        "Through the REST API (`POST /v1/payments`, `Prefer: wait=5`, open loop): the figures"
        " of `bench/api_latency.py` (its own run with Keycloak, Postgres, a sink and 1 or 2 API"
        " processes; latency from each request's scheduled start to its response), copied"
        " from its result files as they were when this run ended. The API answered at most"
        f" {most:,.0f} requests/s in them; above its capacity a run measures its own queue, so"
        " `bench.latency` does not drive the API at its own loads (`python -m bench.api_latency"
        " --rate 500 1000 2000` would, once the API can take them).",
    ]
    for found in api:
        rows = [
            [str(p["run"]), str(p["apis"]), f"{p['offered_per_s']:,}",
             f"{p['achieved_per_s']:,.0f}", _ms(p["p50_ms"]), _ms(p["p95_ms"]),
             _ms(p["p99_ms"]), f"{p['status'].get('201', 0):,}", f"{p['status'].get('202', 0):,}"]
            for p in found["phases"]
        ]  # fmt: skip
        header = ["run", "API processes", "offered/s", "achieved/s", "P50 ms", "P95 ms",
                  "P99 ms", "201", "202"]  # fmt: skip
        parts += ["", f"`{found['file']}` (written {found['written_at']}): `{found['command']}`",
                  "", md_table(header, rows, left=0)]  # fmt: skip
    return parts


DEFINITION: Final = (
    "Honest transfers, uniform over {accounts:,} funded accounts, 8 partitions, 2 worker"
    " processes (crash-safe, as shipped), each load published on a fixed schedule for"
    " {duration_s} s; the percentiles are of the transfers after its first {warmup_s:g} s"
    " (the warm-up's own P99 is in the last column). Latency starts at the transfer's record"
    " timestamp on `commands` (LogAppendTime: the broker appended it; a backlog is counted,"
    " not hidden) and ends either at the `Completed` event's record timestamp (**produced**:"
    " the worker's producer stamped it inside its transaction, before the commit) or when a"
    " read_committed consumer first read it (**readable**: after the commit; what a client"
    " waiting for the answer sees first, the figure to hold against a target). Achieved:"
    " transfers / (last answer - first command); a load is not sustained when that is under"
    " 90% of the offer or its last answer came over 1 s after its last command. Worker CPU:"
    " CPU seconds of both worker processes over the load, per transfer. Cores used: CPU"
    " seconds per second over the load of the broker, and of every process that is not"
    " this benchmark's (other work on the machine). An answer is"
    " `Completed`, or `Rejected` for the rare transfer the workload draws to its own account"
    " (a handful in 10,000)."
)


SHARED: Final = (
    "The broker, the workers and this benchmark share these cores, and so did whatever else"
    " ran on the machine then (the figures are as noisy as that was)."
)


def quiet_line(result: dict[str, Any]) -> list[str]:
    """What waiting for a quiet machine (``--quiet-load``) found, if the run waited."""
    quiet = result.get("quiet")
    if not quiet:
        return []
    verdict = "reached" if quiet["quiet"] else "not reached; the run went ahead"
    return [f"Waited {quiet['waited_s']:.0f} s for a quiet machine ({verdict}; 1-minute load"
            f" average {quiet['loadavg_1m']:.2f} then).", ""]  # fmt: skip


def warmup_line(result: dict[str, Any]) -> list[str]:
    warm = result.get("broker_warmup")
    if not warm:
        return ["The broker was not warmed up first (a fresh broker spends much of its CPU "
                "compiling its own code for its first minute).", ""]  # fmt: skip
    return [f"First, untimed, {result['broker_warmup_s']} s at {warm['offered_per_s']:,}/s "
            f"warmed up the fresh broker (its JIT compiler); the broker and everything else "
            f"used {cores(warm['usage'])} cores then.", ""]  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    """The scenario's section of docs/benchmarks.md."""
    return "\n".join([
        "### Latency at fixed offered load", "",
        DEFINITION.format(accounts=result["accounts"], duration_s=result["duration_s"],
                          warmup_s=result.get("warmup_s", 0)), "",
        *warmup_line(result),
        _loads_table(result["loads"]), "", _target(result["loads"]), "",
        *quiet_line(result),
        *_api_section(result.get("api", [])), "",
        f"{command_line(result)} ({result['wall_s']:.0f} s).", "",
        f"{machine_line(result['machine'])} {SHARED}",
    ])  # fmt: skip


def plots(result: dict[str, Any], img_dir: Path) -> list[Path]:
    """Percentiles per offered load; P50 and P99 over each load's seconds."""
    plt = pyplot()
    img_dir.mkdir(parents=True, exist_ok=True)
    loads = result["loads"]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    labels = [f"{x['offered_per_s']:,}/s" for x in loads]
    for offset, key in ((-0.25, "p50_ms"), (0.0, "p95_ms"), (0.25, "p99_ms")):
        values = [x["readable"][key] for x in loads]
        axes.bar([i + offset for i in range(len(loads))], values, width=0.25,
                 label=key[:3].upper())  # fmt: skip
    axes.axhline(TARGET_P99_MS, color="tab:red", linestyle="--", linewidth=1,
                 label=f"target P99 at {TARGET_RATE:,}/s")  # fmt: skip
    axes.set_xticks(range(len(loads)), labels)
    axes.set_yscale("log")
    axes.set_ylim(bottom=1)
    axes.set_ylabel("command -> Completed readable, ms")
    axes.set_xlabel("offered load")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    percentiles = img_dir / "bench-latency-percentiles.png"
    figure.savefig(percentiles, dpi=110, bbox_inches="tight")
    plt.close(figure)
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for x in loads:
        seconds = [w["start_s"] for w in x["windows"]]
        line = axes.plot(seconds, [w["readable_p99_ms"] for w in x["windows"]],
                         label=f"{x['offered_per_s']:,}/s P99")[0]  # fmt: skip
        axes.plot(seconds, [w["readable_p50_ms"] for w in x["windows"]], linestyle="--",
                  color=line.get_color(), label=f"{x['offered_per_s']:,}/s P50")  # fmt: skip
    axes.set_yscale("log")
    axes.set_xlabel("seconds into the load (command time)")
    axes.set_ylabel("command -> Completed readable, ms")
    axes.legend(fontsize="small")
    over_time = img_dir / "bench-latency-over-time.png"
    figure.savefig(over_time, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return [percentiles, over_time]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="bench.latency",
        description="Latency at fixed offered load (issue 18): command -> Completed through "
        "the ledger workers at paced loads.",
    )
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES),
                        help="offered payments/s, one load each, in turn")  # fmt: skip
    parser.add_argument("--duration-s", type=int, default=DURATION_S)
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=WARMUP_S,
        help="the first seconds of each load, left out of its percentiles",
    )
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument(
        "--broker-warmup-s", type=int, default=BROKER_WARMUP_S,
        help=f"an untimed load at {BROKER_WARMUP_RATE:,}/s first, this long (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--quiet-load", type=float, default=None,
        help="first wait (2 min at most) for a 1-minute load average under it",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(rates=args.rates, duration_s=args.duration_s, accounts=args.accounts,
                 warmup_s=args.warmup_s, quiet_load=args.quiet_load,
                 broker_warmup_s=args.broker_warmup_s)  # fmt: skip
    print(markdown(result))
    write_result(args.output, result)


if __name__ == "__main__":
    main()
