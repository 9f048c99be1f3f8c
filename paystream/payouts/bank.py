"""The bank rail over HTTP, as the connector sees it: send one instruction, learn its outcome.

The contract is the simulator's (``paystream.rail.simulator``), which follows what real
rails do: ``POST /v1/credit-transfers`` with a pain.001 and the end-to-end id as the
``Idempotency-Key``, answered by a pacs.002 (``ACCP`` accepted, ``ACSC`` settled, ``RJCT``
rejected with a reason code); ``GET /v1/credit-transfers/{id}`` for the status later.

- **Retries** (``stamina``: capped exponential backoff with full jitter) on timeouts,
  connection errors, ``5xx`` and ``503`` outages, waiting a ``Retry-After`` when the rail
  gives one. The same end-to-end id and the same content every time, so a retry after a
  lost answer gets the stored status: the bank never pays twice.
- **429** is not an error: the rate halves (AIMD, :mod:`paystream.payouts.pacing`) and
  nothing is sent before its ``Retry-After``; the instruction waits and goes again.
- A round of retries is bounded (``ATTEMPTS_PER_ROUND``, ``ROUND_TIMEOUT_S``); rounds are
  bounded too (``ROUNDS_MAX``, about an hour). A payout whose rail stays away that long
  is *given up* by this process: it stays ``Sending`` (never failed blindly: the bank may
  have it), is counted, and is taken up again when the connector restarts.
- ``409`` (this end-to-end id with other content) cannot happen unless the connector is
  wrong: :class:`RailConflict` stops it loudly. ``400`` (the rail cannot read what we sent),
  or an instruction the pain.001 schema cannot carry, is permanent: a ``RJCT`` with ``FF01``
  (ISO: invalid file format), so the payout fails and its funds are released -- the rail
  never took it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import httpx
import stamina

from paystream.ledger.errors import InvariantViolation
from paystream.payouts import metrics
from paystream.payouts.pacing import Aimd
from paystream.rail.iso20022 import (
    Instruction,
    InvalidMessage,
    StatusReport,
    build_pain001,
    parse_pacs002,
)

__all__ = ["Bank", "GivenUp", "RailConflict"]

REQUEST_TIMEOUT_S: Final = 10.0
REQUESTS_MAX: Final = 32
"""HTTP requests to the rail at once (the rest wait their turn here). httpcore's pool costs
time quadratic in the requests queued inside it: with 512 queued, 60 % of the connector's
CPU went to assigning them to connections (py-spy), and the queue made timeouts and resends."""
ATTEMPTS_PER_ROUND: Final = 8
ROUND_TIMEOUT_S: Final = 60.0
ROUNDS_MAX: Final = 60
ROUND_PAUSE_S: Final = 5.0
WAIT_INITIAL_S: Final = 0.1
WAIT_MAX_S: Final = 5.0
RETRY_AFTER_MAX_S: Final = 60.0
POLLS_MAX: Final = 2_000
POLL_INTERVAL_S: Final = 0.05
POLL_INTERVAL_MAX_S: Final = 2.0
RESPONSE_BYTES_MAX: Final = 64 * 1024
INVALID_FILE_FORMAT: Final = "FF01"
REASON_TEXT_SHOWN_MAX: Final = 200


class Transient(Exception):
    """The rail did not answer this time; ``retry_after_s`` if it said when to come back."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class RailConflict(InvariantViolation):
    """The rail holds another instruction under this end-to-end id: the connector is wrong."""


class GivenUp(Exception):
    """Every round of retries failed: the payout stays Sending (see the module docs)."""


def _backoff(error: Exception) -> bool | float:
    """stamina's hook: retry transient failures, after ``Retry-After`` when the rail gave one."""
    if not isinstance(error, Transient):
        return False
    return True if error.retry_after_s is None else error.retry_after_s


