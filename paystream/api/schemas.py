"""The API's response models (separate from the domain's dataclasses and the store's rows)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from paystream.ledger.models import EventType

PaymentStatus = Literal["pending", "completed", "reversed", "rejected"]
STATUS_OF_EVENT: dict[str, PaymentStatus] = {
    "Debited": "pending",
    "Completed": "completed",
    "Reversed": "reversed",
    "Rejected": "rejected",
}
"""A payment's status from its latest own event."""
EVENT_OF_STATUS = {status: event for event, status in STATUS_OF_EVENT.items()}
PAYMENT_COMMANDS: dict[str, str] = {
    "Transfer": "transfer",
    "Deposit": "deposit",
    "Withdrawal": "withdrawal",
}
"""Commands that move money, as the API names them (account commands are not payments)."""


class LedgerPosition(BaseModel):
    """Where in the ``ledger`` topic the read model was when it was read."""

    partition: int
    offset: int


class AccountOut(BaseModel):
    account_id: str
    currency: str | None
    status: str | None
    partner_id: str | None
    posted_debits_minor: int
    posted_credits_minor: int
    pending_debits_minor: int
    pending_credits_minor: int
    balance_minor: int = Field(description="Posted credits minus posted debits")
    pending_minor: int = Field(description="Pending credits minus pending debits")
    available_minor: int = Field(description="Balance less pending debits: what may be debited")
    version: int
    ledger_position: LedgerPosition | None = Field(
        description="The last ledger record this balance reflects (None: no money moved yet)"
    )

    @classmethod
    def of(cls, row: dict[str, Any]) -> AccountOut:
        position = (
            None
            if row["ledger_partition"] is None
            else LedgerPosition(partition=row["ledger_partition"], offset=row["ledger_offset"])
        )
        posted_d, posted_c = int(row["posted_debits_minor"]), int(row["posted_credits_minor"])
        pending_d, pending_c = int(row["pending_debits_minor"]), int(row["pending_credits_minor"])
        return cls(
            account_id=row["account_id"],
            currency=row["currency"],
            status=row["status"],
            partner_id=row["partner_id"],
            posted_debits_minor=posted_d,
            posted_credits_minor=posted_c,
            pending_debits_minor=pending_d,
            pending_credits_minor=pending_c,
            balance_minor=posted_c - posted_d,
            pending_minor=pending_c - pending_d,
            available_minor=posted_c - posted_d - pending_d,
            version=row["version"],
            ledger_position=position,
        )


class AccountPage(BaseModel):
    items: list[AccountOut]
    next_cursor: str | None


class LineOut(BaseModel):
    entry_id: str
    line_no: int
    payment_id: str
    kind: str
    phase: str
    side: Literal["debit", "credit"]
    amount_minor: int
    currency: str
    issued_at_ms: int
    ledger_position: LedgerPosition

    @classmethod
    def of(cls, row: dict[str, Any]) -> LineOut:
        return cls(
            **{k: row[k] for k in ("entry_id", "line_no", "payment_id", "kind", "phase", "side",
                                   "amount_minor", "currency", "issued_at_ms")},
            ledger_position=LedgerPosition(
                partition=row["ledger_partition"], offset=row["ledger_offset"]
            ),
        )  # fmt: skip


class LinePage(BaseModel):
    items: list[LineOut]
    next_cursor: str | None


class HistoryItem(BaseModel):
    event_id: str
    type: EventType
    code: str | None
    issued_at_ms: int


class PaymentOut(BaseModel):
    payment_id: str
    type: str
    status: PaymentStatus
    code: str | None = Field(description="Why it was rejected or reversed")
    partner_id: str
    from_account: str | None
    to_account: str | None
    amount_minor: int | None
    currency: str | None
    reference: str | None = Field(description="The sender's own words for the payment")
    created_at_ms: int
    debited_at_ms: int | None
    completed_at_ms: int | None
    reversed_at_ms: int | None
    rejected_at_ms: int | None
    updated_at_ms: int
    history: list[HistoryItem] | None = None

    @classmethod
    def of(cls, row: dict[str, Any], history: list[dict[str, Any]] | None = None) -> PaymentOut:
        kind = PAYMENT_COMMANDS[row["command_type"]]
        source, target = row["account_id"], row["counterparty_account_id"]
        from_account, to_account = {
            "transfer": (source, target),
            "deposit": (None, source),
            "withdrawal": (source, None),
        }[kind]
        return cls(
            payment_id=row["payment_id"],
            type=kind,
            status=STATUS_OF_EVENT.get(row["status"] or "", "pending"),
            code=row["code"],
            partner_id=row["partner_id"],
            from_account=from_account,
            to_account=to_account,
            amount_minor=row["amount_minor"],
            currency=row["currency"],
            reference=row["reference"],
            **{k: row[k] for k in ("created_at_ms", "debited_at_ms", "completed_at_ms",
                                   "reversed_at_ms", "rejected_at_ms", "updated_at_ms")},
            history=None if history is None else [HistoryItem(**h) for h in history],
        )  # fmt: skip


class PaymentPage(BaseModel):
    items: list[PaymentOut]
    next_cursor: str | None


class EntryLineOut(BaseModel):
    line_no: int
    account_id: str
    currency: str
    side: Literal["debit", "credit"]
    amount_minor: int


