"""Account holders' email addresses (``account_contacts``, migration 0006), set by the
account's partner through the API and read by the notifier when it takes events in.

An address is checked with a bounded pattern rather than a validating library: ASCII
``local@domain`` with a dotted domain and RFC 5321's lengths (64 for the local part, 254 in
all), no spaces, quotes, commas, angle brackets or control characters -- nothing that could
split a header or name a second recipient. Whether the mailbox exists is the SMTP
server's answer, not the API's.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.rows import tuple_row

__all__ = ["EMAIL_LENGTH_MAX", "EMAIL_PATTERN", "Contact", "contact", "is_email", "put_contact"]

EMAIL_LENGTH_MAX: Final = 254
EMAIL_PATTERN: Final = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_EMAIL: Final = re.compile(EMAIL_PATTERN)
AnyConnection = psycopg.Connection[Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    account_id: str
    partner_id: str
    email: str
    updated_at: datetime.datetime


def is_email(text: str) -> bool:
    return len(text) <= EMAIL_LENGTH_MAX and _EMAIL.fullmatch(text) is not None


def contact(conn: AnyConnection, account_id: str) -> Contact | None:
    """The address the holder of ``account_id`` is emailed at, if one is set."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT account_id, partner_id, email, updated_at FROM account_contacts"
            " WHERE account_id = %s",
            (account_id,),
        ).fetchone()
    return None if row is None else _contact(row)


def put_contact(conn: AnyConnection, *, account_id: str, partner_id: str, email: str) -> Contact:
    """Set (or replace) the holder's address; the caller has checked the partner owns it."""
    if not is_email(email):
        raise ValueError(f"not an email address: {email!r}")
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "INSERT INTO account_contacts (account_id, partner_id, email) VALUES (%s, %s, %s)"
            " ON CONFLICT (account_id) DO UPDATE SET partner_id = excluded.partner_id,"
            " email = excluded.email, updated_at = now()"
            " RETURNING account_id, partner_id, email, updated_at",
            (account_id, partner_id, email),
        ).fetchone()
    if row is None:
        raise psycopg.DataError("the upsert returned no row")
    return _contact(row)


def _contact(row: tuple[Any, ...]) -> Contact:
    account_id, partner_id, email, updated_at = row
    return Contact(account_id=account_id, partner_id=partner_id, email=email, updated_at=updated_at)
