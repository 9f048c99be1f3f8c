"""Commands that run and check the platform: services, demo, worker, sink, api, db, audit,
topology. Their output is what it was with argparse (scripts and tests read it)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from paystream import services
from paystream.cli.common import (
    ANALYTICS_PORT_DEFAULT,
    API_PORT_DEFAULT,
    LOCAL_HOST,
    METRICS_PORT_DEFAULT,
    PORT_MAX,
    SINK_METRICS_PORT_DEFAULT,
    MetricsHost,
    MetricsPort,
    err,
    worker_name,
)
from paystream.settings import Settings
from paystream.topology import describe

services_app = typer.Typer(
    help="run Kafka, Postgres, ClickHouse and Keycloak locally", no_args_is_help=True
)
sink_app = typer.Typer(help="load what the ledger recorded into a database", no_args_is_help=True)
db_app = typer.Typer(help="the audit store's schema", no_args_is_help=True)
audit_app = typer.Typer(help="check the audit store", no_args_is_help=True)
topology_app = typer.Typer(
    help="the agent graph, like Kafka Streams' describe()", no_args_is_help=True
)


@services_app.command("up", help="start (idempotent) and wait until healthy")
def services_up() -> int:
    with err.status("starting the services and waiting until they are healthy ..."):
        endpoints = services.up(Settings())
    print(f"kafka      {endpoints.kafka_bootstrap}")
    print(f"postgres   {endpoints.postgres_dsn}")
    print(f"clickhouse {endpoints.clickhouse_dsn}")
    print(f"oidc       {endpoints.oidc_issuer}")
    return 0


@services_app.command("down", help="stop what up started")
def services_down() -> int:
    services.down(Settings())
    print("services stopped")
    return 0


@services_app.command("status", help="address, pid, version and health of each service")
def services_status() -> int:
    rows = services.status(Settings())
    for row in rows:
        print(row.line())
    return 0 if all(row.healthy for row in rows) else 1


@services_app.command("logs", help="tail one service's log")
def services_logs(
    name: services.ServiceName,
    lines: Annotated[int, typer.Option("-n", "--lines")] = services.LOG_LINES_DEFAULT,
) -> int:
    print(services.logs(Settings(), name, lines=lines))
    return 0


def demo(
    serve: Annotated[
        bool, typer.Option("--serve/--exit", help="keep serving after the summary, or end")
    ] = True,
) -> int:
    """the platform with a workload, its checks, then the dashboard until Ctrl-C"""
    from paystream import demo

    return demo.run(Settings(), serve=serve)


def worker(
    name: Annotated[
        str, typer.Option(parser=worker_name, help="unique per worker process")
    ] = "worker-1",
    metrics_port: MetricsPort = METRICS_PORT_DEFAULT,
    metrics_host: MetricsHost = LOCAL_HOST,
) -> int:
    """run a ledger worker under a supervisor"""
    from paystream.agents.supervisor import WorkerProcess, export_metrics_to, supervise

    settings = Settings()
    # Before anything imports prometheus_client: it picks multiprocess mode at import.
    metrics_dir = export_metrics_to(settings.data_dir / "metrics" / name)
    from paystream.agents import metrics

    log_file = settings.data_dir / "logs" / f"{name}.log"
    print(f"worker {name}: logging to {log_file}; restarted whenever it exits")
    server = metrics.serve(metrics_port, host=metrics_host) if metrics_port else None
    if server is not None:
        print(f"worker {name}: metrics on http://{metrics_host}:{server.port}/metrics")
    try:
        return supervise(WorkerProcess(name, {}, log_file, metrics_dir=metrics_dir))
    finally:
        if server is not None:
            server.stop()


@sink_app.command("postgres", help="the audit store and read models, exactly once")
def sink_postgres(
    name: Annotated[str, typer.Option(parser=worker_name, help="unique per copy")] = "sink-1",
    metrics_port: MetricsPort = SINK_METRICS_PORT_DEFAULT,
    metrics_host: MetricsHost = LOCAL_HOST,
) -> int:
    from paystream.agents.supervisor import export_metrics_to

    settings = Settings()
    # Before anything imports prometheus_client: it picks multiprocess mode at import.
    export_metrics_to(settings.data_dir / "metrics" / name)
    from paystream.agents import metrics
    from paystream.audit.sink import PostgresSink

    sink = PostgresSink(settings, dsn=services.postgres_dsn(settings), name=name)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: sink.stop())
    server = metrics.serve(metrics_port, host=metrics_host) if metrics_port else None
    if server is not None:
        print(f"sink {name}: metrics on http://{metrics_host}:{server.port}/metrics")
    try:
        sink.run()
    finally:
        if server is not None:
            server.stop()
    return 0


def api(
    host: Annotated[str, typer.Option(help="address to listen on")] = LOCAL_HOST,
    port: Annotated[int, typer.Option(min=0, max=PORT_MAX)] = API_PORT_DEFAULT,
) -> int:
    """the REST API (bearer tokens from the OIDC issuer)"""
    import uvicorn

    from paystream.api.app import create_app

    settings = Settings()
    issuer = services.oidc_issuer(settings)
    app = create_app(settings, issuer=issuer, dsn=services.postgres_dsn(settings))
    print(f"api: http://{host}:{port} (tokens from {issuer})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0


def analytics(
    host: Annotated[str, typer.Option(help="address to listen on")] = LOCAL_HOST,
    port: Annotated[int, typer.Option(min=0, max=PORT_MAX)] = ANALYTICS_PORT_DEFAULT,
    name: Annotated[str, typer.Option(parser=worker_name, help="unique per copy")] = "analytics-1",
    stale_after_s: Annotated[
        float, typer.Option(min=1.0, help="the page warns when data is older than this")
    ] = 30.0,
    sink: Annotated[bool, typer.Option(help="run the sink (--no-sink: serve only)")] = True,
    refresh_s: Annotated[
        float, typer.Option(min=1.0, max=3600.0, help="the page asks for new data this often")
    ] = 5.0,
) -> int:
    """the analytics sink into ClickHouse and the ops dashboard (/ops, /v1/analytics)"""
    from paystream.analytics.process import Options, run

    settings = Settings()
    issuer = services.oidc_issuer(settings)
    print(f"analytics: http://{host}:{port}/ops (tokens from {issuer})", flush=True)
    options = Options(host=host, port=port, name=name, issuer=issuer,
                      stale_after_s=stale_after_s, sink=sink, refresh_s=refresh_s)  # fmt: skip
    return run(settings, options)


@db_app.command("migrate", help="apply the migrations not applied yet (forward only)")
def db_migrate() -> int:
    from paystream.audit.migrate import migrate

    applied = migrate(services.postgres_dsn(Settings()))
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print("the audit store is up to date" if not applied else f"{len(applied)} applied")
    return 0


@audit_app.command(
    "verify",
    help="hash chains, balances and accounts in Postgres, and the ledger topic up to the"
    " sink's stored positions; exit 1 naming the first bad rows",
)
def audit_verify(
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> int:
    import json

    from paystream.audit.audit_verify import ledger_topic_of, verify_store

    settings = Settings()
    report = verify_store(
        services.postgres_dsn(settings), ledger_topic=ledger_topic_of(settings), progress=sys.stderr
    )
    print(json.dumps(report.to_json(), indent=2) if as_json else report.summary())
    return 0 if report.ok else 1


@topology_app.command(
    "describe", help="print topics -> agents -> tables -> topics; write a Mermaid diagram"
)
def topology_describe(
    write: Annotated[
        Path, typer.Option(metavar="PATH", help="Markdown file for the diagram")
    ] = describe.DOC_PATH_DEFAULT,
) -> int:
    topology = describe.build(Settings())
    print(describe.describe(topology), end="")
    describe.write(topology, write)
    print(f"wrote {write}", file=sys.stderr)
    return 0
