"""Grafana dashboards as code: the ops dashboard's questions over ClickHouse, and the
Prometheus metrics of every paystream process.

Built with Grafana's own foundation SDK (``grafana-foundation-sdk``) and written to
``deploy/grafana/`` by ``python -m paystream.analytics.grafana --out deploy/grafana``; a test
regenerates them and fails when the committed files differ.

Nothing here is typed twice. A ClickHouse panel's SQL is the query's SQL constant in
``queries.py`` with its server-side parameters translated into the macros of the
``grafana-clickhouse-datasource`` plugin (``translate``); a Prometheus panel exists for each
metric object found by importing the metric modules. Pure: no network, no clock.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from importlib import import_module
from pathlib import Path
from typing import Final, Literal

from prometheus_client.metrics import MetricWrapperBase

from paystream.analytics import queries, schema
from paystream.analytics.tallies import PAYMENT_COMMANDS, TERMINAL_EVENTS
from paystream.ledger.errors import InvariantViolation, ensure

with warnings.catch_warnings():
    # Importing the SDK's models warns that the v2 dashboard schema is preferred. We build the
    # classic JSON model on purpose: file provisioning loads it on every Grafana from 10 on,
    # while v2 resources need Grafana 12 with its v2 dashboard API switched on.
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import common as common_builders
    from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
    from grafana_foundation_sdk.cog import builder as cogbuilder
    from grafana_foundation_sdk.cog import variants as cogvariants
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models import dashboard as dashboard_model

__all__ = [
    "ANALYTICS_FILE",
    "DASHBOARDS_DIR",
    "DASHBOARDS_FILE",
    "DATABASE_VARIABLE",
    "DATASOURCES_FILE",
    "GRID_WIDTH",
    "METRICS_FILE",
    "METRIC_MODULES",
    "PROCESSES",
    "REGENERATE",
    "analytics_dashboard",
    "analytics_panels",
    "main",
    "metrics_dashboard",
    "render",
    "stale",
    "translate",
    "write",
]

REGENERATE: Final = "python -m paystream.analytics.grafana --out deploy/grafana"
ANALYTICS_FILE: Final = "paystream-analytics.json"
METRICS_FILE: Final = "paystream-metrics.json"
DATASOURCES_FILE: Final = "provisioning/datasources/paystream.yaml"
DASHBOARDS_FILE: Final = "provisioning/dashboards/paystream.yaml"
DASHBOARDS_DIR: Final = "/var/lib/grafana/dashboards/paystream"
"""Where the dashboards provider reads the JSON files: mount ``deploy/grafana`` there."""

CLICKHOUSE_PLUGIN: Final = "grafana-clickhouse-datasource"
PROMETHEUS_PLUGIN: Final = "prometheus"
CLICKHOUSE_VARIABLE: Final = "clickhouse"
PROMETHEUS_VARIABLE: Final = "prometheus"
DATABASE_VARIABLE: Final = "database"
GRID_WIDTH: Final = 24

FORMAT_TIME_SERIES: Final = 0
FORMAT_TABLE: Final = 1
"""The plugin's ``format`` of a query (sqlutil's FormatQueryOption): frames of time series or a
table."""


def _sql_list(values: Sequence[str]) -> str:
    """A ClickHouse array literal of plain words (the constants need no quoting, and must not)."""
    ensure(all(re.fullmatch(r"\w+", v) for v in values), f"not plain words: {values!r}")
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


PARAMETERS: Final[dict[tuple[str, str], str]] = {
    ("start", "DateTime64(3)"): "$__fromTime_ms",
    ("end", "DateTime64(3)"): "$__toTime_ms",
    ("step_s", "UInt32"): "$__interval_s",
    ("commands", "Array(String)"): _sql_list(PAYMENT_COMMANDS),
    ("terminal", "Array(String)"): _sql_list(TERMINAL_EVENTS),
    ("limit", "UInt32"): str(queries.DEAD_LETTERS_SHOWN_MAX),
}
"""Server-side parameter (name, type) -> what a Grafana panel says instead.

