"""``/v1/accounts/{account_id}/contact``: the address the account's holder is emailed at.

Set by the account's partner (``accounts:write``); read by its partner or ops
(``accounts:read``, like the account itself). Another partner's account, or one the read
models do not show yet, is not found. The notifier emails the address set when it takes an
event in (``paystream.notify``).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from paystream.api import read_models
from paystream.api.auth import Principal
from paystream.api.deps import Db, caller, context, writing
from paystream.api.problems import not_found
from paystream.api.routes.accounts import AccountId, visible_account
from paystream.api.routes.commands import writer_partner
from paystream.notify import contacts
from paystream.notify.contacts import EMAIL_LENGTH_MAX, EMAIL_PATTERN

__all__ = ["ContactIn", "ContactOut", "router"]

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
Reader = Annotated[Principal, Depends(caller("accounts:read"))]
Writer = Annotated[Principal, Depends(caller("accounts:write"))]


class ContactIn(BaseModel):
    """The holder's address: ASCII ``local@domain.tld``, at most 254 characters."""

    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=6, max_length=EMAIL_LENGTH_MAX, pattern=EMAIL_PATTERN)


class ContactOut(BaseModel):
    account_id: str
    email: str
    updated_at: datetime.datetime

    @classmethod
    def of(cls, found: contacts.Contact) -> ContactOut:
        return cls(account_id=found.account_id, email=found.email, updated_at=found.updated_at)


def write_connection(request: Request) -> Iterator[read_models.Connection]:
    """A pooled connection in a read-write transaction, for one request."""
    with writing(context(request), "account store") as conn:
        yield conn


WriteDb = Annotated[read_models.Connection, Depends(write_connection)]


@router.put("/{account_id}/contact", response_model=ContactOut)
def put_contact(account_id: AccountId, body: ContactIn, who: Writer, conn: WriteDb) -> ContactOut:
    """Set or replace the email address of the account's holder (the account's partner only)."""
    partner = writer_partner(who)
    row = read_models.account(conn, account_id)
    if row is None or row["partner_id"] != partner:
        raise not_found(f"account {account_id}")
    stored = contacts.put_contact(conn, account_id=account_id, partner_id=partner, email=body.email)
    return ContactOut.of(stored)


@router.get("/{account_id}/contact", response_model=ContactOut)
def get_contact(account_id: AccountId, who: Reader, conn: Db) -> ContactOut:
    """The email address of the account's holder."""
    visible_account(conn, who, account_id)
    found = contacts.contact(conn, account_id)
    if found is None:
        raise not_found(f"a contact for account {account_id}")
    return ContactOut.of(found)
