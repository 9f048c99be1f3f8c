"""Access tokens for the CLI: ``paystream token`` and every command that calls the API."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from paystream import services
from paystream.settings import Settings

CLIENT_SECRET_ENV = "PAYSTREAM_CLIENT_SECRET"
CLIENT_DEFAULT = "partner-demo-1"

ClientOption = Annotated[str, typer.Option("--client", help="the OAuth client")]


def client_secret(settings: Settings, client_id: str) -> str:
    """The local realm's stored secret, or ``PAYSTREAM_CLIENT_SECRET`` for another issuer."""
    if settings.oidc_issuer is None:
        return services.local_keycloak(settings).client(client_id).secret
    secret = os.environ.get(CLIENT_SECRET_ENV, "")
    if not secret:
        raise services.ServiceError(f"set {CLIENT_SECRET_ENV} for {client_id}")
    return secret


def access_token(settings: Settings, client_id: str) -> str:
    """A client-credentials access token from the configured issuer (ServiceError if none)."""
    from paystream.services.keycloak import client_credentials_token

    secret = client_secret(settings, client_id)
    return client_credentials_token(services.oidc_issuer(settings), client_id, secret)


def token(client: ClientOption = CLIENT_DEFAULT) -> int:
    """an access token (client credentials) from the configured issuer"""
    print(access_token(Settings(), client))
    return 0
