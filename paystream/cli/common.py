"""What the command groups share: consoles, option types, limits and defaults."""

from __future__ import annotations

import os
import re
import sys
from typing import Annotated

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
