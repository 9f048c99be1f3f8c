"""A bank rail to pay out against: ISO 20022 over HTTP, with the faults a real bank has.

Its own process (``paystream rail-sim``), state in memory. The connector is written against
exactly this contract:

``POST /v1/credit-transfers``
    Body: one pain.001.001.09 (``Content-Type: application/xml`` or ``text/xml``, at most
    ``MESSAGE_BYTES_MAX`` bytes) with one transaction. Header ``Idempotency-Key``: the
    transaction's EndToEndId.

    - ``200 application/xml``: a pacs.002.001.10 with ``TxSts`` ``ACCP`` (accepted; it
      settles ``settle_after_ms`` later) or ``RJCT`` with ``StsRsnInf/Rsn/Cd`` (the bank
      refuses it: the reason code is drawn from ``failure_rates``, deterministically from
      hash(seed, end-to-end id), so a retry gets the same verdict).
    - The same end-to-end id again with the same instruction (the parsed
      :class:`~paystream.rail.iso20022.Instruction`; message id and creation time may
      differ): ``200`` with the instruction's current status (ACCP, ACSC or RJCT), counted as
      a repeat; never a second payment.
    - The same end-to-end id with a different instruction: ``409 application/problem+json``,
      code ``duplicate_instruction_conflict``; recorded in the report's ``conflicts``.
    - ``400 application/problem+json``: code ``invalid_message`` (whatever
      :func:`~paystream.rail.iso20022.parse_pain001` refuses, an oversize body) or
      ``idempotency_key_mismatch`` (the header is missing or is not the EndToEndId).
    - ``415 application/problem+json``, code ``unsupported_media_type``: not XML.
    - ``429`` with ``Retry-After`` (whole seconds): over the rate limit (a token bucket).
    - ``503`` with ``Retry-After``: during an outage.
    - ``500 application/problem+json``, code ``internal_error``: a transient fault drawn with
      ``error_rate`` before anything is recorded, or a *lost response* drawn with
      ``lost_response_rate`` for a new instruction: it is recorded and accepted, yet the
      answer is a 500; a retry with the same end-to-end id gets the stored status.
    - ``507 application/problem+json``, code ``simulator_full``: ``instructions_max`` distinct
      instructions are held; a new one is refused (repeats still answer).

``GET /v1/credit-transfers/{end_to_end_id}``
    ``200 application/xml`` pacs.002 with the current status: ``ACCP`` until
    ``settle_after_ms`` has passed since acceptance, then ``ACSC``; ``RJCT`` stays ``RJCT``.
    ``404 application/problem+json`` (code ``not_found``) if unknown. The same outage, rate
    limit, transient 500s and latency as the POST.

Every answer of both routes first waits a sampled latency (``latency_ms`` fixed, or a
lognormal of ``latency_median_ms`` and ``latency_sigma``), with ``asyncio.sleep``.

With ``callback_url``, the pacs.002 of an instruction is POSTed there (``application/xml``)
once it is final (ACSC or RJCT), retried with backoff ``CALLBACK_ATTEMPTS_MAX`` times at
most; polling works without it.

``GET /v1/report`` (JSON): ``instructions`` (distinct end-to-end ids), ``by_status``,
``repeats``, ``conflicts`` (end-to-end ids, the first ``CONFLICTS_LISTED_MAX``),
``conflict_count``, ``rate_limited`` (429s), ``unavailable`` (503s), ``errors`` (500s,
lost responses included), ``lost_responses``, ``invalid`` (400s and 415s), ``full`` (507s).

Admin: ``POST /admin/outage`` ``{"seconds": 30}`` starts an outage now;
``POST /admin/rate-limit`` ``{"rate_per_s": 5, "burst": 5, "seconds": 10}`` a rate-limit
episode that ends by itself; ``GET /healthz``; ``GET /metrics`` (Prometheus text, from a
registry of the simulator's own, so several simulators share a process).

State is one dict keyed by end-to-end id behind a lock: request handlers run on the event
loop and parsing runs in worker threads, so every read-modify-write of the state happens
under :attr:`Book.lock` in one step.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import hashlib
import heapq
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias

import httpx
import stamina
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from paystream.rail.iso20022 import (
    MESSAGE_BYTES_MAX,
    Instruction,
    InvalidMessage,
    Status,
    StatusReport,
    build_pacs002,
    parse_pain001,
)

__all__ = ["SimulatorConfig", "create_app"]

LATENCY_MS_MAX: Final = 60_000
LATENCY_SIGMA_MAX: Final = 5.0
SETTLE_AFTER_MS_MAX: Final = 86_400_000
RATE_PER_S_MAX: Final = 1_000_000.0
BURST_MAX: Final = 1_000_000
INSTRUCTIONS_MAX: Final = 1_000_000
"""Default bound on distinct instructions held (about 1 KiB each)."""
INSTRUCTIONS_MAX_MAX: Final = 10_000_000
FAILURE_CODES_MAX: Final = 32
OUTAGE_S_MAX: Final = 3_600.0
RATE_LIMIT_EPISODE_S_MAX: Final = 3_600.0
CONFLICTS_LISTED_MAX: Final = 1_000
CALLBACK_ATTEMPTS_MAX: Final = 4
CALLBACK_TIMEOUT_S: Final = 2.0
CALLBACK_WAIT_MAX_S: Final = 1.0
CALLBACKS_IN_FLIGHT_MAX: Final = 16
CALLBACK_TICK_S: Final = 0.05
RETRY_AFTER_S_MIN: Final = 1
REASON_CODE_LENGTH: Final = 4
PROBLEM_JSON: Final = "application/problem+json"
XML: Final = "application/xml"
XML_TYPES: Final = frozenset({"application/xml", "text/xml"})

Route: TypeAlias = Literal["post_credit_transfer", "get_credit_transfer"]
Outcome: TypeAlias = Literal[
    "accepted",
    "rejected",
    "repeat",
    "status",
    "conflict",
    "invalid",
    "not_found",
    "rate_limited",
    "unavailable",
    "error",
    "lost_response",
    "full",
]

logger = logging.getLogger("paystream.rail.simulator")


def _check_rate(name: str, rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be a probability in 0..1, not {rate}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulatorConfig:
    """How the simulated bank behaves; every field bounded (``ValueError`` otherwise)."""

    seed: int = 0
    latency_ms: int = 0
    latency_median_ms: int = 0
    """With a median above 0 the latency is lognormal (``latency_ms`` is then unused)."""
    latency_sigma: float = 0.0
    settle_after_ms: int = 200
    failure_rates: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    """ISO reason code (``AC04``) -> probability that an instruction is rejected with it."""
    error_rate: float = 0.0
    lost_response_rate: float = 0.0
    rate_per_s: float = 0.0
    """Token bucket refill; 0 = unlimited."""
    burst: int = 0
    callback_url: str | None = None
    instructions_max: int = INSTRUCTIONS_MAX

    def __post_init__(self) -> None:
        object.__setattr__(self, "failure_rates", MappingProxyType(dict(self.failure_rates)))
        if not (
            0 <= self.latency_ms <= LATENCY_MS_MAX and 0 <= self.latency_median_ms <= LATENCY_MS_MAX
        ):
            raise ValueError(f"latencies must be 0..{LATENCY_MS_MAX} ms")
        if not 0.0 <= self.latency_sigma <= LATENCY_SIGMA_MAX:
            raise ValueError(f"latency_sigma must be 0..{LATENCY_SIGMA_MAX}")
        if not 0 <= self.settle_after_ms <= SETTLE_AFTER_MS_MAX:
            raise ValueError(f"settle_after_ms must be 0..{SETTLE_AFTER_MS_MAX}")
        if len(self.failure_rates) > FAILURE_CODES_MAX:
            raise ValueError(f"at most {FAILURE_CODES_MAX} failure codes")
        for code, rate in self.failure_rates.items():
            if len(code) != REASON_CODE_LENGTH or not code.isalnum() or not code.isupper():
                raise ValueError(f"{code!r} is not an ISO reason code like AC04")
            _check_rate(f"the failure rate of {code}", rate)
        if sum(self.failure_rates.values()) > 1.0:
            raise ValueError("the failure rates add up to more than 1")
        _check_rate("error_rate", self.error_rate)
        _check_rate("lost_response_rate", self.lost_response_rate)
        if not (0.0 <= self.rate_per_s <= RATE_PER_S_MAX and 0 <= self.burst <= BURST_MAX):
            raise ValueError(f"rate_per_s must be 0..{RATE_PER_S_MAX}, burst 0..{BURST_MAX}")
        if not 1 <= self.instructions_max <= INSTRUCTIONS_MAX_MAX:
            raise ValueError(f"instructions_max must be 1..{INSTRUCTIONS_MAX_MAX}")


# --- pure leaves ------------------------------------------------------------------------------


def draw(seed: int, purpose: str, key: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, purpose, key): the same verdict on a retry."""
    digest = hashlib.blake2b(f"{seed}\x00{purpose}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def verdict(config: SimulatorConfig, end_to_end_id: str) -> str | None:
    """The reason code the bank rejects this instruction with, or None: it accepts it."""
    point = draw(config.seed, "verdict", end_to_end_id)
    cumulative = 0.0
    for code in sorted(config.failure_rates):
        cumulative += config.failure_rates[code]
        if point < cumulative:
            return code
    return None


@dataclasses.dataclass
class TokenBucket:
    """``rate_per_s`` tokens a second up to ``burst``; one per request; 0 = unlimited."""

    rate_per_s: float
    burst: int
    tokens: float = 0.0
    at_s: float = 0.0

    def take(self, now_s: float) -> int:
        """0 if the request may go, else the whole seconds to wait (``Retry-After``)."""
        if self.rate_per_s <= 0:
            return 0
        self.tokens = min(
            float(max(self.burst, 1)), self.tokens + (now_s - self.at_s) * self.rate_per_s
        )
        self.at_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0
        return max(RETRY_AFTER_S_MIN, math.ceil((1.0 - self.tokens) / self.rate_per_s))


def _bucket(rate_per_s: float, burst: int, now_s: float) -> TokenBucket:
    return TokenBucket(rate_per_s=rate_per_s, burst=burst, tokens=float(max(burst, 1)), at_s=now_s)


def latency_s(config: SimulatorConfig, rng: random.Random) -> float:
    """One answer's delay: lognormal around the median when one is set, else fixed."""
    if config.latency_median_ms > 0:
        sampled_ms = rng.lognormvariate(math.log(config.latency_median_ms), config.latency_sigma)
        return min(sampled_ms, LATENCY_MS_MAX) / 1000
    return config.latency_ms / 1000


def _retry_after_s(until_s: float, now_s: float) -> int:
    return max(RETRY_AFTER_S_MIN, math.ceil(until_s - now_s))


# --- state ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    """One instruction the bank took: its verdict is fixed when it arrives."""

    instruction: Instruction
    message_id: str
    accepted_at_s: float
    reason_code: str | None
    """None: accepted (ACCP, then ACSC once settled); else RJCT with this code."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Refusal:
    """An answer given before the request is looked at: outage, rate limit, transient 500."""

    outcome: Outcome
    status_code: int
    retry_after_s: int | None = None


class Book:
    """The simulator's memory. Every method takes :attr:`lock` for its whole read-modify-write."""

    def __init__(self, config: SimulatorConfig, *, now_s: float) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.records: dict[str, Record] = {}
        self.accepted_at_s: list[float] = []  # of ACCP records, ascending (monotonic clock)
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "repeats",
                "conflict_count",
                "rate_limited",
                "unavailable",
                "errors",
                "lost_responses",
                "invalid",
                "full",
            ),
            0,
        )
        self.conflicts: list[str] = []
        self.outage_until_s = 0.0
        self.bucket = _bucket(config.rate_per_s, config.burst, now_s)
        self.episode: TokenBucket | None = None
        self.episode_until_s = 0.0
        self.rng = random.Random(config.seed)
        self.final_due: list[tuple[float, str]] = []  # heap: when each becomes final (callbacks)

    def status_of(self, record: Record, now_s: float) -> Status:
        if record.reason_code is not None:
            return "RJCT"
        settled = now_s - record.accepted_at_s >= self.config.settle_after_ms / 1000
        return "ACSC" if settled else "ACCP"

    def latency_s(self) -> float:
        with self.lock:
            return latency_s(self.config, self.rng)

    def count(self, name: str) -> None:
        with self.lock:
            self.counts[name] += 1

    def admit(self, now_s: float) -> Refusal | None:
        """Outage, then rate limit, then a transient fault; None: go on."""
        with self.lock:
            if now_s < self.outage_until_s:
                self.counts["unavailable"] += 1
                retry = _retry_after_s(self.outage_until_s, now_s)
                return Refusal(outcome="unavailable", status_code=503, retry_after_s=retry)
            bucket = self.bucket
            if self.episode is not None and now_s < self.episode_until_s:
                bucket = self.episode
            wait_s = bucket.take(now_s)
            if wait_s:
                self.counts["rate_limited"] += 1
                return Refusal(outcome="rate_limited", status_code=429, retry_after_s=wait_s)
            if self.rng.random() < self.config.error_rate:
                self.counts["errors"] += 1
                return Refusal(outcome="error", status_code=500)
        return None

    def receive(
        self, message_id: str, instruction: Instruction, *, now_s: float
    ) -> tuple[Outcome, Record | None]:
        """Record a new instruction or recognise a repeat; (outcome, the stored record)."""
        key = instruction.end_to_end_id
        with self.lock:
            record = self.records.get(key)
            if record is not None:
                if record.instruction == instruction:
                    self.counts["repeats"] += 1
                    return "repeat", record
                self.counts["conflict_count"] += 1
                if len(self.conflicts) < CONFLICTS_LISTED_MAX:
                    self.conflicts.append(key)
                return "conflict", record
            if len(self.records) >= self.config.instructions_max:
                self.counts["full"] += 1
                return "full", None
            return self._record(message_id, instruction, now_s=now_s)

    def _record(
        self, message_id: str, instruction: Instruction, *, now_s: float
    ) -> tuple[Outcome, Record]:
        reason_code = verdict(self.config, instruction.end_to_end_id)
        record = Record(
            instruction=instruction,
            message_id=message_id,
            accepted_at_s=now_s,
            reason_code=reason_code,
        )
        self.records[instruction.end_to_end_id] = record
        final_at_s = now_s
        if reason_code is None:
            self.accepted_at_s.append(now_s)
            final_at_s = now_s + self.config.settle_after_ms / 1000
        if self.config.callback_url is not None:
            heapq.heappush(self.final_due, (final_at_s, instruction.end_to_end_id))
        if self.rng.random() < self.config.lost_response_rate:
            self.counts["lost_responses"] += 1
            self.counts["errors"] += 1
            return "lost_response", record
        return ("accepted" if reason_code is None else "rejected"), record

    def due_for_callback(self, now_s: float, *, count_max: int) -> list[Record]:
        with self.lock:
            due: list[Record] = []
            while self.final_due and self.final_due[0][0] <= now_s and len(due) < count_max:
                due.append(self.records[heapq.heappop(self.final_due)[1]])
            return due

    def by_status(self, now_s: float) -> dict[str, int]:
        with self.lock:
            threshold_s = now_s - self.config.settle_after_ms / 1000
            settled = bisect.bisect_right(self.accepted_at_s, threshold_s)
            accepted = len(self.accepted_at_s)
            rejected = len(self.records) - accepted
        return {"ACCP": accepted - settled, "ACSC": settled, "RJCT": rejected}

    def report(self, now_s: float) -> dict[str, Any]:
        by_status = self.by_status(now_s)
        with self.lock:
            counts = dict(self.counts)
            return {
                "instructions": len(self.records),
                "by_status": by_status,
                "conflicts": list(self.conflicts),
                **counts,
            }

    def start_outage(self, seconds: float, now_s: float) -> None:
        with self.lock:
            self.outage_until_s = now_s + seconds

    def start_rate_limit(self, rate_per_s: float, burst: int, seconds: float, now_s: float) -> None:
        with self.lock:
            self.episode = _bucket(rate_per_s, burst, now_s)
            self.episode_until_s = now_s + seconds

    def state(self, now_s: float) -> tuple[bool, bool]:
        """(in an outage, in a rate-limit episode)."""
        with self.lock:
            return now_s < self.outage_until_s, now_s < self.episode_until_s

    def get(self, end_to_end_id: str) -> Record | None:
        with self.lock:
            return self.records.get(end_to_end_id)


