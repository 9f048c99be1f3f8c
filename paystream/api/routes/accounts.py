"""``/v1/accounts``: balances and journal lines (reads; commands come with the write slice)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from paystream.api import read_models
from paystream.api.auth import Principal
from paystream.api.deps import Db, caller
from paystream.api.problems import Problem, not_found
from paystream.api.read_models import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, BadCursor
from paystream.api.schemas import AccountOut, AccountPage, LineOut, LinePage

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
