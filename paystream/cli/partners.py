"""``paystream partners``: onboard partners, and run the fan-out of their events.

``add`` prints, once, everything the partner's systems need (Kafka client settings, a kcat
command, the OAuth client for the REST API, the webhook signing secret); ``rotate-secret``
replaces the Kafka password and the OAuth client secret (the old ones stop working at once);
``remove`` withdraws access everywhere and deletes the topic (the history stays in Postgres).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from paystream.cli.client import API_URL_DEFAULT, API_URL_ENV
from paystream.cli.common import LOCAL_HOST, PORT_MAX, err, out, run_service
from paystream.settings import Settings

partners_app = typer.Typer(
    help="partners: their Kafka topic and credentials, OAuth client and webhooks",
    no_args_is_help=True,
)
FANOUT_METRICS_PORT_DEFAULT = 9471
EXIT_REFUSED = 1

PartnerId = Annotated[str, typer.Argument(help="the partner's id: 1-40 of a-z, 0-9 and '-'")]
ApiUrl = Annotated[
    str, typer.Option("--api", envvar=API_URL_ENV, help="the API's base URL, for the printout")
]


@partners_app.command("add")
def add(
    partner_id: PartnerId,
    name: Annotated[str, typer.Option(help="the partner's name")],
    email: Annotated[str, typer.Option(help="the partner's contact (exhausted webhooks)")],
    webhook_url: Annotated[
        str | None, typer.Option(help="where to POST signed events (http or https)")
    ] = None,
    api: ApiUrl = API_URL_DEFAULT,
) -> int:
    """onboard a partner and print its client configuration (shown once)"""
    from paystream import services
    from paystream.partners import client_config, onboarding

    settings = Settings()
    keycloak = services.managed_keycloak(settings)
    try:
        with err.status(f"onboarding {partner_id} ..."):
            credentials = onboarding.add(
                settings, keycloak, partner_id=partner_id, name=name, contact_email=email,
                webhook_url=webhook_url,
            )  # fmt: skip
    except onboarding.OnboardingError as error:
        err.print(f"paystream: {error}")
        return EXIT_REFUSED
    if keycloak is None:
        err.print(f"note: register an OAuth client with the claim partner_id={partner_id} at "
                  f"{settings.oidc_issuer} (another provider is not driven from here)")  # fmt: skip
    issuer = services.oidc_issuer(settings)
    out.print(client_config.render(credentials, bootstrap=settings.bootstrap, api_url=api,
                                   issuer=issuer), soft_wrap=True)  # fmt: skip
    return 0


@partners_app.command("rotate-secret")
def rotate_secret(partner_id: PartnerId, api: ApiUrl = API_URL_DEFAULT) -> int:
    """new Kafka password and OAuth client secret; the old ones stop working at once"""
    from paystream import services
    from paystream.partners import client_config, onboarding

    settings = Settings()
    keycloak = services.managed_keycloak(settings)
    try:
        credentials = onboarding.rotate_secret(settings, keycloak, partner_id=partner_id)
    except onboarding.OnboardingError as error:
        err.print(f"paystream: {error}")
        return EXIT_REFUSED
    issuer = services.oidc_issuer(settings)
    out.print(client_config.render(credentials, bootstrap=settings.bootstrap, api_url=api,
                                   issuer=issuer), soft_wrap=True)  # fmt: skip
    return 0


@partners_app.command("remove")
def remove(partner_id: PartnerId) -> int:
    """withdraw a partner's access (Kafka, OAuth, webhooks) and delete its topic"""
    from paystream import services
    from paystream.partners import onboarding

    settings = Settings()
    keycloak = services.managed_keycloak(settings)
    try:
        onboarding.remove(settings, keycloak, partner_id=partner_id)
    except onboarding.OnboardingError as error:
        err.print(f"paystream: {error}")
        return EXIT_REFUSED
    out.print(f"partner {partner_id} removed")
    return 0


@partners_app.command("list")
def list_partners() -> int:
    """the partners, their status, contact and webhook endpoints"""
    from paystream import services
    from paystream.audit import db
    from paystream.audit.migrate import migrate
    from paystream.partners import registry

    dsn = services.postgres_dsn(Settings())
    migrate(dsn)
    table = Table("partner", "name", "status", "contact", "webhook endpoints", "since")
    with db.connect(dsn, autocommit=True) as conn:
        for partner in registry.list_partners(conn):
            urls = [e.url for e in registry.endpoints(conn, partner.partner_id) if e.enabled]
            table.add_row(partner.partner_id, partner.name, partner.status,
                          partner.contact_email, "\n".join(urls) or "-",
                          partner.created_at.isoformat(timespec="seconds"))  # fmt: skip
    out.print(table)
    return 0


@partners_app.command("fanout")
def fanout(
    name: Annotated[str, typer.Option(help="unique per copy: its Kafka transactional id")] = (
        "fanout-1"
    ),
    metrics_port: Annotated[
        int, typer.Option(min=0, max=PORT_MAX, help="0: no metrics server")
    ] = FANOUT_METRICS_PORT_DEFAULT,
    metrics_host: Annotated[str, typer.Option()] = LOCAL_HOST,
) -> int:
    """copy each partner's events to its own topic, exactly once"""
    import logging

    from paystream.agents.supervisor import export_metrics_to

    settings = Settings()
    # Before anything imports prometheus_client: it picks multiprocess mode at import.
    export_metrics_to(settings.data_dir / "metrics" / name)
    from paystream.partners.fanout import FanoutService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    service = FanoutService(settings, name=name)
    return run_service(
        service, label=f"fanout {name}", doing="partners' events to their own topics",
        metrics_port=metrics_port, metrics_host=metrics_host,
    )  # fmt: skip
