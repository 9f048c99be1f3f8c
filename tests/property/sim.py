"""A simulator of paystream's partitioned log around the pure money core.

It plays Kafka, the worker's shell and a hostile client, with none of their I/O:

- ``P`` partitions; a record keyed by an account goes to
  ``partition_for(account_id, P)`` (Kafka's murmur2, as every producer must use);
- FIFO queues per ``(topic, partition)`` for ``commands`` and ``legs``; every
  record gets the next offset of its queue and a log time (``LogAppendTime``):
  a wall clock that moves forward, with occasional small regressions (a new
  leader's clock) and rare jumps past the retention window (a consumer that
  falls days behind), so that command ids and idempotency keys expire;
- each record is delivered exactly once (Kafka transactions): a batch takes
  records of one partition from both topics in any interleaving, and the
  shell turns each into the core's input as the worker will: undecodable
  fields and unknown types become ``Malformed`` (``invalid_field``,
  ``unknown_command``), a record whose partition is not
  ``murmur2(key) % P`` or whose key is not its account becomes ``Malformed``
  (``wrong_partition``);
- per-partition state (accounts, idempotency records, the log clock) written
  back from ``BatchResult`` only, as the worker writes its stores, with
  expired records deleted now and then (the store shrinks; the core must not
  care);
- a global directory fed by ``DirectoryEntry`` outputs a random number of
  steps later (GlobalTable lag), or not at all (``follow_directory=False``).

Every batch is also applied as batches of one and must give the identical
result; those singles attribute every output to its input, and a
:class:`~tests.property.invariants.Trace` checks each step as it happens and
the whole history at the end. A :class:`Client` sends what partners send,
including everything hostile the issue lists.
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    Account,
    CloseAccount,
    Command,
    Compensation,
    Confirmation,
    CreditLeg,
    Delivery,
    Deposit,
    DirectoryEntry,
    FreezeAccount,
    IdempotencyKey,
    IdempotencyRecord,
    Input,
    Leg,
    Malformed,
    OpenAccount,
    RejectionCode,
    Rules,
    Transfer,
    UnfreezeAccount,
    Withdrawal,
    mint_command_id,
    process_batch,
)
from paystream.topology.partitioner import partition_for
from tests.property.invariants import Trace, check_partition
from tests.support.ledger import OTHER_PARTNER, PARTNER, T0_MS, run_in_singles

Topic = Literal["commands", "legs"]
TOPICS: tuple[Topic, ...] = ("commands", "legs")

SIM_RULES = Rules(retention_ms=60_000, future_skew_ms=2_000)
"""A short window, so that keys and command ids expire within one run."""

AVRO_LONG_MIN = -(2**63)
AVRO_LONG_MAX = 2**63 - 1


def partition_of(account_id: str, partition_count: int) -> int:
    """Where a record keyed by ``account_id`` lands (murmur2, as on every producer)."""
    return partition_for(account_id.encode(), partition_count)


# --- what is on the log --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownCommand:
    """A command of a type this version does not know (the shell: ``unknown_command``)."""

    command_type: str
    command_id: str
    request_id: str
    partner_id: str
    issued_at_ms: int
    account_id: str


Payload = Command | UnknownCommand
"""What a client puts on ``commands``; a Command's int fields may lie outside Avro ``long``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogRecord:
    topic: Topic
    partition: int
    offset: int
    log_time_ms: int
    key: str
    value: Payload | Leg


def shell_decode(record: LogRecord, partition_count: int) -> Input:
    """The core's input for ``record``, as the worker's shell makes it (legs pass as they are)."""
    value = record.value
    if isinstance(value, CreditLeg | Confirmation | Compensation):
        return value
    if isinstance(value, UnknownCommand):
        return _malformed(value, value.command_type, "unknown_command")
    command_type = type(value).__name__
    if not _fits_avro(value):
        return _malformed(value, command_type, "invalid_field")
    key = record.key
    if key != value.account_id or partition_of(key, partition_count) != record.partition:
        return _malformed(value, command_type, "wrong_partition")
    return value


