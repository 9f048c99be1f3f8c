"""Commands through the REST API on the real platform: workers, the Postgres sink, Kafka,
Keycloak tokens, real HTTP. One platform for the module (its own topics and database)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from confluent_kafka import Producer
from hypothesis import HealthCheck, settings
from schemathesis import checks

from paystream import cli
from paystream.api import openapi
from paystream.api.app import create_app
from paystream.services.keycloak import KeycloakServer
from paystream.services.process import free_port, pid_alive, wait_until
from paystream.settings import Settings
from paystream.topology.partitioner import partition_for
from tests.e2e.harness import platform
from tests.support.api import HTTP_TIMEOUT_S, bearer, is_ready, problem, serving
from tests.support.keycloak import client_token

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT = {"Prefer": "wait=20"}


@pytest.fixture(scope="module")
def api_platform(
    settings: Settings, postgres_server_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, str]]:
    """Two workers and a sink on topics and a database of this module's own."""
    name = f"api_cmd_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(postgres_server_dsn, dbname=name)
    base = settings.model_copy(update={"postgres_dsn": dsn})
    tmp_path: Path = tmp_path_factory.mktemp("api-commands")
    with platform(base, tmp_path, workers=2, sinks=1) as running:
        yield running.settings, dsn


@pytest.fixture(scope="module")
def api(api_platform: tuple[Settings, str], keycloak: KeycloakServer) -> Iterator[str]:
    settings, dsn = api_platform
    with serving(create_app(settings, issuer=keycloak.issuer, dsn=dsn)) as url:
        yield url


@pytest.fixture(scope="module")
def tokens(keycloak: KeycloakServer) -> dict[str, str]:
    clients = ("partner-demo-1", "partner-demo-2", "ops-console")
    return {client: client_token(keycloak, client) for client in clients}


def post(
    api: str, path: str, token: str | None, body: Any, *, key: str | None, **headers: str
) -> httpx.Response:
    sent = bearer(token) | headers | ({} if key is None else {"Idempotency-Key": key})
    return httpx.post(f"{api}{path}", json=body, headers=sent, timeout=HTTP_TIMEOUT_S)


def get(api: str, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{api}{path}", headers=bearer(token), timeout=HTTP_TIMEOUT_S)


def key() -> str:
    return f"k-{uuid.uuid4().hex}"


def open_funded(api: str, token: str, amount_minor: int) -> str:
    """A new EUR account of the token's partner with ``amount_minor`` deposited; its id."""
    opened = post(api, "/v1/accounts", token, {"currency": "EUR"}, key=key(), **WAIT)
    assert opened.status_code == 201, opened.text
    account_id: str = opened.json()["account_id"]
    assert opened.json()["status"] == "open"
    if amount_minor:
        body = {"account_id": account_id, "amount_minor": amount_minor, "currency": "EUR"}
        paid_in = post(api, "/v1/deposits", token, body, key=key(), **WAIT)
        assert paid_in.status_code == 201 and paid_in.json()["status"] == "completed", paid_in.text
    return account_id


def test_a_payment_with_wait_ends_and_reads_its_own_writes(
    api: str, tokens: dict[str, str]
) -> None:
    token = tokens["partner-demo-1"]
    source, target = open_funded(api, token, 1_000), open_funded(api, token, 0)
    body = {"from_account": source, "to_account": target, "amount_minor": 300, "currency": "EUR"}
    paid = post(api, "/v1/payments", token, body, key=key(), **WAIT)
    assert paid.status_code == 201, paid.text
    payment = paid.json()
    assert (payment["status"], payment["type"], payment["amount_minor"]) == (
        "completed", "transfer", 300,
    )  # fmt: skip
    assert paid.headers["location"] == f"/v1/payments/{payment['payment_id']}"
    # read your writes: no waiting from here on
    assert get(api, f"/v1/accounts/{source}", token).json()["balance_minor"] == 700
    assert get(api, f"/v1/accounts/{target}", token).json()["balance_minor"] == 300
    shown = get(api, f"/v1/payments/{payment['payment_id']}", token).json()
    assert shown["status"] == "completed"
    assert [h["type"] for h in shown["history"]] == ["Debited", "Completed"]
    entries = get(api, f"/v1/ledger/entries?payment_id={payment['payment_id']}", token).json()
    assert sorted(e["phase"] for e in entries["items"]) == ["pending", "post", "posted"]


def test_same_key_same_body_is_the_same_answer_and_another_body_conflicts(
    api: str, tokens: dict[str, str]
) -> None:
    token = tokens["partner-demo-1"]
    source, target = open_funded(api, token, 500), open_funded(api, token, 0)
    body = {"from_account": source, "to_account": target, "amount_minor": 120, "currency": "EUR"}
    k = key()
    first = post(api, "/v1/payments", token, body, key=k, **WAIT)
    again = post(api, "/v1/payments", token, body, key=k, **WAIT)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert get(api, f"/v1/accounts/{source}", token).json()["balance_minor"] == 380  # moved once
    other = post(api, "/v1/payments", token, body | {"amount_minor": 121}, key=k, **WAIT)
    problem(other, 409, "duplicate_conflict")


def test_without_wait_the_payment_is_accepted_pending(api: str, tokens: dict[str, str]) -> None:
    token = tokens["partner-demo-1"]
    source, target = open_funded(api, token, 50), open_funded(api, token, 0)
    body = {"from_account": source, "to_account": target, "amount_minor": 50, "currency": "EUR"}
    accepted = post(api, "/v1/payments", token, body, key=key())
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] in ("pending", "completed")
    assert accepted.headers["location"].startswith("/v1/payments/")


