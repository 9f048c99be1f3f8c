"""Baseline: the pipe's physical limit (issue 18, "Baselines in the same run").

A confluent-kafka transactional consume -> produce passthrough that moves, per payment,
the records paystream's saga moves -- as many, of the same sizes -- and nothing else: no
decoding, no core, no stores. The gap between it and paystream is paystream's own cost.

1. **Wire profile**, measured on every run (not hard-coded): a broker of its own on free
   ports of 127.0.0.1, one ledger worker, ``--profile-transfers`` honest transfers (no
   duplicates, conflicts, overdrafts, closings or hostile records) over
   ``PROFILE_ACCOUNTS`` accounts, published at once. Every committed record of each topic
   is counted (read_committed) after the setup (OpenAccount, Deposit) and after the
   traffic; the difference over the completed transfers is the profile: records per
   payment, mean key and value bytes.
2. **Passthrough**: fresh topics with paystream's configurations (8 partitions);
   ``commands`` and ``legs`` pre-loaded before timing with ``payments`` x (commands + legs
   per payment) records of the measured sizes, keyed by account (commands per payment is
   a little over 1 when a transfer of the profile did not complete: it is divided by the
   completed ones). A member consumes a batch as the worker does
   (``consume(2000, 0.01)``), produces per consumed record its share of a payment's
   outputs (ledger, events, legs, both changelogs, directory and dlq at
   the measured rates, random bytes of the measured sizes; keyed records by the murmur2
   partitioner, changelog and directory records to the source's partition) and one
   manifest per source partition of the batch, sends the offsets with the group's
   metadata and commits: one transaction per batch, exactly-once v2 like the worker.
   Its legs go to a sink topic (``legs-sink``), not back into its own input: a
   passthrough reads only what was pre-loaded.
3. With 1 and with 2 members (OS processes in one consumer group, each with its own
   ``transactional.id``), started together once every member holds partitions:
   payments/s = consumed records / (commands + legs per payment) from the first consume to
   the last commit (``time.monotonic``, one clock for every process of the machine);
   messages/s and MB/s (keys + values) out.

Beside the figures: ``ms_per_transaction`` splits a transaction into its produce calls,
``send_offsets_to_transaction`` and ``commit_transaction`` (the offsets step also waits
while the coordinator still completes the previous transaction: on a loaded machine it
answered CONCURRENT_TRANSACTIONS, retried by librdkafka, for ~300 ms a batch); ``cpu`` is
the CPU time over the members' run (joining included) of the members, the broker and
everything else on the machine (``/proc/stat`` is the kernel's: a neighbour's load shows
there). A run whose ``others`` are not near 0 measured the neighbours too.

Not done, unlike the worker: a delivery report per changelog partition, stores, the
directory follower, a watchdog. The producer and consumer options are the worker's,
said out at the call site; ``option_differences`` compares them with the worker's own
configuration functions and the JSON records what differs.

    .venv/bin/python -m bench.baseline_passthrough [--payments 50000] [--processes 1 2]
        [--profile-transfers 500] [--output bench/results/baseline_passthrough.json]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from tqdm import tqdm

from bench import machine
from bench.backlog import publish_and_wait
from bench.report import command_line, machine_line, markdown_table, pyplot, write_result
from paystream import workload
from paystream.agents.worker import (
    BATCH_WINDOW_S,
    MESSAGES_PER_BATCH_MAX,
    consumer_config,
    producer_config,
)
from paystream.ledger import ensure
from paystream.runner import running
from paystream.services.kafka import start_on_free_ports
from paystream.services.process import read_pid
from paystream.settings import KafkaConnection, Settings
from paystream.topology.reader import read_to_end
from paystream.topology.shell import source
from paystream.topology.topics import TOPIC_CREATE_TIMEOUT_S, Topics, ensure_topics

__all__ = ["main", "markdown", "plots", "run", "wire_profile"]

RESULTS = Path(__file__).parent / "results" / "baseline_passthrough.json"
PAYMENTS = 50_000
PAYMENTS_MAX = 1_000_000
PROCESSES = (1, 2)
PROCESSES_MAX = 8
PROFILE_TRANSFERS = 500
PROFILE_TRANSFERS_MAX = 20_000
PROFILE_ACCOUNTS = 200
PROFILE_PUBLISH_PER_S = 1_000_000
"""The profile's traffic is published at once, as bench/replay.py records its log."""
SETTLE_TRIES_MAX = 10
SETTLE_PAUSE_S = 1.0
ACCOUNTS = 2_000
"""Keys of the passthrough's records: this many accounts (bench/backlog.py's count)."""
PARTITIONS = 8
TRANSACTION_TIMEOUT_MS = 10_000
"""The worker's ``transaction.timeout.ms`` under the settings' default (10 s)."""
PAYLOAD_POOL_BYTES = 1 << 20
"""Random bytes the values are sliced from."""
PRELOAD_FLUSH_TIMEOUT_S = 120.0
ASSIGNMENT_TIMEOUT_S = 60.0
ASSIGNMENT_POLL_S = 0.1
STALL_TIMEOUT_S = 60.0
"""A member with no consumed record for this long while the run is short stops loudly."""
PROGRESS_TICK_S = 0.2
JOIN_TIMEOUT_S = 30.0