def _fits_avro(command: Command) -> bool:
    """Whether every int field is an Avro ``long`` (2**63 cannot be decoded)."""
    return all(
        AVRO_LONG_MIN <= getattr(command, f.name) <= AVRO_LONG_MAX
        for f in dataclasses.fields(command)
        if type(getattr(command, f.name)) is int
    )


def _malformed(value: Payload, command_type: str, code: RejectionCode) -> Malformed:
    return Malformed(
        command_id=value.command_id,
        request_id=value.request_id,
        partner_id=value.partner_id,
        issued_at_ms=value.issued_at_ms,
        account_id=value.account_id,
        command_type=command_type,
        code=code,
    )


# --- the core, applied as batches of one ------------------------------------------------------


# --- the log -----------------------------------------------------------------------------


@dataclass
class PartitionState:
    accounts: dict[str, Account] = field(default_factory=dict)
    idempotency: dict[IdempotencyKey, IdempotencyRecord] = field(default_factory=dict)
    clock_ms: int = 0


@dataclass(frozen=True)
class SimSettings:
    partition_count: int = 4
    batch_size_max: int = 6
    directory_lag_steps_max: int = 4
    follow_directory: bool = True
    """False: the directory stays empty, every destination is left to its partition."""
    tick_ms_max: int = 40
    """The wall clock moves 0..tick_ms_max per client action and per delivery step."""
    jump_per_mille: int = 4
    """Chance per tick of a jump of one to two retention windows."""
    jump_with_legs_in_flight: bool = False
    """False: a jump waits until no transfer or leg is queued. By design a CreditLeg whose
    transfer id has left the retention window stops its partition (a replay guard: see
    ``paystream.ledger.core._process_leg``), so jumps past queued legs are not run."""
    regression_percent: int = 5
    regression_ms_max: int = 1_500
    """A record's log time may lie this far behind the wall clock (< future_skew_ms)."""
    prune_percent: int = 10
    """Chance per batch that the partition deletes its expired idempotency records."""


