"""The invariants of issue 12, checked over the outputs of a simulated log (``sim.py``).

A :class:`Trace` sees every input's single step in delivery order and checks,
as it goes:

- every journal entry balances, its id is new, and its phase is consistent:
  a ``post`` or ``void`` names an earlier ``pending`` entry of the same payment
  with the same lines, and each pending entry is settled at most once;
- every event id is new;
- every command record (hostile ones included) gets exactly ONE answer
  (``Completed``, ``Rejected``, ``Duplicate`` or ``Debited``), with only the
  outputs its kind allows; a ``Debited`` transfer later gets exactly one of
  ``Completed`` or ``Reversed`` from its legs, and each leg runs once, in order,
  carrying the transfer's own fields;
- a verdict that the command's own account can judge is right: an applied
  command found the account owned by its partner and usable, funds were
  there, a withdrawal or transfer was within the rules' amount limit;
  ``insufficient_funds``, ``invalid_amount``, ``amount_over_limit``,
  ``account_not_found`` (on one's own account) and ``account_exists`` were true;
- a command id is applied (moves money, opens or changes an account) at most once;
- money moves only on open client accounts, except a posting or void of a
  reservation (a frozen source still settles);
- a ``DirectoryEntry`` carries the account as it is after the step;
- command ids and request ids follow the rules of ``core.py``, checked
  against a small model of them: an id claims only when it is valid for its
  partition and log clock, and only once; a claimed id repeated is a
  ``Duplicate`` (same body) or ``command_id_reused``; an unclaimed id runs its
  request unless ``(partition, partner, request id)`` ran within the
  retention window, which answers ``Duplicate`` (same body, pointing at the
  original, with its code) or ``duplicate_conflict``. So another partner's
  request id never touches a partner's keys.

After each batch, :func:`check_partition` checks the partition's table: no
no-overdraft account below zero counting pending, closed accounts empty,
every account on its partition, posted and pending sums zero per currency.
At the end, :func:`check_final` adds: tables = a projection of the journal
(posted and pending totals, phases applied), every saga ended, transit
drained, nothing pending, idempotency tables = the model's live keys.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    REJECTION_CODES,
    Account,
    CloseAccount,
    Command,
    Compensation,
    Confirmation,
    CreditLeg,
    Deposit,
    DirectoryEntry,
    Event,
    FreezeAccount,
    IdempotencyKey,
    IdempotencyRecord,
    JournalEntry,
    Malformed,
    OpenAccount,
    Output,
    RejectionCode,
    Rules,
    Transfer,
    UnfreezeAccount,
    Withdrawal,
    body_sha256,
    check_balanced,
    command_id_parts,
    is_system_account_id,
)
from paystream.topology.partitioner import partition_for
from tests.support.ledger import SingleStep

if TYPE_CHECKING:
    from tests.property.sim import LogSim

ANSWER_TYPES = frozenset(("Completed", "Debited", "Rejected", "Duplicate"))
ID_CODES: frozenset[RejectionCode] = frozenset(
    ("command_id_invalid", "command_id_reused", "duplicate_conflict")
)
"""Answers about ids and keys, given before a command runs."""
SHELL_CODES: frozenset[RejectionCode] = frozenset(
    ("wrong_partition", "invalid_field", "unknown_command")
)
"""The shell's refusals, answered through ``Malformed``."""
EXECUTE_CODES: frozenset[RejectionCode] = frozenset(REJECTION_CODES) - ID_CODES - SHELL_CODES
"""Codes a command that ran may be refused with."""
ACCOUNT_COMMANDS = (OpenAccount, FreezeAccount, UnfreezeAccount, CloseAccount)

OUTPUTS_OF_APPLIED: dict[tuple[str, str], tuple[type, ...]] = {
    ("Deposit", "Completed"): (JournalEntry,),
    ("Withdrawal", "Completed"): (JournalEntry,),
    ("Transfer", "Debited"): (JournalEntry, CreditLeg),
    **{(c.__name__, "Completed"): (DirectoryEntry,) for c in ACCOUNT_COMMANDS},
}
"""The outputs besides its answer that an applied command emits, in order."""


