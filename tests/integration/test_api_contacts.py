"""``/v1/accounts/{id}/contact`` over real HTTP: tokens from the real Keycloak, the address in
real Postgres. Only the account's partner sets it; its partner and ops read it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from paystream.api.app import create_app
from paystream.audit.migrate import migrate
from paystream.services.keycloak import KeycloakServer
from paystream.settings import Settings
from tests.support.api import HTTP_TIMEOUT_S, bearer, problem, serving
from tests.support.audit import Recorded
from tests.support.keycloak import client_token
from tests.support.ledger import open_account

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def store_dsn(postgres_server_dsn: str) -> str:
    name = f"contacts_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(postgres_server_dsn, dbname=name)
    migrate(dsn)
    recorded = Recorded()
    recorded.apply([open_account(1, "a-1", partner_id="demo-1"),
                    open_account(2, "b-1", partner_id="demo-2")], 0)  # fmt: skip
    recorded.write(dsn)
    return dsn


@pytest.fixture(scope="module")
def api(store_dsn: str, keycloak: KeycloakServer, settings: Settings) -> Iterator[str]:
    with serving(create_app(settings, issuer=keycloak.issuer, dsn=store_dsn)) as url:
        yield url


@pytest.fixture(scope="module")
def tokens(keycloak: KeycloakServer) -> dict[str, str]:
    clients = ("partner-demo-1", "partner-demo-2", "ops-console")
    return {c: client_token(keycloak, c) for c in clients}


def put(api: str, account_id: str, token: str | None, body: Any) -> httpx.Response:
    return httpx.put(f"{api}/v1/accounts/{account_id}/contact", json=body,
                     headers=bearer(token), timeout=HTTP_TIMEOUT_S)  # fmt: skip


def get(api: str, account_id: str, token: str | None) -> httpx.Response:
    return httpx.get(f"{api}/v1/accounts/{account_id}/contact", headers=bearer(token),
                     timeout=HTTP_TIMEOUT_S)  # fmt: skip


def test_the_accounts_partner_sets_and_replaces_the_address_its_partner_and_ops_read_it(
    api: str, tokens: dict[str, str], store_dsn: str
) -> None:
    owner = tokens["partner-demo-1"]
    problem(get(api, "a-1", owner), 404, "not_found")  # none set yet
    first = put(api, "a-1", owner, {"email": "holder@example.com"})
    assert first.status_code == 200, first.text
    assert first.json()["account_id"] == "a-1" and first.json()["email"] == "holder@example.com"
    second = put(api, "a-1", owner, {"email": "new.holder+pay@mail.example.org"})
    assert second.status_code == 200, second.text
    for reader in (owner, tokens["ops-console"]):
        shown = get(api, "a-1", reader)
        assert shown.status_code == 200 and shown.json() == second.json()
    with psycopg.connect(store_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT account_id, partner_id, email FROM account_contacts")
        assert rows.fetchall() == [("a-1", "demo-1", "new.holder+pay@mail.example.org")]


def test_nobody_else_sets_or_reads_it(api: str, tokens: dict[str, str]) -> None:
    assert put(api, "b-1", tokens["partner-demo-2"], {"email": "b@example.com"}).status_code == 200
    other = tokens["partner-demo-1"]
    problem(put(api, "b-1", other, {"email": "thief@example.com"}), 404, "not_found")
    problem(get(api, "b-1", other), 404, "not_found")
    problem(put(api, "b-1", tokens["ops-console"], {"email": "ops@example.com"}), 403, "forbidden")
    problem(put(api, "b-1", None, {"email": "anon@example.com"}), 401, "unauthorized")
    problem(put(api, "no-such-account", other, {"email": "a@example.com"}), 404, "not_found")
    assert get(api, "b-1", tokens["partner-demo-2"]).json()["email"] == "b@example.com"


@pytest.mark.parametrize(
    "body",
    [
        {"email": "no-at-sign.example.com"},
        {"email": "two words@example.com"},
        {"email": "holder@localhost"},
        {"email": "<holder@example.com>"},
        {"email": "holder@example.com\r\nBcc: everyone@example.com"},
        {"email": "a@example.com, b@example.com"},
        {"email": "x" * 250 + "@example.com"},
        {"email": "holder@example.com", "name": "extra field"},
        {},
    ],
)
def test_an_address_that_is_not_one_is_refused(
    api: str, tokens: dict[str, str], body: dict[str, str]
) -> None:
    problem(put(api, "a-1", tokens["partner-demo-1"], body), 422, "validation_error")