ROLES = (
    "commands", "legs", "ledger", "events", "batches", "directory",
    "balances_changelog", "idempotency_changelog", "payouts_changelog", "dlq",
)  # fmt: skip
"""Every topic of the profile, by its field name in ``Topics``."""
INPUT_ROLES = ("commands", "legs")
RATED_ROLES = (
    "ledger", "events", "legs", "balances_changelog", "idempotency_changelog", "directory",
    "dlq",
)  # fmt: skip
"""Outputs produced at their measured rate per consumed record."""
SOURCE_PARTITIONED_ROLES = frozenset(
    {"balances_changelog", "idempotency_changelog", "directory", "batches"}
)
"""Written to the source's partition by the worker (the others go by key, murmur2)."""

COMMANDS_PER_PAYMENT_MAX = 1.05
"""The profile divides by completed transfers: a few that did not (the honest mix can still
draw a transfer to its own account) count, more would mean the profile is not a payment's."""

Profile = dict[str, tuple[float, float, float]]
"""topic role -> (records per payment, mean key bytes, mean value bytes)"""


# --- the wire profile ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tally:
    records: int = 0
    key_bytes: int = 0
    value_bytes: int = 0

    def __sub__(self, other: Tally) -> Tally:
        return Tally(
            self.records - other.records,
            self.key_bytes - other.key_bytes,
            self.value_bytes - other.value_bytes,
        )

    def per(self, payments: int) -> tuple[float, float, float]:
        """(records per payment, mean key bytes, mean value bytes)."""
        if self.records == 0:
            return (0.0, 0.0, 0.0)
        return (
            self.records / payments,
            self.key_bytes / self.records,
            self.value_bytes / self.records,
        )


def tally(bootstrap: str, topic: str) -> Tally:
    """Every committed record of ``topic``: how many, and their key and value bytes."""
    records = key_bytes = value_bytes = 0
    kafka = KafkaConnection.plaintext(bootstrap)
    for message in read_to_end(kafka, topic, isolation="read_committed"):
        records += 1
        key_bytes += len(message.key() or b"")
        value_bytes += len(message.value() or b"")
    return Tally(records, key_bytes, value_bytes)


def tally_topics(bootstrap: str, topics: Topics) -> dict[str, Tally]:
    return {role: tally(bootstrap, getattr(topics, role)) for role in ROLES}


def settled_tally(bootstrap: str, topics: Topics) -> dict[str, Tally]:
    """The tallies once two in a row, ``SETTLE_PAUSE_S`` apart, agree: what a payment's
    answer leaves in flight (a leg back to its source) has been processed too."""
    last = tally_topics(bootstrap, topics)
    for _ in range(SETTLE_TRIES_MAX):
        time.sleep(SETTLE_PAUSE_S)
        found = tally_topics(bootstrap, topics)
        if found == last:
            return found
        last = found
    raise RuntimeError(f"paystream's topics still grew after {SETTLE_TRIES_MAX} tallies")


@dataclass(frozen=True, slots=True, kw_only=True)
class WireMeasurement:
    transfers: int
    outcomes: dict[str, int]
    setup_commands: int
    setup: dict[str, Tally]
    """What the setup (OpenAccount, Deposit) left on each topic: not counted."""
    traffic: dict[str, Tally]
    """What the transfers added on each topic."""

    @property
    def completed(self) -> int:
        return self.outcomes.get("Completed", 0)

    @property
    def per_payment(self) -> Profile:
        return {role: self.traffic[role].per(self.completed) for role in ROLES}

    def as_json(self) -> dict[str, Any]:
        return {
            "transfers": self.transfers, "completed": self.completed, "outcomes": self.outcomes,
            "accounts": PROFILE_ACCOUNTS, "setup_commands": self.setup_commands,
            "setup_records": {role: t.records for role, t in self.setup.items()},
            "traffic_records": {role: t.records for role, t in self.traffic.items()},
            "per_payment": {
                role: {"records": n, "key_bytes": k, "value_bytes": v}
                for role, (n, k, v) in self.per_payment.items()
            },
        }  # fmt: skip


def honest_mix(transfers: int, partitions: int) -> workload.Mix:
    """Transfers that all complete: no mistakes, no hostile records, no closing accounts."""
    return workload.Mix(
        accounts=PROFILE_ACCOUNTS, transfers=transfers, duplicate_rate=0.0, conflict_rate=0.0,
        to_closed_rate=0.0, overdraft_rate=0.0, hostile_rate=0.0, closing_accounts=0,
        racing_transfers=0, partitions=partitions,
    )  # fmt: skip


