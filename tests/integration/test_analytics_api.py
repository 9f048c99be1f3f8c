"""The analytics JSON endpoints refuse bad input with problem+json: served over real HTTP in
this process, on the session's ClickHouse engine (a database of its own), real tokens."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import clickhouse_connect
import httpx
import pytest
from confluent_kafka.admin import AdminClient

from paystream.analytics import schema
from paystream.analytics.app import Analytics, create_app
from paystream.api.app import AUDIENCE_DEFAULT
from paystream.api.auth import TokenVerifier
from paystream.api.deps import RateLimiter
from paystream.services.keycloak import KeycloakServer
from paystream.settings import Settings
from tests.support.api import HTTP_TIMEOUT_S, bearer, problem, serving
from tests.support.keycloak import client_token

pytestmark = pytest.mark.integration

T10, T11 = "2026-11-30T10:00:00Z", "2026-11-30T11:00:00Z"


@pytest.fixture(scope="module")
def served(
    clickhouse_dsn: str, keycloak: KeycloakServer, settings: Settings
) -> Iterator[tuple[str, dict[str, str]]]:
    client = clickhouse_connect.get_client(dsn=clickhouse_dsn)
    database = f"analytics_api_{uuid.uuid4().hex[:10]}"
    schema.create(client, database)
    analytics = Analytics(
        verifier=TokenVerifier(issuer=keycloak.issuer, audience=AUDIENCE_DEFAULT),
        limiter=RateLimiter(1_000), client=client, database=database, lock=threading.Lock(),
        settings=settings, admin=AdminClient(settings.kafka.config()),
    )  # fmt: skip
    with serving(create_app(analytics), ready=False) as url:
        yield url, bearer(client_token(keycloak, "ops-console"))
    client.command(f"DROP DATABASE IF EXISTS {database}")


def get(served: tuple[str, dict[str, str]], path: str, **params: Any) -> httpx.Response:
    url, headers = served
    return httpx.get(f"{url}{path}", params=params, headers=headers, timeout=HTTP_TIMEOUT_S)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/analytics/funnel", {"since": T10, "until": T10}),  # empty range
        ("/v1/analytics/funnel", {"since": T11, "until": T10}),  # backwards
        ("/v1/analytics/latency", {"since": "2020-01-01T00:00:00Z", "until": T10}),  # > 400 days
        ("/v1/analytics/funnel", {"since": "yesterday"}),
        ("/v1/analytics/funnel", {"sinse": T10}),
        ("/v1/analytics/dead-letters", {"limit": "0"}),
        ("/v1/analytics/dead-letters", {"limit": "101"}),
        ("/v1/analytics/dead-letters", {"limit": "x" * 10_000}),
    ],
)  # fmt: skip
def test_bad_input_is_a_validation_problem(
    served: tuple[str, dict[str, str]], path: str, params: dict[str, str]
) -> None:
    problem(get(served, path, **params), 422, "validation_error")


def test_good_input_answers_on_an_empty_store(served: tuple[str, dict[str, str]]) -> None:
    funnel = get(served, "/v1/analytics/funnel", since="2026-11-30T10:00:00+01:00")
    assert funnel.status_code == 200, funnel.text
    assert funnel.json()["total"]["requested"] == 0 and funnel.json()["series"] == []
    dead = get(served, "/v1/analytics/dead-letters", limit="100")
    assert dead.status_code == 200 and dead.json()["newest"] == []
    assert get(served, "/v1/analytics/consistency").json() == {"currencies": []}
    missing = get(served, "/v1/analytics/nothing-here")
    problem(missing, 404, "not_found")