``$__fromTime_ms`` / ``$__toTime_ms`` become ``fromUnixTimestamp64Milli(<ms>)`` (DateTime64(3),
as ``start`` and ``end`` are); ``$__interval_s`` becomes Grafana's interval in whole seconds (at
least 1), which ``maxDataPoints = SERIES_POINTS_MAX`` bounds as ``series_step_s`` does. The
lists and the row limit are the values the Python functions pass. A parameter not here (or of
another type) stops the generator: a new parameter needs a decision, not a guess."""
SERVER_PARAMETER: Final = re.compile(r"\{(\w+):([^{}]+)\}")


def translate(sql: str) -> str:
    """A query of ``queries.py`` as a Grafana ClickHouse panel says it: ``{db}`` is the
    dashboard's ``$database`` variable and each server-side parameter its macro or literal
    (and the blank lines and trailing spaces its f-string pieces leave are gone)."""

    def replace(match: re.Match[str]) -> str:
        said = PARAMETERS.get((match[1], match[2]))
        ensure(said is not None, f"no Grafana translation for the parameter {match[0]}")
        return str(said)

    found = SERVER_PARAMETER.sub(replace, sql.replace("{db}", "${" + DATABASE_VARIABLE + "}"))
    lines = textwrap.dedent(found).splitlines()
    return "\n".join(line.rstrip() for line in lines if line.strip())


def _by_position(sql: str, columns: Sequence[str], *, order_by: str) -> str:
    """``sql`` with its result columns named by position (``r.1``, ``r.2``...). Wrappers keep the
    translated query verbatim (not even re-indented), so a test can find it in its panel.

    Some queries leave columns unnamed (``count()``, ``quantilesExact(...)(...)``) because their
    Python readers take them by position; ClickHouse would name them by their expression text,
    which changes with its formatting. The row as a tuple keeps the positions the Python uses.
    """
    selected = ",\n    ".join(columns)
    return (
        f"SELECT\n    {selected}\nFROM (SELECT tuple(*) AS r FROM (\n{sql}\n))\nORDER BY {order_by}"
    )


FUNNEL_FIELDS: Final = tuple(field.name for field in fields(queries.Funnel))


def _funnel_total(series: str) -> str:
    """The funnel over the whole range: the sum of its intervals, as ``funnel`` adds them up."""
    sums = ",\n    ".join(f"sum({name}) AS {name}" for name in FUNNEL_FIELDS)
    return f"SELECT\n    {sums}\nFROM (\n{series}\n)"


def _with_funnel_rates(sql: str) -> str:
    """The funnel and its rates. The rates are ``Funnel``'s properties in Python; here is their
    SQL twin (NULL where Python says None), checked against them on the real engine."""
    return (
        "SELECT\n    *,\n"
        "    completed / nullIf(completed + reversed + rejected, 0) AS success_rate,\n"
        "    reversed / nullIf(debited, 0) AS compensation_rate,\n"
        "    duplicates / nullIf(requested + duplicates, 0) AS dedupe_rate\n"
        f"FROM (\n{sql}\n)"
    )


def _with_difference(sql: str) -> str:
    """``CurrencyConsistency.difference_minor`` (a Python property) computed in Int128."""
    return (
        f"SELECT *, debits_minor - credits_minor AS difference_minor\nFROM (\n{sql}\n)\n"
        "ORDER BY currency"
    )


def _percentile_columns(sql: str) -> list[str]:
    """``bucket, payments, p50_ms...`` from ``bucket, count(), quantilesExact(levels)(...)``:
    one column per level the SQL asks for, so a new level gets its own line."""
    found = re.search(r"quantilesExact\(([^()]*)\)", sql)
    if found is None:
        raise InvariantViolation(f"a percentile query without quantilesExact(levels): {sql}")
    levels = [float(level) for level in found[1].split(",")]
    named = [f"p{round(level * 100, 4):g}".replace(".", "_") for level in levels]
    return [
        "r.1 AS bucket",
        "r.2 AS payments",
        *(f"r.3[{i}] AS {name}_ms" for i, name in enumerate(named, start=1)),
    ]


def _percentiles(sql: str) -> str:
    return _by_position(sql, _percentile_columns(sql), order_by="bucket")


def _dlq_depth(per_interval: str, before: str) -> str:
    """``DeadLetterDepth``: the dead letters before the range plus a running sum of the
    arrivals, which ``dlq_depth`` adds up in Python."""
    depth = f"({before}) + sum(r.2) OVER (ORDER BY r.1) AS depth"
    return _by_position(per_interval, ["r.1 AS bucket", "r.2 AS arrived", depth], order_by="bucket")


def _freshness(sql: str) -> str:
    """``Freshness``: no newest time for a log with no rows, and the age at the range's end (the
    ``now`` the Python function is given; ``now`` itself while the range ends now)."""
    age_ms = "greatest(toUnixTimestamp64Milli($__toTime_ms) - toUnixTimestamp64Milli(r.3), 0)"
    return _by_position(
        sql,
        [
            "r.1 AS source",
            "r.2 AS facts",
            "if(r.2 = 0, NULL, r.3) AS newest",
            f"if(r.2 = 0, NULL, {age_ms}) AS age_ms",
        ],
        order_by="source",
    )


PanelKind = Literal["stat", "table", "timeseries"]


@dataclass(frozen=True, slots=True)
class Override:
    """Field config for the fields whose names match ``pattern`` (a regular expression)."""

    pattern: str
    unit: str
    right_axis: bool = False


@dataclass(frozen=True, slots=True)
class SqlPanel:
    title: str
    description: str
    kind: PanelKind
    sql: str
    unit: str = "short"
    span: int = 12
    height: int = 8
    overrides: tuple[Override, ...] = ()


def _doc(function: object) -> str:
    """The first paragraph of a query function's docstring: the panel says what the page says."""
    text = textwrap.dedent(str(getattr(function, "__doc__", None) or "")).strip()
    return " ".join(text.split("\n\n")[0].split())


