"""``paystream api``: the FastAPI application.

Every endpoint needs a bearer token from the configured OIDC issuer except
``/healthz`` and ``/readyz``; there is no setting that turns authentication
off. Reads come from the Postgres read models the sink keeps (a pool of
read-only connections); each error is RFC 9457 problem+json.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
from confluent_kafka import KafkaException
from fastapi import Depends, FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from paystream.api import metrics, problems, read_models
from paystream.api.auth import Principal, TokenVerifier
from paystream.api.commands import CommandSender, EventFollower
from paystream.api.deps import Context, RateLimiter, caller, known_query_parameters
from paystream.api.read_models import Connection
from paystream.api.routes import (
    accounts,
    contacts,
    payments,
    payouts,
    reviews,
    schemas,
    webhooks,
)
from paystream.api.schemas import Health
from paystream.settings import Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import (
    TopicLayoutError,
    Topics,
    ensure_topics,
    postgres_sink_group,
)

AUDIENCE_DEFAULT = "paystream-api"
logger = logging.getLogger("paystream.api")
POOL_SIZE_MAX = 8
POOL_TIMEOUT_S = 5.0
"""How long a request waits for a pooled connection before it is answered 503."""
STATEMENT_TIMEOUT_MS = 5_000
CONNECT_TIMEOUT_S = 5
API_VERSION = "1.0.0"
KAFKA_RETRY_MAX_S = 10.0
KAFKA_STOP_TIMEOUT_S = 60.0
RATE_LIMIT_PER_S = 500
"""Requests per second one OAuth client may make of one API process."""


def _configure(conn: Connection) -> None:
    conn.execute(
        f"SET default_transaction_read_only = on; SET statement_timeout = {STATEMENT_TIMEOUT_MS}"
    )


def make_pool(dsn: str) -> ConnectionPool[Connection]:
    return ConnectionPool(
        dsn,
        min_size=1,
        max_size=POOL_SIZE_MAX,
        timeout=POOL_TIMEOUT_S,
        kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
        configure=_configure,
        open=False,
        name="read-models",
    )


def create_app(
    settings: Settings,
    *,
    issuer: str,
    dsn: str,
    audience: str = AUDIENCE_DEFAULT,
    rate_limit_per_s: int = RATE_LIMIT_PER_S,
    rate_window_s: int = 1,
) -> FastAPI:
    context = Context(
        verifier=TokenVerifier(issuer=issuer, audience=audience),
        pool=make_pool(dsn),
        partitions=settings.partitions,
        limiter=RateLimiter(rate_limit_per_s * rate_window_s, window_s=rate_window_s),
        payouts_per_batch_max=settings.payouts_per_batch_max,
        payout_currencies=frozenset(settings.payout_currencies),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        context.pool.open(wait=False)  # the API answers (503) while Postgres is away
        connector = KafkaConnector(settings, context)  # and while Kafka is
        connector.start()
        try:
            yield
        finally:
            connector.stop()
            context.pool.close()

    app = FastAPI(
        title="paystream",
        version=API_VERSION,
        description="Payments on Kafka: accounts, payments and their journal.",
        lifespan=lifespan,
        dependencies=[Depends(known_query_parameters)],
    )
    app.state.context = context
    problems.install(app)
    _document(app)
    app.middleware("http")(_observe)
    app.include_router(accounts.router)
    app.include_router(contacts.router)
    app.include_router(payments.router)
    app.include_router(payouts.router)
    app.include_router(reviews.router)
    app.include_router(webhooks.router)
    app.state.schemas = schemas.SchemaService(
        settings, registry_from_url(settings.schema_registry_url, settings.data_dir)
    )
    app.include_router(schemas.router)
    _operations(app, settings, context)
    return app


class KafkaConnector:
    """Connects the API to Kafka in the background, retrying with capped, jittered backoff
    for as long as the app runs: the API starts (and answers 503 for commands, with
    ``/readyz`` saying why) while Kafka is away."""

    def __init__(self, settings: Settings, context: Context) -> None:
        self._settings = settings
        self._context = context
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-connector", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._context.sender, self._context.follower = _kafka(self._settings)
                return
            except TopicLayoutError as error:  # configuration, not an outage: say it and stop
                logger.error("the API cannot use Kafka's topics: %s", error)
                return
            except KafkaException as error:
                failures += 1
                delay_s = random.uniform(0, min(KAFKA_RETRY_MAX_S, 0.5 * 2**failures))
                logger.warning(
                    "Kafka unreachable (%s); retry %d in %.1f s", error, failures, delay_s
                )
                self._stopping.wait(delay_s)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(KAFKA_STOP_TIMEOUT_S)
        sender, follower = self._context.sender, self._context.follower
        self._context.sender = self._context.follower = None  # librdkafka's threads end with them
        if follower is not None:
            follower.close()
        if sender is not None:
            sender.close()


def _kafka(settings: Settings) -> tuple[CommandSender, EventFollower]:
    """Commands out, answers in; the topics made if this is the platform's first start."""
    topics = Topics.from_settings(settings)
    kafka = settings.kafka
    ensure_topics(kafka, topics)
    serde = AvroSerde(
        registry_from_url(settings.schema_registry_url, settings.data_dir),
        topics=topics.payloads(),
    )
    sender = CommandSender(kafka=kafka, topic=topics.commands, serde=serde)
    follower = EventFollower(
        kafka=kafka,
        topic=topics.events,
        serde=serde,
        group=f"{settings.topic_prefix}-api-{uuid.uuid4().hex[:12]}",
    )
    try:
        follower.start()
    except KafkaException:
        sender.close()
        raise
    return sender, follower


