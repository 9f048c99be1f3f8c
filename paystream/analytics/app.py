"""The analytics process's HTTP side: the dashboard's JSON, health, metrics (and the page).

Every answer comes from :mod:`paystream.analytics.queries` under the client's lock (one
embedded engine per process). The JSON endpoints take the API's bearer tokens with the
scope ``ops:read``. Money sums are decimal strings: an ``Int128`` sum does not fit a
JavaScript number.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from confluent_kafka.admin import AdminClient
from fastapi import Depends, FastAPI, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from paystream.analytics import metrics, page, queries, store
from paystream.analytics.schema import Client
from paystream.api import problems
from paystream.api.auth import Principal, TokenVerifier
from paystream.api.deps import RateLimiter, caller, known_query_parameters
from paystream.api.problems import Problem
from paystream.settings import Settings
from paystream.topology import offsets
from paystream.topology.offsets import Position
from paystream.topology.topics import (
    Topics,
    analytics_group,
    app_id_for,
    postgres_sink_group,
)

RANGE_MAX = timedelta(days=400)
RANGE_DEFAULT = timedelta(hours=1)
STALE_AFTER_S_DEFAULT = 30.0
RATE_LIMIT_PER_S = 50
T = TypeVar("T")


@dataclass(slots=True)
class Analytics:
    """What the endpoints read: the store (behind its lock) and the logs' ends."""

    verifier: TokenVerifier
    limiter: RateLimiter
    client: Client
    database: str
    lock: threading.Lock
    settings: Settings
    admin: AdminClient
    stale_after_s: float = STALE_AFTER_S_DEFAULT
    refresh_s: float = page.REFRESH_S_DEFAULT
    """How often the ops page asks for its data."""

    def ask(self, query: Callable[..., T], **arguments: Any) -> T:
        """``query(client, database, **arguments)`` under the lock, timed by its name."""
        started = time.perf_counter()
        with self.lock:
            answer = query(self.client, self.database, **arguments)
        metrics.QUERY_SECONDS.labels(query=query.__name__).observe(time.perf_counter() - started)
        return answer


@dataclass(frozen=True, slots=True)
class Window:
    start_ms: int
    end_ms: int
    step_s: int


def window(
    since: Annotated[
        datetime | None, Query(description="from (ISO 8601); default an hour ago")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="to (ISO 8601), exclusive; default now")
    ] = None,
) -> Window:
    """The range every chart shows, and the width of its intervals."""
    end = _utc(until) if until is not None else datetime.now(UTC)
    start = _utc(since) if since is not None else end - RANGE_DEFAULT
    if not start < end:
        raise _invalid("query.since", "must be before until")
    if end - start > RANGE_MAX:
        raise _invalid("query.since", f"the range is at most {RANGE_MAX.days} days")
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    return Window(start_ms, end_ms, queries.series_step_s(start_ms, end_ms))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _invalid(field: str, message: str) -> Problem:
    errors = [{"field": field, "message": message}]
    return Problem(422, "validation_error", message, extra={"errors": errors})


Ops = Annotated[Principal, Depends(caller("ops:read"))]
Range = Annotated[Window, Depends(window)]
Shown = Annotated[int, Query(ge=1, le=queries.DEAD_LETTERS_SHOWN_MAX)]
DEAD_LETTERS_SHOWN = 20


def create_app(analytics: Analytics, *, extra: Callable[[FastAPI], None] | None = None) -> FastAPI:
    app = FastAPI(
        title="paystream analytics",
        description="The ops dashboard's data: funnel, ledger consistency, latency, lag, DLQ.",
        dependencies=[Depends(known_query_parameters)],
    )
    app.state.context = analytics
    problems.install(app)
    _operations(app, analytics)
    _dashboard(app, analytics)
    page.install(app, page.PageOptions(
        issuer=analytics.verifier.issuer, refresh_s=analytics.refresh_s,
        stale_after_s=analytics.stale_after_s, sink_group=analytics_group(analytics.settings),
    ))  # fmt: skip
    if extra is not None:
        extra(app)
    return app


