"""The generated section of docs/benchmarks.md (issue 18): what ``make bench`` measured.

    .venv/bin/python -m bench.report [--results bench/results] [--doc docs/benchmarks.md]
        [--img-dir docs/img]

For every scenario of the harness (``bench.harness.SCENARIOS``, in its order) whose
``bench/results/<name>.json`` exists: the module's ``markdown(result)`` and
``plots(result, img_dir)``. Then, from the same results, the ratios of the saga to each
baseline and the scale-out on paper. Only the text between ``BEGIN`` and ``END`` in
docs/benchmarks.md is rewritten (the markers are put after the intro if missing); every
other byte of the file, the hand-written analysis, stays as it is.

The helpers ``markdown_table``, ``machine_line``, ``command_line`` and ``pyplot`` are for
the scenarios' own ``markdown()`` and ``plots()``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.harness import SCENARIOS

__all__ = [
    "BEGIN",
    "END",
    "Figures",
    "command_line",
    "figures",
    "machine_line",
    "main",
    "markdown_table",
    "pyplot",
    "ratios",
    "replace_generated",
    "rewrite",
    "scale_out",
    "section",
    "write_result",
]

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS_DIR: Final = ROOT / "bench" / "results"
DOC: Final = ROOT / "docs" / "benchmarks.md"
IMG_DIR: Final = ROOT / "docs" / "img"

BEGIN: Final = "<!-- make bench: begin -->"
END: Final = "<!-- make bench: end -->"

TIERS_PER_S: Final = (1_000, 10_000, 100_000)
"""The seed's tiers of payments per second."""
REPLICATION_FACTOR: Final = 3
"""A production cluster's replication factor (the measurements run one broker, factor 1)."""
BROKER_CORES: Final = 8
"""Cores of one broker machine of the paper cluster."""
PARTITIONS_MIN: Final = 8
"""paystream's default partition count (``Settings.partitions``)."""
SOURCE_SHARE: Final = 2 / 3
"""A payment's inputs on its source account's partition: the command and the completion
leg (1 command + 2 legs per payment; the credit leg goes to the destination's)."""
SAME_RUN_SPAN_S: Final = 30 * 60
"""Results written further apart than this are not one harness run: their ratios say so."""
TARGET_PAYMENTS_PER_S: Final = 5_000
TARGET_ZIPF_RATIO: Final = 2.6


# --- helpers for the scenarios' markdown() and plots() ---------------------------------


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[object]], *, right: Sequence[bool] | None = None
) -> str:
    """A markdown table; ``right``: which columns are right-aligned (default: all but the
    first)."""
    aligned = right if right is not None else [i > 0 for i in range(len(header))]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" if r else "---" for r in aligned) + " |",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


MACHINE_KEYS: Final = (
    "cores",
    "cpu_model",
    "memory_gib",
    "memory_bytes",
    "os",
    "python",
    "confluent_kafka",
    "librdkafka",
    "load_average_1m_at_start",
)


def machine_line(facts: Mapping[str, Any]) -> str:
    """One line from ``bench.machine.facts(...)`` (and older results' shorter facts)."""
    parts = []
    if "cores" in facts:
        model = f" ({facts['cpu_model']})" if facts.get("cpu_model") else ""
        parts.append(f"{facts['cores']} cores{model}")
    if "memory_gib" in facts:
        parts.append(f"{facts['memory_gib']} GiB")
    elif "memory_bytes" in facts:
        parts.append(f"{facts['memory_bytes'] / 2**30:.1f} GiB")
    if "os" in facts:
        parts.append(str(facts["os"]))
    if "python" in facts:
        parts.append(f"Python {facts['python']}")
    if "confluent_kafka" in facts:
        parts.append(
            f"confluent-kafka {facts['confluent_kafka']} / librdkafka "
            f"{facts.get('librdkafka', '?')}"
        )
    parts += [
        f"{key} {_flat(value)}"
        for key, value in facts.items()
        if key not in MACHINE_KEYS and value is not None
    ]
    if "load_average_1m_at_start" in facts:
        parts.append(f"load average {facts['load_average_1m_at_start']:.2f} at the start")
    return "Machine: " + (", ".join(parts) or "not recorded") + "."


