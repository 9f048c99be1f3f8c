"""Cost against size (issue 18, scenario 3): payments/s, P99 command -> ``Completed`` and the
workers' CPU seconds per payment with 10^3, 10^4, 10^5 (and, on request, 10^6) accounts,
and with a large idempotency store. The claim checked: the cost per payment stays flat
(within 20%).

A broker of its own on free ports of 127.0.0.1. Per size, topics of their own and 2 worker
processes as shipped (8 partitions, crash-safe): every account opened and funded through
the workers (timed: commands/s and worker CPU per command), then the same measurement at
every size, on honest transfers uniform over the accounts (``bench.saga.honest_mix``):

- **paced**: ``--paced-rate`` transfers/s for ``--paced-s`` s (below what the machine
  sustains): P50/P99 command -> Completed (``bench.latency.offered_load``; produced =
  the event's record timestamp, readable = after the worker's commit; both from the
  command's LogAppendTime on ``commands``, see ``bench.answers``);
- **flood**: ``--transfers`` transfers published at once: payments/s from the first
  command in Kafka to the last answer (as ``bench.saga``), and the CPU seconds of both
  worker processes over it per payment, the cost figure (CPU seconds are less disturbed
  by other work on a shared machine than wall-clock rates are, though not immune:
  contended caches and CPUs make every instruction dearer).

Before each measurement the idempotency store is counted: live keys (rows of the
idempotency changelog whose last value is not a tombstone, less the expiry index and
clock rows), and the bytes of the workers' RocksDB directories on disk (memtables not yet
flushed are not in them). The store grows with the accounts too: opening and funding an
account are 2 commands of 2 keys each (the request id and the command id's claim, each
kept for the retention window), so 10^5 accounts start with 400,000 keys.

**A large idempotency store.** Keys expire after ``Settings.idempotency_retention_s``
(7 days as shipped) of log time, deleted by the workers through the expiry index
(``paystream.agents.processor``), so a store never holds a year: at steady state it holds
``retention x rate x keys per payment``; at 1,000 payments/s and 7 days that is
604,800,000 payments' keys (the report computes keys and bytes from the measured keys
per payment and bytes per key). A benchmark cannot write that in minutes, so this one
measures the slope: on the ``--store-accounts`` platform (by default 10^3 accounts, so
the store grows many times over while the accounts stay the same; the sizes' own rows grow
both), after its first measurement,
``--prior-transfers`` more transfers with distinct request ids (traffic the workers
process themselves; nothing is pre-filled), then the same measurement again against the
grown store. Nothing expires within a run at a 7-day window, so the cost of expiry
itself (deleting about as many rows per payment as it writes, at steady state) is not in
these figures.

**10^6 accounts.** Opening and funding them is 2,000,000 commands through the workers,
beyond the 15 minutes of ``make bench``; they run on their own (a few minutes):

    .venv/bin/python -m bench.growth --sizes 1000000 --prior-transfers 0 \
        --output bench/results/growth_large.json

and every later run of the default sizes carries that result's sizes as rows of its own
(``LARGE_RESULTS``; the command and the time it ran are reported beside them).

**The broker warms up first** (``--broker-warmup-s``): a fresh broker spends its first
minute compiling (its JIT), which the first size would otherwise pay for; an untimed load
on a platform of its own (1,000 accounts) runs before the sizes.

    .venv/bin/python -m bench.growth [--sizes 1000 10000 100000] [--transfers 5000]
        [--paced-rate 500] [--paced-s 8] [--warmup-s 3] [--prior-transfers 10000]
        [--store-accounts 1000] [--broker-warmup-s 45] [--quiet-load 2.0]
        [--output bench/results/growth.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench import machine
from bench.answers import WORKERS, Answers, answers_of, platform, worker_usage
from bench.consistency import PacedPublisher, Usage, md_table, wait_quiet
from bench.latency import (
    BROKER_WARMUP_RATE,
    BROKER_WARMUP_S,
    SETTLE_S,
    above_capacity,
    cores,
    offered_load,
    quiet_line,
    warmup_line,
)
from bench.report import command_line, machine_line, pyplot, write_result
from bench.saga import PARTITIONS, honest_mix
from paystream import workload
from paystream.ledger import Command, Transfer
from paystream.runner import Platform
from paystream.services.kafka import start_on_free_ports
from paystream.tables import codecs
from paystream.topology.reader import read_to_end

__all__ = ["main", "markdown", "plots", "run"]

RESULTS: Final = Path(__file__).parent / "results" / "growth.json"
LARGE_RESULTS: Final = RESULTS.with_name("growth_large.json")
"""The sizes run on their own (10^6 accounts), carried into every later run's result."""
WARMUP_ACCOUNTS: Final = 1_000
SIZES: Final = (1_000, 10_000, 100_000)
SIZES_ALLOWED: Final = (1_000, 10_000, 100_000, 1_000_000)
TRANSFERS: Final = 20_000
PACED_PER_S: Final = 500
PACED_S: Final = 8
WARMUP_S: Final = 3.0
"""The paced load's first seconds, left out of its percentiles (``bench.latency.WARMUP_S``)."""
PRIOR_TRANSFERS: Final = 10_000
STORE_ACCOUNTS: Final = 1_000
SEED: Final = 18
FLOOD_PER_S: Final = 10_000_000
"""Published as fast as the publisher goes (one chunk)."""
FLAT_RATIO_MAX: Final = 1.2
"""Issue 18: the cost per payment stays within 20% from the smallest size to the largest."""
REFERENCE_PER_S: Final = 1_000
"""The rate a real store's size is worked out for in the report."""
SETUP_PER_S_MIN: Final = 300
SETUP_SLACK_S: Final = 300.0
"""Opening and funding must go at least this fast, with this slack, or the run fails."""
QUIET_WAIT_MAX_S: Final = 120.0