def _operations(app: FastAPI, analytics: Analytics) -> None:
    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> Any:
        """ClickHouse answers and the identity provider is reachable."""
        checks = {
            "clickhouse": "ok" if _clickhouse_ok(analytics) else "unreachable",
            "identity_provider": "ok" if analytics.verifier.ready() else "unreachable",
        }
        ok = all(value == "ok" for value in checks.values())
        body = {"status": "ok" if ok else "unavailable", "checks": checks}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def prometheus() -> Response:
        """Prometheus metrics (open, as the workers' and the sink's are)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _clickhouse_ok(analytics: Analytics) -> bool:
    try:
        analytics.ask(_ping)
    except Exception:  # clickhouse-connect raises several unrelated types
        return False
    return True


def _ping(client: Client, _database: str) -> None:
    client.command("SELECT 1")


def _dashboard(app: FastAPI, analytics: Analytics) -> None:
    ask = analytics.ask

    @app.get("/v1/analytics/funnel", tags=["analytics"])
    def funnel(_who: Ops, at: Range) -> dict[str, Any]:
        """Payments requested -> debited -> completed / reversed / rejected, with the rates,
        in total and per interval."""
        total = ask(queries.funnel, start_ms=at.start_ms, end_ms=at.end_ms)
        series = ask(queries.funnel_series, **_series(at))
        return {
            **_series(at), "total": _funnel(total),
            "series": [{"start_ms": start, **_funnel(f)} for start, f in series],
        }  # fmt: skip

    @app.get("/v1/analytics/consistency", tags=["analytics"])
    def consistency(_who: Ops) -> dict[str, Any]:
        """Per currency: Σ debits - Σ credits (0 while every entry balances), money in transit,
        and the workers' accounts against the journal's projection of them."""
        return {"currencies": [_consistency(row) for row in ask(queries.ledger_consistency)]}

    @app.get("/v1/analytics/latency", tags=["analytics"])
    def latency(_who: Ops, at: Range) -> dict[str, Any]:
        """P50/P95/P99 per interval: command -> terminal event, and -> ledger settled."""
        return {
            **_series(at),
            "end_to_end": [asdict(p) for p in ask(queries.latency, **_series(at))],
            "time_to_consistency": [
                asdict(p) for p in ask(queries.time_to_consistency, **_series(at))
            ],
        }

    @app.get("/v1/analytics/dead-letters", tags=["analytics"])
    def dead_letters(_who: Ops, at: Range, limit: Shown = DEAD_LETTERS_SHOWN) -> dict[str, Any]:
        """The DLQ's depth over time and its newest records with their reasons."""
        newest = ask(queries.newest_dead_letters, start_ms=at.start_ms, end_ms=at.end_ms,
                     limit=limit)  # fmt: skip
        return {
            **_series(at), "depth": [asdict(d) for d in ask(queries.dlq_depth, **_series(at))],
            "newest": [asdict(d) for d in newest],
        }  # fmt: skip

    @app.get("/v1/analytics/lag", tags=["analytics"])
    def lag(_who: Ops) -> dict[str, Any]:
        """Event lag (now - the newest fact per log), each group's records behind, and
        whether the dashboard is stale."""
        return freshness_report(analytics)


def freshness_report(analytics: Analytics) -> dict[str, Any]:
    """How fresh the store is: per log the newest fact's age, per group the records behind
    (the workers' committed offsets, this sink's stored positions), and ``stale``: records
    are waiting and the newest stored event is older than ``stale_after_s``."""
    now_ms = int(time.time() * 1000)
    fresh = analytics.ask(queries.freshness, now_ms=now_ms)
    groups = _groups_behind(analytics)
    events = next(f for f in fresh if f.source == "events")
    sink_behind = groups.get(analytics_group(analytics.settings))
    stale = (sink_behind is None or sink_behind > 0) and (
        events.age_ms is None or events.age_ms > analytics.stale_after_s * 1000
    )
    return {
        "now_ms": now_ms, "stale": stale, "stale_after_s": analytics.stale_after_s,
        "logs": [asdict(f) for f in fresh],
        "groups": [{"group": g, "records_behind": behind} for g, behind in sorted(groups.items())],
    }  # fmt: skip


def _groups_behind(analytics: Analytics) -> dict[str, int | None]:
    """Records behind per consumer group (None: Kafka did not answer): the workers, this
    sink, and the Postgres sink when one has committed positions."""
    settings = analytics.settings
    topics = Topics.from_settings(settings)
    facts = [topics.events, topics.ledger, topics.dlq]
    sinked = [*facts, topics.balances_changelog]
    workers = [topics.commands, topics.legs]
    try:
        ends = offsets.log_ends(analytics.admin, [*sinked, *workers], settings.partitions)
        worker_at = offsets.committed(analytics.admin, app_id_for(settings))
        postgres_at = offsets.committed(analytics.admin, postgres_sink_group(settings))
    except Exception:  # the admin client raises KafkaException and timeouts alike
        return {app_id_for(settings): None, analytics_group(settings): None}
    mine = analytics.ask(store.stored_positions)
    found: dict[str, int | None] = {
        app_id_for(settings): _behind(ends, worker_at, workers),
        analytics_group(settings): _behind(ends, mine, sinked),
    }
    if postgres_at:  # a Postgres sink runs here (it commits its positions to Kafka too)
        found[postgres_sink_group(settings)] = _behind(ends, postgres_at, facts)
    return found


def _behind(ends: dict[Position, int], at: dict[Position, int], topics: list[str]) -> int:
    return sum(max(0, end - at.get(p, 0)) for p, end in ends.items() if p[0] in topics)


def _series(at: Window) -> dict[str, int]:
    return {"start_ms": at.start_ms, "end_ms": at.end_ms, "step_s": at.step_s}


def _funnel(found: queries.Funnel) -> dict[str, Any]:
    return {
        **asdict(found), "success_rate": found.success_rate,
        "compensation_rate": found.compensation_rate, "dedupe_rate": found.dedupe_rate,
    }  # fmt: skip


def _consistency(row: queries.CurrencyConsistency) -> dict[str, Any]:
    totals = zip(queries.TOTALS_NAMES, row.ledger_totals, row.account_totals, strict=True)
    return {
        "currency": row.currency, "debits_minor": str(row.debits_minor),
        "credits_minor": str(row.credits_minor), "difference_minor": str(row.difference_minor),
        "transit_minor": str(row.transit_minor), "accounts": row.accounts,
        "projection_difference_minor": str(row.projection_difference_minor),
        "totals": [
            {"total": name, "ledger_minor": str(ledger), "accounts_minor": str(held)}
            for name, ledger, held in totals
        ],
    }  # fmt: skip