class LogSim:
    """The partitioned log, the worker's loop and the sinks' view of every output."""

    def __init__(
        self, rng: random.Random, settings: SimSettings = SimSettings(), rules: Rules = SIM_RULES
    ) -> None:
        self.rng = rng
        self.settings = settings
        self.rules = rules
        count = settings.partition_count
        self.wall_ms = T0_MS
        self.partitions = [PartitionState() for _ in range(count)]
        self.queues: dict[tuple[Topic, int], deque[LogRecord]] = {
            (topic, p): deque() for topic in TOPICS for p in range(count)
        }
        self.next_offset: dict[tuple[Topic, int], int] = dict.fromkeys(self.queues, 0)
        self.directory: dict[str, DirectoryEntry] = {}
        self.directory_pending: deque[tuple[int, DirectoryEntry]] = deque()
        self.step_count = 0
        self.jump_due = False
        self.command_records_sent = 0
        self.batches: list[tuple[int, tuple[Delivery, ...]]] = []
        """Every batch delivered, in order: a replayable log per partition."""
        self.trace = Trace(rules, count)

    # -- producing -------------------------------------------------------------------

    def partition_of(self, account_id: str) -> int:
        return partition_of(account_id, self.settings.partition_count)

    def produce(
        self, value: Payload, *, key: str | None = None, partition: int | None = None
    ) -> None:
        """Put a client's record on ``commands``: keyed by its account unless told otherwise."""
        key = value.account_id if key is None else key
        partition = self.partition_of(key) if partition is None else partition
        self._append("commands", partition, key, value)
        self.command_records_sent += 1

    def _append(self, topic: Topic, partition: int, key: str, value: Payload | Leg) -> None:
        offset = self.next_offset[(topic, partition)]
        self.next_offset[(topic, partition)] = offset + 1
        record = LogRecord(
            topic=topic,
            partition=partition,
            offset=offset,
            log_time_ms=self._log_time(),
            key=key,
            value=value,
        )
        self.queues[(topic, partition)].append(record)

    def _log_time(self) -> int:
        settings = self.settings
        if self.rng.randrange(100) < settings.regression_percent:
            return self.wall_ms - self.rng.randint(1, settings.regression_ms_max)
        return self.wall_ms

    def tick(self) -> None:
        """Let the wall clock move; rarely, past a whole retention window."""
        self.wall_ms += self.rng.randint(0, self.settings.tick_ms_max)
        if self.rng.randrange(1000) < self.settings.jump_per_mille:
            self.jump_due = True
        if self.jump_due and (self.settings.jump_with_legs_in_flight or not self._saga_pending()):
            self.jump_due = False
            retention_ms = self.rules.retention_ms
            self.wall_ms += self.rng.randint(retention_ms, 2 * retention_ms)

    def _saga_pending(self) -> bool:
        """Whether a leg or a transfer (whose legs would follow) is still to be delivered."""
        return any(
            topic == "legs" or any(isinstance(r.value, Transfer) for r in queue)
            for (topic, _), queue in self.queues.items()
            if queue
        )

    def account(self, account_id: str) -> Account | None:
        return self.partitions[self.partition_of(account_id)].accounts.get(account_id)

    # -- consuming -------------------------------------------------------------------

    def step(self) -> bool:
        """Deliver one batch; False when nothing is left to deliver or follow."""
        self.step_count += 1
        self.tick()
        self._follow_directory()
        ready = [p for p in range(len(self.partitions)) if self._has_input(p)]
        if not ready:
            return bool(self.directory_pending)
        partition = self.rng.choice(ready)
        records = self._take(partition, self.rng.randint(1, self.settings.batch_size_max))
        self._process(partition, records)
        return True

    def drain(self, steps_max: int = 1_000_000) -> None:
        for _ in range(steps_max):
            if not self.step():
                return
        raise AssertionError("the log did not drain")

    def _has_input(self, partition: int) -> bool:
        return bool(self.queues[("commands", partition)] or self.queues[("legs", partition)])

    def _take(self, partition: int, size: int) -> list[LogRecord]:
        """Up to ``size`` records of one partition, both topics interleaved, each in order."""
        taken: list[LogRecord] = []
        while len(taken) < size:
            ready = [t for t in TOPICS if self.queues[(t, partition)]]
            if not ready:
                break
            taken.append(self.queues[(self.rng.choice(ready), partition)].popleft())
        return taken

    def _follow_directory(self) -> None:
        pending = self.directory_pending
        while pending and pending[0][0] <= self.step_count:
            entry = pending.popleft()[1]
            if self.settings.follow_directory:
                self.directory[entry.account_id] = entry

    def _process(self, partition: int, records: list[LogRecord]) -> None:
        count = self.settings.partition_count
        deliveries = tuple(
            Delivery(item=shell_decode(r, count), offset=r.offset, log_time_ms=r.log_time_ms)
            for r in records
        )
        self.batches.append((partition, deliveries))
        state = self.partitions[partition]
        arguments: dict[str, Any] = {
            "partition": partition,
            "accounts": state.accounts,
            "idempotency": state.idempotency,
            "directory": self.directory,  # a snapshot: not changed while a batch runs
            "clock_ms": state.clock_ms,
            "rules": self.rules,
        }
        result = process_batch(deliveries, **arguments)
        singles, steps = run_in_singles(deliveries, **arguments)
        assert result == singles, "a batch of N differs from N batches of one"
        assert result.clock_ms >= state.clock_ms, "the log clock went back"
        state.accounts.update(result.accounts)
        state.idempotency.update(result.idempotency)
        state.clock_ms = result.clock_ms
        for record, step in zip(records, steps, strict=True):
            self.trace.observe(step, is_command=record.topic == "commands")
        for output in result.outputs:
            self._route(output)
        check_partition(partition, state.accounts, count)
        if self.rng.randrange(100) < self.settings.prune_percent:
            _prune_expired(state)

    def _route(self, output: object) -> None:
        if isinstance(output, CreditLeg | Confirmation | Compensation):
            key = output.account_id
            self._append("legs", self.partition_of(key), key, output)
        elif isinstance(output, DirectoryEntry):
            lag = self.rng.randint(0, self.settings.directory_lag_steps_max)
            last_due = self.directory_pending[-1][0] if self.directory_pending else 0
            self.directory_pending.append((max(self.step_count + lag, last_due), output))

    # -- views for the checks --------------------------------------------------------

    def all_accounts(self) -> list[tuple[int, Account]]:
        return [(p, a) for p, s in enumerate(self.partitions) for a in s.accounts.values()]


