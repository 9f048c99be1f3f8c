"""A simulator of paystream's partitioned log around the pure money core.

It plays the part of Kafka and the Faust agents, with none of their I/O:

- ``P`` partitions; an account lives on ``crc32(account_id) % P`` (a stand-in for
  murmur2: any deterministic partitioner shows the same interleavings);
- FIFO queues per ``(topic, partition)`` for ``commands`` and ``legs``;
- per-partition state (accounts, idempotency records), written back after each
  batch from ``BatchResult`` only, like an agent writes its tables;
- a global directory updated when ``DirectoryEntry`` outputs are delivered,
  a random number of steps later (GlobalTable lag);
- at each step a seeded ``random.Random`` picks the next non-empty queue and the
  batch size, and sometimes redelivers a slice of already-processed inputs (what
  a consumer does after a crash when the local store is ahead of the offsets).

Every delivered batch is also replayed as batches of one over an overlay and must
give the identical result; that replay attributes outputs to their input, which
the invariant checks need. A ``Client`` generates the commands partners would send,
including the misbehaving ones. Unit tests import the small builders from here too.
"""

from __future__ import annotations

import dataclasses
import random
import zlib
from collections import ChainMap, Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    REJECTION_CODES,
    Account,
    AccountStatus,
    BatchResult,
    CloseAccount,
    Command,
    Compensation,
    CreditLeg,
    Deposit,
    DirectoryEntry,
    Event,
    FreezeAccount,
    IdempotencyKey,
    IdempotencyRecord,
    Input,
    JournalEntry,
    OpenAccount,
    Output,
    Transfer,
    UnfreezeAccount,
    Withdrawal,
    body_sha256,
    check_balanced,
    is_reserved_request_id,
    is_system_account_id,
    process_batch,
)

Topic = Literal["commands", "legs"]
TOPICS: tuple[Topic, ...] = ("commands", "legs")
PARTNER = "p1"
OTHER_PARTNER = "p2"
ISSUED_AT_MS = 1_700_000_000_000


# --- builders (shared with the unit tests) ---------------------------------------------


def make_account(
    account_id: str,
    *,
    currency: str = "EUR",
    partner_id: str = PARTNER,
    status: AccountStatus = "open",
    no_overdraft: bool = True,
    credits_minor: int = 0,
    debits_minor: int = 0,
    version: int = 1,
) -> Account:
    return Account(
        account_id,
        currency,
        partner_id,
        status,
        no_overdraft,
        posted_debits_minor=debits_minor,
        posted_credits_minor=credits_minor,
        version=version,
    )


def directory_of(accounts: Iterable[Account]) -> dict[str, DirectoryEntry]:
    return {
        a.account_id: DirectoryEntry(a.account_id, a.currency, a.partner_id, a.status)
        for a in accounts
    }


def run(
    inputs: Sequence[Input],
    *,
    accounts: Iterable[Account] = (),
    idempotency: Mapping[IdempotencyKey, IdempotencyRecord] | None = None,
    directory: Mapping[str, DirectoryEntry] | None = None,
    partition: int = 0,
) -> BatchResult:
    """``process_batch`` with the given accounts also in the directory by default."""
    account_list = list(accounts)
    return process_batch(
        inputs,
        partition=partition,
        accounts={a.account_id: a for a in account_list},
        idempotency={} if idempotency is None else idempotency,
        directory=directory_of(account_list) if directory is None else directory,
    )


@dataclass(frozen=True)
class SingleStep:
    """One input applied alone: its outputs, and the status of the accounts they post to."""

    outputs: tuple[Output, ...]
    status_before: dict[str, AccountStatus]


