"""The API served over real HTTP in this test process (uvicorn in a thread)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from paystream.services.process import free_port, wait_until

START_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 60.0
PROBLEM_JSON = "application/problem+json"


@contextlib.contextmanager
def serving(app: FastAPI, *, ready: bool = True) -> Iterator[str]:
    """``app`` in uvicorn on 127.0.0.1; its base URL. Stopped on exit. ``ready``: wait until
    ``/readyz`` says every service is reachable (Kafka connects in the background)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    try:
        if not wait_until(
            lambda: server.started or not thread.is_alive(), timeout_s=START_TIMEOUT_S
        ):
            raise AssertionError("the API did not start")
        if not server.started:
            raise AssertionError("the API stopped during start-up")
        url = f"http://127.0.0.1:{port}"
        if ready and not wait_until(lambda: is_ready(url), timeout_s=START_TIMEOUT_S):
            raise AssertionError(f"the API is not ready: {httpx.get(f'{url}/readyz').text}")
        yield url
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is the RFC 9457 problem ``code`` with ``status``; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"], body["type"]) == (status, code, f"/problems/{code}")
    assert body["title"] and body["detail"] and body["instance"]
    return body


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=HTTP_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False
