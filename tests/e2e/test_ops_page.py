"""The ops page in Debian's headless Chromium, on a small real platform run.

A person signs in at Keycloak's own login page (authorization code + PKCE S256), the page
draws every chart from the analytics process's data, a date range changes the numbers to
what the JSON endpoints answer for that range, the access token is renewed in place, and
when the process serves without its sink while traffic goes on, the stale banner shows.
Screenshots go to ``test-artifacts/ops-page/<run>/`` (ignored by git; the path is printed).
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from paystream import workload
from paystream.analytics.page import CLIENT_ID
from paystream.money import format_money
from paystream.runner import TRAFFIC_TIMEOUT_S, Platform
from paystream.services.keycloak import REALM, KeycloakServer
from paystream.settings import Settings
from paystream.topology.topics import analytics_group
from tests.e2e.harness import platform, setup_or_fail
from tests.support.analytics import AnalyticsProcess, analytics_env
from tests.support.browser import chromium, console
from tests.support.keycloak import client_token

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EARLY = workload.Mix(accounts=12, transfers=200, closing_accounts=2, hostile_rate=0.05)
LATE = workload.Mix(accounts=12, transfers=120, closing_accounts=2, hostile_rate=0.05)
MORE = workload.Mix(accounts=6, transfers=0, closing_accounts=0, racing_transfers=0)
TRAFFIC_PER_S = 200
GAP_MS = 4_000
"""Between the early and the late workload's command time: a range can hold one of them."""
REFRESH_S = 2
TOKEN_LIFESPAN_S = 20
"""The page's access tokens in this test (Keycloak's default is 300 s): renewed within it."""
CATCH_UP_TIMEOUT_S = 180.0
PAGE_TIMEOUT_S = 60.0
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ops-page"
CHART_IDS = (
    "funnel-series", "funnel-totals", "latency", "consistency-time", "consistency", "dlq-depth",
    "lag-logs", "lag-groups",
)  # fmt: skip
KPIS = ("requested", "debited", "completed", "reversed", "rejected", "duplicates")


def test_the_ops_page_signs_in_draws_filters_and_warns_when_stale(
    settings: Settings, tmp_path: Path, keycloak: KeycloakServer, capsys: pytest.CaptureFixture[str]
) -> None:
    shots = _artifacts(capsys)
    username, password = keycloak.ops_login()
    ops_token = client_token(keycloak, "ops-console")
    with platform(settings, tmp_path, workers=1) as running:
        env = analytics_env(running, keycloak.issuer, tmp_path / "clickhouse")
        analytics = AnalyticsProcess(env, log_file=tmp_path / "analytics.log",
                                     extra=("--refresh-s", str(REFRESH_S)))  # fmt: skip
        analytics.start()
        serving = [analytics]
        try:
            early_ms = _traffic(running, seed=161, mix=EARLY)
            _sleep_until_ms(early_ms + GAP_MS)
            _traffic(running, seed=162, mix=LATE)
            analytics.wait_caught_up(
                ops_token, analytics_group(running.settings), timeout_s=CATCH_UP_TIMEOUT_S
            )
            with _short_tokens(keycloak), chromium(tmp_path / "chromium") as browser:
                _sign_in(browser, analytics.url, keycloak.issuer, username, password)
                _check_drawn(browser, analytics, ops_token, shots)
                _check_range(browser, analytics, ops_token, early_ms, shots)
                _check_renewed(browser, analytics.url)
                assert analytics.stop() == 0, analytics.log()
                serving.append(_serve_only(env, analytics, tmp_path / "analytics-2.log"))
                setup_or_fail(running, _load(seed=163, mix=MORE))  # traffic nobody stores
                _check_stale(browser, shots)
                _check_sign_out(browser, analytics.url)
        finally:
            codes = [process.stop() for process in serving]
        assert codes == [0] * len(serving), "".join(p.log() for p in serving)


