"""The ops page (``/ops``): one HTML page, its script and styles, plotly.js, its settings and
a relay to the identity provider's token endpoint.

Sign-in is OIDC's authorization code flow with PKCE (S256) in the browser, for the public
client ``paystream-ops``: the page makes the verifier, sends the person to the provider's
login with the challenge, gets the code back in the URL's fragment (``response_mode=
fragment``: a code never reaches a server log or a query string), and redeems it with the
verifier. It keeps the tokens in memory only, sends the access token as a bearer token to
``/v1/analytics/*``, renews it with the refresh token before it expires (or on a 401) and
sends the person back to the login when renewing fails.

Why a relay (``POST /ops/token``): Keycloak 26 accepts a loopback redirect URI registered
without a port (``http://127.0.0.1/ops``) for any port (RFC 8252 section 7.3; its
``RedirectUtils`` drops the port of ``http`` URIs on ``localhost``, ``127.0.0.1`` and
``[::1]`` before it compares), and refuses a wildcard in a port. Its CORS check has no such
rule: web origins match exactly, or ``*``. The page is served on whatever port the process
is given, so a browser's cross-origin POST to the token endpoint would need ``*`` (every
site may call the token endpoint for this client from a browser). Instead the page posts to
its own origin and this process forwards the two grants it allows, with the client id fixed;
the client stays public, PKCE still binds the code to the browser that asked for it, the
provider needs no web origin at all and the page's CSP allows ``connect-src 'self'`` only.

Charts are plotly.js, the ``plotly.min.js`` bundled in the ``plotly`` wheel from PyPI,
served from the installed package (gzip once, in memory): pinned with the Python
dependencies, no npm toolchain and no vendored file to update by hand, nothing fetched from
a CDN; SVG charts with hover, zoom and legends. It is large (4.8 MB, 1.4 MB gzip) and
cached by the browser (ETag).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import httpx
from fastapi import FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paystream.api.deps import RateLimiter
from paystream.api.problems import Problem, unavailable
from paystream.ledger.currencies import EXPONENTS

__all__ = ["CLIENT_ID", "REFRESH_S_DEFAULT", "PageOptions", "install"]

CLIENT_ID: Final = "paystream-ops"
SCOPE: Final = "openid ops:read"
REFRESH_S_DEFAULT: Final = 5.0
REFRESH_S_MIN: Final = 1.0
REFRESH_S_MAX: Final = 3600.0
PROVIDER_TIMEOUT_S: Final = 10.0
"""The discovery document and the token endpoint, each call."""
TOKEN_TEXT_LENGTH_MAX: Final = 8_192
"""A code or refresh token relayed (Keycloak's refresh tokens are about 1 KB)."""
REDIRECT_URI_LENGTH_MAX: Final = 2_048
RELAY_PER_S: Final = 10
"""Token requests per second per browser address (a page needs one per few minutes)."""
RELAYED_ANSWER_BYTES_MAX: Final = 65_536
TOKEN_REQUEST_BYTES_MAX: Final = 20_000
STATIC_DIR: Final = Path(__file__).parent / "static"
NO_STORE: Final = {"Cache-Control": "no-store"}
CSP: Final = "; ".join((
    "default-src 'none'", "script-src 'self'", "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:", "font-src 'self' data:", "connect-src 'self'",
    "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
))  # fmt: skip
"""plotly.js sets style attributes on the SVG it draws ('unsafe-inline' styles only)."""
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class PageOptions:
    """What the page needs to know: the issuer its people sign in with, how often it asks for
    data, and after how long the process calls its data stale (shown on the page)."""

    issuer: str
    refresh_s: float = REFRESH_S_DEFAULT
    stale_after_s: float = 30.0
    sink_group: str | None = None
    """The consumer group whose records behind make the data stale (named in the banner)."""
    client_id: str = CLIENT_ID


@dataclass(frozen=True, slots=True)
class Asset:
    """A static file in memory: its bytes, gzip-compressed bytes and validator."""

    body: bytes
    compressed: bytes
    etag: str
    media_type: str


def _asset(path: Path, media_type: str) -> Asset:
    body = path.read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:20]
    return Asset(body, gzip.compress(body, mtime=0), f'"{digest}"', media_type)


def plotly_js() -> Path:
    """plotly.js as the installed ``plotly`` package bundles it."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


ASSETS: Final[dict[str, tuple[Callable[[], Path], str]]] = {
    "ops.js": (lambda: STATIC_DIR / "ops.js", "text/javascript; charset=utf-8"),
    "ops.css": (lambda: STATIC_DIR / "ops.css", "text/css; charset=utf-8"),
    "plotly.min.js": (plotly_js, "text/javascript; charset=utf-8"),
}
"""The only files served under /ops/static/ (no path from the request reaches the disk)."""


@functools.cache
def _load(name: str) -> Asset:
    locate, media_type = ASSETS[name]
    return _asset(locate(), media_type)


def _serve(asset: Asset, accept_encoding: str, if_none_match: str | None) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding",
               "X-Content-Type-Options": "nosniff"}  # fmt: skip
    if if_none_match == asset.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in accept_encoding.lower():
        headers["Content-Encoding"] = "gzip"
        return Response(asset.compressed, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


class Provider:
    """The issuer's endpoints from its discovery document, read once (a failure is retried
    at the next request)."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer.rstrip("/")
        self._found: dict[str, str] | None = None
        self._lock = threading.Lock()

    def endpoints(self) -> dict[str, str]:
        with self._lock:
            if self._found is None:
                self._found = self._discover()
            return self._found

    def _discover(self) -> dict[str, str]:
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            response = httpx.get(url, timeout=PROVIDER_TIMEOUT_S)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise unavailable(f"the identity provider's discovery document: {error}") from error
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise unavailable(f"{url} names another issuer")
        names = ("authorization_endpoint", "token_endpoint", "end_session_endpoint")
        found = {name: document[name] for name in names if isinstance(document.get(name), str)}
        if "authorization_endpoint" not in found or "token_endpoint" not in found:
            raise unavailable(f"{url} names no authorization or token endpoint")
        return found