def _prune_expired(state: PartitionState) -> None:
    """Delete the records the core already treats as absent (the store shrinks)."""
    expired = [k for k, r in state.idempotency.items() if r.expires_at_ms <= state.clock_ms]
    for key in expired:
        del state.idempotency[key]


# --- a client that behaves like partners do, and like they must not ----------------------------

CURRENCIES = ("EUR", "USD", "JPY")
GHOSTS = ("ghost-1", "ghost-2", "@transit:EUR:0")
CLIENT_DELAY_MS_MAX = 500
"""A command id is minted up to this long before its record is appended."""


@dataclass(frozen=True)
class AccountSpec:
    account_id: str
    currency: str
    partner_id: str
    allow_overdraft: bool


class Client:
    """Sends commands from a seeded ``random.Random``, looking at the current state.

    Most accounts stay usable (closes are capped) so that money keeps moving;
    freezes and closes aim at the two ends of recent transfers to race with
    legs in flight. Every hostile move of issue 12 is one action.
    """

    CLOSE_SHARE = 6
    """At most one account in this many is drained and closed."""
    RECENT_TRANSFER_COUNT = 8
    SENT_KEPT_MAX = 400
    """Records remembered for resends and reuse (a bound, like everything)."""

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
        self.sent: deque[Payload] = deque(maxlen=self.SENT_KEPT_MAX)
        self.recent_transfers: deque[Transfer] = deque(maxlen=self.RECENT_TRANSFER_COUNT)
        self.close_count = 0
        self.sequence = 0
        weighted: list[tuple[int, Callable[[], None]]] = [
            (3, self._send_open_or_mistake),
            (20, self._send_deposit),
            (7, self._send_withdrawal),
            (30, self._send_transfer),
            (6, self._send_freeze_or_unfreeze),
            (3, self._send_close),
            (4, self._send_edge_amount),
            (2, self._send_whale),
            (4, self._resend_record),
            (4, self._resend_request),
            (3, self._send_conflicting_request),
            (3, self._reuse_command_id),
            (2, self._send_cross_partner_request),
            (2, self._send_on_foreign_account),
            (3, self._send_misrouted),
            (1, self._send_unknown_command),
            (3, self._send_bad_command_id),
        ]
        self.actions = [action for _, action in weighted]
        self.weights = [weight for weight, _ in weighted]

    def open_some(self, count: int) -> None:
        for _ in range(min(count, len(self.unopened))):
            self._send_open(self.unopened.pop(0))

    def send_next(self) -> None:
        """One client action (one to three records)."""
        self.sim.tick()
        self.rng.choices(self.actions, self.weights)[0]()

    # -- helpers ---------------------------------------------------------------------

    def _cid(
        self, account_id: str, *, partition: int | None = None, at_ms: int | None = None
    ) -> str:
        """A command id as the API mints it: for the account's partition, a moment ago."""
        if partition is None:
            partition = self.sim.partition_of(account_id)
        if at_ms is None:
            at_ms = self.sim.wall_ms - self.rng.randint(0, CLIENT_DELAY_MS_MAX)
        return mint_command_id(
            partition=partition, at_ms=max(at_ms, 0), random_bytes=self.rng.randbytes(10)
        )

    def _rid(self) -> str:
        self.sequence += 1
        return f"req-{self.sequence}"

    def _head(self, spec: AccountSpec | str, partner_id: str | None = None) -> dict[str, Any]:
        """The fields every command has, for a fresh request on ``spec``."""
        account_id = spec if isinstance(spec, str) else spec.account_id
        if partner_id is None:
            partner_id = spec.partner_id if isinstance(spec, AccountSpec) else PARTNER
        return {
            "command_id": self._cid(account_id),
            "request_id": self._rid(),
            "partner_id": partner_id,
            "issued_at_ms": self.sim.wall_ms,
            "account_id": account_id,
        }

    def _send(
        self, value: Payload, *, key: str | None = None, partition: int | None = None
    ) -> None:
        self.sent.append(value)
        self.sim.produce(value, key=key, partition=partition)

    def _spec(self) -> AccountSpec:
        return self.rng.choice(self.specs)

    def _sent_command(self) -> Command | None:
        commands = [v for v in self.sent if not isinstance(v, UnknownCommand)]
        return self.rng.choice(commands) if commands else None

    def _available(self, spec: AccountSpec) -> int:
        account = self.sim.account(spec.account_id)
        return 0 if account is None else max(account.available_minor, 0)

    def _peers(self, spec: AccountSpec) -> list[AccountSpec]:
        """Accounts a transfer from ``spec`` may legitimately go to."""
        return [
            s
            for s in self.specs
            if s.currency == spec.currency and s.partner_id == spec.partner_id and s is not spec
        ]

    def _peer(self, spec: AccountSpec) -> str:
        """A legitimate destination for ``spec``'s transfers, or any account when it has none."""
        peers = self._peers(spec)
        return self.rng.choice(peers).account_id if peers else self._spec().account_id

    def _recent(self, end: Literal["source", "destination"]) -> AccountSpec:
        ids = [
            t.account_id if end == "source" else t.destination_account_id
            for t in self.recent_transfers
        ]
        specs = [self.by_id[i] for i in ids if i in self.by_id]
        return self.rng.choice(specs) if specs else self._spec()

    def _status(self, spec: AccountSpec) -> str | None:
        account = self.sim.account(spec.account_id)
        return None if account is None else account.status

    def _other_partner(self, partner_id: str) -> str:
        return OTHER_PARTNER if partner_id == PARTNER else PARTNER

    # -- ordinary traffic ----------------------------------------------------------------

    def _send_open(self, spec: AccountSpec) -> None:
        head = self._head(spec)
        self._send(
            OpenAccount(**head, currency=spec.currency, allow_overdraft=spec.allow_overdraft)
        )

    def _send_open_or_mistake(self) -> None:
        """Open the next account, or: one that exists, a bad currency, a system id."""
        if self.unopened and self.rng.randrange(3):
            self._send_open(self.unopened.pop(self.rng.randrange(len(self.unopened))))
            return
        account_id, currency = self.rng.choice(
            [
                (self._spec().account_id, "EUR"),
                (f"new-{self.sequence}", "EURO"),
                ("@settlement:EUR:1", "EUR"),
            ]
        )
        self._send(OpenAccount(**self._head(account_id), currency=currency))

    def _send_deposit(self) -> None:
        spec = self._spec()
        currency = spec.currency if self.rng.randrange(20) else "GBP"
        amount = self.rng.randint(1, 50_000)
        self._send(Deposit(**self._head(spec), amount_minor=amount, currency=currency))

    def _send_withdrawal(self) -> None:
        spec = self._spec()
        available = self._available(spec)
        amount = self.rng.choice([available, available + 1, self.rng.randint(1, 40_000)]) or 1
        self._send(Withdrawal(**self._head(spec), amount_minor=amount, currency=spec.currency))

    def _send_transfer(self) -> None:
        source = self._spec()
        available = self._available(source)
        amount = self.rng.choice([self.rng.randint(1, 9_000)] * 4 + [available, available + 1])
        self._send_transfer_between(source, self._destination(source), amount or 1)

    def _send_transfer_between(self, source: AccountSpec, destination: str, amount: int) -> None:
        transfer = Transfer(
            **self._head(source),
            destination_account_id=destination,
            amount_minor=amount,
            currency=source.currency,
        )
        self.recent_transfers.append(transfer)
        self._send(transfer)

    def _destination(self, source: AccountSpec) -> str:
        roll = self.rng.randrange(100)
        if roll < 5:
            return source.account_id
        if roll < 11:
            return self.rng.choice(GHOSTS)
        if roll < 22:
            return self._spec().account_id  # any partner, any currency
        return self._peer(source)

    # -- status changes racing with transfers in flight ---------------------------------------

    def _send_status(
        self, kind: type[FreezeAccount | UnfreezeAccount | CloseAccount], spec: AccountSpec
    ) -> None:
        self._send(kind(**self._head(spec)))

    def _send_freeze_or_unfreeze(self) -> None:
        """Unfreeze a frozen account, or freeze either end of a recent transfer (or any)."""
        frozen = [s for s in self.specs if self._status(s) == "frozen"]
        roll = self.rng.randrange(8)
        if frozen and roll < 4:
            self._send_status(UnfreezeAccount, self.rng.choice(frozen))
        elif roll < 6:
            self._send_status(FreezeAccount, self._recent("destination"))
        elif roll < 7:
            self._send_status(FreezeAccount, self._recent("source"))
        else:
            self._send_status(FreezeAccount, self._spec())

    def _send_close(self) -> None:
        """Close an account with money in flight, or any account (mostly not empty), or
        drain and close a destination money is on its way to, then send it one more
        transfer; or empty an overdraft account, send money out of it and close it (its
        balance is zero, only the pending transfer holds it open). Draining is capped so
        that money keeps moving."""
        roll = self.rng.randrange(4)
        if roll == 3:
            self._close_overdraft_in_flight()
        elif roll == 0:
            in_flight = [
                s for s in self.specs if (a := self.sim.account(s.account_id)) and a.has_pending
            ]
            self._send_status(
                CloseAccount, self.rng.choice(in_flight) if in_flight else self._recent("source")
            )
        elif roll == 1 or self.close_count * self.CLOSE_SHARE >= len(self.specs):
            self._send_status(CloseAccount, self._spec())
        else:
            self._drain_and_close(self._recent("destination"))

    def _close_overdraft_in_flight(self) -> None:
        spec = self.rng.choice([s for s in self.specs if s.allow_overdraft])
        account = self.sim.account(spec.account_id)
        balance = 0 if account is None else account.balance_minor
        if balance:
            kind = Withdrawal if balance > 0 else Deposit
            self._send(kind(**self._head(spec), amount_minor=abs(balance), currency=spec.currency))
        self._send_transfer_between(spec, self._peer(spec), self.rng.randint(1, 500))
        self._send_status(CloseAccount, spec)

    def _drain_and_close(self, spec: AccountSpec) -> None:
        self.close_count += 1
        available = self._available(spec)
        if available > 0:
            self._send(
                Withdrawal(**self._head(spec), amount_minor=available, currency=spec.currency)
            )
        self._send_status(CloseAccount, spec)
        peers = self._peers(spec)
        if peers:
            self._send_transfer_between(self.rng.choice(peers), spec.account_id, 1)

    # -- amounts at the edges ---------------------------------------------------------------

    def _send_edge_amount(self) -> None:
        """0, 1, -1, 2**63-1, 2**63 (not an Avro long), -2**63-1 on a money command."""
        spec = self._spec()
        amount = self.rng.choice(
            [0, 1, -1, AMOUNT_MAX_MINOR, AMOUNT_MAX_MINOR + 1, AVRO_LONG_MIN - 1]
        )
        kind = self.rng.choice([Deposit, Withdrawal, Transfer])
        if kind is Transfer:
            self._send_transfer_between(spec, self._destination(spec), amount)
            return
        self._send(kind(**self._head(spec), amount_minor=amount, currency=spec.currency))

    def _send_whale(self) -> None:
        """2**63-1 in (settlement shards pass 2**64), or out of an overdraft account (transit)."""
        spec = self._spec()
        if spec.allow_overdraft and self.rng.randrange(2):
            if self.rng.randrange(2):
                self._send_transfer_between(spec, self._peer(spec), AMOUNT_MAX_MINOR)
            else:
                self._send(
                    Withdrawal(
                        **self._head(spec), amount_minor=AMOUNT_MAX_MINOR, currency=spec.currency
                    )
                )
            return
        self._send(
            Deposit(**self._head(spec), amount_minor=AMOUNT_MAX_MINOR, currency=spec.currency)
        )

    # -- repeats, reuse and other partners' keys --------------------------------------------

    def _resend_record(self) -> None:
        """The very same record again (a producer retry outside a transaction)."""
        if self.sent:
            original = self.rng.choice(self.sent)
            self.sim.produce(original)

    def _resend_request(self) -> None:
        """The same request (partner, request id, body) under a new command id (a client retry)."""
        if self.sent:
            original = self.rng.choice(self.sent)
            self._send(
                dataclasses.replace(
                    original,
                    command_id=self._cid(original.account_id),
                    issued_at_ms=self.sim.wall_ms,
                )
            )

    def _send_conflicting_request(self) -> None:
        """The same request id with another body (and a new command id)."""
        original = self._sent_command()
        if original is not None:
            changed = _other_body(original)
            self._send(dataclasses.replace(changed, command_id=self._cid(changed.account_id)))

    def _reuse_command_id(self) -> None:
        """A sent command id on another body, another request id, or another partition."""
        original = self._sent_command()
        if original is None:
            return
        roll = self.rng.randrange(3)
        if roll == 0:
            self._send(dataclasses.replace(_other_body(original), request_id=self._rid()))
        elif roll == 1:
            self._send(dataclasses.replace(original, request_id=self._rid()))
        else:
            here = self.sim.partition_of(original.account_id)
            elsewhere = [s for s in self.specs if self.sim.partition_of(s.account_id) != here]
            spec = self.rng.choice(elsewhere or self.specs)
            deposit = Deposit(**self._head(spec), amount_minor=1, currency=spec.currency)
            self._send(dataclasses.replace(deposit, command_id=original.command_id))

    def _send_cross_partner_request(self) -> None:
        """Another partner's request id: on the owner's account, or on one's own; then maybe
        the owner's own retry, which must still be answered from the owner's key."""
        original = self._sent_command()
        if original is None:
            return
        intruder = self._other_partner(original.partner_id)
        if self.rng.randrange(2):
            target: Payload = dataclasses.replace(original, partner_id=intruder)
        else:
            own = self.rng.choice([s for s in self.specs if s.partner_id == intruder])
            target = Deposit(**self._head(own), amount_minor=7, currency=own.currency)
            target = dataclasses.replace(target, request_id=original.request_id)
        self._send(dataclasses.replace(target, command_id=self._cid(target.account_id)))
        if self.rng.randrange(2):
            self._send(dataclasses.replace(original, command_id=self._cid(original.account_id)))

    def _send_on_foreign_account(self) -> None:
        """A command on an account another partner owns (or a transfer from it)."""
        spec = self._spec()
        head = self._head(spec, self._other_partner(spec.partner_id))
        kind = self.rng.choice(["deposit", "withdrawal", "transfer", "freeze", "close"])
        value: Payload
        if kind == "deposit":
            value = Deposit(**head, amount_minor=100, currency=spec.currency)
        elif kind == "withdrawal":
            value = Withdrawal(**head, amount_minor=1, currency=spec.currency)
        elif kind == "transfer":
            destination = self._peer(spec)
            value = Transfer(
                **head, destination_account_id=destination, amount_minor=1, currency=spec.currency
            )
        else:
            value = (FreezeAccount if kind == "freeze" else CloseAccount)(**head)
        self._send(value)

    # -- records the shell refuses -------------------------------------------------------------

    def _send_misrouted(self) -> None:
        """A valid command on the wrong partition (another partitioner) or under another key."""
        spec = self._spec()
        value = Deposit(**self._head(spec), amount_minor=5, currency=spec.currency)
        count = self.sim.settings.partition_count
        right = self.sim.partition_of(spec.account_id)
        if self.rng.randrange(2) and count > 1:
            wrong = self.rng.choice([p for p in range(count) if p != right])
            self._send(value, partition=wrong)
        else:
            self._send(value, key=self._spec().account_id + self.rng.choice(["", "x"]))

    def _send_unknown_command(self) -> None:
        spec = self._spec()
        self._send(
            UnknownCommand(command_type=self.rng.choice(["Refund", "Payout"]), **self._head(spec))
        )

    def _send_bad_command_id(self) -> None:
        """A command id outside the window, at its edges, or not a command id at all."""
        spec = self._spec()
        deposit = Deposit(**self._head(spec), amount_minor=3, currency=spec.currency)
        partition = self.sim.partition_of(spec.account_id)
        clock_ms = self.sim.partitions[partition].clock_ms
        rules = self.sim.rules
        roll = self.rng.randrange(6)
        if roll == 0:
            at_ms = self.sim.wall_ms - rules.retention_ms - self.rng.randint(1, rules.retention_ms)
        elif roll == 1:
            at_ms = (
                self.sim.wall_ms
                + rules.future_skew_ms
                + self.rng.randint(1, 10 * rules.future_skew_ms)
            )
        elif roll == 2:
            at_ms = clock_ms - rules.retention_ms + self.rng.choice([0, 1])
        elif roll == 3:
            at_ms = max(clock_ms, self.sim.wall_ms) + rules.future_skew_ms + self.rng.choice([0, 1])
        else:
            garbage = self.rng.choice(
                [
                    "cmd-1",
                    "",
                    deposit.command_id.lower(),
                    deposit.command_id + "0",
                    deposit.command_id.replace("-", "-0"),
                ]
            )
            self._send(dataclasses.replace(deposit, command_id=garbage))
            return
        self._send(
            dataclasses.replace(
                deposit, command_id=self._cid(spec.account_id, partition=partition, at_ms=at_ms)
            )
        )