def test_the_json_endpoints_refuse_no_token_and_tokens_without_ops_read(
    kafka_bootstrap: str, tmp_path: Path, keycloak: KeycloakServer
) -> None:
    env = {
        **os.environ, "PAYSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "PAYSTREAM_KAFKA_SECURITY": "plaintext",
        "PAYSTREAM_DATA_DIR": str(tmp_path / "data"), "PAYSTREAM_OIDC_ISSUER": keycloak.issuer,
        "PAYSTREAM_CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
        "PAYSTREAM_TOPIC_PREFIX": f"ops-auth-{uuid.uuid4().hex[:8]}",
    }  # fmt: skip
    analytics = AnalyticsProcess(env, log_file=tmp_path / "analytics.log", extra=("--no-sink",))
    analytics.start()
    try:
        partner = client_token(keycloak, "partner-demo-1")  # the API's audience, no ops:read
        for path in ("funnel", "consistency", "latency", "dead-letters", "lag"):
            url = f"{analytics.url}/v1/analytics/{path}"
            _check_problem(httpx.get(url, timeout=30), 401, "unauthorized")
            bearer = {"Authorization": f"Bearer {partner}"}
            _check_problem(httpx.get(url, headers=bearer, timeout=30), 403, "forbidden")
        _check_person_without_role(analytics, keycloak, tmp_path)
    finally:
        code = analytics.stop()
    assert code == 0, analytics.log()


# --- the platform's side ----------------------------------------------------------------------


def _load(*, seed: int, mix: workload.Mix) -> workload.Workload:
    return workload.build(seed=seed, mix=mix, run_id=f"ops-page-{seed}",
                          now_ms=int(time.time() * 1000))  # fmt: skip


def _traffic(running: Platform, *, seed: int, mix: workload.Mix) -> int:
    """Run one workload to its last answer; its command time (every record carries it)."""
    load = _load(seed=seed, mix=mix)
    issued_ms = load.setup[0].issued_at_ms
    setup_or_fail(running, load)
    running.publish_paced(load, per_second=TRAFFIC_PER_S).join()
    left = running.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S)
    assert not left, f"{len(left)} command ids without their answers{running.logs()}"
    return issued_ms


def _sleep_until_ms(at_ms: int) -> None:
    time.sleep(max(0.0, at_ms / 1000 - time.time()))


def _serve_only(env: dict[str, str], before: AnalyticsProcess, log: Path) -> AnalyticsProcess:
    """The same store and port, without the sink, stale after 1 s (the page stays open)."""
    again = AnalyticsProcess(env, log_file=log, extra=(
        "--no-sink", "--stale-after-s", "1", "--refresh-s", str(REFRESH_S)))  # fmt: skip
    again.port, again.url = before.port, before.url
    again.start()
    return again


@contextlib.contextmanager
def _short_tokens(keycloak: KeycloakServer) -> Iterator[None]:
    """The page's client issues access tokens of TOKEN_LIFESPAN_S while the test runs."""
    base = f"{keycloak.url}/admin/realms/{REALM}/clients"
    with httpx.Client(headers={"Authorization": f"Bearer {keycloak.admin_token()}"},
                      timeout=30) as admin:  # fmt: skip
        client = admin.get(base, params={"clientId": CLIENT_ID}).json()[0]
        attributes = dict(client.get("attributes", {}))
        short = {**attributes, "access.token.lifespan": str(TOKEN_LIFESPAN_S)}
        admin.put(f"{base}/{client['id']}", json={**client, "attributes": short}).raise_for_status()
        try:
            yield
        finally:
            restored = {**attributes, "access.token.lifespan": ""}  # "": the realm's again
            admin.put(f"{base}/{client['id']}", json={**client, "attributes": restored})
            now = admin.get(f"{base}/{client['id']}").json()["attributes"]
            assert now.get("access.token.lifespan", "") == "", now


# --- the browser's side -----------------------------------------------------------------------


def _until(browser: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    try:
        return WebDriverWait(browser, PAGE_TIMEOUT_S, poll_frequency=0.25).until(condition)
    except Exception as error:
        state = _page_state(browser)
        raise AssertionError(f"{what}; at {browser.current_url}:\n{state}") from error


def _page_state(browser: WebDriver) -> str:
    texts = [f"{i}: {_text(browser, i)}"
             for i in ("banner-error", "banner-stale", "sign-in-failed", "status")]  # fmt: skip
    return "\n".join([*texts, *(str(entry) for entry in console(browser))])


def _text(browser: WebDriver, element_id: str) -> str:
    found = browser.find_elements(By.ID, element_id)
    return str(found[0].text) if found else "(absent)"


def _renders(browser: WebDriver) -> int:
    return int(browser.execute_script("return Number(document.body.dataset.renders || 0)"))


def _sign_in(browser: WebDriver, url: str, issuer: str, username: str, password: str) -> None:
    """From /ops to Keycloak's login form and back, with a PKCE S256 challenge on the way."""
    browser.get(f"{url}/ops")
    _until(browser, lambda b: b.find_elements(By.ID, "username"), "no Keycloak login form")
    asked = browser.current_url
    assert asked.startswith(issuer), asked
    for part in ("/protocol/openid-connect/auth?", f"client_id={CLIENT_ID}", "code_challenge=",
                 "code_challenge_method=S256", "response_mode=fragment", "ops%3Aread"):  # fmt: skip
        assert part in asked, (part, asked)
    browser.find_element(By.ID, "username").send_keys(username)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.ID, "kc-login").click()
    _until(browser, lambda b: _renders(b) >= 1, "the page drew nothing after signing in")
    assert browser.current_url == f"{url}/ops", browser.current_url  # no code left in it
    assert _text(browser, "who") == f"signed in as {username}"