ACCOUNTS_DESCRIPTION: Final = (
    "The four totals of the workers' accounts (their balances changelog), to hold against the"
    " journal's projection in the panel above: equal at rest."
)


def _funnel_panels() -> list[SqlPanel]:
    return [
        SqlPanel(
            "Payment funnel", _doc(queries.funnel), "stat",
            _with_funnel_rates(_funnel_total(translate(queries.FUNNEL_SERIES_SQL))),
            span=GRID_WIDTH, height=5,
            overrides=(Override("_rate$", "percentunit"),),
        ),
        SqlPanel(
            "Funnel per interval", _doc(queries.funnel_series), "timeseries",
            translate(queries.FUNNEL_SERIES_SQL), span=GRID_WIDTH,
        ),
        SqlPanel(
            "Ledger consistency per currency", _doc(queries.ledger_consistency), "table",
            _with_difference(translate(queries.CONSISTENCY_SQL)), unit="none",
        ),
        SqlPanel(
            "Workers' accounts per currency", ACCOUNTS_DESCRIPTION, "table",
            translate(queries.ACCOUNTS_SQL), unit="none",
        ),
    ]  # fmt: skip


def _latency_panels() -> list[SqlPanel]:
    right = (Override("^payments$", "short", right_axis=True),)
    return [
        SqlPanel(
            "End-to-end latency", _doc(queries.latency), "timeseries",
            _percentiles(translate(queries.LATENCY_SQL)), unit="ms", overrides=right,
        ),
        SqlPanel(
            "Time to consistency", _doc(queries.time_to_consistency), "timeseries",
            _percentiles(translate(queries.CONSISTENCY_TIME_SQL)), unit="ms", overrides=right,
        ),
    ]  # fmt: skip


def _dead_letter_panels() -> list[SqlPanel]:
    return [
        SqlPanel(
            "Freshness (event lag)", _doc(queries.freshness), "table",
            _freshness(translate(queries.FRESHNESS_SQL)), span=8,
            overrides=(Override("^age_ms$", "ms"),),
        ),
        SqlPanel(
            "DLQ depth", _doc(queries.dlq_depth), "timeseries",
            _dlq_depth(translate(queries.DLQ_DEPTH_SQL), translate(queries.DLQ_BEFORE_SQL)),
            span=16,
        ),
        SqlPanel(
            "Newest dead letters", _doc(queries.newest_dead_letters), "table",
            translate(queries.NEWEST_DEAD_LETTERS_SQL), span=GRID_WIDTH, height=10,
        ),
    ]  # fmt: skip


def analytics_panels() -> list[SqlPanel]:
    """The ops dashboard's panels, one per query of ``queries.py``, in reading order."""
    return [*_funnel_panels(), *_latency_panels(), *_dead_letter_panels()]


class ClickHouseQuery(cogvariants.Dataquery):
    """A raw-SQL target of the grafana-clickhouse-datasource plugin. The SDK has builders for
    Grafana's core data sources only; this is its documented way to add a plugin's query."""

    def __init__(self, raw_sql: str, *, ref_id: str, query_format: int) -> None:
        self.raw_sql = raw_sql
        self.ref_id = ref_id
        self.query_format = query_format

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": _datasource(CLICKHOUSE_PLUGIN, CLICKHOUSE_VARIABLE).to_json(),
            "editorType": "sql",
            "format": self.query_format,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class ClickHouseSql(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, raw_sql: str, *, query_format: int, ref_id: str = "A") -> None:
        self._query = ClickHouseQuery(raw_sql, ref_id=ref_id, query_format=query_format)

    def build(self) -> ClickHouseQuery:
        return self._query


