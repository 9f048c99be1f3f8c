"""The ``paystream`` command."""

from __future__ import annotations

import argparse
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from paystream import services
from paystream.settings import Settings
from paystream.topology import describe

METRICS_PORT_DEFAULT = 9464
SINK_METRICS_PORT_DEFAULT = 9465
API_PORT_DEFAULT = 8000
CLIENT_SECRET_ENV = "PAYSTREAM_CLIENT_SECRET"
PORT_MAX = 65535
WORKER_NAME_LENGTH_MAX = 64
WORKER_NAME_PATTERN = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{WORKER_NAME_LENGTH_MAX - 1}}}")


def _services(args: argparse.Namespace, settings: Settings) -> int:
    action: str = args.action
    if action == "up":
        endpoints = services.up(settings)
        print(f"kafka      {endpoints.kafka_bootstrap}")
        print(f"postgres   {endpoints.postgres_dsn}")
        print(f"clickhouse {endpoints.clickhouse_dsn}")
        print(f"oidc       {endpoints.oidc_issuer}")
        return 0
    if action == "down":
        services.down(settings)
        print("services stopped")
        return 0
    if action == "status":
        rows = services.status(settings)
        for row in rows:
            print(row.line())
        return 0 if all(row.healthy for row in rows) else 1
    print(services.logs(settings, args.name, lines=args.lines))
    return 0


def _topology(args: argparse.Namespace, settings: Settings) -> int:
    topology = describe.build(settings)
    print(describe.describe(topology), end="")
    describe.write(topology, args.write)
    print(f"wrote {args.write}", file=sys.stderr)
    return 0


def _demo(_args: argparse.Namespace, settings: Settings) -> int:
    from paystream import demo

    return demo.run(settings)


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= PORT_MAX:
        raise argparse.ArgumentTypeError(f"port must be in 0..{PORT_MAX}")
    return port


def _worker_name(text: str) -> str:
    """A name that is safe as a file name: it names the worker's log and metrics directory."""
    if not WORKER_NAME_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"worker names are 1..{WORKER_NAME_LENGTH_MAX} of [A-Za-z0-9._-], not starting with '.'"
        )
    return text


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from paystream.agents.supervisor import WorkerProcess, export_metrics_to, supervise

    # Before anything imports prometheus_client: it picks multiprocess mode at import.
    metrics_dir = export_metrics_to(settings.data_dir / "metrics" / args.name)
    from paystream.agents import metrics

    log_file = settings.data_dir / "logs" / f"{args.name}.log"
    print(f"worker {args.name}: logging to {log_file}; restarted whenever it exits")
    server = metrics.serve(args.metrics_port, host=args.metrics_host) if args.metrics_port else None
    if server is not None:
        print(f"worker {args.name}: metrics on http://{args.metrics_host}:{server.port}/metrics")
    try:
        return supervise(WorkerProcess(args.name, {}, log_file, metrics_dir=metrics_dir))
    finally:
        if server is not None:
            server.stop()


def _sink(args: argparse.Namespace, settings: Settings) -> int:
    from paystream.agents.supervisor import export_metrics_to

    # Before anything imports prometheus_client: it picks multiprocess mode at import.
    export_metrics_to(settings.data_dir / "metrics" / args.name)
    from paystream.agents import metrics
    from paystream.audit.sink import PostgresSink

    sink = PostgresSink(settings, dsn=services.postgres_dsn(settings), name=args.name)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: sink.stop())
    server = metrics.serve(args.metrics_port, host=args.metrics_host) if args.metrics_port else None
    if server is not None:
        print(f"sink {args.name}: metrics on http://{args.metrics_host}:{server.port}/metrics")
    try:
        sink.run()
    finally:
        if server is not None:
            server.stop()
    return 0


def _db(_args: argparse.Namespace, settings: Settings) -> int:
    from paystream.audit.migrate import migrate

    applied = migrate(services.postgres_dsn(settings))
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print("the audit store is up to date" if not applied else f"{len(applied)} applied")
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from paystream.audit.audit_verify import ledger_topic_of, verify_store

    report = verify_store(
        services.postgres_dsn(settings), ledger_topic=ledger_topic_of(settings), progress=sys.stderr
    )
    print(json.dumps(report.to_json(), indent=2) if args.json else report.summary())
    return 0 if report.ok else 1


