"""Helpers for the hostile-input end-to-end tests (issue 12).

A :class:`Client` builds commands as a partner would under the new rules: every
command id is minted for the partition of the command's account, at the current
time. The other helpers wait on the real wire with named bounds, put records
where a misbehaving producer would, and read back answers, dead letters and the
ledger for one test's accounts and currency only (the tests share a platform).
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer
from fastavro import parse_schema, schemaless_writer

from paystream.ledger import Command, Deposit, DirectoryEntry, Event, OpenAccount, Transfer
from paystream.ledger.ids import mint_command_id
from paystream.runner import Platform
from paystream.settings import KafkaConnection
from paystream.tables import codecs
from paystream.topology import records
from paystream.topology.avro import SCHEMA_DIR
from paystream.topology.partitioner import partition_for
from paystream.topology.reader import read_to_end
from paystream.topology.registry import registry_from_url

EVENT_WAIT_S = 60.0
"""Longest wait for an answer that a healthy platform gives in well under a second."""
SETTLE_S = 5.0
"""Longest wait, after a barrier was answered, for answers already committed before it."""
FLUSH_TIMEOUT_S = 30.0
FILL_QUEUE_MESSAGES_MAX = 100_000
ACCOUNT_SEARCH_MAX = 10_000
"""Random account ids tried to find one on a wanted partition (1 in 8 fits)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def partition_of(account_id: str, partitions: int) -> int:
    return partition_for(account_id.encode(), partitions)


def mint(account_id: str, partitions: int, *, at_ms: int) -> str:
    """A command id for ``account_id``'s partition, minted at ``at_ms``."""
    return mint_command_id(
        partition=partition_of(account_id, partitions), at_ms=at_ms, random_bytes=os.urandom(10)
    )


def new_account_id(
    prefix: str, partitions: int, *, partition: int | None = None, avoid: Collection[int] = ()
) -> str:
    """A fresh account id on ``partition`` (any if None), on none of ``avoid``."""
    for _ in range(ACCOUNT_SEARCH_MAX):
        candidate = f"{prefix}-{uuid.uuid4().hex[:10]}"
        landed = partition_of(candidate, partitions)
        if (partition is None or landed == partition) and landed not in avoid:
            return candidate
    raise AssertionError(f"no account id on partition {partition} avoiding {sorted(avoid)}")


def request_id() -> str:
    return f"req-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, kw_only=True)
class Client:
    """One partner sending well-formed commands in one currency (minted ids, own accounts)."""

    partitions: int
    partner_id: str
    currency: str

    @classmethod
    def on(cls, running: Platform, *, currency: str, partner_id: str | None = None) -> Client:
        partner = partner_id or f"partner-{uuid.uuid4().hex[:6]}"
        return cls(partitions=running.settings.partitions, partner_id=partner, currency=currency)

    def account(self, *, partition: int | None = None, avoid: Collection[int] = ()) -> str:
        return new_account_id("acct", self.partitions, partition=partition, avoid=avoid)

    def partition(self, account_id: str) -> int:
        return partition_of(account_id, self.partitions)

    def command_id(self, account_id: str) -> str:
        return mint(account_id, self.partitions, at_ms=now_ms())

    def open(self, account_id: str) -> OpenAccount:
        at_ms = now_ms()
        return OpenAccount(
            command_id=mint(account_id, self.partitions, at_ms=at_ms),
            request_id=request_id(),
            partner_id=self.partner_id,
            issued_at_ms=at_ms,
            account_id=account_id,
            currency=self.currency,
        )

    def deposit(self, account_id: str, amount_minor: int, *, request: str | None = None) -> Deposit:
        at_ms = now_ms()
        return Deposit(
            command_id=mint(account_id, self.partitions, at_ms=at_ms),
            request_id=request or request_id(),
            partner_id=self.partner_id,
            issued_at_ms=at_ms,
            account_id=account_id,
            amount_minor=amount_minor,
            currency=self.currency,
        )

    def transfer(
        self,
        source: str,
        destination: str,
        amount_minor: int,
        *,
        command_id: str | None = None,
        request: str | None = None,
    ) -> Transfer:
        at_ms = now_ms()
        return Transfer(
            command_id=command_id or mint(source, self.partitions, at_ms=at_ms),
            request_id=request or request_id(),
            partner_id=self.partner_id,
            issued_at_ms=at_ms,
            account_id=source,
            destination_account_id=destination,
            amount_minor=amount_minor,
            currency=self.currency,
        )


