"""Webhooks (AtlasPay F-003): the first attempt's latency from the state change (the seed's
"within 30 seconds": its P95) and the delivery rate (the seed's 99 %), through every real part.

The platform is real and on this machine, each part a process of its own: a Kafka broker,
the embedded Postgres, Keycloak, two workers and one Postgres sink
(``paystream.runner.running``), one API process (``bench.api_latency.ApiProcess``) and
``--copies`` of ``paystream webhooks``. The partner ``demo-1`` has one endpoint: a receiver
in this process (:mod:`paystream.webhooks.receiver`) that verifies every signature with the
``standardwebhooks`` library, deduplicates by ``webhook-id``, answers after
``--receiver-delay-ms`` and fails ``--fail-rate`` of the requests with a 500 (seeded).

Load: ``--accounts`` funded accounts (their deposits are webhooks too; not measured), then
transfers offered open loop at ``--rate``/s for ``--duration-s`` s through
``POST /v1/payments`` (no ``Prefer``). Each transfer ends in one event a partner hears of
(``payment.completed``, or ``payment.rejected``): one delivery. Then until every measured
delivery is delivered or dead (the retry schedule ``--retry-delays-s``: seconds here, not
Svix's 28 hours, so that failures end within the run).

Figures, exact, from Postgres and the receiver:

- **first attempt**: ``first_attempt_at - event_at`` per delivery. The event's time is the
  transfer's command time, minted by the API: the ledger's two saga steps on Kafka, the
  service's ingestion and the dispatcher's claim are all inside it. P50/P95/P99/max, and
  split at ``recorded_at`` (the delivery row's commit): event -> recorded (the ledger and
  ingestion), recorded -> first attempt (the dispatcher).
- **heard**: the receiver's first verified 2xx for a delivery minus ``occurred_at_ms``: what
  the partner sees (retries after a failure included).
- **delivery rate**: delivered / (delivered + dead); attempts per delivery; requests the
  receiver dropped as repeats; each request's time to its answer; deliveries/s while the
  load ran. (The receiver shares this process with the load generator: under load its
  answers slow down, and each endpoint has at most ``webhook_endpoint_concurrency_max``
  requests in flight, so a slow answer queues the endpoint's next deliveries.)
- **metrics**: the service's own counters and its first-attempt histogram, scraped from its
  ``/metrics`` (``paystream_webhooks_*``), to show what Grafana would.

    .venv/bin/python -m bench.webhooks [--rate 50] [--duration-s 30] [--accounts 64]
        [--fail-rate 0.05] [--receiver-delay-ms 20] [--copies 1] [--retry-delays-s 1 2 4]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.api_latency import ApiProcess, identity_provider, open_accounts, token
from bench.consistency import (
    dsn_of,
    fresh_database,
    machine_facts,
    services,
    summary_ms,
    wait_migrated,
)
from paystream.agents.supervisor import WorkerGroup
from paystream.audit import db
from paystream.partners.registry import Partner, add
from paystream.runner import child_env, running
from paystream.services.process import free_port, wait_until
from paystream.settings import Settings
from paystream.webhooks.receiver import Plan, ReceiverServer, serving

RESULTS = Path(__file__).parent / "results" / "webhooks.json"
WORKERS = 2
SINKS = 1
PARTNER = "demo-1"
PARTNER_CLIENT = "partner-demo-1"
RATE = 50.0
DURATION_S = 30.0
ACCOUNTS = 64
FAIL_RATE = 0.05
RECEIVER_DELAY_MS = 20
COPIES = 1
RETRY_DELAYS_S = (1.0, 2.0, 4.0)
AMOUNT_MINOR = 100
REQUEST_TIMEOUT_S = 60.0
CONNECTIONS_MAX = 200
SETTLE_MARGIN_S = 120.0
POLL_S = 0.5
SEED = 7
SCRAPED = (
    "paystream_webhooks_finished_total",
    "paystream_webhooks_attempts_total",
    "paystream_webhooks_first_attempt_seconds_bucket",
)


def run(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    with services(None, work_dir) as (bootstrap, postgres), identity_provider(work_dir) as kc:
        tag = uuid.uuid4().hex[:8]
        settings = Settings(
            environment="test", kafka_bootstrap=bootstrap, kafka_security="plaintext",
            webhook_retry_delays_s=tuple(args.retry_delays_s),
        ).model_copy(
            update={
                "topic_prefix": f"bench-webhooks-{tag}",
                "data_dir": work_dir / tag,
                "postgres_dsn": fresh_database(postgres.dsn(), f"bench_webhooks_{tag}"),
            }
        )  # fmt: skip
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings_file = settings.data_dir / "settings.json"
        settings_file.write_text(settings.model_dump_json())
        logs = settings.data_dir / "logs"
        found: dict[str, Any] = {"machine": machine_facts(postgres.dsn())}
        plan = Plan(fail_rate=args.fail_rate, delay_s=args.receiver_delay_ms / 1000, seed=SEED)
        with (
            running(settings, workers=WORKERS, log_dir=logs, sinks=SINKS) as platform,
            serving("whsec_placeholder", plan) as receiver,
        ):
            dsn = dsn_of(platform)
            wait_migrated(dsn)
            receiver.secret = register(dsn, receiver.url)
            metrics_port = free_port()
            env = child_env(settings, log_level="warn") | webhook_env(settings, dsn)
            with (
                delivery_service(env, logs, args.copies, metrics_port),
                ApiProcess(settings_file, kc.issuer, logs / "api-1.log") as api,
            ):
                found |= measure(args, api.url, token(kc, PARTNER_CLIENT), dsn, receiver)
                found["metrics"] = scrape(metrics_port)
    return found


def register(dsn: str, url: str) -> str:
    """``demo-1`` onboarded with one endpoint to ``url``; the endpoint's secret."""
    partner = Partner(
        partner_id=PARTNER, name="Demo partner 1", contact_email="ops@demo-1.example",
        kafka_principal=f"User:{PARTNER}", keycloak_client_id=PARTNER_CLIENT, status="active",
        created_at=datetime.datetime.now(datetime.UTC), secret_rotated_at=None,
    )  # fmt: skip
    with db.connect(dsn, autocommit=True) as conn:
        endpoint = add(conn, partner, webhook_url=url)
    if endpoint is None:
        raise RuntimeError("no endpoint recorded")
    return endpoint.secret


