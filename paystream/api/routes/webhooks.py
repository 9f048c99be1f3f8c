"""``/v1/webhooks``: a partner's webhook deliveries, and retrying them by hand.

Reads (``webhooks:read``): the deliveries, newest first, by status (``dead`` is the DLQ),
and one delivery with its attempts. Writes (``webhooks:write``, a partner's token): retry
one delivery, or replay an endpoint's deliveries of events since a time -- the seed's
self-service retry. Each gives the deliveries a new round of the retry schedule, due now,
under the same ``webhook-id`` (receivers deduplicate by it), and lets an open circuit send
its probe at once. A partner sees and retries its own deliveries only; another's are 404.

Both POSTs take an ``Idempotency-Key`` like every POST: a repeat with the same key gets the
first answer again and does nothing more; the same key on another request is
``409 duplicate_conflict``. Keys are remembered for 24 hours.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from paystream.api import webhook_queries as queries
from paystream.api.auth import Principal
from paystream.api.deps import Ctx, Db, caller, writing
from paystream.api.problems import Problem, not_found
from paystream.api.read_models import PAGE_SIZE_DEFAULT, BadCursor, Row
from paystream.api.routes.accounts import Cursor, Limit, bad_cursor
from paystream.api.routes.commands import IdempotencyKey, writer_partner
from paystream.api.submit import request_id

__all__ = ["AttemptOut", "DeliveryOut", "DeliveryPage", "ReplayOut", "router"]

DELIVERY_ID_LENGTH_MAX = 64
ENDPOINT_ID_LENGTH_MAX = 64

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
Reader = Annotated[Principal, Depends(caller("webhooks:read"))]
Writer = Annotated[Principal, Depends(caller("webhooks:write"))]
DeliveryId = Annotated[str, Path(min_length=1, max_length=DELIVERY_ID_LENGTH_MAX)]
EndpointId = Annotated[str, Path(min_length=1, max_length=ENDPOINT_ID_LENGTH_MAX)]
DeliveryStatus = Literal["pending", "delivered", "dead"]


class AttemptOut(BaseModel):
    attempt: int
    round: int
    started_at: datetime.datetime
    duration_ms: int
    outcome: Literal["delivered", "http_error", "timeout", "unreachable", "circuit_open"]
    http_status: int | None
    error: str | None

    @classmethod
    def of(cls, row: Row) -> AttemptOut:
        return cls(**{name: row[name] for name in cls.model_fields})


class DeliveryOut(BaseModel):
    """One event for one endpoint. ``delivery_id`` is the ``webhook-id`` header it is sent
    with (every attempt, every round)."""

    delivery_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    payment_id: str
    status: DeliveryStatus
    round: int
    attempts: int
    """In this round."""
    next_attempt_at: datetime.datetime | None
    """When the next attempt is due (pending only)."""
    event_at: datetime.datetime
    recorded_at: datetime.datetime
    first_attempt_at: datetime.datetime | None
    delivered_at: datetime.datetime | None
    dead_at: datetime.datetime | None
    last_status: int | None
    last_error: str | None
    payload: dict[str, Any]
    attempt_log: list[AttemptOut] | None = None
    """With one delivery: its latest attempts (at most 100), oldest first."""

    @classmethod
    def of(cls, row: Row, attempts: list[Row] | None = None) -> DeliveryOut:
        fields = {name: row[name] for name in cls.model_fields if name != "attempt_log"}
        if row["status"] != "pending":
            fields["next_attempt_at"] = None
        log = None if attempts is None else [AttemptOut.of(a) for a in attempts]
        return cls(**fields, attempt_log=log)


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class ReplayOut(BaseModel):
    endpoint_id: str
    since: datetime.datetime
    replayed: int
    """Deliveries put back in the queue."""
    next_since: datetime.datetime | None
    """More than 10,000 were found: replay again from here (null: all were replayed)."""


@router.get("/deliveries", response_model=DeliveryPage)
def list_deliveries(
    who: Reader,
    conn: Db,
    status: Annotated[
        DeliveryStatus | None, Query(description="dead: retries exhausted (the DLQ)")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = PAGE_SIZE_DEFAULT,
) -> DeliveryPage:
    """The caller's deliveries (ops: every partner's), newest event first."""
    try:
        page = queries.deliveries(
            conn, partner_id=_partner_seen(who), status=status, cursor=cursor, limit=limit
        )
    except BadCursor as error:
        raise bad_cursor(error) from error
    return DeliveryPage(
        items=[DeliveryOut.of(row) for row in page.items], next_cursor=page.next_cursor
    )


@router.get("/deliveries/{delivery_id}", response_model=DeliveryOut)
def get_delivery(delivery_id: DeliveryId, who: Reader, conn: Db) -> DeliveryOut:
    """One delivery with its attempts."""
    row = queries.delivery(conn, delivery_id)
    if row is None or not who.sees(row["partner_id"]):
        raise not_found(f"delivery {delivery_id}")
    return DeliveryOut.of(row, queries.attempts(conn, delivery_id))


@router.post("/deliveries/{delivery_id}/retry", status_code=202, response_model=DeliveryOut)
def retry_delivery(
    delivery_id: DeliveryId, who: Writer, ctx: Ctx, key: IdempotencyKey
) -> JSONResponse:
    """Send the delivery again now (a new round of the retry schedule), whatever its status."""
    partner, key = writer_partner(who), request_id(key)
    with writing(ctx, "delivery store") as conn:
        remembered = queries.claim_key(
            conn, partner, key, queries.fingerprint("retry", delivery_id)
        )
        if remembered is not None:
            return _again(remembered)
        row = queries.delivery(conn, delivery_id, lock=True)
        if row is None or row["partner_id"] != partner:
            raise not_found(f"delivery {delivery_id}")
        retried = queries.retry(conn, delivery_id)
        if retried is None:
            raise Problem(
                409, "retry_limit_reached",
                f"delivery {delivery_id} had {queries.ROUNDS_MAX} rounds already",
            )  # fmt: skip
        body = DeliveryOut.of(retried).model_dump(mode="json")
        queries.remember(conn, partner, key, 202, body)
    return JSONResponse(body, status_code=202)


@router.post("/endpoints/{endpoint_id}/replay", status_code=202, response_model=ReplayOut)
def replay_endpoint(
    endpoint_id: EndpointId,
    who: Writer,
    ctx: Ctx,
    key: IdempotencyKey,
    since: Annotated[
        datetime.datetime,
        Query(description="RFC 3339 with an offset: events at or after this time"),
    ],
) -> JSONResponse:
    """Send the endpoint's deliveries of events since ``since`` again, oldest first, at most
    10,000 (delivered and dead ones too: receivers deduplicate by ``webhook-id``)."""
    partner, key = writer_partner(who), request_id(key)
    if since.tzinfo is None:
        raise _bad_since("needs a UTC offset, like 2026-12-01T10:00:00Z")
    if since > datetime.datetime.now(datetime.UTC):
        raise _bad_since("is in the future")
    with writing(ctx, "delivery store") as conn:
        print_ = queries.fingerprint("replay", endpoint_id, since.isoformat())
        remembered = queries.claim_key(conn, partner, key, print_)
        if remembered is not None:
            return _again(remembered)
        found = queries.endpoint(conn, endpoint_id)
        if found is None or found["partner_id"] != partner:
            raise not_found(f"endpoint {endpoint_id}")
        if not found["enabled"]:
            raise Problem(409, "endpoint_disabled", f"endpoint {endpoint_id} is disabled")
        replayed = queries.replay(conn, endpoint_id, since)
        out = ReplayOut(
            endpoint_id=endpoint_id, since=since, replayed=replayed.count,
            next_since=replayed.next_since,
        )  # fmt: skip
        body = out.model_dump(mode="json")
        queries.remember(conn, partner, key, 202, body)
    return JSONResponse(body, status_code=202)


def _again(remembered: queries.Remembered) -> JSONResponse:
    if remembered.conflict:
        raise Problem(
            409, "duplicate_conflict", "this Idempotency-Key was used for another request"
        )
    return JSONResponse(remembered.body, status_code=remembered.status_code)


def _partner_seen(who: Principal) -> str | None:
    """The partner whose deliveries the caller sees (None: every one, for ops)."""
    if who.is_ops:
        return None
    if who.partner_id is None:
        raise Problem(403, "forbidden", "deliveries are a partner's (a partner_id claim)")
    return who.partner_id


def _bad_since(why: str) -> Problem:
    return Problem(
        422, "validation_error", f"since {why}",
        extra={"errors": [{"field": "query.since", "message": why}]},
    )  # fmt: skip
