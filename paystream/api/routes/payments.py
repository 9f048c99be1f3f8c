"""``/v1/payments`` and ``/v1/ledger/entries``: a payment's state, history and journal."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from paystream.api import read_models
from paystream.api.auth import Principal
from paystream.api.deps import Db, caller
from paystream.api.problems import not_found
from paystream.api.read_models import PAGE_SIZE_DEFAULT, BadCursor, PaymentFilter
from paystream.api.routes.accounts import (
    ACCOUNT_ID_LENGTH_MAX,
    Cursor,
    LedgerReader,
    Limit,
    bad_cursor,
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