def _chart_state(browser: WebDriver, name: str) -> dict[str, Any]:
    state: dict[str, Any] = browser.execute_script(
        """const el = document.querySelector(`[data-chart="${arguments[0]}"]`);
        const svg = el.querySelector("svg.main-svg");
        const drawn = [...el.querySelectorAll("g.trace path, g.trace text")]
          .filter((e) => (e.getAttribute("d") || e.textContent || "").length > 0).length;
        return {svg: !!svg, traces: el.querySelectorAll("g.trace").length, drawn,
                points: Number(el.dataset.points || 0),
                width: el.getBoundingClientRect().width};""",
        name,
    )
    return state


def _check_drawn(browser: WebDriver, analytics: AnalyticsProcess, token: str, shots: Path) -> None:
    """Every chart drawn with data; the numbers are the endpoints' for the page's range."""
    renders = _renders(browser)
    _until(browser, lambda b: _renders(b) > renders, "the page did not refresh on its interval")
    for name in CHART_IDS:
        state = _chart_state(browser, name)
        assert state["svg"] and state["traces"] > 0 and state["drawn"] > 0, (name, state)
        assert state["points"] > 0 and state["width"] > 100, (name, state)
    _check_numbers(browser, analytics, token)
    _check_money(browser, analytics, token)
    assert not browser.find_element(By.ID, "banner-stale").is_displayed()
    assert not browser.find_element(By.ID, "banner-error").is_displayed()
    severe = [e for e in console(browser) if e["level"] == "SEVERE"]
    assert severe == [], severe  # no CSP refusal, no failed request, no script error
    _shoot(browser, shots / "1-signed-in.png")


def _shown_range(browser: WebDriver) -> dict[str, str]:
    dataset = browser.execute_script(
        "const d = document.getElementById('dashboard').dataset;"
        " return {since: d.since, until: d.until};"
    )
    return {"since": str(dataset["since"]), "until": str(dataset["until"])}


def _kpi(browser: WebDriver, name: str) -> int:
    return int(_text(browser, f"kpi-{name}").replace(",", ""))


def _check_numbers(browser: WebDriver, analytics: AnalyticsProcess, token: str) -> dict[str, int]:
    """The KPIs are the funnel endpoint's totals for the range the page last asked about."""
    for _ in range(3):  # a refresh may land between reading the range and the numbers
        before = _renders(browser)
        shown_range = _shown_range(browser)
        shown = {name: _kpi(browser, name) for name in KPIS}
        if _renders(browser) == before:
            break
    total = analytics.get("/v1/analytics/funnel", token, **shown_range)["total"]
    assert shown == {name: total[name] for name in KPIS}, (shown_range, shown, total)
    rate = total["success_rate"]
    assert _text(browser, "kpi-success-rate") == f"{100 * rate:.2f} %"
    return shown