def _flat(value: Any) -> str:
    if isinstance(value, Mapping):
        return "(" + ", ".join(f"{k} {_flat(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list | tuple):
        return "/".join(_flat(v) for v in value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def write_result(path: Path, result: Mapping[str, Any]) -> None:
    """A scenario's ``bench/results/<name>.json`` (what this module reads back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {path}")


def command_line(result: Mapping[str, Any]) -> str:
    """The command that reproduces ``result``, as a code span."""
    return f"Command: `{result.get('command', '(not recorded)')}`"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- the figures the ratios and the scale-out are computed from ------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Figures:
    """The headline figures of one set of results; None where a result is missing."""

    saga_per_s: Mapping[tuple[int, str], float]
    """(workers, distribution) -> payments/s."""
    saga_accounts: int | None
    saga_zipf_s: float | None
    postgres_per_s: Mapping[str, float]
    """distribution -> committed transfers/s."""
    postgres_hottest_share: float | None
    passthrough_per_s: Mapping[int, float]
    """processes -> payments/s."""
    broker_cores: float | None
    """Cores the broker kept busy in the fastest passthrough run."""
    broker_payments_per_s: float | None
    """Payments/s of that run."""
    records_per_payment: float | None
    """Records a payment writes to the broker (wire profile: inputs and outputs)."""
    faust_per_s: Mapping[int, float]
    """processes -> payments/s."""


def figures(results: Mapping[str, Mapping[str, Any]]) -> Figures:
    """The headline figures from the results of ``bench.harness.SCENARIOS``."""
    saga = results.get("saga", {})
    postgres = results.get("baseline_postgres", {})
    passthrough = results.get("baseline_passthrough", {})
    runs = passthrough.get("passthrough", [])
    fastest = max(runs, key=lambda r: r["payments_per_s"], default=None)
    zipf = [d for d in postgres.get("distributions", []) if d["distribution"] == "zipf"]
    scenarios = saga.get("scenarios", [])
    return Figures(
        saga_per_s={(s["workers"], s["distribution"]): s["payments_per_s"] for s in scenarios},
        saga_accounts=scenarios[0]["accounts"] if scenarios else None,
        saga_zipf_s=next((s["zipf_s"] for s in scenarios if s.get("zipf_s")), None),
        postgres_per_s={
            d["distribution"]: d["transfers_per_s"] for d in postgres.get("distributions", [])
        },
        postgres_hottest_share=zipf[0].get("hottest_account_share_of_transfers") if zipf else None,
        passthrough_per_s={r["processes"]: r["payments_per_s"] for r in runs},
        broker_cores=_broker_cores(fastest),
        broker_payments_per_s=fastest["payments_per_s"] if fastest else None,
        records_per_payment=_records_per_payment(passthrough),
        faust_per_s=_faust_per_s(results.get("baseline_faust")),
    )


def _broker_cores(run: Mapping[str, Any] | None) -> float | None:
    """The broker's CPU seconds over the members' run (first consume to last commit): a
    little high (it includes the group's joining), so the per-core figure is cautious."""
    if run is None or run.get("cpu", {}).get("broker_s") is None:
        return None
    return float(run["cpu"]["broker_s"]) / float(run["elapsed_s"])


def _records_per_payment(passthrough: Mapping[str, Any]) -> float | None:
    per_payment = passthrough.get("wire_profile", {}).get("per_payment")
    if not per_payment:
        return None
    return float(sum(role["records"] for role in per_payment.values()))


def _faust_per_s(result: Mapping[str, Any] | None) -> dict[int, float]:
    """The faust baseline's payments/s per worker process count (its ``runs``)."""
    runs = (result or {}).get("runs", [])
    return {
        int(r["processes"]): float(r["payments_per_s"])
        for r in runs
        if "processes" in r and "payments_per_s" in r
    }


# --- ratios -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ratio:
    label: str
    paystream_per_s: float
    baseline_per_s: float
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.paystream_per_s / self.baseline_per_s


def ratios(found: Figures) -> list[Ratio]:
    """paystream's saga against each baseline, only where both figures exist."""
    saga, pg, pipe = found.saga_per_s, found.postgres_per_s, found.passthrough_per_s
    wanted: list[tuple[str, float | None, float | None, str]] = [
        (
            "saga 2 workers, Zipf / Postgres row locks, Zipf",
            saga.get((2, "zipf")),
            pg.get("zipf"),
            f"target >= {TARGET_ZIPF_RATIO}",
        ),
        (
            "saga 2 workers, uniform / Postgres row locks, uniform",
            saga.get((2, "uniform")),
            pg.get("uniform"),
            "",
        ),
        (
            "saga 1 worker, uniform / passthrough, 1 process",
            saga.get((1, "uniform")),
            pipe.get(1),
            "share of the pipe",
        ),
        (
            "saga 2 workers, uniform / passthrough, 2 processes",
            saga.get((2, "uniform")),
            pipe.get(2),
            "share of the pipe",
        ),
        (
            "saga 1 worker, uniform / faust-streaming agent, 1 process",
            saga.get((1, "uniform")),
            found.faust_per_s.get(1),
            "faust is not crash-safe",
        ),
        (
            "saga 2 workers, uniform / faust-streaming agent, 2 processes",
            saga.get((2, "uniform")),
            found.faust_per_s.get(2),
            "faust is not crash-safe",
        ),
        (
            "saga 2 workers, uniform / the issue's target",
            saga.get((2, "uniform")),
            float(TARGET_PAYMENTS_PER_S),
            f"target {TARGET_PAYMENTS_PER_S:,} payments/s",
        ),
    ]
    return [
        Ratio(label, ours, theirs, note)
        for label, ours, theirs, note in wanted
        if ours is not None and theirs
    ]


def ratios_markdown(found: Figures, written: Mapping[str, datetime]) -> str:
    rows = [
        (
            r.label,
            f"{r.paystream_per_s:,.0f}",
            f"{r.baseline_per_s:,.0f}",
            f"{r.ratio:.2f}x",
            r.note,
        )
        for r in ratios(found)
    ]
    if not rows:
        return "### Ratios\n\nNo saga result with a baseline beside it yet."
    table = markdown_table(
        ("paystream / baseline", "paystream per s", "baseline per s", "ratio", "note"),
        rows,
        right=(False, True, True, True, False),
    )
    span = _span_note(written)
    return f"### Ratios\n\nPayments (Postgres: committed transfers) per second.{span}\n\n{table}"


def _span_note(written: Mapping[str, datetime]) -> str:
    times = [
        written[n]
        for n in ("saga", "baseline_postgres", "baseline_passthrough", "baseline_faust")
        if n in written
    ]
    if len(times) < 2:
        return ""
    span_s = (max(times) - min(times)).total_seconds()
    if span_s <= SAME_RUN_SPAN_S:
        return f" The results were written within {span_s / 60:.0f} minutes of each other."
    return (
        f" **Not one run**: the results were written {span_s / 3600:.1f} hours apart "
        "(see the times above); run `make bench` for figures from the same minutes."
    )


# --- scale-out on paper ---------------------------------------------------------------


def hottest_account_probability(accounts: int, zipf_s: float) -> float:
    """The chance that one end of a transfer (source, or destination) is the hottest
    account, when both are drawn from the Zipf law of ``paystream.workload``."""
    return 1.0 / math.fsum(k**-zipf_s for k in range(1, accounts + 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class Tier:
    payments_per_s: int
    workers: int
    """Worker processes (one core each: a Python process runs on one core)."""
    partitions: int
    broker_cores: int | None
    brokers: int | None
    zipf_hot_partition_per_s: float | None
    """What the hottest account's partition must carry, in payments/s of one worker."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleOut:
    worker_per_s: float
    """One worker's payments/s (1 worker, uniform)."""
    scaling: float | None
    """2 workers' payments/s over 1 worker's (uniform)."""
    efficiency: float
    """Each of several workers' rate as a share of ``worker_per_s``: scaling / 2, at most 1
    (1 when the 2-worker run is missing)."""
    broker_payments_per_core: float | None
    broker_records_per_core: float | None
    hot_probability: float | None
    zipf_cap_per_s: float | None
    """The most payments/s with the hottest account's partition on one worker."""
    tiers: list[Tier]


def scale_out(found: Figures) -> ScaleOut | None:
    """The paper cluster for each tier, from the measured figures; None without a
    1-worker uniform saga figure."""
    one = found.saga_per_s.get((1, "uniform"))
    if one is None:
        return None
    two = found.saga_per_s.get((2, "uniform"))
    scaling = two / one if two is not None else None
    efficiency = min(1.0, scaling / 2) if scaling is not None else 1.0
    per_core = (
        found.broker_payments_per_s / found.broker_cores
        if found.broker_cores and found.broker_payments_per_s
        else None
    )
    hot = (
        hottest_account_probability(found.saga_accounts, found.saga_zipf_s)
        if found.saga_accounts and found.saga_zipf_s
        else None
    )
    tiers = [_tier(t, one * efficiency, per_core, hot) for t in TIERS_PER_S]
    return ScaleOut(
        worker_per_s=one,
        scaling=scaling,
        efficiency=efficiency,
        broker_payments_per_core=per_core,
        broker_records_per_core=(
            per_core * found.records_per_payment if per_core and found.records_per_payment else None
        ),
        hot_probability=hot,
        zipf_cap_per_s=_zipf_cap(one, hot, tiers[-1].partitions) if hot else None,
        tiers=tiers,
    )


def _tier(
    target_per_s: int, per_worker: float, broker_per_core: float | None, hot: float | None
) -> Tier:
    workers = math.ceil(target_per_s / per_worker)
    partitions = max(PARTITIONS_MIN, workers)
    cores = (
        math.ceil(target_per_s * REPLICATION_FACTOR / broker_per_core) if broker_per_core else None
    )
    return Tier(
        payments_per_s=target_per_s,
        workers=workers,
        partitions=partitions,
        broker_cores=cores,
        brokers=max(REPLICATION_FACTOR, math.ceil(cores / BROKER_CORES)) if cores else None,
        zipf_hot_partition_per_s=(
            target_per_s * _hot_partition_share(hot, partitions) if hot else None
        ),
    )


def _hot_partition_share(hot: float, partitions: int) -> float:
    """The hottest account's partition's share of all inputs: ``hot`` of the payments have
    it as source (``SOURCE_SHARE`` of their inputs land there) and as many as destination
    (the rest of theirs): ``hot`` in all; plus its even share of everything else."""
    return hot + (1 - hot) / partitions


def _zipf_cap(worker_per_s: float, hot: float, partitions: int) -> float:
    return worker_per_s / _hot_partition_share(hot, partitions)


def scale_out_markdown(found: Figures) -> str:
    model = scale_out(found)
    if model is None:
        return "### Scale-out on paper\n\nNeeds the saga's 1-worker uniform figure."
    return "\n\n".join(
        (
            "### Scale-out on paper",
            _measured(model, found),
            _tiers_table(model),
            _limits(model, found),
            _assumptions(),
        )
    )


def _measured(model: ScaleOut, found: Figures) -> str:
    lines = [f"- One worker process: **{model.worker_per_s:,.0f} payments/s** (uniform)."]
    if model.scaling is not None:
        lines.append(
            f"- 1 -> 2 workers: **{model.scaling:.2f}x**: "
            f"{model.worker_per_s * model.efficiency:,.0f} payments/s per worker when two "
            f"share the work, {model.efficiency:.0%} of a lone worker's rate."
        )
    if model.broker_payments_per_core is not None and found.broker_cores is not None:
        records = (
            f" = {model.broker_records_per_core:,.0f} records/s written per core "
            f"({found.records_per_payment:.1f} records per payment, the wire profile)"
            if model.broker_records_per_core
            else ""
        )
        lines.append(
            f"- The pipe (passthrough, {found.broker_payments_per_s:,.0f} payments/s "
            f"with the broker on {found.broker_cores:.2f} cores): "
            f"**{model.broker_payments_per_core:,.0f} payments/s per broker core**"
            f"{records}."
        )
    if model.hot_probability is not None:
        lines.append(
            f"- Zipf s = {found.saga_zipf_s} over {found.saga_accounts:,} accounts: "
            f"the hottest account is the source of {model.hot_probability:.1%} of "
            "payments and the destination of as many."
        )
    lines += _zipf_measured(model, found)
    return "\n".join(lines)


def _zipf_measured(model: ScaleOut, found: Figures) -> list[str]:
    """The measured Zipf run against the model: is its hot partition already the limit?"""
    uniform, zipf = found.saga_per_s.get((2, "uniform")), found.saga_per_s.get((2, "zipf"))
    if model.hot_probability is None or uniform is None or zipf is None:
        return []
    load = zipf * _hot_partition_share(model.hot_probability, PARTITIONS_MIN)
    verdict = "above" if load > model.worker_per_s else "below"
    return [
        f"- Measured, 2 workers: Zipf / uniform = {zipf / uniform:.2f}x; the hot account's "
        f"partition (of {PARTITIONS_MIN}) carried about {load:,.0f} payments/s, {verdict} "
        "one worker's rate: "
        + (
            "the hot partition already limits this run."
            if verdict == "above"
            else "not yet the limit at this rate."
        )
    ]


def _tiers_table(model: ScaleOut) -> str:
    rows = []
    for tier in model.tiers:
        zipf = "-"
        if tier.zipf_hot_partition_per_s is not None:
            over = tier.zipf_hot_partition_per_s > model.worker_per_s
            zipf = f"{tier.zipf_hot_partition_per_s:,.0f} -> " + (
                "**stops: above one worker**" if over else "fits"
            )
        rows.append(
            (
                f"{tier.payments_per_s:,}",
                f"{tier.workers:,}",
                f"{tier.partitions:,}",
                "-" if tier.broker_cores is None else f"{tier.broker_cores:,}",
                "-" if tier.brokers is None else f"{tier.brokers:,}",
                zipf,
            )
        )
    return markdown_table(
        (
            "payments/s",
            "worker processes (cores)",
            "partitions",
            f"broker cores (replication {REPLICATION_FACTOR})",
            f"brokers ({BROKER_CORES} cores)",
            "Zipf: the hot partition's load (payments/s)",
        ),
        rows,
    )


def _limits(model: ScaleOut, found: Figures) -> str:
    lines = ["Where it stops scaling:"]
    if model.zipf_cap_per_s is not None:
        lines.append(
            f"- **A hot account's partition.** One partition is one worker's at a time, so "
            f"under Zipf s = {found.saga_zipf_s} the whole system tops out near "
            f"**{model.zipf_cap_per_s:,.0f} payments/s** (one worker's rate over the hot "
            "partition's share), whatever N and M: more partitions and workers do not split "
            "one account. Beyond it: a faster worker, or splitting a hot account (sub-accounts)."
        )
    if model.broker_payments_per_core is not None and found.records_per_payment:
        lines.append(
            f"- **The broker.** Each payment writes {found.records_per_payment:.1f} records "
            f"({REPLICATION_FACTOR} copies each on the paper cluster); at "
            f"{model.broker_payments_per_core:,.0f} payments/s per broker core, 100k "
            f"payments/s needs {model.tiers[-1].broker_cores:,} broker cores: it scales with "
            "brokers and partitions, and fewer records per payment lowers it directly."
        )
    return "\n".join(lines)


def _assumptions() -> str:
    return "\n".join(
        (
            "The model's assumptions:",
            "- M workers reach M times the per-worker rate measured with two (the 1 -> 2 "
            "efficiency holds for any M). Here two workers and the broker share 2 cores; on a "
            "cluster each worker has its own core and the brokers their own machines, so this "
            "is cautious for uniform traffic.",
            "- One partition is served by one worker at a time: a partition carries at most a "
            "lone worker's rate.",
            f"- A worker process uses one core; N partitions = max({PARTITIONS_MIN}, M), evenly "
            "loaded under uniform traffic (a worker needs at least one partition).",
            f"- Broker work grows linearly with records written and with the replication factor "
            f"({REPLICATION_FACTOR}, against 1 measured); broker machines of {BROKER_CORES} cores; "
            "network, disks and the transaction coordinator are not limits here.",
            f"- A payment's inputs: {SOURCE_SHARE:.0%} on its source's partition (the command, the "
            "completion leg), the rest on its destination's (the credit leg); a worker's cost per "
            "input is the same everywhere.",
            "- Source and destination are drawn from the same Zipf law (`paystream.workload`), "
            "over as many accounts as the saga run; only the hottest account is modelled.",
        )
    )


# --- the generated section --------------------------------------------------------------


def section(
    results: Mapping[str, Mapping[str, Any]],
    fragments: Mapping[str, str],
    written: Mapping[str, datetime],
    comparison: str | None = None,
) -> str:
    """The text between the markers: what ran when, each scenario's fragment, the ratios,
    the scale-out on paper."""
    missing = [name for name in SCENARIOS if name not in results]
    when = markdown_table(
        ("scenario", "result", "written (UTC)"),
        [
            (name, f"`bench/results/{name}.json`", written[name].strftime("%Y-%m-%d %H:%M"))
            for name in SCENARIOS
            if name in written
        ],
        right=(False, False, False),
    )
    parts = [
        "## `make bench` (generated): the saga, its latency and growth, the baselines",
        "This section is generated by `make bench` (`bench/harness.py` runs the scenarios, "
        "`bench/report.py` writes this from `bench/results/*.json`): do not edit it by hand; "
        "the analysis lives in the hand-written sections below.",
        when,
    ]
    if missing:
        parts.append("No result yet: " + ", ".join(f"`{name}`" for name in missing) + ".")
    parts += [fragments[name] for name in SCENARIOS if name in fragments]
    found = figures(results)
    parts.append(ratios_markdown(found, written))
    if comparison is not None:
        parts.append(f"![payments per second, saga and baselines]({comparison})")
    parts.append(scale_out_markdown(found))
    return "\n\n".join(parts)


def replace_generated(document: str, generated: str) -> str:
    """``document`` with the text between the markers replaced by ``generated``; markers
    missing: both put in before the first ``## `` heading (after the intro). Everything
    outside the markers is kept byte for byte."""
    block = f"{BEGIN}\n{generated.strip()}\n{END}"
    begin, end = document.find(BEGIN), document.find(END)
    if begin >= 0 and end > begin:
        return document[:begin] + block + document[end + len(END) :]
    if begin >= 0 or end >= 0:
        raise ValueError(f"one marker without the other, or in the wrong order: {BEGIN} {END}")
    at = document.find("\n## ")
    if at < 0:
        return document.rstrip("\n") + "\n\n" + block + "\n"
    return document[: at + 1] + block + "\n\n" + document[at + 1 :]


# --- the shell --------------------------------------------------------------------------


def load_results(results_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, datetime]]:
    """Every harness scenario's result that exists, and when its file was written."""
    results: dict[str, dict[str, Any]] = {}
    written: dict[str, datetime] = {}
    for name in SCENARIOS:
        path = results_dir / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
            written[name] = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    return results, written


Fragment = tuple[str, str | None]
"""A scenario's markdown, and what went wrong making it (None: nothing)."""


def fragment(name: str, result: Mapping[str, Any], img_dir: Path, doc_dir: Path) -> Fragment:
    """A scenario's markdown() and the links to its plots(). A module that does not import,
    lacks them or fails in them gets a fallback fragment saying so, and the problem."""
    try:
        module = importlib.import_module(f"bench.{name}")
    except Exception as error:  # a scenario being written may not import yet
        return _fallback(name, result, f"`bench/{name}.py` does not import: {error!r}")
    write: Callable[[dict[str, Any]], str] | None = getattr(module, "markdown", None)
    draw: Callable[[dict[str, Any], Path], list[Path]] | None = getattr(module, "plots", None)
    if write is None or draw is None:
        return _fallback(name, result, f"`bench/{name}.py` has no `markdown()` or `plots()` yet")
    try:
        text = write(dict(result)).strip()
        drawn = draw(dict(result), img_dir)
    except Exception as error:  # one scenario's bug must not cost the others their section
        return _fallback(name, result, f"`bench/{name}.py` failed on its result: {error!r}")
    images = [f"![{p.stem}]({_relative(p, doc_dir)})" for p in drawn]
    return "\n\n".join([text, *images]), None


def _fallback(name: str, result: Mapping[str, Any], problem: str) -> Fragment:
    text = "\n\n".join(
        (
            f"### `{name}`",
            problem + ".",
            command_line(result),
            machine_line(result.get("machine", {})),
        )
    )
    return text, problem


def _relative(path: Path, doc_dir: Path) -> str:
    """``path`` as a link from a document in ``doc_dir``."""
    return Path(os.path.relpath(Path(path).resolve(), doc_dir.resolve())).as_posix()


def comparison_plot(found: Figures, img_dir: Path) -> Path | None:
    """Payments/s of the saga and every baseline side by side, from the same results."""
    bars = [(f"saga {w}w {d}", v) for (w, d), v in sorted(found.saga_per_s.items())]
    bars += [(f"postgres {d}", v) for d, v in sorted(found.postgres_per_s.items())]
    bars += [(f"pipe {p}p", v) for p, v in sorted(found.passthrough_per_s.items())]
    bars += [(f"faust {p}p", v) for p, v in sorted(found.faust_per_s.items())]
    if not bars:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(9, 4))
    colours = ["tab:blue" if label.startswith("saga") else "tab:grey" for label, _ in bars]
    axes.bar([label for label, _ in bars], [v for _, v in bars], color=colours)
    axes.axhline(
        TARGET_PAYMENTS_PER_S,
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label=f"target {TARGET_PAYMENTS_PER_S:,}/s",
    )
    axes.set_ylabel("payments/s")
    axes.set_title("paystream's saga and the baselines (make bench)")
    axes.tick_params(axis="x", labelrotation=30)
    axes.legend()
    figure.tight_layout()
    path = img_dir / "bench-comparison.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def rewrite(doc: Path, generated: str) -> None:
    """``doc`` with its generated section replaced; bytes in and out (no newline
    translation), so the hand-written rest stays byte for byte."""
    doc.write_bytes(replace_generated(doc.read_bytes().decode(), generated).encode())


def write_report(results_dir: Path, doc: Path, img_dir: Path) -> dict[str, str | None]:
    """Rewrite ``doc``'s generated section; each scenario it covers, with its problem."""
    results, written = load_results(results_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    made = {name: fragment(name, result, img_dir, doc.parent) for name, result in results.items()}
    picture = comparison_plot(figures(results), img_dir)
    link = _relative(picture, doc.parent) if picture is not None else None
    generated = section(results, {name: text for name, (text, _) in made.items()}, written, link)
    rewrite(doc, generated)
    return {name: problem for name, (_, problem) in made.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--img-dir", type=Path, default=IMG_DIR)
    args = parser.parse_args(argv)
    covered = write_report(args.results, args.doc, args.img_dir)
    print(f"{args.doc}: generated section from {', '.join(covered) or 'no results'}")
    problems = {name: problem for name, problem in covered.items() if problem is not None}
    for name, problem in problems.items():
        print(f"{name}: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
