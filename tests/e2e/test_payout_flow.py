"""Payouts end to end through every real part (issue 19): batches through the REST API,
screening on the workers, reviews with a compliance officer's Keycloak token, the rail
connector sending pain.001 to the bank-rail simulator over HTTP (failures by reason code,
transient 500s, answers lost after the bank took the instruction, rate-limit episodes, an
outage), the worker and the connector SIGKILLed at random moments. Afterwards every payout
is Settled or Failed exactly once, the bank was never asked to pay one end-to-end id twice
with different content, what was reserved was posted or voided, and replay matches.

Bounded for ``make test`` (``BATCHES`` x ``PER_BATCH`` payouts, a short outage). The seed's
full run is this test with its sizes from the environment (docs/benchmarks.md, "Payouts")::

    PAYSTREAM_PAYOUT_FLOW_BATCHES=200 PAYSTREAM_PAYOUT_FLOW_PER_BATCH=50 \
    PAYSTREAM_PAYOUT_FLOW_OUTAGE_S=30 .venv/bin/python -m pytest -s tests/e2e/test_payout_flow.py
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from paystream.agents.supervisor import WorkerGroup
from paystream.api.app import create_app
from paystream.ledger.screening import CurrencyLimits, ScreeningRules
from paystream.payouts.screening import publish_rules
from paystream.rail.simulator import SimulatorConfig
from paystream.rail.simulator import create_app as simulator_app
from paystream.runner import Platform, child_env
from paystream.services.keycloak import KeycloakServer
from paystream.services.process import free_port, wait_until
from paystream.settings import Settings
from tests.e2e.harness import assert_ledger_exactly_once, assert_replay_matches, platform
from tests.e2e.test_api_commands import get, key, open_funded, post
from tests.support.api import serving
from tests.support.keycloak import client_token

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCHES = int(os.environ.get("PAYSTREAM_PAYOUT_FLOW_BATCHES", "16"))
PER_BATCH = int(os.environ.get("PAYSTREAM_PAYOUT_FLOW_PER_BATCH", "25"))
SOURCES = max(8, BATCHES * PER_BATCH // 500)
"""At most about 500 payouts per source: a source's screening profile keeps its last 1,000
(``screening.RECENT_PAYOUTS_MAX``) and holds beyond them, which is not what this run tests."""
FUNDS_MINOR = max(10_000_000, 5_000 * BATCHES * PER_BATCH)
"""Enough that no payout fails for funds (the flagged ones fall on two of the sources)."""
THRESHOLD_MINOR = 50_000
FLAGGED_EVERY = 20  # 5 % of payouts above the threshold: held for review
KILLS_MIN = 5
OUTAGE_S = int(os.environ.get("PAYSTREAM_PAYOUT_FLOW_OUTAGE_S", "4"))
SETTLE_TIMEOUT_S = 420.0 + BATCHES * PER_BATCH * 0.2
SUBMIT_THREADS = min(BATCHES, 16)
"""Batches in flight at once: one API process answers about 160 payouts/s here, so 200
batches of 50 at once would each wait over a minute (clients gave up at 60 s)."""
ENDS = ("Settled", "Failed")
SUBMIT_TRIES_MAX = 5
SEED = 19
RULES = ScreeningRules(limits=(CurrencyLimits(currency="EUR", amount_max_minor=THRESHOLD_MINOR),))


@pytest.fixture(scope="module")
def rail_sim() -> Iterator[tuple[str, SimulatorConfig]]:
    config = SimulatorConfig(
        seed=SEED, settle_after_ms=100, failure_rates={"AC04": 0.02, "AM04": 0.01},
        error_rate=0.02, lost_response_rate=0.02,
    )  # fmt: skip
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(simulator_app(config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="rail-sim", daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, timeout_s=30.0)
    try:
        yield f"http://127.0.0.1:{port}", config
    finally:
        server.should_exit = True
        thread.join(30.0)


def rail_group(p: Platform, url: str, log_dir: Path) -> WorkerGroup:
    """One ``paystream rail`` process (SIGKILL-able, restarted by ``restart_dead``)."""
    env = child_env(p.settings, log_level="info")
    cli = (sys.executable, "-m", "paystream.cli")
    return WorkerGroup(
        count=1, env=env, log_dir=log_dir, prefix="rail",
        command=lambda name: (*cli, "rail", "--url", url, "--name", name, "--metrics-port", "0"),
    )  # fmt: skip


def amount(n: int) -> int:
    return THRESHOLD_MINOR + 1 + n if n % FLAGGED_EVERY == 7 else 100 + (n * 37) % 5_000


def batch_body(sources: list[str], b: int) -> dict[str, Any]:
    payouts = []
    for i in range(PER_BATCH):
        n = b * PER_BATCH + i
        payouts.append({
            "source_account": sources[n % len(sources)], "amount_minor": amount(n),
            "currency": "EUR", "reference": f"batch {b} line {i}",
            "beneficiary": {"name": f"Seller {n % 97}", "iban": "DE89370400440532013000"},
        })  # fmt: skip
    return {"payouts": payouts}


class Chaos:
    """Kills the workers and the connector at random moments; an outage and a rate-limit
    episode at the bank."""

    def __init__(self, p: Platform, rail: WorkerGroup, sim_url: str) -> None:
        self.p, self.rail, self.sim_url = p, rail, sim_url
        self.kills: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        self.random = random.Random(SEED)

    def _run(self) -> None:
        step = 0
        while not self.stopping.wait(self.random.uniform(3.0, 6.0)):
            step += 1
            if step == 3:
                httpx.post(f"{self.sim_url}/admin/outage", json={"seconds": OUTAGE_S})
            if step == 5:
                httpx.post(f"{self.sim_url}/admin/rate-limit",
                           json={"rate_per_s": 20, "burst": 5, "seconds": 3})  # fmt: skip
            if self.kills["worker"] < KILLS_MIN or self.random.random() < 0.3:
                self.random.choice(self.p.workers.workers).kill()
                self.kills["worker"] += 1
            if self.kills["rail"] < KILLS_MIN or self.random.random() < 0.3:
                self.rail.workers[0].kill()
                self.kills["rail"] += 1
            self.restart()

    def restart(self) -> None:
        self.p.workers.restart_dead()
        self.rail.restart_dead()


def submit(api: str, token: str, body: dict[str, Any]) -> httpx.Response:
    """POST a batch as a careful client does: a timeout is retried with the same key and
    body, which answers with the same payouts (the worker's idempotency, not the client's)."""
    batch_key = key()
    for _ in range(SUBMIT_TRIES_MAX - 1):
        try:
            return post(api, "/v1/payout-batches", token, body, key=batch_key)
        except httpx.TransportError:
            continue
    return post(api, "/v1/payout-batches", token, body, key=batch_key)


def review(api: str, officer: str, decided: dict[str, str]) -> None:
    """Decide every held payout: approve half, reject a quarter, reject then override."""
    page = get(api, "/v1/reviews?status=open&limit=200", officer)
    if page.status_code != 200:
        return
    for item in page.json()["items"]:
        payout_id = item["payout_id"]
        if payout_id in decided:
            continue
        turn = len(decided) % 4
        steps = [("approve", None)] if turn < 2 else [("reject", "no documents")]
        if turn == 3:
            steps.append(("override", "documents arrived"))
        for decision, reason in steps:
            body = {"decision": decision} | ({} if reason is None else {"reason": reason})
            post(api, f"/v1/reviews/{payout_id}/decision", officer, body, key=key())
        decided[payout_id] = steps[-1][0]


def ended(dsn: str, ids: set[str]) -> dict[str, tuple[str, str | None]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT payout_id, status, code FROM payouts WHERE payout_id = ANY(%s)", (list(ids),)
        ).fetchall()
    return {payout_id: (status, code) for payout_id, status, code in rows}


def test_batches_reviews_rail_faults_and_kills_end_every_payout_once(
    settings: Settings,
    postgres_server_dsn: str,
    keycloak: KeycloakServer,
    rail_sim: tuple[str, SimulatorConfig],
    tmp_path: Path,
) -> None:
    sim_url, _ = rail_sim
    name = f"payout_flow_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(postgres_server_dsn, dbname=name)
    base = settings.model_copy(update={"postgres_dsn": dsn})
    partner = client_token(keycloak, "partner-demo-1")
    with (
        platform(base, tmp_path, workers=2, sinks=1) as p,
        serving(create_app(p.settings, issuer=keycloak.issuer, dsn=dsn)) as api,
        rail_group(p, sim_url, tmp_path / "logs") as rail,
    ):
        assert publish_rules(
            p.settings,
            ScreeningRules(
                limits=(CurrencyLimits(currency="EUR", amount_max_minor=THRESHOLD_MINOR),)
            ),
        ).ok
        sources = [open_funded(api, partner, FUNDS_MINOR) for _ in range(SOURCES)]
        chaos = Chaos(p, rail, sim_url)
        chaos.thread.start()
        with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
            answers = list(pool.map(lambda b: submit(api, partner, batch_body(sources, b)),
                                    range(BATCHES)))  # fmt: skip
        assert all(a.status_code in (201, 202) for a in answers), [a.text for a in answers[:3]]
        ids = {payout["payout_id"] for a in answers for payout in a.json()["payouts"]}
        assert len(ids) == BATCHES * PER_BATCH
        decided: dict[str, str] = {}
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        states: dict[str, tuple[str, str | None]] = {}
        while time.monotonic() < deadline:
            review(api, client_token(keycloak, "compliance-officer"), decided)  # tokens last 5 min
            states = ended(dsn, ids)
            if len(states) == len(ids) and all(
                s in ("Settled", "Failed") for s, _ in states.values()
            ):
                break
            if chaos.kills["worker"] >= KILLS_MIN and chaos.kills["rail"] >= KILLS_MIN:
                chaos.stopping.set()
            chaos.restart()
            time.sleep(1.0)
        chaos.stopping.set()
        chaos.thread.join(30.0)
        chaos.restart()
        left = Counter(s for s, _ in states.values())
        assert left.keys() <= {"Settled", "Failed"} and len(states) == len(ids), (left, p.logs())
        assert chaos.kills["worker"] >= KILLS_MIN and chaos.kills["rail"] >= KILLS_MIN
        report = httpx.get(f"{sim_url}/v1/report").json()
        assert report["conflicts"] == [] and report["conflict_count"] == 0
        failures = Counter(code for s, code in states.values() if s == "Failed")
        settled = [i for i, (s, _) in states.items() if s == "Settled"]
        assert failures["bank_rejected"] > 0 and failures["review_rejected"] > 0, failures
        assert set(failures) <= {"bank_rejected", "review_rejected"}, failures
        assert report["by_status"].get("ACSC", 0) >= len(settled)
        ledger = assert_ledger_exactly_once(p)  # nothing pending: reserved = posted + voided
        while p.watcher.poll():  # every event copy, for replay to match against
            pass
        assert_replay_matches(p, ledger)
        with psycopg.connect(dsn) as conn:
            # the bank's outcome once: settled or refused by the bank, never both, never twice
            # (a review's rejection is a Failed an override may turn around, not an outcome)
            twice = conn.execute(
                "SELECT payment_id, count(*) FROM payment_events WHERE payment_id = ANY(%s)"
                " AND (type = 'Settled' OR code = 'bank_rejected')"
                " GROUP BY payment_id HAVING count(*) > 1",
                (list(ids),),
            ).fetchall()
            assert twice == []
            p95 = conn.execute(
                "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY settled_at_ms - queued_at_ms)"
                " FROM payouts WHERE payout_id = ANY(%s) AND status = 'Settled'",
                (list(ids),),
            ).fetchone()
        print(f"payouts: {dict(left)}; failures {dict(failures)}; kills {dict(chaos.kills)};"
              f" P95 queued->settled {p95[0] if p95 else None} ms; bank {report}")  # fmt: skip
