"""Restore benchmark: how long a ledger worker takes to serve again, against store size.

It builds stores of growing size on a real Kafka broker by producing changelog
records straight to the workers' changelog topics (``balances``, ``idempotency``,
with the expiry index and clock rows) and the account ``directory``, then drives
real worker processes (``python -m paystream.agents.worker``) and measures, for
each store size:

- ``full``: a start with an empty worker data directory;
- ``clean``: a restart after a clean stop (SIGTERM; the worker exits on its own);
- ``kill``: a restart after SIGKILL;
- ``join``: a third member joining a settled group of two (Stable, every partition
  answering) under steady load, until its metrics count its first input record.

Restore done is judged from outside, the same way for any worker code: the wall
time from the process start until a probe ``Deposit`` on every partition has its
answer on ``events`` (read_committed). The worker's own metrics
(``paystream_worker_restore_seconds`` sum and count,
``paystream_worker_restored_records_total``, summed over any labels) are recorded
next to it.

The sizes form a ladder on one set of topics: the accounts grow first (with no
idempotency keys beyond the clock rows), then the idempotency keys grow at the
largest account count. Every step adds records to what is there.

Results go to ``bench/results/restore.json`` under ``--label`` (a run replaces the
rows of its ``--scenarios`` under that label and keeps the rest), and the plot to
``docs/img/restore.png`` with every label in the file; ``--quick`` writes
``restore-quick.json`` and ``restore-quick.png`` instead.

Run it as a script, not with ``-m``: it changes into its data directory before it
starts workers, so they import the same ``paystream`` as this process does
(``PYTHONPATH=<another checkout>`` measures that checkout's code)::

    .venv/bin/python bench/restore.py --quick --label smoke
    .venv/bin/python bench/restore.py --label before
    .venv/bin/python bench/restore.py --plot-only --markdown
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

import paystream
from bench import machine as bench_machine
from paystream.agents.metrics import collect_text
from paystream.agents.supervisor import WorkerProcess, prepare_metrics_dir
from paystream.agents.worker import worker_dir
from paystream.ledger import (
    Account,
    Deposit,
    DirectoryEntry,
    IdempotencyRecord,
    Transfer,
    command_key,
    mint_command_id,
    request_key,
)
from paystream.services.kafka import start_on_free_ports
from paystream.settings import Settings
from paystream.tables import codecs
from paystream.topology.avro import AvroSerde
from paystream.topology.partitioner import partition_for
from paystream.topology.publisher import CommandPublisher
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, app_id_for, ensure_topics
from paystream.workload import Mix, build

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ("full", "clean", "kill", "join")
RESTART_SCENARIOS = ("full", "clean", "kill")
FULL_ACCOUNTS = (10_000, 100_000, 1_000_000)
FULL_KEYS = (1_000_000, 10_000_000)
QUICK_ACCOUNTS = (1_000, 10_000)
QUICK_KEYS = (10_000,)

# Every wait is bounded by one of these.
RESTORE_TIMEOUT_S = 1_800.0
"""From a worker's start until every partition has answered its probe."""
STOP_TIMEOUT_S = 300.0
"""From SIGTERM until the worker has exited on its own."""
JOIN_TIMEOUT_S = 1_800.0
"""From the third member's start until it has processed its first record."""
LOAD_SETUP_TIMEOUT_S = 300.0
"""Until the load's accounts are open and funded."""
SEED_FLUSH_TIMEOUT_S = 900.0
METADATA_TIMEOUT_S = 30.0
CHECK_IMPORT_TIMEOUT_S = 60.0
TRANSIENT_CODES = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
    }
)