@dataclass(frozen=True)
class Execution:
    """A request that ran on a partition: what a live request key holds."""

    clock_ms: int
    body: str
    command_id: str
    code: RejectionCode | None


def id_is_valid(command_id: str, partition: int, clock_ms: int, rules: Rules) -> bool:
    """The window of ``ids.py``: minted for this partition, not expired, not too far ahead."""
    parts = command_id_parts(command_id)
    if parts is None:
        return False
    minted_for, minted_at_ms = parts
    return (
        minted_for == partition
        and clock_ms < minted_at_ms + rules.retention_ms
        and minted_at_ms <= clock_ms + rules.future_skew_ms
    )


class Trace:
    """What the sinks would see, checked step by step; plus a model of the id rules."""

    def __init__(self, rules: Rules, partition_count: int) -> None:
        self.rules = rules
        self.partition_count = partition_count
        self.journal: dict[str, JournalEntry] = {}
        """Every entry in emission order (a dict keeps insertion order)."""
        self.settled: dict[str, str] = {}
        """Pending entry id -> the post or void entry that settled it."""
        self.events: dict[str, Event] = {}
        self.claims: dict[str, str] = {}
        """Command id -> body hash of the input that claimed it."""
        self.canonical: dict[str, tuple[str, Event]] = {}
        """Command id -> (body, answer) of the input that claimed it."""
        self.executions: dict[tuple[int, str, str], Execution] = {}
        self.sagas: dict[str, str] = {}
        """Transfer id -> stage: debited, confirmed, compensated, completed, reversed."""
        self.saga_legs: dict[str, tuple[object, ...]] = {}
        """Transfer id -> the fields its CreditLeg carried (every later leg repeats them)."""
        self.applied: set[str] = set()
        self.command_steps = 0
        self.answers: Counter[tuple[str, str | None]] = Counter()
        self.reasons: Counter[str] = Counter()
        self.reruns_after_expiry = 0
        """Requests that ran again because their key had expired."""

    # -- one step -----------------------------------------------------------------------

    def observe(self, step: SingleStep, *, is_command: bool) -> None:
        item = step.delivery.item
        assert is_command == isinstance(item, _COMMAND_INPUTS), (
            f"input on the wrong topic: {item!r}"
        )
        for output in step.outputs:
            self._collect(output)
        _check_postings_respect_status(step)
        _check_directory_entries(step)
        if isinstance(item, Malformed):
            self._observe_malformed(step, item)
        elif isinstance(item, CreditLeg | Confirmation | Compensation):
            self._observe_leg(step, item)
        else:
            self._observe_command(step, item)

    def _collect(self, output: Output) -> None:
        if isinstance(output, JournalEntry):
            check_balanced(output)
            assert output.entry_id not in self.journal, f"journal id twice: {output.entry_id}"
            if output.phase in ("post", "void"):
                self._settle(output)
            else:
                assert output.pending_entry_id is None, output
            self.journal[output.entry_id] = output
        elif isinstance(output, Event):
            assert output.event_id not in self.events, f"event id twice: {output.event_id}"
            assert output.event_id.startswith(output.payment_id + ":"), output
            self.events[output.event_id] = output

    def _settle(self, entry: JournalEntry) -> None:
        pending_id = entry.pending_entry_id or ""
        pending = self.journal.get(pending_id)
        assert pending is not None, f"{entry.entry_id} settles no earlier entry"
        assert pending.phase == "pending" and pending.payment_id == entry.payment_id, entry
        assert pending.lines == entry.lines, f"{entry.entry_id} settles other lines"
        assert pending_id not in self.settled, f"{pending_id} settled twice"
        self.settled[pending_id] = entry.entry_id

    def _answer(self, step: SingleStep, command_id: str) -> Event:
        events = [o for o in step.outputs if isinstance(o, Event)]
        assert len(events) == 1, f"not exactly one answer: {step.outputs!r}"
        answer = events[0]
        assert answer.type in ANSWER_TYPES and answer.payment_id == command_id, answer
        assert answer.code is None or answer.code in REJECTION_CODES, answer
        if answer.type == "Rejected":
            assert answer.code is not None, answer
        elif answer.type != "Duplicate":
            assert answer.code is None, answer
        self.command_steps += 1
        self.answers[(answer.type, answer.code)] += 1
        return answer

    def _position_id(self, step: SingleStep, command_id: str, name: str) -> str:
        return f"{command_id}:{name}:{step.partition}.{step.delivery.offset}"

    def _observe_malformed(self, step: SingleStep, item: Malformed) -> None:
        """Rejected with the shell's code; it claims a free, valid id (not on a wrong partition)."""
        answer = self._answer(step, item.command_id)
        assert step.outputs == (answer,) and answer.type == "Rejected", step.outputs
        assert answer.code == item.code and item.code in SHELL_CODES, answer
        cid = item.command_id
        valid = id_is_valid(cid, step.partition, step.clock_ms, self.rules)
        if item.code != "wrong_partition" and valid and cid not in self.claims:
            assert answer.event_id == f"{cid}:rejected", answer
            self._claim(cid, body_sha256(item), answer)
        else:
            assert answer.event_id == self._position_id(step, cid, "rejected"), answer

    def _claim(self, command_id: str, body: str, answer: Event) -> None:
        self.claims[command_id] = body
        self.canonical[command_id] = (body, answer)

    def _observe_command(self, step: SingleStep, command: Command) -> None:
        cid = command.command_id
        answer = self._answer(step, cid)
        self._check_outputs_of(step, command, answer)
        _check_verdict(step, command, answer, self.rules)
        body = body_sha256(command)
        if not id_is_valid(cid, step.partition, step.clock_ms, self.rules):
            assert answer.code == "command_id_invalid", (command, answer)
            assert answer.event_id == self._position_id(step, cid, "rejected"), answer
        elif cid in self.claims:
            self._check_second_use(step, command, body, answer)
        else:
            self._claim(cid, body, answer)
            self._check_request(step, command, body, answer)

    def _check_outputs_of(self, step: SingleStep, command: Command, answer: Event) -> None:
        """Only the outputs its kind allows; applied at most once per command id."""
        others = tuple(type(o) for o in step.outputs if not isinstance(o, Event))
        key = (type(command).__name__, answer.type)
        assert others == OUTPUTS_OF_APPLIED.get(key, ()), (command, step.outputs)
        if others:
            assert command.command_id not in self.applied, f"applied twice: {command!r}"
            self.applied.add(command.command_id)
        if isinstance(command, Transfer) and answer.type == "Debited":
            (leg,) = [o for o in step.outputs if isinstance(o, CreditLeg)]
            assert _leg_fields(leg) == (
                command.command_id,
                command.request_id,
                command.partner_id,
                command.account_id,
                command.destination_account_id,
                command.amount_minor,
                command.currency,
            ), (command, leg)
            self.sagas[command.command_id] = "debited"
            self.saga_legs[command.command_id] = _leg_fields(leg)

    def _check_second_use(
        self, step: SingleStep, command: Command, body: str, answer: Event
    ) -> None:
        cid = command.command_id
        if self.claims[cid] != body:
            assert answer.code == "command_id_reused", (command, answer)
            assert answer.event_id == self._position_id(step, cid, "rejected"), answer
            return
        assert answer.type == "Duplicate", (command, answer)
        assert answer.event_id == self._position_id(step, cid, "duplicate"), answer
        self._check_duplicate_points_at_original(body, answer)

    def _check_duplicate_points_at_original(self, body: str, answer: Event) -> None:
        original = self.canonical.get(answer.original_payment_id or "")
        assert original is not None, f"duplicate of nothing: {answer!r}"
        original_body, original_answer = original
        assert original_body == body, f"duplicate of another body: {answer!r}"
        assert original_answer.type != "Duplicate", answer
        assert answer.code == original_answer.code, (answer, original_answer)

    def _check_request(self, step: SingleStep, command: Command, body: str, answer: Event) -> None:
        """A newly claimed id: run, unless the request key is live (Duplicate or conflict)."""
        cid = command.command_id
        key = (step.partition, command.partner_id, command.request_id)
        last = self.executions.get(key)
        live = last is not None and step.clock_ms < last.clock_ms + self.rules.retention_ms
        if not live:
            ran = answer.type in ("Completed", "Debited") or answer.code in EXECUTE_CODES
            assert ran and answer.event_id == f"{cid}:{answer.type.lower()}", (command, answer)
            self.executions[key] = Execution(step.clock_ms, body, cid, answer.code)
            self.reruns_after_expiry += last is not None and last.body == body
            return
        assert last is not None
        if last.body == body:
            assert answer.type == "Duplicate" and answer.event_id == f"{cid}:duplicate", answer
            assert answer.original_payment_id == last.command_id, (answer, last)
            self._check_duplicate_points_at_original(body, answer)
        else:
            assert answer.code == "duplicate_conflict", (command, answer, last)
            assert answer.event_id == f"{cid}:rejected", answer

    def _observe_leg(self, step: SingleStep, leg: CreditLeg | Confirmation | Compensation) -> None:
        """Each leg once, in saga order, with exactly the outputs of its outcome."""
        stage = self.sagas.get(leg.transfer_id)
        assert _leg_fields(leg) == self.saga_legs.get(leg.transfer_id), (
            f"leg of another transfer: {leg!r}"
        )
        if isinstance(leg, CreditLeg):
            assert stage == "debited", f"credit leg at stage {stage}: {leg!r}"
            self.sagas[leg.transfer_id] = self._credit_outcome(step, leg)
            return
        expected_stage, name, code = (
            ("confirmed", "completed", None)
            if isinstance(leg, Confirmation)
            else ("compensated", "reversed", leg.reason)
        )
        assert stage == expected_stage, (stage, leg)
        assert tuple(type(o) for o in step.outputs) == (JournalEntry, Event), step.outputs
        entry, event = step.outputs
        assert isinstance(entry, JournalEntry) and isinstance(event, Event)
        assert entry.entry_id == f"{leg.transfer_id}:{'post' if code is None else 'void'}", entry
        assert event.event_id == f"{leg.transfer_id}:{name}", event
        assert (event.type, event.code) == (name.capitalize(), code), event
        self.sagas[leg.transfer_id] = name
        self.answers[(event.type, event.code)] += 1

    def _credit_outcome(self, step: SingleStep, leg: CreditLeg) -> str:
        """Credited (J2 and a Confirmation) or refused (a Compensation), for the same money."""
        fields = _leg_fields(leg)
        if len(step.outputs) == 1:
            (compensation,) = step.outputs
            assert isinstance(compensation, Compensation), step.outputs
            assert compensation.reason in EXECUTE_CODES, compensation
            assert _leg_fields(compensation) == fields, compensation
            self.reasons[compensation.reason] += 1
            return "compensated"
        entry, confirmation = step.outputs
        assert isinstance(entry, JournalEntry) and entry.entry_id == f"{leg.transfer_id}:credit"
        assert isinstance(confirmation, Confirmation), step.outputs
        assert _leg_fields(confirmation) == fields, confirmation
        return "confirmed"

    # -- the end ---------------------------------------------------------------------------

    def check_sagas_ended(self) -> None:
        open_sagas = {t: s for t, s in self.sagas.items() if s not in ("completed", "reversed")}
        assert not open_sagas, f"sagas not ended: {open_sagas}"
        unsettled = [
            i for i, e in self.journal.items() if e.phase == "pending" and i not in self.settled
        ]
        assert not unsettled, f"pending entries never posted or voided: {unsettled}"
        for tid, stage in self.sagas.items():
            steps = ["debit", "credit", "post"] if stage == "completed" else ["debit", "void"]
            named = sorted(i for i in self.journal if self.journal[i].payment_id == tid)
            assert named == sorted(f"{tid}:{s}" for s in steps), (tid, named)