def measure_wire(bootstrap: str, work_dir: Path, *, transfers: int) -> WireMeasurement:
    """Run paystream (one worker) on ``bootstrap`` and count what its transfers wrote."""
    ensure(0 < transfers <= PROFILE_TRANSFERS_MAX, "profile transfers out of bounds")
    settings = Settings(
        environment="test", data_dir=work_dir / "data", kafka_bootstrap=bootstrap,
        kafka_security="plaintext", topic_prefix=f"bench-wire-{uuid.uuid4().hex[:8]}",
        partitions=PARTITIONS,
    )  # fmt: skip
    with running(settings, workers=1, log_dir=work_dir / "logs") as platform:
        load = workload.build(
            seed=18, mix=honest_mix(transfers, settings.partitions), run_id="wire",
            now_ms=int(time.time() * 1000),
        )  # fmt: skip
        if platform.run_setup(load):
            raise RuntimeError(f"setup commands without an answer{platform.logs()}")
        setup = settled_tally(bootstrap, platform.topics)
        publish_and_wait(platform, load, per_second=PROFILE_PUBLISH_PER_S)
        after = settled_tally(bootstrap, platform.topics)
        outcomes = dict(platform.outcomes(load))
    measured = WireMeasurement(
        transfers=transfers, outcomes=outcomes, setup_commands=len(load.setup), setup=setup,
        traffic={role: after[role] - setup[role] for role in ROLES},
    )  # fmt: skip
    ensure(measured.completed > 0, f"no transfer completed: {outcomes}")
    return measured


def wire_profile(bootstrap: str, work_dir: Path, *, transfers: int = PROFILE_TRANSFERS) -> Profile:
    """What a completed payment costs paystream on the wire, per topic role:
    (records per payment, mean key bytes, mean value bytes)."""
    return measure_wire(bootstrap, work_dir, transfers=transfers).per_payment


# --- the options (the worker's, said out) ----------------------------------------------


def producer_options(bootstrap: str, transactional_id: str) -> dict[str, Any]:
    """The worker's producer (paystream.agents.worker.producer_config), every option said."""
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "plaintext",
        "transactional.id": transactional_id,
        "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        "acks": "all",  # implied by transactional.id; the worker leaves it implied
        "enable.idempotence": True,  # the same
        "partitioner": "murmur2_random",
        "metadata.recovery.strategy": "none",
        "linger.ms": 2,
        "queue.buffering.max.messages": 1_000_000,
        "batch.size": 1_000_000,  # librdkafka's default, which the worker keeps
        "batch.num.messages": 10_000,  # the same
        "compression.codec": "none",  # the same
    }


def consumer_options(bootstrap: str, group_id: str, client_id: str) -> dict[str, Any]:
    """The worker's consumer (paystream.agents.worker.consumer_config), every option said."""
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "plaintext",
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "max.poll.interval.ms": 20_000,
        "fetch.wait.max.ms": 500,  # librdkafka's defaults from here on, which the worker keeps
        "fetch.min.bytes": 1,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 1_048_576,
        "queued.min.messages": 100_000,
    }


IDENTITY_OPTIONS = frozenset({"bootstrap.servers", "group.id", "client.id", "transactional.id"})


def option_differences() -> dict[str, dict[str, dict[str, Any]]]:
    """Option -> {worker, passthrough} where the two differ ("unset": librdkafka's
    default), beside the identities (bootstrap, group, client and transactional ids)."""
    settings = Settings(
        environment="test", kafka_bootstrap="127.0.0.1:1", kafka_security="plaintext"
    )
    pairs = {
        "producer": (producer_config(settings, "w"), producer_options("x", "x")),
        "consumer": (consumer_config(settings, "w"), consumer_options("x", "x", "x")),
    }
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for client, (worker, ours) in pairs.items():
        found[client] = {
            key: {"worker": worker.get(key, "unset"), "passthrough": ours.get(key, "unset")}
            for key in sorted((worker.keys() | ours.keys()) - IDENTITY_OPTIONS)
            if worker.get(key) != ours.get(key)
        }
    return found


# --- the passthrough's shape -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Shape:
    """One passthrough run: its topics, and what it produces per consumed record."""

    bootstrap: str
    group_id: str
    inputs: tuple[str, str]
    """(commands, legs) topics, pre-loaded."""
    rates: dict[str, float]
    """Output topic -> records per consumed record."""
    manifests: str
    """Output topic of one manifest per source partition of a batch."""
    source_partitioned: frozenset[str]
    key_bytes: dict[str, int]
    value_bytes: dict[str, int]
    total_inputs: int


def topics_for(prefix: str) -> Topics:
    names = {role: f"{prefix}.{role}" for role in ROLES}
    return Topics(**names, partitions=PARTITIONS)


def legs_sink(topics: Topics) -> str:
    return f"{topics.legs}-sink"


