"""A POST becomes a command on Kafka; its answers on ``events`` become the response.

The order, for every command:

1. The ``Idempotency-Key`` becomes the request id; the API mints a time-ordered
   command id (a ULID for the account's partition, the core's rule).
2. The command is put in the log (``acks=all``, idempotent producer). Refused or
   unreachable: ``503`` + ``Retry-After`` -- the command was not accepted.
3. The API waits for the command's first answer (bounded by ANSWER_WAIT_S). The
   worker owning the account's partition is the one authority on idempotency:
   the answer says whether this command made a payment (``Debited``,
   ``Completed``), was refused (``Rejected``: a problem with the core's code) or
   repeated an earlier request with the same key and body (``Duplicate``: the
   response is the original payment's, whoever answered it). That is how 50
   racing requests with one key, on any number of API processes, get one payment
   and the same answer.
4. With ``Prefer: wait=N`` (RFC 7240, at most WAIT_MAX_S) the API then waits for
   the payment's terminal event and for the read models to show it (read your
   writes: the payment row and every journal entry it made, bounded by
   READ_YOUR_WRITES_S), and answers ``201`` with the final state; otherwise, or
   when the wait runs out, ``202`` with the state known so far.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from paystream.api import metrics, read_models
from paystream.api.commands import EventFollower, KafkaUnavailable, Seen, TooManyWaiters
from paystream.api.problems import Problem, unavailable
from paystream.audit import records
from paystream.ledger import Command, is_own_event, mint_command_id
from paystream.ledger.models import RejectionCode
from paystream.topology.dlq import PoisonMessage
from paystream.topology.partitioner import partition_for
from paystream.topology.validation import validate_command

T = TypeVar("T")
IDEMPOTENCY_KEY_LENGTH_MAX = 255
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
"""Printable ASCII without spaces, like Stripe's keys."""
WAIT_MAX_S = 30
ANSWER_WAIT_S = 10.0
READ_YOUR_WRITES_S = 5.0
READ_POLL_S = 0.02
ULID_RANDOM_BYTES = 10

REJECTION_STATUS: dict[RejectionCode, int] = {
    "insufficient_funds": 422,
    "account_not_found": 422,
    "account_closed": 409,
    "account_frozen": 409,
    "account_exists": 409,
    "account_not_empty": 409,
    "account_has_pending": 409,
    "currency_mismatch": 422,
    "same_account": 422,
    "invalid_amount": 422,
    "balance_overflow": 422,
    "amount_over_limit": 422,
    "duplicate_conflict": 409,
    "invalid_field": 422,
    "invalid_beneficiary": 422,
    "payout_not_found": 404,
    "payout_not_held": 409,
    "payout_not_overridable": 409,
}
"""HTTP status of a refused command; codes absent here cannot come from an API-minted
command and answer 500 (a bug)."""
TERMINAL = frozenset(("Completed", "Reversed", "Rejected"))
STATUS_EVENTS = frozenset(("Debited", *TERMINAL))
ANSWERS = frozenset(("Debited", "Completed", "Rejected", "Duplicate"))


@dataclass(frozen=True, slots=True)
class Flow:
    """Which of a command's events answer it (the worker has decided) and which end what the
    API waits for; ``raise_refusal``: a ``Rejected`` answer becomes the request's problem."""

    answers: frozenset[str]
    ends: frozenset[str]
    raise_refusal: bool = True


PAYMENT_FLOW = Flow(answers=ANSWERS, ends=TERMINAL)
PAYOUT_FLOW = Flow(
    answers=frozenset(("Held", "Queued", "Failed", "Rejected", "Duplicate")),
    ends=frozenset(("Held", "Queued", "Failed", "Rejected")),
    raise_refusal=False,
)
"""A payout request is answered, and the batch waits, until it is screened (held or queued)
or refused; a refusal is that payout's state, not the batch's problem."""
ENTRIES_AT_END: dict[tuple[str, str], int] = {
    ("Transfer", "Completed"): 3,  # pending debit, credit, post
    ("Transfer", "Reversed"): 2,  # pending debit, void
    ("Deposit", "Completed"): 1,
    ("Withdrawal", "Completed"): 1,
}
"""Journal entries a payment has made once it ended (none when rejected)."""


def prefer_wait_s(prefer: str | None) -> float | None:
    """``wait=N`` from a Prefer header (RFC 7240), capped; None when absent or unreadable."""
    if not prefer:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "wait" and value.strip().isdigit():
            return float(min(int(value.strip()), WAIT_MAX_S))
    return None


def request_id(key: str) -> str:
    if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise Problem(
            422, "validation_error", "Idempotency-Key must be 1..255 printable ASCII characters",
            extra={"errors": [{"field": "header.idempotency-key", "message": "invalid"}]},
        )  # fmt: skip
    return key


def mint(account_id: str, partitions: int) -> tuple[str, int]:
    """A fresh command id for ``account_id``'s partition, and the time it was minted (ms)."""
    at_ms = int(time.time() * 1000)
    partition = partition_for(account_id.encode(), partitions)
    return mint_command_id(
        partition=partition, at_ms=at_ms, random_bytes=os.urandom(ULID_RANDOM_BYTES)
    ), at_ms


def checked(command: Command) -> Command:
    """The worker's own field checks, before the command leaves: a 422, not a dead letter."""
    try:
        validate_command(command)
    except PoisonMessage as poison:
        raise Problem(422, "validation_error", poison.detail) from poison
    return command