def run_in_singles(
    inputs: Sequence[Input],
    *,
    partition: int,
    accounts: Mapping[str, Account],
    idempotency: Mapping[IdempotencyKey, IdempotencyRecord],
    directory: Mapping[str, DirectoryEntry],
) -> tuple[BatchResult, list[SingleStep]]:
    """Apply ``inputs`` as batches of one in sequence; the merged result and every step."""
    changed_accounts: dict[str, Account] = {}
    changed_records: dict[IdempotencyKey, IdempotencyRecord] = {}
    account_view = ChainMap(changed_accounts, accounts)  # type: ignore[arg-type]
    record_view = ChainMap(changed_records, idempotency)  # type: ignore[arg-type]
    steps: list[SingleStep] = []
    for item in inputs:
        result = process_batch(
            [item],
            partition=partition,
            accounts=account_view,
            idempotency=record_view,
            directory=directory,
        )
        posted = {
            line.account_id
            for o in result.outputs
            if isinstance(o, JournalEntry)
            for line in o.lines
            if line.account_id in account_view
        }
        steps.append(SingleStep(result.outputs, {a: account_view[a].status for a in posted}))
        changed_accounts.update(result.accounts)
        changed_records.update(result.idempotency)
    outputs = tuple(output for step in steps for output in step.outputs)
    return BatchResult(changed_accounts, changed_records, outputs), steps


def partition_of(account_id: str, partition_count: int) -> int:
    return zlib.crc32(account_id.encode()) % partition_count


def input_identity(item: Input) -> tuple[str, str]:
    """What makes two deliveries the same input: the command id, or the leg and its transfer."""
    if isinstance(item, CreditLeg | Compensation):
        return (type(item).__name__, item.transfer_id)
    return ("command", item.command_id)


def comparable(outputs: Iterable[Output]) -> tuple[object, ...]:
    """Outputs with each DirectoryEntry reduced to its account: it carries the current state."""
    return tuple(
        ("directory", o.account_id) if isinstance(o, DirectoryEntry) else o for o in outputs
    )


# --- the log -----------------------------------------------------------------------------


@dataclass
class PartitionState:
    accounts: dict[str, Account] = field(default_factory=dict)
    idempotency: dict[IdempotencyKey, IdempotencyRecord] = field(default_factory=dict)


@dataclass(frozen=True)
class SimSettings:
    partition_count: int = 4
    batch_size_max: int = 6
    directory_lag_steps_max: int = 4
    redelivery_percent: int = 6
    redelivery_size_max: int = 4


