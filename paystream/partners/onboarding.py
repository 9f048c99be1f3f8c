"""``paystream partners add|list|rotate-secret|remove``: every step, and what a partner gets.

Adding a partner makes, in this order (each step converges when run again, so an ``add``
that stopped half way is finished by running it again): the Kafka principal with a new
SCRAM password and its ACLs (on a ``scram`` broker), the partner's topic, its OAuth client
(local Keycloak), then its row and webhook endpoint in Postgres, written last so that a
partner the services see is complete. The passwords and secrets are returned once, for the
partner, and kept nowhere in paystream but where their systems need them (the broker keeps
a salted hash, Keycloak its client secret, Postgres the webhook signing secret).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from paystream.audit import db
from paystream.audit.migrate import migrate
from paystream.partners import kafka_access, oidc_clients, registry
from paystream.partners.registry import Endpoint, Partner
from paystream.services.keycloak import Client, KeycloakServer, realm_secret_clients
from paystream.settings import Settings
from paystream.topology.topics import partner_prefix, partner_topic

__all__ = ["Credentials", "OnboardingError", "add", "remove", "rotate_secret"]

EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,60}$")
NAME_LENGTH_MAX = 200


class OnboardingError(ValueError):
    """A partner that cannot be onboarded as asked (a bad id, an address, a duplicate)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """What the partner is given, once: everything its systems need to connect."""

    partner_id: str
    topic: str
    group_prefix: str
    kafka_username: str | None
    kafka_password: str | None
    oauth_client: Client | None
    endpoint: Endpoint | None


def check(partner_id: str, name: str, contact_email: str, webhook_url: str | None) -> None:
    """Refuse what the tables, the broker or Keycloak would refuse later, before anything."""
    if not re.fullmatch(registry.PARTNER_ID_PATTERN, partner_id):
        raise OnboardingError(
            f"partner id {partner_id!r}: 1-40 of a-z, 0-9 and '-', starting with a letter or digit"
        )
    if not 0 < len(name) <= NAME_LENGTH_MAX:
        raise OnboardingError(f"a partner's name is 1 to {NAME_LENGTH_MAX} characters")
    if not EMAIL_PATTERN.fullmatch(contact_email):
        raise OnboardingError(f"{contact_email!r} is not an email address")
    if webhook_url is not None and not re.fullmatch(r"https?://\S{1,1990}", webhook_url):
        raise OnboardingError(f"{webhook_url!r} is not an http(s) URL")


def add(
    settings: Settings,
    keycloak: KeycloakServer | None,
    *,
    partner_id: str,
    name: str,
    contact_email: str,
    webhook_url: str | None,
) -> Credentials:
    """Onboard a partner (refused if it is active already: rotate its secret instead)."""
    check(partner_id, name, contact_email, webhook_url)
    dsn = _dsn(settings)
    with db.connect(dsn, autocommit=True) as conn:
        if registry.active_partner(conn, partner_id) is not None:
            raise OnboardingError(f"partner {partner_id} is onboarded already")
    password = _kafka_access(settings, partner_id)
    client = None if keycloak is None else oidc_clients.create(keycloak, partner_id, name)
    partner = Partner(
        partner_id=partner_id,
        name=name,
        contact_email=contact_email,
        kafka_principal=f"User:{kafka_access.principal(partner_id)}",
        keycloak_client_id=oidc_clients.client_id(partner_id),
        status="active",
        created_at=datetime.now(UTC),
        secret_rotated_at=None,
    )
    with db.connect(dsn, autocommit=True) as conn:
        endpoint = registry.add(conn, partner, webhook_url=webhook_url)
    return _credentials(settings, partner_id, password, client, endpoint)


def rotate_secret(
    settings: Settings, keycloak: KeycloakServer | None, *, partner_id: str
) -> Credentials:
    """New Kafka password and OAuth client secret; the old ones stop working at once. A
    client the realm file defines (the demo partners') keeps its secret: it is this machine's
    generated one, which ``paystream token`` reads from the local Keycloak's secrets file."""
    dsn = _dsn(settings)
    with db.connect(dsn, autocommit=True) as conn:
        if registry.active_partner(conn, partner_id) is None:
            raise OnboardingError(f"no active partner {partner_id}")
    password = (
        kafka_access.set_password(settings, partner_id) if kafka_access.secured(settings) else None
    )
    client = None
    if keycloak is not None and oidc_clients.client_id(partner_id) not in realm_secret_clients():
        client = oidc_clients.rotate(keycloak, partner_id)
    with db.connect(dsn, autocommit=True) as conn:
        registry.mark_rotated(conn, partner_id)
    return _credentials(settings, partner_id, password, client, None)


def remove(settings: Settings, keycloak: KeycloakServer | None, *, partner_id: str) -> None:
    """Access withdrawn everywhere, the topic deleted; the partner's history stays."""
    dsn = _dsn(settings)
    with db.connect(dsn, autocommit=True) as conn:
        if registry.active_partner(conn, partner_id) is None:
            raise OnboardingError(f"no active partner {partner_id}")
        registry.mark_removed(conn, partner_id)
    kafka_access.delete_access(settings, partner_id, topic=True)
    if keycloak is not None:
        oidc_clients.delete(keycloak, partner_id)


def _kafka_access(settings: Settings, partner_id: str) -> str | None:
    password = None
    if kafka_access.secured(settings):
        password = kafka_access.set_password(settings, partner_id)
        kafka_access.grant(settings, partner_id)
    kafka_access.create_topic(settings, partner_id)
    return password


def _credentials(
    settings: Settings,
    partner_id: str,
    password: str | None,
    client: Client | None,
    endpoint: Endpoint | None,
) -> Credentials:
    return Credentials(
        partner_id=partner_id,
        topic=partner_topic(settings, partner_id),
        group_prefix=partner_prefix(settings, partner_id),
        kafka_username=kafka_access.principal(partner_id) if password else None,
        kafka_password=password,
        oauth_client=client,
        endpoint=endpoint,
    )


def _dsn(settings: Settings) -> str:
    """The Postgres the registry lives in, migrated (``partners`` is migration 0006)."""
    from paystream import services

    dsn = services.postgres_dsn(settings)
    migrate(dsn)
    return dsn