def webhook_env(settings: Settings, dsn: str) -> dict[str, str]:
    return {
        "PAYSTREAM_ENVIRONMENT": "test",
        "PAYSTREAM_POSTGRES_DSN": dsn,
        "PAYSTREAM_WEBHOOK_RETRY_DELAYS_S": json.dumps(list(settings.webhook_retry_delays_s)),
    }


def delivery_service(env: dict[str, str], logs: Path, copies: int, port: int) -> WorkerGroup:
    """``webhooks-1..n``; the first serves its metrics on ``port`` (the copies share the
    multiprocess directory of their own names, so each copy's are its own)."""
    cli = (sys.executable, "-m", "paystream.cli", "webhooks")

    def command(name: str) -> tuple[str, ...]:
        served = str(port) if name.endswith("-1") else "0"
        return (*cli, "--name", name, "--metrics-port", served)

    return WorkerGroup(count=copies, env=env, log_dir=logs, prefix="webhooks", command=command)


def measure(
    args: argparse.Namespace, url: str, bearer: str, dsn: str, receiver: ReceiverServer
) -> dict[str, Any]:
    accounts = asyncio.run(open_accounts(url, bearer, args.accounts))
    started = time.monotonic()
    ids, statuses = asyncio.run(offer(url, bearer, accounts, args))
    offered_s = time.monotonic() - started
    settle_s = sum(args.retry_delays_s) * 1.2 + SETTLE_MARGIN_S
    if not wait_until(lambda: finished(dsn, ids) == len(ids), timeout_s=settle_s):
        raise RuntimeError(f"{len(ids) - finished(dsn, ids)} deliveries unfinished in {settle_s} s")
    ended_s = time.monotonic() - started
    return {
        "load": {"rate_per_s": args.rate, "duration_s": args.duration_s, "offered_s": offered_s,
                 "payments": len(ids), "answers": dict(statuses), "copies": args.copies,
                 "fail_rate": args.fail_rate, "receiver_delay_ms": args.receiver_delay_ms,
                 "retry_delays_s": list(args.retry_delays_s)},
        "deliveries": deliveries(dsn, ids, ended_s),
        "heard_ms": heard(receiver, dsn, ids),
        "receiver": {"requests": len(receiver.requests()), "repeats_dropped": receiver.duplicates,
                     "signature_failures": sum(r.status == 400 for r in receiver.requests())},
    }  # fmt: skip


