"""``/v1/payments`` and ``/v1/ledger/entries``: a payment's state, history and journal."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from paystream.api import read_models
from paystream.api.auth import Principal
from paystream.api.deps import Context, Ctx, Db, caller
from paystream.api.problems import not_found
from paystream.api.read_models import PAGE_SIZE_DEFAULT, BadCursor, PaymentFilter
from paystream.api.routes.accounts import (
    ACCOUNT_ID_LENGTH_MAX,
    Cursor,
    LedgerReader,
    Limit,
    bad_cursor,
)
from paystream.api.routes.commands import (
    ClientAccountId,
    Currency,
    IdempotencyKey,
    Prefer,
    Reference,
    writer_partner,
)
from paystream.api.schemas import (
    EVENT_OF_STATUS,
    PAYMENT_COMMANDS,
    EntryList,
    EntryOut,
    PaymentOut,
    PaymentPage,
    PaymentStatus,
)
from paystream.api.submit import (
    accepted_row,
    checked,
    final_event,
    mint,
    prefer_wait_s,
    read_your_writes,
    rejection,
    request_id,
    row_from_events,
    submit,
)
from paystream.ledger import Command, Deposit, Transfer, Withdrawal
from paystream.ledger.models import AMOUNT_MAX_MINOR

PAYMENT_ID_LENGTH_MAX = 64
TIME_MS_MAX = 2**48

router = APIRouter(tags=["payments"])
PaymentId = Annotated[str, Path(min_length=1, max_length=PAYMENT_ID_LENGTH_MAX)]
Reader = Annotated[Principal, Depends(caller("payments:read"))]
TimeMs = Annotated[int | None, Query(ge=0, le=TIME_MS_MAX)]


def visible_payment(
    conn: read_models.Connection, who: Principal, payment_id: str
) -> read_models.Row:
    """The payment, if the caller may see it; another partner's is not found."""
    row = read_models.payment(conn, payment_id)
    if row is None or row["command_type"] not in PAYMENT_COMMANDS:
        raise not_found(f"payment {payment_id}")
    if not who.sees(row["partner_id"]):
        raise not_found(f"payment {payment_id}")
    return row


@router.get("/v1/payments/{payment_id}", response_model=PaymentOut)
def get_payment(payment_id: PaymentId, who: Reader, conn: Db) -> PaymentOut:
    """A payment's status, its code when it failed, and its history."""
    row = visible_payment(conn, who, payment_id)
    return PaymentOut.of(row, read_models.payment_history(conn, payment_id))


@router.get("/v1/payments", response_model=PaymentPage)
def list_payments(
    who: Reader,
    conn: Db,
    account: Annotated[str | None, Query(min_length=1, max_length=ACCOUNT_ID_LENGTH_MAX)] = None,
    status: PaymentStatus | None = None,
    created_after: TimeMs = None,
    created_before: TimeMs = None,
    cursor: Cursor = None,
    limit: Limit = PAGE_SIZE_DEFAULT,
) -> PaymentPage:
    """Payments, oldest first: by account (either side), status and creation time (Unix ms)."""
    where = PaymentFilter(
        partner_id=None if who.is_ops else who.partner_id,
        command_types=tuple(PAYMENT_COMMANDS),
        account_id=account,
        status=None if status is None else EVENT_OF_STATUS[status],
        created_after_ms=created_after,
        created_before_ms=created_before,
    )
    try:
        page = read_models.payments(conn, where, cursor=cursor, limit=limit)
    except BadCursor as error:
        raise bad_cursor(error) from error
    return PaymentPage(
        items=[PaymentOut.of(r) for r in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/v1/ledger/entries", response_model=EntryList, tags=["ledger"])
def ledger_entries(
    who: LedgerReader,
    conn: Db,
    payment_id: Annotated[str, Query(min_length=1, max_length=PAYMENT_ID_LENGTH_MAX)],
) -> EntryList:
    """The journal entries a payment made, with their lines (per ledger partition, in order)."""
    visible_payment(conn, who, payment_id)
    return EntryList(
        items=[EntryOut.of(r) for r in read_models.entries_of_payment(conn, payment_id)]
    )


# --- commands ---------------------------------------------------------------------------------


class TransferIn(BaseModel):
    """A payment between two of the partner's accounts."""

    model_config = ConfigDict(extra="forbid")
    from_account: ClientAccountId
    to_account: ClientAccountId
    amount_minor: Annotated[StrictInt, Field(gt=0, le=AMOUNT_MAX_MINOR)]
    currency: Currency
    reference: Reference | None = None


class MoneyIn(BaseModel):
    """Money into (deposit) or out of (withdrawal) one of the partner's accounts."""

    model_config = ConfigDict(extra="forbid")
    account_id: ClientAccountId
    amount_minor: Annotated[StrictInt, Field(gt=0, le=AMOUNT_MAX_MINOR)]
    currency: Currency
    reference: Reference | None = None


Writer = Annotated[Principal, Depends(caller("payments:write"))]
COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"model": PaymentOut, "description": "Ended within the wait (Prefer: wait=N)"},
    202: {"model": PaymentOut, "description": "Accepted; still in flight"},
}