SEED_PARTNER = "bench"
LOAD_PARTNER = "load"
CURRENCY = "EUR"
SEED_BALANCE_MINOR = 10**12
DAY_MS = 24 * 3600 * 1000
EXPIRY_SPREAD_MS = 5 * DAY_MS
"""Seeded idempotency rows expire 1 to 6 days after the log clock: none during a run."""
BODY_SHA256 = "ab" * 32
POLL_S = 0.2
LOAD_TICK_S = 0.1
LOAD_ACCOUNTS = 200
LOAD_AMOUNT_MAX_MINOR = 10
PROGRESS_EVERY = 20_000
MARKER = ".paystream-bench-restore"


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to (the message says why)."""


@dataclass(frozen=True, slots=True)
class Size:
    accounts: int
    keys: int

    @property
    def tag(self) -> str:
        return f"a{self.accounts}-k{self.keys}"


@dataclass(slots=True)
class Measurement:
    seconds: float
    """Wall time of the scenario (see the module docs)."""
    restore_seconds: float = 0.0
    restore_count: float = 0.0
    restored_records: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# --- sizes, command line ---------------------------------------------------------------


def ladder(accounts: Sequence[int], keys: Sequence[int]) -> list[Size]:
    """Accounts grow first (no keys), then keys grow at the largest account count."""
    sizes = [Size(a, 0) for a in sorted(accounts)]
    top = max(accounts)
    return sizes + [Size(top, k) for k in sorted(keys) if k > 0]


def counts(text: str) -> tuple[int, ...]:
    """``"1e4,1e5"`` -> ``(10000, 100000)``."""
    return tuple(int(float(part)) for part in text.split(",") if part.strip())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/restore.py", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--label", default="before", help="name of this run in the results file")
    add("--quick", action="store_true", help=f"smoke run: {QUICK_ACCOUNTS} / {QUICK_KEYS}")
    add("--accounts", type=counts, help=f"account counts (default {FULL_ACCOUNTS})")
    add("--keys", type=counts, help=f"idempotency key counts (default {FULL_KEYS})")
    add("--scenarios", default=",".join(SCENARIOS), help="subset of " + ",".join(SCENARIOS))
    add("--partitions", type=int, default=8)
    add("--load-rate", type=int, default=300, help="transfers/s offered in the join scenario")
    add("--warmup-s", type=float, default=10.0, help="load before the third member starts")
    add("--data-dir", type=Path, default=Path("/tmp/bench-restore"))
    add("--bootstrap", help="an existing Kafka instead of a broker started here")
    add("--prefix", help="topic prefix (default: a new unique one)")
    add("--results", type=Path, help="JSON results file (merged by label)")
    add("--plot", type=Path, help="PNG plot of restore time against store size")
    add("--plot-only", action="store_true", help="redraw the plot from the results file")
    add("--markdown", action="store_true", help="print the results file as markdown tables")
    args = parser.parse_args(argv)
    suffix = "-quick" if args.quick else ""
    args.results = (args.results or REPO / f"bench/results/restore{suffix}.json").resolve()
    args.plot = (args.plot or REPO / f"docs/img/restore{suffix}.png").resolve()
    args.accounts = args.accounts or (QUICK_ACCOUNTS if args.quick else FULL_ACCOUNTS)
    args.keys = args.keys or (QUICK_KEYS if args.quick else FULL_KEYS)
    args.scenarios = tuple(s for s in args.scenarios.split(",") if s)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    args.data_dir = args.data_dir.resolve()
    args.prefix = args.prefix or f"bench-restore-{uuid.uuid4().hex[:8]}"
    return args


# --- broker -------------------------------------------------------------------------------


@contextlib.contextmanager
def kafka(data_dir: Path, bootstrap: str | None) -> Iterator[tuple[str, str | None]]:
    """``(bootstrap, broker version)``: the given Kafka, or a broker of our own.

    Our own broker is the one ``paystream services up`` would run for ``data_dir``
    (127.0.0.1 only, free ports), started as the tests start theirs, stopped on exit.
    """
    if bootstrap:
        yield bootstrap, None
        return
    home = Settings(data_dir=data_dir).services_dir / "kafka"
    broker = start_on_free_ports(home)
    print(f"Kafka started on {broker.bootstrap} in {broker.home}", flush=True)
    try:
        yield broker.bootstrap, broker.version()
    finally:
        broker.stop()
        print("Kafka stopped", flush=True)


def prepare_data_dir(path: Path) -> None:
    """Empty ``path`` for a run; refuse a non-empty directory this benchmark did not make."""
    if path.exists() and any(path.iterdir()) and not (path / MARKER).exists():
        raise BenchError(f"{path} is not empty and not a bench data directory; choose another")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / MARKER).write_text("bench/restore.py data directory; deleted by the next run\n")


# --- seeding the stores -------------------------------------------------------------------


def seed_producer(bootstrap: str) -> Producer:
    """Fast and plain: large batches, a deep queue, no transactions (read_committed
    readers see non-transactional records), failures reported through ``on_delivery``."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "acks": "all",
            "delivery.report.only.error": True,
        }
    )