# --- measurements -----------------------------------------------------------------------


def open_accounts(
    p: Platform, home: Path, answers: Answers, setup: Sequence[Command]
) -> dict[str, Any]:
    """Open and fund every account through the workers: wall seconds from the first
    publish to the last answer read, and the workers' CPU per command."""
    ids = [c.command_id for c in setup]
    usage = worker_usage(p, home)
    before = usage.snapshot()
    started = time.monotonic()
    publisher = PacedPublisher(p, setup, FLOOD_PER_S)
    publisher.start()
    timeout_s = len(ids) / SETUP_PER_S_MIN + SETUP_SLACK_S
    found = answers.wait(ids, timeout_s=timeout_s, label="open and fund")
    seconds = time.monotonic() - started
    publisher.join(SETUP_SLACK_S)
    used = Usage.since(before, usage.snapshot())
    if refused := sum(1 for a in found.values() if a.type != "Completed"):
        raise RuntimeError(f"{refused} setup commands refused")
    return {
        "commands": len(ids), "seconds": round(seconds, 2), "commands_per_s": len(ids) / seconds,
        "worker_cpu_ms_per_command": 1000 * used["workers"].get("cpu_s", 0.0) / len(ids),
        "usage": used,
    }  # fmt: skip


def store_size(p: Platform) -> dict[str, Any]:
    """Live idempotency keys (from the changelog: last value not a tombstone, index and
    clock rows left out) and the bytes of the workers' RocksDB directories."""
    live: dict[bytes, bool] = {}
    for message in read_to_end(p.kafka, p.topics.idempotency_changelog):
        key = message.key() or b""
        if key == codecs.CLOCK_KEY or key.startswith(codecs.EXPIRY_INDEX_PREFIX):
            continue
        live[key] = message.value() is not None
    files = [f for f in (p.settings.data_dir / "workers").rglob("*") if f.is_file()]
    return {
        "idempotency_keys": sum(live.values()),
        "store_bytes": sum(f.stat().st_size for f in files),
    }