# --- answers on `events` ------------------------------------------------------------


def publish(running: Platform, *commands: Command) -> None:
    running.publisher.publish_all(commands)
    running.publisher.flush()


def answered(
    running: Platform, commands: Iterable[Command], *, timeout_s: float = EVENT_WAIT_S
) -> dict[str, Event]:
    """Wait for a terminal event of every command; fail (with worker logs) if one has none."""
    ids = [command.command_id for command in commands]
    left = running.watcher.wait(ids, timeout_s=timeout_s)
    assert not left, f"no answer within {timeout_s}s for {sorted(left)}{running.logs()}"
    return {payment_id: _terminal(running, payment_id) for payment_id in ids}


def run(running: Platform, *commands: Command) -> dict[str, Event]:
    """Publish ``commands`` and wait for their answers (setup steps)."""
    publish(running, *commands)
    return answered(running, commands)


def run_ok(running: Platform, *commands: Command) -> None:
    """Publish setup commands; each must complete."""
    answers = run(running, *commands)
    refused = {i: outcome(e) for i, e in answers.items() if e.type != "Completed"}
    assert refused == {}, f"setup refused{running.logs()}"


def _terminal(running: Platform, payment_id: str) -> Event:
    event = running.watcher.terminal(payment_id)
    assert event is not None
    return event


def outcome(event: Event | None) -> tuple[str, str | None] | None:
    return None if event is None else (event.type, event.code)


