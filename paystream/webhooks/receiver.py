"""A webhook receiver: how a partner verifies paystream's webhooks (and the one the tests,
the benchmark and a local demo run).

Verifying is one call of the ``standardwebhooks`` library (``pip install standardwebhooks``)
with the endpoint's secret, the raw body and the headers::

    from standardwebhooks import Webhook, WebhookVerificationError

    def verified_event(secret: str, body: bytes, headers: dict[str, str]) -> dict:
        return Webhook(secret).verify(body, headers)  # WebhookVerificationError if not

``verify`` refuses a request that lacks ``webhook-id``, ``webhook-timestamp`` or
``webhook-signature``; whose timestamp is more than 5 minutes older or newer than the
receiver's clock ("Message timestamp too old" / "too new": a captured request replayed
later is refused, so keep the receiver's clock right); or none of whose ``v1,`` signatures
is the HMAC-SHA256 of ``<webhook-id>.<webhook-timestamp>.<body>`` (compared in constant
time). Verify the bytes as received, before any JSON parsing. Then:

- answer 2xx quickly (within the 15 s timeout) and do the work after;
- deduplicate by ``webhook-id``: a delivery whose answer was lost is sent again with the
  same id (paystream delivers at least once);
- don't rely on order: a retried event can arrive after a later one; each body carries its
  ``status`` and ``occurred_at_ms``.

Run this one locally (it prints each event once)::

    python -m paystream.webhooks.receiver --secret whsec_... --port 8090
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

__all__ = [
    "BODY_MAX_BYTES",
    "Plan",
    "Received",
    "ReceiverServer",
    "main",
    "serving",
    "verified_event",
]

BODY_MAX_BYTES: Final = 1024 * 1024
REQUESTS_KEPT_MAX: Final = 500_000
"""Requests remembered for inspection (the oldest are forgotten beyond this)."""
SHUTDOWN_TIMEOUT_S: Final = 10.0


def verified_event(secret: str, body: bytes, headers: Mapping[str, str]) -> Any:
    """The event in ``body`` if paystream signed it for this endpoint within the last five
    minutes; raises ``WebhookVerificationError`` otherwise."""
    return Webhook(secret).verify(body, dict(headers))


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """How the receiver behaves (tests and the benchmark): every request of a webhook-id
    fails its first ``fail_first`` times; ``always_fail`` fails everything; ``fail_rate``
    fails at random (seeded). A failure is ``fail_status``; every answer comes after
    ``delay_s``."""

    fail_first: int = 0
    always_fail: bool = False
    fail_rate: float = 0.0
    fail_status: int = 500
    delay_s: float = 0.0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Received:
    webhook_id: str
    timestamp: str
    status: int
    """What the receiver answered (400: the signature did not verify)."""
    error: str | None
    at_s: float


@dataclass(slots=True)
class _State:
    requests: list[Received] = field(default_factory=list)
    events: dict[str, Any] = field(default_factory=dict)
    """webhook-id -> the event, once (the first verified request that was not failed)."""
    first_seen_s: dict[str, float] = field(default_factory=dict)
    tries: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0


class ReceiverServer(ThreadingHTTPServer):
    """An HTTP server that verifies every request, deduplicates by webhook-id and fails as
    its :class:`Plan` says."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], *, secret: str, plan: Plan = Plan(), echo: bool = False
    ) -> None:
        super().__init__(address, _Handler)
        self.secret = secret
        self.plan = plan
        self.echo = echo
        """Print each event the first time it is received."""
        self._random = random.Random(plan.seed)
        self._lock = threading.Lock()
        self._state = _State()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/webhooks"

    def answer(self, headers: Mapping[str, str], body: bytes) -> tuple[int, str | None]:
        """The status to answer one request with (and why, when it is a refusal)."""
        webhook_id = headers.get("webhook-id", "")
        try:
            event = verified_event(self.secret, body, headers)
        except WebhookVerificationError as error:
            return self._record(webhook_id, headers, 400, str(error)), str(error)
        with self._lock:
            tries = self._state.tries.get(webhook_id, 0) + 1
            self._state.tries[webhook_id] = tries
            failing = self._fails(tries)
        time.sleep(self.plan.delay_s)
        if failing:
            return self._record(webhook_id, headers, self.plan.fail_status, "planned"), None
        with self._lock:
            new = webhook_id not in self._state.events
            if new:
                self._state.events[webhook_id] = event
                self._state.first_seen_s[webhook_id] = time.time()
            else:
                self._state.duplicates += 1
        if new and self.echo:
            print(webhook_id, json.dumps(event, sort_keys=True), flush=True)
        return self._record(webhook_id, headers, 204, None), None

    def _fails(self, tries: int) -> bool:
        plan = self.plan
        if plan.always_fail or tries <= plan.fail_first:
            return True
        return plan.fail_rate > 0 and self._random.random() < plan.fail_rate

    def _record(
        self, webhook_id: str, headers: Mapping[str, str], status: int, error: str | None
    ) -> int:
        seen = Received(
            webhook_id, headers.get("webhook-timestamp", ""), status, error, time.time()
        )
        with self._lock:
            if len(self._state.requests) >= REQUESTS_KEPT_MAX:
                del self._state.requests[: REQUESTS_KEPT_MAX // 10]
            self._state.requests.append(seen)
        return status

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._state.requests)

    def events(self) -> dict[str, Any]:
        """webhook-id -> event, each once: what a deduplicating receiver processed."""
        with self._lock:
            return dict(self._state.events)

    def first_seen_s(self) -> dict[str, float]:
        with self._lock:
            return dict(self._state.first_seen_s)

    @property
    def duplicates(self) -> int:
        with self._lock:
            return self._state.duplicates


class _Handler(BaseHTTPRequestHandler):
    server: ReceiverServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if not 0 <= length <= BODY_MAX_BYTES:
            self._reply(413, "body too large")
            return
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, error = self.server.answer(headers, body)
        self._reply(status, error)

    def _reply(self, status: int, error: str | None) -> None:
        data = b"" if error is None else json.dumps({"error": error}).encode()
        self.send_response(status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: the server records what it answered


@contextlib.contextmanager
def serving(secret: str, plan: Plan = Plan(), *, port: int = 0) -> Iterator[ReceiverServer]:
    """A receiver on 127.0.0.1 (a free port by default) in a thread; stopped on exit."""
    server = ReceiverServer(("127.0.0.1", port), secret=secret, plan=plan)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(SHUTDOWN_TIMEOUT_S)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paystream.webhooks.receiver", description=__doc__)
    parser.add_argument("--secret", required=True, help="the endpoint's whsec_... secret")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    server = ReceiverServer(("127.0.0.1", args.port), secret=args.secret, echo=True)
    print(f"receiving on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
