"""``paystream webhooks``: the signed-webhook delivery service (until Ctrl-C or SIGTERM)."""

from __future__ import annotations

from typing import Annotated, Final

import typer

from paystream import services
from paystream.cli.common import LOCAL_HOST, MetricsHost, MetricsPort, run_service, worker_name

__all__ = ["CONCURRENCY_LIMIT", "WEBHOOKS_METRICS_PORT_DEFAULT", "webhooks"]

WEBHOOKS_METRICS_PORT_DEFAULT: Final = 9473
CONCURRENCY_LIMIT: Final = 4_096


def webhooks(
    name: Annotated[str, typer.Option(parser=worker_name, help="unique per copy")] = "webhooks-1",
    concurrency_max: Annotated[
        int,
        typer.Option(
            min=1, max=CONCURRENCY_LIMIT, help="requests in flight from this copy, all endpoints"
        ),
    ] = 256,
    metrics_port: MetricsPort = WEBHOOKS_METRICS_PORT_DEFAULT,
    metrics_host: MetricsHost = LOCAL_HOST,
) -> int:
    """deliver partners' events to their webhook endpoints, signed, retried, never lost"""
    import logging

    from paystream.agents.supervisor import export_metrics_to
    from paystream.settings import Settings

    settings = Settings()
    # Before anything imports prometheus_client: it picks multiprocess mode at import.
    export_metrics_to(settings.data_dir / "metrics" / name)
    from paystream.webhooks.service import WebhookService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    dsn = services.postgres_dsn(settings)
    service = WebhookService(settings, dsn=dsn, name=name, concurrency_max=concurrency_max)
    return run_service(
        service, label=f"webhooks {name}", doing="delivering", metrics_port=metrics_port,
        metrics_host=metrics_host,
    )  # fmt: skip