def measure(
    p: Platform, home: Path, answers: Answers, traffic: Sequence[Transfer], *,
    paced_rate: int, paced_n: int, warmup_s: float, label: str,
) -> dict[str, Any]:  # fmt: skip
    """The store's size, then a paced load (latency) and a flood (payments/s, CPU)."""
    store = store_size(p)
    paced = offered_load(p, home, answers, traffic[:paced_n], per_second=paced_rate,
                         label=f"{label}: {paced_rate:,}/s", warmup_s=warmup_s)  # fmt: skip
    time.sleep(SETTLE_S)
    flood = offered_load(p, home, answers, traffic[paced_n:], per_second=FLOOD_PER_S,
                         label=f"{label}: flood")  # fmt: skip
    time.sleep(SETTLE_S)
    found = {"label": label, "store": store, "paced": paced, "flood": flood}
    _show(found)
    return found


def size_scenario(
    bootstrap: str, home: Path, *, accounts: int, transfers: int, paced_rate: int,
    paced_s: int, warmup_s: float, prior: int,
) -> dict[str, Any]:  # fmt: skip
    """One size on its own topics; with ``prior``, the grown-store measurement too."""
    paced_n = paced_rate * paced_s
    per_measure = paced_n + transfers
    total = per_measure * (2 if prior else 1) + prior
    started = time.monotonic()
    mix = honest_mix(accounts=accounts, transfers=total, distribution="uniform")
    built = workload.build(seed=SEED, mix=mix, run_id=f"growth-{accounts}",
                           now_ms=int(time.time() * 1000))  # fmt: skip
    build_s = time.monotonic() - started
    traffic = [t for t in built.traffic if isinstance(t, Transfer)]
    with (
        platform(bootstrap, home, name=f"growth-{accounts}", partitions=PARTITIONS) as p,
        answers_of(p) as answers,
    ):
        opened = open_accounts(p, home, answers, built.setup)
        print(f"{accounts:>9,} accounts opened and funded: {opened['commands']:,} commands "
              f"in {opened['seconds']:.1f} s = {opened['commands_per_s']:,.0f}/s")  # fmt: skip
        measures = [measure(p, home, answers, traffic[:per_measure], paced_rate=paced_rate,
                            paced_n=paced_n, warmup_s=warmup_s,
                            label=f"{accounts:,} accounts")]  # fmt: skip
        if prior:
            grown = offered_load(p, home, answers, traffic[per_measure : per_measure + prior],
                                 per_second=FLOOD_PER_S, label="prior traffic")  # fmt: skip
            measures.append(measure(p, home, answers, traffic[per_measure + prior :],
                                    paced_rate=paced_rate, paced_n=paced_n, warmup_s=warmup_s,
                                    label=f"{accounts:,} accounts + {prior:,} prior"))  # fmt: skip
            measures[-1]["prior"] = _brief(grown)
        retention_s = p.settings.idempotency_retention_s
    return {"accounts": accounts, "build_s": round(build_s, 1), "setup": opened,
            "measures": measures, "retention_s": retention_s}  # fmt: skip


def warm_up(bootstrap: str, home: Path, *, seconds: int) -> dict[str, Any]:
    """An untimed load on a platform of its own, so no size pays for the fresh broker's
    JIT compiler; what it achieved is reported."""
    warming = BROKER_WARMUP_RATE * seconds
    mix = honest_mix(accounts=WARMUP_ACCOUNTS, transfers=warming, distribution="uniform")
    built = workload.build(seed=SEED, mix=mix, run_id="growth-warmup",
                           now_ms=int(time.time() * 1000))  # fmt: skip
    traffic = [t for t in built.traffic if isinstance(t, Transfer)]
    with (
        platform(bootstrap, home, name="growth-warmup", partitions=PARTITIONS) as p,
        answers_of(p) as answers,
    ):
        open_accounts(p, home, answers, built.setup)
        return offered_load(p, home, answers, traffic, per_second=BROKER_WARMUP_RATE,
                            label="broker warm-up")  # fmt: skip