class Bank:
    def __init__(self, url: str, *, pacing: Aimd, requests_max: int = REQUESTS_MAX) -> None:
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            timeout=REQUEST_TIMEOUT_S,
            limits=httpx.Limits(
                max_connections=requests_max, max_keepalive_connections=requests_max
            ),
        )
        self._requests = asyncio.Semaphore(requests_max)
        self._pacing = pacing
        self._message_number = 0

    async def close(self) -> None:
        await self._client.aclose()

    async def outcome(self, instruction: Instruction) -> StatusReport:
        """The bank's final word (``ACSC`` or ``RJCT``); ``GivenUp`` when it stays away."""
        report = await self._rounds(lambda: self._send(instruction))
        polls = 0
        while report.status == "ACCP":
            if polls >= POLLS_MAX:
                raise GivenUp(f"{instruction.end_to_end_id} still accepted after {polls} polls")
            await asyncio.sleep(min(POLL_INTERVAL_MAX_S, POLL_INTERVAL_S * 2 ** min(polls, 10)))
            polls += 1
            report = await self._rounds(lambda: self._status(instruction.end_to_end_id))
        return report

    async def _rounds(self, call: Callable[[], Awaitable[StatusReport]]) -> StatusReport:
        """``call`` in bounded rounds of bounded retries; ``GivenUp`` after the last round."""
        for _ in range(ROUNDS_MAX):
            try:
                return await self._retried(call)
            except Transient:
                await asyncio.sleep(ROUND_PAUSE_S)
        raise GivenUp(f"the rail did not answer in {ROUNDS_MAX} rounds")

    async def _retried(self, call: Callable[[], Awaitable[StatusReport]]) -> StatusReport:
        async for attempt in stamina.retry_context(
            on=_backoff, attempts=ATTEMPTS_PER_ROUND, timeout=ROUND_TIMEOUT_S,
            wait_initial=WAIT_INITIAL_S, wait_max=WAIT_MAX_S,
        ):  # fmt: skip
            with attempt:
                return await call()
        raise InvariantViolation("stamina ended a retry context without an outcome")

    async def _send(self, instruction: Instruction) -> StatusReport:
        await asyncio.sleep(self._pacing.slot(time.monotonic()))
        self._message_number += 1
        try:
            body = build_pain001(
                instruction,
                message_id=f"ps-{instruction.end_to_end_id}-{self._message_number}"[:35],
                created_at_ms=int(time.time() * 1000),
            )
        except InvalidMessage as error:  # no rail could take it: never sent, funds released
            return _unsendable(instruction, str(error))
        response = await self._request(
            "send", "POST", "/v1/credit-transfers", content=body,
            headers={"Content-Type": "application/xml",
                     "Idempotency-Key": instruction.end_to_end_id},
        )  # fmt: skip
        if response.status_code == 429:
            retry_after_s = _retry_after_s(response) or 1.0
            self._pacing.throttled(time.monotonic(), retry_after_s)
            metrics.RAIL_RATE.set(self._pacing.rate_per_s)
            raise Transient("rate limited", retry_after_s)
        if response.status_code == 409:
            raise RailConflict(f"the rail holds other content for {instruction.end_to_end_id}")
        if response.status_code == 400:
            return _unsendable(instruction, response.text)
        report = self._report(response, instruction.end_to_end_id)
        self._pacing.taken()
        metrics.RAIL_RATE.set(self._pacing.rate_per_s)
        return report

    async def _status(self, end_to_end_id: str) -> StatusReport:
        response = await self._request("status", "GET", f"/v1/credit-transfers/{end_to_end_id}")
        if response.status_code == 404:  # not recorded: the send was lost before the bank
            raise Transient("unknown to the rail")
        return self._report(response, end_to_end_id)

    async def _request(self, kind: str, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            async with self._requests:
                response = await self._client.request(method, path, **options)
        except httpx.TimeoutException as error:
            metrics.RAIL_REQUESTS.labels(kind=kind, outcome="timeout").inc()
            raise Transient(f"timed out: {error}") from error
        except httpx.TransportError as error:
            metrics.RAIL_REQUESTS.labels(kind=kind, outcome="unreachable").inc()
            raise Transient(f"unreachable: {error}") from error
        metrics.RAIL_REQUESTS.labels(kind=kind, outcome=str(response.status_code)).inc()
        if response.status_code >= 500:
            raise Transient(f"HTTP {response.status_code}", _retry_after_s(response))
        return response

    def _report(self, response: httpx.Response, end_to_end_id: str) -> StatusReport:
        if response.status_code != 200:
            raise Transient(f"unexpected HTTP {response.status_code}")
        try:
            report = parse_pacs002(response.content[:RESPONSE_BYTES_MAX])
        except InvalidMessage as error:
            raise Transient(f"an unreadable status report: {error}") from error
        if report.end_to_end_id != end_to_end_id:
            raise RailConflict(f"asked about {end_to_end_id}, told about {report.end_to_end_id}")
        return report


def _unsendable(instruction: Instruction, why: str) -> StatusReport:
    """What the connector reports for an instruction the rail cannot read: ``RJCT FF01``."""
    return StatusReport(
        end_to_end_id=instruction.end_to_end_id, status="RJCT",
        reason_code=INVALID_FILE_FORMAT, reason_text=why[:REASON_TEXT_SHOWN_MAX] or None,
    )  # fmt: skip


def _retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the delay form), bounded; None if absent or a date."""
    value = response.headers.get("Retry-After", "")
    if not value.strip().isdigit():
        return None
    return min(float(value.strip()), RETRY_AFTER_MAX_S)
