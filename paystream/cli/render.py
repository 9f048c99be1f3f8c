"""Accounts and payments as rich tables for people: amounts in major units, times in UTC.

The leaves take the API's JSON (dicts) and return tables; ``emit`` prints. Nothing here talks
to the API.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from rich import box
from rich.table import Table

from paystream.cli.common import out
from paystream.money import AmountError, format_money

MISSING = "-"


def money(amount_minor: int | None, currency: str | None) -> str:
    """``1,900.00 EUR``; ``-`` when the API does not know the amount or its currency yet."""
    if amount_minor is None or currency is None:
        return MISSING
    try:
        return format_money(amount_minor, currency)
    except AmountError:  # a code the API should never hold; show it rather than fail
        return f"{amount_minor} minor units of {currency}"


def when(at_ms: int | None, *, exact: bool = True) -> str:
    """A Unix time in ms as UTC (``exact``: with milliseconds)."""
    if at_ms is None:
        return MISSING
    at = dt.datetime.fromtimestamp(at_ms // 1000, tz=dt.UTC)
    millis = f".{at_ms % 1000:03d}" if exact else ""
    return f"{at:%Y-%m-%d %H:%M:%S}{millis} UTC"


def text(value: Any) -> str:
    return MISSING if value is None else str(value)


def _fields(rows: list[tuple[str, str]]) -> Table:
    """One object, a field a row (its id first: a title would wrap a long id)."""
    table = Table(box=box.SIMPLE, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    return table


def account(body: dict[str, Any]) -> Table:
    """One account: status and its balances."""
    currency = body.get("currency")
    position = body.get("ledger_position")
    return _fields(
        [
            ("account", body["account_id"]),
            ("status", text(body.get("status") or "not applied yet")),
            ("currency", text(currency)),
            ("balance", money(body.get("balance_minor"), currency)),
            ("pending", money(body.get("pending_minor"), currency)),
            ("available", money(body.get("available_minor"), currency)),
            ("partner", text(body.get("partner_id"))),
            ("version", text(body.get("version"))),
            ("ledger position", MISSING if not position else
             f"partition {position['partition']}, offset {position['offset']}"),
        ],
    )  # fmt: skip


def _list(*columns: str, right: tuple[str, ...] = ()) -> Table:
    """A table whose cells fold rather than vanish or end in an ellipsis (ids, amounts)."""
    table = Table(box=box.SIMPLE_HEAD)
    for column in columns:
        justify: Literal["left", "right"] = "right" if column in right else "left"
        table.add_column(column, justify=justify, overflow="fold", min_width=len(column))
    return table


def accounts(items: list[dict[str, Any]]) -> Table:
    table = _list(
        "account", "currency", "status", "balance", "pending", "available",
        right=("balance", "pending", "available"),
    )  # fmt: skip
    for item in items:
        currency = item.get("currency")
        table.add_row(
            item["account_id"], text(currency), text(item.get("status")),
            money(item.get("balance_minor"), currency),
            money(item.get("pending_minor"), currency),
            money(item.get("available_minor"), currency),
        )  # fmt: skip
    return table


def payment(body: dict[str, Any]) -> Table:
    """One payment: its state, amount and times."""
    return _fields(
        [
            ("payment", body["payment_id"]),
            ("type", text(body.get("type"))),
            ("status", text(body.get("status"))),
            ("code", text(body.get("code"))),
            ("from", text(body.get("from_account"))),
            ("to", text(body.get("to_account"))),
            ("amount", money(body.get("amount_minor"), body.get("currency"))),
            ("reference", text(body.get("reference"))),
            ("created", when(body.get("created_at_ms"))),
            ("updated", when(body.get("updated_at_ms"))),
        ],
    )


def history(items: list[dict[str, Any]]) -> Table:
    table = _list("event", "code", "at")
    table.title, table.title_justify = "history", "left"
    for item in items:
        table.add_row(text(item.get("type")), text(item.get("code")), when(item["issued_at_ms"]))
    return table


def payments(items: list[dict[str, Any]]) -> Table:
    table = _list(
        "payment", "type", "status", "code", "from", "to", "amount", "created", right=("amount",)
    )
    for item in items:
        table.add_row(
            item["payment_id"], text(item.get("type")), text(item.get("status")),
            text(item.get("code")), text(item.get("from_account")), text(item.get("to_account")),
            money(item.get("amount_minor"), item.get("currency")),
            when(item.get("created_at_ms"), exact=False),
        )  # fmt: skip
    return table


def emit(raw_json: str, as_json: bool, *tables: Table) -> None:
    """The API's JSON exactly as it came (``--json``), else the tables."""
    if as_json:
        print(raw_json)
        return
    for table in tables:
        out.print(table)
