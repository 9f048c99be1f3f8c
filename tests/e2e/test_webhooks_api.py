"""Signed webhooks on the real platform (AtlasPay F-003): workers, the Postgres sink, Kafka,
``paystream webhooks``, the API over real HTTP with Keycloak tokens, HTTP receivers that
verify every signature. A payment completes and a payout fails compliance review: the
partner hears both within 30 seconds, the failure with its reason. The deliveries API lists
and shows a partner's own deliveries only; a dead one is retried by hand, an endpoint is
replayed since a time, each POST idempotent. One platform for the module."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from paystream.api.app import create_app
from paystream.ledger.screening import CurrencyLimits, ScreeningRules
from paystream.partners.registry import Endpoint
from paystream.payouts.screening import publish_rules
from paystream.services.keycloak import KeycloakServer
from paystream.services.process import wait_until
from paystream.settings import Settings
from paystream.webhooks.receiver import Plan, ReceiverServer, serving
from tests.e2e.harness import platform
from tests.e2e.test_api_commands import WAIT, get, key, open_funded, post
from tests.support.api import problem
from tests.support.api import serving as serving_api
from tests.support.keycloak import client_token
from tests.support.webhooks import delivering, partner_with_endpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

HEARD_WITHIN_S = 30.0
"""The seed: a partner hears of a state change within 30 seconds."""
SETTLE_S = 60.0
RULES = ScreeningRules(limits=(CurrencyLimits(currency="EUR", amount_max_minor=5_000),))
IBAN = "DE89370400440532013000"


@dataclass(frozen=True)
class Stack:
    api: str
    dsn: str
    receivers: dict[str, ReceiverServer]
    endpoints: dict[str, Endpoint]


@pytest.fixture(scope="module")
def stack(
    settings: Settings,
    postgres_server_dsn: str,
    keycloak: KeycloakServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    name = f"api_webhooks_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(postgres_server_dsn, dbname=name)
    base = settings.model_copy(
        update={"postgres_dsn": dsn, "webhook_retry_delays_s": (0.2, 0.4),
                "webhook_timeout_s": 2.0, "webhook_breaker_failures": 1_000}
    )  # fmt: skip
    tmp_path: Path = tmp_path_factory.mktemp("api-webhooks")
    with (
        platform(base, tmp_path, workers=1, sinks=1) as running,
        serving("whsec_placeholder") as one,
        serving("whsec_placeholder") as two,
    ):
        assert publish_rules(running.settings, RULES).ok
        endpoints = {
            "demo-1": partner_with_endpoint(dsn, "demo-1", one.url),
            "demo-2": partner_with_endpoint(dsn, "demo-2", two.url),
        }
        one.secret, two.secret = endpoints["demo-1"].secret, endpoints["demo-2"].secret
        app = create_app(running.settings, issuer=keycloak.issuer, dsn=dsn)
        with delivering(running.settings, dsn), serving_api(app) as url:
            yield Stack(url, dsn, {"demo-1": one, "demo-2": two}, endpoints)


@pytest.fixture(scope="module")
def tokens(keycloak: KeycloakServer) -> dict[str, str]:
    clients = ("partner-demo-1", "partner-demo-2", "compliance-officer")
    return {client: client_token(keycloak, client) for client in clients}


def heard(receiver: ReceiverServer, kind: str, object_id: str, within_s: float) -> dict[str, Any]:
    """The event ``kind`` of ``object_id`` the receiver got (waiting up to ``within_s``)."""
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        found[:] = [e for e in receiver.events().values()
                    if e["type"] == kind and e["data"]["id"] == object_id]  # fmt: skip
        return bool(found)

    assert wait_until(arrived, timeout_s=within_s), f"no {kind} of {object_id}"
    [event] = found
    return event


def test_a_payment_and_a_payout_failed_in_review_reach_the_partner_with_the_reason(
    stack: Stack, tokens: dict[str, str]
) -> None:
    token, officer = tokens["partner-demo-1"], tokens["compliance-officer"]
    receiver = stack.receivers["demo-1"]
    source, target = open_funded(stack.api, token, 20_000), open_funded(stack.api, token, 0)
    body = {"from_account": source, "to_account": target, "amount_minor": 300, "currency": "EUR"}
    paid = post(stack.api, "/v1/payments", token, body, key=key(), **WAIT).json()
    completed = heard(receiver, "payment.completed", paid["payment_id"], HEARD_WITHIN_S)
    assert completed["data"]["failure"] is None
    assert (completed["data"]["amount_minor"], completed["data"]["currency"]) == (300, "EUR")
    assert completed["data"]["account_id"] == source
    batch = {"payouts": [{"source_account": source, "amount_minor": 6_000, "currency": "EUR",
                          "beneficiary": {"name": "Ada Lovelace", "iban": IBAN}}]}  # fmt: skip
    [payout] = post(stack.api, "/v1/payout-batches", token, batch, key=key(), **WAIT).json()[
        "payouts"
    ]
    assert payout["status"] == "held"
    held = heard(receiver, "payout.held", payout["payout_id"], HEARD_WITHIN_S)
    assert held["data"]["rule_codes"] == ["amount_over_threshold"]
    decision = {"decision": "reject", "reason": "beneficiary on a sanctions list"}
    path = f"/v1/reviews/{payout['payout_id']}/decision"
    assert post(stack.api, path, officer, decision, key=key()).status_code == 200
    failed = heard(receiver, "payout.failed", payout["payout_id"], HEARD_WITHIN_S)
    assert failed["data"]["failure"] == {
        "code": "review_rejected", "reason": "beneficiary on a sanctions list",
    }  # fmt: skip
    assert failed["data"]["payout_id"] == payout["payout_id"]
    assert failed["data"]["batch_id"] == payout["batch_id"]
    assert [r for r in receiver.requests() if r.status == 400] == [], "a signature failed"
    theirs = stack.receivers["demo-2"].events().values()
    assert all(e["data"]["partner_id"] == "demo-2" for e in theirs)


def deliveries(stack: Stack, token: str, query: str = "") -> httpx.Response:
    return get(stack.api, f"/v1/webhooks/deliveries{query}", token)


def test_a_partner_lists_and_reads_its_own_deliveries_only(
    stack: Stack, tokens: dict[str, str]
) -> None:
    token, other = tokens["partner-demo-1"], tokens["partner-demo-2"]
    open_funded(stack.api, token, 1_000)
    open_funded(stack.api, token, 2_000)
    assert wait_until(
        lambda: len(deliveries(stack, token, "?status=delivered").json()["items"]) >= 2,
        timeout_s=SETTLE_S,
    )
    first = deliveries(stack, token, "?status=delivered&limit=1").json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = deliveries(stack, token, f"?status=delivered&limit=1&cursor={first['next_cursor']}")
    [a], [b] = first["items"], second.json()["items"]
    assert (a["event_at"], a["delivery_id"]) > (b["event_at"], b["delivery_id"])  # newest first
    one = get(stack.api, f"/v1/webhooks/deliveries/{a['delivery_id']}", token).json()
    assert one["status"] == "delivered" and one["payload"]["type"] == a["event_type"]
    assert one["endpoint_id"] == stack.endpoints["demo-1"].endpoint_id
    assert [x["outcome"] for x in one["attempt_log"]] == ["delivered"]
    assert one["delivery_id"] in stack.receivers["demo-1"].events()  # the webhook-id
    problem(get(stack.api, f"/v1/webhooks/deliveries/{a['delivery_id']}", other), 404, "not_found")
    theirs = {d["delivery_id"] for d in deliveries(stack, other, "?limit=200").json()["items"]}
    assert a["delivery_id"] not in theirs
    problem(deliveries(stack, token, "?status=lost"), 422, "validation_error")
    problem(deliveries(stack, token, "?cursor=garbage"), 422, "validation_error")
    problem(deliveries(stack, tokens["compliance-officer"]), 403, "forbidden")


def test_a_dead_delivery_is_retried_and_an_endpoint_replayed_each_once_per_key(
    stack: Stack, tokens: dict[str, str]
) -> None:
    token, other = tokens["partner-demo-1"], tokens["partner-demo-2"]
    receiver, endpoint = stack.receivers["demo-1"], stack.endpoints["demo-1"]
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    receiver.plan = Plan(always_fail=True, fail_status=500)
    try:
        open_funded(stack.api, token, 777)
        assert wait_until(lambda: dead(stack, token, 777) is not None, timeout_s=SETTLE_S)
    finally:
        receiver.plan = Plan()
    delivery = dead(stack, token, 777)
    assert delivery is not None and delivery["attempts"] == 3 and delivery["last_status"] == 500
    retry = f"/v1/webhooks/deliveries/{delivery['delivery_id']}/retry"
    k = key()
    first = post(stack.api, retry, token, None, key=k)
    assert first.status_code == 202, first.text
    assert (first.json()["status"], first.json()["round"]) == ("pending", 2)
    again = post(stack.api, retry, token, None, key=k)
    assert (again.status_code, again.json()) == (202, first.json())  # the same answer, no round 3
    replay = f"/v1/webhooks/endpoints/{endpoint.endpoint_id}/replay"
    problem(post(stack.api, f"{replay}?since={iso(started)}", token, None, key=k),
            409, "duplicate_conflict")  # fmt: skip
    problem(post(stack.api, retry, other, None, key=key()), 404, "not_found")
    problem(post(stack.api, retry, token, None, key=None), 422, "validation_error")
    shown = f"/v1/webhooks/deliveries/{delivery['delivery_id']}"
    assert wait_until(
        lambda: get(stack.api, shown, token).json()["status"] == "delivered", timeout_s=SETTLE_S
    )
    assert delivery["delivery_id"] in receiver.events()
    round_two = get(stack.api, shown, token).json()
    assert round_two["round"] == 2
    assert [(x["round"], x["outcome"]) for x in round_two["attempt_log"]] == [
        (1, "http_error"), (1, "http_error"), (1, "http_error"), (2, "delivered"),
    ]  # fmt: skip

    duplicates = receiver.duplicates
    since = f"?since={iso(started)}"
    k = key()
    replayed = post(stack.api, replay + since, token, None, key=k)
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["replayed"] >= 1 and replayed.json()["next_since"] is None
    assert post(stack.api, replay + since, token, None, key=k).json() == replayed.json()
    assert wait_until(
        lambda: receiver.duplicates >= duplicates + replayed.json()["replayed"],
        timeout_s=SETTLE_S,
    ), "the replayed deliveries were not sent again"
    problem(post(stack.api, replay + since, other, None, key=key()), 404, "not_found")
    future = iso(datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1))
    problem(post(stack.api, f"{replay}?since={future}", token, None, key=key()),
            422, "validation_error")  # fmt: skip
    problem(post(stack.api, f"{replay}?since=2026-01-01T00:00:00", token, None, key=key()),
            422, "validation_error")  # fmt: skip


def dead(stack: Stack, token: str, amount_minor: int) -> dict[str, Any] | None:
    """The dead delivery of the deposit of ``amount_minor`` (None until there is one)."""
    page = deliveries(stack, token, "?status=dead&limit=200").json()["items"]
    found = [d for d in page if d["payload"]["data"]["amount_minor"] == amount_minor]
    return found[0] if found else None


def iso(at: datetime.datetime) -> str:
    """RFC 3339 as a query carries it (``Z``: a ``+`` would arrive as a space)."""
    return at.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
