"""``/v1/accounts``: balances and journal lines (reads; commands come with the write slice)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictBool

from paystream.api import read_models
from paystream.api.auth import Principal
from paystream.api.deps import Context, Ctx, Db, caller
from paystream.api.problems import Problem, not_found
from paystream.api.read_models import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, BadCursor
from paystream.api.routes.commands import (
    ClientAccountId,
    Currency,
    IdempotencyKey,
    Prefer,
    writer_partner,
)
from paystream.api.schemas import AccountOut, AccountPage, LineOut, LinePage
from paystream.api.submit import (
    checked,
    final_event,
    mint,
    prefer_wait_s,
    read_model_once,
    rejection,
    request_id,
    submit,
)
from paystream.ledger import CloseAccount, Command, FreezeAccount, OpenAccount, UnfreezeAccount

ACCOUNT_ID_LENGTH_MAX = 64
CURSOR_LENGTH_MAX = read_models.CURSOR_LENGTH_MAX

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
AccountId = Annotated[str, Path(min_length=1, max_length=ACCOUNT_ID_LENGTH_MAX)]
Cursor = Annotated[str | None, Query(max_length=CURSOR_LENGTH_MAX)]
Limit = Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)]
Reader = Annotated[Principal, Depends(caller("accounts:read"))]
LedgerReader = Annotated[Principal, Depends(caller("ledger:read"))]


def bad_cursor(error: BadCursor) -> Problem:
    return Problem(
        422, "validation_error", str(error), extra={"errors": [{"field": "query.cursor",
                                                                "message": str(error)}]}
    )  # fmt: skip


def visible_account(conn: read_models.Connection, who: Principal, account_id: str) -> AccountOut:
    """The account, if the caller may see it; another partner's is not found."""
    row = read_models.account(conn, account_id)
    if row is None or not who.sees(row["partner_id"]):
        raise not_found(f"account {account_id}")
    return AccountOut.of(row)


@router.get("/{account_id}", response_model=AccountOut)
def get_account(account_id: AccountId, who: Reader, conn: Db) -> AccountOut:
    """An account's balances: posted, pending and available, and the ledger position they
    reflect."""
    return visible_account(conn, who, account_id)


@router.get("", response_model=AccountPage)
def list_accounts(
    who: Reader, conn: Db, cursor: Cursor = None, limit: Limit = PAGE_SIZE_DEFAULT
) -> AccountPage:
    """The caller's accounts by id (ops: every partner's), a page at a time."""
    try:
        page = read_models.accounts(
            conn, partner_id=None if who.is_ops else who.partner_id, cursor=cursor, limit=limit
        )
    except BadCursor as error:
        raise bad_cursor(error) from error
    return AccountPage(items=[AccountOut.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.get("/{account_id}/ledger", response_model=LinePage)
def account_ledger(
    account_id: AccountId,
    who: LedgerReader,
    conn: Db,
    cursor: Cursor = None,
    limit: Limit = PAGE_SIZE_DEFAULT,
) -> LinePage:
    """The account's journal lines, oldest payment first, a page at a time."""
    visible_account(conn, who, account_id)
    try:
        page = read_models.account_lines(conn, account_id, cursor=cursor, limit=limit)
    except BadCursor as error:
        raise bad_cursor(error) from error
    return LinePage(items=[LineOut.of(r) for r in page.items], next_cursor=page.next_cursor)


# --- commands ---------------------------------------------------------------------------------

ACCOUNT_ID_DIGEST_HEX = 26
STATUS_AFTER: dict[str, str] = {
    "OpenAccount": "open",
    "FreezeAccount": "frozen",
    "UnfreezeAccount": "open",
    "CloseAccount": "closed",
}


class AccountIn(BaseModel):
    """A new account. Without ``account_id`` the API derives one from the partner and the
    Idempotency-Key, so a retry names the same account."""

    model_config = ConfigDict(extra="forbid")
    currency: Currency
    account_id: ClientAccountId | None = None
    allow_overdraft: StrictBool = False


AccountWriter = Annotated[Principal, Depends(caller("accounts:write"))]
ACCOUNT_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"model": AccountOut, "description": "Done within the wait (Prefer: wait=N)"},
    202: {"model": AccountOut, "description": "Accepted; not applied yet"},
}


def derived_account_id(partner_id: str, key: str) -> str:
    digest = hashlib.sha256(f"{partner_id}\n{key}".encode()).hexdigest()
    return f"acc_{digest[:ACCOUNT_ID_DIGEST_HEX]}"