def _datasource(plugin: str, variable: str) -> common.DataSourceRef:
    return common.DataSourceRef(type_val=plugin, uid="${" + variable + "}")


AnyPanel = stat.Panel | table.Panel | timeseries.Panel


def _timeseries() -> timeseries.Panel:
    legend = (
        common_builders.VizLegendOptions()
        .show_legend(True)
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
    )
    return timeseries.Panel().legend(legend).fill_opacity(10)


def _empty_panel(kind: PanelKind) -> AnyPanel:
    if kind == "stat":
        last = common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
        return (
            stat.Panel()
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
            .graph_mode(common.BigValueGraphMode.NONE)
            .reduce_options(last)
        )
    if kind == "table":
        return table.Panel()
    return _timeseries()


def _override_values(override: Override) -> list[dashboard_model.DynamicConfigValue]:
    values = [dashboard_model.DynamicConfigValue(id_val="unit", value=override.unit)]
    if override.right_axis:
        values.append(dashboard_model.DynamicConfigValue("custom.axisPlacement", "right"))
    return values


def _sql_panel(spec: SqlPanel, panel_id: int) -> AnyPanel:
    query_format = FORMAT_TIME_SERIES if spec.kind == "timeseries" else FORMAT_TABLE
    panel = (
        _empty_panel(spec.kind)
        .id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .span(spec.span)
        .height(spec.height)
        .unit(spec.unit)
        .datasource(_datasource(CLICKHOUSE_PLUGIN, CLICKHOUSE_VARIABLE))
        .with_target(ClickHouseSql(spec.sql, query_format=query_format))
    )
    for override in spec.overrides:
        panel = panel.override_by_regexp(override.pattern, _override_values(override))
    if spec.kind == "timeseries":
        panel = panel.max_data_points(queries.SERIES_POINTS_MAX).interval(f"{queries.STEPS_S[0]}s")
    return panel


def _database_variable() -> dashboard.QueryVariable:
    """The analytics databases on the server: those holding every table of ``schema.py``."""
    sql = (
        f"SELECT database FROM system.tables WHERE name IN {_sql_list(list(schema.TABLES))}"
        f" GROUP BY database HAVING count() = {len(schema.TABLES)} ORDER BY database"
    )
    return (
        dashboard.QueryVariable(DATABASE_VARIABLE)
        .label("Database")
        .datasource(_datasource(CLICKHOUSE_PLUGIN, CLICKHOUSE_VARIABLE))
        .query({"editorType": "sql", "rawSql": sql})
        .definition(sql)
        .refresh(dashboard_model.VariableRefresh.ON_DASHBOARD_LOAD)
    )


def _base(title: str, uid: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(f"{description} Generated by `{REGENERATE}`: edit the generator, not this.")
        .tags(["paystream", "generated"])
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("utc")
    )


def analytics_dashboard() -> dashboard_model.Dashboard:
    """The ops dashboard over ClickHouse: funnel, consistency, latency, freshness, the DLQ."""
    built = (
        _base(
            "paystream: payments analytics",
            "paystream-analytics",
            "The ops dashboard's questions (paystream/analytics/queries.py) over ClickHouse.",
        )
        .with_variable(
            dashboard.DatasourceVariable(CLICKHOUSE_VARIABLE)
            .label("ClickHouse")
            .type(CLICKHOUSE_PLUGIN)
        )
        .with_variable(_database_variable())
    )
    for panel_id, spec in enumerate(analytics_panels(), start=1):
        built = built.with_panel(_sql_panel(spec, panel_id))
    return built.build()


MetricKind = Literal["counter", "gauge", "histogram"]
METRIC_KINDS: Final[dict[str, MetricKind]] = {
    "counter": "counter", "gauge": "gauge", "histogram": "histogram",
}  # fmt: skip
"""prometheus_client's type name -> the kinds a panel is drawn for (no Summary, Info, Enum)."""
QUANTILES: Final = (0.5, 0.95, 0.99)


@dataclass(frozen=True, slots=True)
class Process:
    title: str
    module: str
    prefix: str
    """Every metric of this process starts with it."""