class EntryOut(BaseModel):
    entry_id: str
    payment_id: str
    kind: str
    phase: str
    pending_entry_id: str | None
    issued_at_ms: int
    ledger_position: LedgerPosition
    lines: list[EntryLineOut]

    @classmethod
    def of(cls, row: dict[str, Any]) -> EntryOut:
        return cls(
            **{k: row[k] for k in ("entry_id", "payment_id", "kind", "phase", "pending_entry_id",
                                   "issued_at_ms")},
            ledger_position=LedgerPosition(
                partition=row["ledger_partition"], offset=row["ledger_offset"]
            ),
            lines=[EntryLineOut(**line) for line in row["lines"]],
        )  # fmt: skip


class EntryList(BaseModel):
    items: list[EntryOut]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


# --- payouts ----------------------------------------------------------------------------------

PayoutStatus = Literal["pending", "held", "queued", "sending", "settled", "failed", "rejected"]
PAYOUT_STATUS_OF_EVENT: dict[str, PayoutStatus] = {
    "Held": "held",
    "Queued": "queued",
    "Sending": "sending",
    "Settled": "settled",
    "Failed": "failed",
    "Rejected": "rejected",
}
"""A payout's status from its latest own event (``pending``: accepted, not screened yet)."""
_PAYOUT_TIMES = (
    "created_at_ms", "held_at_ms", "queued_at_ms", "sending_at_ms", "settled_at_ms",
    "failed_at_ms", "updated_at_ms",
)  # fmt: skip


class BeneficiaryOut(BaseModel):
    name: str
    country: str
    iban: str | None
    bic: str | None
    account_number: str | None
    routing_number: str | None


class PayoutHistoryItem(BaseModel):
    event_id: str
    type: EventType
    code: str | None
    reason: str | None
    actor: str | None = Field(description="The officer of a review decision")
    rule_codes: list[str]
    previous_type: EventType | None
    issued_at_ms: int


class PayoutOut(BaseModel):
    payout_id: str
    batch_id: str
    status: PayoutStatus
    code: str | None = Field(
        description="Why it failed: insufficient_funds, review_rejected, bank_rejected, ..."
    )
    reason: str | None = Field(description="An officer's reason, or the bank's reason code")
    rule_codes: list[str] = Field(description="The screening rules it hit")
    source_account: str
    amount_minor: int
    currency: str
    reference: str | None
    beneficiary: BeneficiaryOut
    created_at_ms: int
    held_at_ms: int | None
    queued_at_ms: int | None
    sending_at_ms: int | None
    settled_at_ms: int | None
    failed_at_ms: int | None
    updated_at_ms: int
    history: list[PayoutHistoryItem] | None = None

    @classmethod
    def of(cls, row: dict[str, Any], history: list[dict[str, Any]] | None = None) -> PayoutOut:
        """From a ``payouts`` row (``records.PAYOUTS`` columns; status None: pending)."""
        return cls(
            payout_id=row["payout_id"], batch_id=row["batch_id"],
            status=PAYOUT_STATUS_OF_EVENT.get(row["status"] or "", "pending"),
            code=row["code"], reason=row["reason"], rule_codes=list(row["rule_codes"] or ()),
            source_account=row["account_id"], amount_minor=row["amount_minor"],
            currency=row["currency"], reference=row["reference"],
            beneficiary=BeneficiaryOut(
                name=row["beneficiary_name"], country=row["beneficiary_country"],
                iban=row["beneficiary_iban"], bic=row["beneficiary_bic"],
                account_number=row["beneficiary_account_number"],
                routing_number=row["beneficiary_routing_number"],
            ),
            **{k: row[k] for k in _PAYOUT_TIMES},
            history=None if history is None else [_history_item(h) for h in history],
        )  # fmt: skip


def _history_item(row: dict[str, Any]) -> PayoutHistoryItem:
    return PayoutHistoryItem(**{**row, "rule_codes": list(row.get("rule_codes") or ())})


class BatchTotal(BaseModel):
    """The batch's payouts of one status and currency."""

    status: PayoutStatus
    currency: str
    count: int
    amount_minor: int


class PayoutBatchOut(BaseModel):
    batch_id: str
    count: int
    payouts: list[PayoutOut]
    totals: list[BatchTotal]

    @classmethod
    def of(cls, batch_id: str, payouts: list[PayoutOut]) -> PayoutBatchOut:
        sums: dict[tuple[PayoutStatus, str], tuple[int, int]] = {}
        for p in payouts:
            count, amount = sums.get((p.status, p.currency), (0, 0))
            sums[(p.status, p.currency)] = (count + 1, amount + p.amount_minor)
        totals = [
            BatchTotal(status=status, currency=currency, count=count, amount_minor=amount)
            for (status, currency), (count, amount) in sorted(sums.items())
        ]
        return cls(batch_id=batch_id, count=len(payouts), payouts=payouts, totals=totals)


class ReviewPage(BaseModel):
    """Held payouts waiting for a decision, longest waiting first."""

    items: list[PayoutOut]
    next_cursor: str | None


class DecisionOut(BaseModel):
    event_id: str
    payout_id: str
    partner_id: str
    decision: Literal["approve", "reject", "override"]
    officer: str
    reason: str | None
    rule_codes: list[str]
    status_before: EventType
    status_after: EventType
    decided_at_ms: int

    @classmethod
    def of(cls, row: dict[str, Any]) -> DecisionOut:
        return cls(**{**row, "rule_codes": list(row["rule_codes"] or ())})


class DecisionPage(BaseModel):
    """Review decisions in the order they were made."""

    items: list[DecisionOut]
    next_cursor: str | None
