"""Tokens and admin calls against the session's real Keycloak (tests only)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from paystream.services.keycloak import ADMIN_USER, REALM, KeycloakServer

HTTP_TIMEOUT_S = 30.0
KEY_WAIT_S = 30.0


def client_token(server: KeycloakServer, client_id: str) -> str:
    """A client-credentials access token for one of the realm's clients."""
    client = server.client(client_id)
    response = httpx.post(
        server.token_url,
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.secret),
        timeout=HTTP_TIMEOUT_S,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def admin_headers(server: KeycloakServer) -> dict[str, str]:
    response = httpx.post(
        f"{server.url}/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": ADMIN_USER,
            "password": server.admin_password,
        },
        timeout=HTTP_TIMEOUT_S,
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def add_key(
    server: KeycloakServer,
    *,
    priority: int,
    active: bool,
    private_key: rsa.RSAPrivateKey | None = None,
) -> str:
    """Add an RS256 key to the realm (ours when ``private_key`` is given, else one Keycloak
    generates); its kid. An active key of the highest priority signs new tokens; a passive
    one only verifies (it is still published)."""
    headers = admin_headers(server)
    base = f"{server.url}/admin/realms/{REALM}"
    realm_id = httpx.get(base, headers=headers, timeout=HTTP_TIMEOUT_S).json()["id"]
    name = f"test-key-{uuid.uuid4().hex[:8]}"
    config: dict[str, Any] = {
        "priority": [str(priority)],
        "enabled": ["true"],
        "active": ["true" if active else "false"],
        "algorithm": ["RS256"],
    }
    if private_key is not None:
        config["privateKey"] = [pem(private_key)]
    component = {
        "name": name,
        "providerId": "rsa" if private_key is not None else "rsa-generated",
        "providerType": "org.keycloak.keys.KeyProvider",
        "parentId": realm_id,
        "config": config,
    }
    created = httpx.post(
        f"{base}/components", json=component, headers=headers, timeout=HTTP_TIMEOUT_S
    )
    created.raise_for_status()
    component_id = created.headers["Location"].rsplit("/", 1)[-1]
    deadline = time.monotonic() + KEY_WAIT_S
    while time.monotonic() < deadline:
        keys = httpx.get(f"{base}/keys", headers=headers, timeout=HTTP_TIMEOUT_S).json()["keys"]
        for key in keys:
            if key.get("providerId") == component_id:
                return str(key["kid"])
        time.sleep(0.5)
    raise AssertionError(f"key {name} did not appear in the realm's keys")