def wait_for(running: Platform, predicate: Callable[[], bool], *, timeout_s: float) -> bool:
    """Read events until ``predicate()`` holds or ``timeout_s`` passed; whether it held."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        running.watcher.poll()
    return True


def events_of(running: Platform, payment_id: str) -> list[Event]:
    return list(running.watcher.events.get(payment_id, []))


def has_event(running: Platform, payment_id: str, event_type: str) -> bool:
    return any(e.type == event_type for e in events_of(running, payment_id))


def event_copies(running: Platform, payment_id: str) -> Counter[str]:
    """Event type -> how many records of that type were read for ``payment_id``.

    The watcher keeps one copy per event id; a re-emitted event has the same id,
    so its repeats are counted from ``watcher.copies``.
    """
    counts: Counter[str] = Counter()
    for event in events_of(running, payment_id):
        counts[event.type] += running.watcher.copies.get(event.event_id, 1)
    return counts


def settle(running: Platform, client: Client, partitions: Iterable[int]) -> None:
    """A barrier: every command published before on ``partitions`` has been answered."""
    barriers = [client.open(client.account(partition=p)) for p in sorted(set(partitions))]
    run_ok(running, *barriers)


# --- records put where a misbehaving producer would put them ------------------------


def produce_to(
    kafka: KafkaConnection, topic: str, *, key: bytes, value: bytes, partition: int
) -> None:
    """One record on an explicit partition (whatever its key hashes to), acknowledged."""
    errors: list[str] = []
    producer = Producer(kafka.config() | {"enable.idempotence": True, "acks": "all"})
    producer.produce(
        topic,
        key=key,
        value=value,
        partition=partition,
        on_delivery=lambda error, _message: errors.append(str(error)) if error else None,
    )
    left = producer.flush(FLUSH_TIMEOUT_S)
    assert left == 0 and not errors, f"not delivered to {topic}[{partition}]: {errors}"


def fill_directory(running: Platform, *, partition: int, accounts: int, tag: str) -> None:
    """``accounts`` open accounts' rows on one ``directory`` partition, as workers write them:
    a directory of production size without opening each account through a worker."""
    topic = running.topics.directory
    producer = Producer(
        running.kafka.config()
        | {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "queue.buffering.max.messages": FILL_QUEUE_MESSAGES_MAX,
        }
    )
    for number in range(accounts):
        entry = DirectoryEntry(
            account_id=f"filler-{tag}-{number}", currency="EUR", partner_id=tag, status="open"
        )
        key, value = (
            codecs.encode_account_key(entry.account_id),
            codecs.encode_directory_entry(entry),
        )
        try:
            producer.produce(topic, key=key, value=value, partition=partition)
        except BufferError:  # the local queue is full: let deliveries drain, then retry
            producer.flush(FLUSH_TIMEOUT_S)
            producer.produce(topic, key=key, value=value, partition=partition)
    left = producer.flush(FLUSH_TIMEOUT_S)
    assert left == 0, f"{left} directory rows not delivered within {FLUSH_TIMEOUT_S}s"


def newer_command(running: Platform, command: Deposit) -> bytes:
    """``command`` as a command type this version does not know (a newer writer schema)."""
    schema = json.loads((SCHEMA_DIR / "command.avsc").read_text())
    body = next(f for f in schema["fields"] if f["name"] == "body")
    body["type"].append(
        {"type": "record", "name": "Payout", "fields": [{"name": "iban", "type": "string"}]}
    )
    registry = registry_from_url(running.settings.schema_registry_url, running.settings.data_dir)
    schema_id = registry.register(running.serde.subject("command"), json.dumps(schema))
    record: Any = {
        **records.command_to_record(command),
        "body": ("paystream.v1.Payout", {"iban": "X"}),
    }
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    schemaless_writer(out, parse_schema(schema), record)
    return out.getvalue()


# --- what landed: dead letters and the ledger ---------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    key: bytes
    value: bytes
    headers: dict[str, bytes]

    @property
    def reason(self) -> bytes | None:
        return self.headers.get("dlq.reason")


def dead_letters(running: Platform) -> list[DeadLetter]:
    """Every committed record on ``dlq``."""
    letters = []
    for message in read_to_end(running.kafka, running.topics.dlq):
        key, value = message.key(), message.value()
        raw = message.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        letters.append(
            DeadLetter(
                key=key if isinstance(key, bytes) else b"",
                value=value if isinstance(value, bytes) else b"",
                headers={k: v for k, v in pairs if isinstance(v, bytes)},
            )
        )
    return letters


def dlq_reasons_for(running: Platform, value: bytes) -> list[bytes | None]:
    """The ``dlq.reason`` of every dead letter holding exactly ``value``."""
    return [letter.reason for letter in dead_letters(running) if letter.value == value]


@dataclass(frozen=True)
class MoneyView:
    """One test's slice of ``verify()``: its accounts and its currency only."""

    balances: dict[str, int | None]
    duplicate_entry_ids: list[str]
    mismatches: list[str]
    transit_ledger: int
    transit_tables: int


def money(
    running: Platform, *, currency: str, accounts: Sequence[str], payment_ids: Sequence[str]
) -> MoneyView:
    report = running.verify()
    system_infix = f":{currency}:"
    balances = {
        a: (report.accounts[a].balance_minor if a in report.accounts else None) for a in accounts
    }
    return MoneyView(
        balances=balances,
        duplicate_entry_ids=[
            i for i in report.duplicate_entry_ids if i.split(":")[0] in set(payment_ids)
        ],
        mismatches=[
            m
            for m in report.balance_mismatches
            if system_infix in m.split(": ")[0] or m.split(": ")[0] in accounts
        ],
        transit_ledger=report.in_transit_by_currency.get(currency, 0),
        transit_tables=sum(
            account.balance_minor
            for account_id, account in report.accounts.items()
            if account_id.startswith("@transit:") and account.currency == currency
        ),
    )
