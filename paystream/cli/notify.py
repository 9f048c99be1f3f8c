"""``paystream notify`` (email notifications, until Ctrl-C) and ``paystream mailbox`` (a local
SMTP server that keeps every message in a Maildir under the data directory)."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Final

import typer

from paystream import services
from paystream.cli.common import (
    LOCAL_HOST,
    PORT_MAX,
    MetricsHost,
    MetricsPort,
    run_service,
    worker_name,
)
from paystream.settings import Settings

__all__ = ["MAILBOX_WAIT_S", "NOTIFY_METRICS_PORT_DEFAULT", "mailbox", "notify"]

NOTIFY_METRICS_PORT_DEFAULT: Final = 9472
MAILBOX_WAIT_S: Final = 1.0
"""How often the mailbox's foreground checks for a stop signal."""


def notify(
    name: Annotated[str, typer.Option(parser=worker_name, help="unique per copy")] = "notify-1",
    metrics_port: MetricsPort = NOTIFY_METRICS_PORT_DEFAULT,
    metrics_host: MetricsHost = LOCAL_HOST,
) -> int:
    """email account holders about their completed payments and payouts (SMTP, retried)"""
    import logging

    from paystream.agents.supervisor import export_metrics_to

    settings = Settings()
    # Before anything imports prometheus_client: it picks multiprocess mode at import.
    export_metrics_to(settings.data_dir / "metrics" / name)
    from paystream.notify.service import NotifyService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    service = NotifyService(settings, dsn=services.postgres_dsn(settings), name=name)
    smtp = service.server
    return run_service(
        service, label=f"notify {name}", doing=f"emails to {smtp.security} {smtp.host}:{smtp.port}",
        metrics_port=metrics_port, metrics_host=metrics_host,
    )  # fmt: skip


def mailbox(
    port: Annotated[
        int | None, typer.Option(min=1, max=PORT_MAX, help="default: the smtp_port setting")
    ] = None,
) -> int:
    """a local SMTP server on 127.0.0.1 that keeps each email in <data dir>/mailbox (Maildir)"""
    from paystream.notify.mailbox import mailbox_dir, start

    settings = Settings()
    directory = mailbox_dir(settings)
    listen_port = port or settings.smtp_port
    controller = start(directory, host=LOCAL_HOST, port=listen_port)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stopping.set())
    print(f"mailbox: smtp://{LOCAL_HOST}:{listen_port} -> {directory}/new", flush=True)
    try:
        while not stopping.wait(MAILBOX_WAIT_S):
            pass
    finally:
        controller.stop()
    return 0
