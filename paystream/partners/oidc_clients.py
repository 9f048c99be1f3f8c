"""A partner's OAuth client in the local Keycloak: client credentials, its partner id claim.

The client is the realm's ``partner-demo-1`` with another id, name, secret and
``partner_id`` claim (``deploy/keycloak/realm.json`` is the one place that says what a
partner client is: its scopes and its mappers), created through Keycloak's admin API.
Another OIDC provider (``PAYSTREAM_OIDC_ISSUER``) is not driven from here: its operator
registers the client, with the claim ``partner_id``, the way that provider does it.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

import httpx

from paystream.services.keycloak import (
    ADMIN_TIMEOUT_S,
    REALM,
    Client,
    KeycloakServer,
    realm_file,
)
from paystream.services.process import ServiceError

__all__ = ["PARTNER_CLIENT_TEMPLATE", "client_id", "create", "delete", "rotate"]

PARTNER_CLIENT_TEMPLATE: Final = "partner-demo-1"
PARTNER_CLAIM: Final = "partner_id"


def client_id(partner_id: str) -> str:
    return f"partner-{partner_id}"


def representation(partner_id: str, name: str) -> dict[str, Any]:
    """The template client of the realm file, made this partner's (pure)."""
    realm = json.loads(realm_file().read_text())
    template = next(c for c in realm["clients"] if c["clientId"] == PARTNER_CLIENT_TEMPLATE)
    client: dict[str, Any] = copy.deepcopy(template)
    client.pop("secret", None)  # Keycloak generates one
    client |= {"clientId": client_id(partner_id), "name": f"{name} (partner {partner_id})"}
    for mapper in client.get("protocolMappers", []):
        if mapper["config"].get("claim.name") == PARTNER_CLAIM:
            mapper["config"]["claim.value"] = partner_id
    return client


def create(keycloak: KeycloakServer, partner_id: str, name: str) -> Client:
    """The partner's client (created, or the existing one) with its current secret."""
    with _admin(keycloak) as admin:
        internal = _internal_id(admin, partner_id)
        if internal is None:
            made = admin.post("/clients", json=representation(partner_id, name))
            _ok(made, f"creating the client of partner {partner_id}")
            internal = made.headers["Location"].rsplit("/", 1)[-1]
        secret = admin.get(f"/clients/{internal}/client-secret")
        _ok(secret, "reading its secret")
        return Client(client_id=client_id(partner_id), secret=str(secret.json()["value"]))


def rotate(keycloak: KeycloakServer, partner_id: str) -> Client:
    """A new secret for the partner's client; the old one stops working at once."""
    with _admin(keycloak) as admin:
        internal = _require(admin, partner_id)
        made = admin.post(f"/clients/{internal}/client-secret")
        _ok(made, f"a new secret for partner {partner_id}")
        return Client(client_id=client_id(partner_id), secret=str(made.json()["value"]))


def delete(keycloak: KeycloakServer, partner_id: str) -> None:
    """The partner's client removed (nothing to do if it is gone)."""
    with _admin(keycloak) as admin:
        internal = _internal_id(admin, partner_id)
        if internal is not None:
            _ok(admin.delete(f"/clients/{internal}"), f"removing the client of {partner_id}")


def _admin(keycloak: KeycloakServer) -> httpx.Client:
    return httpx.Client(
        base_url=f"{keycloak.url}/admin/realms/{REALM}",
        headers={"Authorization": f"Bearer {keycloak.admin_token()}"},
        timeout=ADMIN_TIMEOUT_S,
    )


def _internal_id(admin: httpx.Client, partner_id: str) -> str | None:
    found = admin.get("/clients", params={"clientId": client_id(partner_id)})
    _ok(found, f"looking up the client of partner {partner_id}")
    clients = found.json()
    return str(clients[0]["id"]) if clients else None


def _require(admin: httpx.Client, partner_id: str) -> str:
    internal = _internal_id(admin, partner_id)
    if internal is None:
        raise ServiceError(f"partner {partner_id} has no client in the {REALM} realm")
    return internal


def _ok(response: httpx.Response, what: str) -> None:
    if not response.is_success:
        raise ServiceError(
            f"Keycloak's admin API, {what}: HTTP {response.status_code} {response.text[:300]}"
        )
