"""The ops page's server side without a browser or an identity provider: what it serves,
what its token relay refuses before it calls anyone, the realm's client for it, and where
the ops person's password lives. The sign-in itself runs in tests/e2e/test_ops_page.py."""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from paystream.analytics import page
from paystream.api import problems
from paystream.services import keycloak
from paystream.services.keycloak import KeycloakServer

UNREACHABLE_ISSUER = "http://127.0.0.1:9/realms/paystream"  # port 9 (discard): refused
VERIFIER = "v" * 43


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    problems.install(app)
    page.install(app, page.PageOptions(issuer=UNREACHABLE_ISSUER))
    return TestClient(app)


def test_the_page_is_served_with_a_strict_content_security_policy(client: TestClient) -> None:
    answer = client.get("/ops")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy and "unsafe-eval" not in policy
    assert answer.headers["referrer-policy"] == "no-referrer"
    for name in page.ASSETS:
        assert (
            f'src="/ops/static/{name}"' in answer.text
            or f'href="/ops/static/{name}"' in answer.text
        )


def test_static_files_are_the_known_ones_gzipped_and_revalidated(client: TestClient) -> None:
    plotly = client.get("/ops/static/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert plotly.status_code == 200 and plotly.content == page.plotly_js().read_bytes()
    assert plotly.content.startswith(b"/**\n* plotly.js v")
    zipped = client.get("/ops/static/ops.js", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"  # httpx has already inflated it
    assert zipped.content == (page.STATIC_DIR / "ops.js").read_bytes()
    assert gzip.decompress(page._load("ops.js").compressed) == zipped.content
    again = client.get("/ops/static/ops.js", headers={"If-None-Match": zipped.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    for name in ("page.py", "..%2Fpage.py", "ops.html", "plotly.js"):
        missing = client.get(f"/ops/static/{name}")
        assert missing.status_code == 404, name
        assert missing.headers["content-type"] == problems.PROBLEM_JSON


@pytest.mark.parametrize(
    "body",
    [
        {"grant_type": "password", "username": "ops", "password": "x"},
        {"grant_type": "client_credentials"},
        {"grant_type": "authorization_code", "code": "c", "redirect_uri": "http://127.0.0.1/ops"},
        {"grant_type": "authorization_code", "code": "c", "code_verifier": "short",
         "redirect_uri": "http://127.0.0.1/ops"},
        {"grant_type": "refresh_token"},
        {"grant_type": "refresh_token", "refresh_token": "r", "client_secret": "s"},
        {"grant_type": "refresh_token", "refresh_token": "r" * (page.TOKEN_TEXT_LENGTH_MAX + 1)},
    ],
)  # fmt: skip
def test_the_token_relay_refuses_other_grants_and_bad_fields(
    client: TestClient, body: dict[str, str]
) -> None:
    """Refused before the identity provider is asked (it is unreachable here: a 503 would
    mean the relay forwarded it)."""
    answer = client.post("/ops/token", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "validation_error"


def test_the_token_relay_refuses_a_long_body_unread(client: TestClient) -> None:
    body = b'{"grant_type": "refresh_token", "refresh_token": "' + b"r" * 30_000 + b'"}'
    answer = client.post("/ops/token", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413, answer.text


def test_a_well_formed_token_request_goes_to_the_provider(client: TestClient) -> None:
    body = {"grant_type": "authorization_code", "code": "c", "code_verifier": VERIFIER,
            "redirect_uri": "http://127.0.0.1:8050/ops"}  # fmt: skip
    answer = client.post("/ops/token", json=body)
    assert answer.status_code == 503 and answer.json()["code"] == "unavailable", answer.text
    assert client.get("/ops/config.json").status_code == 503


def test_the_refresh_interval_is_bounded() -> None:
    for refresh_s in (0.5, 3601.0):
        with pytest.raises(ValueError):
            page.install(
                FastAPI(), page.PageOptions(issuer=UNREACHABLE_ISSUER, refresh_s=refresh_s)
            )


def _realm() -> Any:
    return json.loads(keycloak.realm_file().read_text())


def test_the_realm_has_a_public_pkce_client_for_the_page_and_no_people() -> None:
    realm = _realm()
    clients = {c["clientId"]: c for c in realm["clients"]}
    ops = clients[page.CLIENT_ID]
    assert ops["publicClient"] is True and ops["standardFlowEnabled"] is True
    assert not any(ops[f] for f in ("directAccessGrantsEnabled", "implicitFlowEnabled",
                                    "serviceAccountsEnabled"))  # fmt: skip
    assert ops["attributes"]["pkce.code.challenge.method"] == "S256"
    assert ops["redirectUris"] == ["http://127.0.0.1/ops", "http://localhost/ops"]  # any port
    assert ops["webOrigins"] == []  # codes are redeemed through the page's own origin
    assert {"paystream-api", "ops:read"} <= set(ops["defaultClientScopes"])
    mapping = realm["scopeMappings"]
    assert {"clientScope": "ops:read", "roles": [keycloak.OPS_ROLE]} in mapping
    text = keycloak.realm_file().read_text()
    assert '"credentials"' not in text and '"password"' not in text  # no default secrets
    people = [u for u in realm["users"] if "serviceAccountClientId" not in u]
    assert people == []


def test_the_ops_password_is_made_per_home_and_added_to_an_older_secrets_file(
    tmp_path: Path,
) -> None:
    fresh = KeycloakServer(home=tmp_path / "fresh", port=18080)
    username, password = fresh.ops_login()
    assert username == keycloak.OPS_USER and len(password) >= 20
    assert fresh.ops_login() == (username, password)
    assert stat.S_IMODE(os.stat(fresh.secrets_file).st_mode) == 0o600
    assert KeycloakServer(home=tmp_path / "other", port=18080).ops_login()[1] != password
    older = KeycloakServer(home=tmp_path / "older", port=18080)
    older.home.mkdir()
    before = {"admin_password": "kept", "clients": {"ops-console": "kept too"}}
    older.secrets_file.write_text(json.dumps(before))
    older.secrets_file.chmod(0o600)
    _, added = older.ops_login()
    stored = json.loads(older.secrets_file.read_text())
    assert stored == {**before, "users": {keycloak.OPS_USER: added}}
    assert stat.S_IMODE(os.stat(older.secrets_file).st_mode) == 0o600
