"""The ``paystream`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from paystream import services
from paystream.settings import Settings
from paystream.topology import describe


def _services(args: argparse.Namespace, settings: Settings) -> int:
    action: str = args.action
    if action == "up":
        endpoints = services.up(settings)
        print(f"kafka      {endpoints.kafka_bootstrap}")
        print(f"postgres   {endpoints.postgres_dsn}")
        print(f"clickhouse {endpoints.clickhouse_dsn}")
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


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from paystream.agents.supervisor import WorkerProcess, supervise

    log_file = settings.data_dir / "logs" / f"{args.name}.log"
    print(f"worker {args.name}: logging to {log_file}; restarted whenever it exits")
    return supervise(WorkerProcess(args.name, {}, log_file))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paystream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    svc = commands.add_parser("services", help="run Kafka, Postgres and ClickHouse locally")
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
    worker.add_argument("--name", default="worker-1", help="unique per worker process")
    worker.set_defaults(handler=_worker)
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