@dataclass(frozen=True, slots=True)
class Answer:
    """What the log said about a submitted command."""

    payment_id: str
    """This command's id, or the original's when it repeated an earlier request."""
    events: list[Seen]
    """The payment's events the API has seen (may be empty: answered before this process)."""
    terminal: bool


async def submit(
    command: Command,
    *,
    send: Callable[[Command], Any],
    follower: EventFollower,
    wait_s: float | None,
    flow: Flow = PAYMENT_FLOW,
) -> Answer:
    kind = type(command).__name__
    try:
        await send(command)
    except KafkaUnavailable as error:
        metrics.COMMANDS.labels(type=kind, outcome="refused_by_kafka").inc()
        raise unavailable(f"the command was not accepted: {error}") from error
    metrics.COMMANDS.labels(type=kind, outcome="accepted").inc()
    try:
        own = await follower.wait(command.command_id, flow_answered(flow), ANSWER_WAIT_S)
    except TooManyWaiters as error:
        raise unavailable(str(error)) from error
    metrics.WAITS.labels(stage="answer", outcome="answered" if own else "timed_out").inc()
    if not own:
        return Answer(command.command_id, [], terminal=False)
    first = next(s.event for s in own if s.event.type in flow.answers)
    if first.type == "Rejected" and flow.raise_refusal:
        raise rejection(first.code, command.command_id)
    payment_id = command.command_id
    if first.type == "Duplicate" and first.original_payment_id is not None:
        payment_id = first.original_payment_id
    events = follower.seen(payment_id)
    ended = flow_ended(flow)
    if wait_s and not ended(events):
        events = await follower.wait(payment_id, ended, wait_s)
        metrics.WAITS.labels(stage="end", outcome="ended" if ended(events) else "timed_out").inc()
    return Answer(payment_id, events, terminal=ended(events))


def flow_answered(flow: Flow) -> Callable[[list[Seen]], bool]:
    return lambda seen: any(s.event.type in flow.answers for s in seen)


def flow_ended(flow: Flow) -> Callable[[list[Seen]], bool]:
    return lambda seen: final_event(seen, flow.ends) is not None


def rejection(code: str | None, payment_id: str) -> Problem:
    status = REJECTION_STATUS.get(code) if code else None  # type: ignore[call-overload]
    if status is None:
        return Problem(500, "internal_error", f"the command was refused as {code}")
    return Problem(status, code, f"refused: {code}", extra={"payment_id": payment_id})  # type: ignore[arg-type]


async def read_your_writes(
    pool_connection: Callable[[], Any], payment_id: str, command_type: str, status: str
) -> read_models.Row | None:
    """The payment's row once the read models show it ended with all its journal entries
    (bounded); the row as it is when the bound runs out (None if absent)."""
    wanted_entries = ENTRIES_AT_END.get((command_type, status), 0)
    row, _entries = await read_model_once(
        lambda: _read_payment(pool_connection, payment_id),
        lambda found: (
            found[0] is not None and found[0]["status"] == status and found[1] >= wanted_entries
        ),
    )
    return row


async def read_model_once(read: Callable[[], T], shows: Callable[[T], bool]) -> T:
    """``read()`` (in a thread) until ``shows`` holds, at most READ_YOUR_WRITES_S; the last
    value read either way."""
    deadline = time.monotonic() + READ_YOUR_WRITES_S
    while True:
        found = await asyncio.to_thread(read)
        if shows(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(READ_POLL_S)


def _read_payment(
    pool_connection: Callable[[], Any], payment_id: str
) -> tuple[read_models.Row | None, int]:
    try:
        with pool_connection() as conn:
            return read_models.payment(conn, payment_id), read_models.entry_count(conn, payment_id)
    except psycopg.OperationalError as error:
        raise unavailable(f"the read models cannot be reached: {error}") from error


def row_from_events(seen: list[Seen]) -> read_models.Row | None:
    """The ``payments`` row the sink will write from these events (its own fold)."""
    row: tuple[Any, ...] | None = None
    for item in seen:
        if not is_own_event(item.event) or item.event.type not in STATUS_EVENTS:
            continue
        later = records.payment_row(item.event)
        row = later if row is None else records.PAYMENTS.then(row, later)
    return None if row is None else dict(zip(records.PAYMENTS.columns, row, strict=True))


def accepted_row(command: Command, payment_id: str) -> read_models.Row:
    """What is known of a payment accepted into the log and not answered yet."""
    counterparty = getattr(command, "destination_account_id", None)
    return {
        "payment_id": payment_id, "command_type": type(command).__name__,
        "partner_id": command.partner_id, "account_id": command.account_id,
        "counterparty_account_id": counterparty,
        "amount_minor": getattr(command, "amount_minor", None),
        "currency": getattr(command, "currency", None), "status": None, "code": None,
        "created_at_ms": command.issued_at_ms, "debited_at_ms": None, "completed_at_ms": None,
        "reversed_at_ms": None, "rejected_at_ms": None, "updated_at_ms": command.issued_at_ms,
        "last_event_id": None, "reference": getattr(command, "reference", None),
    }  # fmt: skip


def final_event(seen: list[Seen], ends: frozenset[str] = TERMINAL) -> Seen | None:
    """The first of the payment's own events that ends it (``ends``)."""
    return next((s for s in seen if s.event.type in ends and is_own_event(s.event)), None)