def _brief(load: dict[str, Any]) -> dict[str, Any]:
    keys = ("transfers", "achieved_per_s", "worker_cpu_ms_per_payment", "outcomes")
    return {k: load[k] for k in keys}


def _show(found: dict[str, Any]) -> None:
    paced, flood = found["paced"], found["flood"]
    print(f"{found['label']}: {found['store']['idempotency_keys']:,} idempotency keys; "
          f"flood {flood['achieved_per_s']:,.0f} payments/s, worker CPU "
          f"{flood['worker_cpu_ms_per_payment']:.2f} ms/payment; at {paced['offered_per_s']:,}/s"
          f" readable P99 {paced['readable']['p99_ms']:,.0f} ms", flush=True)  # fmt: skip


def run(
    *, sizes: Sequence[int], transfers: int, paced_rate: int, paced_s: int, prior: int,
    store_accounts: int, warmup_s: float = WARMUP_S, quiet_load: float | None = None,
    broker_warmup_s: int = BROKER_WARMUP_S,
) -> dict[str, Any]:  # fmt: skip
    if prior and store_accounts not in sizes:
        raise ValueError("--store-accounts must be one of --sizes")
    quiet = None if quiet_load is None else wait_quiet(quiet_load, QUIET_WAIT_MAX_S)
    load_1m = os.getloadavg()[0]
    started = time.monotonic()
    scenarios = []
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as directory:
        home = Path(directory)
        broker = start_on_free_ports(home / "kafka")
        try:
            warm = (
                warm_up(broker.bootstrap, home, seconds=broker_warmup_s)
                if broker_warmup_s
                else None
            )
            for size in sizes:
                scenarios.append(size_scenario(
                    broker.bootstrap, home, accounts=size, transfers=transfers,
                    paced_rate=paced_rate, paced_s=paced_s, warmup_s=warmup_s,
                    prior=prior if size == store_accounts else 0,
                ))  # fmt: skip
        finally:
            broker.stop()
    command = (
        f"python -m bench.growth --sizes {' '.join(map(str, sizes))} --transfers {transfers} "
        f"--paced-rate {paced_rate} --paced-s {paced_s} --warmup-s {warmup_s:g} "
        f"--prior-transfers {prior} "
        f"--store-accounts {store_accounts} --broker-warmup-s {broker_warmup_s}"
    ) + ("" if quiet_load is None else f" --quiet-load {quiet_load}")
    return {
        "command": command, "quiet": quiet,
        "machine": machine.facts(load_average_1m_at_start=round(load_1m, 2)),
        "partitions": PARTITIONS, "workers": WORKERS, "warmup_s": warmup_s,
        "broker_warmup_s": broker_warmup_s, "broker_warmup": warm,
        "retention_s": scenarios[0]["retention_s"],
        "scenarios": scenarios, "wall_s": round(time.monotonic() - started, 1),
    }  # fmt: skip


# --- report -----------------------------------------------------------------------------


def separate_runs(output: Path) -> list[dict[str, Any]]:
    """The result of the sizes run on their own (``LARGE_RESULTS``), unless this run is it."""
    if output.resolve() == LARGE_RESULTS.resolve() or not LARGE_RESULTS.exists():
        return []
    large = json.loads(LARGE_RESULTS.read_text())
    written = datetime.fromtimestamp(LARGE_RESULTS.stat().st_mtime, UTC)
    return [large | {"written": written.strftime("%Y-%m-%d %H:%M UTC")}]