def _check_money(browser: WebDriver, analytics: AnalyticsProcess, token: str) -> None:
    """The consistency table shows the Int128 sums exactly, in major units, and the workers'
    accounts against the journal's projection of them."""
    currencies = analytics.get("/v1/analytics/consistency", token)["currencies"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#table-consistency tbody tr")
    shown = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    fields = ("debits_minor", "credits_minor", "difference_minor", "transit_minor")
    expected = [[c["currency"], *(format_money(int(c[f]), c["currency"]) for f in fields),
                 f"{c['accounts']:,}", format_money(int(c["projection_difference_minor"]),
                                                    c["currency"])]
                for c in currencies]  # fmt: skip
    assert shown == expected and int(currencies[0]["debits_minor"]) > 0, (shown, expected)


def _check_range(
    browser: WebDriver, analytics: AnalyticsProcess, token: str, early_ms: int, shots: Path
) -> None:
    """A range around the early workload's command time: the numbers drop to its own."""
    everything = _check_numbers(browser, analytics, token)
    since = _iso(early_ms // 1000 * 1000 - 1000)
    until = _iso(early_ms // 1000 * 1000 + 2000)
    for element_id, value in (("since", since), ("until", until)):
        field = browser.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(value)
    browser.find_element(By.ID, "apply").click()
    wanted = {"since": since.replace("Z", ".000Z"), "until": until.replace("Z", ".000Z")}
    _until(browser, lambda b: _shown_range(b) == wanted, "the page did not take the range")
    narrowed = _check_numbers(browser, analytics, token)
    assert 0 < narrowed["requested"] < everything["requested"], (narrowed, everything)
    series = _chart_state(browser, "funnel-series")
    assert series["points"] > 0, series
    _shoot(browser, shots / "2-range.png")


def _iso(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_renewed(browser: WebDriver, url: str) -> None:
    """The access token is renewed in place (refresh token), with no trip to the login."""
    first = browser.find_element(By.ID, "token-until").get_attribute("data-expires-at")
    _until(browser,
           lambda b: b.find_element(By.ID, "token-until").get_attribute("data-expires-at") != first,
           "the access token was not renewed")  # fmt: skip
    renders = _renders(browser)
    _until(browser, lambda b: _renders(b) > renders, "no refresh after the renewal")
    assert browser.current_url == f"{url}/ops"


def _check_stale(browser: WebDriver, shots: Path) -> None:
    banner = _until(browser, lambda b: _displayed(b, "banner-stale"), "no stale banner")
    assert "Stale data" in banner.text, banner.text
    _until(browser, lambda b: not _displayed(b, "banner-error"), "the page did not recover")
    _shoot(browser, shots / "3-stale.png")


def _check_sign_out(browser: WebDriver, url: str) -> None:
    """Sign out ends the Keycloak session: back on /ops, the login form asks again."""
    browser.find_element(By.ID, "sign-out").click()
    _until(browser, lambda b: b.find_elements(By.ID, "username"), "no login form after sign-out")
    back = urllib.parse.quote(f"{url}/ops", safe="")
    assert f"redirect_uri={back}" in browser.current_url, browser.current_url


def _displayed(browser: WebDriver, element_id: str) -> Any:
    element = browser.find_element(By.ID, element_id)
    return element if element.is_displayed() else False


def _check_person_without_role(
    analytics: AnalyticsProcess, keycloak: KeycloakServer, tmp_path: Path
) -> None:
    """A person of the realm without the ``ops`` role signs in, gets no ops:read: 403."""
    username, password = f"viewer-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with _person(keycloak, username, password), chromium(tmp_path / "chromium") as browser:
        browser.get(f"{analytics.url}/ops")
        _until(browser, lambda b: b.find_elements(By.ID, "username"), "no Keycloak login form")
        browser.find_element(By.ID, "username").send_keys(username)
        browser.find_element(By.ID, "password").send_keys(password)
        browser.find_element(By.ID, "kc-login").click()
        banner = _until(browser, lambda b: _displayed(b, "banner-error"), "no error shown")
        assert "403" in banner.text and "ops:read" in banner.text, banner.text


@contextlib.contextmanager
def _person(keycloak: KeycloakServer, username: str, password: str) -> Iterator[None]:
    base = f"{keycloak.url}/admin/realms/{REALM}/users"
    person = {
        "username": username, "enabled": True, "emailVerified": True, "firstName": "View",
        "lastName": "Er", "email": f"{username}@paystream.example",
        "credentials": [{"type": "password", "value": password, "temporary": False}],
    }  # fmt: skip
    with httpx.Client(headers={"Authorization": f"Bearer {keycloak.admin_token()}"},
                      timeout=30) as admin:  # fmt: skip
        created = admin.post(base, json=person)
        created.raise_for_status()
        try:
            yield
        finally:
            admin.delete(f"{base}/{created.headers['Location'].rsplit('/', 1)[-1]}")


def _check_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    assert response.json()["code"] == code, response.text
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer"), response.headers


# --- artifacts --------------------------------------------------------------------------------


def _artifacts(capsys: pytest.CaptureFixture[str]) -> Path:
    run = ARTIFACTS / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        print(f"\nops page screenshots: {run}")
    return run


def _shoot(browser: WebDriver, path: Path) -> None:
    """The whole page: the window grows to the document's height first."""
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    width = int(browser.execute_script("return window.outerWidth"))
    browser.set_window_size(width, height + 120)
    assert browser.save_screenshot(str(path)), path