def test_refusals_are_problems_with_the_cores_codes(api: str, tokens: dict[str, str]) -> None:
    token = tokens["partner-demo-1"]
    source, target = open_funded(api, token, 10), open_funded(api, token, 0)
    body = {"from_account": source, "to_account": target, "amount_minor": 11, "currency": "EUR"}
    refused = problem(post(api, "/v1/payments", token, body, key=key(), **WAIT), 422,
                      "insufficient_funds")  # fmt: skip
    assert refused["payment_id"]
    shown = get(api, f"/v1/payments/{refused['payment_id']}", token)
    assert shown.status_code in (200, 404)  # the sink may still be writing it
    usd = body | {"amount_minor": 1, "currency": "USD"}
    problem(post(api, "/v1/payments", token, usd, key=key(), **WAIT), 422, "currency_mismatch")
    to_self = body | {"amount_minor": 1, "to_account": source}
    problem(post(api, "/v1/payments", token, to_self, key=key(), **WAIT), 422, "same_account")
    again = post(api, "/v1/accounts", token, {"currency": "EUR", "account_id": source}, key=key(),
                 **WAIT)  # fmt: skip
    problem(again, 409, "account_exists")


def test_another_partners_accounts_cannot_be_used(api: str, tokens: dict[str, str]) -> None:
    mine = open_funded(api, tokens["partner-demo-1"], 100)
    theirs = open_funded(api, tokens["partner-demo-2"], 0)
    body = {"from_account": mine, "to_account": theirs, "amount_minor": 5, "currency": "EUR"}
    stolen = {"account_id": mine, "amount_minor": 5, "currency": "EUR"}
    problem(post(api, "/v1/withdrawals", tokens["partner-demo-2"], stolen, key=key(), **WAIT),
            422, "account_not_found")  # fmt: skip
    problem(post(api, "/v1/payments", tokens["partner-demo-1"], body, key=key(), **WAIT), 422,
            "account_not_found")  # fmt: skip
    frozen = post(api, f"/v1/accounts/{mine}/freeze", tokens["partner-demo-2"], None, key=key())
    problem(frozen, 404, "not_found")


def test_freeze_unfreeze_and_close(api: str, tokens: dict[str, str]) -> None:
    token = tokens["partner-demo-1"]
    account = open_funded(api, token, 0)
    frozen = post(api, f"/v1/accounts/{account}/freeze", token, None, key=key(), **WAIT)
    assert frozen.status_code == 201 and frozen.json()["status"] == "frozen", frozen.text
    deposit = {"account_id": account, "amount_minor": 5, "currency": "EUR"}
    problem(post(api, "/v1/deposits", token, deposit, key=key(), **WAIT), 409, "account_frozen")
    thawed = post(api, f"/v1/accounts/{account}/unfreeze", token, None, key=key(), **WAIT)
    assert thawed.json()["status"] == "open"
    closed = post(api, f"/v1/accounts/{account}/close", token, None, key=key(), **WAIT)
    assert closed.status_code == 201 and closed.json()["status"] == "closed"


