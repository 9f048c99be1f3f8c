"""``/v1/payout-batches`` and ``/v1/payouts``: money out to external bank accounts.

A batch is checked whole before anything is sent: every beneficiary (``schwifty`` for IBAN
and BIC, the ABA rule for US routing numbers), every currency (the rail's), the batch's size
(``payouts_per_batch_max``) and no payout twice (the same source, beneficiary, amount,
currency and reference: a marketplace paying one seller the same sum twice in one batch is a
bug far more often than an intent; two references make it two payouts). Any fault refuses
the whole batch with a problem and nothing is reserved.

Then each payout becomes a ``RequestPayout`` on its source account's partition. Idempotency
follows the single commands': the ``Idempotency-Key`` names the batch, payout *n*'s request
id is derived from it (``batch <sha256(key)> <n>``: bounded, and never a single command's
key, which has no spaces), and the batch id is a digest of the partner, the key and the
normalised payouts. A retry with the same key and body repeats every payout (``Duplicate``:
the original ids and states come back); the same key with another body conflicts. The first
payout is sent alone and answered before the rest go, so a conflicting retry is refused
(``409 duplicate_conflict``) before any of its payouts is sent -- even one longer than the
original. Each payout is answered once the worker has screened it (held or queued) or
refused it (failed: ``insufficient_funds``, ``account_not_found``, ...); a refusal is that
payout's state, the others go on. ``Prefer: wait=N`` waits up to N s for every payout's
answer and then says ``201``; otherwise, or when the wait runs out, ``202``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from paystream.api import read_models
from paystream.api.auth import Principal
from paystream.api.beneficiary import Beneficiary, BeneficiaryError, checked_beneficiary
from paystream.api.deps import Context, Ctx, Db, caller
from paystream.api.problems import Problem, not_found
from paystream.api.routes.commands import (
    ClientAccountId,
    Currency,
    IdempotencyKey,
    Prefer,
    Reference,
    writer_partner,
)
from paystream.api.schemas import PayoutBatchOut, PayoutOut
from paystream.api.submit import (
    PAYOUT_FLOW,
    Answer,
    checked,
    mint,
    prefer_wait_s,
    rejection,
    request_id,
    submit,
)
from paystream.audit import records
from paystream.ledger import RequestPayout, is_own_event
from paystream.ledger.models import AMOUNT_MAX_MINOR, BENEFICIARY_NAME_LENGTH_MAX
from paystream.rail.iso20022 import PAIN001_AMOUNT_MAX_MINOR
from paystream.settings import PAYOUTS_PER_BATCH_LIMIT

PAYOUT_ID_LENGTH_MAX = 64
PAYOUT_AMOUNT_MAX_MINOR = min(AMOUNT_MAX_MINOR, PAIN001_AMOUNT_MAX_MINOR)
"""A payout the bank rail's message could not carry is refused here, not failed later."""
BATCH_ID_PREFIX = "pb_"
BATCH_ID_DIGEST_CHARS = 32
BATCH_ID_LENGTH_MAX = len(BATCH_ID_PREFIX) + BATCH_ID_DIGEST_CHARS
REQUEST_KEY_DIGEST_CHARS = 40
IBAN_TEXT_LENGTH_MAX = 42
"""An IBAN as people type it: at most 34 characters, in groups of four with spaces."""
ACCOUNT_NUMBER_TEXT_LENGTH_MAX = 34

router = APIRouter(tags=["payouts"])
Reader = Annotated[Principal, Depends(caller("payouts:read"))]
Writer = Annotated[Principal, Depends(caller("payouts:write"))]
PayoutId = Annotated[str, Path(min_length=1, max_length=PAYOUT_ID_LENGTH_MAX)]
BatchId = Annotated[str, Path(min_length=1, max_length=BATCH_ID_LENGTH_MAX)]
_PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"