def _leg_fields(leg: CreditLeg | Confirmation | Compensation) -> tuple[object, ...]:
    """What every leg of one transfer repeats from step 1."""
    return (
        leg.transfer_id,
        leg.request_id,
        leg.partner_id,
        leg.source_account_id,
        leg.destination_account_id,
        leg.amount_minor,
        leg.currency,
    )


def _check_verdict(step: SingleStep, command: Command, answer: Event, rules: Rules) -> None:
    """What can be judged from the command's own account before the step: an applied
    command found it usable, and a refusal for its funds, owner or amount was right."""
    account = step.before[command.account_id]
    amount = command.amount_minor if isinstance(command, Deposit | Withdrawal | Transfer) else 1
    owned = account is not None and account.partner_id == command.partner_id
    if answer.type in ("Completed", "Debited") and not isinstance(command, OpenAccount):
        assert account is not None and owned and account.status != "closed", (command, account)
        if isinstance(command, Deposit | Withdrawal | Transfer):
            assert account.status == "open" and account.currency == command.currency, command
            assert 0 < amount <= AMOUNT_MAX_MINOR, command
        if isinstance(command, Withdrawal | Transfer):
            assert amount <= rules.amount_max_minor, (command, rules)
        if isinstance(command, Withdrawal | Transfer) and account.debits_must_not_exceed_credits:
            assert account.available_minor >= amount, (command, account)
    elif answer.type == "Completed":
        assert account is None and not is_system_account_id(command.account_id), command
    code = answer.code if answer.type == "Rejected" else None
    if code == "insufficient_funds":
        assert account is not None and account.debits_must_not_exceed_credits, command
        assert account.available_minor < amount, (command, account)
    elif code == "invalid_amount":
        assert not 0 < amount <= AMOUNT_MAX_MINOR, command
    elif code == "amount_over_limit":
        assert isinstance(command, Withdrawal | Transfer), command
        assert rules.amount_max_minor < amount <= AMOUNT_MAX_MINOR, (command, rules)
    elif code == "account_not_found" and not isinstance(command, Transfer):
        assert not owned or is_system_account_id(command.account_id), (command, account)
    elif code == "account_exists":
        assert account is not None or is_system_account_id(command.account_id), command


