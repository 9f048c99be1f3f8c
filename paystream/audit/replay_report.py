"""What a replay found, for people (:meth:`ReplayReport.summary`) and machines (``to_json``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from paystream.audit.snapshot import Snapshot
from paystream.audit.whatif import ChangedPayment, totals_by_currency
from paystream.ledger import Account, JournalEntry

__all__ = ["SHOWN_MAX", "Compared", "Divergence", "DivergenceKind", "ReplayReport", "WhatIf"]

DivergenceKind = Literal[
    "manifest", "inputs", "invariant", "clock", "core_version", "digest", "unreadable",
    "missing", "extra", "differs", "balance", "postgres",
]  # fmt: skip
SHOWN_MAX: Final = 20
"""Ids listed per kind of mismatch (the counts are complete)."""
CHANGED_SHOWN_MAX: Final = 1_000
"""Changed payments listed by a what-if (the totals are complete)."""


@dataclass(frozen=True, slots=True)
class Divergence:
    """One difference between the replay and the record, with where it came from."""

    kind: DivergenceKind
    partition: int
    batch: int | None
    """The manifest's index on its partition (None: found only by the comparison)."""
    worker: str | None
    subject: str
    """What differs: an entry or event id, an account, a run of offsets."""
    detail: str
    command: str | None = None
    """The input that produced it (``topic[partition]@offset``), when replay knows it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "partition": None if self.partition < 0 else self.partition,
            "batch": self.batch, "worker": self.worker, "subject": self.subject,
            "detail": self.detail, "command": self.command,
        }  # fmt: skip


@dataclass(slots=True)
class Compared:
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    """Recorded, not replayed (counted by a full replay only)."""
    extra: list[str] = field(default_factory=list)
    """Replayed, not recorded."""
    differing: list[str] = field(default_factory=list)
    not_compared: int = 0
    """Recorded records outside a partial replay (an account subset, a snapshot, --until)."""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.differing)

    def to_json(self) -> dict[str, Any]:
        return {
            "matched": self.matched, "missing": len(self.missing), "extra": len(self.extra),
            "differing": len(self.differing), "not_compared": self.not_compared,
            "missing_ids": self.missing[:SHOWN_MAX], "extra_ids": self.extra[:SHOWN_MAX],
            "differing_ids": self.differing[:SHOWN_MAX],
        }  # fmt: skip

    def line(self, what: str) -> str:
        skipped = f", {self.not_compared:,} outside this replay" if self.not_compared else ""
        return (
            f"{what}: {self.matched:,} matched, {len(self.missing):,} missing, "
            f"{len(self.extra):,} extra, {len(self.differing):,} differing{skipped}"
        )


@dataclass(slots=True)
class WhatIf:
    """Payments that would have ended differently under other rules."""

    rules: Mapping[str, int]
    payments: int = 0
    changed: list[ChangedPayment] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "rules": dict(self.rules), "payments": self.payments, "changed": len(self.changed),
            "by_currency": totals_by_currency(self.changed),
            "changed_payments": [c.to_json() for c in self.changed[:CHANGED_SHOWN_MAX]],
        }  # fmt: skip

    def lines(self) -> list[str]:
        rules = ", ".join(f"{k}={v}" for k, v in sorted(self.rules.items()))
        lines = [f"what-if ({rules}): {len(self.changed):,} of {self.payments:,} payments "
                 "would have ended differently"]  # fmt: skip
        for currency, total in sorted(totals_by_currency(self.changed).items()):
            lines.append(
                f"  {currency}: {total['payments']:,} payments, moved "
                f"{total['recorded_moved_minor']:,} -> {total['what_if_moved_minor']:,} "
                f"(difference {total['difference_minor']:+,} minor units)"
            )
        for payment in self.changed[:SHOWN_MAX]:
            lines.append(
                f"  {payment.payment_id}: {payment.recorded.end} -> {payment.what_if.end}, "
                f"{payment.difference_minor:+,} {payment.currency or ''}".rstrip()
            )
        return lines


@dataclass(slots=True)
class ReplayReport:
    batches: int = 0
    inputs: int = 0
    commands: int = 0
    seconds: float = 0.0
    partial: bool = False
    """A subset of accounts, a start from a snapshot or an end before the log's end."""
    partitions: list[int] = field(default_factory=list)
    journal_sha256: str = ""
    chains: dict[int, str] = field(default_factory=dict)
    """Per partition, the head of its journal chain (the digest hashes them in order)."""
    journal: Compared = field(default_factory=Compared)
    events: Compared = field(default_factory=Compared)
    postgres: Compared | None = None
    """The journal against the Postgres audit store, when one was given."""
    batch_mismatches: list[Divergence] = field(default_factory=list)
    balance_differences: list[Divergence] = field(default_factory=list)
    balances_compared: int = 0
    accounts: dict[str, Account] = field(default_factory=dict)
    """The replayed accounts (all of them, or the subset asked for and those it touched)."""
    asked_accounts: frozenset[str] = frozenset()
    """The account subset asked for (the summary prints their balances)."""
    shown_accounts: frozenset[str] = frozenset()
    """The subset and every account its transfers touched (compared, and listed in JSON)."""
    first_divergence: Divergence | None = None
    what_if: WhatIf | None = None
    entries: list[JournalEntry] = field(default_factory=list)
    """The replayed journal, in the order replay produced it (for an export)."""
    end_state: Snapshot | None = None
    """Every replayed partition's state at the end, when asked for (for a snapshot)."""

    @property
    def ok(self) -> bool:
        compared = self.journal.ok and self.events.ok
        postgres = self.postgres is None or self.postgres.ok
        return compared and postgres and not self.batch_mismatches and not self.balance_differences

    @property
    def commands_per_s(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0

    def diverged(self, found: Divergence) -> None:
        if self.first_divergence is None:
            self.first_divergence = found

    def to_json(self) -> dict[str, Any]:
        first = self.first_divergence
        return {
            "ok": self.ok, "batches": self.batches, "inputs": self.inputs,
            "commands": self.commands, "seconds": round(self.seconds, 3),
            "commands_per_s": round(self.commands_per_s), "partial": self.partial,
            "partitions": self.partitions, "journal_sha256": self.journal_sha256,
            "chains": {str(p): head for p, head in sorted(self.chains.items())},
            "journal": self.journal.to_json(), "events": self.events.to_json(),
            "postgres": None if self.postgres is None else self.postgres.to_json(),
            "batch_mismatches": len(self.batch_mismatches),
            "balance_differences": len(self.balance_differences),
            "balances_compared": self.balances_compared,
            "balances": {a: _balance(self.accounts[a]) for a in sorted(self.shown_accounts)
                         if a in self.accounts},
            "first_divergence": None if first is None else first.to_json(),
            "what_if": None if self.what_if is None else self.what_if.to_json(),
        }  # fmt: skip

    def summary(self) -> str:
        scope = f" (partial: partitions {self.partitions})" if self.partial else ""
        lines = [
            f"replayed {self.batches:,} batches, {self.inputs:,} inputs ({self.commands:,} "
            f"commands) in {self.seconds:.1f} s: {self.commands_per_s:,.0f} commands/s{scope}",
            f"journal sha256 {self.journal_sha256}",
        ]
        if self.what_if is not None:
            return "\n".join(lines + self.what_if.lines() + self._mismatch_lines())
        lines += [self.journal.line("journal entries"), self.events.line("events")]
        if self.postgres is not None:
            lines.append(self.postgres.line("Postgres journal entries"))
        lines.append(
            f"accounts that differ from the workers' tables: {len(self.balance_differences):,}"
            f" of {self.balances_compared:,} compared"
        )
        for account_id in sorted(self.asked_accounts):
            account = self.accounts.get(account_id)
            lines.append(f"  {account_id}: " + ("never opened" if account is None else (
                f"balance {account.balance_minor:,} {account.currency}, available "
                f"{account.available_minor:,} ({account.status}; posted debits "
                f"{account.posted_debits_minor:,}, credits {account.posted_credits_minor:,}; "
                f"pending debits {account.pending_debits_minor:,}, credits "
                f"{account.pending_credits_minor:,})"
            )))  # fmt: skip
        if self.asked_accounts:
            touched = len(self.shown_accounts - self.asked_accounts)
            lines.append(f"  (and {touched:,} accounts their transfers touched: --json lists "
                         "them)")  # fmt: skip
        return "\n".join(lines + self._mismatch_lines())

    def _mismatch_lines(self) -> list[str]:
        lines = [
            f"batches whose outputs differ from their manifest: {len(self.batch_mismatches):,}"
        ]
        first = self.first_divergence
        if first is not None:
            lines.append("first divergence:")
            lines += [f"  {k}: {v}" for k, v in first.to_json().items() if v is not None]
        if self.what_if is None:
            ok = "OK: the recorded ledger is what the rules produce"
            lines.append(ok if self.ok else "MISMATCH")
        elif self.batch_mismatches:
            lines.append("MISMATCH: the log itself does not replay")
        return lines


def _balance(account: Account) -> dict[str, Any]:
    return {
        "currency": account.currency, "status": account.status,
        "balance_minor": account.balance_minor, "available_minor": account.available_minor,
        "posted_debits_minor": account.posted_debits_minor,
        "posted_credits_minor": account.posted_credits_minor,
        "pending_debits_minor": account.pending_debits_minor,
        "pending_credits_minor": account.pending_credits_minor, "version": account.version,
    }  # fmt: skip
