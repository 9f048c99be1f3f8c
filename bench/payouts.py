"""Payouts (issue 19): end-to-end payouts/s with the bank-rail simulator at zero latency, and
the API's latency for a 50-payout batch offered at 20 batches/s.

The platform is real and on this machine, every part in a process of its own: a Kafka
broker, the embedded Postgres, Keycloak, two workers and one Postgres sink
(``paystream.runner.running``), one API process (``bench.api_latency.ApiProcess``), the
bank-rail simulator (``paystream rail-sim --settle-after-ms 0``, no faults, no latency) and
the connector (``paystream rail``). Screening rules are set with no threshold any payout
reaches, so nothing waits for a person.

1. **Throughput.** ``--batches`` batches of ``--per-batch`` payouts, ``--concurrency`` at
   once through ``POST /v1/payout-batches`` (no ``Prefer``: 202 once each payout is
   answered), from ``ACCOUNTS`` funded accounts; then until the read models show every
   payout settled. Payouts/s is the count over the time from the first request to the last
   payout settled in Postgres: reserve, screen, SendPayout, the bank's pain.001 and pacs.002,
   SettlePayout (post, then pay out of clearing), each in the ledger and the read models.
2. **Submission latency, open loop.** Batch *i* is scheduled at ``i / rate`` s; its latency
   runs from that time to its response (waits for a connection count: coordinated omission
   is not hidden). ``--measure-s`` s after ``--warmup-s`` s of warm-up.

    .venv/bin/python -m bench.payouts [--batches 40] [--per-batch 50] [--concurrency 8]
        [--rate 2 20] [--warmup-s 5] [--measure-s 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from paystream.ledger.screening import CurrencyLimits, ScreeningRules
from paystream.payouts.screening import publish_rules
from paystream.runner import child_env, running
from paystream.services.process import free_port, wait_until
from paystream.settings import Settings

RESULTS = Path(__file__).parent / "results" / "payouts.json"
WORKERS = 2
SINKS = 1
ACCOUNTS = 64
PARTNER_CLIENT = "partner-demo-1"
BATCHES = 40
PER_BATCH = 50
CONCURRENCY = 8
RATES = (2.0, 20.0)
"""Batches/s offered: what one API process sustains, then the seed's 20/s (overload here)."""
WARMUP_S = 5.0
MEASURE_S = 20.0
REQUEST_TIMEOUT_S = 60.0
CONNECTIONS_MAX = 200
SETTLE_TIMEOUT_S = 600.0
POLL_S = 0.5
RULES = ScreeningRules(limits=(CurrencyLimits(currency="EUR", amount_max_minor=10**15),))
IBAN = "DE89370400440532013000"


def batch(accounts: Sequence[str], n: int, per_batch: int) -> dict[str, Any]:
    return {
        "payouts": [
            {"source_account": accounts[(n * per_batch + i) % len(accounts)],
             "amount_minor": 100 + i, "currency": "EUR", "reference": f"b{n}-{i}",
             "beneficiary": {"name": f"Seller {i}", "iban": IBAN}}
            for i in range(per_batch)
        ]
    }  # fmt: skip


