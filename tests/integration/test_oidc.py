"""Tokens from the real Keycloak, verified by the API's TokenVerifier against its real JWKS.

Claims Keycloak would never put in a token of its own (expired, not yet valid,
another issuer or audience) are signed with a key the test registers in the
realm, so the verifier finds it in the provider's published key set: every
check but the one under test passes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from paystream.api.auth import JWKS_REFETCH_COOLDOWN_S, TokenVerifier, Unauthorized
from paystream.services.keycloak import KeycloakServer
from tests.support.keycloak import add_key, client_token, new_rsa_key

pytestmark = pytest.mark.integration

AUDIENCE = "paystream-api"


@pytest.fixture(scope="module")
def verifier(keycloak: KeycloakServer, our_key: tuple[Any, str]) -> TokenVerifier:
    """No leeway; made after ``our_key`` is in the realm, so its first key set holds it."""
    return TokenVerifier(issuer=keycloak.issuer, audience=AUDIENCE, leeway_s=0)


@pytest.fixture(scope="module")
def our_key(keycloak: KeycloakServer) -> tuple[Any, str]:
    """A passive key of the realm whose private half the test holds: (key, kid)."""
    key = new_rsa_key()
    return key, add_key(keycloak, priority=10, active=False, private_key=key)


@dataclass(frozen=True)
class FromNow:
    """A claim's time, relative to when the token is made (not when tests are collected:
    a suite can run for longer than the offsets)."""

    seconds: int


def crafted(keycloak: KeycloakServer, key: tuple[Any, str], **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": keycloak.issuer, "aud": AUDIENCE, "azp": "partner-demo-1", "sub": "s-1",
        "iat": now, "exp": now + 60, "scope": "payments:read", "partner_id": "demo-1",
    }  # fmt: skip
    payload.update({k: now + v.seconds if isinstance(v, FromNow) else v for k, v in claims.items()})
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key[0], algorithm="RS256", headers={"kid": key[1]})


def test_a_partner_token_names_its_client_partner_and_scopes(
    keycloak: KeycloakServer, verifier: TokenVerifier
) -> None:
    principal = verifier.verify(client_token(keycloak, "partner-demo-1"))
    assert principal.client_id == "partner-demo-1"
    assert principal.partner_id == "demo-1"
    assert {
        "accounts:read",
        "accounts:write",
        "payments:read",
        "payments:write",
        "ledger:read",
    } <= (principal.scopes)
    assert not principal.is_ops
    assert principal.sees("demo-1") and not principal.sees("demo-2")


def test_an_ops_token_sees_every_partner_and_cannot_write(
    keycloak: KeycloakServer, verifier: TokenVerifier
) -> None:
    principal = verifier.verify(client_token(keycloak, "ops-console"))
    assert principal.partner_id is None and principal.is_ops
    assert principal.sees("demo-1") and principal.sees("demo-2")
    assert not principal.has("payments:write")


def test_a_token_signed_with_our_registered_key_verifies(
    keycloak: KeycloakServer, verifier: TokenVerifier, our_key: tuple[Any, str]
) -> None:
    """The control for the refusals below: only the claim under test differs."""
    assert verifier.verify(crafted(keycloak, our_key)).partner_id == "demo-1"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": FromNow(-120), "iat": FromNow(-400)}, "expired"),
        ({"nbf": FromNow(600)}, "not valid yet"),
        ({"iss": "http://127.0.0.1:1/realms/other"}, "another issuer"),
        ({"aud": "someone-else"}, "audience"),
        ({"aud": None}, "invalid"),
        ({"exp": None}, "invalid"),
        ({"azp": None}, "no client"),
        ({"partner_id": 7}, "partner id"),
    ],
    ids=["expired", "not-yet-valid", "wrong-issuer", "wrong-audience", "no-audience", "no-expiry",
         "no-client", "bad-partner-claim"],
)  # fmt: skip
def test_a_token_with_a_bad_claim_is_refused(
    keycloak: KeycloakServer,
    verifier: TokenVerifier,
    our_key: tuple[Any, str],
    claims: dict[str, Any],
    reason: str,
) -> None:
    with pytest.raises(Unauthorized, match=reason):
        verifier.verify(crafted(keycloak, our_key, **claims))


def test_tokens_the_issuer_did_not_sign_are_refused(
    keycloak: KeycloakServer, verifier: TokenVerifier, our_key: tuple[Any, str]
) -> None:
    stranger = (new_rsa_key(), our_key[1])  # a published kid, another private key
    with pytest.raises(Unauthorized, match="signature"):
        verifier.verify(crafted(keycloak, stranger))
    unknown_kid = (our_key[0], "no-such-kid")
    with pytest.raises(Unauthorized, match="not one of the issuer's"):
        verifier.verify(crafted(keycloak, unknown_kid))
    for garbage in ("", "not a token", "a.b.c", "x" * 10_000):
        with pytest.raises(Unauthorized):
            verifier.verify(garbage)
    header_only = jwt.encode({"iss": keycloak.issuer}, "s" * 32, algorithm="HS256",
                             headers={"kid": our_key[1]})  # fmt: skip
    with pytest.raises(Unauthorized, match="algorithm"):
        verifier.verify(header_only)
    token = client_token(keycloak, "partner-demo-1")
    head, body, signature = token.split(".")
    with pytest.raises(Unauthorized, match="signature"):
        verifier.verify(f"{head}.{body}.{signature[:-4]}AAAA")


def test_a_key_rotated_in_keycloak_is_picked_up(keycloak: KeycloakServer) -> None:
    verifier = TokenVerifier(issuer=keycloak.issuer, audience=AUDIENCE)
    verifier.verify(client_token(keycloak, "partner-demo-1"))  # the key set is now cached
    new_kid = add_key(keycloak, priority=1_000, active=True)  # Keycloak signs with it from now
    token = client_token(keycloak, "partner-demo-1")
    assert jwt.get_unverified_header(token)["kid"] == new_kid
    time.sleep(JWKS_REFETCH_COOLDOWN_S)  # a refetch is allowed once per cooldown
    assert verifier.verify(token).client_id == "partner-demo-1"


def test_paystream_token_prints_a_token_the_api_accepts(
    keycloak: KeycloakServer, verifier: TokenVerifier
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")} | {
        "PAYSTREAM_OIDC_ISSUER": keycloak.issuer,
        "PAYSTREAM_CLIENT_SECRET": keycloak.client("partner-demo-2").secret,
    }
    command = [sys.executable, "-m", "paystream.cli", "token", "--client", "partner-demo-2"]
    printed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert verifier.verify(printed.stdout.strip()).partner_id == "demo-2"
    wrong = subprocess.run(
        command, env=env | {"PAYSTREAM_CLIENT_SECRET": "wrong"}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert wrong.returncode == 2 and "refused client partner-demo-2: HTTP 401" in wrong.stderr