@router.post(
    "/v1/payments", status_code=202, response_model=PaymentOut, responses=COMMAND_RESPONSES
)
async def create_payment(
    body: TransferIn, who: Writer, ctx: Ctx, key: IdempotencyKey, prefer: Prefer = None
) -> JSONResponse:
    """Move money between two accounts of the caller's partner (a saga across partitions)."""
    command_id, at_ms = mint(body.from_account, ctx.partitions)
    command = Transfer(
        command_id=command_id, request_id=request_id(key), partner_id=writer_partner(who),
        issued_at_ms=at_ms, account_id=body.from_account,
        destination_account_id=body.to_account, amount_minor=body.amount_minor,
        currency=body.currency, reference=body.reference,
    )  # fmt: skip
    return await payment_response(ctx, checked(command), prefer)


@router.post(
    "/v1/deposits", status_code=202, response_model=PaymentOut, responses=COMMAND_RESPONSES
)
async def create_deposit(
    body: MoneyIn, who: Writer, ctx: Ctx, key: IdempotencyKey, prefer: Prefer = None
) -> JSONResponse:
    """Money from outside (the settlement account) into one of the partner's accounts."""
    return await payment_response(ctx, money_command(Deposit, body, who, ctx, key), prefer)


@router.post(
    "/v1/withdrawals", status_code=202, response_model=PaymentOut, responses=COMMAND_RESPONSES
)
async def create_withdrawal(
    body: MoneyIn, who: Writer, ctx: Ctx, key: IdempotencyKey, prefer: Prefer = None
) -> JSONResponse:
    """Money out of one of the partner's accounts (to the settlement account)."""
    return await payment_response(ctx, money_command(Withdrawal, body, who, ctx, key), prefer)


def money_command(
    kind: type[Deposit] | type[Withdrawal], body: MoneyIn, who: Principal, ctx: Context, key: str
) -> Command:
    command_id, at_ms = mint(body.account_id, ctx.partitions)
    return checked(
        kind(
            command_id=command_id, request_id=request_id(key), partner_id=writer_partner(who),
            issued_at_ms=at_ms, account_id=body.account_id, amount_minor=body.amount_minor,
            currency=body.currency, reference=body.reference,
        )
    )  # fmt: skip


async def payment_response(ctx: Context, command: Command, prefer: str | None) -> JSONResponse:
    """Submit, then answer 201 with the final state (read your writes) or 202 as known."""
    sender, follower = ctx.kafka()
    wait_s = prefer_wait_s(prefer)
    answer = await submit(command, send=sender.send, follower=follower, wait_s=wait_s)
    final = final_event(answer.events)
    if final is not None and final.event.type == "Rejected":
        raise rejection(final.event.code, answer.payment_id)
    location = {"Location": f"/v1/payments/{quote(answer.payment_id, safe='')}"}
    if final is not None and wait_s:
        row = await read_your_writes(
            ctx.pool.connection, answer.payment_id, type(command).__name__, final.event.type
        )
        shown = row or row_from_events(answer.events)
        if shown is not None:
            history = await asyncio.to_thread(_history, ctx, answer.payment_id)
            body = PaymentOut.of(shown, history)
            return JSONResponse(body.model_dump(mode="json"), status_code=201, headers=location)
    shown = row_from_events(answer.events) or accepted_row(command, answer.payment_id)
    return JSONResponse(
        PaymentOut.of(shown).model_dump(mode="json"), status_code=202, headers=location
    )


def _history(ctx: Context, payment_id: str) -> list[read_models.Row]:
    with ctx.pool.connection() as conn:
        return read_models.payment_history(conn, payment_id)
