"""The dispatcher: due deliveries to their endpoints, each attempt signed and recorded.

One asyncio loop per copy of the service. Each turn it

1. records the outcomes of the attempts that finished (one Postgres transaction: attempt
   rows, deliveries delivered / rescheduled / dead, circuits moved);
2. claims as many due deliveries as it has free slots (``concurrency_max`` requests in
   flight per copy, ``webhook_endpoint_concurrency_max`` per endpoint across copies, the
   circuit breaker's say) -- each claimed delivery is leased for the request's timeout
   plus :data:`LEASE_MARGIN_S`;
3. starts one request per claimed delivery: ``POST`` of the stored payload with fresh
   Standard Webhooks headers, the whole attempt bounded by ``webhook_timeout_s``, redirects
   not followed, at most :data:`RESPONSE_EXCERPT_MAX_BYTES` of the answer read.

A 2xx is delivered; any other status, a timeout or a refused connection is a failure.
Postgres down: the turn's work is kept (outcomes are bounded by the slots), retried with
capped jittered backoff. A copy killed mid-request loses nothing: its leases run out and
another turn (its own after a restart, or another copy's) sends those deliveries again
under the same ``webhook-id`` -- at least once, deduplicated by the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import httpx
import psycopg
from standardwebhooks.webhooks import EmptyWebhookSecretError

from paystream.audit import db
from paystream.audit.store import SINK_ROLE
from paystream.settings import Settings
from paystream.topology.batching import backoff_s
from paystream.webhooks import metrics, store
from paystream.webhooks.breaker import BreakerPolicy
from paystream.webhooks.payload import body_text
from paystream.webhooks.schedule import Schedule
from paystream.webhooks.signing import signed_headers

__all__ = ["CONCURRENCY_MAX_DEFAULT", "DispatchOptions", "Dispatcher", "attempt"]

CONCURRENCY_MAX_DEFAULT: Final = 256
POLL_INTERVAL_S: Final = 0.1
"""How often an idle dispatcher looks for due deliveries (the first attempt's latency is
the ingestion's ~0.1 s plus at most this)."""
STATS_INTERVAL_S: Final = 5.0
LEASE_MARGIN_S: Final = 10.0
RESPONSE_EXCERPT_MAX_BYTES: Final = 1_000
STOP_TIMEOUT_S: Final = 30.0
"""How long a stopping dispatcher waits for its requests in flight (longer: their leases
run out and they are sent again)."""
DB_FAILURES_LOGGED_EVERY: Final = 10
logger = logging.getLogger("paystream.webhooks")


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchOptions:
    schedule: Schedule
    policy: BreakerPolicy
    timeout_s: float
    concurrency_max: int = CONCURRENCY_MAX_DEFAULT

    @classmethod
    def from_settings(
        cls, settings: Settings, *, concurrency_max: int = CONCURRENCY_MAX_DEFAULT
    ) -> DispatchOptions:
        return cls(
            schedule=Schedule(settings.webhook_retry_delays_s),
            policy=BreakerPolicy(
                failures_to_open=settings.webhook_breaker_failures,
                cooldown_s=settings.webhook_breaker_cooldown_s,
                concurrency_max=settings.webhook_endpoint_concurrency_max,
            ),
            timeout_s=settings.webhook_timeout_s,
            concurrency_max=concurrency_max,
        )

    @property
    def lease_s(self) -> float:
        return self.timeout_s + LEASE_MARGIN_S


async def attempt(
    http: httpx.AsyncClient, claimed: store.Claimed, *, timeout_s: float
) -> store.Outcome:
    """One signed POST of ``claimed``'s payload; what it came to (never raises for the
    endpoint's faults)."""
    at = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    status: int | None = None
    excerpt: str | None = None
    try:
        body = body_text(claimed.payload)
        headers = signed_headers(
            secret=claimed.secret, webhook_id=claimed.delivery_id, body=body, at=at
        )
        async with asyncio.timeout(timeout_s):
            status, excerpt = await _post(http, claimed.url, body, headers)
        kind: store.OutcomeKind = "delivered" if 200 <= status < 300 else "http_error"
        error = None if kind == "delivered" else f"HTTP {status}"
    except TimeoutError:
        kind, error = "timeout", f"no answer within {timeout_s} s"
    except httpx.HTTPError as failure:
        kind, error = "unreachable", f"{type(failure).__name__}: {failure}"
    except (ValueError, EmptyWebhookSecretError) as failure:  # an unusable secret or URL
        kind, error = "unreachable", f"endpoint misconfigured: {failure}"
    duration_s = time.monotonic() - started
    metrics.REQUEST_SECONDS.observe(duration_s)
    return store.Outcome(
        delivery_id=claimed.delivery_id, endpoint_id=claimed.endpoint_id, kind=kind,
        started_at=at, duration_ms=int(duration_s * 1000), http_status=status, error=error,
        response_excerpt=excerpt,
    )  # fmt: skip


async def _post(
    http: httpx.AsyncClient, url: str, body: str, headers: dict[str, str]
) -> tuple[int, str]:
    """The answer's status and the start of its body (the rest is never read)."""
    async with http.stream("POST", url, content=body.encode(), headers=headers) as response:
        read = bytearray()
        async for chunk in response.aiter_raw():
            read += chunk
            if len(read) >= RESPONSE_EXCERPT_MAX_BYTES:
                break
        excerpt = bytes(read[:RESPONSE_EXCERPT_MAX_BYTES]).decode("utf-8", errors="replace")
        return response.status_code, excerpt


@dataclass(slots=True)
class _Turn:
    """What the loop holds between turns (all bounded by ``concurrency_max``)."""

    in_flight: set[asyncio.Task[store.Outcome]] = field(default_factory=set)
    finished: list[store.Outcome] = field(default_factory=list)
    db_failures: int = 0
    retry_at_s: float = 0.0
    stats_at_s: float = 0.0


class Dispatcher:
    """One copy's dispatch loop (run it with :meth:`run`; :meth:`stop` from any thread)."""

    def __init__(self, dsn: str, options: DispatchOptions, *, seed: int | None = None) -> None:
        self._dsn = dsn
        self._options = options
        self._rng = random.Random(seed)
        self._conn: db.Connection | None = None
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn = _Turn()
        self._failure: BaseException | None = None

    def stop(self) -> None:
        self._stopping = True
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        limits = httpx.Limits(
            max_connections=self._options.concurrency_max,
            max_keepalive_connections=self._options.concurrency_max,
        )
        async with httpx.AsyncClient(
            limits=limits, timeout=self._options.timeout_s, follow_redirects=False,
            trust_env=False,
        ) as http:  # fmt: skip
            try:
                while not self._stopping:
                    await self._step(http)
                await self._drain()
            finally:
                for task in self._turn.in_flight:
                    task.cancel()
                if self._conn is not None:
                    self._conn.close()
        if self._failure is not None:
            raise self._failure

    async def _step(self, http: httpx.AsyncClient) -> None:
        turn = self._turn
        if time.monotonic() < turn.retry_at_s:
            await self._sleep(turn.retry_at_s - time.monotonic())
            return
        try:
            await self._record_finished()
            claimed = await self._claim()
            await self._report_stats()
        except psycopg.OperationalError as error:
            self._db_failed(error)
            return
        turn.db_failures = 0
        for delivery in claimed:
            self._start(http, delivery)
        full = len(claimed) > 0 and len(turn.in_flight) >= self._options.concurrency_max
        if not claimed or full:
            await self._sleep(POLL_INTERVAL_S)

    async def _record_finished(self) -> None:
        finished = list(self._turn.finished)
        if not finished:
            return
        ended = await asyncio.to_thread(
            store.record, self._connection(), finished, policy=self._options.policy,
            schedule=self._options.schedule, rng=self._rng,
        )  # fmt: skip
        del self._turn.finished[: len(finished)]
        _count(finished, ended)

    async def _claim(self) -> list[store.Claimed]:
        free = min(self._options.concurrency_max - len(self._turn.in_flight), store.CLAIM_MAX)
        if free <= 0 or self._stopping:
            return []
        taken = await asyncio.to_thread(
            store.claim, self._connection(), limit=free, policy=self._options.policy,
            schedule=self._options.schedule, lease_s=self._options.lease_s, rng=self._rng,
        )  # fmt: skip
        _count(taken.shorted, taken.finished)
        for delivery in taken.claimed:
            if delivery.first:
                latency_s = (delivery.claimed_at - delivery.event_at).total_seconds()
                metrics.FIRST_ATTEMPT_SECONDS.observe(max(latency_s, 0.0))
        return taken.claimed

    def _start(self, http: httpx.AsyncClient, delivery: store.Claimed) -> None:
        task = asyncio.create_task(attempt(http, delivery, timeout_s=self._options.timeout_s))
        self._turn.in_flight.add(task)
        metrics.IN_FLIGHT.inc()
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[store.Outcome]) -> None:
        """An attempt ended. It never raises for an endpoint's fault: an exception here is a
        bug (a float in a payload), and it stops the dispatcher loudly."""
        self._turn.in_flight.discard(task)
        metrics.IN_FLIGHT.dec()
        if task.cancelled():
            return
        failure = task.exception()
        if failure is not None:
            logger.error("an attempt failed unexpectedly: %r", failure)
            self._failure = self._failure or failure
            self.stop()
            return
        self._turn.finished.append(task.result())
        if self._wake is not None:
            self._wake.set()

    async def _report_stats(self) -> None:
        if time.monotonic() < self._turn.stats_at_s:
            return
        self._turn.stats_at_s = time.monotonic() + STATS_INTERVAL_S
        found = await asyncio.to_thread(store.stats, self._connection())
        metrics.QUEUE_DEPTH.labels(status="pending").set(found.pending)
        metrics.QUEUE_DEPTH.labels(status="due").set(found.due)
        metrics.QUEUE_DEPTH.labels(status="dead").set(found.dead)
        for state in ("closed", "open", "half_open"):
            metrics.CIRCUITS.labels(state=state).set(found.circuits.get(state, 0))

    async def _sleep(self, seconds: float) -> None:
        if self._wake is None:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(seconds, 0.0))

    def _db_failed(self, error: psycopg.OperationalError) -> None:
        turn = self._turn
        turn.db_failures += 1
        delay_s = backoff_s(turn.db_failures)
        turn.retry_at_s = time.monotonic() + delay_s
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None
        if turn.db_failures % DB_FAILURES_LOGGED_EVERY == 1:
            logger.warning(
                "Postgres failed (%s); retry %d in %.1f s", error, turn.db_failures, delay_s
            )

    async def _drain(self) -> None:
        """Wait (bounded) for the requests in flight, and record what they came to."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._turn.in_flight and time.monotonic() < deadline:
            await asyncio.wait(self._turn.in_flight, timeout=deadline - time.monotonic())
        try:
            await self._record_finished()
        except psycopg.OperationalError as error:  # their leases run out: sent again later
            logger.warning(
                "stopping: %d outcomes not recorded (%s)", len(self._turn.finished), error
            )

    def _connection(self) -> db.Connection:
        if self._conn is None or self._conn.closed:
            conn = db.connect(self._dsn, autocommit=True)
            conn.execute(f"SET ROLE {SINK_ROLE}")
            self._conn = conn
        return self._conn


def _count(outcomes: list[store.Outcome], ended: Counter[str]) -> None:
    for outcome in outcomes:
        metrics.ATTEMPTS.labels(outcome=outcome.kind).inc()
    for status, count in ended.items():
        metrics.FINISHED.labels(status=status).inc(count)