def _api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from paystream.api.app import create_app

    app = create_app(
        settings, issuer=services.oidc_issuer(settings), dsn=services.postgres_dsn(settings)
    )
    print(f"api: http://{args.host}:{args.port} (tokens from {services.oidc_issuer(settings)})")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from paystream.services.keycloak import client_credentials_token

    if settings.oidc_issuer is None:
        client = services.local_keycloak(settings).client(args.client)
        secret = client.secret
    else:
        secret = os.environ.get(CLIENT_SECRET_ENV, "")
        if not secret:
            print(f"paystream: set {CLIENT_SECRET_ENV} for {args.client}", file=sys.stderr)
            return 2
    print(client_credentials_token(services.oidc_issuer(settings), args.client, secret))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paystream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    svc = commands.add_parser(
        "services", help="run Kafka, Postgres, ClickHouse and Keycloak locally"
    )
    actions = svc.add_subparsers(dest="action", required=True)
    actions.add_parser("up", help="start (idempotent) and wait until healthy")
    actions.add_parser("down", help="stop what up started")
    actions.add_parser("status", help="address, pid, version and health of each service")
    log = actions.add_parser("logs", help="tail one service's log")
    log.add_argument("name", choices=services.SERVICE_NAMES)
    log.add_argument("-n", "--lines", type=int, default=services.LOG_LINES_DEFAULT)
    svc.set_defaults(handler=_services)
    demo = commands.add_parser("demo", help="services, two workers, a workload and a summary")
    demo.set_defaults(handler=_demo)
    worker = commands.add_parser("worker", help="run a ledger worker under a supervisor")
    worker.add_argument(
        "--name", type=_worker_name, default="worker-1", help="unique per worker process"
    )
    worker.add_argument(
        "--metrics-port",
        type=_port,
        default=METRICS_PORT_DEFAULT,
        help="serve Prometheus /metrics on this port (0: do not serve)",
    )
    worker.add_argument("--metrics-host", default="127.0.0.1", help="address /metrics listens on")
    worker.set_defaults(handler=_worker)
    sink = commands.add_parser("sink", help="load what the ledger recorded into a database")
    sink_kinds = sink.add_subparsers(dest="kind", required=True)
    postgres = sink_kinds.add_parser(
        "postgres", help="the audit store and read models, exactly once"
    )
    postgres.add_argument("--name", type=_worker_name, default="sink-1", help="unique per copy")
    postgres.add_argument(
        "--metrics-port", type=_port, default=SINK_METRICS_PORT_DEFAULT,
        help="serve Prometheus /metrics on this port (0: do not serve)",
    )  # fmt: skip
    postgres.add_argument("--metrics-host", default="127.0.0.1", help="address /metrics listens on")
    postgres.set_defaults(handler=_sink)
    api = commands.add_parser("api", help="the REST API (bearer tokens from the OIDC issuer)")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on")
    api.add_argument("--port", type=_port, default=API_PORT_DEFAULT)
    api.set_defaults(handler=_api)
    token = commands.add_parser(
        "token", help="an access token (client credentials) from the configured issuer"
    )
    token.add_argument(
        "--client", default="partner-demo-1", help="the OAuth client (default: %(default)s)"
    )
    token.set_defaults(handler=_token)
    db = commands.add_parser("db", help="the audit store's schema")
    db_actions = db.add_subparsers(dest="action", required=True)
    db_actions.add_parser("migrate", help="apply the migrations not applied yet (forward only)")
    db.set_defaults(handler=_db)
    audit = commands.add_parser("audit", help="check the audit store")
    audit_actions = audit.add_subparsers(dest="action", required=True)
    audit_verify = audit_actions.add_parser(
        "verify",
        help="hash chains, balances and accounts in Postgres, and the ledger topic up to the"
        " sink's stored positions; exit 1 naming the first bad rows",
    )
    audit_verify.add_argument("--json", action="store_true", help="print the report as JSON")
    audit.set_defaults(handler=_audit)
    topo = commands.add_parser("topology", help="the agent graph, like Kafka Streams' describe()")
    topo_actions = topo.add_subparsers(dest="action", required=True)
    desc = topo_actions.add_parser(
        "describe", help="print topics -> agents -> tables -> topics; write a Mermaid diagram"
    )
    desc.add_argument(
        "--write",
        type=Path,
        default=describe.DOC_PATH_DEFAULT,
        metavar="PATH",
        help="Markdown file for the diagram (default: %(default)s)",
    )
    topo.set_defaults(handler=_topology)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    try:
        code: int = args.handler(args, settings)
    except services.ServiceError as error:
        print(f"paystream: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
