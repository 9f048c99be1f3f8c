"""``paystream accounts open|show|list|freeze|unfreeze|close``: accounts through the REST API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from paystream.cli import render
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
    new_key,
    path_id,
)
from paystream.cli.common import err
from paystream.ledger.currencies import is_iso4217

PAGE_SIZE_MAX = 200
"""The API's largest page."""
PAGE_SIZE_DEFAULT = 50

accounts_app = typer.Typer(
    help="open, show, list, freeze, unfreeze and close accounts (REST API)", no_args_is_help=True
)


def currency_code(value: str) -> str:
    """An active ISO-4217 code (``eur`` is taken as ``EUR``)."""
    code = value.strip().upper()
    if not is_iso4217(code):
        raise typer.BadParameter(f"{value!r} is not an active ISO-4217 currency code")
    return code


CurrencyOption = Annotated[
    str, typer.Option("--currency", parser=currency_code, metavar="CODE", help="e.g. EUR")
]
LimitOption = Annotated[int, typer.Option("--limit", min=1, max=PAGE_SIZE_MAX, metavar="N")]
CursorOption = Annotated[
    str | None, typer.Option("--cursor", help="the next page (printed under a full page)")
]


def post_command(
    api: ApiClient, path: str, body: dict[str, Any] | None, *, key: str | None, wait_s: int
) -> tuple[str, dict[str, Any]]:
    """POST a command; its raw JSON and its body. Says on stderr when it has not ended yet.

    A key made here is printed to stderr, so a person can retry the very same request.
    """
    if key is None:
        key = new_key()
        err.print(f"Idempotency-Key: {key} (to retry this exact request: --key {key})")
    response = api.post(path, body, key=key, wait_s=wait_s)
    if response.status_code == 202:
        within = f"within {wait_s}s" if wait_s else "yet (--wait SECONDS waits for the end)"
        err.print(f"accepted; not ended {within}: show it again in a moment")
    return response.text, response.json()


@accounts_app.command("open")
def open_account(
    currency: CurrencyOption,
    account_id: Annotated[
        str | None, typer.Option("--id", help="the account's id (default: derived from the key)")
    ] = None,
    key: KeyOption = None,
    wait: WaitOption = WAIT_S_DEFAULT,
    api: ApiOption = API_URL_DEFAULT,
    client: ClientOption = CLIENT_DEFAULT,
    as_json: JsonOption = False,
) -> int:
    """Open an account in one currency for the client's partner."""
    body: dict[str, Any] = {"currency": currency}
    if account_id is not None:
        body["account_id"] = account_id
    session = ApiClient.connect(api, client)
    raw, shown = post_command(session, "/v1/accounts", body, key=key, wait_s=wait)
    render.emit(raw, as_json, render.account(shown))
    return 0


def _register_action(action: str, doc: str) -> None:
    def act(
        account_id: Annotated[str, typer.Argument(metavar="ID")],
        key: KeyOption = None,
        wait: WaitOption = WAIT_S_DEFAULT,
        api: ApiOption = API_URL_DEFAULT,
        client: ClientOption = CLIENT_DEFAULT,
        as_json: JsonOption = False,
    ) -> int:
        session = ApiClient.connect(api, client)
        path = f"/v1/accounts/{path_id(account_id)}/{action}"
        raw, shown = post_command(session, path, None, key=key, wait_s=wait)
        render.emit(raw, as_json, render.account(shown))
        return 0

    act.__doc__ = doc
    accounts_app.command(action)(act)


_register_action("freeze", "Freeze an account: no money moves out of or into it.")
_register_action("unfreeze", "Unfreeze a frozen account.")
_register_action("close", "Close an empty account with nothing in flight.")


@accounts_app.command("show")
def show_account(
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    api: ApiOption = API_URL_DEFAULT,
    client: ClientOption = CLIENT_DEFAULT,
    as_json: JsonOption = False,
) -> int:
    """An account's status and balances: posted, pending, available."""
    response = ApiClient.connect(api, client).get(f"/v1/accounts/{path_id(account_id)}")
    render.emit(response.text, as_json, render.account(response.json()))
    return 0


@accounts_app.command("list")
def list_accounts(
    limit: LimitOption = PAGE_SIZE_DEFAULT,
    cursor: CursorOption = None,
    api: ApiOption = API_URL_DEFAULT,
    client: ClientOption = CLIENT_DEFAULT,
    as_json: JsonOption = False,
) -> int:
    """The client's accounts by id (ops: every partner's), one page."""
    params: dict[str, str | int] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
    response = ApiClient.connect(api, client).get("/v1/accounts", params)
    page = response.json()
    render.emit(response.text, as_json, render.accounts(page["items"]))
    if not as_json and page.get("next_cursor"):
        err.print(f"more: paystream accounts list --cursor {page['next_cursor']}")
    return 0