class Seeder:
    """Grows the stores from one size to the next; remembers a probe account per partition."""

    def __init__(self, bootstrap: str, topics: Topics, *, clock_ms: int) -> None:
        self._bootstrap = bootstrap
        self._producer = seed_producer(bootstrap)
        self._topics = topics
        self._clock_ms = clock_ms
        self._time_part = mint_command_id(partition=0, at_ms=clock_ms, random_bytes=bytes(10))[:10]
        self._failures: list[str] = []
        self.size = Size(0, 0)
        self.produced = 0
        self.probe_accounts: dict[int, str] = {}

    def grow(self, size: Size) -> float:
        """Produce what ``size`` adds to the stores; returns the seconds it took."""
        started = time.monotonic()
        before = end_offsets_total(self._bootstrap, self._seeded_topics())
        if self.size == Size(0, 0):
            self._clock_rows()
        self._accounts(self.size.accounts, size.accounts)
        self._keys(self.size.keys, size.keys)
        self._flush()
        added = end_offsets_total(self._bootstrap, self._seeded_topics()) - before
        if added != self.produced:
            raise BenchError(f"seeded {self.produced} records but the topics grew by {added}")
        self.size, self.produced = size, 0
        if len(self.probe_accounts) != self._topics.partitions:
            raise BenchError(f"accounts on {len(self.probe_accounts)} partitions only")
        return time.monotonic() - started

    def _seeded_topics(self) -> list[str]:
        t = self._topics
        return [t.balances_changelog, t.idempotency_changelog, t.directory]

    def _clock_rows(self) -> None:
        clock = codecs.encode_clock(self._clock_ms)
        for partition in range(self._topics.partitions):
            self._send(self._topics.idempotency_changelog, codecs.CLOCK_KEY, clock, partition)

    def _accounts(self, start: int, end: int) -> None:
        topics = self._topics
        with tqdm(total=end - start, desc="accounts", unit="acct", unit_scale=True) as bar:
            for i in range(start, end):
                account_id = f"bench-{i:08d}"
                key = codecs.encode_account_key(account_id)
                partition = partition_for(key, topics.partitions)
                self.probe_accounts.setdefault(partition, account_id)
                self._send(topics.balances_changelog, key, seed_account(account_id), partition)
                entry = DirectoryEntry(account_id, CURRENCY, SEED_PARTNER, "open")
                self._send(topics.directory, key, codecs.encode_directory_entry(entry), partition)
                if (i - start) % PROGRESS_EVERY == PROGRESS_EVERY - 1:
                    bar.update(PROGRESS_EVERY)
            bar.update(bar.total - bar.n)

    def _keys(self, start: int, end: int) -> None:
        """Half request ids, half command ids (a payment leaves one of each)."""
        topic, partitions = self._topics.idempotency_changelog, self._topics.partitions
        with tqdm(total=end - start, desc="idempotency keys", unit="key", unit_scale=True) as bar:
            for i in range(start, end):
                payment = i // 2
                partition = payment % partitions
                command_id = f"{self._time_part}{payment:016d}-{partition}"
                idem = request_key(SEED_PARTNER, f"seed-{payment}") if i % 2 else None
                key = codecs.encode_idempotency_key(idem or command_key(command_id))
                expires_at_ms = self._clock_ms + DAY_MS + (payment * 7919) % EXPIRY_SPREAD_MS
                record = IdempotencyRecord(
                    command_id=command_id, body_sha256=BODY_SHA256, code=None,
                    expires_at_ms=expires_at_ms,
                )  # fmt: skip
                self._send(topic, key, codecs.encode_idempotency_record(record), partition)
                index = codecs.encode_expiry_index_key(expires_at_ms, key)
                self._send(topic, index, b"", partition)
                if (i - start) % PROGRESS_EVERY == PROGRESS_EVERY - 1:
                    bar.update(PROGRESS_EVERY)
            bar.update(bar.total - bar.n)

    def _send(self, topic: str, key: bytes, value: bytes, partition: int) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, partition, on_delivery=self._on_delivery)
                break
            except BufferError:  # the queue is full: let the broker catch up
                self._producer.poll(0.5)
        self.produced += 1
        if self.produced % PROGRESS_EVERY == 0:
            self._producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, _message: object) -> None:
        if error is not None:
            self._failures.append(str(error))

    def _flush(self) -> None:
        left = self._producer.flush(SEED_FLUSH_TIMEOUT_S)
        if left:
            raise BenchError(f"{left} seed records not delivered in {SEED_FLUSH_TIMEOUT_S} s")
        if self._failures:
            raise BenchError(f"seed records refused: {self._failures[:3]}")


def seed_account(account_id: str) -> bytes:
    account = Account(
        account_id=account_id,
        currency=CURRENCY,
        partner_id=SEED_PARTNER,
        status="open",
        debits_must_not_exceed_credits=True,
        posted_credits_minor=SEED_BALANCE_MINOR,
        version=1,
    )
    return codecs.encode_account(account)


def end_offsets_total(bootstrap: str, topics: Sequence[str]) -> int:
    """The sum of the high watermarks of every partition of ``topics``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-restore-offsets"})
    try:
        total = 0
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics[topic]
            for partition in metadata.partitions:
                total += high_watermark(consumer, TopicPartition(topic, partition))
        return total
    finally:
        consumer.close()


def high_watermark(consumer: Consumer, tp: TopicPartition) -> int:
    """The partition's end, asked again while its leader is not known yet (a new topic)."""
    deadline = time.monotonic() + METADATA_TIMEOUT_S
    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT_S)[1])
        except KafkaException as error:
            code = error.args[0].code()
            if code not in TRANSIENT_CODES or time.monotonic() > deadline:
                raise
        time.sleep(POLL_S)


# --- answers on `events` --------------------------------------------------------------------


