"""The REST API as a person's command calls it: a bearer token, an Idempotency-Key on every
POST, ``Prefer: wait=N``, and RFC 9457 problems turned into :class:`ApiProblem`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer

from paystream.cli.auth import CLIENT_DEFAULT, ClientOption, access_token
from paystream.settings import Settings

API_URL_DEFAULT = "http://127.0.0.1:8000"
API_URL_ENV = "PAYSTREAM_API_URL"
WAIT_S_MAX = 30
"""The API waits at most this long (Prefer: wait=N is capped there too)."""
WAIT_S_DEFAULT = 10
HTTP_TIMEOUT_S = WAIT_S_MAX + 30.0
"""A whole request, wait included: the longest wait and a margin for the API to answer."""
PROBLEM_TEXT_MAX = 300
"""Characters of a non-problem error body shown."""
FIELD_ERRORS_SHOWN_MAX = 5

ApiOption = Annotated[
    str, typer.Option("--api", envvar=API_URL_ENV, metavar="URL", help="the API's base URL")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON unchanged")]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key", metavar="K", help="Idempotency-Key (default: a new one, printed to retry with)"
    ),
]
WaitOption = Annotated[
    int,
    typer.Option(
        "--wait", min=0, max=WAIT_S_MAX, metavar="SECONDS",
        help="wait up to this long for the end (0: answer once accepted)",
    ),
]  # fmt: skip

__all__ = [
    "API_URL_DEFAULT",
    "CLIENT_DEFAULT",
    "ApiClient",
    "ApiOption",
    "ApiProblem",
    "ApiUnreachable",
    "ClientOption",
    "JsonOption",
    "KeyOption",
    "WaitOption",
    "new_key",
    "path_id",
]


class ApiProblem(Exception):
    """The API answered an error (``code: detail``; the command exits 1)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class ApiUnreachable(Exception):
    """No answer from the API at all (the command exits 2)."""


def new_key() -> str:
    """A fresh Idempotency-Key for one invocation."""
    return f"cli-{uuid.uuid4().hex}"


def path_id(value: str) -> str:
    """An id as one path segment."""
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class ApiClient:
    """One person's session with the API: its base URL and a bearer token."""

    base_url: str
    token: str

    @classmethod
    def connect(cls, api_url: str, client_id: str) -> ApiClient:
        """A token for ``client_id`` from the configured issuer (as ``paystream token``)."""
        return cls(api_url.rstrip("/"), access_token(Settings(), client_id))

    def get(self, path: str, params: dict[str, str | int] | None = None) -> httpx.Response:
        return self._send("GET", path, params=params)

    def post(
        self, path: str, body: dict[str, Any] | None, *, key: str, wait_s: int
    ) -> httpx.Response:
        headers = {"Idempotency-Key": key} | ({"Prefer": f"wait={wait_s}"} if wait_s else {})
        return self._send("POST", path, json=body, headers=headers)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = f"{self.base_url}{path}"
        sent = {"Authorization": f"Bearer {self.token}"} | (headers or {})
        try:
            response = httpx.request(
                method, url, params=params, json=json, headers=sent, timeout=HTTP_TIMEOUT_S
            )
        except httpx.ConnectError as error:
            raise ApiUnreachable(
                f"cannot connect to the API at {self.base_url} ({error}); is `paystream up` or"
                " `paystream api` running? (--api URL or PAYSTREAM_API_URL names another)"
            ) from error
        except httpx.TimeoutException as error:
            raise ApiUnreachable(f"no answer from {url} within {HTTP_TIMEOUT_S:g}s") from error
        except httpx.HTTPError as error:
            raise ApiUnreachable(f"{method} {url}: {error}") from error
        if response.is_error:
            raise problem_of(response)
        return response


def problem_of(response: httpx.Response) -> ApiProblem:
    """An error answer as ``code: detail`` (a validation problem names its fields)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        text = response.text[:PROBLEM_TEXT_MAX] or response.reason_phrase
        return ApiProblem(response.status_code, f"http_{response.status_code}", text)
    detail = str(body.get("detail", ""))
    fields = [
        f"{e.get('field')}: {e.get('message')}"
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    if fields:
        detail = f"{detail} ({'; '.join(fields[:FIELD_ERRORS_SHOWN_MAX])})"
    return ApiProblem(response.status_code, body["code"], detail)