async def offer(
    url: str, bearer: str, accounts: Sequence[str], args: argparse.Namespace
) -> tuple[list[str], Counter[str]]:
    """Transfers at ``rate``/s, open loop; the payment ids answered 202, and every status."""
    rng = random.Random(SEED)
    count = int(args.rate * args.duration_s)
    pairs = [tuple(rng.sample(list(accounts), 2)) for _ in range(count)]
    ids: list[str] = []
    statuses: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {bearer}"}
    limits = httpx.Limits(max_connections=CONNECTIONS_MAX)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=REQUEST_TIMEOUT_S) as http:
        start = time.monotonic() + 0.5

        async def shot(i: int) -> None:
            await asyncio.sleep(max(0.0, start + i / args.rate - time.monotonic()))
            source, target = pairs[i]
            body = {"from_account": source, "to_account": target, "amount_minor": AMOUNT_MINOR,
                    "currency": "EUR"}  # fmt: skip
            try:
                answer = await http.post(
                    f"{url}/v1/payments", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
                )
                statuses[str(answer.status_code)] += 1
                if answer.status_code in (201, 202):
                    ids.append(str(answer.json()["payment_id"]))
            except httpx.HTTPError as error:
                statuses[type(error).__name__] += 1

        await asyncio.gather(*(shot(i) for i in range(count)))
    return ids, statuses


def finished(dsn: str, ids: list[str]) -> int:
    with db.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM webhook_deliveries WHERE payment_id = ANY(%s)"
            " AND status <> 'pending'",
            (ids,),
        ).fetchone()
    return int(row[0]) if row else 0


def deliveries(dsn: str, ids: list[str], ended_s: float) -> dict[str, Any]:
    with db.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status, attempts, extract(epoch FROM first_attempt_at - event_at) * 1000,"
            " extract(epoch FROM recorded_at - event_at) * 1000,"
            " extract(epoch FROM first_attempt_at - recorded_at) * 1000"
            " FROM webhook_deliveries WHERE payment_id = ANY(%s)",
            (ids,),
        ).fetchall()
    status = Counter(row[0] for row in rows)
    done = status["delivered"] + status["dead"]
    return {
        "count": len(rows),
        "status": dict(status),
        "delivery_rate": status["delivered"] / done if done else float("nan"),
        "attempts": dict(sorted(Counter(row[1] for row in rows).items())),
        "first_attempt_ms": summary_ms([float(row[2]) for row in rows if row[2] is not None]),
        "stages_ms": {
            "event_to_recorded": summary_ms([float(row[3]) for row in rows]),
            "recorded_to_first_attempt": summary_ms(
                [float(row[4]) for row in rows if row[4] is not None]
            ),
        },
        "request_ms": summary_ms(request_ms(dsn, ids)),
        "deliveries_per_s": len(rows) / ended_s if ended_s else float("nan"),
    }


def request_ms(dsn: str, ids: list[str]) -> list[float]:
    """Each request's time to the receiver's answer (attempts that sent nothing left out)."""
    with db.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.duration_ms FROM webhook_attempts a JOIN webhook_deliveries d"
            " USING (delivery_id) WHERE d.payment_id = ANY(%s) AND a.outcome <> 'circuit_open'",
            (ids,),
        ).fetchall()
    return [float(ms) for (ms,) in rows]


def heard(receiver: ReceiverServer, dsn: str, ids: list[str]) -> dict[str, float]:
    """From the state change to the partner's first verified 2xx, per measured delivery."""
    wanted = set(ids)
    seen = receiver.first_seen_s()
    latencies = [
        seen[webhook_id] * 1000 - event["data"]["occurred_at_ms"]
        for webhook_id, event in receiver.events().items()
        if event["data"]["id"] in wanted and webhook_id in seen
    ]
    return summary_ms(latencies)


def scrape(port: int) -> dict[str, Any]:
    """The service's counters and first-attempt histogram as Prometheus reads them."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0).text
    picked: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith(SCRAPED):
            name, _, value = line.rpartition(" ")
            picked[name] = float(value)
    return picked


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.webhooks", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=RATE)
    parser.add_argument("--duration-s", type=float, default=DURATION_S)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--fail-rate", type=float, default=FAIL_RATE)
    parser.add_argument("--receiver-delay-ms", type=int, default=RECEIVER_DELAY_MS)
    parser.add_argument("--copies", type=int, default=COPIES)
    parser.add_argument("--retry-delays-s", type=float, nargs="+", default=list(RETRY_DELAYS_S))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        results = run(args, Path(tmp))
    results["command"] = "python -m bench.webhooks " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"written {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