_COMMAND_INPUTS = (
    OpenAccount,
    FreezeAccount,
    UnfreezeAccount,
    CloseAccount,
    Deposit,
    Withdrawal,
    Transfer,
    Malformed,
)


def _check_postings_respect_status(step: SingleStep) -> None:
    """Money moves only on open client accounts; a reservation settles on any but closed."""
    for output in step.outputs:
        if not isinstance(output, JournalEntry):
            continue
        for line in output.lines:
            if is_system_account_id(line.account_id):
                continue
            account = step.before.get(line.account_id)
            assert account is not None, f"posting to an account that does not exist: {output!r}"
            if output.phase in ("posted", "pending"):
                assert account.status == "open", (account, output)
            else:
                assert account.status != "closed", (account, output)


def _check_directory_entries(step: SingleStep) -> None:
    for output in step.outputs:
        if isinstance(output, DirectoryEntry):
            account = step.after.get(output.account_id)
            assert account is not None, output
            expected = DirectoryEntry(
                account.account_id, account.currency, account.partner_id, account.status
            )
            assert output == expected, f"stale directory entry: {output!r} for {account!r}"


# --- a partition's table, after each batch --------------------------------------------------


def check_partition(partition: int, accounts: Mapping[str, Account], partition_count: int) -> None:
    posted: Counter[str] = Counter()
    pending: Counter[str] = Counter()
    for account in accounts.values():
        check_account(account)
        assert home_partition(account.account_id, partition_count) == partition, account
        posted[account.currency] += account.balance_minor
        pending[account.currency] += account.pending_credits_minor - account.pending_debits_minor
    assert not any(posted.values()), f"posted balances do not sum to zero: {dict(posted)}"
    assert not any(pending.values()), f"pending totals do not sum to zero: {dict(pending)}"


