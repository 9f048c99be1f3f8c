"""REST API latency (issue 15): ``POST /v1/payments`` with ``Prefer: wait`` under open-loop load.

The platform is real and on this machine: a Kafka broker, the embedded Postgres,
Keycloak (the ``paystream`` realm), two workers and one Postgres sink
(``paystream.runner.running``), and one or two API processes. An API process runs
what ``paystream api`` runs (``create_app`` in ``uvicorn.run``, h11, asyncio, no
access log), started by :func:`serve` in a process of its own; the one difference
is the rate limit per OAuth client, raised to ``RATE_LIMIT_PER_S`` (the default,
500/s per process, would answer half of 1,000/s with 429 on one process).

Per run: 2,000 accounts opened and funded through the API (``POST /v1/accounts``,
``POST /v1/deposits``, both with ``Prefer: wait``), then for each offered rate a
transfer between a random pair of them (amount 1) every 1/rate s, with a
client-credentials token of ``partner-demo-1`` and ``Prefer: wait=5``.

**Open loop.** Request *i* is scheduled at ``i / rate`` s after the phase's start,
whatever happened to the others; its latency runs from that scheduled time to the
end of its response. A request the load generator started late, or that waited
for one of the ``CONNECTIONS_MAX`` connections (HTTP/1.1 keep-alive, one httpx
``AsyncClient``), counts the wait: coordinated omission is counted, not hidden.
The generator's own lateness is reported (start lag). Each rate runs a warm-up
(``WARMUP_S``, not counted) and then ``MEASURE_S`` s whose scheduled requests
are the sample. With two API processes, requests alternate between their ports.

Per phase also: where the time went for each 201 (Kafka record timestamps of the
payment's ``Debited`` and ``Completed`` events, stamped by the workers'
producers, read back by the platform's event watcher), the API's own request
histogram (``/metrics``, scope ``ops:read``) against the client's view, and the
CPU seconds of every process by role (``bench.consistency.Usage``, from /proc).
Once per invocation, one API process at ``PROFILE_RATE``/s is sampled by py-spy
(all threads, not idle) for ``PROFILE_S`` s.

The machine is shared: each run first waits (bounded) for a 1-minute load
average under ``--quiet-load`` and records the load it started at. Every service
is our own (free ports of 127.0.0.1, a temporary directory) and stopped at the end.

    .venv/bin/python -m bench.api_latency [--rate 200 500 1000] [--apis 1 2] [--runs 2]
        [--warmup-s 5] [--measure-s 20] [--no-profile] [--markdown /tmp/api-latency.md]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.consistency import (
    Usage,
    broker_pid,
    dsn_of,
    fresh_database,
    machine_facts,
    md_table,
    pyspy,
    services,
    summary_ms,
    wait_migrated,
    wait_quiet,
)
from paystream.ledger import Event
from paystream.runner import Platform, running
from paystream.services import keycloak as keycloak_service
from paystream.services.keycloak import KeycloakServer, client_credentials_token
from paystream.services.postgres import EmbeddedPostgres
from paystream.services.process import free_port, read_pid, tail, wait_until
from paystream.settings import Settings

RESULTS = Path(__file__).parent / "results" / "api_latency.json"
ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2
SINKS = 1
ACCOUNTS = 2_000
DEPOSIT_MINOR = 100_000_000
AMOUNT_MINOR = 1
CURRENCY = "EUR"
RATES = (200, 500, 1_000)
API_COUNTS = (1, 2)
RUNS = 2
WARMUP_S = 5.0
MEASURE_S = 20.0
WAIT_S = 5
"""``Prefer: wait=5``: the API answers 201 with the final state, or 202 when 5 s run out."""
PARTNER_CLIENT = "partner-demo-1"
OPS_CLIENT = "ops-console"
RATE_LIMIT_PER_S = 10_000
"""Per OAuth client per API process in the bench (the API's default is 500)."""
TARGET_PRODUCT_P95_MS = 300.0
TARGET_OURS_P95_MS = 50.0
TARGET_OURS_RATE = 500
SEED = 15

CONNECTIONS_MAX = 1_000
"""Requests in flight (and keep-alive connections) at once; a request beyond waits, late."""
REQUEST_TIMEOUT_S = 30.0
KEEPALIVE_EXPIRY_S = 2.0
"""Under uvicorn's 5 s keep-alive timeout: a connection the server is closing is never reused
(a first run lost a setup request to that race: ReadError)."""
SETUP_TRIES_MAX = 3
PHASE_SLACK_S = 2 * REQUEST_TIMEOUT_S
"""How long a phase may run past its schedule before its unfinished requests are cancelled."""
SETUP_CONCURRENCY = 64
API_START_TIMEOUT_S = 120.0
API_STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 300.0
WATCH_TIMEOUT_S = 120.0
SETTLE_S = 3.0
IDLE_S = 10.0
WINDOW_S = 5.0
QUIET_LOAD_MAX = 1.5
QUIET_WAIT_MAX_S = 300.0

PROFILE_RATE = 500
PROFILE_S = 15
PROFILE_RATE_HZ = 100
PYSPY_STOP_TIMEOUT_S = 60.0
PROFILE_TOP_MAX = 12
PROFILE_OUT = Path(tempfile.gettempdir()) / "bench-api-latency-profile"

PAYMENTS_ROUTE = "/v1/payments"
HISTOGRAM = "paystream_api_request_seconds"


# --- the API processes ------------------------------------------------------------------

SERVE = "import sys; from bench.api_latency import serve; sys.exit(serve(sys.argv[1:]))"


def serve(argv: Sequence[str]) -> int:
    """An API process: ``paystream api``'s ``uvicorn.run`` with the bench's rate limit.
    Arguments: settings file (JSON), issuer, port, rate limit per client per s."""
    import uvicorn

    from paystream.api.app import create_app

    settings_file, issuer, port, rate_limit = argv
    settings = Settings.model_validate_json(Path(settings_file).read_text())
    if settings.postgres_dsn is None:
        raise SystemExit("the settings name no Postgres")
    app = create_app(
        settings, issuer=issuer, dsn=settings.postgres_dsn, rate_limit_per_s=int(rate_limit)
    )
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)
    return 0


