"""``/v1/reviews``: the compliance queue of held payouts, and decisions on them (``ops:review``).

A decision is a ``DecidePayout`` command on Kafka like any other (so replay and the audit
chain see it), from the operators' own partner (``@ops``), keyed by the payout's source
account, with the officer taken from the token (``preferred_username``, else its subject),
never from the body. The API answers once the worker has applied it or refused it
(``payout_not_held``, ``payout_not_overridable``, ``insufficient_funds`` for an override
that would reserve again): a decision is never left unknown to the officer who made it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StringConstraints

from paystream.api import read_models
from paystream.api.auth import Principal
from paystream.api.commands import Seen
from paystream.api.deps import Context, Ctx, Db, caller
from paystream.api.problems import Problem
from paystream.api.read_models import PAGE_SIZE_DEFAULT, BadCursor
from paystream.api.routes.accounts import Cursor, Limit, bad_cursor
from paystream.api.routes.commands import IdempotencyKey
from paystream.api.routes.payouts import PayoutId
from paystream.api.schemas import DecisionOut, DecisionPage, PayoutOut, ReviewPage
from paystream.api.submit import checked, mint, read_model_once, request_id, submit
from paystream.ledger import DecidePayout
from paystream.ledger.models import BENEFICIARY_NAME_LENGTH_MAX, OPS_PARTNER_ID, REASON_LENGTH_MAX

router = APIRouter(prefix="/v1/reviews", tags=["reviews"])
Reviewer = Annotated[Principal, Depends(caller("ops:review"))]


class DecisionIn(BaseModel):
    """``approve`` or ``reject`` a held payout; ``override`` turns an earlier verdict around
    (a queued payout is stopped, a rejected one approved again). Reject and override need
    a reason."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "reject", "override"]
    reason: (
        Annotated[
            str,
            StringConstraints(
                min_length=1, max_length=REASON_LENGTH_MAX, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$"
            ),
        ]
        | None
    ) = None


@router.get("", response_model=ReviewPage | DecisionPage)
def list_reviews(
    who: Reviewer,
    conn: Db,
    status: Annotated[
        Literal["open", "decided"],
        Query(description="open: held payouts waiting; decided: decisions made, in order"),
    ] = "open",
    cursor: Cursor = None,
    limit: Limit = PAGE_SIZE_DEFAULT,
) -> ReviewPage | DecisionPage:
    """The review queue (every partner's held payouts), or the decisions made."""
    try:
        if status == "open":
            page = read_models.held_payouts(conn, cursor=cursor, limit=limit)
            return ReviewPage(
                items=[PayoutOut.of(row) for row in page.items], next_cursor=page.next_cursor
            )
        page = read_models.reviews(conn, cursor=cursor, limit=limit)
    except BadCursor as error:
        raise bad_cursor(error) from error
    return DecisionPage(
        items=[DecisionOut.of(row) for row in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "/{payout_id}/decision",
    response_model=PayoutOut,
    responses={
        202: {"model": PayoutOut, "description": "Applied; the read models do not show it yet"}
    },
)
async def decide(
    payout_id: PayoutId, body: DecisionIn, who: Reviewer, ctx: Ctx, key: IdempotencyKey
) -> JSONResponse:
    """Decide on a payout; answers with the payout as the decision left it."""
    key = request_id(key)
    if body.decision != "approve" and body.reason is None:
        raise _needs_reason(body.decision)
    payout = await read_model_once(lambda: _payout(ctx, payout_id), lambda row: row is not None)
    if payout is None:
        raise _not_found(payout_id)
    command_id, at_ms = mint(payout["account_id"], ctx.partitions)
    command = DecidePayout(
        command_id=command_id, request_id=key, partner_id=OPS_PARTNER_ID, issued_at_ms=at_ms,
        account_id=payout["account_id"], payout_id=payout_id, decision=body.decision,
        officer=officer(who), reason=body.reason,
    )  # fmt: skip
    sender, follower = ctx.kafka()
    await submit(checked(command), send=sender.send, follower=follower, wait_s=None)
    decided = await follower.wait(payout_id, lambda seen: _decided(seen, command), 5.0)
    shown = await read_model_once(
        lambda: _payout(ctx, payout_id),
        lambda row: row is not None and row["updated_at_ms"] >= at_ms,
    )
    history = await asyncio.to_thread(_history, ctx, payout_id)
    body_out = PayoutOut.of(shown or payout, history)
    status = 200 if _decided(decided, command) else 202
    return JSONResponse(body_out.model_dump(mode="json"), status_code=status)


def officer(who: Principal) -> str:
    """The name a decision is recorded under: the token's person, bounded as the core bounds it."""
    return (who.username or who.subject)[:BENEFICIARY_NAME_LENGTH_MAX]


def _decided(seen: list[Seen], command: DecidePayout) -> bool:
    """Whether the payout's events include the state change ``command`` made."""
    return any(
        s.event.actor == command.officer and s.event.issued_at_ms == command.issued_at_ms
        for s in seen
    )


def _payout(ctx: Context, payout_id: str) -> read_models.Row | None:
    with ctx.pool.connection() as conn:
        return read_models.payout(conn, payout_id)


def _history(ctx: Context, payout_id: str) -> list[read_models.Row]:
    with ctx.pool.connection() as conn:
        return read_models.payout_history(conn, payout_id)


def _needs_reason(decision: str) -> Problem:
    return Problem(
        422, "validation_error", f"a decision to {decision} needs a reason",
        extra={"errors": [{"field": "body.reason", "message": "required"}]},
    )  # fmt: skip


def _not_found(payout_id: str) -> Problem:
    return Problem(404, "payout_not_found", f"payout {payout_id} not found")