def _other_body(command: Command) -> Command:
    """``command`` with one field changed, same account and request id."""
    if isinstance(command, Deposit | Withdrawal | Transfer):
        amount = command.amount_minor
        return dataclasses.replace(
            command, amount_minor=amount + 1 if amount < AMOUNT_MAX_MINOR else 1
        )
    if isinstance(command, OpenAccount):
        return dataclasses.replace(command, allow_overdraft=not command.allow_overdraft)
    head: dict[str, Any] = {
        "command_id": command.command_id,
        "request_id": command.request_id,
        "partner_id": command.partner_id,
        "issued_at_ms": command.issued_at_ms,
        "account_id": command.account_id,
    }
    if isinstance(command, FreezeAccount):
        return UnfreezeAccount(**head)
    return FreezeAccount(**head)


def simulate(
    seed: int,
    *,
    command_count: int,
    settings: SimSettings = SimSettings(),
    account_count: int = 24,
    steps_per_command: int = 1,
    rules: Rules = SIM_RULES,
) -> LogSim:
    """Run a client against the log, interleaving sends and deliveries, then drain."""
    rng = random.Random(seed)
    sim = LogSim(rng, settings, rules)
    client = Client(sim, rng, account_count=account_count)
    client.open_some(account_count * 2 // 3)
    while sim.command_records_sent < command_count:
        client.send_next()
        for _ in range(rng.randint(0, steps_per_command * 2)):
            sim.step()
    sim.drain()
    return sim