def shape_for(
    profile: Profile, topics: Topics, *, bootstrap: str, payments: int
) -> tuple[Shape, dict[str, int]]:
    """The run's shape, and how many records to pre-load on each input topic."""
    commands_per_payment, legs_per_payment = profile["commands"][0], profile["legs"][0]
    ensure(
        1.0 <= commands_per_payment <= COMMANDS_PER_PAYMENT_MAX,
        f"{commands_per_payment:.3f} commands per completed payment: too many did not complete",
    )
    inputs_per_payment = commands_per_payment + legs_per_payment
    output_of = {role: getattr(topics, role) for role in ROLES} | {"legs": legs_sink(topics)}
    preload = {
        topics.commands: round(commands_per_payment * payments),
        topics.legs: round(legs_per_payment * payments),
    }
    sizes = {output_of[r]: profile[r] for r in ROLES} | {
        getattr(topics, r): profile[r] for r in INPUT_ROLES
    }
    shape = Shape(
        bootstrap=bootstrap, group_id=f"{topics.commands}-passthrough",
        inputs=(topics.commands, topics.legs),
        rates={output_of[r]: profile[r][0] / inputs_per_payment for r in RATED_ROLES},
        manifests=topics.batches,
        source_partitioned=frozenset(output_of[r] for r in SOURCE_PARTITIONED_ROLES),
        key_bytes={t: round(k) for t, (_n, k, _v) in sizes.items()},
        value_bytes={t: round(v) for t, (_n, _k, v) in sizes.items()},
        total_inputs=sum(preload.values()),
    )  # fmt: skip
    return shape, preload


def account_keys(length: int) -> list[bytes]:
    """``ACCOUNTS`` keys of ``length`` bytes (digits, left-padded; cut to length)."""
    if length == 0:
        return [b""]
    return [str(i).rjust(length, "a")[-length:].encode() for i in range(ACCOUNTS)]