class Answers:
    """Follows ``events`` read_committed from its end when made; answers by payment id.

    Events are keyed by their payment id, so only the wanted ones are decoded.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, serde: AvroSerde) -> None:
        self._serde = serde
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-restore-answers",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, self._high(topic, p)) for p in range(partitions)]
        )
        self.types: dict[str, str] = {}

    def _high(self, topic: str, partition: int) -> int:
        return high_watermark(self._consumer, TopicPartition(topic, partition))

    def wait(
        self, ids: set[str], *, timeout_s: float, alive: Callable[[], bool], what: str
    ) -> float:
        """Poll until every id has an answer; the monotonic time when the last one came."""
        wanted = {i.encode(): i for i in ids}
        deadline = time.monotonic() + timeout_s
        while not ids <= self.types.keys():
            if time.monotonic() > deadline:
                left = len(ids - self.types.keys())
                raise BenchError(f"{what}: {left} of {len(ids)} unanswered after {timeout_s} s")
            if not alive():
                raise BenchError(f"{what}: a worker exited before every answer came")
            for message in self._consumer.consume(1_000, POLL_S):
                if message.error() is not None:
                    raise KafkaException(message.error())
                payment_id = wanted.get(message.key() or b"")
                if payment_id is not None:
                    self.types[payment_id] = self._serde.decode_event(message.value() or b"").type
        return time.monotonic()

    def close(self) -> None:
        self._consumer.close()


# --- worker metrics -------------------------------------------------------------------------


def metric_sums(directory: Path) -> dict[str, float]:
    """Every sample of the worker family's metrics, summed over its labels, by sample name."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(collect_text(directory)):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def restore_metrics(directory: Path) -> dict[str, float]:
    sums = metric_sums(directory)
    return {
        "restore_seconds": sums.get("paystream_worker_restore_seconds_sum", 0.0),
        "restore_count": sums.get("paystream_worker_restore_seconds_count", 0.0),
        "restored_records": sums.get("paystream_worker_restored_records_total", 0.0),
    }


def restore_log_lines(log_file: Path) -> list[str]:
    """The worker log's lines about restores (what each one read, how long it took)."""
    if not log_file.is_file():
        return []
    lines = log_file.read_text(errors="replace").splitlines()
    return [line[-300:] for line in lines if "restor" in line.lower()][:20]


# --- the running benchmark ------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Bench:
    """The benchmark's Kafka, topics and serde, and every worker process it started."""

    settings: Settings
    topics: Topics
    serde: AvroSerde
    publisher: CommandPublisher
    probe_accounts: dict[int, str] = field(default_factory=dict)
    started: list[WorkerProcess] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def worker_env(self) -> dict[str, str]:
        """What a worker reads its settings from (``paystream.settings``)."""
        return {
            "PAYSTREAM_KAFKA_BOOTSTRAP": self.bootstrap,
            "PAYSTREAM_KAFKA_SECURITY": self.settings.kafka_security,
            "PAYSTREAM_DATA_DIR": str(self.settings.data_dir),
            "PAYSTREAM_TOPIC_PREFIX": self.settings.topic_prefix,
            "PAYSTREAM_PARTITIONS": str(self.settings.partitions),
            "PAYSTREAM_WORKER_LOG_LEVEL": "info",
        }

    def worker(self, name: str, run: str) -> WorkerProcess:
        """A worker named ``name`` (its store directory) with a log and metrics of this run."""
        data_dir = self.settings.data_dir
        worker = WorkerProcess(
            name,
            self.worker_env(),
            data_dir / "logs" / f"{run}.log",
            metrics_dir=prepare_metrics_dir(data_dir / "metrics" / run),
        )
        self.started.append(worker)
        return worker

    def wipe(self, name: str) -> None:
        """Remove a worker's local stores: its next start restores everything."""
        shutil.rmtree(worker_dir(self.settings, name), ignore_errors=True)

    def answers(self) -> Answers:
        return Answers(self.bootstrap, self.topics.events, self.topics.partitions, self.serde)

    def send_probes(self) -> set[str]:
        """A 1-unit Deposit to a seeded account on every partition; their command ids."""
        at_ms = now_ms()
        probes = [
            Deposit(
                mint_command_id(partition=p, at_ms=at_ms, random_bytes=os.urandom(10)),
                f"probe-{uuid.uuid4().hex}", SEED_PARTNER, at_ms, account_id, 1, CURRENCY,
            )
            for p, account_id in sorted(self.probe_accounts.items())
        ]  # fmt: skip
        self.publisher.publish_all(probes)
        self.publisher.flush()
        return {probe.command_id for probe in probes}

    def measurement(self, seconds: float, worker: WorkerProcess) -> Measurement:
        if worker.metrics_dir is None:
            raise BenchError(f"worker {worker.name} has no metrics directory")
        sums = restore_metrics(worker.metrics_dir)
        return Measurement(
            seconds=seconds,
            restore_seconds=sums["restore_seconds"],
            restore_count=sums["restore_count"],
            restored_records=sums["restored_records"],
            extra={"log": restore_log_lines(worker.log_file)},
        )

    def close(self) -> None:
        """Stop every worker still running (SIGTERM, SIGKILL if it does not exit)."""
        for worker in self.started:
            worker.stop()

    def logs(self) -> str:
        return "".join(
            f"\n--- {w.log_file} (alive={w.alive}):\n{tail_text(w.log_file)}"
            for w in self.started[-3:]
        )


