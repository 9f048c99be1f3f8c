"""What the command groups share: consoles, option types, limits and defaults."""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Annotated, Protocol

import typer
from rich.console import Console

METRICS_PORT_DEFAULT = 9464
SINK_METRICS_PORT_DEFAULT = 9465
API_PORT_DEFAULT = 8000
ANALYTICS_PORT_DEFAULT = 8050
PORT_MAX = 65535
WORKER_NAME_LENGTH_MAX = 64
WORKER_NAME_PATTERN = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{WORKER_NAME_LENGTH_MAX - 1}}}")
LOCAL_HOST = "127.0.0.1"

PIPE_WIDTH = 512
"""Widest line into a pipe or file, so ids never fold there (a table is as wide as its
content; a terminal's own width, or COLUMNS, rules otherwise)."""


def _width() -> int | None:
    return None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH


out = Console(highlight=False, width=_width())
"""Standard output (tables for people; ``--json`` output goes through ``print``)."""
err = Console(stderr=True, highlight=False, soft_wrap=True)
"""Standard error: keys to retry with, spinners, problems."""


def worker_name(text: str) -> str:
    """A name that is safe as a file name: it names the worker's log and metrics directory."""
    if not WORKER_NAME_PATTERN.fullmatch(text):
        raise typer.BadParameter(
            f"worker names are 1..{WORKER_NAME_LENGTH_MAX} of [A-Za-z0-9._-], not starting with '.'"
        )
    return text


MetricsHost = Annotated[str, typer.Option(help="address /metrics listens on")]
MetricsPort = Annotated[
    int,
    typer.Option(
        min=0, max=PORT_MAX, help="serve Prometheus /metrics on this port (0: do not serve)"
    ),
]


class Service(Protocol):
    """A long-running process part: ``run`` until ``stop`` (from a signal handler)."""

    def run(self) -> None: ...

    def stop(self) -> None: ...


def run_service(
    service: Service, *, label: str, doing: str, metrics_port: int, metrics_host: str
) -> int:
    """Run ``service`` until SIGTERM or SIGINT stops it, its Prometheus /metrics served from
    the multiprocess directory on ``metrics_port`` (0: not served); exit code 0."""
    from paystream.agents import metrics

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: service.stop())
    server = metrics.serve(metrics_port, host=metrics_host) if metrics_port else None
    print(f"{label}: {doing}", flush=True)
    if server is not None:
        print(f"{label}: metrics on http://{metrics_host}:{server.port}/metrics", flush=True)
    try:
        service.run()
    finally:
        if server is not None:
            server.stop()
    return 0