@router.post("", status_code=202, response_model=AccountOut, responses=ACCOUNT_RESPONSES)
async def open_account(
    body: AccountIn, who: AccountWriter, ctx: Ctx, key: IdempotencyKey, prefer: Prefer = None
) -> JSONResponse:
    """Open an account in one currency for the caller's partner."""
    partner = writer_partner(who)
    account_id = body.account_id or derived_account_id(partner, request_id(key))
    command_id, at_ms = mint(account_id, ctx.partitions)
    command = OpenAccount(
        command_id=command_id, request_id=request_id(key), partner_id=partner,
        issued_at_ms=at_ms, account_id=account_id, currency=body.currency,
        allow_overdraft=body.allow_overdraft,
    )  # fmt: skip
    return await account_response(ctx, checked(command), prefer)


def _account_action(kind: type[FreezeAccount | UnfreezeAccount | CloseAccount], doc: str) -> None:
    async def act(
        account_id: AccountId, who: AccountWriter, ctx: Ctx, key: IdempotencyKey,
        prefer: Prefer = None,
    ) -> JSONResponse:  # fmt: skip
        partner = writer_partner(who)
        await asyncio.to_thread(_must_see, ctx, who, account_id)
        command_id, at_ms = mint(account_id, ctx.partitions)
        command = kind(
            command_id=command_id, request_id=request_id(key), partner_id=partner,
            issued_at_ms=at_ms, account_id=account_id,
        )  # fmt: skip
        return await account_response(ctx, checked(command), prefer, path_account=True)

    act.__doc__ = doc
    action = kind.__name__.removesuffix("Account").lower()
    router.post(
        f"/{{account_id}}/{action}", status_code=202, response_model=AccountOut,
        responses=ACCOUNT_RESPONSES, name=f"{action}_account",
    )(act)  # fmt: skip


_account_action(FreezeAccount, "Freeze an account: no money moves out of or into it.")
_account_action(UnfreezeAccount, "Unfreeze a frozen account.")
_account_action(CloseAccount, "Close an empty account with nothing in flight.")


def _must_see(ctx: Context, who: Principal, account_id: str) -> None:
    with ctx.pool.connection() as conn:
        visible_account(conn, who, account_id)


async def account_response(
    ctx: Context, command: Command, prefer: str | None, *, path_account: bool = False
) -> JSONResponse:
    sender, follower = ctx.kafka()
    wait_s = prefer_wait_s(prefer)
    try:
        answer = await submit(command, send=sender.send, follower=follower, wait_s=wait_s)
    except Problem as problem:
        if path_account and problem.code == "account_not_found":
            raise not_found(f"account {command.account_id}") from problem
        raise
    final = final_event(answer.events)
    if final is not None and final.event.type == "Rejected":
        raise rejection(final.event.code, answer.payment_id)
    location = {"Location": f"/v1/accounts/{quote(command.account_id, safe='')}"}
    wanted = STATUS_AFTER[type(command).__name__]
    if final is not None and wait_s:
        row = await _account_once(ctx, command.account_id, wanted)
        if row is not None:
            body = AccountOut.of(row).model_dump(mode="json")
            return JSONResponse(body, status_code=201, headers=location)
    row = await asyncio.to_thread(_account_row, ctx, command.account_id)
    shown = AccountOut.of(row) if row is not None else _unapplied(command)
    return JSONResponse(shown.model_dump(mode="json"), status_code=202, headers=location)


async def _account_once(ctx: Context, account_id: str, status: str) -> read_models.Row | None:
    """The account's row once the read model shows ``status`` (bounded)."""
    return await read_model_once(
        lambda: _account_row(ctx, account_id),
        lambda row: row is not None and row["status"] == status,
    )


def _account_row(ctx: Context, account_id: str) -> read_models.Row | None:
    with ctx.pool.connection() as conn:
        return read_models.account(conn, account_id)


def _unapplied(command: Command) -> AccountOut:
    return AccountOut(
        account_id=command.account_id, currency=getattr(command, "currency", None),
        status=None, partner_id=command.partner_id, posted_debits_minor=0,
        posted_credits_minor=0, pending_debits_minor=0, pending_credits_minor=0,
        balance_minor=0, pending_minor=0, available_minor=0, version=0, ledger_position=None,
    )  # fmt: skip
