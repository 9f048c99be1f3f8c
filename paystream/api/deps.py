"""Request dependencies: the caller (a verified bearer token with the scope a route needs)
and a read-only connection to the read models."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Protocol

import psycopg
from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from psycopg_pool import ConnectionPool

from paystream.api import metrics
from paystream.api.auth import Principal, Scope, TokenVerifier, Unauthorized
from paystream.api.commands import CommandSender, EventFollower
from paystream.api.problems import Problem, unavailable
from paystream.api.read_models import Connection


class RateLimiter:
    """Requests per window (a second by default) per OAuth client, a moving window (the
    ``limits`` library), in this process's memory: each API process enforces it on what it
    serves."""

    def __init__(self, per_window: int, *, window_s: int = 1) -> None:
        self._item = RateLimitItemPerSecond(per_window, window_s)
        self._window_s = window_s
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, client_id: str) -> None:
        if self._limiter.hit(self._item, client_id):
            return
        reset_s = self._limiter.get_window_stats(self._item, client_id).reset_time - time.time()
        metrics.RATE_LIMITED.inc()
        raise Problem(
            429,
            "rate_limited",
            f"more than {self._item.amount} requests in {self._window_s} s from client {client_id}",
            headers={"Retry-After": str(max(1, math.ceil(reset_s)))},
        )


bearer = HTTPBearer(auto_error=False, description="An OAuth 2.0 access token from the issuer")


@dataclass(slots=True)
class Context:
    """What every request may use; made once per app (Kafka's side when the app starts)."""

    verifier: TokenVerifier
    pool: ConnectionPool[Connection]
    partitions: int
    limiter: RateLimiter
    payouts_per_batch_max: int
    payout_currencies: frozenset[str]
    sender: CommandSender | None = None
    follower: EventFollower | None = None

    def kafka(self) -> tuple[CommandSender, EventFollower]:
        if self.sender is None or self.follower is None:
            raise unavailable("this API process is not connected to Kafka")
        return self.sender, self.follower


def context(request: Request) -> Context:
    found: Context = request.app.state.context
    return found


class Guard(Protocol):
    """What :func:`caller` needs of an app's ``state.context`` (the API's, the analytics')."""

    verifier: TokenVerifier
    limiter: RateLimiter


def caller(scope: Scope) -> Callable[..., Principal]:
    """A dependency: the verified caller, who must hold ``scope``."""

    def verified(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Principal:
        guard: Guard = request.app.state.context
        if credentials is None or credentials.scheme.lower() != "bearer":
            metrics.AUTH_FAILURES.labels(reason="missing").inc()
            raise Unauthorized("a bearer token is required")
        try:
            principal = guard.verifier.verify(credentials.credentials)
        except Unauthorized:
            metrics.AUTH_FAILURES.labels(reason="invalid").inc()
            raise
        guard.limiter.check(principal.client_id)
        if not principal.has(scope):
            metrics.AUTH_FAILURES.labels(reason="scope").inc()
            raise Problem(
                403,
                "forbidden",
                f"this endpoint needs the scope {scope}",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
        return principal

    return verified


def read_connection(request: Request) -> Iterator[Connection]:
    """A pooled connection in a read-only transaction, for one request."""
    try:
        with context(request).pool.connection() as conn, conn.transaction():
            yield conn
    except psycopg.OperationalError as error:
        raise unavailable(f"the read models cannot be reached: {error}") from error


@contextmanager
def writing(ctx: Context, what: str) -> Iterator[Connection]:
    """A pooled connection in a read-write transaction (the pool's default is read only),
    committed when the block ends, rolled back when it raises (a Problem included). For the
    few writes that are not commands: a holder's address, a webhook retry or replay."""
    try:
        with ctx.pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ WRITE")
            yield conn
    except psycopg.OperationalError as error:
        raise unavailable(f"the {what} cannot be reached: {error}") from error


Db = Annotated[Connection, Depends(read_connection)]
Ctx = Annotated[Context, Depends(context)]


NAME_SHOWN_MAX = 40
UNKNOWN_SHOWN_MAX = 5


def known_query_parameters(request: Request) -> None:
    """Refuse query parameters the route does not take (a typo is not silently ignored)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    allowed = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - allowed)[:UNKNOWN_SHOWN_MAX]
    if unknown:
        fields = [{"field": f"query.{name[:NAME_SHOWN_MAX]}", "message": "unknown parameter"}
                  for name in unknown]  # fmt: skip
        raise Problem(422, "validation_error", "unknown query parameters", extra={"errors": fields})


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