# --- the HTTP shell ---------------------------------------------------------------------------


class OutageRequest(BaseModel):
    seconds: float = Field(gt=0, le=OUTAGE_S_MAX)


class RateLimitRequest(BaseModel):
    rate_per_s: float = Field(gt=0, le=RATE_PER_S_MAX)
    burst: int = Field(ge=1, le=BURST_MAX)
    seconds: float = Field(gt=0, le=RATE_LIMIT_EPISODE_S_MAX)


class Metrics:
    """The simulator's Prometheus series, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "paystream_rail_sim_requests",
            "credit-transfer requests answered",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.instructions = Gauge(
            "paystream_rail_sim_instructions",
            "instructions held, by status",
            ["status"],
            registry=self.registry,
        )
        self.conflicts = Counter(
            "paystream_rail_sim_conflicts",
            "an end-to-end id sent again with other content",
            registry=self.registry,
        )
        self.outage = Gauge(
            "paystream_rail_sim_outage", "1 during an outage", registry=self.registry
        )
        self.rate_limit_episode = Gauge(
            "paystream_rail_sim_rate_limit_episode",
            "1 during a rate-limit episode",
            registry=self.registry,
        )
        self.callbacks = Counter(
            "paystream_rail_sim_callbacks",
            "status callbacks, by outcome",
            ["outcome"],
            registry=self.registry,
        )


def _problem(status: int, code: str, detail: str, *, retry_after_s: int | None = None) -> Response:
    headers = {} if retry_after_s is None else {"Retry-After": str(retry_after_s)}
    body = {
        "type": "about:blank",
        "title": code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_REFUSALS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "unavailable": ("unavailable", "the bank is in an outage; retry after Retry-After seconds"),
        "rate_limited": ("rate_limited", "over the rate limit; retry after Retry-After seconds"),
        "error": ("internal_error", "a transient fault; retry with the same end-to-end id"),
    }
)


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or None once it is over ``MESSAGE_BYTES_MAX`` (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MESSAGE_BYTES_MAX:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MESSAGE_BYTES_MAX:
            return None
    return bytes(body)


class Simulator:
    """What the routes share: the configuration, the book, the metrics."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.book = Book(config, now_s=time.monotonic())
        self.metrics = Metrics()
        self._message_ids = itertools.count(1)

    def answered(self, route: Route, outcome: Outcome, response: Response) -> Response:
        self.metrics.requests.labels(route, outcome).inc()
        if outcome == "conflict":
            self.metrics.conflicts.inc()
        return response

    async def gate(self, route: Route) -> Response | None:
        """The sampled latency, then an outage, a rate limit or a transient fault; or None."""
        await asyncio.sleep(self.book.latency_s())
        refusal = self.book.admit(time.monotonic())
        if refusal is None:
            return None
        code, detail = _REFUSALS[refusal.outcome]
        problem = _problem(refusal.status_code, code, detail, retry_after_s=refusal.retry_after_s)
        return self.answered(route, refusal.outcome, problem)

    async def status_answer(
        self, route: Route, outcome: Outcome, record: Record, *, original_message_id: str
    ) -> Response:
        body = await run_in_threadpool(self.pacs002, record, original_message_id)
        return self.answered(route, outcome, Response(body, media_type=XML))

    def pacs002(self, record: Record, original_message_id: str) -> bytes:
        status = self.book.status_of(record, time.monotonic())
        code = record.reason_code if status == "RJCT" else None
        report = StatusReport(
            end_to_end_id=record.instruction.end_to_end_id, status=status, reason_code=code
        )
        return build_pacs002(
            report,
            message_id=f"rail-sim-{next(self._message_ids)}",
            original_message_id=original_message_id,
            created_at_ms=time.time_ns() // 1_000_000,
        )

    async def read_instruction(self, request: Request) -> tuple[str, Instruction] | Response:
        """The request's pain.001, or the 4xx problem to answer."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in XML_TYPES:
            self.book.count("invalid")
            return _problem(415, "unsupported_media_type", "send application/xml")
        body = await _bounded_body(request)
        try:
            if body is None:
                raise InvalidMessage(f"the body is over {MESSAGE_BYTES_MAX} bytes")
            message_id, instruction = await run_in_threadpool(parse_pain001, body)
        except InvalidMessage as error:
            self.book.count("invalid")
            return _problem(400, "invalid_message", str(error))
        if request.headers.get("idempotency-key") != instruction.end_to_end_id:
            self.book.count("invalid")
            return _problem(
                400, "idempotency_key_mismatch", "the Idempotency-Key header must be the EndToEndId"
            )
        return message_id, instruction

    async def receipt(
        self, outcome: Outcome, record: Record | None, *, message_id: str
    ) -> Response:
        route: Route = "post_credit_transfer"
        if outcome == "conflict":
            detail = "this end-to-end id was sent before with other content"
            return self.answered(
                route, outcome, _problem(409, "duplicate_instruction_conflict", detail)
            )
        if outcome == "full" or record is None:
            detail = f"the simulator holds {self.config.instructions_max} instructions, its bound"
            return self.answered(route, "full", _problem(507, "simulator_full", detail))
        if outcome == "lost_response":
            detail = "the bank took it, but the answer was lost"
            return self.answered(route, outcome, _problem(500, "internal_error", detail))
        return await self.status_answer(route, outcome, record, original_message_id=message_id)


# --- status callbacks -------------------------------------------------------------------------


async def _call_back(
    sim: Simulator, client: httpx.AsyncClient, url: str, record: Record, slot: asyncio.Semaphore
) -> None:
    """POST one final status to the callback URL, retried with backoff a bounded number of times."""
    try:
        body = await run_in_threadpool(sim.pacs002, record, record.message_id)
        retries = stamina.retry_context(
            on=httpx.HTTPError,
            attempts=CALLBACK_ATTEMPTS_MAX,
            wait_max=CALLBACK_WAIT_MAX_S,
            timeout=CALLBACK_ATTEMPTS_MAX * (CALLBACK_TIMEOUT_S + CALLBACK_WAIT_MAX_S),
        )
        async for attempt in retries:
            with attempt:
                response = await client.post(url, content=body, headers={"Content-Type": XML})
                response.raise_for_status()
        sim.metrics.callbacks.labels("delivered").inc()
    except httpx.HTTPError as error:
        sim.metrics.callbacks.labels("failed").inc()
        logger.warning("callback for %s failed: %s", record.instruction.end_to_end_id, error)
    finally:
        slot.release()


async def _call_back_when_final(sim: Simulator, url: str, stop: asyncio.Event) -> None:
    """Until ``stop``: every tick, the instructions that became final, at most
    ``CALLBACKS_IN_FLIGHT_MAX`` deliveries at a time."""
    slots = asyncio.Semaphore(CALLBACKS_IN_FLIGHT_MAX)
    tasks: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_S) as client:
        while not stop.is_set():
            due = sim.book.due_for_callback(time.monotonic(), count_max=CALLBACKS_IN_FLIGHT_MAX)
            for record in due:
                await slots.acquire()
                task = asyncio.create_task(_call_back(sim, client, url, record, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=CALLBACK_TICK_S)
        for task in list(tasks):
            task.cancel()


# --- the app ----------------------------------------------------------------------------------


def _lifespan(sim: Simulator) -> Any:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        url = sim.config.callback_url
        stop = asyncio.Event()
        task = None if url is None else asyncio.create_task(_call_back_when_final(sim, url, stop))
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task

    return lifespan


def _credit_transfer_routes(app: FastAPI, sim: Simulator) -> None:
    @app.post("/v1/credit-transfers")
    async def post_credit_transfer(request: Request) -> Response:
        refused = await sim.gate("post_credit_transfer")
        if refused is not None:
            return refused
        read = await sim.read_instruction(request)
        if isinstance(read, Response):
            return sim.answered("post_credit_transfer", "invalid", read)
        message_id, instruction = read
        outcome, record = sim.book.receive(message_id, instruction, now_s=time.monotonic())
        return await sim.receipt(outcome, record, message_id=message_id)

    @app.get("/v1/credit-transfers/{end_to_end_id}")
    async def get_credit_transfer(end_to_end_id: str) -> Response:
        refused = await sim.gate("get_credit_transfer")
        if refused is not None:
            return refused
        record = sim.book.get(end_to_end_id)
        if record is None:
            problem = _problem(404, "not_found", "no instruction with this end-to-end id")
            return sim.answered("get_credit_transfer", "not_found", problem)
        return await sim.status_answer(
            "get_credit_transfer", "status", record, original_message_id=record.message_id
        )


def _ops_routes(app: FastAPI, sim: Simulator) -> None:
    @app.get("/v1/report")
    async def report() -> dict[str, Any]:
        return sim.book.report(time.monotonic())

    @app.get("/metrics")
    async def metrics() -> Response:
        now_s = time.monotonic()
        for status, count in sim.book.by_status(now_s).items():
            sim.metrics.instructions.labels(status).set(count)
        outage, episode = sim.book.state(now_s)
        sim.metrics.outage.set(int(outage))
        sim.metrics.rate_limit_episode.set(int(episode))
        return Response(generate_latest(sim.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/admin/outage")
    async def outage(body: OutageRequest) -> dict[str, float]:
        sim.book.start_outage(body.seconds, time.monotonic())
        return {"seconds": body.seconds}

    @app.post("/admin/rate-limit")
    async def rate_limit(body: RateLimitRequest) -> dict[str, float]:
        sim.book.start_rate_limit(body.rate_per_s, body.burst, body.seconds, time.monotonic())
        return {"rate_per_s": body.rate_per_s, "burst": body.burst, "seconds": body.seconds}


def create_app(config: SimulatorConfig) -> FastAPI:
    """The simulator as an ASGI app, its state fresh; serve it with uvicorn."""
    sim = Simulator(config)
    app = FastAPI(
        title="paystream bank-rail simulator",
        lifespan=_lifespan(sim),
        docs_url=None,
        redoc_url=None,
    )
    app.state.simulator = sim
    _credit_transfer_routes(app, sim)
    _ops_routes(app, sim)
    return app