PROCESSES: Final = (
    Process("Worker (ledger agent)", "paystream.agents.metrics", "paystream_worker_"),
    Process("Supervisor", "paystream.agents.metrics", "paystream_supervisor_"),
    Process("Postgres sink", "paystream.audit.metrics", "paystream_sink_"),
    Process("API", "paystream.api.metrics", "paystream_api_"),
    Process("Analytics (ClickHouse sink and page)", "paystream.analytics.metrics",
            "paystream_analytics_"),
    Process("Bank-rail connector (payouts)", "paystream.payouts.metrics", "paystream_rail_"),
    Process("Bank-rail simulator (demo and tests; its own registry per server)",
            "paystream.rail.simulator", "paystream_rail_sim_"),
    Process("Partner fan-out", "paystream.partners.metrics", "paystream_fanout_"),
    Process("Email notifier (outbox, SMTP, DLQ)", "paystream.notify.metrics",
            "paystream_notify_"),
    Process("Webhook delivery (signed, retried, DLQ)", "paystream.webhooks.metrics",
            "paystream_webhooks_"),
)  # fmt: skip
METRIC_MODULES: Final = tuple(dict.fromkeys(p.module for p in PROCESSES))
"""Every module that defines prometheus_client metrics (a test scans the package for others)."""


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    """As prometheus_client names the family: a counter's without ``_total``."""
    kind: MetricKind
    help: str
    labels: tuple[str, ...]


def _metric(wrapper: MetricWrapperBase) -> Metric:
    [family] = wrapper.describe()
    kind = METRIC_KINDS.get(family.type)
    if kind is None:
        raise InvariantViolation(f"{family.name}: no panel for a metric of type {family.type}")
    # The label names are not public in prometheus_client; the legends need them.
    labels = tuple(wrapper._labelnames)
    return Metric(family.name, kind, family.documentation, labels)


def module_metrics(module: str) -> list[Metric]:
    """The metric objects defined in ``module``, in the order it defines them."""
    found = {
        m.name: m
        for value in vars(import_module(module)).values()
        if isinstance(value, MetricWrapperBase)
        for m in [_metric(value)]
    }
    return list(found.values())


def process_metrics() -> Iterator[tuple[Process, list[Metric]]]:
    """Each process with its metrics; a metric that belongs to no process stops the build."""
    for module in METRIC_MODULES:
        owners = [p.title for p in PROCESSES if p.module == module]
        for metric in module_metrics(module):
            claimed = [p for p in PROCESSES if p.module == module and _owns(p, metric)]
            ensure(
                len(claimed) == 1, f"{metric.name} ({module}) belongs to {len(claimed)} of {owners}"
            )
    for process in PROCESSES:
        yield process, [m for m in module_metrics(process.module) if _owns(process, m)]


def _owns(process: Process, metric: Metric) -> bool:
    return metric.name.startswith(process.prefix)


def _legend(labels: Sequence[str]) -> str:
    return " ".join("{{" + label + "}}" for label in labels)


def expressions(metric: Metric) -> list[tuple[str, str]]:
    """(PromQL, legend) per line: a counter's per-second rate, a histogram's P50/P95/P99 over
    Grafana's rate interval, a gauge as it is (per instance)."""
    labels = ", ".join(metric.labels)
    if metric.kind == "counter":
        rate = f"rate({metric.name}_total[$__rate_interval])"
        summed = f"sum by ({labels}) ({rate})" if labels else f"sum({rate})"
        return [(summed, _legend(metric.labels) or metric.name)]
    if metric.kind == "gauge":
        return [(metric.name, _legend([*metric.labels, "instance"]))]
    by = ", ".join(["le", *metric.labels])
    buckets = f"sum by ({by}) (rate({metric.name}_bucket[$__rate_interval]))"
    return [
        (
            f"histogram_quantile({q}, {buckets})",
            f"p{round(q * 100, 4):g} {_legend(metric.labels)}".strip(),
        )
        for q in QUANTILES
    ]


def _unit(metric: Metric) -> str:
    if metric.name.endswith("_seconds"):
        return "s"
    return "ops" if metric.kind == "counter" else "short"


def _metric_panel(metric: Metric, panel_id: int) -> timeseries.Panel:
    shown = {"counter": " (per second)", "gauge": "", "histogram": " (P50/P95/P99)"}
    series = f"{metric.name}_total" if metric.kind == "counter" else metric.name
    panel = (
        _timeseries()
        .id(panel_id)
        .title(series + shown[metric.kind])
        .description(metric.help)
        .span(8)
        .height(7)
        .unit(_unit(metric))
        .datasource(_datasource(PROMETHEUS_PLUGIN, PROMETHEUS_VARIABLE))
    )
    for ref_id, (expr, legend) in zip("ABCDEFGH", expressions(metric), strict=False):
        target = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id)
        panel = panel.with_target(target)
    return panel


