"""Who is onboarded: the ``partners`` and ``webhook_endpoints`` tables (migration 0006).

Written by ``paystream partners``; read by the webhook delivery service (endpoints and
their secrets) and the notifier (a partner's contact address). The fan-out needs none of
it: a partner's topic is what says it hears its events on Kafka.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from ulid import ULID

from paystream.audit import db

__all__ = [
    "PARTNER_ID_PATTERN",
    "Endpoint",
    "Partner",
    "active_partner",
    "add",
    "endpoints",
    "list_partners",
    "mark_removed",
    "mark_rotated",
    "new_webhook_secret",
    "set_endpoint_url",
]

PARTNER_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,39}$"
"""A partner id: it names a Kafka principal, topic and group prefix, and an OAuth client."""
WEBHOOK_SECRET_BYTES: Final = 24
"""Standard Webhooks: secrets are 24 to 64 random bytes, base64, prefixed ``whsec_``."""
PARTNERS_LIST_MAX: Final = 10_000

Status = Literal["active", "removed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Partner:
    partner_id: str
    name: str
    contact_email: str
    kafka_principal: str
    keycloak_client_id: str
    status: Status
    created_at: datetime
    secret_rotated_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    endpoint_id: str
    partner_id: str
    url: str
    secret: str
    enabled: bool


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode()


_PARTNER_COLUMNS: Final = (
    "partner_id, name, contact_email, kafka_principal, keycloak_client_id, status,"
    " created_at, secret_rotated_at"
)


def add(conn: db.Connection, partner: Partner, *, webhook_url: str | None) -> Endpoint | None:
    """Record an onboarded partner (a removed one comes back) and its webhook endpoint."""
    with conn.transaction():
        conn.execute(
            f"INSERT INTO partners ({_PARTNER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (partner_id) DO UPDATE SET name = excluded.name,"
            " contact_email = excluded.contact_email, status = 'active', removed_at = NULL",
            (partner.partner_id, partner.name, partner.contact_email, partner.kafka_principal,
             partner.keycloak_client_id, partner.status, partner.created_at,
             partner.secret_rotated_at),
        )  # fmt: skip
        if webhook_url is None:
            return None
        endpoint = Endpoint(
            endpoint_id=f"ep_{ULID()}",
            partner_id=partner.partner_id,
            url=webhook_url,
            secret=new_webhook_secret(),
            enabled=True,
        )
        conn.execute(
            "INSERT INTO webhook_endpoints (endpoint_id, partner_id, url, secret, enabled)"
            " VALUES (%s, %s, %s, %s, true)",
            (endpoint.endpoint_id, endpoint.partner_id, endpoint.url, endpoint.secret),
        )
        return endpoint


def active_partner(conn: db.Connection, partner_id: str) -> Partner | None:
    row = conn.execute(
        f"SELECT {_PARTNER_COLUMNS} FROM partners WHERE partner_id = %s AND status = 'active'",
        (partner_id,),
    ).fetchone()
    return None if row is None else Partner(**dict(zip(_fields(), row, strict=True)))


def list_partners(conn: db.Connection) -> list[Partner]:
    rows = conn.execute(
        f"SELECT {_PARTNER_COLUMNS} FROM partners ORDER BY partner_id LIMIT %s",
        (PARTNERS_LIST_MAX,),
    ).fetchall()
    return [Partner(**dict(zip(_fields(), row, strict=True))) for row in rows]


def endpoints(conn: db.Connection, partner_id: str) -> list[Endpoint]:
    rows = conn.execute(
        "SELECT endpoint_id, partner_id, url, secret, enabled FROM webhook_endpoints"
        " WHERE partner_id = %s ORDER BY created_at, endpoint_id",
        (partner_id,),
    ).fetchall()
    return [Endpoint(endpoint_id=r[0], partner_id=r[1], url=r[2], secret=r[3], enabled=r[4])
            for r in rows]  # fmt: skip


def set_endpoint_url(conn: db.Connection, endpoint_id: str, url: str) -> None:
    """Move an endpoint (same id, same secret): deliveries go to ``url`` from their next try."""
    with conn.transaction():
        conn.execute(
            "UPDATE webhook_endpoints SET url = %s WHERE endpoint_id = %s", (url, endpoint_id)
        )


def mark_rotated(conn: db.Connection, partner_id: str) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE partners SET secret_rotated_at = now() WHERE partner_id = %s", (partner_id,)
        )


def mark_removed(conn: db.Connection, partner_id: str) -> None:
    """The partner is gone: its endpoints get nothing more (the history stays)."""
    with conn.transaction():
        conn.execute(
            "UPDATE partners SET status = 'removed', removed_at = now() WHERE partner_id = %s",
            (partner_id,),
        )
        conn.execute(
            "UPDATE webhook_endpoints SET enabled = false WHERE partner_id = %s", (partner_id,)
        )


def _fields() -> tuple[str, ...]:
    return tuple(name.strip() for name in _PARTNER_COLUMNS.split(","))