def test_closing_refusals_are_problems_with_the_cores_codes(
    api: str, tokens: dict[str, str], api_platform: tuple[Settings, str]
) -> None:
    token = tokens["partner-demo-1"]
    funded = open_funded(api, token, 10)
    problem(post(api, f"/v1/accounts/{funded}/close", token, None, key=key(), **WAIT), 409,
            "account_not_empty")  # fmt: skip
    empty = open_funded(api, token, 0)
    assert (
        post(api, f"/v1/accounts/{empty}/close", token, None, key=key(), **WAIT).json()["status"]
        == "closed"
    )
    deposit = {"account_id": empty, "amount_minor": 5, "currency": "EUR"}
    problem(post(api, "/v1/deposits", token, deposit, key=key(), **WAIT), 409, "account_closed")
    assert closing_under_a_payment_in_flight(api, token, api_platform[0]) == "account_has_pending"


@contextlib.contextmanager
def legs_held_back(settings: Settings, account_id: str) -> Iterator[None]:
    """Hold back every leg to ``account_id``: an open transaction on its ``legs`` partition
    keeps read_committed readers (the worker) before it until it ends, and it ends aborted,
    so no reader ever sees its record."""
    partition = partition_for(account_id.encode(), settings.partitions)
    holder = Producer({"bootstrap.servers": settings.bootstrap, "acks": "all",
                       "transactional.id": f"test-hold-{uuid.uuid4().hex}"})  # fmt: skip
    holder.init_transactions(HOLD_TIMEOUT_S)
    holder.begin_transaction()
    holder.produce(settings.topic("legs"), key=account_id.encode(), value=b"held",
                   partition=partition)  # fmt: skip
    if holder.flush(HOLD_TIMEOUT_S):
        raise RuntimeError("the holding record was not delivered")
    try:
        yield
    finally:
        holder.abort_transaction(HOLD_TIMEOUT_S)


HOLD_TIMEOUT_S = 30.0


def closing_under_a_payment_in_flight(api: str, token: str, settings: Settings) -> str:
    """Pay an account's whole balance out while the payment's step 2 is held back, then close
    the account: the source still holds the pending debit, whatever the machine's speed.
    Once the hold ends the payment completes."""
    source, target = open_funded(api, token, 40), open_funded(api, token, 0)
    body = {"from_account": source, "to_account": target, "amount_minor": 40, "currency": "EUR"}
    with legs_held_back(settings, target):
        paid = post(api, "/v1/payments", token, body, key=key())
        assert paid.status_code == 202, paid.text
        closed = post(api, f"/v1/accounts/{source}/close", token, None, key=key(), **WAIT)
    payment = f"/v1/payments/{paid.json()['payment_id']}"
    assert wait_until(lambda: get(api, payment, token).json()["status"] == "completed",
                      timeout_s=HOLD_TIMEOUT_S), "the held payment never completed"  # fmt: skip
    return str(problem(closed, 409, "account_has_pending")["code"])


def test_a_reference_is_kept_bounded_and_part_of_the_request(
    api: str, tokens: dict[str, str]
) -> None:
    token = tokens["partner-demo-1"]
    source, target = open_funded(api, token, 100), open_funded(api, token, 0)
    body = {"from_account": source, "to_account": target, "amount_minor": 7, "currency": "EUR",
            "reference": "Rechnung 2026-11 Nº 42"}  # fmt: skip
    k = key()
    paid = post(api, "/v1/payments", token, body, key=k, **WAIT)
    assert paid.status_code == 201 and paid.json()["reference"] == body["reference"], paid.text
    shown = get(api, f"/v1/payments/{paid.json()['payment_id']}", token).json()
    assert shown["reference"] == body["reference"]
    listed = get(api, f"/v1/payments?account={target}", token).json()["items"]
    assert [p["reference"] for p in listed] == [body["reference"]]
    other = body | {"reference": "Rechnung 2026-11 Nº 43"}
    problem(post(api, "/v1/payments", token, other, key=k, **WAIT), 409, "duplicate_conflict")
    for bad in ("", "x" * 141, "line\nbreak", "nul\u0000", "lone \ud800 surrogate"):
        sent = json.dumps(body | {"reference": bad})  # ensure_ascii: a lone surrogate as an escape
        headers = bearer(token) | {"Idempotency-Key": key(), "Content-Type": "application/json"}
        answer = httpx.post(f"{api}/v1/payments", content=sent, headers=headers,
                            timeout=HTTP_TIMEOUT_S)  # fmt: skip
        refused = problem(answer, 422, "validation_error")
        assert "reference" in json.dumps(refused), refused
    deposit = {"account_id": source, "amount_minor": 1, "currency": "EUR", "reference": "top-up"}
    assert post(api, "/v1/deposits", token, deposit, key=key(), **WAIT).json()["reference"] == (
        "top-up"
    )


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({"from_account": "a", "to_account": "b", "amount_minor": 0, "currency": "EUR"}, {},
         "body.amount_minor"),
        ({"from_account": "a", "to_account": "b", "amount_minor": "5", "currency": "EUR"}, {},
         "body.amount_minor"),
        ({"from_account": "a", "to_account": "b", "amount_minor": 2**63, "currency": "EUR"}, {},
         "body.amount_minor"),
        ({"from_account": "@sys", "to_account": "b", "amount_minor": 1, "currency": "EUR"}, {},
         "body.from_account"),
        ({"from_account": "a", "to_account": "b", "amount_minor": 1, "currency": "eur"}, {},
         "body.currency"),
        ({"from_account": "a", "to_account": "b", "amount_minor": 1, "currency": "EUR",
          "extra": 1}, {}, "body.extra"),
        ({"from_account": "a", "to_account": "b", "amount_minor": 1, "currency": "EUR"},
         {"Idempotency-Key": "has space"}, "header.idempotency-key"),
    ],
)  # fmt: skip
def test_bad_commands_are_validation_problems(
    api: str, tokens: dict[str, str], body: dict[str, Any], headers: dict[str, str], field: str
) -> None:
    k = headers.pop("Idempotency-Key", key())
    answer = post(api, "/v1/payments", tokens["partner-demo-1"], body, key=k, **headers)
    found = problem(answer, 422, "validation_error")
    assert field in [e["field"] for e in found["errors"]], found