class LogSim:
    """The partitioned log, the agents' loop and the sinks' deduplicated view of outputs."""

    def __init__(self, rng: random.Random, settings: SimSettings = SimSettings()) -> None:
        self.rng = rng
        self.settings = settings
        count = settings.partition_count
        self.partitions = [PartitionState() for _ in range(count)]
        self.queues: dict[tuple[Topic, int], deque[Input]] = {
            (topic, p): deque() for topic in TOPICS for p in range(count)
        }
        self.history: dict[tuple[Topic, int], list[Input]] = {key: [] for key in self.queues}
        self.directory: dict[str, DirectoryEntry] = {}
        self.directory_pending: deque[tuple[int, DirectoryEntry]] = deque()
        self.step_count = 0
        self.batch_count = 0
        self.redelivery_count = 0
        self.commands: dict[str, Command] = {}
        self.first_outputs: dict[tuple[str, str], tuple[Output, ...]] = {}
        self.journal: dict[str, JournalEntry] = {}
        self.events: dict[str, Event] = {}
        self.deliveries: list[tuple[int, tuple[Input, ...]]] = []
        """Every batch delivered, redeliveries included, in order: a replayable log."""

    # -- producing -------------------------------------------------------------------

    def partition_of(self, account_id: str) -> int:
        return partition_of(account_id, self.settings.partition_count)

    def submit(self, command: Command) -> None:
        if command.command_id not in self.commands:
            self.commands[command.command_id] = command
        self.queues[("commands", self.partition_of(command.account_id))].append(command)

    def account(self, account_id: str) -> Account | None:
        return self.partitions[self.partition_of(account_id)].accounts.get(account_id)

    # -- consuming -------------------------------------------------------------------

    def step(self) -> bool:
        """Deliver one batch (or one redelivery); False when every queue is empty."""
        self.step_count += 1
        self._deliver_directory(self.step_count)
        rng = self.rng
        if rng.randrange(100) < self.settings.redelivery_percent and self._redeliver():
            return True
        ready = [key for key, queue in self.queues.items() if queue]
        if not ready:
            return bool(self.directory_pending)
        topic, partition = rng.choice(ready)
        queue = self.queues[(topic, partition)]
        size = rng.randint(1, min(len(queue), self.settings.batch_size_max))
        batch = [queue.popleft() for _ in range(size)]
        self.history[(topic, partition)].extend(batch)
        self._process(partition, batch)
        return True

    def drain(self, steps_max: int = 1_000_000) -> None:
        for _ in range(steps_max):
            if not self.step():
                return
        raise AssertionError("the log did not drain")

    def _redeliver(self) -> bool:
        candidates = [key for key, done in self.history.items() if done]
        if not candidates:
            return False
        topic, partition = self.rng.choice(candidates)
        done = self.history[(topic, partition)]
        start = self.rng.randrange(len(done))
        size = self.rng.randint(1, self.settings.redelivery_size_max)
        self.redelivery_count += 1
        self._process(partition, done[start : start + size])
        return True

    def _deliver_directory(self, now_step: int) -> None:
        pending = self.directory_pending
        while pending and pending[0][0] <= now_step:
            entry = pending.popleft()[1]
            self.directory[entry.account_id] = entry

    def _process(self, partition: int, batch: list[Input]) -> None:
        self.deliveries.append((partition, tuple(batch)))
        state = self.partitions[partition]
        snapshot = self.directory  # not changed while a batch runs
        result = process_batch(
            batch,
            partition=partition,
            accounts=state.accounts,
            idempotency=state.idempotency,
            directory=snapshot,
        )
        singles, steps = run_in_singles(
            batch,
            partition=partition,
            accounts=state.accounts,
            idempotency=state.idempotency,
            directory=snapshot,
        )
        assert result == singles, "a batch of N differs from N batches of one"
        self._check_directory_outputs(result, state)
        state.accounts.update(result.accounts)
        state.idempotency.update(result.idempotency)
        self.batch_count += 1
        for item, step in zip(batch, steps, strict=True):
            self._collect(item, step)
        for output in result.outputs:
            self._route(output)
        check_no_overdraft(state.accounts.values())

    def _check_directory_outputs(self, result: BatchResult, state: PartitionState) -> None:
        """A DirectoryEntry output carries the account's state when it is emitted."""
        finals = {o.account_id: o for o in result.outputs if isinstance(o, DirectoryEntry)}
        for account_id, entry in finals.items():
            account = result.accounts.get(account_id) or state.accounts[account_id]
            assert entry == DirectoryEntry(
                account_id, account.currency, account.partner_id, account.status
            ), "stale directory entry emitted"

    def _collect(self, item: Input, step: SingleStep) -> None:
        """First delivery: remember its outputs; later ones must re-emit the same."""
        identity = input_identity(item)
        first = self.first_outputs.get(identity)
        if first is not None:
            assert comparable(step.outputs) == comparable(first), f"redelivery differs: {item!r}"
            return
        self.first_outputs[identity] = step.outputs
        check_postings_respect_status(step)
        for output in step.outputs:
            if isinstance(output, JournalEntry):
                assert output.entry_id not in self.journal, f"entry twice: {output.entry_id}"
                self.journal[output.entry_id] = output
            elif isinstance(output, Event):
                assert output.event_id not in self.events, f"event twice: {output.event_id}"
                self.events[output.event_id] = output

    def _route(self, output: Output) -> None:
        if isinstance(output, CreditLeg):
            partition = self.partition_of(output.destination_account_id)
            self.queues[("legs", partition)].append(output)
        elif isinstance(output, Compensation):
            partition = self.partition_of(output.source_account_id)
            self.queues[("legs", partition)].append(output)
        elif isinstance(output, DirectoryEntry):
            lag = self.rng.randint(0, self.settings.directory_lag_steps_max)
            due = max(self.step_count + lag, self._last_directory_due())
            self.directory_pending.append((due, output))

    def _last_directory_due(self) -> int:
        return self.directory_pending[-1][0] if self.directory_pending else 0

    # -- views for the checks --------------------------------------------------------

    def all_accounts(self) -> list[tuple[int, Account]]:
        return [(p, a) for p, s in enumerate(self.partitions) for a in s.accounts.values()]


# --- invariants ----------------------------------------------------------------------------


def check_no_overdraft(accounts: Iterable[Account]) -> None:
    for a in accounts:
        if a.debits_must_not_exceed_credits:
            assert a.posted_debits_minor + a.pending_debits_minor <= a.posted_credits_minor, a