async def post_batch(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post(
        f"{url}/v1/payout-batches", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
    )


def client(bearer: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=REQUEST_TIMEOUT_S,
        limits=httpx.Limits(max_connections=CONNECTIONS_MAX),
    )


async def throughput(
    url: str, bearer: str, accounts: Sequence[str], args: argparse.Namespace
) -> tuple[list[str], float, float]:
    """Submit the batches; (their ids, seconds to submit them all, the start time)."""
    gate = asyncio.Semaphore(args.concurrency)
    started = time.monotonic()
    async with client(bearer) as http:

        async def one(n: int) -> str:
            async with gate:
                answer = await post_batch(http, url, batch(accounts, n, args.per_batch))
                if answer.status_code not in (201, 202):
                    raise RuntimeError(f"batch {n}: {answer.status_code} {answer.text[:200]}")
                return str(answer.json()["batch_id"])

        ids = await asyncio.gather(*(one(n) for n in range(args.batches)))
    return list(ids), time.monotonic() - started, started


def wait_settled(dsn: str, batch_ids: list[str], count: int) -> tuple[float, Counter[str]]:
    """Until every payout of ``batch_ids`` is settled or failed in Postgres; when, and how."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    states: Counter[str] = Counter()
    while time.monotonic() < deadline:
        with db.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM payouts WHERE batch_id = ANY(%s) GROUP BY status",
                (batch_ids,),
            ).fetchall()
        states = Counter({status: n for status, n in rows})
        if states["Settled"] + states["Failed"] == count:
            return time.monotonic(), states
        time.sleep(POLL_S)
    raise RuntimeError(f"not every payout settled in {SETTLE_TIMEOUT_S} s: {dict(states)}")


async def open_loop(
    url: str, bearer: str, accounts: Sequence[str], args: argparse.Namespace, rate: float
) -> dict[str, Any]:
    """Batches at ``rate``/s; latency from each one's scheduled time to its response."""
    count = int((args.warmup_s + args.measure_s) * rate)
    latencies: list[tuple[float, float, str]] = []
    async with client(bearer) as http:
        start = time.monotonic() + 0.5

        async def shot(i: int) -> None:
            at = start + i / rate
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            try:
                body = batch(accounts, int(rate * 100_000) + i, args.per_batch)
                answer = await post_batch(http, url, body)
                outcome = str(answer.status_code)
            except httpx.HTTPError as error:  # counted, with its latency: nothing is hidden
                outcome = type(error).__name__
            latencies.append((at - start, (time.monotonic() - at) * 1000, outcome))

        await asyncio.gather(*(shot(i) for i in range(count)))
    measured = [ms for t, ms, _ in latencies if t >= args.warmup_s]
    return {
        "rate_batches_per_s": rate,
        "payouts_per_batch": args.per_batch,
        "measured": len(measured),
        "statuses": dict(Counter(status for _, _, status in latencies)),
        "latency_ms": summary_ms(measured),
    }


def rail_processes(env: dict[str, str], log_dir: Path, port: int) -> WorkerGroup:
    """``rail-1``: the simulator (no faults, no latency, settled at once); ``rail-2``: the
    connector."""
    cli = (sys.executable, "-m", "paystream.cli")
    url = f"http://127.0.0.1:{port}"

    def command(name: str) -> tuple[str, ...]:
        if name.endswith("-1"):
            return (*cli, "rail-sim", "--port", str(port), "--settle-after-ms", "0")
        return (*cli, "rail", "--url", url, "--name", "bench-rail", "--metrics-port", "0")

    return WorkerGroup(count=2, env=env, log_dir=log_dir, prefix="rail", command=command)


def run(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    with services(None, work_dir) as (bootstrap, postgres), identity_provider(work_dir) as kc:
        tag = uuid.uuid4().hex[:8]
        settings = Settings(
            environment="test", kafka_bootstrap=bootstrap, kafka_security="plaintext"
        ).model_copy(
            update={
                "topic_prefix": f"bench-payouts-{tag}",
                "data_dir": work_dir / tag,
                "postgres_dsn": fresh_database(postgres.dsn(), f"bench_payouts_{tag}"),
            }
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings_file = settings.data_dir / "settings.json"
        settings_file.write_text(settings.model_dump_json())
        logs = settings.data_dir / "logs"
        found: dict[str, Any] = {"machine": machine_facts(postgres.dsn())}
        with running(settings, workers=WORKERS, log_dir=logs, sinks=SINKS) as platform:
            dsn = dsn_of(platform)
            wait_migrated(dsn)
            env = child_env(settings, log_level="warn")
            port = free_port()
            with (
                rail_processes(env, logs, port),
                ApiProcess(settings_file, kc.issuer, logs / "api-1.log") as api,
            ):
                if not wait_until(lambda: _up(port), timeout_s=60.0):
                    raise RuntimeError("the rail simulator did not start")
                if not publish_rules(settings, RULES).ok:
                    raise RuntimeError("the screening rules were not taken")
                bearer = token(kc, PARTNER_CLIENT)
                accounts = asyncio.run(open_accounts(api.url, bearer, ACCOUNTS))
                ids, submit_s, started = asyncio.run(throughput(api.url, bearer, accounts, args))
                count = args.batches * args.per_batch
                ended, states = wait_settled(dsn, ids, count)
                found["throughput"] = {
                    "payouts": count, "batches": args.batches, "concurrency": args.concurrency,
                    "submitted_s": submit_s, "settled_s": ended - started,
                    "payouts_per_s": count / (ended - started), "states": dict(states),
                    "bank": httpx.get(f"http://127.0.0.1:{port}/v1/report").json(),
                }  # fmt: skip
                print(json.dumps(found["throughput"], indent=2), flush=True)
                found["latency"] = []
                for rate in sorted(args.rate):
                    phase = asyncio.run(open_loop(api.url, bearer, accounts, args, rate))
                    found["latency"].append(phase)
                    print(json.dumps(phase, indent=2), flush=True)
    return found


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.payouts", description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=BATCHES)
    parser.add_argument("--per-batch", type=int, default=PER_BATCH)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--rate", type=float, nargs="+", default=list(RATES))
    parser.add_argument("--warmup-s", type=float, default=WARMUP_S)
    parser.add_argument("--measure-s", type=float, default=MEASURE_S)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-payouts-") as tmp:
        results = run(args, Path(tmp))
    results["command"] = "python -m bench.payouts " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"written {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