def tail_text(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def all_alive(workers: Sequence[WorkerProcess]) -> Callable[[], bool]:
    return lambda: all(worker.alive for worker in workers)


def check_completed(answers: Answers, ids: set[str], what: str) -> None:
    wrong = {answers.types[i] for i in ids} - {"Completed"}
    if wrong:
        raise BenchError(f"{what}: probes answered {sorted(wrong)}, expected Completed")


def measure_start(bench: Bench, worker: WorkerProcess, what: str) -> Measurement:
    """Start ``worker``; the time until every partition has answered a probe sent at once."""
    answers = bench.answers()
    try:
        started = time.monotonic()
        worker.start()
        ids = bench.send_probes()
        done = answers.wait(ids, timeout_s=RESTORE_TIMEOUT_S, alive=all_alive([worker]), what=what)
        check_completed(answers, ids, what)
    finally:
        answers.close()
    return bench.measurement(done - started, worker)


def stop_cleanly(worker: WorkerProcess) -> float:
    """SIGTERM, and the seconds until the worker exited on its own (with exit code 0)."""
    process = worker.process
    if process is None or not worker.alive:
        raise BenchError(f"worker {worker.name} is not running")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        worker.kill()
        raise BenchError(
            f"worker {worker.name} still running {STOP_TIMEOUT_S} s after SIGTERM"
        ) from error
    if code != 0:
        raise BenchError(f"worker {worker.name} exited with {code} after SIGTERM")
    return time.monotonic() - started


Record = Callable[[str, Size, Measurement], None]


def run_restarts(bench: Bench, size: Size, scenarios: Sequence[str], record: Record) -> None:
    """full (empty data directory), then clean (after SIGTERM), then kill (after SIGKILL)."""
    name = "restore-1"
    bench.wipe(name)
    worker = bench.worker(name, f"{size.tag}-full")
    full = measure_start(bench, worker, f"full restore at {size.tag}")
    if "full" in scenarios:
        record("full", size, full)
    stopped_s = stop_cleanly(worker)
    if "clean" in scenarios or "kill" in scenarios:
        worker = bench.worker(name, f"{size.tag}-clean")
        clean = measure_start(bench, worker, f"restart after a clean stop at {size.tag}")
        clean.extra["stop_seconds"] = stopped_s
        if "clean" in scenarios:
            record("clean", size, clean)
    if "kill" in scenarios:
        worker.kill()
        worker = bench.worker(name, f"{size.tag}-kill")
        record("kill", size, measure_start(bench, worker, f"restart after SIGKILL at {size.tag}"))
    stop_cleanly(worker)


# --- a new member under load -------------------------------------------------------------------


class Load:
    """Honest transfers among accounts that ``paystream.workload`` opens and funds, at a
    steady rate, from a thread; ids are minted when sent, so the load can run for ever."""

    def __init__(self, bench: Bench, *, rate: int) -> None:
        self._bench = bench
        self._rate = rate
        self._workload = build(
            seed=7,
            mix=Mix(accounts=LOAD_ACCOUNTS, transfers=0, partitions=bench.topics.partitions),
            run_id=f"load-{uuid.uuid4().hex[:6]}",
            now_ms=now_ms(),
            partner_id=LOAD_PARTNER,
            currency=CURRENCY,
        )
        self._funded = [c.account_id for c in self._workload.setup if isinstance(c, Deposit)]
        self._publisher = CommandPublisher(
            kafka=bench.settings.kafka, topic=bench.topics.commands, serde=bench.serde
        )
        self._rng = random.Random(7)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._opened = False
        self._started = 0.0
        self.sent = 0

    def open(self, alive: Callable[[], bool]) -> None:
        """Open and fund the load's accounts (once per benchmark run)."""
        if self._opened:
            return
        answers = self._bench.answers()
        try:
            self._publisher.publish_all(self._workload.setup)
            self._publisher.flush()
            ids = {command.command_id for command in self._workload.setup}
            answers.wait(ids, timeout_s=LOAD_SETUP_TIMEOUT_S, alive=alive, what="load setup")
            check_completed(answers, ids, "load setup")
        finally:
            answers.close()
        self._opened = True

    def start(self) -> None:
        self._stop.clear()
        self.sent, self._started = 0, time.monotonic()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """Stop sending; the transfers per second offered since ``start``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._publisher.flush()
        if self._error is not None:
            raise BenchError(f"the load failed: {self._error!r}") from self._error
        return self.sent / max(time.monotonic() - self._started, 1e-9)

    def _run(self) -> None:
        per_tick = max(1, round(self._rate * LOAD_TICK_S))
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                self._publisher.publish_all(self._transfer() for _ in range(per_tick))
                self.sent += per_tick
                next_tick += LOAD_TICK_S
                self._stop.wait(max(0.0, next_tick - time.monotonic()))
        except BaseException as error:  # reported by stop()
            self._error = error

    def _transfer(self) -> Transfer:
        source, destination = self._rng.sample(self._funded, 2)
        partition = partition_for(source.encode(), self._bench.topics.partitions)
        at_ms = now_ms()
        command_id = mint_command_id(
            partition=partition, at_ms=at_ms, random_bytes=self._rng.randbytes(10)
        )
        amount = self._rng.randint(1, LOAD_AMOUNT_MAX_MINOR)
        return Transfer(
            command_id, f"load-{command_id}", LOAD_PARTNER, at_ms, source, destination,
            amount, CURRENCY,
        )  # fmt: skip


def wait_first_input(worker: WorkerProcess, *, alive: Callable[[], bool]) -> float:
    """The monotonic time when ``worker``'s metrics first count a consumed input record."""
    if worker.metrics_dir is None:
        raise BenchError(f"worker {worker.name} has no metrics directory")
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while metric_sums(worker.metrics_dir).get("paystream_worker_inputs_total", 0.0) <= 0:
        if time.monotonic() > deadline:
            raise BenchError(f"{worker.name} processed nothing within {JOIN_TIMEOUT_S} s")
        if not alive():
            raise BenchError(f"a worker exited while {worker.name} was joining")
        time.sleep(POLL_S / 2)
    return time.monotonic()


def sleep_watching(seconds: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive():
            raise BenchError("a worker exited during the load's warm-up")
        time.sleep(POLL_S)


def start_group(bench: Bench, workers: Sequence[WorkerProcess], what: str) -> float:
    """Start ``workers`` together; the seconds until the group has settled.

    Settled: the group is Stable with all of them, and then every partition has
    answered a probe. A member restores inside its rebalance callback and the group
    cannot rebalance again until it returns, so answers alone can come from an earlier
    assignment while another restore is still to come.
    """
    started = time.monotonic()
    for worker in workers:
        worker.start()
    alive = all_alive(workers)
    wait_stable(bench, len(workers), alive=alive, what=what)
    answers = bench.answers()
    try:
        ids = bench.send_probes()
        done = answers.wait(ids, timeout_s=RESTORE_TIMEOUT_S, alive=alive, what=what)
        check_completed(answers, ids, what)
    finally:
        answers.close()
    return done - started


def wait_stable(bench: Bench, members: int, *, alive: Callable[[], bool], what: str) -> None:
    """Until the workers' consumer group is Stable with ``members`` members."""
    group_id = app_id_for(bench.settings)
    admin = AdminClient({"bootstrap.servers": bench.bootstrap})
    deadline = time.monotonic() + RESTORE_TIMEOUT_S
    while not group_stable(admin, group_id, members):
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: {group_id} not Stable with {members} members in time")
        if not alive():
            raise BenchError(f"{what}: a worker exited before the group was Stable")
        time.sleep(POLL_S)


def group_stable(admin: AdminClient, group_id: str, members: int) -> bool:
    future = admin.describe_consumer_groups([group_id])[group_id]
    try:
        group = future.result(timeout=METADATA_TIMEOUT_S)
    except KafkaException:  # no such group yet
        return False
    return bool(group.state == ConsumerGroupState.STABLE and len(group.members) == members)


def restored_records(workers: Sequence[WorkerProcess]) -> float:
    return sum(restore_metrics(w.metrics_dir)["restored_records"] for w in workers if w.metrics_dir)


def run_join(bench: Bench, size: Size, load: Load, *, warmup_s: float) -> Measurement:
    """A group of two under load; the time from a third member's start to its first record."""
    names = ("join-1", "join-2", "join-3")
    for name in names:
        bench.wipe(name)
    old = [bench.worker(name, f"{size.tag}-{name}") for name in names[:2]]
    ready_s = start_group(bench, old, f"group of two at {size.tag}")
    load.open(all_alive(old))
    load.start()
    try:
        sleep_watching(warmup_s, all_alive(old))
        joined, new = join_third(bench, size, old, names[2])
    finally:
        offered = load.stop()
    joined.extra |= {"group_of_two_ready_seconds": ready_s, "offered_transfers_per_s": offered}
    for worker in [*old, new]:
        stop_cleanly(worker)
    return joined


def join_third(
    bench: Bench, size: Size, old: Sequence[WorkerProcess], name: str
) -> tuple[Measurement, WorkerProcess]:
    """Start a third member; measured until its first record, then until every partition
    has answered a probe sent when it started (the group serves again)."""
    old_restored = restored_records(old)
    new = bench.worker(name, f"{size.tag}-{name}")
    everyone = all_alive([*old, new])
    answers = bench.answers()
    try:
        started = time.monotonic()
        new.start()
        ids = bench.send_probes()
        first = wait_first_input(new, alive=everyone)
        what = f"group of three at {size.tag}"
        served = answers.wait(ids, timeout_s=JOIN_TIMEOUT_S, alive=everyone, what=what)
    finally:
        answers.close()
    joined = bench.measurement(first - started, new)
    joined.extra |= {
        "all_partitions_answered_seconds": served - started,
        "old_members_restored_records": restored_records(old) - old_restored,
    }
    return joined, new


# --- results ----------------------------------------------------------------------------------


def seeded_records(size: Size, partitions: int) -> int:
    """Records a full restore reads: balances, directory, idempotency rows with their expiry
    index rows, and the clock rows."""
    return 2 * size.accounts + 2 * size.keys + partitions


class Results:
    """The JSON file: one entry per label (``before``, ``after``, ...), merged on write."""

    def __init__(self, path: Path, label: str, run: dict[str, Any]) -> None:
        """A run replaces the rows of its scenarios under ``label`` and keeps the others."""
        self._path = path
        self._data = load_results(path)
        earlier = self._data["runs"].get(label, {})
        kept = [
            {"run_started_at": earlier.get("started_at"), **row}
            for row in earlier.get("results", [])
            if row["scenario"] not in run["config"]["scenarios"]
        ]
        runs = earlier.get("earlier_runs", [])
        if kept:
            runs = [*runs, {k: earlier.get(k) for k in ("command", "started_at", "status")}]
        self.run = {**run, "label": label, "earlier_runs": runs, "seeding": [], "results": kept}
        self._data["runs"][label] = self.run
        self.save()

    def seeded(self, size: Size, seconds: float, partitions: int) -> None:
        records = seeded_records(size, partitions)
        self.run["seeding"].append({**asdict(size), "records": records, "seconds": seconds})
        print(f"store {size.tag}: {records:,} records, grown in {seconds:.1f} s", flush=True)
        self.save()

    def record(self, scenario: str, size: Size, measured: Measurement, partitions: int) -> None:
        row = {
            "scenario": scenario,
            **asdict(size),
            "rows": size.accounts + size.keys,
            "store_records": seeded_records(size, partitions),
            "seconds": round(measured.seconds, 3),
            "restore_seconds": round(measured.restore_seconds, 3),
            "restore_count": measured.restore_count,
            "restored_records": measured.restored_records,
            **measured.extra,
            "run_started_at": self.run["started_at"],
        }
        self.run["results"].append(row)
        print(format_row(row), flush=True)
        self.save()

    def finish(self, status: str) -> None:
        self.run["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.run["status"] = status
        self.save()

    def save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._data, indent=2) + "\n")
        temporary.replace(self._path)


def load_results(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"benchmark": "restore", "about": __doc__.split("\n")[0], "runs": {}}
    data: dict[str, Any] = json.loads(path.read_text())
    data.setdefault("runs", {})
    return data


TABLE_HEADER = (
    f"{'scenario':8} {'accounts':>9} {'keys':>10} {'records':>11} {'seconds':>9}"
    f" {'restore s':>10} {'restores':>8} {'restored records':>16}"
)


def format_row(row: dict[str, Any]) -> str:
    return (
        f"{row['scenario']:8} {row['accounts']:>9,} {row['keys']:>10,}"
        f" {row['store_records']:>11,} {row['seconds']:>9.2f} {row['restore_seconds']:>10.2f}"
        f" {row['restore_count']:>8.0f} {row['restored_records']:>16,.0f}"
    )


def print_table(run: dict[str, Any]) -> None:
    print(f"\n{run['label']}: {run.get('command', '')}")
    print(TABLE_HEADER)
    for row in sorted(run["results"], key=lambda r: (SCENARIOS.index(r["scenario"]), r["rows"])):
        print(format_row(row))


def markdown(data: dict[str, Any]) -> str:
    """Per label: seconds per store size and scenario, and what the full restore read."""
    parts = []
    for label, run in data["runs"].items():
        by_size: dict[tuple[int, int], dict[str, Any]] = {}
        for row in run["results"]:
            by_size.setdefault((row["accounts"], row["keys"]), {})[row["scenario"]] = row
        commands = [*run.get("earlier_runs", []), run]
        lines = [
            f"**{label}** (PYTHONPATH={run.get('pythonpath')}): "
            + "; ".join(f"`{c.get('command')}` ({c.get('status', 'running')})" for c in commands),
            "",
            "| accounts | idempotency keys | store records | full s | clean s | kill s"
            " | join s | full: restore s (metric) | full: restored records |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for (accounts, keys), rows in sorted(by_size.items()):
            cells = [_seconds(rows.get(s)) for s in SCENARIOS]
            full = rows.get("full", {})
            lines.append(
                f"| {accounts:,} | {keys:,} | {next(iter(rows.values()))['store_records']:,}"
                f" | {' | '.join(cells)} | {full.get('restore_seconds', 0):.1f}"
                f" | {full.get('restored_records', 0):,.0f} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _seconds(row: dict[str, Any] | None) -> str:
    return "" if row is None else f"{row['seconds']:.1f}"


def machine(kafka_version: str | None) -> dict[str, Any]:
    """What the numbers were measured on."""
    from importlib.metadata import version

    return bench_machine.facts(kafka=kafka_version, rocksdict=version("rocksdict"))


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    return None


def source_info(worker_env: dict[str, str]) -> dict[str, Any]:
    """Which paystream this process and its worker children import, and its commit.

    The children are checked the way they start (``python -m`` puts the working
    directory first on ``sys.path``): both must be the same source tree.
    """
    mine = str(Path(paystream.__file__).resolve())
    check = [sys.executable, "-c", "import paystream; print(paystream.__file__)"]
    child = subprocess.run(
        check, env={**os.environ, **worker_env}, capture_output=True, text=True,
        timeout=CHECK_IMPORT_TIMEOUT_S, check=True,
    ).stdout.strip()  # fmt: skip
    if str(Path(child).resolve()) != mine:
        raise BenchError(f"workers would import {child}, this process imports {mine}")
    tree = Path(mine).parents[1]
    git = ["git", "-C", str(tree)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    status = subprocess.run(
        [*git, "status", "--porcelain", "paystream"], capture_output=True, text=True
    )
    return {
        "paystream": mine,
        "commit": commit.stdout.strip() or None,
        "paystream_dirty": bool(status.stdout.strip()),
    }


# --- the plot ---------------------------------------------------------------------------------

MARKERS = {"full": "o", "clean": "s", "kill": "x", "join": "^"}
COLORS = {"full": "tab:blue", "clean": "tab:green", "kill": "tab:red", "join": "tab:purple"}
LINESTYLES = {"before": "--", "after": "-"}


def plot(data: dict[str, Any], path: Path) -> None:
    """Seconds against store records, log-log: a line per scenario and label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5))
    for label, run in data["runs"].items():
        for scenario in SCENARIOS:
            points = sorted(
                (row["store_records"], row["seconds"])
                for row in run["results"]
                if row["scenario"] == scenario
            )
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(
                    xs, ys, marker=MARKERS[scenario], color=COLORS[scenario],
                    linestyle=LINESTYLES.get(label, ":"), label=f"{scenario} ({label})",
                )  # fmt: skip
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("store size: changelog + directory records")
    axes.set_ylabel("seconds until every partition answers (join: first record)")
    axes.set_title("paystream worker restore time (bench/restore.py)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small", ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    print(f"plot: {path}")


# --- main ---------------------------------------------------------------------------------------


def make_bench(args: argparse.Namespace, bootstrap: str) -> Bench:
    settings = Settings(
        data_dir=args.data_dir,
        kafka_bootstrap=bootstrap,
        kafka_security="plaintext",
        topic_prefix=args.prefix,
        partitions=args.partitions,
    )
    topics = Topics.from_settings(settings)
    ensure_topics(settings.kafka, topics)
    serde = AvroSerde(registry_from_url(None, settings.data_dir), topics=topics.payloads())
    publisher = CommandPublisher(kafka=settings.kafka, topic=topics.commands, serde=serde)
    return Bench(settings=settings, topics=topics, serde=serde, publisher=publisher)


def run_info(args: argparse.Namespace, bench: Bench, kafka_version: str | None) -> dict[str, Any]:
    sizes = ladder(args.accounts, args.keys)
    return {
        "command": shlex.join(sys.argv),
        "pythonpath": os.environ.get("PYTHONPATH"),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source_info(bench.worker_env()),
        "machine": machine(kafka_version),
        "config": {
            "sizes": [asdict(size) for size in sizes],
            "scenarios": list(args.scenarios),
            "partitions": args.partitions,
            "load_rate": args.load_rate,
            "warmup_s": args.warmup_s,
            "topic_prefix": args.prefix,
            "bootstrap": bench.bootstrap,
            "data_dir": str(args.data_dir),
        },
    }


def run_all(bench: Bench, args: argparse.Namespace, results: Results) -> None:
    partitions = bench.topics.partitions
    seeder = Seeder(bench.bootstrap, bench.topics, clock_ms=now_ms())
    load = Load(bench, rate=args.load_rate) if "join" in args.scenarios else None

    def record(scenario: str, size: Size, measured: Measurement) -> None:
        results.record(scenario, size, measured, partitions)

    for size in ladder(args.accounts, args.keys):
        results.seeded(size, seeder.grow(size), partitions)
        bench.probe_accounts = dict(seeder.probe_accounts)
        if set(args.scenarios) & set(RESTART_SCENARIOS):
            run_restarts(bench, size, args.scenarios, record)
        if load is not None:
            record("join", size, run_join(bench, size, load, warmup_s=args.warmup_s))


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(128 + signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot_only or args.markdown:
        data = load_results(args.results)
        if args.markdown:
            print(markdown(data))
        if args.plot_only:
            plot(data, args.plot)
        return 0
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # stop the workers and Kafka too
    for name in [name for name in os.environ if name.startswith("PAYSTREAM_")]:
        print(f"ignoring {name} (workers get only the settings this benchmark gives them)")
        del os.environ[name]
    prepare_data_dir(args.data_dir)
    os.chdir(args.data_dir)  # workers run `python -m`: their sys.path starts here
    with kafka(args.data_dir, args.bootstrap) as (bootstrap, kafka_version):
        bench = make_bench(args, bootstrap)
        results = Results(args.results, args.label, run_info(args, bench, kafka_version))
        status = "failed"
        try:
            run_all(bench, args, results)
            status = "complete"
        except (KeyboardInterrupt, SystemExit):
            status = "interrupted"
            raise
        except BaseException:
            print(f"failed; the last workers' logs:{bench.logs()}", file=sys.stderr)
            raise
        finally:
            bench.close()
            results.finish(status)
    print_table(results.run)
    plot(load_results(args.results), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
