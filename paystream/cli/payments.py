"""``paystream pay`` and ``paystream payments show|list``: payments through the REST API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer

from paystream.cli import render
from paystream.cli.accounts import (
    PAGE_SIZE_DEFAULT,
    CursorOption,
    LimitOption,
    currency_code,
    post_command,
)
from paystream.cli.client import (
    API_URL_DEFAULT,
    CLIENT_DEFAULT,
    WAIT_S_DEFAULT,
    ApiClient,
    ApiOption,
    ClientOption,
    JsonOption,
    KeyOption,
    WaitOption,
    path_id,
)
from paystream.cli.common import err
from paystream.money import AmountError, parse_major

PaymentStatus = Literal["pending", "completed", "reversed", "rejected"]

payments_app = typer.Typer(help="show and list payments (REST API)", no_args_is_help=True)


ReferenceOption = Annotated[
    str | None, typer.Option("--reference", metavar="TEXT", help="your words for it")
]
AmountArgument = Annotated[
    str, typer.Argument(metavar="AMOUNT", help="in major units as you write it: 12.50")
]
CurrencyArgument = Annotated[
    str, typer.Argument(parser=currency_code, metavar="CURRENCY", help="e.g. EUR")
]


def minor_units(amount: str, currency: str) -> int:
    """The amount a person typed, refused before any request (a typo must not move money)."""
    try:
        return parse_major(amount, currency)
    except AmountError as error:
        raise typer.BadParameter(str(error), param_hint="AMOUNT") from error


def submit_payment(
    path: str, body: dict[str, Any], *, reference: str | None, key: str | None, wait_s: int,
    api: str, client: str, as_json: bool,
) -> int:  # fmt: skip
    """POST a payment command and show the payment it made."""
    if reference is not None:
        body["reference"] = reference
    session = ApiClient.connect(api, client)
    raw, shown = post_command(session, path, body, key=key, wait_s=wait_s)
    render.emit(raw, as_json, render.payment(shown), render.history(shown.get("history") or []))
    return 0


def pay(
    from_account: Annotated[str, typer.Argument(metavar="FROM", help="the account paying")],
    to_account: Annotated[str, typer.Argument(metavar="TO", help="the account paid")],
    amount: AmountArgument,
    currency: CurrencyArgument,
    reference: ReferenceOption = None,
    key: KeyOption = None,
    wait: WaitOption = WAIT_S_DEFAULT,
    api: ApiOption = API_URL_DEFAULT,
    client: ClientOption = CLIENT_DEFAULT,
    as_json: JsonOption = False,
) -> int:
    """Move money from one of the client's accounts to another."""
    body: dict[str, Any] = {
        "from_account": from_account,
        "to_account": to_account,
        "amount_minor": minor_units(amount, currency),
        "currency": currency,
    }
    return submit_payment(
        "/v1/payments", body, reference=reference, key=key, wait_s=wait, api=api, client=client,
        as_json=as_json,
    )  # fmt: skip


def _register_money_command(name: str, path: str, doc: str) -> None:
    def move(
        account_id: Annotated[str, typer.Argument(metavar="ACCOUNT")],
        amount: AmountArgument,
        currency: CurrencyArgument,
        reference: ReferenceOption = None,
        key: KeyOption = None,
        wait: WaitOption = WAIT_S_DEFAULT,
        api: ApiOption = API_URL_DEFAULT,
        client: ClientOption = CLIENT_DEFAULT,
        as_json: JsonOption = False,
    ) -> int:
        body: dict[str, Any] = {
            "account_id": account_id,
            "amount_minor": minor_units(amount, currency),
            "currency": currency,
        }
        return submit_payment(
            path, body, reference=reference, key=key, wait_s=wait, api=api, client=client,
            as_json=as_json,
        )  # fmt: skip

    move.__doc__ = doc
    money_commands[name] = move


money_commands: dict[str, Callable[..., int]] = {}
"""``deposit`` and ``withdraw``, registered on the app beside ``pay``."""
_register_money_command(
    "deposit", "/v1/deposits", "Money from outside (settlement) into one of the client's accounts."
)
_register_money_command(
    "withdraw", "/v1/withdrawals", "Money out of one of the client's accounts (to settlement)."
)


@payments_app.command("show")
def show_payment(
    payment_id: Annotated[str, typer.Argument(metavar="ID")],
    api: ApiOption = API_URL_DEFAULT,
    client: ClientOption = CLIENT_DEFAULT,
    as_json: JsonOption = False,
) -> int:
    """A payment's status, amount, the code when it failed, and its history."""
    response = ApiClient.connect(api, client).get(f"/v1/payments/{path_id(payment_id)}")
    shown = response.json()
    render.emit(
        response.text, as_json, render.payment(shown), render.history(shown.get("history") or [])
    )
    return 0


@payments_app.command("list")
def list_payments(
    account: Annotated[
        str | None, typer.Option("--account", metavar="ID", help="either side of it")
    ] = None,
    status: Annotated[PaymentStatus | None, typer.Option("--status")] = None,
    limit: LimitOption = PAGE_SIZE_DEFAULT,
    cursor: CursorOption = None,
    api: ApiOption = API_URL_DEFAULT,
    client: ClientOption = CLIENT_DEFAULT,
    as_json: JsonOption = False,
) -> int:
    """Payments, oldest first, by account and status; one page."""
    params: dict[str, str | int] = {"limit": limit}
    for name, value in (("account", account), ("status", status), ("cursor", cursor)):
        if value is not None:
            params[name] = value
    response = ApiClient.connect(api, client).get("/v1/payments", params)
    page = response.json()
    render.emit(response.text, as_json, render.payments(page["items"]))
    if not as_json and page.get("next_cursor"):
        err.print(f"more: paystream payments list ... --cursor {page['next_cursor']}")
    return 0
