"""The demo's payouts: screening rules on Kafka, batches through the REST API, the bank-rail
simulator paying them out through the connector, a review decision, and a few payouts left
held for the reader to decide (README, "Review a held payout").

Every step waits on what the platform says (the API's answers, then its read models), bounded
by ``SETTLE_TIMEOUT_S``; the figures are what ``make demo`` prints.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from rich.progress import Progress

from paystream.demo_api import nearest_rank
from paystream.ledger.screening import CurrencyLimits, ScreeningRules
from paystream.payouts.screening import publish_rules
from paystream.settings import Settings

BATCHES: Final = 4
PER_BATCH: Final = 25
SOURCES: Final = 4
FUNDING_MINOR: Final = 5_000_000
THRESHOLD_MINOR: Final = 250_000
"""Payouts above 2,500.00 EUR are held for review (``amount_over_threshold``)."""
FLAGGED_EVERY: Final = 20
LEFT_HELD: Final = 3
"""Held payouts the demo leaves for the reader to decide."""
SETTLE_TIMEOUT_S: Final = 180.0
HTTP_TIMEOUT_S: Final = 30.0
POLL_S: Final = 0.5
RULES: Final = ScreeningRules(
    limits=(CurrencyLimits(currency="EUR", amount_max_minor=THRESHOLD_MINOR),),
    blocked_countries=frozenset({"KP", "IR"}),
)
IBANS: Final = ("DE89370400440532013000", "FR1420041010050500013M02606", "GB33BUKB20201555555555")


@dataclass
class PayoutFigures:
    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    held: list[str] = field(default_factory=list)
    """Payouts left held for review."""
    approved: str | None = None
    queued_to_end_ms: list[int] = field(default_factory=list)
    ended: bool = False

    def percentile_ms(self, q: float) -> float | None:
        return nearest_rank(self.queued_to_end_ms, q) if self.queued_to_end_ms else None


def run(settings: Settings, api_url: str, partner: str, officer: str) -> PayoutFigures:
    """Rules, batches, one approval, then the settlement of every payout not left held."""
    applied = publish_rules(settings, RULES)
    if not applied.ok:
        raise RuntimeError(f"the screening rules were not taken: {applied.answers}")
    with httpx.Client(base_url=api_url, timeout=HTTP_TIMEOUT_S) as client:
        sources = [_funded(client, partner) for _ in range(SOURCES)]
        ids: list[str] = []
        batches: list[str] = []
        for b in range(BATCHES):
            answer = _post(client, partner, "/v1/payout-batches", _batch(sources, b))
            ids += [p["payout_id"] for p in answer["payouts"]]
            batches.append(answer["batch_id"])
        figures = PayoutFigures()
        held = _wait_held(client, partner, batches, len(ids))
        if held:
            figures.approved = held[0]
            _post(client, officer, f"/v1/reviews/{held[0]}/decision", {"decision": "approve"})
        figures.held = held[1:]
        _wait_ended(client, partner, batches, set(figures.held), figures)
    return figures


def _batch(sources: list[str], b: int) -> dict[str, Any]:
    payouts = []
    for i in range(PER_BATCH):
        n = b * PER_BATCH + i
        amount = THRESHOLD_MINOR + 1_000 * n if n % FLAGGED_EVERY == 3 else 1_000 + 997 * n % 90_000
        payouts.append({
            "source_account": sources[n % len(sources)], "amount_minor": amount,
            "currency": "EUR", "reference": f"seller payout {b}-{i}",
            "beneficiary": {"name": f"Seller {n}", "iban": IBANS[n % len(IBANS)]},
        })  # fmt: skip
    return {"payouts": payouts}


def _funded(client: httpx.Client, token: str) -> str:
    opened = _post(client, token, "/v1/accounts", {"currency": "EUR"})
    account_id = str(opened["account_id"])
    body = {"account_id": account_id, "amount_minor": FUNDING_MINOR, "currency": "EUR"}
    _post(client, token, "/v1/deposits", body)
    return account_id


def _post(client: httpx.Client, token: str, path: str, body: dict[str, Any]) -> Any:
    headers = {
        "Authorization": f"Bearer {token}", "Idempotency-Key": f"demo-{uuid.uuid4().hex}",
        "Prefer": "wait=20",
    }  # fmt: skip
    answer = client.post(path, json=body, headers=headers)
    if answer.status_code not in (200, 201, 202):
        raise RuntimeError(f"POST {path}: {answer.status_code} {answer.text[:300]}")
    return answer.json()


def _payouts(client: httpx.Client, token: str, batches: list[str]) -> list[dict[str, Any]]:
    """Every payout of ``batches`` the read models show (``GET /v1/payout-batches/{id}``)."""
    found = []
    for batch_id in batches:
        answer = client.get(
            f"/v1/payout-batches/{batch_id}", headers={"Authorization": f"Bearer {token}"}
        )
        if answer.status_code == 200:
            found += answer.json()["payouts"]
    return found


def _wait_held(client: httpx.Client, token: str, batches: list[str], count: int) -> list[str]:
    """The held payouts, once the read models show every payout screened."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        shown = _payouts(client, token, batches)
        if len(shown) == count and all(p["status"] != "pending" for p in shown):
            return [p["payout_id"] for p in shown if p["status"] == "held"]
        time.sleep(POLL_S)
    return []


def _wait_ended(
    client: httpx.Client, token: str, batches: list[str], held: set[str], figures: PayoutFigures
) -> None:
    """Until every payout not left held is settled or failed (a progress bar meanwhile)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    shown: list[dict[str, Any]] = []
    with Progress(transient=True) as progress:
        bar = progress.add_task("payouts settled or failed by the bank", total=None)
        while time.monotonic() < deadline:
            shown = _payouts(client, token, batches)
            wanted = [p for p in shown if p["payout_id"] not in held]
            done = [p for p in wanted if p["status"] in ("settled", "failed")]
            progress.update(bar, completed=len(done), total=len(wanted))
            if wanted and len(done) == len(wanted):
                figures.ended = True
                break
            time.sleep(POLL_S)
    figures.statuses = Counter(p["status"] for p in shown)
    figures.codes = Counter(p["code"] for p in shown if p["code"])
    figures.queued_to_end_ms = [
        (p["settled_at_ms"] or p["failed_at_ms"]) - p["queued_at_ms"]
        for p in shown
        if p["queued_at_ms"] and (p["settled_at_ms"] or p["failed_at_ms"])
    ]