class Payloads:
    """Keys and values of the measured sizes: values sliced from random bytes."""

    def __init__(self, shape: Shape, seed: int) -> None:
        self._pool = os.urandom(PAYLOAD_POOL_BYTES)
        self._offset = seed % PAYLOAD_POOL_BYTES
        self._keys = {t: account_keys(n) for t, n in shape.key_bytes.items()}
        self._turn = seed
        self._value_bytes = shape.value_bytes
        ensure(max(shape.value_bytes.values()) < PAYLOAD_POOL_BYTES // 2, "values too large")

    def key(self, topic: str) -> bytes:
        self._turn += 7_919  # a prime: every account in turn, in a scattered order
        keys = self._keys[topic]
        return keys[self._turn % len(keys)]

    def value(self, topic: str) -> bytes:
        size = self._value_bytes[topic]
        self._offset = (self._offset + 4_099) % (PAYLOAD_POOL_BYTES - size)
        return self._pool[self._offset : self._offset + size]


# --- topics and pre-loading ------------------------------------------------------------


def create_topics(bootstrap: str, topics: Topics) -> None:
    """paystream's topics with their configurations, and the legs sink as ``legs``."""
    ensure_topics(KafkaConnection.plaintext(bootstrap), topics)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    sink = NewTopic(
        legs_sink(topics), num_partitions=PARTITIONS, replication_factor=1,
        config=topics.configs()[topics.legs],
    )  # fmt: skip
    for future in admin.create_topics([sink]).values():
        future.result(timeout=TOPIC_CREATE_TIMEOUT_S)


def preload(shape: Shape, counts: Mapping[str, int]) -> None:
    """``counts`` records on each input topic, keyed by account, before any timing."""
    producer = Producer(
        {
            "bootstrap.servers": shape.bootstrap,
            "partitioner": "murmur2_random",  # the publisher's (topology/publisher.py)
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    payloads = Payloads(shape, seed=1)
    for topic, count in counts.items():
        for _ in range(count):
            _produce(producer, topic, payloads.key(topic), payloads.value(topic), None)
    left = producer.flush(PRELOAD_FLUSH_TIMEOUT_S)
    ensure(left == 0, f"{left} pre-loaded records not delivered")


def _produce(
    producer: Producer, topic: str, key: bytes, value: bytes, partition: int | None
) -> None:
    """The worker's produce: a full local queue drains a little, then the record is retried."""
    kwargs: dict[str, Any] = {"key": key, "value": value}
    if partition is not None:
        kwargs["partition"] = partition
    try:
        producer.produce(topic, **kwargs)
    except BufferError:
        producer.poll(1.0)
        producer.produce(topic, **kwargs)


# --- one member (an OS process) --------------------------------------------------------


@dataclass(slots=True)
class Outputs:
    """What a member produces for its batches: the rates' debts and its tallies."""

    shape: Shape
    payloads: Payloads
    owed: dict[str, float] = field(default_factory=dict)
    records: int = 0
    bytes: int = 0

    def send(self, producer: Producer, messages: Sequence[Message]) -> None:
        """Every consumed record's share of the outputs, then one manifest per partition."""
        rates, owed = self.shape.rates, self.owed
        for message in messages:
            partition = source(message)[1]
            for topic, rate in rates.items():
                owed[topic] = owed.get(topic, 0.0) + rate
                while owed[topic] >= 1.0:
                    owed[topic] -= 1.0
                    self._one(producer, topic, partition)
        for partition in sorted({source(m)[1] for m in messages}):
            self._one(producer, self.shape.manifests, partition)

    def _one(self, producer: Producer, topic: str, partition: int | None) -> None:
        key, value = self.payloads.key(topic), self.payloads.value(topic)
        placed = partition if topic in self.shape.source_partitioned else None
        _produce(producer, topic, key, value, placed)
        self.records += 1
        self.bytes += len(key) + len(value)


@dataclass(slots=True)
class Shared:
    """What the members and the parent share: progress, assignments, the start."""

    committed: Any
    """multiprocessing Value('q'): input records committed by every member."""
    assigned: Any
    """multiprocessing Array('i'): each member's assigned partitions."""
    go: Any
    """multiprocessing Event: every member holds partitions; consume."""
    results: Any
    """multiprocessing Queue: each member's figures (or its error)."""


def member(index: int, shape: Shape, shared: Shared) -> None:
    """A process's entry point: pass through, then report the figures (or the error)."""
    try:
        shared.results.put(_pass_through(index, shape, shared))
    except BaseException as error:
        shared.results.put({"member": index, "error": repr(error)})
        raise


def _pass_through(index: int, shape: Shape, shared: Shared) -> dict[str, Any]:
    name = f"{shape.group_id}-{index}"
    consumer = Consumer(consumer_options(shape.bootstrap, shape.group_id, name))
    producer = Producer(producer_options(shape.bootstrap, name))
    try:
        producer.init_transactions(TRANSACTION_TIMEOUT_MS / 1000)
        _join(consumer, index, shape, shared)
        return _batches(index, consumer, producer, shape, shared)
    finally:
        consumer.close()


def _join(consumer: Consumer, index: int, shape: Shape, shared: Shared) -> None:
    """Subscribe with partitions paused until every member holds some, then resume."""

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        c.assign(partitions)
        c.pause(partitions)
        shared.assigned[index] = len(partitions)

    def on_revoke(c: Consumer, _partitions: list[TopicPartition]) -> None:
        shared.assigned[index] = 0
        c.unassign()

    consumer.subscribe(list(shape.inputs), on_assign=on_assign, on_revoke=on_revoke)
    deadline = time.monotonic() + ASSIGNMENT_TIMEOUT_S
    while not shared.go.is_set():
        ensure(time.monotonic() < deadline, f"member {index}: the group did not settle")
        ensure(not consumer.consume(1, ASSIGNMENT_POLL_S), "a message from a paused partition")
    consumer.resume(consumer.assignment())


@dataclass(slots=True)
class Steps:
    """A member's seconds in each step of its loop, summed, and its time span."""

    consume_s: float = 0.0
    """In ``consume``, empty ones included (waiting for records, or for the others)."""
    produce_s: float = 0.0
    """``begin_transaction`` and the ``produce`` calls."""
    offsets_s: float = 0.0
    commit_s: float = 0.0
    first_consume_s: float = 0.0
    last_commit_s: float = 0.0
    cpu_s: float = 0.0
    """This process's CPU time (every thread, librdkafka's too), first consume to last
    commit."""
    life_cpu_s: float = 0.0
    """The same from the process's start (imports, joining the group) to its last commit."""


def _batches(
    index: int, consumer: Consumer, producer: Producer, shape: Shape, shared: Shared
) -> dict[str, Any]:
    """One transaction per consumed batch until every member together consumed all."""
    outputs = Outputs(shape, Payloads(shape, seed=index + 2))
    steps = Steps(first_consume_s=time.monotonic())
    cpu_started_s = time.process_time()
    consumed = transactions = seen = 0
    progressed_s = steps.first_consume_s
    while (committed := shared.committed.value) < shape.total_inputs:
        started = time.monotonic()
        messages = consumer.consume(MESSAGES_PER_BATCH_MAX, BATCH_WINDOW_S)
        steps.consume_s += time.monotonic() - started
        if not messages:  # stalled: no member committed anything for STALL_TIMEOUT_S
            if committed != seen:
                seen, progressed_s = committed, time.monotonic()
            ensure(time.monotonic() - progressed_s < STALL_TIMEOUT_S, f"member {index} stalled")
            continue
        _transact(consumer, producer, outputs, messages, steps)
        progressed_s = steps.last_commit_s
        steps.life_cpu_s = time.process_time()
        steps.cpu_s = steps.life_cpu_s - cpu_started_s
        consumed += len(messages)
        transactions += 1
        with shared.committed.get_lock():
            shared.committed.value += len(messages)
    return {
        "member": index, "consumed": consumed, "transactions": transactions,
        "produced": outputs.records, "produced_bytes": outputs.bytes,
    } | asdict(steps)  # fmt: skip


def _transact(
    consumer: Consumer, producer: Producer, outputs: Outputs, messages: Sequence[Message],
    steps: Steps,
) -> None:  # fmt: skip
    """The worker's transaction: outputs, the batch's offsets with the group's metadata,
    commit. Any error propagates: a baseline that aborts is no baseline."""
    for message in messages:
        if message.error() is not None:
            raise KafkaException(message.error())
    started = time.monotonic()
    producer.begin_transaction()
    outputs.send(producer, messages)
    sent = time.monotonic()
    producer.send_offsets_to_transaction(
        _next_offsets(messages), consumer.consumer_group_metadata(),
        TRANSACTION_TIMEOUT_MS / 1000,
    )  # fmt: skip
    offsets = time.monotonic()
    producer.commit_transaction(TRANSACTION_TIMEOUT_MS / 1000)
    steps.last_commit_s = time.monotonic()
    steps.produce_s += sent - started
    steps.offsets_s += offsets - sent
    steps.commit_s += steps.last_commit_s - offsets


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """The worker's offsets to commit: after each partition's last consumed record."""
    last: dict[tuple[str, int], int] = {}
    for message in messages:
        topic, partition, offset = source(message)
        last[(topic, partition)] = max(offset, last.get((topic, partition), -1))
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


# --- a run with N members --------------------------------------------------------------


def _settled(shared: Shared, processes: int) -> bool:
    held = [shared.assigned[i] for i in range(processes)]
    return all(held) and sum(held) == len(INPUT_ROLES) * PARTITIONS


def _start(shape: Shape, processes: int, *, progress: bool) -> list[dict[str, Any]]:
    """``processes`` members in one group; their figures once all inputs are committed."""
    context: SpawnContext = multiprocessing.get_context("spawn")
    shared = Shared(
        committed=context.Value("q", 0), assigned=context.Array("i", processes),
        go=context.Event(), results=context.Queue(),
    )  # fmt: skip
    members = [
        context.Process(target=member, args=(i, shape, shared), name=f"passthrough-{i}")
        for i in range(processes)
    ]
    for process in members:
        process.start()
    try:
        deadline = time.monotonic() + ASSIGNMENT_TIMEOUT_S
        while not _settled(shared, processes):
            _check_alive(members)
            ensure(time.monotonic() < deadline, "the passthrough group did not settle")
            time.sleep(ASSIGNMENT_POLL_S)
        shared.go.set()
        _follow(shared, members, shape.total_inputs, processes, progress=progress)
        results = [shared.results.get(timeout=JOIN_TIMEOUT_S) for _ in members]
    finally:
        for process in members:
            process.join(JOIN_TIMEOUT_S)
            if process.is_alive():
                process.terminate()
    errors = [r["error"] for r in results if "error" in r]
    ensure(not errors, f"members failed: {errors}")
    return sorted(results, key=lambda r: int(r["member"]))


def _check_alive(members: Sequence[SpawnProcess]) -> None:
    dead = [p.name for p in members if p.exitcode not in (None, 0)]
    ensure(not dead, f"members died: {dead}")


def _follow(
    shared: Shared, members: Sequence[SpawnProcess], total: int, processes: int, *,
    progress: bool,
) -> None:  # fmt: skip
    """tqdm on stderr until every input record is committed (or a member stops)."""
    desc = f"{processes} process{'es' if processes > 1 else ''}"
    with tqdm(total=total, desc=desc, unit="rec", unit_scale=True, file=sys.stderr,
              disable=not progress) as bar:  # fmt: skip
        while (done := shared.committed.value) < total:
            _check_alive(members)
            if all(p.exitcode is not None for p in members):
                break  # every member ended: their results say why
            bar.update(done - bar.n)
            time.sleep(PROGRESS_TICK_S)
        bar.update(shared.committed.value - bar.n)


def figures(
    results: Sequence[dict[str, Any]], *, processes: int, inputs_per_payment: float
) -> dict[str, Any]:
    """A run's figures from its members' reports: one clock, first consume to last commit."""
    consumed = sum(r["consumed"] for r in results)
    produced = sum(r["produced"] for r in results)
    produced_bytes = sum(r["produced_bytes"] for r in results)
    elapsed_s = max(r["last_commit_s"] for r in results) - min(
        r["first_consume_s"] for r in results
    )
    transactions = sum(r["transactions"] for r in results)
    step_ms = {
        step: 1000 * sum(r[f"{step}_s"] for r in results) / transactions
        for step in ("produce", "offsets", "commit")
    }
    return {
        "processes": processes, "elapsed_s": elapsed_s, "consumed": consumed,
        "payments": consumed / inputs_per_payment,
        "payments_per_s": consumed / inputs_per_payment / elapsed_s,
        "inputs_per_s": consumed / elapsed_s, "transactions": transactions,
        "inputs_per_transaction": consumed / transactions, "produced": produced,
        "produced_per_payment": produced / (consumed / inputs_per_payment),
        "messages_out_per_s": produced / elapsed_s,
        "mb_out_per_s": produced_bytes / elapsed_s / 1e6,
        "ms_per_transaction": step_ms,
        "members": [
            {k: v for k, v in r.items() if k not in ("first_consume_s", "last_commit_s")}
            for r in results
        ],
    }  # fmt: skip


def passthrough(
    profile: Profile, *, bootstrap: str, payments: int, processes: int,
    broker_pid: int | None = None, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """One run with ``processes`` members on fresh topics, pre-loaded first.
    ``broker_pid``: the broker's process, to tell its CPU time from others' (if local)."""
    ensure(0 < payments <= PAYMENTS_MAX, "payments out of bounds")
    ensure(0 < processes <= PROCESSES_MAX, "processes out of bounds")
    topics = topics_for(f"baseline-{processes}p-{uuid.uuid4().hex[:8]}")
    create_topics(bootstrap, topics)
    shape, counts = shape_for(profile, topics, bootstrap=bootstrap, payments=payments)
    started = time.monotonic()
    preload(shape, counts)
    preload_s = time.monotonic() - started
    before = CpuReading.now(broker_pid)
    results = _start(shape, processes, progress=progress)
    cpu = CpuReading.now(broker_pid).since(before, members_s=sum(r["life_cpu_s"] for r in results))
    found = figures(results, processes=processes, inputs_per_payment=shape.total_inputs / payments)
    ensure(found["consumed"] == shape.total_inputs, f"consumed {found['consumed']:,}")
    return found | {"preloaded": counts, "preload_s": preload_s, "cpu": cpu}


CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class CpuReading:
    """CPU time so far: the whole machine's (every process, ours or not; /proc/stat is the
    kernel's), the hypervisor's steal, the broker's."""

    at_s: float
    busy_s: float
    steal_s: float
    broker_s: float | None

    @classmethod
    def now(cls, broker_pid: int | None) -> CpuReading:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return cls(
            at_s=time.monotonic(),
            busy_s=(user + nice + system + irq + softirq) / CLOCK_TICKS_PER_S,
            steal_s=steal / CLOCK_TICKS_PER_S,
            broker_s=None if broker_pid is None else process_cpu_s(broker_pid),
        )

    def since(self, before: CpuReading, *, members_s: float) -> dict[str, float | None]:
        """CPU seconds used between ``before`` and this reading (the members' whole run,
        joining the group included); ``others_s``: neither the broker nor the members --
        this process, and whatever else ran on the machine meanwhile."""
        broker_s = (
            None if self.broker_s is None or before.broker_s is None
            else self.broker_s - before.broker_s
        )  # fmt: skip
        busy_s = self.busy_s - before.busy_s
        return {
            "window_s": self.at_s - before.at_s, "cores": os.cpu_count(), "busy_s": busy_s,
            "steal_s": self.steal_s - before.steal_s, "broker_s": broker_s,
            "members_s": members_s,
            "others_s": None if broker_s is None else busy_s - broker_s - members_s,
        }  # fmt: skip


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), if it still runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


# --- the whole run ---------------------------------------------------------------------


@contextlib.contextmanager
def _broker(bootstrap: str | None, home: Path) -> Iterator[tuple[str, str | None, int | None]]:
    """(bootstrap, Kafka version, pid): the given broker, or one of its own on free ports."""
    if bootstrap is not None:
        yield bootstrap, None, None
        return
    broker = start_on_free_ports(home / "kafka")
    try:
        yield broker.bootstrap, broker.version(), read_pid(broker.pid_file)
    finally:
        broker.stop()


def run(
    *, payments: int = PAYMENTS, processes: Sequence[int] = PROCESSES,
    profile_transfers: int = PROFILE_TRANSFERS, bootstrap: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """The wire profile, then the passthrough with each count of ``processes``, on one
    broker (``bootstrap``, or one of its own). The harness's entry point: members are
    spawned processes, so a calling script needs ``if __name__ == "__main__":``."""
    load_average_1m = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as directory:
        home = Path(directory)
        with _broker(bootstrap, home) as (address, kafka_version, broker_pid):
            measured = measure_wire(address, home / "wire", transfers=profile_transfers)
            profile = measured.per_payment
            # Untimed, first: the fresh broker's JIT compiler warms up (bench.saga's
            # BROKER_WARMUP_TRANSFERS says what a cold broker cost).
            warmup = passthrough(profile, bootstrap=address, payments=payments,
                                 processes=max(processes), broker_pid=broker_pid,
                                 progress=progress)  # fmt: skip
            runs = [
                passthrough(profile, bootstrap=address, payments=payments, processes=n,
                            broker_pid=broker_pid, progress=progress)
                for n in processes
            ]  # fmt: skip
    return {
        "machine": machine.facts(kafka=kafka_version, load_average_1m_at_start=load_average_1m),
        "payments": payments,
        "wire_profile": measured.as_json(), "option_differences": option_differences(),
        "passthrough": runs, "broker_warmup": warmup,
    }  # fmt: skip


def _table(result: Mapping[str, Any]) -> str:
    lines = [f"{'topic':<22} {'records/payment':>15} {'key B':>7} {'value B':>8}"]
    for role, found in result["wire_profile"]["per_payment"].items():
        lines.append(
            f"{role:<22} {found['records']:>15.3f} {found['key_bytes']:>7.1f}"
            f" {found['value_bytes']:>8.1f}"
        )
    lines.append("")
    lines.append(
        f"{'processes':>9} {'payments/s':>11} {'inputs/s':>10} {'msgs out/s':>11}"
        f" {'MB/s out':>9} {'txns':>6} {'inputs/txn':>10} {'elapsed s':>9}"
        f" {'CPU: members broker others (cores)':>35}"
    )
    for found in result["passthrough"]:
        lines.append(
            f"{found['processes']:>9} {found['payments_per_s']:>11,.0f}"
            f" {found['inputs_per_s']:>10,.0f} {found['messages_out_per_s']:>11,.0f}"
            f" {found['mb_out_per_s']:>9.2f} {found['transactions']:>6,}"
            f" {found['inputs_per_transaction']:>10,.0f} {found['elapsed_s']:>9.2f}"
            f" {_cores(found['cpu']):>35}"
        )
    return "\n".join(lines)


def _cores(cpu: Mapping[str, Any]) -> str:
    """Members', broker's and others' CPU time over the run, in cores busy."""
    shares = [cpu[key] for key in ("members_s", "broker_s", "others_s")]
    return " ".join("?" if s is None else f"{s / cpu['window_s']:.2f}" for s in shares)


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown fragment (bench/report.py puts it in docs/benchmarks.md)."""
    profile = result["wire_profile"]
    wire = markdown_table(
        ("topic", "records per payment", "key bytes", "value bytes"),
        [(role, f"{found['records']:.2f}", f"{found['key_bytes']:.0f}",
          f"{found['value_bytes']:.0f}") for role, found in profile["per_payment"].items()],
    )  # fmt: skip
    runs = markdown_table(
        ("processes", "payments/s", "inputs/s", "records out/s", "MB/s out", "transactions",
         "ms produce / offsets / commit per transaction", "cores: members / broker / others"),
        [(found["processes"], f"**{found['payments_per_s']:,.0f}**",
          f"{found['inputs_per_s']:,.0f}", f"{found['messages_out_per_s']:,.0f}",
          f"{found['mb_out_per_s']:.2f}", f"{found['transactions']:,}",
          " / ".join(f"{found['ms_per_transaction'][step]:.0f}"
                     for step in ("produce", "offsets", "commit")),
          _cores(found["cpu"]).replace(" ", " / "))
         for found in result["passthrough"]],
    )  # fmt: skip
    intro = (
        "A confluent-kafka transactional consume -> produce passthrough (exactly-once v2, the "
        "worker's client options) moving per payment the records paystream's saga moves, as "
        f"many and of the same sizes, measured from {profile['transfers']:,} real transfers "
        f"({profile['completed']:,} completed): the pipe's limit, paystream's own cost excluded."
    )
    warmup = result.get("broker_warmup")
    if warmup:
        intro += (
            f" First, untimed, a run with {warmup['processes']} processes warmed the fresh "
            f"broker's JIT compiler up ({warmup['payments_per_s']:,.0f} payments/s then)."
        )
    return "\n\n".join((
        "### Baseline: the pipe itself (`bench/baseline_passthrough.py`)", intro,
        "The wire profile of a payment:", wire, "The passthrough:", runs,
        command_line(result), machine_line(result.get("machine", {})),
    ))  # fmt: skip


def plots(result: dict[str, Any], img_dir: Path) -> list[Path]:
    """Payments/s per process count, and where a transaction's time goes (PNG)."""
    runs = result["passthrough"]
    if not runs:
        return []
    plt = pyplot()
    figure, (rate, steps) = plt.subplots(1, 2, figsize=(9, 4))
    labels = [f"{found['processes']} process(es)" for found in runs]
    rate.bar(labels, [found["payments_per_s"] for found in runs], color="tab:grey")
    rate.set_ylabel("payments/s")
    rate.set_title("Passthrough throughput")
    bottom = [0.0] * len(runs)
    for step in ("produce", "offsets", "commit"):
        spent = [found["ms_per_transaction"][step] for found in runs]
        steps.bar(labels, spent, bottom=bottom, label=step)
        bottom = [b + s for b, s in zip(bottom, spent, strict=True)]
    steps.set_ylabel("ms per transaction")
    steps.set_title("A transaction's steps")
    steps.legend()
    figure.tight_layout()
    img_dir.mkdir(parents=True, exist_ok=True)
    path = img_dir / "bench-passthrough.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--payments", type=int, default=PAYMENTS)
    parser.add_argument("--processes", type=int, nargs="+", default=list(PROCESSES))
    parser.add_argument("--profile-transfers", type=int, default=PROFILE_TRANSFERS)
    parser.add_argument("--bootstrap", default=None, help="a broker to use (default: its own)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    arguments = sys.argv[1:] if argv is None else list(argv)
    result = {"command": shlex.join(["python", "-m", "bench.baseline_passthrough", *arguments])}
    result |= run(
        payments=args.payments, processes=args.processes,
        profile_transfers=args.profile_transfers, bootstrap=args.bootstrap,
    )  # fmt: skip
    print(_table(result))
    write_result(args.output, result)


if __name__ == "__main__":
    main()