def metrics_dashboard() -> dashboard_model.Dashboard:
    """A row per process, a panel per metric it defines."""
    built = _base(
        "paystream: process metrics",
        "paystream-metrics",
        "The Prometheus metrics of every paystream process, a row each.",
    ).with_variable(
        dashboard.DatasourceVariable(PROMETHEUS_VARIABLE)
        .label("Prometheus")
        .type(PROMETHEUS_PLUGIN)
    )
    ids = itertools.count(1)
    for process, metrics in process_metrics():
        built = built.with_row(dashboard.Row(process.title).id(next(ids)))
        for metric in metrics:
            built = built.with_panel(_metric_panel(metric, next(ids)))
    return built.build()


def _json(board: dashboard_model.Dashboard) -> str:
    return json.dumps(board, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def _datasources_yaml() -> str:
    return f"""\
# Generated by `{REGENERATE}`: edit the generator, not this.
# Grafana replaces ${{NAME}} with the environment variable NAME when it loads this file
# (write $$ for a literal $). Set them in Grafana's environment:
#   GRAFANA_CLICKHOUSE_HOST      the ClickHouse server's host name
#   GRAFANA_CLICKHOUSE_PORT      8123 (http) or 9000 (native); 8443 / 9440 with TLS
#   GRAFANA_CLICKHOUSE_PROTOCOL  http | native
#   GRAFANA_CLICKHOUSE_SECURE    true | false (TLS)
#   GRAFANA_CLICKHOUSE_USER      a read-only user: the plugin runs whatever SQL a panel holds
#   GRAFANA_CLICKHOUSE_PASSWORD  that user's password
#   GRAFANA_PROMETHEUS_URL       the Prometheus server that scrapes the paystream processes
# The dashboards pick these data sources through their ${CLICKHOUSE_VARIABLE} and
# ${PROMETHEUS_VARIABLE} variables (any data source of the plugin type will do), and the
# ClickHouse database through ${DATABASE_VARIABLE} (every database holding the analytics tables).
apiVersion: 1
datasources:
  - name: paystream ClickHouse
    uid: paystream-clickhouse
    type: {CLICKHOUSE_PLUGIN}
    jsonData:
      host: ${{GRAFANA_CLICKHOUSE_HOST}}
      port: ${{GRAFANA_CLICKHOUSE_PORT}}
      protocol: ${{GRAFANA_CLICKHOUSE_PROTOCOL}}
      secure: ${{GRAFANA_CLICKHOUSE_SECURE}}
      username: ${{GRAFANA_CLICKHOUSE_USER}}
    secureJsonData:
      password: ${{GRAFANA_CLICKHOUSE_PASSWORD}}
  - name: paystream Prometheus
    uid: paystream-prometheus
    type: {PROMETHEUS_PLUGIN}
    access: proxy
    url: ${{GRAFANA_PROMETHEUS_URL}}
"""


def _dashboards_yaml() -> str:
    return f"""\
# Generated by `{REGENERATE}`: edit the generator, not this.
# Mount deploy/grafana read-only at {DASHBOARDS_DIR} (Grafana reads the *.json in it).
apiVersion: 1
providers:
  - name: paystream
    folder: paystream
    type: file
    disableDeletion: true
    allowUiUpdates: false
    updateIntervalSeconds: 60
    options:
      path: {DASHBOARDS_DIR}
"""


def render() -> dict[str, str]:
    """Every generated file: path under ``deploy/grafana`` -> its text."""
    return {
        ANALYTICS_FILE: _json(analytics_dashboard()),
        METRICS_FILE: _json(metrics_dashboard()),
        DATASOURCES_FILE: _datasources_yaml(),
        DASHBOARDS_FILE: _dashboards_yaml(),
    }


def stale(out: Path, files: dict[str, str]) -> list[str]:
    """The generated files that ``out`` lacks or holds with other contents."""
    return [
        name
        for name, text in files.items()
        if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != text
    ]


def write(out: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paystream.analytics.grafana",
        description="Write paystream's Grafana dashboards and provisioning files.",
    )
    parser.add_argument("--out", type=Path, required=True, help="e.g. deploy/grafana")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when --out is out of date"
    )
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        found = stale(args.out, files)
        for name in found:
            print(f"{args.out / name} is out of date: run {REGENERATE}")
        return 1 if found else 0
    write(args.out, files)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