class BeneficiaryIn(BaseModel):
    """Who is paid: an IBAN (and optionally a BIC), or a US account and ABA routing number."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[
        str,
        StringConstraints(min_length=1, max_length=BENEFICIARY_NAME_LENGTH_MAX, pattern=_PRINTABLE),
    ]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = Field(
        default=None, description="ISO 3166-1 alpha-2; an IBAN's own country when absent"
    )
    iban: (
        Annotated[str, StringConstraints(min_length=1, max_length=IBAN_TEXT_LENGTH_MAX)] | None
    ) = None
    bic: Annotated[str, StringConstraints(min_length=8, max_length=11)] | None = None
    account_number: (
        Annotated[str, StringConstraints(min_length=1, max_length=ACCOUNT_NUMBER_TEXT_LENGTH_MAX)]
        | None
    ) = None
    routing_number: Annotated[str, StringConstraints(pattern=r"^[0-9]{9}$")] | None = None


class PayoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_account: ClientAccountId
    amount_minor: Annotated[
        StrictInt,
        Field(
            gt=0,
            le=PAYOUT_AMOUNT_MAX_MINOR,
            description="At most what a pain.001 carries: 18 digits (the ledger takes 2**63-1)",
        ),
    ]
    currency: Currency
    beneficiary: BeneficiaryIn
    reference: Reference | None = None


class PayoutBatchIn(BaseModel):
    """Payouts from the partner's accounts: at most ``payouts_per_batch_max`` (a body of more
    than the hard limit is not read at all)."""

    model_config = ConfigDict(extra="forbid")
    payouts: Annotated[list[PayoutIn], Field(min_length=1, max_length=PAYOUTS_PER_BATCH_LIMIT)]


BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"model": PayoutBatchOut, "description": "Every payout answered within the wait"},
    202: {"model": PayoutBatchOut, "description": "Accepted; some payouts not answered yet"},
}


@router.post(
    "/v1/payout-batches",
    status_code=202,
    response_model=PayoutBatchOut,
    responses=BATCH_RESPONSES,
)
async def create_payout_batch(
    body: PayoutBatchIn, who: Writer, ctx: Ctx, key: IdempotencyKey, prefer: Prefer = None
) -> JSONResponse:
    """Pay out from the partner's accounts: each payout's funds are reserved, then screened
    (held for review on a hit, else queued for the bank)."""
    key = request_id(key)
    batch_id, commands = batch_commands(body, writer_partner(who), key, ctx)
    sender, follower = ctx.kafka()
    wait_s = prefer_wait_s(prefer)

    async def one(command: RequestPayout) -> Answer:
        return await submit(
            command, send=sender.send, follower=follower, wait_s=wait_s, flow=PAYOUT_FLOW
        )

    first = await one(commands[0])
    if _refusal(first) == "duplicate_conflict":
        raise rejection("duplicate_conflict", first.payment_id)
    answers = [first, *await asyncio.gather(*(one(c) for c in commands[1:]))]
    rows = await asyncio.to_thread(_rows, ctx, commands, answers)
    batch = PayoutBatchOut.of(batch_id, [PayoutOut.of(row) for row in rows])
    done = bool(wait_s) and all(a.terminal for a in answers)
    return JSONResponse(
        batch.model_dump(mode="json"),
        status_code=201 if done else 202,
        headers={"Location": f"/v1/payout-batches/{quote(batch_id, safe='')}"},
    )


@router.get("/v1/payout-batches/{batch_id}", response_model=PayoutBatchOut)
def get_payout_batch(batch_id: BatchId, who: Reader, conn: Db) -> PayoutBatchOut:
    """A batch's payouts, each in its latest state, with totals by status and currency."""
    rows = read_models.batch_payouts(conn, None if who.is_ops else who.partner_id, batch_id)
    if not rows:
        raise not_found(f"payout batch {batch_id}")
    return PayoutBatchOut.of(batch_id, [PayoutOut.of(row) for row in rows])


@router.get("/v1/payouts/{payout_id}", response_model=PayoutOut)
def get_payout(payout_id: PayoutId, who: Reader, conn: Db) -> PayoutOut:
    """A payout's state and its history: every state, who changed it, and why."""
    row = visible_payout(conn, who, payout_id)
    return PayoutOut.of(row, read_models.payout_history(conn, payout_id))


def visible_payout(conn: read_models.Connection, who: Principal, payout_id: str) -> read_models.Row:
    row = read_models.payout(conn, payout_id)
    if row is None or not who.sees(row["partner_id"]):
        raise not_found(f"payout {payout_id}")
    return row


# --- the batch's commands ----------------------------------------------------------------------


def batch_commands(
    body: PayoutBatchIn, partner_id: str, key: str, ctx: Context
) -> tuple[str, list[RequestPayout]]:
    """The batch id and one checked ``RequestPayout`` per payout; a Problem, with every fault
    found, if any payout cannot be sent."""
    if len(body.payouts) > ctx.payouts_per_batch_max:
        raise Problem(
            422, "batch_too_large",
            f"{len(body.payouts)} payouts; a batch carries at most {ctx.payouts_per_batch_max}",
            extra={"limit": ctx.payouts_per_batch_max},
        )  # fmt: skip
    items = [_normalised(n, payout, ctx) for n, payout in enumerate(body.payouts)]
    identities = [_identity(payout, beneficiary) for payout, beneficiary in items]
    _refuse_repeats(identities)
    digest = hashlib.sha256(repr((partner_id, key, identities)).encode()).hexdigest()
    batch_id = BATCH_ID_PREFIX + digest[:BATCH_ID_DIGEST_CHARS]
    key_digest = hashlib.sha256(key.encode()).hexdigest()[:REQUEST_KEY_DIGEST_CHARS]
    commands = []
    for n, (payout, beneficiary) in enumerate(items):
        command_id, at_ms = mint(payout.source_account, ctx.partitions)
        command = RequestPayout(
            command_id=command_id, request_id=f"batch {key_digest} {n}", partner_id=partner_id,
            issued_at_ms=at_ms, account_id=payout.source_account, batch_id=batch_id,
            amount_minor=payout.amount_minor, currency=payout.currency,
            beneficiary_name=beneficiary.name, beneficiary_country=beneficiary.country,
            beneficiary_iban=beneficiary.iban, beneficiary_bic=beneficiary.bic,
            beneficiary_account_number=beneficiary.account_number,
            beneficiary_routing_number=beneficiary.routing_number, reference=payout.reference,
        )  # fmt: skip
        checked(command)
        commands.append(command)
    return batch_id, commands


