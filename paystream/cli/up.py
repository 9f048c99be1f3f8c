"""``paystream up``: the whole platform in the foreground, for a person trying it.

The services (``services.up``; left running on exit, as the demo leaves them), ``--workers``
ledger workers and a Postgres sink (``runner.running``), and the API as a ``paystream api``
child. Waits until the API's ``/readyz`` answers 200, prints where each part answers,
restarts a child that dies (within a budget), and on Ctrl-C or SIGTERM stops the children it
started: workers, sink and API.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
from rich import box
from rich.table import Table

from paystream import services
from paystream.cli.auth import CLIENT_DEFAULT
from paystream.cli.common import (
    ANALYTICS_PORT_DEFAULT,
    API_PORT_DEFAULT,
    LOCAL_HOST,
    METRICS_PORT_DEFAULT,
    PORT_MAX,
    SINK_METRICS_PORT_DEFAULT,
    MetricsPort,
    err,
    out,
)
from paystream.services.process import free_port, tail, wait_until
from paystream.settings import Settings

if TYPE_CHECKING:
    from paystream.agents.supervisor import WorkerGroup, WorkerProcess
    from paystream.runner import Platform

WORKERS_DEFAULT = 2
WORKERS_MAX = 16
SINKS = 1
API_READY_TIMEOUT_S = 120.0
READY_PROBE_TIMEOUT_S = 2.0
SUPERVISE_TICK_S = 1.0
RESTARTS_MAX = 20
"""Children restarted in one run of ``up`` before it gives up (a crash loop is a bug)."""
LOG_TAIL_LINES = 20


def up(
    workers: Annotated[
        int, typer.Option(min=1, max=WORKERS_MAX, help="ledger worker processes")
    ] = WORKERS_DEFAULT,
    api_port: Annotated[
        int, typer.Option(min=1, max=PORT_MAX, help="the API's port")
    ] = API_PORT_DEFAULT,
    analytics_port: Annotated[
        int, typer.Option(min=1, max=PORT_MAX, help="the analytics process's port (/ops)")
    ] = ANALYTICS_PORT_DEFAULT,
    metrics_port: MetricsPort = METRICS_PORT_DEFAULT,
    sink_metrics_port: MetricsPort = SINK_METRICS_PORT_DEFAULT,
) -> int:
    """the whole platform in the foreground: services, workers, sinks, the API, the dashboard

    Ctrl-C (or SIGTERM) stops the workers, the sinks, the API and the analytics process; the
    services stay up.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):  # both unwind as Ctrl-C does, even when
        signal.signal(signum, signal.default_int_handler)  # a shell started us with SIGINT ignored
    settings = Settings()
    with err.status("starting the services (Kafka, Postgres, ClickHouse, Keycloak) ..."):
        endpoints = services.up(settings)
    ports = (metrics_port, sink_metrics_port)
    try:
        with started(
            settings, workers=workers, api_port=api_port, analytics_port=analytics_port,
            metrics_ports=ports,
        ) as parts:  # fmt: skip
            return serve(parts, settings, endpoints.oidc_issuer)
    finally:
        err.print("the services are still running: `paystream services down` stops them")


class Parts:
    """What ``up`` started: the platform, the API and analytics children, the metrics URLs."""

    def __init__(
        self, platform: Platform, api: WorkerGroup, api_url: str, analytics: WorkerGroup,
        analytics_url: str, rail: WorkerGroup, rail_url: str, partners: WorkerGroup,
        smtp_port: int | None,
    ) -> None:  # fmt: skip
        self.platform = platform
        self.api = api
        self.api_url = api_url
        self.analytics = analytics
        self.analytics_url = analytics_url
        self.rail = rail
        """The bank-rail simulator and the rail connector that pays out through it."""
        self.rail_url = rail_url
        self.partners = partners
        """The partner fan-out, the webhook delivery service, the notifier and the mailbox."""
        self.smtp_port = smtp_port
        """The local mailbox's SMTP port (None: a configured SMTP server is used)."""
        self.metrics_urls: dict[str, str] = {}

    @property
    def groups(self) -> tuple[WorkerGroup, ...]:
        return (
            self.platform.workers, self.platform.sinks, self.api, self.analytics, self.rail,
            self.partners,
        )  # fmt: skip


