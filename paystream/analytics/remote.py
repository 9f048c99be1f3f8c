"""Asking a running analytics process over HTTP (the demo, the tests)."""

from __future__ import annotations

import time
from typing import Any

import httpx

HTTP_TIMEOUT_S = 30.0
POLL_S = 0.5


def get(url: str, path: str, token: str, **params: Any) -> Any:
    """``GET url+path`` with a bearer token; the JSON answer (raises on an error status)."""
    response = httpx.get(f"{url}{path}", params=params, timeout=HTTP_TIMEOUT_S,
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    response.raise_for_status()
    return response.json()


def wait_caught_up(url: str, token: str, group: str, *, timeout_s: float) -> dict[str, Any] | None:
    """The lag report once ``group`` has stored every record of its logs; None at the
    timeout. Connection errors count as not yet (the process may be starting)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            report: dict[str, Any] = get(url, "/v1/analytics/lag", token)
        except httpx.TransportError:
            report = {"groups": []}
        if {g["group"]: g["records_behind"] for g in report["groups"]}.get(group) == 0:
            return report
        time.sleep(POLL_S)
    return None
