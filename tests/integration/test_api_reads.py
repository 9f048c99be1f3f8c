"""The API's reads over real HTTP: tokens from the real Keycloak, read models in real Postgres.

The store is written by ``store.write`` from the core's real outputs for two
partners (demo-1, demo-2), as the sink writes it; the API runs in uvicorn on
a port of its own. Also here: the API with Kafka or Postgres away, and the
rate limit. Commands on the whole platform: tests/e2e/test_api_commands.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from paystream.api.app import create_app
from paystream.api.commands import CommandSender, KafkaUnavailable
from paystream.audit.migrate import migrate
from paystream.ledger import Event
from paystream.services.keycloak import KeycloakServer
from paystream.services.process import free_port, wait_until
from paystream.settings import KafkaConnection, Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, ensure_topics, postgres_sink_group
from tests.support.api import HTTP_TIMEOUT_S, problem, serving
from tests.support.audit import Recorded
from tests.support.keycloak import client_token
from tests.support.ledger import deposit, open_account, transfer

pytestmark = pytest.mark.integration

T_PAID = transfer(6, "a-src", "a-dst", 300, partner_id="demo-1")
T_TOO_BIG = transfer(7, "a-src", "a-dst", 50_000, partner_id="demo-1")
OPENED = open_account(1, "a-src", partner_id="demo-1")
DST_DEPOSITS = 5


def recorded() -> Recorded:
    r = Recorded()
    r.apply([OPENED, deposit(2, "a-src", 1_000, partner_id="demo-1")], 0)
    r.apply([open_account(3, "a-dst", partner_id="demo-1", partition=1)], 1)
    r.apply(
        [open_account(4, "b-1", partner_id="demo-2"), deposit(5, "b-1", 70, partner_id="demo-2")], 0
    )
    r.saga(T_PAID, 0, 1)
    r.saga(T_TOO_BIG, 0, 1)
    r.apply(
        [
            deposit(10 + n, "a-dst", 10, partner_id="demo-1", partition=1)
            for n in range(DST_DEPOSITS)
        ],
        1,
    )
    return r


@pytest.fixture(scope="module")
def store_dsn(postgres_server_dsn: str) -> str:
    name = f"api_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(postgres_server_dsn, dbname=name)
    migrate(dsn)
    recorded().write(dsn)
    return dsn


@pytest.fixture(scope="module")
def api(store_dsn: str, keycloak: KeycloakServer, settings: Settings) -> Iterator[str]:
    with serving(create_app(settings, issuer=keycloak.issuer, dsn=store_dsn)) as url:
        yield url


@pytest.fixture(scope="module")
def tokens(keycloak: KeycloakServer) -> dict[str, str]:
    return {
        c: client_token(keycloak, c) for c in ("partner-demo-1", "partner-demo-2", "ops-console")
    }


def get(api: str, path: str, token: str | None, **params: Any) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{api}{path}", headers=headers, params=params, timeout=HTTP_TIMEOUT_S)


def test_health_needs_no_token_and_readiness_checks_its_services(api: str) -> None:
    assert get(api, "/healthz", None).json() == {"status": "ok", "checks": {}}
    ready = get(api, "/readyz", None)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "kafka": "ok", "postgres": "ok", "identity_provider": "ok", "read_models": "ok",
    }  # fmt: skip


def test_an_account_shows_its_balances_and_ledger_position(
    api: str, tokens: dict[str, str]
) -> None:
    body = get(api, "/v1/accounts/a-src", tokens["partner-demo-1"]).json()
    assert (body["currency"], body["status"], body["partner_id"]) == ("EUR", "open", "demo-1")
    assert body["balance_minor"] == body["available_minor"] == 700
    assert (body["posted_credits_minor"], body["posted_debits_minor"]) == (1_000, 300)
    assert body["pending_minor"] == 0 and body["ledger_position"]["partition"] == 0


def test_another_partners_resources_do_not_exist_for_a_partner(
    api: str, tokens: dict[str, str]
) -> None:
    other = tokens["partner-demo-2"]
    problem(get(api, "/v1/accounts/a-src", other), 404, "not_found")
    problem(get(api, "/v1/accounts/a-src/ledger", other), 404, "not_found")
    problem(get(api, f"/v1/payments/{T_PAID.command_id}", other), 404, "not_found")
    problem(get(api, "/v1/ledger/entries", other, payment_id=T_PAID.command_id), 404, "not_found")
    assert get(api, "/v1/accounts/b-1", other).json()["balance_minor"] == 70
    listed = get(api, "/v1/payments", other).json()["items"]
    assert {p["partner_id"] for p in listed} == {"demo-2"}


def test_ops_see_every_partner(api: str, tokens: dict[str, str]) -> None:
    ops = tokens["ops-console"]
    assert get(api, "/v1/accounts/a-src", ops).json()["balance_minor"] == 700
    assert get(api, "/v1/accounts/b-1", ops).json()["partner_id"] == "demo-2"
    ids = {a["account_id"] for a in get(api, "/v1/accounts", ops, limit=200).json()["items"]}
    assert {"a-src", "a-dst", "b-1"} <= ids and any(i.startswith("@") for i in ids)


def test_tokens_are_required_and_scopes_are_checked(api: str, tokens: dict[str, str]) -> None:
    missing = get(api, "/v1/accounts/a-src", None)
    problem(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    problem(get(api, "/v1/accounts/a-src", "not-a-token"), 401, "unauthorized")
    basic = httpx.get(f"{api}/v1/accounts/a-src", auth=("u", "p"), timeout=HTTP_TIMEOUT_S)
    problem(basic, 401, "unauthorized")
    forbidden = get(api, "/metrics", tokens["partner-demo-1"])
    problem(forbidden, 403, "forbidden")
    assert 'error="insufficient_scope"' in forbidden.headers["www-authenticate"]
    scraped = get(api, "/metrics", tokens["ops-console"])
    assert scraped.status_code == 200
    assert 'paystream_api_requests_total{method="GET",route="/v1/accounts/{account_id}"' in (
        scraped.text
    )


def test_lists_page_with_cursors(api: str, tokens: dict[str, str]) -> None:
    token = tokens["partner-demo-1"]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = get(api, "/v1/accounts", token, **params).json()
        seen += [a["account_id"] for a in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a-dst", "a-src"] and pages == 2
    lines, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = get(api, "/v1/accounts/a-dst/ledger", token, **params).json()
        lines += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    credits = [line["amount_minor"] for line in lines if line["side"] == "credit"]
    assert sorted(credits) == sorted([300] + [10] * DST_DEPOSITS)
    assert len({(line["entry_id"], line["line_no"]) for line in lines}) == len(lines)


def test_a_payment_shows_its_status_code_and_history(api: str, tokens: dict[str, str]) -> None:
    token = tokens["partner-demo-1"]
    paid = get(api, f"/v1/payments/{T_PAID.command_id}", token).json()
    assert (paid["type"], paid["status"], paid["code"]) == ("transfer", "completed", None)
    assert (paid["from_account"], paid["to_account"], paid["amount_minor"]) == (
        "a-src",
        "a-dst",
        300,
    )
    assert [h["type"] for h in paid["history"]] == ["Debited", "Completed"]
    refused = get(api, f"/v1/payments/{T_TOO_BIG.command_id}", token).json()
    assert (refused["status"], refused["code"]) == ("rejected", "insufficient_funds")
    problem(get(api, f"/v1/payments/{OPENED.command_id}", token), 404, "not_found")  # not money


def test_payments_filter_by_account_status_and_time(api: str, tokens: dict[str, str]) -> None:
    token = tokens["partner-demo-1"]
    completed = get(api, "/v1/payments", token, account="a-dst", status="completed").json()
    assert {p["type"] for p in completed["items"]} == {"transfer", "deposit"}
    assert len(completed["items"]) == 1 + DST_DEPOSITS
    rejected = get(api, "/v1/payments", token, status="rejected").json()["items"]
    assert [p["payment_id"] for p in rejected] == [T_TOO_BIG.command_id]
    later = get(api, "/v1/payments", token, created_after=T_PAID.issued_at_ms).json()
    assert later["items"] == []
    problem(get(api, "/v1/payments", token, status="lost"), 422, "validation_error")


def test_ledger_entries_of_a_payment_balance(api: str, tokens: dict[str, str]) -> None:
    entries = get(
        api, "/v1/ledger/entries", tokens["partner-demo-1"], payment_id=T_PAID.command_id
    ).json()["items"]
    assert sorted(e["phase"] for e in entries) == ["pending", "post", "posted"]
    for entry in entries:
        signed = [x["amount_minor"] * (1 if x["side"] == "debit" else -1) for x in entry["lines"]]
        assert sum(signed) == 0 and entry["payment_id"] == T_PAID.command_id


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/accounts", {"cursor": "garbage"}, "query.cursor"),
        ("/v1/accounts", {"limit": 0}, "query.limit"),
        ("/v1/accounts", {"limit": 10**9}, "query.limit"),
        ("/v1/payments", {"created_after": -1}, "query.created_after"),
        ("/v1/ledger/entries", {}, "query.payment_id"),
        ("/v1/accounts", {"limitt": 5}, "query.limitt"),
        ("/v1/accounts/" + "x" * 65, {}, "path.account_id"),
    ],
)
def test_bad_input_is_a_validation_problem_with_the_field(
    api: str, tokens: dict[str, str], path: str, params: dict[str, Any], field: str
) -> None:
    body = problem(get(api, path, tokens["partner-demo-1"], **params), 422, "validation_error")
    assert field in [e["field"] for e in body["errors"]]


def test_a_cursor_of_another_list_is_refused(api: str, tokens: dict[str, str]) -> None:
    token = tokens["ops-console"]
    cursor = get(api, "/v1/accounts", token, limit=1).json()["next_cursor"]
    problem(get(api, "/v1/payments", token, cursor=cursor), 422, "validation_error")


def test_unknown_routes_and_methods_are_problems(api: str, tokens: dict[str, str]) -> None:
    problem(get(api, "/v1/nothing", tokens["partner-demo-1"]), 404, "not_found")
    deleted = httpx.delete(f"{api}/v1/accounts/a-src", timeout=HTTP_TIMEOUT_S)
    problem(deleted, 405, "method_not_allowed")


def test_postgres_unreachable_is_503_with_retry_after(
    keycloak: KeycloakServer, tokens: dict[str, str], settings: Settings
) -> None:
    nowhere = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    with serving(create_app(settings, issuer=keycloak.issuer, dsn=nowhere), ready=False) as url:
        answer = get(url, "/v1/accounts/a-src", tokens["partner-demo-1"])
        problem(answer, 503, "unavailable")
        assert int(answer.headers["retry-after"]) > 0
        ready = get(url, "/readyz", None)
        assert ready.status_code == 503 and ready.json()["checks"]["postgres"] == "unreachable"


def test_a_client_over_its_rate_is_told_when_to_come_back(
    store_dsn: str, keycloak: KeycloakServer, tokens: dict[str, str], settings: Settings
) -> None:
    """1 request per second over a 60-second window: 60 allowed, then refused (a window this
    long, so a slow machine cannot spread the requests over several windows)."""
    app = create_app(settings, issuer=keycloak.issuer, dsn=store_dsn, rate_limit_per_s=1,
                     rate_window_s=60)  # fmt: skip
    with serving(app) as url:
        answers = [get(url, "/v1/accounts/a-src", tokens["partner-demo-1"]) for _ in range(62)]
        other = get(url, "/v1/accounts/b-1", tokens["partner-demo-2"])
    limited = [a for a in answers if a.status_code == 429]
    assert len(limited) == 2 and answers[-1].status_code == 429
    problem(limited[0], 429, "rate_limited")
    assert int(limited[0].headers["retry-after"]) >= 1
    assert other.status_code == 200  # per client


READ_MODEL_LAG_BOUND = 4


def test_readiness_needs_the_read_models_within_their_lag_bound(
    store_dsn: str, keycloak: KeycloakServer, tokens: dict[str, str], settings: Settings
) -> None:
    """Five events the sink has not stored: not ready with a bound of 4; ready once the sink's
    stored positions reach the logs' ends. The lag is also a metric."""
    own = settings.model_copy(
        update={"topic_prefix": f"lag{uuid.uuid4().hex[:8]}", "read_model_lag_max": 4}
    )
    topics = Topics.from_settings(own)
    ensure_topics(own.kafka, topics)
    serde = AvroSerde(registry_from_url(None, own.data_dir), topics=topics.payloads())
    producer = Producer({"bootstrap.servers": own.bootstrap, "acks": "all"})
    for n in range(READ_MODEL_LAG_BOUND + 1):
        event = Event(event_id=f"e{n}:completed", payment_id=f"e{n}", type="Completed",
                      command_type="Deposit", partner_id="demo-1", account_id="a-src",
                      issued_at_ms=1)  # fmt: skip
        producer.produce(topics.events, serde.encode_event(event), key=event.payment_id)
    assert producer.flush(HTTP_TIMEOUT_S) == 0
    with serving(create_app(own, issuer=keycloak.issuer, dsn=store_dsn), ready=False) as url:
        connected = lambda: get(url, "/readyz", None).json()["checks"]["kafka"] == "ok"  # noqa: E731
        assert wait_until(connected, timeout_s=HTTP_TIMEOUT_S)
        behind = get(url, "/readyz", None)
        assert behind.status_code == 503, behind.text
        assert behind.json()["checks"]["read_models"] == "behind by 5 records (bound 4)"
        metrics = get(url, "/metrics", tokens["ops-console"]).text
        assert "paystream_api_read_model_lag_records 5.0" in metrics
        probe = Consumer({"bootstrap.servers": own.bootstrap, "group.id": "lag-probe"})
        ends = [
            probe.get_watermark_offsets(TopicPartition(topics.events, p), timeout=HTTP_TIMEOUT_S)[1]
            for p in range(own.partitions)
        ]
        probe.close()
        with psycopg.connect(store_dsn, autocommit=True) as conn:
            for partition, end in enumerate(ends):
                conn.execute(
                    "INSERT INTO sink_offsets (consumer, topic, partition, next_offset)"
                    " VALUES (%s, %s, %s, %s)",
                    (postgres_sink_group(own), topics.events, partition, end),
                )
        ready = get(url, "/readyz", None)
        assert ready.status_code == 200 and ready.json()["checks"]["read_models"] == "ok"