def check_postings_respect_status(step: SingleStep) -> None:
    """Money moves only on open accounts, except a reversal back to its source."""
    for output in step.outputs:
        if not isinstance(output, JournalEntry):
            continue
        for line in output.lines:
            status = step.status_before.get(line.account_id, "open")
            reversal_credit = output.kind == "transfer_reversal" and line.side == "credit"
            assert status == "open" or reversal_credit, (status, output)


def balances_by_currency(accounts: Iterable[Account]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for a in accounts:
        totals[a.currency] += a.balance_minor
    return dict(totals)


def check_final(sim: LogSim) -> None:
    """Every invariant the drained log must satisfy."""
    assert not any(sim.queues.values()), "queues not drained"
    accounts = [a for _, a in sim.all_accounts()]
    check_no_overdraft(accounts)
    _check_journal_balances(sim)
    _check_zero_sum(sim)
    _check_balances_match_journal(sim)
    _check_sagas(sim)
    _check_money_moves_once(sim)
    _check_one_answer_per_command(sim)
    _check_records(sim)


def _check_journal_balances(sim: LogSim) -> None:
    for entry in sim.journal.values():
        check_balanced(entry)
        net: Counter[str] = Counter()
        for line in entry.lines:
            assert 0 < line.amount_minor <= AMOUNT_MAX_MINOR
            net[line.currency] += line.amount_minor if line.side == "debit" else -line.amount_minor
        assert not any(net.values()), entry


def _check_zero_sum(sim: LogSim) -> None:
    accounts = [a for _, a in sim.all_accounts()]
    assert not any(balances_by_currency(accounts).values()), "balances do not sum to zero"
    transit = [a for a in accounts if a.account_id.startswith("@transit:")]
    assert not any(balances_by_currency(transit).values()), "money left in transit"


def _check_balances_match_journal(sim: LogSim) -> None:
    debits: Counter[str] = Counter()
    credits: Counter[str] = Counter()
    for entry in sim.journal.values():
        for line in entry.lines:
            (debits if line.side == "debit" else credits)[line.account_id] += line.amount_minor
    seen: set[str] = set()
    for partition, a in sim.all_accounts():
        seen.add(a.account_id)
        if is_system_account_id(a.account_id):
            assert a.account_id.endswith(f":{partition}"), f"shard on the wrong partition: {a}"
        else:
            assert sim.partition_of(a.account_id) == partition, f"account misplaced: {a}"
        assert a.posted_debits_minor == debits[a.account_id], a
        assert a.posted_credits_minor == credits[a.account_id], a
    assert set(debits) | set(credits) <= seen, "journal names an account no partition holds"


def _check_sagas(sim: LogSim) -> None:
    """Every Debited transfer ends exactly once, Completed or Reversed; nothing else ends."""
    by_type: dict[str, set[str]] = defaultdict(set)
    for event in sim.events.values():
        if event.command_type == "Transfer":
            by_type[event.type].add(event.payment_id)
    debited, completed, reversed_ = by_type["Debited"], by_type["Completed"], by_type["Reversed"]
    assert not completed & reversed_, "a transfer both completed and reversed"
    assert completed | reversed_ == debited, "a debited transfer did not end exactly once"
    kinds: dict[str, list[str]] = defaultdict(list)
    for entry in sim.journal.values():
        kinds[entry.payment_id].append(entry.kind)
    for payment_id in debited:
        expected = "transfer_credit" if payment_id in completed else "transfer_reversal"
        assert sorted(kinds[payment_id]) == sorted(["transfer_debit", expected]), payment_id


def _check_money_moves_once(sim: LogSim) -> None:
    """No (account, request id) moves money twice, whatever the duplicates."""
    payments_by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    for entry in sim.journal.values():
        if entry.kind in ("deposit", "withdrawal", "transfer_debit"):
            command = sim.commands[entry.payment_id]
            payments_by_key[(command.account_id, command.request_id)].add(entry.payment_id)
    for key, payments in payments_by_key.items():
        assert len(payments) == 1, f"{key} moved money {len(payments)} times"


ANSWER_TYPES = frozenset(("Completed", "Debited", "Rejected", "Duplicate"))


def _check_one_answer_per_command(sim: LogSim) -> None:
    for command_id in sim.commands:
        outputs = sim.first_outputs[("command", command_id)]
        answers = [o for o in outputs if isinstance(o, Event) and o.type in ANSWER_TYPES]
        assert len(answers) == 1, (command_id, outputs)
        answer = answers[0]
        assert answer.payment_id == command_id
        assert answer.code is None or answer.code in REJECTION_CODES
        if answer.type == "Duplicate":
            original = sim.commands[answer.original_payment_id or ""]
            command = sim.commands[command_id]
            assert body_sha256(original) == body_sha256(command)
            assert answer.code == _answer_code(sim, original.command_id)


def _answer_code(sim: LogSim, command_id: str) -> str | None:
    for output in sim.first_outputs[("command", command_id)]:
        if isinstance(output, Event) and output.type in ANSWER_TYPES:
            return output.code
    raise AssertionError(f"no answer for {command_id}")


def _check_records(sim: LogSim) -> None:
    """A command's record holds its body hash and the code its first answer carried."""
    for state in sim.partitions:
        for (account_id, request_id), record in state.idempotency.items():
            if is_reserved_request_id(request_id):
                assert record.command_id == request_id.split(":", 1)[1]
                continue  # a saga leg's record, keyed by its transfer
            command = sim.commands[record.command_id]
            assert (command.account_id, command.request_id) == (account_id, request_id)
            assert record.body_sha256 == body_sha256(command)
            assert record.code == _answer_code(sim, command.command_id)


# --- a client that behaves like partners do (and like they should not) --------------------

CURRENCIES = ("EUR", "USD", "JPY")
OVERFLOW_CURRENCY = "JPY"
"""Huge deposits only in this currency, so the others keep moving money normally."""


@dataclass(frozen=True)
class AccountSpec:
    account_id: str
    currency: str
    partner_id: str
    allow_overdraft: bool


class Client:
    """Generates commands from a seeded ``random.Random``, looking at the current state.

    Most accounts stay usable (closing and huge deposits are capped) so that money
    keeps moving; freezes and closes aim at the destinations of recent transfers,
    to race with credit legs still in flight.
    """

    CLOSE_SHARE = 8
    """At most one account in this many is drained and closed."""
    OVERFLOW_DEPOSIT_COUNT_MAX = 6
    RECENT_TRANSFER_COUNT = 8

    def __init__(self, sim: LogSim, rng: random.Random, *, account_count: int = 24) -> None:
        self.sim = sim
        self.rng = rng
        self.specs = [
            AccountSpec(
                f"acc-{i:02d}",
                CURRENCIES[i % len(CURRENCIES)],
                PARTNER if (i // len(CURRENCIES)) % 2 == 0 else OTHER_PARTNER,
                i % 7 == 0,
            )
            for i in range(account_count)
        ]
        self.by_id = {spec.account_id: spec for spec in self.specs}
        self.unopened = list(self.specs)
        self.ghosts = ["ghost-1", "ghost-2", "@transit:EUR:0"]
        self.sent: list[Command] = []
        self.recent_transfers: deque[Transfer] = deque(maxlen=self.RECENT_TRANSFER_COUNT)
        self.close_count = 0
        self.overflow_count = 0
        self.sequence = 0
        weighted: list[tuple[int, Callable[[], None]]] = [
            (3, self._send_open_or_mistake),
            (22, self._send_deposit),
            (8, self._send_withdrawal),
            (34, self._send_transfer),
            (1, self._send_freeze),
            (4, self._send_freeze_recent_destination),
            (2, self._send_freeze_recent_source),
            (5, self._send_unfreeze),
            (1, self._send_close),
            (2, self._send_drain_and_close_recent_destination),
            (9, self._send_exact_duplicate),
            (4, self._send_conflicting_duplicate),
            (3, self._send_invalid_amount),
            (2, self._send_wrong_partner),
            (1, self._send_overflow_deposit),
        ]
        self.actions = [action for _, action in weighted]
        self.weights = [weight for weight, _ in weighted]

    def open_some(self, count: int) -> None:
        for _ in range(min(count, len(self.unopened))):
            self._send_open(self.unopened.pop(0))

    def send_next(self) -> None:
        """One client action (one or two commands)."""
        self.rng.choices(self.actions, self.weights)[0]()

    # -- helpers ---------------------------------------------------------------------

    def _ids(self) -> tuple[str, str, int]:
        self.sequence += 1
        n = self.sequence
        return f"cmd-{n}", f"req-{n}", ISSUED_AT_MS + n

    def _send(self, command: Command) -> None:
        self.sent.append(command)
        self.sim.submit(command)

    def _spec(self) -> AccountSpec:
        return self.rng.choice(self.specs)

    def _available(self, spec: AccountSpec) -> int:
        account = self.sim.account(spec.account_id)
        return 0 if account is None else max(account.available_minor, 0)

    def _recent_destination(self) -> AccountSpec | None:
        targets = [
            self.by_id[t.destination_account_id]
            for t in self.recent_transfers
            if t.destination_account_id in self.by_id
        ]
        return self.rng.choice(targets) if targets else None

    # -- actions ---------------------------------------------------------------------

    def _send_open(self, spec: AccountSpec) -> None:
        cid, rid, at = self._ids()
        self._send(
            OpenAccount(
                cid, rid, spec.partner_id, at, spec.account_id, spec.currency, spec.allow_overdraft
            )
        )

    def _send_open_or_mistake(self) -> None:
        if self.unopened:
            self._send_open(self.unopened.pop(self.rng.randrange(len(self.unopened))))
            return
        cid, rid, at = self._ids()
        account_id, currency = self.rng.choice(
            [(self._spec().account_id, "EUR"), (f"new-{cid}", "EURO"), ("@settlement:EUR:1", "EUR")]
        )
        self._send(OpenAccount(cid, rid, PARTNER, at, account_id, currency))

    def _send_deposit(self) -> None:
        spec = self._spec()
        cid, rid, at = self._ids()
        amount = self.rng.randint(1, 50_000)
        currency = spec.currency if self.rng.randrange(20) else "GBP"
        self._send(Deposit(cid, rid, spec.partner_id, at, spec.account_id, amount, currency))

    def _send_withdrawal(self) -> None:
        spec = self._spec()
        cid, rid, at = self._ids()
        available = self._available(spec)
        amount = self.rng.choice([available, available + 1, self.rng.randint(1, 40_000)]) or 1
        self._send(
            Withdrawal(cid, rid, spec.partner_id, at, spec.account_id, amount, spec.currency)
        )

    def _send_transfer(self) -> None:
        source = self._spec()
        available = self._available(source)
        amount = self.rng.choice([self.rng.randint(1, 9_000)] * 4 + [available, available + 1])
        self._send_transfer_between(source, self._destination(source), amount or 1)

    def _send_transfer_between(self, source: AccountSpec, destination: str, amount: int) -> None:
        cid, rid, at = self._ids()
        transfer = Transfer(
            cid,
            rid,
            source.partner_id,
            at,
            source.account_id,
            destination,
            amount,
            source.currency,
        )
        self.recent_transfers.append(transfer)
        self._send(transfer)

    def _peers(self, spec: AccountSpec) -> list[AccountSpec]:
        """Accounts a transfer from ``spec`` may legitimately go to."""
        return [
            s
            for s in self.specs
            if s.currency == spec.currency and s.partner_id == spec.partner_id and s is not spec
        ]

    def _destination(self, source: AccountSpec) -> str:
        roll = self.rng.randrange(100)
        if roll < 6:
            return source.account_id
        if roll < 12:
            return self.rng.choice(self.ghosts)
        if roll < 22:
            return self._spec().account_id  # any partner, any currency
        return self.rng.choice(self._peers(source)).account_id

    def _send_status(
        self, kind: type[FreezeAccount | UnfreezeAccount | CloseAccount], spec: AccountSpec
    ) -> None:
        cid, rid, at = self._ids()
        self._send(kind(cid, rid, spec.partner_id, at, spec.account_id))

    def _send_freeze(self) -> None:
        self._send_status(FreezeAccount, self._spec())

    def _send_freeze_recent_destination(self) -> None:
        """Freeze an account a transfer may be on its way to."""
        self._send_status(FreezeAccount, self._recent_destination() or self._spec())

    def _send_freeze_recent_source(self) -> None:
        """Freeze an account whose transfer may come back (the reversal must still land)."""
        sources = [self.by_id[t.account_id] for t in self.recent_transfers]
        self._send_status(FreezeAccount, self.rng.choice(sources) if sources else self._spec())

    def _send_unfreeze(self) -> None:
        frozen = [
            s for s in self.specs if (a := self.sim.account(s.account_id)) and a.status == "frozen"
        ]
        self._send_status(UnfreezeAccount, self.rng.choice(frozen or self.specs))

    def _send_close(self) -> None:
        """Mostly refused: the account is not empty (or not found yet, or frozen)."""
        spec = self._spec()
        if self._available(spec) == 0 and self.close_count * self.CLOSE_SHARE >= len(self.specs):
            return
        self.close_count += self._available(spec) == 0
        self._send_status(CloseAccount, spec)

    def _send_drain_and_close_recent_destination(self) -> None:
        """Withdraw everything and close, with a transfer to it on its way (a race)."""
        if self.close_count * self.CLOSE_SHARE >= len(self.specs):
            return
        spec = self._recent_destination() or self._spec()
        self.close_count += 1
        available = self._available(spec)
        if available > 0:
            cid, rid, at = self._ids()
            self._send(
                Withdrawal(cid, rid, spec.partner_id, at, spec.account_id, available, spec.currency)
            )
        self._send_status(CloseAccount, spec)
        peers = self._peers(spec)
        if peers:
            self._send_transfer_between(self.rng.choice(peers), spec.account_id, 1)

    def _send_exact_duplicate(self) -> None:
        """The same request (id and body) again under a new command id."""
        if not self.sent:
            return
        original = self.rng.choice(self.sent)
        cid, _, at = self._ids()
        self._send(dataclasses.replace(original, command_id=cid, issued_at_ms=at))

    def _send_conflicting_duplicate(self) -> None:
        """The same request id with another body."""
        if not self.sent:
            return
        original = self.rng.choice(self.sent)
        cid, _, at = self._ids()
        changed: Command
        if isinstance(original, Deposit | Withdrawal | Transfer):
            changed = dataclasses.replace(
                original, command_id=cid, issued_at_ms=at, amount_minor=original.amount_minor + 1
            )
        elif isinstance(original, FreezeAccount):
            changed = UnfreezeAccount(
                cid, original.request_id, original.partner_id, at, original.account_id
            )
        else:
            changed = FreezeAccount(
                cid, original.request_id, original.partner_id, at, original.account_id
            )
        self._send(changed)

    def _send_invalid_amount(self) -> None:
        spec = self._spec()
        cid, rid, at = self._ids()
        amount = self.rng.choice([0, -1, -50, AMOUNT_MAX_MINOR + 1])
        kind = self.rng.choice([Deposit, Withdrawal, Transfer])
        if kind is Transfer:
            peer = self._destination(spec)
            self._send(
                Transfer(
                    cid, rid, spec.partner_id, at, spec.account_id, peer, amount, spec.currency
                )
            )
            return
        self._send(kind(cid, rid, spec.partner_id, at, spec.account_id, amount, spec.currency))

    def _send_wrong_partner(self) -> None:
        spec = self._spec()
        cid, rid, at = self._ids()
        other = OTHER_PARTNER if spec.partner_id == PARTNER else PARTNER
        self._send(Deposit(cid, rid, other, at, spec.account_id, 100, spec.currency))

    def _send_overflow_deposit(self) -> None:
        """Huge deposits, so that account and settlement turnover reach AMOUNT_MAX_MINOR."""
        if self.overflow_count >= self.OVERFLOW_DEPOSIT_COUNT_MAX:
            return
        self.overflow_count += 1
        specs = [s for s in self.specs if s.currency == OVERFLOW_CURRENCY]
        spec = self.rng.choice(specs)
        cid, rid, at = self._ids()
        amount = AMOUNT_MAX_MINOR // self.rng.choice([2, 3, 5])
        self._send(Deposit(cid, rid, spec.partner_id, at, spec.account_id, amount, spec.currency))


def simulate(
    seed: int,
    *,
    command_count: int,
    settings: SimSettings = SimSettings(),
    account_count: int = 24,
    steps_per_command: int = 1,
) -> LogSim:
    """Run a client against the log, interleaving submissions and deliveries, then drain."""
    rng = random.Random(seed)
    sim = LogSim(rng, settings)
    client = Client(sim, rng, account_count=account_count)
    client.open_some(account_count * 2 // 3)
    while len(client.sent) < command_count:
        client.send_next()
        for _ in range(rng.randint(0, steps_per_command * 2)):
            sim.step()
    sim.drain()
    return sim