def test_a_command_needs_a_key_a_partner_and_the_scope(api: str, tokens: dict[str, str]) -> None:
    body = {"from_account": "a", "to_account": "b", "amount_minor": 1, "currency": "EUR"}
    keyless = problem(post(api, "/v1/payments", tokens["partner-demo-1"], body, key=None), 422,
                      "validation_error")  # fmt: skip
    assert "header.Idempotency-Key" in [e["field"] for e in keyless["errors"]]
    problem(post(api, "/v1/payments", tokens["ops-console"], body, key=key()), 403, "forbidden")
    problem(post(api, "/v1/payments", None, body, key=key()), 401, "unauthorized")
    not_json = httpx.post(
        f"{api}/v1/payments", content=b"\xff{", timeout=HTTP_TIMEOUT_S,
        headers=bearer(tokens["partner-demo-1"]) | {"Idempotency-Key": key(),
                                                    "Content-Type": "application/json"},
    )  # fmt: skip
    problem(not_json, 400, "validation_error")  # not JSON at all: a bad request


RACERS = 50
API_PROCESSES = 2
API_START_TIMEOUT_S = 90.0


@contextlib.contextmanager
def api_processes(settings: Settings, issuer: str, dsn: str, log_dir: Path) -> Iterator[list[str]]:
    """``paystream api`` in API_PROCESSES processes of their own; their base URLs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")} | {
        "PAYSTREAM_ENVIRONMENT": "test",
        "PAYSTREAM_KAFKA_BOOTSTRAP": settings.bootstrap,
        "PAYSTREAM_KAFKA_SECURITY": settings.kafka_security,
        "PAYSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "PAYSTREAM_PARTITIONS": str(settings.partitions),
        "PAYSTREAM_DATA_DIR": str(settings.data_dir),
        "PAYSTREAM_POSTGRES_DSN": dsn,
        "PAYSTREAM_OIDC_ISSUER": issuer,
    }
    ports = [free_port() for _ in range(API_PROCESSES)]
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    for n, port in enumerate(ports):
        with (log_dir / f"api-{n}.log").open("wb") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "paystream.cli", "api", "--port", str(port)],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, process in zip(urls, processes, strict=True):
            assert _started(url, process), (log_dir / "api-0.log").read_text()
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(API_START_TIMEOUT_S)


def _started(url: str, process: subprocess.Popen[bytes]) -> bool:
    wait_until(lambda: is_ready(url) or process.poll() is not None, timeout_s=API_START_TIMEOUT_S)
    return process.poll() is None and is_ready(url)


def test_fifty_racing_requests_with_one_key_make_one_payment_and_one_answer(
    api: str,
    tokens: dict[str, str],
    keycloak: KeycloakServer,
    api_platform: tuple[Settings, str],
    tmp_path: Path,
) -> None:
    token = tokens["partner-demo-1"]
    source, target = open_funded(api, token, 1_000), open_funded(api, token, 0)
    body = {"from_account": source, "to_account": target, "amount_minor": 250, "currency": "EUR"}
    k = key()
    settings, dsn = api_platform
    logs = tmp_path / "api-logs"
    with (
        api_processes(settings, keycloak.issuer, dsn, logs) as urls,
        ThreadPoolExecutor(max_workers=RACERS) as pool,
    ):
        answers = list(pool.map(
            lambda n: post(urls[n % len(urls)], "/v1/payments", token, body, key=k, **WAIT),
            range(RACERS),
        ))  # fmt: skip
    refused = [a.text for a in answers if a.status_code != 201]
    assert not refused, refused
    assert len({a.text for a in answers}) == 1, {a.text for a in answers}
    assert answers[0].json()["status"] == "completed"
    assert get(api, f"/v1/accounts/{source}", token).json()["balance_minor"] == 750
    listed = get(api, f"/v1/payments?account={source}&status=completed", token).json()["items"]
    assert [p["type"] for p in listed].count("transfer") == 1


FUZZ_EXAMPLES = 20
"""Cases per operation (bounded: every operation of the document, on the live platform)."""
SCHEMA = schemathesis.openapi.from_path(openapi.DOC_PATH)


@SCHEMA.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_any_input_gets_an_answer_its_schema_allows(
    case: schemathesis.Case, api: str, tokens: dict[str, str]
) -> None:
    """schemathesis: generated and mutated requests with a valid token; no 5xx, and every
    response matches the committed OpenAPI document. Not checked: that every schema-valid
    request is accepted -- cursors are opaque, and the ledger refuses valid-looking commands
    (unknown accounts, insufficient funds) by design."""
    case.call_and_validate(
        base_url=api, headers=bearer(tokens["partner-demo-1"]), timeout=HTTP_TIMEOUT_S,
        excluded_checks=[checks.positive_data_acceptance],
    )  # fmt: skip


# --- the CLI for people: paystream accounts | deposit | pay | payments, and paystream up -------


@pytest.fixture
def person(
    api: str, keycloak: KeycloakServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., tuple[int, str, str]]:  # fmt: skip
    """``paystream ...`` in this process as partner-demo-1 against the module's API: its exit
    code, stdout and stderr. The token comes the way ``paystream token`` gets it for an
    external issuer (PAYSTREAM_CLIENT_SECRET)."""
    monkeypatch.setenv("PAYSTREAM_OIDC_ISSUER", keycloak.issuer)
    monkeypatch.setenv("PAYSTREAM_CLIENT_SECRET", keycloak.client("partner-demo-1").secret)
    monkeypatch.setenv("PAYSTREAM_API_URL", api)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_cli_opens_accounts_pays_and_shows_the_payment(
    api: str, tokens: dict[str, str], person: Callable[..., tuple[int, str, str]]
) -> None:
    code, shown, _ = person("accounts", "open", "--currency", "eur", "--wait", "20")
    assert code == 0 and "open" in shown and "0.00 EUR" in shown, shown
    source = re.search(r"^\s*account\s+(\S+)", shown, re.MULTILINE)[1]  # type: ignore[index]
    code, opened, _ = person("accounts", "open", "--currency", "EUR", "--json", "--wait", "20")
    target = json.loads(opened)["account_id"]
    code, funded, _ = person("deposit", source, "1,900", "EUR", "--wait", "20")
    assert code == 0 and "1,900.00 EUR" in funded and "completed" in funded, funded
    code, paid, said = person("pay", source, target, "12.50", "EUR", "--wait", "20", "--json")
    assert code == 0, said
    payment = json.loads(paid)
    assert (payment["status"], payment["amount_minor"]) == ("completed", 1250)
    key = re.search(r"--key (\S+)\)", said)[1]  # type: ignore[index]
    code, again, _ = person("pay", source, target, "12.50", "EUR", "--key", key, "--json")
    assert json.loads(again)["payment_id"] == payment["payment_id"]  # a retry, not a payment
    code, human, _ = person("payments", "show", payment["payment_id"])
    assert code == 0 and "12.50 EUR" in human and "completed" in human and "Debited" in human
    assert "1250" not in human  # people never see minor units
    code, raw, _ = person("payments", "show", payment["payment_id"], "--json")
    assert (
        raw
        == get(api, f"/v1/payments/{payment['payment_id']}", tokens["partner-demo-1"]).text + "\n"
    )
    code, listed, _ = person("accounts", "list", "--limit", "200")
    rows = {line.split()[0]: line for line in listed.splitlines() if line.strip()}
    assert "1,887.50 EUR" in rows[source] and "12.50 EUR" in rows[target], listed
    code, mine, _ = person("payments", "list", "--account", target, "--status", "completed")
    assert payment["payment_id"] in mine and "12.50 EUR" in mine, mine


def test_cli_api_problems_exit_1_with_their_code(
    api: str, tokens: dict[str, str], person: Callable[..., tuple[int, str, str]]
) -> None:
    source, target = (
        open_funded(api, tokens["partner-demo-1"], 100),
        open_funded(api, tokens["partner-demo-1"], 0),
    )
    code, _, said = person("pay", source, target, "1.01", "EUR", "--wait", "20")
    assert code == 1 and "insufficient_funds: " in said, said
    code, _, said = person("accounts", "show", f"nobody-{uuid.uuid4().hex}")
    assert code == 1 and "not_found: " in said, said


def test_cli_refuses_a_bad_amount_before_any_request_and_names_an_absent_api(
    person: Callable[..., tuple[int, str, str]],
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, _, said = person("pay", "a", "b", "12.345", "EUR", "--api", nowhere)
    assert code == 2 and "EUR has 2 decimals" in said and "connect" not in said, said
    code, _, said = person("pay", "--api", nowhere, "a", "b", "--", "-5", "EUR")
    assert code == 2 and "'-5' is not an amount" in said, said
    code, _, said = person("accounts", "list", "--api", nowhere)
    assert code == 2 and f"cannot connect to the API at {nowhere}" in said, said


UP_TIMEOUT_S = 90.0


def test_paystream_up_serves_the_api_and_stops_what_it_started(
    settings: Settings, postgres_server_dsn: str, keycloak: KeycloakServer, tmp_path: Path
) -> None:
    """``paystream up`` on the session's Kafka, a database of its own and the session's
    Keycloak: it prints the API's and the dashboard's URLs once the API's /readyz is 200,
    and SIGINT stops every child."""
    name = f"up_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    api_port, metrics_port, analytics_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")} | {
        "PAYSTREAM_ENVIRONMENT": "test",
        "PAYSTREAM_DATA_DIR": str(tmp_path / "data"),
        "PAYSTREAM_KAFKA_BOOTSTRAP": settings.bootstrap,
        "PAYSTREAM_KAFKA_SECURITY": settings.kafka_security,
        "PAYSTREAM_TOPIC_PREFIX": f"{settings.topic_prefix}-up",
        "PAYSTREAM_PARTITIONS": str(settings.partitions),
        "PAYSTREAM_POSTGRES_DSN": psycopg.conninfo.make_conninfo(postgres_server_dsn, dbname=name),
        "PAYSTREAM_OIDC_ISSUER": keycloak.issuer,
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable, "-m", "paystream.cli", "up", "--workers", "1", "--api-port", str(api_port),
        "--metrics-port", str(metrics_port), "--sink-metrics-port", "0",
        "--analytics-port", str(analytics_port),
    ]  # fmt: skip
    printed = tmp_path / "up.out"
    with printed.open("wb") as output:
        up = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{api_port}"
    try:
        wait_until(lambda: url in printed.read_text() or up.poll() is not None,
                   timeout_s=UP_TIMEOUT_S)  # fmt: skip
        assert url in printed.read_text(), printed.read_text()
        assert httpx.get(f"{url}/readyz", timeout=HTTP_TIMEOUT_S).status_code == 200
        workers_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert "paystream_worker" in workers_metrics.text
        dashboard = f"http://127.0.0.1:{analytics_port}"
        assert f"{dashboard}/ops" in printed.read_text()
        assert httpx.get(f"{dashboard}/healthz", timeout=HTTP_TIMEOUT_S).status_code == 200
        children = [int(pid) for pid in subprocess.run(
            ["pgrep", "-P", str(up.pid)], capture_output=True, text=True
        ).stdout.split()]  # fmt: skip
        # one worker, one sink, the API, the analytics, the bank-rail simulator, the connector,
        # the partner fan-out, the webhook delivery service, the notifier and the mailbox
        assert len(children) == 10, children
        assert "smtp://127.0.0.1:" in printed.read_text()
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(UP_TIMEOUT_S)
    assert code == 0, printed.read_text()
    assert not [pid for pid in children if pid_alive(pid)]
    assert "the services are still running" in printed.read_text()