class TokenRequest(BaseModel):
    """What the page may ask the token endpoint: redeem its code, or renew its tokens."""

    model_config = ConfigDict(extra="forbid")
    grant_type: Literal["authorization_code", "refresh_token"]
    code: str | None = Field(default=None, min_length=1, max_length=TOKEN_TEXT_LENGTH_MAX)
    code_verifier: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._~-]{43,128}$")
    """RFC 7636: 43 to 128 unreserved characters."""
    redirect_uri: str | None = Field(default=None, max_length=REDIRECT_URI_LENGTH_MAX)
    refresh_token: str | None = Field(default=None, min_length=1, max_length=TOKEN_TEXT_LENGTH_MAX)

    def form(self, client_id: str) -> dict[str, str]:
        """The token request's form; a 422 problem when a field the grant needs is missing."""
        if self.grant_type == "authorization_code":
            needed = {"code": self.code, "code_verifier": self.code_verifier,
                      "redirect_uri": self.redirect_uri}  # fmt: skip
        else:
            needed = {"refresh_token": self.refresh_token}
        missing = sorted(name for name, value in needed.items() if value is None)
        if missing:
            errors = [{"field": f"body.{name}", "message": "required"} for name in missing]
            raise Problem(422, "validation_error", f"{self.grant_type} needs {', '.join(missing)}",
                          extra={"errors": errors})  # fmt: skip
        return {"grant_type": self.grant_type, "client_id": client_id,
                **{name: str(value) for name, value in needed.items()}}  # fmt: skip


async def _token_request(request: Request) -> TokenRequest:
    """The JSON body, read up to TOKEN_REQUEST_BYTES_MAX (a longer one is refused unread)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > TOKEN_REQUEST_BYTES_MAX:
            too_long = f"a token request is at most {TOKEN_REQUEST_BYTES_MAX} bytes"
            raise Problem(413, "validation_error", too_long)
    try:
        return TokenRequest.model_validate_json(bytes(body))
    except ValidationError as error:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_input=False)]
        raise RequestValidationError(errors) from error


def _relay(token_endpoint: str, form: dict[str, str]) -> Response:
    """POST the form to the token endpoint; its answer (tokens or an OAuth error) as it is."""
    try:
        answer = httpx.post(token_endpoint, data=form, timeout=PROVIDER_TIMEOUT_S)
    except httpx.HTTPError as error:
        raise unavailable(f"the identity provider's token endpoint: {error}") from error
    if len(answer.content) > RELAYED_ANSWER_BYTES_MAX or answer.status_code >= 500:
        raise unavailable(f"the identity provider's token endpoint answered {answer.status_code}")
    try:
        body: Any = answer.json()
    except ValueError as error:
        raise unavailable("the identity provider's token endpoint answered no JSON") from error
    return JSONResponse(body, status_code=answer.status_code, headers=NO_STORE)


def config(options: PageOptions, provider: Provider) -> dict[str, Any]:
    """The page's settings (``/ops/config.json``)."""
    return {
        "issuer": provider.issuer, **provider.endpoints(), "client_id": options.client_id,
        "scope": SCOPE, "refresh_s": options.refresh_s, "stale_after_s": options.stale_after_s,
        "sink_group": options.sink_group,
        "currency_exponents": EXPONENTS,
    }  # fmt: skip


def install(app: FastAPI, options: PageOptions) -> None:
    """Add ``/ops``, ``/ops/config.json``, ``/ops/token`` and ``/ops/static/*`` to ``app``."""
    if not REFRESH_S_MIN <= options.refresh_s <= REFRESH_S_MAX:
        raise ValueError(f"refresh_s must be {REFRESH_S_MIN}..{REFRESH_S_MAX} s")
    provider = Provider(options.issuer)
    limiter = RateLimiter(RELAY_PER_S)
    index = STATIC_DIR / "ops.html"

    @app.get("/ops", include_in_schema=False)
    def ops_page() -> Response:
        return Response(index.read_bytes(), media_type="text/html; charset=utf-8",
                        headers=PAGE_HEADERS)  # fmt: skip

    @app.get("/ops/config.json", include_in_schema=False)
    def ops_config() -> JSONResponse:
        return JSONResponse(config(options, provider), headers=NO_STORE)

    @app.post("/ops/token", include_in_schema=False)
    async def ops_token(request: Request) -> Response:
        limiter.check(f"token relay for {request.client.host if request.client else '?'}")
        form = (await _token_request(request)).form(options.client_id)
        endpoints = await run_in_threadpool(provider.endpoints)
        return await run_in_threadpool(_relay, endpoints["token_endpoint"], form)

    @app.get("/ops/static/{name}", include_in_schema=False)
    def ops_static(
        name: str,
        accept_encoding: Annotated[str, Header()] = "",
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        if name not in ASSETS:
            raise Problem(404, "not_found", f"no file {name[:64]!r} here")
        return _serve(_load(name), accept_encoding, if_none_match)