def check_account(account: Account) -> None:
    a = account
    if a.debits_must_not_exceed_credits:
        assert a.available_minor >= 0, f"no-overdraft account below zero: {a!r}"
    if a.status == "closed":
        assert a.balance_minor == 0 and not a.has_pending, f"closed account not empty: {a!r}"
    assert min(a.posted_debits_minor, a.posted_credits_minor) >= 0, a
    assert min(a.pending_debits_minor, a.pending_credits_minor) >= 0, a


@functools.cache
def home_partition(account_id: str, partition_count: int) -> int:
    """A client account's partition by murmur2; a system shard's from its id."""
    if is_system_account_id(account_id):
        return int(account_id.rsplit(":", 1)[1])
    return partition_for(account_id.encode(), partition_count)


# --- the end of a run ------------------------------------------------------------------------


def check_final(sim: LogSim) -> None:
    """Every invariant the drained log must satisfy."""
    assert not any(sim.queues.values()), "queues not drained"
    trace = sim.trace
    assert trace.command_steps == sim.command_records_sent, "a command record got no answer"
    trace.check_sagas_ended()
    accounts = [a for _, a in sim.all_accounts()]
    for partition, state in enumerate(sim.partitions):
        check_partition(partition, state.accounts, sim.settings.partition_count)
    check_tables_match_journal(accounts, trace.journal.values())
    _check_quiescent(accounts)
    for partition, state in enumerate(sim.partitions):
        _check_request_keys(trace, partition, state.idempotency, state.clock_ms)


