"""The demo's traffic through the REST API: accounts opened (a few given their holder's
email address, before any money moves, so the notifier emails them about every payment)
and funded, then payments, each with ``Prefer: wait`` and a client-credentials token, timed
from request to answer.

Closed loop (``CONCURRENCY`` requests in flight), so the figures are what one client with
that many connections sees, not an offered-load benchmark (``bench/api_latency.py`` is).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.progress import Progress

ACCOUNTS = 20
FUNDING_MINOR = 1_000_000
PAYMENTS = 500
CONCURRENCY = 8
AMOUNT_MAX_MINOR = 5_000
WAIT = "wait=10"
HTTP_TIMEOUT_S = 30.0
CURRENCY = "EUR"


@dataclass
class ApiFigures:
    """Latency of each payment request (ms) and the answers by status and code."""

    latencies_ms: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    contacts: dict[str, str] = field(default_factory=dict)
    """account id -> its holder's email address (``PUT /v1/accounts/{id}/contact``)."""

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile ``q`` (0..100) of the latencies."""
        return nearest_rank(self.latencies_ms, q)


def nearest_rank(values: list[float] | list[int], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..100) of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return float(ordered[int(rank) - 1])


def run(
    api_url: str, token: str, *, seed: int, payments: int = PAYMENTS,
    contact_emails: Sequence[str] = (),
) -> ApiFigures:  # fmt: skip
    """The payments; the first ``len(contact_emails)`` accounts get those addresses first."""
    if len(contact_emails) > ACCOUNTS:
        raise ValueError(f"{len(contact_emails)} addresses for {ACCOUNTS} accounts")
    return asyncio.run(_run(api_url, token, seed=seed, payments=payments, emails=contact_emails))


async def _run(
    api_url: str, token: str, *, seed: int, payments: int, emails: Sequence[str]
) -> ApiFigures:
    headers = {"Authorization": f"Bearer {token}", "Prefer": WAIT}
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=api_url, headers=headers, timeout=HTTP_TIMEOUT_S, limits=limits
    ) as client:
        accounts = await _open(client)
        contacts = await _give_contacts(client, dict(zip(accounts, emails, strict=False)))
        await _fund(client, accounts)
        rng = random.Random(seed)
        bodies = [_payment(rng, accounts) for _ in range(payments)]
        figures = await _pay(client, bodies)
        figures.contacts = contacts
        return figures


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(path, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})


async def _open(client: httpx.AsyncClient) -> list[str]:
    opened = await asyncio.gather(
        *(_post(client, "/v1/accounts", {"currency": CURRENCY}) for _ in range(ACCOUNTS))
    )
    return [_ok(answer)["account_id"] for answer in opened]


async def _give_contacts(client: httpx.AsyncClient, emails: dict[str, str]) -> dict[str, str]:
    """Each account's holder address, set by its partner (this client's token)."""
    answers = await asyncio.gather(
        *(
            client.put(f"/v1/accounts/{account}/contact", json={"email": email})
            for account, email in emails.items()
        )
    )
    for answer in answers:
        _ok(answer, status=200)
    return emails


async def _fund(client: httpx.AsyncClient, accounts: list[str]) -> None:
    funded = await asyncio.gather(
        *(
            _post(client, "/v1/deposits", {"account_id": account, "currency": CURRENCY,
                                           "amount_minor": FUNDING_MINOR})
            for account in accounts
        )
    )  # fmt: skip
    for answer in funded:
        _ok(answer)


def _ok(answer: httpx.Response, *, status: int = 201) -> dict[str, Any]:
    if answer.status_code != status:
        raise RuntimeError(f"the API answered {answer.status_code}: {answer.text}")
    body: dict[str, Any] = answer.json()
    return body


def _payment(rng: random.Random, accounts: list[str]) -> dict[str, Any]:
    source, target = rng.sample(accounts, 2)
    return {
        "from_account": source,
        "to_account": target,
        "amount_minor": rng.randint(1, AMOUNT_MAX_MINOR),
        "currency": CURRENCY,
        "reference": f"demo {rng.randrange(10**6):06d}",
    }


async def _pay(client: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> ApiFigures:
    figures = ApiFigures()
    gate = asyncio.Semaphore(CONCURRENCY)
    with Progress(transient=True) as progress:
        task = progress.add_task("payments through the API", total=len(bodies))

        async def one(body: dict[str, Any]) -> None:
            async with gate:
                started = time.perf_counter()
                answer = await _post(client, "/v1/payments", body)
                figures.latencies_ms.append((time.perf_counter() - started) * 1000)
                figures.answers[_label(answer)] += 1
                progress.advance(task)

        started = time.perf_counter()
        await asyncio.gather(*(one(body) for body in bodies))
        figures.elapsed_s = time.perf_counter() - started
    return figures


def _label(answer: httpx.Response) -> str:
    if answer.status_code in (201, 202):
        return f"{answer.status_code} {answer.json()['status']}"
    return f"{answer.status_code} {answer.json().get('code', '?')}"