def test_without_kafka_the_api_reads_and_refuses_commands_with_503(
    store_dsn: str, keycloak: KeycloakServer, tokens: dict[str, str], settings: Settings
) -> None:
    """The API starts while Kafka is away: reads work, commands are clearly not accepted."""
    away = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    with serving(create_app(away, issuer=keycloak.issuer, dsn=store_dsn), ready=False) as url:
        token = tokens["partner-demo-1"]
        assert get(url, "/v1/accounts/a-src", token).status_code == 200
        body = {"account_id": "a-src", "amount_minor": 1, "currency": "EUR"}
        refused = httpx.post(
            f"{url}/v1/deposits", json=body, timeout=HTTP_TIMEOUT_S,
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "k-1"},
        )  # fmt: skip
        problem(refused, 503, "unavailable")
        assert int(refused.headers["retry-after"]) > 0
        ready = get(url, "/readyz", None)
        assert ready.status_code == 503 and ready.json()["checks"]["kafka"] == "unreachable"


def test_a_command_kafka_never_takes_is_reported_not_accepted(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    serde = AvroSerde(registry_from_url(None, settings.data_dir), topics=topics.payloads())
    sender = CommandSender(
        kafka=KafkaConnection.plaintext(f"127.0.0.1:{free_port()}"), topic=topics.commands,
        serde=serde,
        delivery_timeout_ms=1_000,
    )  # fmt: skip
    command = deposit(99, "a-src", 1, partner_id="demo-1")
    try:
        with pytest.raises(KafkaUnavailable, match="refused"):
            asyncio.run(sender.send(command))
    finally:
        sender.close()
