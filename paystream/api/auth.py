"""Bearer tokens from an OIDC provider: verified against its JWKS, turned into a Principal.

PyJWT does the JOSE work (signature, ``exp``, ``nbf``, ``iat``, ``iss``, ``aud``,
with a small leeway for clock skew); its ``PyJWKClient`` caches the provider's
key set and refetches it when a token names a key id it does not hold (a key
rotated in the provider), at most once per JWKS_REFETCH_COOLDOWN_S, so tokens
with made-up key ids cannot make the API hammer the provider. The key set's
address comes from the issuer's discovery document
(``/.well-known/openid-configuration``), read once.

Only asymmetric algorithms are accepted, and only the one the key itself is
for: a token cannot pick ``none`` or an HMAC with the public key as secret.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

import jwt

ALGORITHMS = frozenset(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"))
LEEWAY_S = 30
"""Clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
JWKS_CACHE_S = 300
JWKS_REFETCH_COOLDOWN_S = 5.0
HTTP_TIMEOUT_S = 5.0
TOKEN_LENGTH_MAX = 8_192
"""Bytes of a bearer token; a longer one is refused before it is parsed."""
PARTNER_CLAIM = "partner_id"
PARTNER_ID_LENGTH_MAX = 64

Scope = Literal[
    "accounts:read", "accounts:write", "payments:read", "payments:write", "ledger:read",
    "ops:read", "payouts:read", "payouts:write", "ops:review", "webhooks:read",
    "webhooks:write",
]  # fmt: skip


class Unauthorized(Exception):
    """The request carries no valid token (401). ``reason`` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProviderUnavailable(Exception):
    """The identity provider could not be reached to fetch its keys (503)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the OAuth client, its partner (None for the platform's own), its scopes."""

    client_id: str
    subject: str
    partner_id: str | None
    scopes: frozenset[str]
    username: str | None = None
    """``preferred_username``: the person (or service account) a decision is recorded under."""

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes

    @property
    def is_ops(self) -> bool:
        """Ops see every partner's resources (read only)."""
        return "ops:read" in self.scopes

    def sees(self, partner_id: str | None) -> bool:
        """Whether a resource of ``partner_id`` exists for this caller (else it is a 404)."""
        return self.is_ops or (self.partner_id is not None and self.partner_id == partner_id)


def principal_from(claims: dict[str, Any]) -> Principal:
    """The caller a verified token's claims describe (pure)."""
    client_id = claims.get("azp") or claims.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        raise Unauthorized("the token names no client (azp)")
    partner = claims.get(PARTNER_CLAIM)
    if partner is not None and (
        not isinstance(partner, str) or not 0 < len(partner) <= PARTNER_ID_LENGTH_MAX
    ):
        raise Unauthorized(f"the token's {PARTNER_CLAIM} claim is not a partner id")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise Unauthorized("the token's scope claim is not a string")
    subject = claims.get("sub")
    username = claims.get("preferred_username")
    return Principal(
        client_id=client_id,
        subject=subject if isinstance(subject, str) else client_id,
        partner_id=partner,
        scopes=frozenset(scope.split()),
        username=username if isinstance(username, str) and username else None,
    )


class TokenVerifier:
    """Verifies bearer tokens of one issuer for one audience."""

    def __init__(self, *, issuer: str, audience: str, leeway_s: float = LEEWAY_S) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self._leeway_s = leeway_s
        self._jwks: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        if len(token) > TOKEN_LENGTH_MAX:
            raise Unauthorized("the token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as error:
            raise Unauthorized("the token is not a JWT") from error
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("the token names no key (kid)")
        key = self._signing_key(kid)
        algorithm = key.algorithm_name
        if algorithm not in ALGORITHMS or header.get("alg") != algorithm:
            raise Unauthorized(f"the token's algorithm {header.get('alg')!r} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise Unauthorized("the token has expired") from error
        except jwt.ImmatureSignatureError as error:
            raise Unauthorized("the token is not valid yet") from error
        except jwt.InvalidAudienceError as error:
            raise Unauthorized("the token is not for this API (audience)") from error
        except jwt.InvalidIssuerError as error:
            raise Unauthorized("the token is from another issuer") from error
        except jwt.InvalidSignatureError as error:
            raise Unauthorized("the token's signature does not verify") from error
        except jwt.InvalidTokenError as error:
            raise Unauthorized(f"the token is invalid: {error}") from error
        return principal_from(claims)

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        client = self._client()
        try:
            return client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as error:
            raise ProviderUnavailable(f"cannot fetch the issuer's keys: {error}") from error
        except jwt.PyJWKClientError as error:
            raise Unauthorized("the token's key is not one of the issuer's") from error

    def _client(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._jwks is None:
                self._jwks = jwt.PyJWKClient(
                    self._jwks_uri(),
                    cache_keys=False,  # the set is cached; a per-kid LRU would outlive a rotation
                    cache_jwk_set=True,
                    lifespan=JWKS_CACHE_S,
                    timeout=HTTP_TIMEOUT_S,
                    cooldown_duration=JWKS_REFETCH_COOLDOWN_S,
                )
            return self._jwks

    def _jwks_uri(self) -> str:
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
                document = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise ProviderUnavailable(f"cannot read {url}: {error}") from error
        uri = document.get("jwks_uri") if isinstance(document, dict) else None
        if not isinstance(uri, str) or document.get("issuer") != self.issuer:
            raise ProviderUnavailable(f"{url} names another issuer or no jwks_uri")
        return uri

    def ready(self) -> bool:
        """Whether the provider's key set can be fetched now (for ``/readyz``)."""
        try:
            self._client().get_signing_keys(refresh=False)
        except (ProviderUnavailable, jwt.PyJWKClientError):
            return False
        return True
