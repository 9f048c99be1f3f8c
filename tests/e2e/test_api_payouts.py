"""Payouts through the REST API on the real platform (issue 19): batches, screening rules set
on Kafka, the review queue with a compliance officer's token from Keycloak, and bad input
refused whole with nothing reserved. One platform for the module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from paystream.api.app import create_app
from paystream.ledger.screening import CurrencyLimits, ScreeningRules
from paystream.payouts.screening import publish_rules
from paystream.services.keycloak import KeycloakServer
from paystream.services.process import wait_until
from paystream.settings import Settings
from tests.e2e.harness import platform
from tests.e2e.test_api_commands import get, key, open_funded, post
from tests.support.api import problem, serving
from tests.support.keycloak import client_token

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT = {"Prefer": "wait=20"}
BATCH_MAX = 6
RULES = ScreeningRules(
    limits=(CurrencyLimits(currency="EUR", amount_max_minor=5_000),),
    blocked_countries=frozenset({"KP"}),
)
IBAN_DE = "DE89 3704 0044 0532 0130 00"
IBAN_FR = "FR1420041010050500013M02606"
ROUTING = "021000021"  # a valid ABA routing number
READ_MODEL_WAIT_S = 30.0


@pytest.fixture(scope="module")
def api(
    settings: Settings,
    postgres_server_dsn: str,
    keycloak: KeycloakServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    name = f"api_payouts_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(postgres_server_dsn, dbname=name)
    base = settings.model_copy(update={"postgres_dsn": dsn, "payouts_per_batch_max": BATCH_MAX})
    tmp_path: Path = tmp_path_factory.mktemp("api-payouts")
    with platform(base, tmp_path, workers=2, sinks=1) as running:
        applied = publish_rules(running.settings, RULES)
        assert applied.ok, applied.answers
        with serving(create_app(running.settings, issuer=keycloak.issuer, dsn=dsn)) as url:
            yield url


@pytest.fixture(scope="module")
def tokens(keycloak: KeycloakServer) -> dict[str, str]:
    clients = ("partner-demo-1", "partner-demo-2", "compliance-officer")
    return {client: client_token(keycloak, client) for client in clients}


def payout(source: str, amount_minor: int, **beneficiary: str) -> dict[str, Any]:
    return {
        "source_account": source,
        "amount_minor": amount_minor,
        "currency": "EUR",
        "beneficiary": {"name": "Ada Lovelace", "iban": IBAN_DE} | beneficiary,
    }


def submit(api: str, token: str, payouts: list[dict[str, Any]], k: str | None = None) -> Any:
    return post(api, "/v1/payout-batches", token, {"payouts": payouts}, key=k or key(), **WAIT)


def shown(api: str, token: str, path: str, ready: Any) -> dict[str, Any]:
    """GET ``path`` until ``ready(body)`` (the sink is behind the log by a moment)."""
    found: dict[str, Any] = {}

    def read() -> bool:
        response = get(api, path, token)
        if response.status_code != 200:
            return False
        found.update(response.json())
        return bool(ready(found))

    assert wait_until(read, timeout_s=READ_MODEL_WAIT_S), found or path
    return found


def available(api: str, token: str, account_id: str) -> int:
    body = shown(api, token, f"/v1/accounts/{account_id}", lambda _: True)
    return int(body["available_minor"])


def test_a_batch_is_reserved_screened_and_shown_with_totals(
    api: str, tokens: dict[str, str]
) -> None:
    token = tokens["partner-demo-1"]
    source, poor = open_funded(api, token, 20_000), open_funded(api, token, 100)
    payouts = [
        payout(source, 1_000),
        payout(source, 6_000, name="Big Seller"),  # above the EUR threshold: held
        payout(source, 700, iban=IBAN_FR, bic="BNPAFRPP"),
        {**payout(source, 500), "beneficiary": {"name": "US Seller", "country": "US",
                                                "account_number": "123456789",
                                                "routing_number": ROUTING}},
        payout(poor, 5_000),  # more than it has: failed, nothing reserved
    ]  # fmt: skip
    answered = submit(api, token, payouts)
    assert answered.status_code == 201, answered.text
    batch = answered.json()
    statuses = [p["status"] for p in batch["payouts"]]
    assert statuses == ["queued", "held", "queued", "queued", "failed"]
    assert batch["payouts"][1]["rule_codes"] == ["amount_over_threshold"]
    assert batch["payouts"][4]["code"] == "insufficient_funds"
    assert batch["payouts"][0]["beneficiary"]["iban"] == IBAN_DE.replace(" ", "")
    assert {(t["status"], t["count"], t["amount_minor"]) for t in batch["totals"]} == {
        ("queued", 3, 2_200), ("held", 1, 6_000), ("failed", 1, 5_000),
    }  # fmt: skip
    assert answered.headers["location"] == f"/v1/payout-batches/{batch['batch_id']}"
    stored = shown(api, token, answered.headers["location"], lambda b: b["count"] == 5)
    assert {p["payout_id"]: p["status"] for p in stored["payouts"]} == {
        p["payout_id"]: p["status"] for p in batch["payouts"]
    }
    assert available(api, token, source) == 20_000 - 1_000 - 6_000 - 700 - 500  # reserved
    assert available(api, token, poor) == 100
    one = shown(api, token, f"/v1/payouts/{batch['payouts'][1]['payout_id']}", lambda _: True)
    assert [h["type"] for h in one["history"]] == ["Held"]
    other_partner = get(api, f"/v1/payouts/{batch['payouts'][1]['payout_id']}",
                        tokens["partner-demo-2"])  # fmt: skip
    problem(other_partner, 404, "not_found")


def test_a_retried_batch_is_the_same_batch_and_another_body_conflicts(
    api: str, tokens: dict[str, str]
) -> None:
    token = tokens["partner-demo-1"]
    source = open_funded(api, token, 10_000)
    payouts, k = [payout(source, 100), payout(source, 200)], key()
    first, again = submit(api, token, payouts, k), submit(api, token, payouts, k)
    assert first.status_code == again.status_code == 201, again.text
    assert first.json() == again.json()
    for changed in ([payout(source, 100), payout(source, 201)],
                    [*payouts, payout(source, 300)]):  # fmt: skip
        problem(submit(api, token, changed, k), 409, "duplicate_conflict")
    assert available(api, token, source) == 10_000 - 300  # once, and nothing more


def test_bad_batches_are_refused_whole_and_reserve_nothing(
    api: str, tokens: dict[str, str]
) -> None:
    token = tokens["partner-demo-1"]
    source = open_funded(api, token, 10_000)
    good = payout(source, 100)
    cases = [
        ([good, payout(source, 100, iban="DE89370400440532013001")], "invalid_beneficiary"),
        ([good, payout(source, 100, iban=IBAN_DE, bic="ABCDXX12")], "invalid_beneficiary"),
        ([good, {**payout(source, 100), "beneficiary": {
            "name": "US", "account_number": "123456789", "routing_number": "021000022"}}],
         "invalid_beneficiary"),
        ([good, {**payout(source, 100), "currency": "BRL"}], "currency_not_supported"),
        ([payout(source, n + 1) for n in range(BATCH_MAX + 1)], "batch_too_large"),
        ([good, payout(source, 50), good], "duplicate_payout"),
    ]  # fmt: skip
    for payouts, code in cases:
        body = problem(submit(api, token, payouts), 422, code)
        assert body["detail"]
    problem(submit(api, token, [{**good, "amount_minor": 2**63}]), 422, "validation_error")
    refused = post(api, "/v1/payout-batches", tokens["compliance-officer"],
                   {"payouts": [good]}, key=key())  # fmt: skip
    problem(refused, 403, "forbidden")
    assert available(api, token, source) == 10_000


def test_the_review_queue_approve_reject_override(api: str, tokens: dict[str, str]) -> None:
    token, officer = tokens["partner-demo-1"], tokens["compliance-officer"]
    source = open_funded(api, token, 30_000)
    batch = submit(api, token, [payout(source, 6_000 + n) for n in range(3)]).json()
    held = [p["payout_id"] for p in batch["payouts"]]
    assert [p["status"] for p in batch["payouts"]] == ["held"] * 3
    queue = shown(
        api, officer, "/v1/reviews?status=open&limit=200",
        lambda page: set(held) <= {p["payout_id"] for p in page["items"]},
    )  # fmt: skip
    assert all(p["status"] == "held" for p in queue["items"])

    def decide(payout_id: str, decision: str, reason: str | None = None) -> httpx.Response:
        body = {"decision": decision} | ({} if reason is None else {"reason": reason})
        return post(api, f"/v1/reviews/{payout_id}/decision", officer, body, key=key())

    approved = decide(held[0], "approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "queued"
    rejected = decide(held[1], "reject", "sanctions list match")
    assert (rejected.json()["status"], rejected.json()["code"]) == ("failed", "review_rejected")
    overridden = decide(held[1], "override", "false positive, documents checked")
    assert overridden.json()["status"] == "queued"
    problem(decide(held[0], "approve"), 409, "payout_not_held")
    problem(decide(held[2], "reject"), 422, "validation_error")  # a rejection needs a reason
    problem(decide("01KAAAAAAAAAAAAAAAAAAAAAAA-0", "approve"), 404, "payout_not_found")
    problem(post(api, f"/v1/reviews/{held[2]}/decision", token, {"decision": "approve"},
                 key=key()), 403, "forbidden")  # fmt: skip
    decided = shown(
        api, officer, "/v1/reviews?status=decided&limit=200",
        lambda page: len([d for d in page["items"] if d["payout_id"] in held]) == 3,
    )  # fmt: skip
    mine = [d for d in decided["items"] if d["payout_id"] in held]
    assert [(d["decision"], d["status_before"], d["status_after"]) for d in mine] == [
        ("approve", "Held", "Queued"), ("reject", "Held", "Failed"),
        ("override", "Failed", "Queued"),
    ]  # fmt: skip
    assert {d["officer"] for d in mine} == {"service-account-compliance-officer"}
    assert all(d["rule_codes"] == ["amount_over_threshold"] for d in mine)
    history = shown(api, token, f"/v1/payouts/{held[1]}", lambda p: len(p["history"]) == 3)
    assert [(h["type"], h["actor"]) for h in history["history"]] == [
        ("Held", None), ("Failed", "service-account-compliance-officer"),
        ("Queued", "service-account-compliance-officer"),
    ]  # fmt: skip
    assert available(api, token, source) == 30_000 - 6_000 - 6_001 - 6_002