class ApiProcess:
    """One API process on a free port of 127.0.0.1; ready once ``/readyz`` answers 200."""

    def __init__(self, settings_file: Path, issuer: str, log_file: Path) -> None:
        self._settings_file, self._issuer, self._log_file = settings_file, issuer, log_file
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the API process was never started")
        return self._process.pid

    def __enter__(self) -> ApiProcess:
        with self._log_file.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    SERVE,
                    str(self._settings_file),
                    self._issuer,
                    str(self.port),
                    str(RATE_LIMIT_PER_S),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_until(self._ready, timeout_s=API_START_TIMEOUT_S):
            self.__exit__()
            raise RuntimeError(f"the API was not ready in {API_START_TIMEOUT_S} s:\n{self.log()}")
        return self

    def _ready(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(f"the API process exited:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=HTTP_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return tail(self._log_file, lines=30)

    def __exit__(self, *_exc: object) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(API_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(API_STOP_TIMEOUT_S)


def token(server: KeycloakServer, client_id: str) -> str:
    return client_credentials_token(server.issuer, client_id, server.client(client_id).secret)


# --- load -------------------------------------------------------------------------------


TLS = ssl.create_default_context()
"""One context for every client (plain HTTP here; httpx would load the CA bundle per client)."""


def http_client(bearer: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        headers={
            "Authorization": f"Bearer {bearer}",
            "Prefer": f"wait={WAIT_S}",
            "Content-Type": "application/json",
        },
        limits=httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        ),
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S),
        verify=TLS,
        trust_env=False,
    )


class Lanes:
    """Up to ``size`` keep-alive connections to one API process, each its own one-connection
    httpx client (lanes shared by two ports would close and reopen a connection at each switch).
    One client with a pool of hundreds scans its pool (httpcore) for every request and kept the
    generator's main thread on the CPU all the time at 100/s (16 ms of CPU per request, every
    request late); one connection per client keeps each scan to one. A request waits for a
    free lane, late; the most recently used lane is reused first (its connection is open)."""

    def __init__(self, bearer: str, size: int) -> None:
        self._bearer = bearer
        self._gate = asyncio.Semaphore(size)
        self._free: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []

    @contextlib.asynccontextmanager
    async def lane(self) -> AsyncIterator[httpx.AsyncClient]:
        async with self._gate:
            if self._free:
                http = self._free.pop()
            else:
                http = http_client(self._bearer, 1)
                self._all.append(http)
            try:
                yield http
            finally:
                self._free.append(http)

    @property
    def opened(self) -> int:
        return len(self._all)

    async def close(self) -> None:
        for http in self._all:
            await http.aclose()


async def open_accounts(url: str, bearer: str, count: int) -> list[str]:
    """``count`` EUR accounts opened and funded through the API (each answered 201)."""
    ids = [f"bench-{i:05d}" for i in range(count)]
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    async with http_client(bearer, SETUP_CONCURRENCY) as http:

        async def one(account_id: str) -> None:
            async with gate:
                await created(
                    http, f"{url}/v1/accounts", {"currency": CURRENCY, "account_id": account_id}
                )
                await created(
                    http,
                    f"{url}/v1/deposits",
                    {
                        "account_id": account_id,
                        "amount_minor": DEPOSIT_MINOR,
                        "currency": CURRENCY,
                    },
                )

        await asyncio.gather(*(one(a) for a in ids))
    return ids


async def created(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    """POST until 201; a transport error is retried with the same key (the same request)."""
    key = uuid.uuid4().hex
    for attempt in range(SETUP_TRIES_MAX):
        try:
            response = await http.post(url, json=body, headers={"Idempotency-Key": key})
            break
        except httpx.TransportError:
            if attempt == SETUP_TRIES_MAX - 1:
                raise
    if response.status_code != 201:
        raise RuntimeError(f"setup: {url} answered {response.status_code}: {response.text}")


@dataclass(frozen=True, slots=True)
class Plan:
    rate: int
    warmup_s: float
    measure_s: float

    @property
    def count(self) -> int:
        return int(self.rate * (self.warmup_s + self.measure_s))

    def measured(self, at_s: float) -> bool:
        return self.warmup_s <= at_s < self.warmup_s + self.measure_s


@dataclass(frozen=True, slots=True)
class Shot:
    """One request, its times in seconds after the phase's start."""

    at_s: float
    """When it was scheduled."""
    sent_s: float
    """When the generator began sending it (it had a connection)."""
    done_s: float
    outcome: str
    """The HTTP status, or ``error:<exception>``."""
    payment_id: str | None
    api: int


def requests_of(accounts: Sequence[str], count: int, rng: random.Random) -> list[tuple[bytes, str]]:
    """Bodies (a random pair of distinct accounts each) and idempotency keys, made up front."""
    made = []
    for _ in range(count):
        source, target = rng.sample(accounts, 2)
        body = {
            "from_account": source,
            "to_account": target,
            "amount_minor": AMOUNT_MINOR,
            "currency": CURRENCY,
        }
        made.append((json.dumps(body).encode(), uuid.uuid4().hex))
    return made


async def offer(
    urls: Sequence[str],
    bearer: str,
    plan: Plan,
    requests: Sequence[tuple[bytes, str]],
    on_measuring: Callable[[], None] | None = None,
) -> tuple[float, list[Shot], int]:
    """Start request i at i / rate s (open loop); the phase's wall-clock start, its shots and
    the connections it opened."""
    lanes = [Lanes(bearer, CONNECTIONS_MAX // len(urls)) for _ in urls]
    tasks: list[asyncio.Task[Shot]] = []
    started, started_wall = time.perf_counter(), time.time()
    try:
        for i, (body, key) in enumerate(requests):
            at_s = i / plan.rate
            if on_measuring is not None and i == int(plan.rate * plan.warmup_s):
                on_measuring()
            delay_s = at_s - (time.perf_counter() - started)
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            api = i % len(urls)
            url = f"{urls[api]}{PAYMENTS_ROUTE}"
            shot = shoot(lanes[api], url, body, key, at_s, started, api)
            tasks.append(asyncio.create_task(shot))
        await asyncio.wait(tasks, timeout=PHASE_SLACK_S)
        for task in tasks:
            task.cancel()  # a no-op for a finished task
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for lane in lanes:
            await lane.close()
    done_s = time.perf_counter() - started
    return (
        started_wall,
        [
            task.result()
            if not task.cancelled()
            else Shot(i / plan.rate, done_s, done_s, "error:unfinished", None, i % len(urls))
            for i, task in enumerate(tasks)
        ],
        sum(lane.opened for lane in lanes),
    )


async def shoot(
    lanes: Lanes, url: str, body: bytes, key: str, at_s: float, started: float, api: int
) -> Shot:
    payment_id = None
    async with lanes.lane() as http:
        sent_s = time.perf_counter() - started
        try:
            response = await http.post(url, content=body, headers={"Idempotency-Key": key})
            outcome = str(response.status_code)
            location = response.headers.get("location")
            if location:
                payment_id = unquote(location.rsplit("/", 1)[-1])
        except httpx.HTTPError as error:
            outcome = f"error:{type(error).__name__}"
    return Shot(at_s, sent_s, time.perf_counter() - started, outcome, payment_id, api)


# --- what a phase measured --------------------------------------------------------------


def status_class(outcome: str) -> str:
    if outcome in ("201", "202"):
        return outcome
    if outcome.startswith("4"):
        return "4xx"
    if outcome.startswith("5"):
        return "5xx"
    return "other" if outcome.isdigit() else "errors"


def latency_outcome(shots: Sequence[Shot], plan: Plan) -> dict[str, Any]:
    """Latency of the measured requests (scheduled in the window), from their scheduled start;
    throughput from the responses that ended inside the window."""
    sample = [s for s in shots if plan.measured(s.at_s)]
    ended = [s for s in shots if plan.measured(s.done_s)]
    classes = Counter(status_class(s.outcome) for s in sample)
    failed = classes["4xx"] + classes["5xx"] + classes["errors"] + classes["other"]
    return {
        "offered_per_s": plan.rate,
        "requests": len(sample),
        "achieved_per_s": len(ended) / plan.measure_s,
        "created_per_s": sum(1 for s in ended if s.outcome == "201") / plan.measure_s,
        "latency": summary_ms([1000 * (s.done_s - s.at_s) for s in sample]),
        "latency_201": summary_ms(
            [1000 * (s.done_s - s.at_s) for s in sample if s.outcome == "201"]
        ),
        "start_lag": summary_ms([1000 * (s.sent_s - s.at_s) for s in sample]),
        "status": {k: classes[k] for k in ("201", "202", "4xx", "5xx", "errors", "other")},
        "status_codes": dict(Counter(s.outcome for s in sample).most_common()),
        "error_rate": failed / len(sample) if sample else float("nan"),
        "mean_ms": 1000 * sum(s.done_s - s.at_s for s in sample) / max(1, len(sample)),
        "phase_mean_ms": 1000 * sum(s.done_s - s.at_s for s in shots) / max(1, len(shots)),
        "windows": windows(shots, plan),
    }


def windows(shots: Sequence[Shot], plan: Plan) -> list[dict[str, Any]]:
    """Latency per WINDOW_S of scheduled time, warm-up included (does a backlog grow?)."""
    by_window: dict[int, list[float]] = {}
    for s in shots:
        by_window.setdefault(int(s.at_s // WINDOW_S), []).append(1000 * (s.done_s - s.at_s))
    return [
        {"from_s": i * WINDOW_S, "measured": plan.measured(i * WINDOW_S), **summary_ms(v)}
        for i, v in sorted(by_window.items())
    ]


def stages(platform: Platform, shots: Sequence[Shot], plan: Plan, wall_s: float) -> dict[str, Any]:
    """For each measured 201: scheduled -> Debited -> Completed (Kafka record timestamps,
    stamped by the workers' producers) -> answered."""
    done = [s for s in shots if plan.measured(s.at_s) and s.outcome == "201" and s.payment_id]
    left = platform.watcher.wait(
        [s.payment_id for s in done if s.payment_id], timeout_s=WATCH_TIMEOUT_S
    )
    parts: dict[str, list[float]] = {
        "to_debited": [],
        "debited_to_completed": [],
        "completed_to_answer": [],
    }
    unmatched = 0
    for s in done:
        events: dict[str, Event] = {}
        for event in platform.watcher.events.get(s.payment_id or "", []):
            events.setdefault(event.type, event)
        debited, completed = events.get("Debited"), events.get("Completed")
        if debited is None or completed is None:
            unmatched += 1
            continue
        debited_ms = platform.watcher.timestamp_ms[debited.event_id]
        completed_ms = platform.watcher.timestamp_ms[completed.event_id]
        parts["to_debited"].append(debited_ms - 1000 * (wall_s + s.at_s))
        parts["debited_to_completed"].append(completed_ms - debited_ms)
        parts["completed_to_answer"].append(1000 * (wall_s + s.done_s) - completed_ms)
    return {
        **{k: summary_ms(v) for k, v in parts.items()},
        "unmatched": unmatched,
        "not_terminal_in_kafka": len(left),
    }


def histogram(url: str, bearer: str) -> dict[str, float]:
    """The API's own ``POST /v1/payments`` request histogram: buckets (``le``), sum, count."""
    response = httpx.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {bearer}"}, timeout=HTTP_TIMEOUT_S
    )
    response.raise_for_status()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("route") != PAYMENTS_ROUTE or labels.get("method") != "POST":
                continue
            if sample.name == f"{HISTOGRAM}_bucket":
                found[labels["le"]] = found.get(labels["le"], 0.0) + sample.value
            elif sample.name in (f"{HISTOGRAM}_sum", f"{HISTOGRAM}_count"):
                found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found


def histograms(urls: Sequence[str], bearer: str) -> dict[str, float]:
    total: Counter[str] = Counter()
    for url in urls:
        total.update(histogram(url, bearer))
    return dict(total)


def server_view(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The API's own timing of the phase's payments (middleware to response, whole phase):
    the mean and, from the buckets, the bound each percentile lies under."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    count = delta.get(f"{HISTOGRAM}_count", 0.0)
    bounds = sorted((float(le), n) for le, n in delta.items() if not le.startswith(HISTOGRAM))
    under = {}
    for q in (50, 95, 99):
        bound = next((le for le, n in bounds if n >= q / 100 * count), float("inf"))
        under[f"p{q}_under_ms"] = 1000 * bound
    return {
        "count": count,
        "mean_ms": 1000 * delta.get(f"{HISTOGRAM}_sum", 0.0) / count if count else None,
        **under,
    }


# --- phases -----------------------------------------------------------------------------


@dataclass
class Stack:
    """What one run measures: the platform, its services and the token of the partner."""

    platform: Platform
    postgres: EmbeddedPostgres
    keycloak: KeycloakServer
    work_dir: Path
    accounts: list[str]

    def usage(self, apis: Sequence[ApiProcess]) -> Usage:
        keycloak_pid = read_pid(self.keycloak.pid_file)
        roles = {
            "api": ([a.pid for a in apis], True),
            "workers": ([w.process.pid for w in self.platform.workers.workers if w.process], True),
            "sinks": ([w.process.pid for w in self.platform.sinks.workers if w.process], True),
            "postgres": ([pid] if (pid := self.postgres.pid()) else [], True),
            "kafka": ([pid] if (pid := broker_pid(self.work_dir)) else [], True),
            "keycloak": ([keycloak_pid] if keycloak_pid else [], True),
            "bench": ([os.getpid()], False),
        }
        return Usage(roles)


def measure_rate(
    stack: Stack,
    apis: Sequence[ApiProcess],
    plan: Plan,
    rng: random.Random,
    on_measuring: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One offered rate: the load, then its latency, stages, the API's view and CPU use."""
    partner, ops = token(stack.keycloak, PARTNER_CLIENT), token(stack.keycloak, OPS_CLIENT)
    urls = [a.url for a in apis]
    requests = requests_of(stack.accounts, plan.count, rng)
    usage = stack.usage(apis)
    before_server, before = histograms(urls, ops), usage.snapshot()
    wall_s, shots, connections = asyncio.run(offer(urls, partner, plan, requests, on_measuring))
    used = Usage.since(before, usage.snapshot())
    server = server_view(before_server, histograms(urls, ops))
    found = latency_outcome(shots, plan)
    found.update(
        apis=len(apis),
        connections_opened=connections,
        sent=len(shots),
        warmup_s=plan.warmup_s,
        measure_s=plan.measure_s,
        server=server,
        stages=stages(stack.platform, shots, plan, wall_s),
        usage=used,
        api_cpu_ms_per_request=1000 * used["api"].get("cpu_s", 0.0) / max(1.0, server["count"]),
    )
    s = found["latency"]
    print(
        f"  {plan.rate:,}/s offered, {len(apis)} API: achieved {found['achieved_per_s']:,.0f}/s,"
        f" P50 {s['p50_ms']:,.0f} P95 {s['p95_ms']:,.0f} P99 {s['p99_ms']:,.0f} ms,"
        f" status {found['status']}",
        flush=True,
    )
    settle(stack.platform)
    return found


def idle_usage(stack: Stack, apis: Sequence[ApiProcess]) -> dict[str, Any]:
    """What every role uses with no requests at all, over IDLE_S (the floor under each phase)."""
    usage = stack.usage(apis)
    before = usage.snapshot()
    time.sleep(IDLE_S)
    return Usage.since(before, usage.snapshot())


def settle(platform: Platform) -> None:
    """Until Postgres holds everything the workers wrote, then a short pause."""
    counts = platform.wait_audit_store(timeout_s=DRAIN_TIMEOUT_S)
    if not counts:
        raise RuntimeError("the audit store did not answer")
    time.sleep(SETTLE_S)


def run_once(
    args: argparse.Namespace,
    base: Settings,
    server_dsn: str,
    work_dir: Path,
    postgres: EmbeddedPostgres,
    keycloak: KeycloakServer,
    *,
    index: int,
    profile: bool,
) -> dict[str, Any]:
    """A fresh platform (topics, database, accounts), every rate with 1 and 2 API processes."""
    quiet = wait_quiet(args.quiet_load, QUIET_WAIT_MAX_S)
    print(f"run {index}: load average {quiet['loadavg_1m']:.2f} at the start", flush=True)
    settings = run_settings(base, f"run{index}", server_dsn, work_dir)
    settings_file = settings.data_dir / "settings.json"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(settings.model_dump_json())
    logs = settings.data_dir / "logs"
    found: dict[str, Any] = {"run": index, "load_at_start": quiet, "phases": []}
    with running(settings, workers=WORKERS, log_dir=logs, sinks=SINKS) as platform:
        wait_migrated(dsn_of(platform))
        with contextlib.ExitStack() as apis:
            first = apis.enter_context(
                ApiProcess(settings_file, keycloak.issuer, logs / "api-1.log")
            )
            started = time.monotonic()
            accounts = asyncio.run(
                open_accounts(first.url, token(keycloak, PARTNER_CLIENT), args.accounts)
            )
            found["setup_s"] = time.monotonic() - started
            print(f"  {len(accounts):,} accounts open and funded in {found['setup_s']:.0f} s")
            settle(platform)
            stack = Stack(platform, postgres, keycloak, work_dir, accounts)
            found["idle"] = idle_usage(stack, [first])
            rng = random.Random(SEED + index)
            processes = [first]
            for count in sorted(args.apis):
                while len(processes) < count:
                    log = logs / f"api-{len(processes) + 1}.log"
                    processes.append(
                        apis.enter_context(ApiProcess(settings_file, keycloak.issuer, log))
                    )
                for rate in args.rate:
                    plan = Plan(rate, args.warmup_s, args.measure_s)
                    found["phases"].append(measure_rate(stack, processes, plan, rng))
                if profile and count == 1:
                    found["profile"] = profile_phase(stack, first, args, rng)
    return found


def run_settings(base: Settings, name: str, server_dsn: str, work_dir: Path) -> Settings:
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    return base.model_copy(
        update={
            "topic_prefix": f"bench-api-{tag}",
            "data_dir": work_dir / tag,
            "postgres_dsn": fresh_database(server_dsn, f"bench_api_{tag.replace('-', '_')}"),
        }
    )


# --- profile ----------------------------------------------------------------------------


PROFILE_MODES = {"active": [], "gil": ["--gil"]}
"""py-spy's modes: every thread not idle (a thread runnable but waiting for a CPU counts), and
only the thread holding the GIL (what the process's Python work costs)."""


def profile_phase(
    stack: Stack, api: ApiProcess, args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    """One API process at PROFILE_RATE/s, sampled by py-spy for PROFILE_S s after the warm-up."""
    out = args.profile_out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    samplers: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        for mode, extra in PROFILE_MODES.items():
            command = [
                pyspy(), "record", "--pid", str(api.pid), "--rate", str(PROFILE_RATE_HZ),
                "--duration", str(PROFILE_S), "--format", "raw", "--threads", "--nonblocking",
                "--output", str(out / f"api-{mode}.txt"), *extra,
            ]  # fmt: skip
            log = (out / f"py-spy-{mode}.log").open("wb")
            samplers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log))

    print(f"  profile: 1 API at {args.profile_rate}/s under py-spy for {PROFILE_S} s", flush=True)
    plan = Plan(args.profile_rate, args.warmup_s, float(PROFILE_S))
    phase = measure_rate(stack, [api], plan, rng, on_measuring=start)
    for sampler in samplers:
        try:
            sampler.wait(PYSPY_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            sampler.kill()
    return {
        "phase": phase, "raw": str(out), "rate_hz": PROFILE_RATE_HZ,
        **{mode: profile_summary(out / f"api-{mode}.txt") for mode in PROFILE_MODES},
    }  # fmt: skip


THREAD_DIGITS = re.compile(r"[_-]?\d+(_\d+)?$")


def frame_name(frame: str) -> str:
    """``func (path:line)`` -> ``func (package/module.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def package_of(frame: str) -> str:
    path = frame_name(frame).partition(" (")[2].rstrip(")")
    top = path.split("/", 1)[0]
    return top.removesuffix(".py") if top else "?"


def read_stacks(path: Path) -> Counter[tuple[str, tuple[str, ...]]]:
    """py-spy raw lines -> (thread name, frames) -> samples."""
    stacks: Counter[tuple[str, tuple[str, ...]]] = Counter()
    if not path.is_file():
        return stacks
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        name = THREAD_DIGITS.sub("", thread.partition(": ")[2]) or "?"
        stacks[(name, tuple(frames))] += int(count)
    return stacks


def profile_summary(path: Path) -> dict[str, Any]:
    """Shares of the samples: by thread, by the function on top of the stack (self), by the
    package on top, and inclusive for paystream's own functions."""
    stacks = read_stacks(path)
    total = sum(stacks.values()) or 1
    threads: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for (thread, frames), n in stacks.items():
        threads[thread] += n
        if frames:
            self_fn[frame_name(frames[-1])] += n
            self_pkg[package_of(frames[-1])] += n
        for name in {frame_name(f) for f in frames if "paystream/" in f}:
            inclusive[name] += n

    def shares(counter: Counter[str], top: int = PROFILE_TOP_MAX) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in counter.most_common(top)}

    return {
        "samples": sum(stacks.values()),
        "threads": shares(threads),
        "self_functions": shares(self_fn),
        "self_packages": shares(self_pkg),
        "paystream_inclusive": shares(inclusive),
    }


# --- report -----------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}"


def latency_table(runs: Sequence[dict[str, Any]]) -> str:
    header = [
        "run",
        "API processes",
        "offered/s",
        "achieved/s (201/s)",
        "P50 ms",
        "P95 ms",
        "P99 ms",
        "max ms",
        "start lag P99 ms",
        "201",
        "202",
        "4xx",
        "5xx",
        "transport errors",
        "error rate",
    ]
    rows = []
    for run in runs:
        for p in run["phases"]:
            s, c = p["latency"], p["status"]
            rows.append(
                [
                    str(run["run"]),
                    str(p["apis"]),
                    f"{p['offered_per_s']:,}",
                    f"{p['achieved_per_s']:,.0f} ({p['created_per_s']:,.0f})",
                    ms(s["p50_ms"]),
                    ms(s["p95_ms"]),
                    ms(s["p99_ms"]),
                    ms(s["max_ms"]),
                    ms(p["start_lag"]["p99_ms"]),
                    f"{c['201']:,}",
                    f"{c['202']:,}",
                    f"{c['4xx']:,}",
                    f"{c['5xx']:,}",
                    f"{c['errors'] + c['other']:,}",
                    f"{100 * p['error_rate']:.2f}%",
                ]
            )
    return md_table(header, rows, left=0)


def span(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    low, high = min(values), max(values)
    return (
        fmt.format(low)
        if fmt.format(low) == fmt.format(high)
        else (f"{fmt.format(low)}-{fmt.format(high)}")
    )


def ranges_table(runs: Sequence[dict[str, Any]]) -> str:
    """Across runs: each figure as the range of the runs."""
    keys = sorted({(p["apis"], p["offered_per_s"]) for r in runs for p in r["phases"]})
    header = [
        "API processes",
        "offered/s",
        "achieved/s",
        "P50 ms",
        "P95 ms",
        "P99 ms",
        "error rate",
        "P95 < 300 ms (product)",
        "P95 < 50 ms at 500/s (ours)",
    ]
    rows = []
    for apis, rate in keys:
        ps = [
            p for r in runs for p in r["phases"] if (p["apis"], p["offered_per_s"]) == (apis, rate)
        ]
        p95 = [p["latency"]["p95_ms"] for p in ps]
        ours = "-" if rate != TARGET_OURS_RATE else verdict(p95, TARGET_OURS_P95_MS)
        rows.append(
            [
                str(apis),
                f"{rate:,}",
                span([p["achieved_per_s"] for p in ps]),
                span([p["latency"]["p50_ms"] for p in ps]),
                span(p95),
                span([p["latency"]["p99_ms"] for p in ps]),
                span([100 * p["error_rate"] for p in ps], "{:.2f}%"),
                verdict(p95, TARGET_PRODUCT_P95_MS),
                ours,
            ]
        )
    return md_table(header, rows, left=0)


def verdict(values: Sequence[float], bound_ms: float) -> str:
    met = sum(1 for v in values if v < bound_ms)
    if met == len(values):
        return "met"
    return "not met" if met == 0 else f"met in {met} of {len(values)} runs"


def stages_table(runs: Sequence[dict[str, Any]]) -> str:
    header = [
        "run",
        "API",
        "offered/s",
        "scheduled -> Debited P50 / P95 ms",
        "Debited -> Completed P50 / P95 ms",
        "Completed -> answered P50 / P95 ms",
        "API's own time mean ms (P95 under)",
        "client's mean ms (whole phase)",
    ]
    rows = []
    for run in runs:
        for p in run["phases"]:
            st, sv = p["stages"], p["server"]
            rows.append(
                [
                    str(run["run"]),
                    str(p["apis"]),
                    f"{p['offered_per_s']:,}",
                    *(
                        f"{ms(st[k]['p50_ms'])} / {ms(st[k]['p95_ms'])}"
                        for k in ("to_debited", "debited_to_completed", "completed_to_answer")
                    ),
                    f"{ms(sv['mean_ms'])} ({ms(sv['p95_under_ms'])})",
                    ms(p["phase_mean_ms"]),
                ]
            )
    return md_table(header, rows, left=0)


USAGE_ROLES = ("api", "workers", "sinks", "postgres", "kafka", "keycloak", "bench")


def usage_table(runs: Sequence[dict[str, Any]]) -> str:
    header = [
        "run",
        "API",
        "offered/s",
        "wall s",
        "machine CPUs busy",
        *(f"CPU s {r}" for r in USAGE_ROLES),
        "CPU s others",
        "API CPU ms per request it answered (above idle)",
    ]
    rows = []
    for run in runs:
        idle = run["idle"]
        idle_api_per_s = idle["api"].get("cpu_s", 0.0) / idle["seconds"]
        rows.append([str(run["run"]), "1", "idle", f"{idle['seconds']:.0f}",
                     f"{100 * (idle['machine_busy_share'] or 0):.0f}%",
                     *(f"{idle[r].get('cpu_s', 0):.1f}" for r in USAGE_ROLES),
                     f"{idle['others_cpu_s']:.1f}", "-"])  # fmt: skip
        for p in run["phases"]:
            u = p["usage"]
            above_s = u["api"].get("cpu_s", 0.0) - idle_api_per_s * p["apis"] * u["seconds"]
            answered = max(1.0, p["server"]["count"])
            per_request = f"{p['api_cpu_ms_per_request']:.1f} ({1000 * above_s / answered:.1f})"
            rows.append(
                [
                    str(run["run"]),
                    str(p["apis"]),
                    f"{p['offered_per_s']:,}",
                    f"{u['seconds']:.0f}",
                    f"{100 * (u['machine_busy_share'] or 0):.0f}%",
                    *(f"{u[r].get('cpu_s', 0):.1f}" for r in USAGE_ROLES),
                    f"{u['others_cpu_s']:.1f}",
                    per_request,
                ]
            )
    return md_table(header, rows, left=0)


def profile_tables(p: dict[str, Any]) -> str:
    parts = []
    for key, title in (
        ("threads", "thread"),
        ("self_packages", "package on top of the stack"),
        ("self_functions", "function on top of the stack (self)"),
        ("paystream_inclusive", "paystream function anywhere on the stack (inclusive)"),
    ):
        parts.append(
            md_table([title, "% of samples"], [[f"`{k}`", f"{v:.1f}"] for k, v in p[key].items()])
        )
    return "\n\n".join(parts)


def report(results: dict[str, Any]) -> str:
    runs = results["runs"]
    loads = ", ".join(f"run {r['run']}: {r['load_at_start']['loadavg_1m']:.2f}" for r in runs)
    parts = [
        f"1-minute load average at the start of each run: {loads}.",
        "",
        "Across runs (range of the runs):",
        "",
        ranges_table(runs),
        "",
        "Every phase (latency from the scheduled start of each request scheduled in the"
        " measured window; achieved = responses that ended in the window, per s):",
        "",
        latency_table(runs),
        "",
        "Where a 201's time went (Kafka record timestamps of its events) and the API's own"
        " view of the same requests (its request histogram, warm-up included):",
        "",
        stages_table(runs),
        "",
        "CPU per role over each phase (warm-up, window and the tail until the last answer):",
        "",
        usage_table(runs),
        "",
    ]
    for run in runs:
        if p := run.get("profile"):
            s = p["phase"]["latency"]
            parts += [
                f"Profile (run {run['run']}): one API process at {p['phase']['offered_per_s']:,}/s,"
                " two py-spy"
                f" samplers at {p['rate_hz']} Hz for {PROFILE_S} s (the phase's P50 / P95 under"
                f" py-spy: {ms(s['p50_ms'])} / {ms(s['p95_ms'])} ms).",
                "",
                f"Holding the GIL ({p['gil']['samples']:,} samples; % of them):",
                "",
                profile_tables(p["gil"]),
                "",
                f"Every thread not idle, runnable-but-waiting included ({p['active']['samples']:,}"
                " samples):",
                "",
                profile_tables(p["active"]),
                "",
            ]
    return "\n".join(parts)


def markdown_section(results: dict[str, Any]) -> str:
    m = results["machine"]
    pg = m["postgres"]
    return "\n".join(
        [
            "## REST API latency (issue 15)",
            "",
            f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, {m['os']},"
            f" Python {m['python']}, PostgreSQL {pg['server_version']} (embedded), one local Kafka"
            f" broker, Keycloak, librdkafka {m['librdkafka']}. Broker, Postgres, Keycloak, workers,"
            " sink, API processes and the load generator all share these CPUs.",
            "",
            "```",
            results["command"],
            "```",
            "",
            report(results),
        ]
    )


# --- main -------------------------------------------------------------------------------


@contextlib.contextmanager
def identity_provider(work_dir: Path) -> Iterator[KeycloakServer]:
    server = keycloak_service.start_on_free_ports(work_dir / "keycloak")
    try:
        yield server
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.api_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, nargs="+", default=list(RATES))
    parser.add_argument(
        "--apis",
        type=int,
        nargs="+",
        default=list(API_COUNTS),
        choices=(1, 2),
        help="API processes (requests alternate between them)",
    )
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--warmup-s", type=float, default=WARMUP_S)
    parser.add_argument("--measure-s", type=float, default=MEASURE_S)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-out", type=Path, default=PROFILE_OUT)
    parser.add_argument("--profile-rate", type=int, default=PROFILE_RATE)
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=QUIET_LOAD_MAX,
        help="wait (at most 5 min) for a 1-minute load average under this",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, help="also write a docs section here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "command": "python -m bench.api_latency " + " ".join(argv or sys.argv[1:]),
        "settings": {
            "workers": WORKERS,
            "sinks": SINKS,
            "accounts": args.accounts,
            "wait_s": WAIT_S,
            "connections_max": CONNECTIONS_MAX,
            "rate_limit_per_s": RATE_LIMIT_PER_S,
            "warmup_s": args.warmup_s,
            "measure_s": args.measure_s,
        },
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-api-latency-") as tmp:
        work_dir = Path(tmp)
        with (
            services(None, work_dir) as (bootstrap, postgres),
            identity_provider(work_dir) as keycloak,
        ):
            results["machine"] = machine_facts(postgres.dsn())
            base = Settings(
                environment="test", kafka_bootstrap=bootstrap, kafka_security="plaintext"
            )
            for index in range(1, args.runs + 1):
                results["runs"].append(
                    run_once(
                        args,
                        base,
                        postgres.dsn(),
                        work_dir,
                        postgres,
                        keycloak,
                        index=index,
                        profile=index == 1 and not args.no_profile,
                    )
                )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(results, indent=2, default=str) + "\n"
    )  # kept if report fails
    table = report(results)
    print(table)
    args.output.write_text(json.dumps({**results, "table": table}, indent=2, default=str) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown_section(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
