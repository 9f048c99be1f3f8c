"""``paystream analytics``: the analytics sink and the dashboard, in one process.

With the embedded engine (``chdb://``) only this process may open the data directory, so
it runs the sink in its main thread and serves the page and the JSON endpoints from uvicorn
in another, with the same client (every use under one lock). Against a ClickHouse server
several copies can run: they share the sink's consumer group, and every copy serves the
dashboard.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Final

import uvicorn
from confluent_kafka.admin import AdminClient

from paystream.analytics import schema, sink
from paystream.analytics.app import Analytics, create_app
from paystream.analytics.page import REFRESH_S_DEFAULT
from paystream.api.app import AUDIENCE_DEFAULT
from paystream.api.auth import TokenVerifier
from paystream.api.deps import RateLimiter
from paystream.settings import Settings
from paystream.topology.batching import BatchingSink

RATE_LIMIT_PER_S: Final = 50
SERVER_START_TIMEOUT_S: Final = 60.0
SERVER_STOP_TIMEOUT_S: Final = 30.0
EXIT_FAILED: Final = 1
logger = logging.getLogger("paystream.analytics")


@dataclass(frozen=True, slots=True)
class Options:
    host: str
    port: int
    name: str
    issuer: str
    stale_after_s: float
    sink: bool = True
    """False: serve the dashboard only (another copy, against a server, writes)."""
    refresh_s: float = REFRESH_S_DEFAULT
    """How often the ops page asks for its data."""


def run(settings: Settings, options: Options) -> int:
    """Serve until SIGTERM or SIGINT; a sink that fails stops the process loudly (exit 1).

    The sink runs in the main thread and the HTTP server in another: uvicorn captures
    signals only in the main thread (and re-raises them when it stops), so here this
    function owns them and stops both in order: the sink's batch, then the server."""
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=settings.clickhouse_dsn)
    schema.create(client, settings.clickhouse_database)
    analytics = Analytics(
        verifier=TokenVerifier(issuer=options.issuer, audience=AUDIENCE_DEFAULT),
        limiter=RateLimiter(RATE_LIMIT_PER_S), client=client,
        database=settings.clickhouse_database, lock=threading.Lock(), settings=settings,
        admin=AdminClient(settings.kafka.config()),
        stale_after_s=options.stale_after_s, refresh_s=options.refresh_s,
    )  # fmt: skip
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(analytics), host=options.host, port=options.port, log_level="warning",
            access_log=False,
        )
    )  # fmt: skip
    http = threading.Thread(target=server.run, name="http")
    loop = (
        sink.build(settings, options.name, client=client, database=analytics.database,
                   lock=analytics.lock)
        if options.sink else None
    )  # fmt: skip
    stopping = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        stopping.set()
        if loop is not None:
            loop.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    http.start()
    try:
        if not _listening(server, http):
            logger.error("the dashboard could not listen on %s:%d", options.host, options.port)
            return EXIT_FAILED
        return _serve(loop, stopping)
    finally:
        server.should_exit = True
        http.join(SERVER_STOP_TIMEOUT_S)
        client.close()


def _listening(server: uvicorn.Server, http: threading.Thread) -> bool:
    """Wait (bounded) until the server listens; False when it gave up (a port in use)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started and http.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.started


def _serve(loop: BatchingSink | None, stopping: threading.Event) -> int:
    if loop is None:
        stopping.wait()
        return 0
    try:
        loop.run()
    except Exception:
        logger.exception("the analytics sink failed; stopping the process")
        return EXIT_FAILED
    return 0