def _normalised(n: int, payout: PayoutIn, ctx: Context) -> tuple[PayoutIn, Beneficiary]:
    if payout.currency not in ctx.payout_currencies:
        raise Problem(
            422, "currency_not_supported",
            f"payouts[{n}]: the rail pays {', '.join(sorted(ctx.payout_currencies))}",
            extra={"errors": [{"field": f"body.payouts.{n}.currency", "message": "not paid"}]},
        )  # fmt: skip
    b = payout.beneficiary
    try:
        beneficiary = checked_beneficiary(
            name=b.name, country=b.country, iban=b.iban, bic=b.bic,
            account_number=b.account_number, routing_number=b.routing_number,
        )  # fmt: skip
    except BeneficiaryError as error:
        field = f"body.payouts.{n}.beneficiary.{error.field}"
        raise Problem(
            422, "invalid_beneficiary", f"payouts[{n}].beneficiary: {error}",
            extra={"errors": [{"field": field, "message": error.message}]},
        ) from error  # fmt: skip
    return payout, beneficiary


def _identity(payout: PayoutIn, beneficiary: Beneficiary) -> tuple[Any, ...]:
    """What makes a payout the same payout: its fields as they will be sent (normalised)."""
    return (
        payout.source_account, payout.amount_minor, payout.currency, payout.reference,
        beneficiary.name, beneficiary.country, beneficiary.iban, beneficiary.bic,
        beneficiary.account_number, beneficiary.routing_number,
    )  # fmt: skip


def _refuse_repeats(identities: Sequence[tuple[Any, ...]]) -> None:
    seen: dict[tuple[Any, ...], int] = {}
    for n, same in enumerate(identities):
        if same in seen:
            raise Problem(
                422, "duplicate_payout",
                f"payouts[{n}] repeats payouts[{seen[same]}]: give each a reference of its own",
                extra={"errors": [{"field": f"body.payouts.{n}", "message": "a repeat"}]},
            )  # fmt: skip
        seen[same] = n


# --- answers as rows ---------------------------------------------------------------------------


def _refusal(answer: Answer) -> str | None:
    for seen in answer.events:
        if seen.event.type == "Rejected" and seen.event.payment_id == answer.payment_id:
            return seen.event.code
    return None


def _rows(
    ctx: Context, commands: Sequence[RequestPayout], answers: Sequence[Answer]
) -> list[read_models.Row]:
    """Each payout's row as its events say (this process saw them), else as the read model
    says (a repeat answered from an original this process never saw), else as accepted."""
    rows: list[read_models.Row | None] = [_row_from_events(a) for a in answers]
    missing = [n for n, row in enumerate(rows) if row is None]
    if missing:
        with ctx.pool.connection() as conn:
            for n in missing:
                rows[n] = read_models.payout(conn, answers[n].payment_id)
    return [
        row if row is not None else _accepted(command, answer.payment_id)
        for command, answer, row in zip(commands, answers, rows, strict=True)
    ]


def _row_from_events(answer: Answer) -> read_models.Row | None:
    row: tuple[Any, ...] | None = None
    for seen in answer.events:
        event = seen.event
        if event.payment_id != answer.payment_id or not is_own_event(event):
            continue
        if not records.is_payout_state(event):
            continue
        later = records.payout_row(event)
        row = later if row is None else records.PAYOUTS.then(row, later)
    return None if row is None else dict(zip(records.PAYOUTS.columns, row, strict=True))


def _accepted(command: RequestPayout, payout_id: str) -> read_models.Row:
    """A payout in the log that no worker has answered yet (status None: pending)."""
    c = command
    return {
        "payout_id": payout_id, "batch_id": c.batch_id, "partner_id": c.partner_id,
        "account_id": c.account_id, "amount_minor": c.amount_minor, "currency": c.currency,
        "reference": c.reference, "beneficiary_name": c.beneficiary_name,
        "beneficiary_country": c.beneficiary_country, "beneficiary_iban": c.beneficiary_iban,
        "beneficiary_bic": c.beneficiary_bic,
        "beneficiary_account_number": c.beneficiary_account_number,
        "beneficiary_routing_number": c.beneficiary_routing_number, "status": None,
        "code": None, "reason": None, "rule_codes": [], "created_at_ms": c.issued_at_ms,
        "held_at_ms": None, "queued_at_ms": None, "sending_at_ms": None,
        "settled_at_ms": None, "failed_at_ms": None, "updated_at_ms": c.issued_at_ms,
        "last_event_id": None,
    }  # fmt: skip