def _operations(app: FastAPI, settings: Settings, context: Context) -> None:
    @app.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> Health:
        """The process answers."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["operations"],
             responses={503: {"model": Health}})  # fmt: skip
    def readyz() -> Any:
        """Kafka, Postgres and the identity provider are reachable, and the read models are
        within ``read_model_lag_max`` records of the logs."""
        follower = context.follower
        checks = {
            "kafka": "ok" if follower is not None and follower.healthy else "unreachable",
            "postgres": "ok" if _postgres_ok(context.pool) else "unreachable",
            "identity_provider": "ok" if context.verifier.ready() else "unreachable",
        }
        checks["read_models"] = _freshness(settings, context)
        ok = all(v == "ok" for v in checks.values())
        body = Health(status="ok" if ok else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def prometheus(_who: Annotated[Principal, Depends(caller("ops:read"))]) -> Response:
        """Prometheus metrics in the text exposition format (scope ``ops:read``)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _document(app: FastAPI) -> None:
    """The OpenAPI document says what every error looks like (problem+json)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.document_problems(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _freshness(settings: Settings, context: Context) -> str:
    """``ok``, or how far the sink's stored positions are behind the ledger and events logs."""
    if context.follower is None:
        return "unknown: not connected to Kafka"
    topics = Topics.from_settings(settings)
    try:
        ends = context.follower.log_ends([topics.ledger, topics.events], settings.partitions)
        with context.pool.connection(timeout=POOL_TIMEOUT_S) as conn:
            behind = read_models.records_behind(conn, postgres_sink_group(settings), ends)
    except (KafkaException, psycopg.Error) as error:  # a pool timeout is a psycopg.Error
        return f"unknown: {type(error).__name__}"
    metrics.READ_MODEL_LAG.set(behind)
    if behind > settings.read_model_lag_max:
        return f"behind by {behind} records (bound {settings.read_model_lag_max})"
    return "ok"


def _postgres_ok(pool: ConnectionPool[Connection]) -> bool:
    try:
        with pool.connection(timeout=POOL_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


async def _observe(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Count and time every request by its route template (never by its raw path)."""
    started = time.perf_counter()
    metrics.IN_FLIGHT.inc()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        metrics.IN_FLIGHT.dec()
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.REQUESTS.labels(route=route, method=request.method, status=str(status)).inc()
        metrics.REQUEST_SECONDS.labels(route=route, method=request.method).observe(
            time.perf_counter() - started
        )