@contextlib.contextmanager
def started(
    settings: Settings,
    *,
    workers: int,
    api_port: int,
    analytics_port: int,
    metrics_ports: tuple[int, int],
) -> Iterator[Parts]:
    """Workers and a sink (runner.running), the API and analytics children, the metrics
    servers."""  # fmt: skip
    from paystream.agents.supervisor import WorkerGroup
    from paystream.runner import child_env, running

    log_dir = settings.data_dir / "logs"
    env = child_env(settings, log_level="warn") | {
        "PAYSTREAM_POSTGRES_DSN": services.postgres_dsn(settings),
    }
    api = WorkerGroup(
        count=1, env=env, log_dir=log_dir, prefix="api", command=lambda _name: api_command(api_port)
    )
    analytics = WorkerGroup(
        count=1, env=env, log_dir=log_dir, prefix="analytics",
        command=lambda _name: analytics_command(analytics_port),
    )  # fmt: skip
    rail_port = free_port()
    rail_url = f"http://{LOCAL_HOST}:{rail_port}"
    rail = WorkerGroup(
        count=2, env=env, log_dir=log_dir, prefix="rail",
        command=lambda name: rail_commands(name, rail_port),
    )  # fmt: skip
    roles = partner_roles(settings)
    smtp_port = free_port() if "mailbox" in roles else None
    partners = WorkerGroup(
        count=len(roles), log_dir=log_dir, prefix="partners",
        env=env | ({} if smtp_port is None else {"PAYSTREAM_SMTP_PORT": str(smtp_port)}),
        command=lambda name: partner_command(roles[int(name.rsplit("-", 1)[1]) - 1]),
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        with err.status(f"starting {workers} workers, the sinks, the API and the dashboard ..."):
            platform = stack.enter_context(
                running(settings, workers=workers, log_dir=log_dir, sinks=SINKS)
            )
            parts = Parts(
                platform, stack.enter_context(api), f"http://{LOCAL_HOST}:{api_port}",
                stack.enter_context(analytics), f"http://{LOCAL_HOST}:{analytics_port}",
                stack.enter_context(rail), rail_url, stack.enter_context(partners), smtp_port,
            )  # fmt: skip
        parts.metrics_urls = stack.enter_context(metrics_servers(settings, platform, metrics_ports))
        yield parts
        err.print("stopping the workers, the sinks, the API and the dashboard ...")


def api_command(port: int) -> tuple[str, ...]:
    """``paystream api --port <port>`` as a child process."""
    return (sys.executable, "-m", "paystream.cli", "api", "--host", LOCAL_HOST, "--port", str(port))


RAIL_SIM_FAILURES = ("--fail", "AC04=0.02", "--fail", "AM04=0.01")
"""The demo bank refuses about 3 % of payouts (closed account, insufficient funds)."""


def rail_commands(name: str, port: int) -> tuple[str, ...]:
    """``rail-1``: the bank-rail simulator on ``port``; ``rail-2``: the connector to it."""
    cli = (sys.executable, "-m", "paystream.cli")
    if name.endswith("-1"):
        return (*cli, "rail-sim", "--host", LOCAL_HOST, "--port", str(port), *RAIL_SIM_FAILURES)
    url = f"http://{LOCAL_HOST}:{port}"
    return (*cli, "rail", "--url", url, "--name", "rail-connector", "--metrics-port", "0")


def partner_roles(settings: Settings) -> tuple[str, ...]:
    """What tells partners and holders what happened; the local mailbox without an SMTP URL."""
    roles = ("fanout", "webhooks", "notify")
    return roles if settings.smtp_url is not None else (*roles, "mailbox")


def partner_command(role: str) -> tuple[str, ...]:
    """One of :func:`partner_roles` as a child process (its metrics not served, as the rail's)."""
    cli = (sys.executable, "-m", "paystream.cli")
    if role == "fanout":
        return (*cli, "partners", "fanout", "--metrics-port", "0")
    if role == "mailbox":
        return (*cli, "mailbox")
    return (*cli, role, "--metrics-port", "0")


def analytics_command(port: int) -> tuple[str, ...]:
    """``paystream analytics --port <port>``: the analytics sink and the dashboard."""
    cli = (sys.executable, "-m", "paystream.cli")
    return (*cli, "analytics", "--host", LOCAL_HOST, "--port", str(port))


@contextlib.contextmanager
def metrics_servers(
    settings: Settings, platform: Platform, ports: tuple[int, int]
) -> Iterator[dict[str, str]]:
    """/metrics of the workers (their shared directory) and of the sink, from this process."""
    from paystream.agents import metrics

    workers_port, sink_port = ports
    sink_dir = settings.data_dir / "metrics" / platform.sinks.workers[0].name
    sink_dir.mkdir(parents=True, exist_ok=True)  # the sink makes it afresh when it starts
    wanted = {
        "workers": (workers_port, platform.workers.metrics_dir),
        "sink": (sink_port, sink_dir),
    }
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for part, (port, directory) in wanted.items():
            if port and directory is not None:
                server = metrics.serve(port, host=LOCAL_HOST, directory=directory)
                stack.callback(server.stop)
                urls[part] = f"http://{LOCAL_HOST}:{server.port}/metrics"
        yield urls


def serve(parts: Parts, settings: Settings, issuer: str) -> int:
    """Wait for the API and the dashboard, say where everything is, then keep the children
    running until Ctrl-C/SIGTERM (0) or until a crash loop spends the restart budget (1)."""
    try:
        api = _answering("the API", parts.api_url, parts.api.workers[0], is_ready)
        if not api or not _answering(
            "the dashboard", parts.analytics_url, parts.analytics.workers[0], answers
        ):
            return 1
        print_where(parts, settings, issuer)
    except KeyboardInterrupt:
        return _interrupted()
    return run_until_interrupted(parts.groups, log_dir=settings.data_dir / "logs")


def run_until_interrupted(groups: Sequence[WorkerGroup], *, log_dir: Path) -> int:
    """:func:`keep_running` until Ctrl-C or SIGTERM (0), or until it gives up (1)."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # both unwind as Ctrl-C does
        signal.signal(signum, signal.default_int_handler)
    try:
        return keep_running(groups, log_dir=log_dir)
    except KeyboardInterrupt:
        return _interrupted()


def _interrupted() -> int:
    for signum in (signal.SIGINT, signal.SIGTERM):  # let the children stop in peace
        signal.signal(signum, signal.SIG_IGN)
    return 0


def _answering(what: str, url: str, child: WorkerProcess, probe: Callable[[str], bool]) -> bool:
    """Wait (bounded) until ``probe(url)`` holds or the child died; say why when it did not."""
    with err.status(f"waiting until {what} at {url} answers ..."):
        wait_until(lambda: probe(url) or not child.alive, timeout_s=API_READY_TIMEOUT_S)
    if probe(url):
        return True
    err.print(f"{what} does not answer:\n{tail(child.log_file, lines=LOG_TAIL_LINES)}")
    return False


def is_ready(url: str) -> bool:
    """``url``/readyz answers 200."""
    return _ok(f"{url}/readyz")


def answers(url: str) -> bool:
    """``url``/healthz answers 200 (the process serves; its dependencies may still be away)."""
    return _ok(f"{url}/healthz")


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=READY_PROBE_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


def keep_running(groups: Sequence[WorkerGroup], *, log_dir: Path) -> int:
    """Restart whatever died, until a signal or RESTARTS_MAX restarts (then 1)."""
    restarts = 0
    while restarts <= RESTARTS_MAX:
        time.sleep(SUPERVISE_TICK_S)
        for group in groups:
            restarts += group.restart_dead()
    err.print(f"gave up after {RESTARTS_MAX} restarts; see the logs in {log_dir}")
    return 1


def print_where(parts: Parts, settings: Settings, issuer: str) -> None:
    """Where each part answers, and commands to try."""
    table = Table(title="paystream is up", box=box.SIMPLE, show_header=False, title_justify="left")
    table.add_column("part", style="bold")
    table.add_column("where", overflow="fold")
    for part, where in where_rows(parts, settings, issuer):
        table.add_row(part, where)
    out.print(table)
    api = "" if parts.api_url.endswith(f":{API_PORT_DEFAULT}") else f" --api {parts.api_url}"
    token = f"paystream token --client {CLIENT_DEFAULT}"
    for line in (
        "try:",
        f"  {token}",
        f'  curl -s -H "Authorization: Bearer $({token})" {parts.api_url}/v1/accounts',
        f"  paystream accounts open --currency EUR{api}",
        "Ctrl-C stops the workers, the sinks, the API and the dashboard (the services stay up)",
    ):
        out.print(line, markup=False, soft_wrap=True)


def dashboard_login(settings: Settings) -> list[str]:
    """How a person logs in to the ops page (lines to print)."""
    if settings.oidc_issuer is not None:
        return ["log in with an account of your identity provider that holds the ops:read scope"]
    user, password = services.local_keycloak(settings).ops_login()
    return [f"log in as {user} / {password} (this machine's Keycloak; kept in its secrets file)"]


def pid_of(worker: WorkerProcess) -> str:
    return "-" if worker.process is None else str(worker.process.pid)


def pids(group: WorkerGroup) -> str:
    return ", ".join(f"{worker.name} (pid {pid_of(worker)})" for worker in group.workers)


def where_rows(parts: Parts, settings: Settings, issuer: str) -> list[tuple[str, str]]:
    metrics = parts.metrics_urls
    return [
        ("API", f"{parts.api_url} (pid {pid_of(parts.api.workers[0])})"),
        ("OpenAPI", f"{parts.api_url}/openapi.json, docs at {parts.api_url}/docs"),
        ("API metrics", f"{parts.api_url}/metrics (scope ops:read: --client ops-console)"),
        ("dashboard", f"{parts.analytics_url}/ops (pid {pid_of(parts.analytics.workers[0])})"),
        ("dashboard login", "; ".join(dashboard_login(settings))),
        ("analytics JSON", f"{parts.analytics_url}/v1/analytics/funnel (scope ops:read)"),
        ("analytics metrics", f"{parts.analytics_url}/metrics"),
        ("bank rail (simulator)", f"{parts.rail_url}/v1/report ({pids(parts.rail)})"),
        ("partners", f"fan-out, webhooks, notifier ({pids(parts.partners)})"),
        ("mailbox", _mailbox(parts, settings)),
        ("OIDC issuer", issuer),
        (
            "clients",
            f"{CLIENT_DEFAULT}, partner-demo-2 (partners), ops-console (ops),"
            " compliance-officer (payout reviews)",
        ),
        ("Kafka", settings.bootstrap),
        ("workers", pids(parts.platform.workers)),
        ("workers metrics", metrics.get("workers", "not served (--metrics-port 0)")),
        ("sink", pids(parts.platform.sinks)),
        ("sink metrics", metrics.get("sink", "not served (--sink-metrics-port 0)")),
        ("logs", str(settings.data_dir / "logs")),
    ]


def _mailbox(parts: Parts, settings: Settings) -> str:
    if parts.smtp_port is None:
        return "a configured SMTP server (PAYSTREAM_SMTP_URL)"
    return f"smtp://{LOCAL_HOST}:{parts.smtp_port} -> {settings.data_dir / 'mailbox'} (Maildir)"