def scenarios(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every size's scenario by accounts, this run's and those of ``separate_runs``."""
    own = {s["accounts"] for s in result["scenarios"]}
    carried = [s for run in result.get("separate", []) for s in run["scenarios"]
               if s["accounts"] not in own]  # fmt: skip
    return sorted(result["scenarios"] + carried, key=lambda s: int(s["accounts"]))


def _rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, measure) in order: every size's first measurement, then grown stores."""
    first = [(f"{s['accounts']:,}", s["measures"][0]) for s in scenarios(result)]
    grown = [(m["label"], m) for s in scenarios(result) for m in s["measures"][1:]]
    return first + grown


def _sizes(run: dict[str, Any]) -> str:
    return ", ".join(f"{s['accounts']:,}" for s in run["scenarios"])


def _separate_line(result: dict[str, Any]) -> list[str]:
    return [
        f"The {_sizes(run)} accounts rows come "
        f"from a run of their own ({run['written']}, {run['wall_s']:.0f} s, "
        f"{'its broker warmed up first' if run.get('broker_warmup') else 'a cold broker'}): "
        f"`{run['command']}`."
        for run in result.get("separate", [])
    ]  # fmt: skip


def _cost_table(result: dict[str, Any]) -> str:
    rows = _rows(result)
    base = rows[0][1]["flood"]["worker_cpu_ms_per_payment"]
    header = ["accounts", "idempotency keys", "RocksDB MB on disk", "payments/s (flood)",
              "worker CPU ms/payment (flood)", "vs first row",
              "cores used (flood): broker / others", "P50 / P99 ms readable at paced rate",
              "P99 ms produced", "worker CPU ms/payment (paced)",
              "cores used (paced): broker / others"]  # fmt: skip
    table = []
    for label, m in rows:
        flood, paced, store = m["flood"], m["paced"], m["store"]
        table.append([
            label, f"{store['idempotency_keys']:,}", f"{store['store_bytes'] / 2**20:,.0f}",
            f"{flood['achieved_per_s']:,.0f}", f"{flood['worker_cpu_ms_per_payment']:.2f}",
            f"{flood['worker_cpu_ms_per_payment'] / base:.2f}x", cores(flood["usage"]),
            f"{paced['readable']['p50_ms']:,.0f} / {paced['readable']['p99_ms']:,.0f}"
            + (" (above capacity)" if above_capacity(paced) else ""),
            f"{paced['produced']['p99_ms']:,.0f}", f"{paced['worker_cpu_ms_per_payment']:.2f}",
            cores(paced["usage"]),
        ])  # fmt: skip
    return md_table(header, table, left=1)


def _verdict(result: dict[str, Any]) -> str:
    costs = [m["flood"]["worker_cpu_ms_per_payment"] for _label, m in _rows(result)]
    ratio = max(costs) / min(costs)
    verdict = "flat" if ratio <= FLAT_RATIO_MAX else "not flat"
    others = [m["flood"]["usage"]["others_cpu_s"] / m["flood"]["usage"]["seconds"]
              for _label, m in _rows(result)]  # fmt: skip
    return (f"Claim of issue 18, the cost per payment stays within {FLAT_RATIO_MAX - 1:.0%} "
            f"across these rows: **{verdict}** (highest / lowest worker CPU per payment "
            f"{ratio:.2f}x; payments/s spans {_span(result, 'achieved_per_s')}). Other work on "
            f"the machine used {min(others):.2f}-{max(others):.2f} cores during the floods: a "
            "process's CPU seconds per payment rise when it shares cores and caches, so rows "
            "measured beside different neighbours differ by more than their sizes explain; "
            "a verdict wants a quiet machine.")  # fmt: skip


def _span(result: dict[str, Any], key: str) -> str:
    values = [m["flood"][key] for _label, m in _rows(result)]
    return f"{min(values):,.0f}-{max(values):,.0f}"


def _setup_table(result: dict[str, Any]) -> list[str]:
    rows = [
        [f"{s['accounts']:,}", f"{s['setup']['commands']:,}", f"{s['setup']['seconds']:,.1f}",
         f"{s['setup']['commands_per_s']:,.0f}", f"{s['setup']['worker_cpu_ms_per_command']:.2f}",
         f"{s['build_s']:.1f}"]
        for s in scenarios(result)
    ]  # fmt: skip
    header = ["accounts", "commands (open + fund)", "seconds", "commands/s",
              "worker CPU ms/command", "workload built in s"]  # fmt: skip
    parts = ["Opening and funding the accounts through the workers (publish to last answer):",
             "", md_table(header, rows, left=1)]  # fmt: skip
    largest = scenarios(result)[-1]
    if largest["accounts"] < 1_000_000:
        rate = largest["setup"]["commands_per_s"]
        parts += ["", f"10^6 accounts were not run (`--sizes ... 1000000` runs them): at the "
                  f"{rate:,.0f} commands/s measured at {largest['accounts']:,} accounts, their "
                  f"2,000,000 setup commands alone would take about {2_000_000 / rate / 60:.0f}"
                  " minutes, beyond the time `make bench` has."]  # fmt: skip
    return parts


def _store_section(result: dict[str, Any]) -> list[str]:
    for s in scenarios(result):
        if len(s["measures"]) > 1:
            return _store_text(s["measures"][0], s["measures"][1], s["retention_s"])
    return ["No grown-store measurement in this run (`--prior-transfers 0`)."]


def _store_text(before: dict[str, Any], after: dict[str, Any], retention_s: int) -> list[str]:
    prior = after["prior"]["transfers"]
    keys = after["store"]["idempotency_keys"] - before["store"]["idempotency_keys"]
    per_payment = keys / max(1, prior + before["paced"]["transfers"] + before["flood"]["transfers"])
    per_key = after["store"]["store_bytes"] / max(1, after["store"]["idempotency_keys"])
    window_payments = REFERENCE_PER_S * retention_s
    window_keys = window_payments * per_payment
    reached = after["store"]["idempotency_keys"]
    return [
        f"Idempotency store: the grown row ran after {prior:,} more transfers with distinct "
        f"request ids ({after['prior']['achieved_per_s']:,.0f} payments/s), all written by the "
        f"workers: {reached:,} live keys, {per_payment:.1f} keys per payment, about "
        f"{per_key:,.0f} bytes of RocksDB files per key (all tables, memtables not counted). "
        f"Keys expire after the retention window ({retention_s / 86_400:g} days), so a year "
        f"of traffic ({REFERENCE_PER_S * 365 * 86_400 / 1e9:.1f} billion payments at "
        f"{REFERENCE_PER_S:,}/s) never sits in the store: its steady state holds the last "
        f"window's {window_payments:,} payments' keys, about {window_keys / 1e9:.1f} "
        f"billion keys ({window_keys / PARTITIONS / 1e6:,.0f} million per partition, about "
        f"{window_keys * per_key / 2**30:,.0f} GiB at the measured bytes per key). The store "
        f"reached here is {reached / window_keys:.4%} of that: these rows give the slope over "
        "a store that fits in memory, not the cost of one that does not (RocksDB then reads "
        "blocks from disk on a miss in its cache). Nothing expires within a run, so expiry's "
        "own deletions are not in the figures.",
    ]  # fmt: skip


HOW: Final = (
    "Per size: 2 worker processes (crash-safe, as shipped), 8 partitions, topics of their own,"
    " honest transfers uniform over the accounts. Flood: the transfers published at once;"
    " payments/s from the first command in Kafka to the last answer; worker CPU: CPU seconds of"
    " both worker processes over the flood, per transfer (the cost figure). Paced: a fixed"
    " offered rate, its first {warmup_s:g} s (warm-up) left out of the percentiles; latency"
    " from the command's LogAppendTime on `commands` to the `Completed` event, read_committed"
    " (readable, after the commit) or its record timestamp (produced). Idempotency keys: live"
    " keys of the idempotency store before the row's measurement (4 per account from opening"
    " and funding it, about 4 per transfer). Cores used: CPU seconds per second of the broker,"
    " and of every process not this benchmark's (other work on the shared machine)."
)


SHARED: Final = (
    "The broker, the workers and this benchmark share these cores, and so did whatever else"
    " ran on the machine then (the figures are as noisy as that was)."
)


def markdown(result: dict[str, Any]) -> str:
    """The scenario's section of docs/benchmarks.md."""
    return "\n".join([
        "### Cost against size", "", HOW.format(warmup_s=result.get("warmup_s", 0)), "",
        *warmup_line(result), _cost_table(result), "", *_separate_line(result), "",
        _verdict(result), "", *quiet_line(result),
        *_setup_table(result), "", *_store_section(result), "",
        f"{command_line(result)} ({result['wall_s']:.0f} s).", "",
        f"{machine_line(result['machine'])} {SHARED}",
    ])  # fmt: skip


def plots(result: dict[str, Any], img_dir: Path) -> list[Path]:
    """Worker CPU per payment, payments/s and P99 against accounts (log scale); a grown store
    is a separate marker at its size."""
    plt = pyplot()
    img_dir.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    first = [(s["accounts"], s["measures"][0]) for s in scenarios(result)]
    grown = [(s["accounts"], m) for s in scenarios(result) for m in s["measures"][1:]]
    panels: tuple[tuple[Callable[[dict[str, Any]], float], str], ...] = (
        (lambda m: m["flood"]["worker_cpu_ms_per_payment"], "worker CPU ms per payment (flood)"),
        (lambda m: m["flood"]["achieved_per_s"], "payments/s (flood)"),
        (lambda m: m["paced"]["readable"]["p99_ms"], "P99 ms readable (paced)"),
    )
    for axis, (value, title) in zip(axes, panels, strict=True):
        axis.plot([a for a, _m in first], [value(m) for _a, m in first], marker="o",
                  label="as opened")  # fmt: skip
        if grown:
            axis.plot([a for a, _m in grown], [value(m) for _a, m in grown], marker="s",
                      linestyle="none", label="grown idempotency store")  # fmt: skip
        axis.set_xscale("log")
        axis.set_xlabel("accounts")
        axis.set_title(title, fontsize="medium")
        axis.set_ylim(bottom=0)
    axes[0].legend(fontsize="small")
    path = img_dir / "bench-growth-cost.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return [path]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="bench.growth",
        description="Cost against size (issue 18): payments/s, P99 and worker CPU per payment "
        "against accounts and idempotency store size.",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=SIZES_ALLOWED)
    parser.add_argument("--transfers", type=int, default=TRANSFERS, help="flood, per size")
    parser.add_argument("--paced-rate", type=int, default=PACED_PER_S)
    parser.add_argument("--paced-s", type=int, default=PACED_S)
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=WARMUP_S,
        help="the paced load's first seconds, left out of its percentiles",
    )
    parser.add_argument("--prior-transfers", type=int, default=PRIOR_TRANSFERS,
                        help="transfers that grow the idempotency store (0: none)")  # fmt: skip
    parser.add_argument("--store-accounts", type=int, default=STORE_ACCOUNTS,
                        help="the size whose platform the store is grown on")  # fmt: skip
    parser.add_argument(
        "--quiet-load", type=float, default=None,
        help="first wait (2 min at most) for a 1-minute load average under it",
    )  # fmt: skip
    parser.add_argument(
        "--broker-warmup-s", type=int, default=BROKER_WARMUP_S,
        help=f"first an untimed load at {BROKER_WARMUP_RATE:,}/s for this long (0: none)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.prior_transfers and args.store_accounts not in args.sizes:
        parser.error("--store-accounts must be one of --sizes (or --prior-transfers 0)")
    result = run(
        sizes=args.sizes, transfers=args.transfers, paced_rate=args.paced_rate,
        paced_s=args.paced_s, prior=args.prior_transfers, store_accounts=args.store_accounts,
        warmup_s=args.warmup_s, quiet_load=args.quiet_load,
        broker_warmup_s=args.broker_warmup_s,
    )  # fmt: skip
    result["separate"] = separate_runs(args.output)
    print(markdown(result))
    write_result(args.output, result)


if __name__ == "__main__":
    main()