def projection(journal: Iterable[JournalEntry]) -> dict[str, tuple[int, int, int, int]]:
    """Per account, (posted debits, posted credits, pending debits, pending credits)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for entry in journal:
        for line in entry.lines:
            assert 0 < line.amount_minor <= AMOUNT_MAX_MINOR, entry
            t = totals[line.account_id]
            posted, pending = (0, 2) if line.side == "debit" else (1, 3)
            if entry.phase in ("posted", "post"):
                t[posted] += line.amount_minor
            if entry.phase == "pending":
                t[pending] += line.amount_minor
            if entry.phase in ("post", "void"):
                t[pending] -= line.amount_minor
    return {a: (t[0], t[1], t[2], t[3]) for a, t in totals.items()}


def check_tables_match_journal(
    accounts: Iterable[Account], journal: Iterable[JournalEntry]
) -> None:
    expected = projection(journal)
    seen: set[str] = set()
    for a in accounts:
        seen.add(a.account_id)
        totals = (
            a.posted_debits_minor,
            a.posted_credits_minor,
            a.pending_debits_minor,
            a.pending_credits_minor,
        )
        assert totals == expected.get(a.account_id, (0, 0, 0, 0)), (a, expected.get(a.account_id))
    assert set(expected) <= seen, f"journal names accounts no table holds: {set(expected) - seen}"


def _check_quiescent(accounts: list[Account]) -> None:
    """Nothing pending anywhere; the transit shards of each currency sum to zero."""
    pending = [a for a in accounts if a.has_pending]
    assert not pending, f"reservations left at quiescence: {pending}"
    transit: Counter[str] = Counter()
    for a in accounts:
        if a.account_id.startswith("@transit:"):
            transit[a.currency] += a.balance_minor
    assert not any(transit.values()), f"money left in transit: {dict(transit)}"


def _check_request_keys(
    trace: Trace,
    partition: int,
    records: Mapping[IdempotencyKey, IdempotencyRecord],
    clock_ms: int,
) -> None:
    """The live request keys of a partition are exactly the model's, partner by partner."""
    live = {
        (key[1], key[2]): record
        for key, record in records.items()
        if key[0] == "request" and clock_ms < record.expires_at_ms
    }
    expected = {
        (partner, request_id): execution
        for (p, partner, request_id), execution in trace.executions.items()
        if p == partition and clock_ms < execution.clock_ms + trace.rules.retention_ms
    }
    assert live.keys() == expected.keys(), (partition, live.keys() ^ expected.keys())
    for key, record in live.items():
        e = expected[key]
        assert (record.command_id, record.body_sha256, record.code) == (
            e.command_id,
            e.body,
            e.code,
        )
        assert record.expires_at_ms == e.clock_ms + trace.rules.retention_ms, (key, record)
