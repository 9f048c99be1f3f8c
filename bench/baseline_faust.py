"""Baseline: the design card's framework, faust-streaming under its exactly-once mode
(issue 18, "Baselines in the same run"). Throughput only: it is not crash-safe.

bench/faust_app.py is the app: one agent over ``commands`` and ``legs``, a RocksDB table
of balances and one of the payments' steps, ``processing_guarantee="exactly_once"`` and
faust's own commit timer; per payment the records paystream's saga reads and writes
(bench/results/baseline_passthrough.json, ``wire_profile``): 3 in (1 command, 2 legs),
7 sent (2 legs, 3 ledger lines, a Debited and a Completed event), and 5 table writes --
paystream writes 10.4 changelog records a payment, so faust does less here.

**Not crash-safe.** paystream's first worker was a faust-streaming 0.15.3 agent under this
mode, and it lost 15 to 750 of 20,000 transfers under SIGKILL (README, "Why not faust's
consumer loop"). The figure is what the framework reaches when nothing goes wrong.

**One worker process only.** Under ``exactly_once`` faust sends each record through the
transactional producer of the partition the record goes to (faust/transport/consumer.py,
``TransactionManager.send``), and a worker holds producers for its own partitions only:
with two workers, a leg, ledger line or event keyed to the other worker's partition
raises ``ProducerSendError("No transaction producer found ...")`` and faust restarts the
agent, which crashes again. A run with 2 processes is still tried (it costs about 30-40 s):
it stops at the first ``Crashed reason=`` in a worker's log and records ``failed`` with
faust's words; the run goes on. (With one worker, a step's outputs go through the target
partitions' transactions, not the one that commits its input offset: faust commits them
one after another, not atomically -- one way to lose a leg in a crash.)

How faust is installed: the extra ``bench-faust`` (pyproject.toml), pinned to
faust-streaming 0.15.3 with rocksdict (the version paystream ran on), mode-streaming 0.7.1
and aiokafka 0.14.0, in the project's own venv (``pip install -e '.[dev,bench,bench-faust]'``).
It resolves alongside the dev extra (checked in a throwaway venv: faust-streaming wants
aiokafka >= 0.10, the dev extra pins 0.14; the one change is click 8.3.3 for faust's
``click < 8.4``, which uvicorn and schemathesis accept), so no venv of its own is needed.
faust's ``rocksdb://`` store runs on rocksdict (the ``rocksdb`` binding is not installed):
the tables are RocksDB, not memory. Each worker is its own OS process (``python -c``
importing bench.faust_app, its settings in ``FAUST_BENCH_*``), stopped by its pid.
This module imports no faust: it runs (and says what to install) without the extra.

A broker of its own on free ports of 127.0.0.1. Per count of worker processes, on topics
and a consumer group of their own (the tables' changelogs created beforehand, as faust
would declare them): the workers started and their group stable with every member;
``WARMUP_TRANSFERS`` transfers of another seed answered (untimed: the tables are
recovered and the transactional producers started); then the saga benchmark's transfers
(``bench.saga.honest_mix``, uniform over ``--accounts``, seed 18, less the rare one to its
own account) produced as fast as the producer goes. Each account opens with the saga
benchmark's deposit (the balances table's default), so none is refused. payments/s =
transfers answered / (last answer's broker timestamp - the first transfer's production
time), as bench/saga.py measures paystream. CPU seconds of the workers, the broker and
the rest of the machine over the timed window are in the JSON (``cpu``: ``members_s`` are
the workers). faust's options are its defaults (commit every 2.8 s or 10,000 events,
``producer_linger`` 0: ``--linger-ms`` sets it), said out in bench/faust_app.py.

    .venv/bin/python -m bench.baseline_faust [--transfers 2000] [--accounts 10000]
        [--processes 1 2] [--linger-ms 0] [--output bench/results/baseline_faust.json]
        [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from tqdm import tqdm

from bench import machine
from bench.baseline_passthrough import CpuReading, process_cpu_s
from bench.report import write_result
from bench.saga import DEPOSIT_MINOR, honest_mix
from paystream import workload
from paystream.ledger import Transfer, ensure
from paystream.services.kafka import start_on_free_ports
from paystream.services.process import read_pid
from paystream.topology.topics import TOPIC_CREATE_TIMEOUT_S

__all__ = ["NOT_CRASH_SAFE", "main", "markdown", "plots", "run"]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "baseline_faust.json"
PASSTHROUGH_RESULTS = REPO / "bench" / "results" / "baseline_passthrough.json"
TRANSFERS = 2_000
TRANSFERS_MAX = 200_000
ACCOUNTS = 10_000
ACCOUNTS_MAX = 100_000
PROCESSES = (1, 2)
PROCESSES_MAX = 4
LINGER_MS = 0
LINGER_MS_MAX = 1_000
PARTITIONS = 8
SEED = 18
RUN_ID = "faust"
TOPIC_ROLES = ("commands", "legs", "ledger", "events")
TABLES = ("balances", "steps")
"""bench/faust_app.py's tables: faust names their changelogs ``<app id>-<table>-changelog``."""
FAUST_PACKAGES = ("faust-streaming", "mode-streaming", "aiokafka", "rocksdict")

GROUP_STABLE_TIMEOUT_S = 90.0
GROUP_POLL_S = 0.5
WARMUP_TRANSFERS = 200
WARMUP_TIMEOUT_S = 120.0
"""The warm-up's transfers must all be answered within this (then the run fails)."""
ANSWER_TIMEOUT_S = 240.0
"""The timed transfers must all be answered within this (then the run fails)."""
STALL_TIMEOUT_S = 60.0
"""No new event (any type) for this long: the workers are stuck, the run fails."""
POLL_BATCH_MAX = 10_000
POLL_WAIT_S = 0.5
PRODUCE_FLUSH_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 3_000
CRASH_MARK = b"Crashed reason="
SERIES_BUCKET_MS = 1_000

NOT_CRASH_SAFE = (
    "faust-streaming's exactly-once mode is not crash-safe in our tests: paystream's first "
    "worker, a faust-streaming 0.15.3 agent under this mode, lost 15 to 750 of 20,000 "
    'transfers under SIGKILL (README, "Why not faust\'s consumer loop"). This baseline is '
    "throughput only, measured with nothing killed."
)
ONE_WORKER_ONLY = (
    "Under exactly_once, faust-streaming 0.15.3 sends each record through the transactional "
    "producer of the partition the record goes to (faust/transport/consumer.py, "
    "TransactionManager.send), and a worker has producers only for its own partitions: a "
    "leg, ledger line or event keyed to an account or payment on another worker's partition "
    "cannot be sent. The saga sends to the other account's partition, so this agent runs "
    "with one worker process only. (With one worker, a step's outputs and its input offset "
    "also go through different producers' transactions.)"
)
TERMINAL_TYPES = frozenset({"Completed", "Rejected"})
SHAPE = {
    "records_in": {"commands": 1, "legs": 2},
    "records_sent": {"legs": 2, "ledger": 3, "events": 2},
    "table_writes": {"balances": 2, "steps": 3},
}
"""Per payment, what bench/faust_app.py reads, sends and writes to its tables."""


# --- the transfers ----------------------------------------------------------------------


def transfers_for(*, accounts: int, count: int, seed: int) -> list[Transfer]:
    """The saga benchmark's uniform transfers (``bench.saga.honest_mix``), less the rare one
    to its own account (paystream refuses it; it is no payment here)."""
    mix = honest_mix(accounts=accounts, transfers=count, distribution="uniform")
    load = workload.build(seed=seed, mix=mix, run_id=RUN_ID, now_ms=int(time.time() * 1000))
    return [
        c for c in map(workload.command_of, load.traffic)
        if isinstance(c, Transfer) and c.account_id != c.destination_account_id
    ]  # fmt: skip


def records(transfers: Sequence[Transfer]) -> list[tuple[str, bytes]]:
    """(key, value): each transfer as a ``Step`` record (bench/faust_app.py) in faust's JSON,
    keyed by its source account."""
    return [
        (t.account_id, json.dumps({
            "kind": "transfer", "payment_id": t.command_id, "source": t.account_id,
            "destination": t.destination_account_id, "amount_minor": t.amount_minor,
        }).encode())
        for t in transfers
    ]  # fmt: skip


def produce(producer: Producer, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
    """Keyed records, as fast as the producer goes; every one delivered before it returns."""
    for key, value in records:
        try:
            producer.produce(topic, key=key.encode(), value=value)
        except BufferError:  # the local queue is full: let it drain, then retry once
            producer.poll(1.0)
            producer.produce(topic, key=key.encode(), value=value)
        producer.poll(0)
    left = producer.flush(PRODUCE_FLUSH_TIMEOUT_S)
    ensure(left == 0, f"{left} records not delivered to {topic}")


def new_producer(bootstrap: str) -> Producer:
    return Producer({
        "bootstrap.servers": bootstrap,
        "partitioner": "murmur2_random",  # Java's, as aiokafka (faust) places the legs
        "enable.idempotence": True, "acks": "all", "linger.ms": 5,
        "queue.buffering.max.messages": 1_000_000,
    })  # fmt: skip


# --- the answers ------------------------------------------------------------------------


class Unanswered(RuntimeError):
    """The workers did not answer in time: an operating error (the run fails, with their
    logs), not a broken invariant."""


class AgentCrashed(RuntimeError):
    """faust crashed the agent (its log says ``Crashed reason=``): the scenario's result
    says why, and the run goes on with the next count of workers."""


class Answers:
    """Reads ``events`` read_committed from the start: each event's type and broker time."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"{topic}-reader",
            "enable.auto.commit": False, "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        })  # fmt: skip
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.types: Counter[str] = Counter()
        self.answers: dict[str, tuple[str, int]] = {}
        """payment id -> (its terminal event's type, the event's broker timestamp in ms)."""

    def wait(
        self, payment_ids: Sequence[str], *, timeout_s: float, label: str,
        check: Callable[[], None],
    ) -> None:  # fmt: skip
        """Until each of ``payment_ids`` has its terminal event (Completed or Rejected);
        ``check`` raises if the workers failed."""
        deadline = time.monotonic() + timeout_s
        progressed = time.monotonic()
        with tqdm(
            total=len(payment_ids), desc=label, unit="payments", file=sys.stderr, leave=False,
            mininterval=1.0,
        ) as bar:  # fmt: skip
            while (done := sum(p in self.answers for p in payment_ids)) < len(payment_ids):
                bar.update(done - bar.n)
                check()
                if time.monotonic() > deadline:
                    raise Unanswered(f"{label}: {done:,} of {len(payment_ids):,} answered "
                                     f"in {timeout_s} s")  # fmt: skip
                if time.monotonic() - progressed > STALL_TIMEOUT_S:
                    raise Unanswered(f"{label}: no answer for {STALL_TIMEOUT_S} s")
                if self._poll():
                    progressed = time.monotonic()

    def _poll(self) -> int:
        messages = self._consumer.consume(POLL_BATCH_MAX, POLL_WAIT_S)
        for message in messages:
            if message.error() is not None:
                raise KafkaException(message.error())
            event = json.loads(message.value() or b"{}")
            self.types[event["type"]] += 1
            if event["type"] in TERMINAL_TYPES:
                self.answers[event["payment_id"]] = (event["type"], message.timestamp()[1])
        return len(messages)

    def close(self) -> None:
        self._consumer.close()


# --- the workers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workers:
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def check(self) -> None:
        """Raises if a worker ended or faust crashed its agent (faust restarts it, and it
        crashes again: the run cannot end)."""
        dead = [i for i, p in enumerate(self.processes) if p.poll() is not None]
        if dead:
            raise RuntimeError(f"faust workers {dead} ended{self.tails()}")
        for log in self.logs:
            with log.open("rb") as lines:
                crash = next((c for c in lines if CRASH_MARK in c), None)
            if crash is not None:
                raise AgentCrashed(crash.decode(errors="replace").strip())

    def tails(self) -> str:
        return "".join(
            f"\n--- {log.name} ---\n{log.read_text(errors='replace')[-LOG_TAIL_CHARS:]}"
            for log in self.logs if log.exists()
        )  # fmt: skip

    def cpu_s(self) -> float:
        return sum(process_cpu_s(pid) or 0.0 for pid in self.pids())


@contextlib.contextmanager
def faust_workers(
    count: int, *, bootstrap: str, app_id: str, prefix: str, home: Path, logs: Path,
    linger_ms: int,
) -> Iterator[Workers]:  # fmt: skip
    """``count`` worker processes of bench/faust_app.py in one group; stopped at the end
    (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``), each by its own pid."""
    processes: list[subprocess.Popen[bytes]] = []
    files = [logs / f"{app_id}-worker-{i}.log" for i in range(count)]
    try:
        for index, log in enumerate(files):
            env = os.environ | {
                "FAUST_BENCH_BOOTSTRAP": bootstrap, "FAUST_BENCH_APP_ID": app_id,
                "FAUST_BENCH_TOPIC_PREFIX": prefix,
                "FAUST_BENCH_OPENING_BALANCE_MINOR": str(DEPOSIT_MINOR),
                "FAUST_BENCH_PRODUCER_LINGER_MS": str(linger_ms),
                "FAUST_BENCH_DATADIR": str(home / f"{app_id}-data-{index}"),
            }  # fmt: skip
            with log.open("wb") as out:
                processes.append(subprocess.Popen(
                    [sys.executable, "-c", "from bench.faust_app import main; main()"],
                    cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                ))  # fmt: skip
        yield Workers(processes, files)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_S)


def wait_for_group(bootstrap: str, group_id: str, members: int, workers: Workers) -> float:
    """Until the group is stable with ``members`` members; the seconds it took."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    started = time.monotonic()
    while time.monotonic() - started < GROUP_STABLE_TIMEOUT_S:
        workers.check()
        found = admin.describe_consumer_groups([group_id])[group_id]
        with contextlib.suppress(KafkaException, TimeoutError):  # a slow answer: ask again
            group = found.result(timeout=GROUP_POLL_S * 10)
            if group.state == ConsumerGroupState.STABLE and len(group.members) == members:
                return time.monotonic() - started
        time.sleep(GROUP_POLL_S)
    raise RuntimeError(f"group {group_id} not stable with {members} members{workers.tails()}")


def create_topics(bootstrap: str, prefix: str) -> dict[str, str]:
    """The app's topics, and its tables' changelogs as faust would declare them (app id =
    ``prefix``): left to faust, a changelog created at the agent's first write was not yet
    in the metadata on a loaded machine, and faust crashed the agent (PartitionsMismatch)."""
    names = {role: f"{prefix}.{role}" for role in TOPIC_ROLES}
    changelogs = [f"{prefix}-{table}-changelog" for table in TABLES]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(n, num_partitions=PARTITIONS, replication_factor=1) for n in names.values()]
    new += [
        NewTopic(n, num_partitions=PARTITIONS, replication_factor=1,
                 config={"cleanup.policy": "compact"})
        for n in changelogs
    ]  # fmt: skip
    for future in admin.create_topics(new).values():
        future.result(timeout=TOPIC_CREATE_TIMEOUT_S)
    return names


# --- one run ----------------------------------------------------------------------------


def scenario(
    warmup: Sequence[Transfer], timed: Sequence[Transfer], *, bootstrap: str, home: Path,
    logs: Path, processes: int, broker_pid: int | None, linger_ms: int,
) -> dict[str, Any]:  # fmt: skip
    """``processes`` workers on topics of their own: a warm-up, then the timed transfers."""
    ensure(0 < processes <= PROCESSES_MAX, "processes out of bounds")
    prefix = f"faust-{processes}p-{uuid.uuid4().hex[:8]}"
    topics = create_topics(bootstrap, prefix)
    answers = Answers(bootstrap, topics["events"])
    driver = Run(new_producer(bootstrap), topics["commands"], answers,
                 label=f"{processes} faust worker{'s' if processes > 1 else ''}")  # fmt: skip
    try:
        with faust_workers(processes, bootstrap=bootstrap, app_id=prefix, prefix=prefix,
                           home=home, logs=logs, linger_ms=linger_ms) as workers:  # fmt: skip
            try:
                joined_s = wait_for_group(bootstrap, prefix, processes, workers)
                warmup_s = driver.warm(warmup, workers)
                found = driver.timed(timed, workers, broker_pid)
            except AgentCrashed as crash:
                return {"processes": processes, "failed": str(crash), "topic_prefix": prefix}
            except (RuntimeError, KafkaException) as error:
                raise RuntimeError(f"{error}{workers.tails()}") from error
    finally:
        answers.close()
    return {"processes": processes, **found, "group_join_s": joined_s, "warmup_s": warmup_s,
            "topic_prefix": prefix}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Run:
    """One scenario's producer of transfers and reader of answers."""

    producer: Producer
    commands: str
    answers: Answers
    label: str

    def warm(self, transfers: Sequence[Transfer], workers: Workers) -> float:
        """Transfers of their own through the agent, untimed: the group has recovered its
        tables and started its transactional producers. The seconds it took."""
        started = time.monotonic()
        produce(self.producer, self.commands, records(transfers))
        self.answers.wait([t.command_id for t in transfers], timeout_s=WARMUP_TIMEOUT_S,
                          label=f"{self.label}: warm-up", check=workers.check)  # fmt: skip
        return time.monotonic() - started

    def timed(
        self, transfers: Sequence[Transfer], workers: Workers, broker_pid: int | None
    ) -> dict[str, Any]:
        """The transfers, produced at once; the figures once each one is answered."""
        keyed = records(transfers)
        cpu_before, workers_before_s = CpuReading.now(broker_pid), workers.cpu_s()
        started_ms = int(time.time() * 1000)
        produce(self.producer, self.commands, keyed)
        published_ms = int(time.time() * 1000)
        ids = [t.command_id for t in transfers]
        self.answers.wait(ids, timeout_s=ANSWER_TIMEOUT_S, label=self.label, check=workers.check)
        cpu = CpuReading.now(broker_pid).since(
            cpu_before, members_s=workers.cpu_s() - workers_before_s
        )
        answered = [self.answers.answers[i] for i in ids]
        per_payment_ms = {
            "workers": 1000 * float(cpu["members_s"] or 0.0) / len(ids),
            "broker": None if cpu["broker_s"] is None else 1000 * cpu["broker_s"] / len(ids),
        }
        return figures(answered, started_ms=started_ms, published_ms=published_ms) | {
            "cpu": cpu, "cpu_ms_per_payment": per_payment_ms,
        }  # fmt: skip


def figures(
    answered: Sequence[tuple[str, int]], *, started_ms: int, published_ms: int
) -> dict[str, Any]:
    """payments/s from the first transfer produced to the last answer (its broker time), as
    bench/saga.py measures paystream; answers per second over the run."""
    times = sorted(at_ms for _type, at_ms in answered)
    seconds = (times[-1] - started_ms) / 1000
    buckets = Counter((t - started_ms) // SERIES_BUCKET_MS for t in times)
    outcomes = Counter(kind for kind, _at_ms in answered)
    return {
        "transfers": len(answered), "completed": outcomes["Completed"],
        "rejected": outcomes["Rejected"], "seconds": seconds,
        "payments_per_s": len(answered) / seconds,
        "publish_seconds": (published_ms - started_ms) / 1000,
        "answered_per_second": [buckets.get(i, 0) for i in range(int(max(buckets)) + 1)],
    }  # fmt: skip


# --- the whole run ----------------------------------------------------------------------


def versions() -> dict[str, str]:
    found = {}
    for package in FAUST_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(
                f"{package} is not installed: pip install -e '.[bench,bench-faust]'"
            ) from None
    return found


def paystream_shape() -> dict[str, float] | None:
    """paystream's records per payment from the passthrough baseline's last wire profile."""
    if not PASSTHROUGH_RESULTS.exists():
        return None
    profile = json.loads(PASSTHROUGH_RESULTS.read_text())["wire_profile"]["per_payment"]
    records = {role: found["records"] for role, found in profile.items()}
    return {
        "records_in": records["commands"] + records["legs"],
        "records_sent": sum(records[r] for r in ("legs", "ledger", "events", "batches", "dlq")),
        "changelog_records": records["balances_changelog"] + records["idempotency_changelog"],
    }


def run(
    *, transfers: int = TRANSFERS, accounts: int = ACCOUNTS,
    processes: Sequence[int] = PROCESSES, linger_ms: int = LINGER_MS,
    log_dir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A broker of its own; one scenario per count of ``processes``. ``log_dir``: where
    the workers' logs are kept (by default they go with the temporary directory)."""
    ensure(0 < transfers <= TRANSFERS_MAX, f"--transfers must be in 1..{TRANSFERS_MAX:,}")
    ensure(2 <= accounts <= ACCOUNTS_MAX, f"--accounts must be in 2..{ACCOUNTS_MAX:,}")
    ensure(0 <= linger_ms <= LINGER_MS_MAX, f"--linger-ms must be in 0..{LINGER_MS_MAX}")
    packages = versions()
    load_average_1m = os.getloadavg()[0]
    timed = transfers_for(accounts=accounts, count=transfers, seed=SEED)
    warmup = transfers_for(accounts=accounts, count=WARMUP_TRANSFERS, seed=SEED + 1)
    with tempfile.TemporaryDirectory(prefix="bench-faust-") as directory:
        home = Path(directory)
        logs = home if log_dir is None else log_dir
        logs.mkdir(parents=True, exist_ok=True)
        broker = start_on_free_ports(home / "kafka")
        try:
            kafka_version, broker_pid = broker.version(), read_pid(broker.pid_file)
            runs = []
            for count in processes:
                found = scenario(warmup, timed, bootstrap=broker.bootstrap, home=home, logs=logs,
                                 processes=count, broker_pid=broker_pid,
                                 linger_ms=linger_ms)  # fmt: skip
                print(line(found), flush=True)
                runs.append(found)
        finally:
            broker.stop()
    facts = machine.facts(
        kafka=kafka_version, **packages, load_average_1m_at_start=round(load_average_1m, 2)
    )
    return {
        "machine": facts,
        "parameters": {
            "transfers": len(timed), "warmup_transfers": len(warmup), "accounts": accounts,
            "distribution": "uniform", "partitions": PARTITIONS, "seed": SEED,
            "opening_balance_minor": DEPOSIT_MINOR,
            "processing_guarantee": "exactly_once", "store": "rocksdb:// (on rocksdict)",
            "broker_commit_every": 10_000, "broker_commit_interval_s": 2.8,
            "producer_linger_ms": linger_ms,
        },
        "per_payment": SHAPE, "paystream_per_payment": paystream_shape(),
        "crash_safe": False, "crash_note": NOT_CRASH_SAFE, "one_worker_only": ONE_WORKER_ONLY,
        "runs": runs,
    }  # fmt: skip


def line(found: dict[str, Any]) -> str:
    if "failed" in found:
        return f"{found['processes']} faust worker(s): failed: {found['failed']}"
    return (
        f"{found['processes']} faust worker(s): {found['transfers']:,} payments in "
        f"{found['seconds']:.1f} s = {found['payments_per_s']:,.0f} payments/s (published in "
        f"{found['publish_seconds']:.1f} s; {found['completed']:,} completed, "
        f"{found['rejected']:,} rejected)"
    )


def _cores(cpu: dict[str, Any]) -> str:
    shares = [cpu.get(key) for key in ("members_s", "broker_s", "others_s")]
    return " / ".join("?" if s is None else f"{s / cpu['window_s']:.2f}" for s in shares)


def markdown(result: dict[str, Any]) -> str:
    """The baseline's section of docs/benchmarks.md."""
    parameters = result["parameters"]
    failures = [
        f"- {found['processes']} worker processes failed: {_failure(found['failed'])}"
        for found in result["runs"] if "failed" in found
    ]  # fmt: skip
    return "\n".join([
        "### Baseline: faust-streaming under its exactly-once mode (throughput only)",
        "",
        f"The saga's transfers (uniform over {parameters['accounts']:,} accounts, "
        f"{parameters['partitions']} partitions) through a faust agent with a RocksDB table "
        "of balances, `processing_guarantee=\"exactly_once\"` and faust's own commit timer. "
        f"{_shape_sentence(result)}.",
        "",
        *_rows(result["runs"]),
        "",
        *([*failures, ""] if failures else []),
        f"**Not crash-safe.** {result['crash_note']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {_machine_line(result['machine'])}.",
        "",
    ])  # fmt: skip


def _rows(runs: Sequence[dict[str, Any]]) -> list[str]:
    rows = [
        "| worker processes | payments/s | payments | seconds | published in s "
        "| CPU cores: workers / broker / others | CPU ms a payment: workers / broker |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for found in runs:
        if "failed" in found:
            rows.append(f"| {found['processes']} | failed (below) | | | | | |")
            continue
        rows.append(
            f"| {found['processes']} | {found['payments_per_s']:,.0f} | {found['transfers']:,}"
            f" | {found['seconds']:.1f} | {found['publish_seconds']:.1f}"
            f" | {_cores(found['cpu'])} | {_per_payment(found['cpu_ms_per_payment'])} |"
        )
    return rows


def _per_payment(ms: dict[str, float | None]) -> str:
    return " / ".join("?" if ms[k] is None else f"{ms[k]:.1f}" for k in ("workers", "broker"))


def _failure(reason: str) -> str:
    """A failed run's reason, with what it means when faust said which."""
    said = reason.split("Crashed reason=", 1)[-1]
    if "No transaction producer found" in reason:
        return f"faust crashed the agent, over and over (`{said}`). {ONE_WORKER_ONLY}"
    return f"`{said}`"


def _shape_sentence(result: dict[str, Any]) -> str:
    shape, ours = result["per_payment"], result.get("paystream_per_payment")
    per = (
        f"Per payment the agent reads {sum(shape['records_in'].values())} records, sends "
        f"{sum(shape['records_sent'].values())} and writes its tables "
        f"{sum(shape['table_writes'].values())} times"
    )
    if ours:
        per += (
            f" (paystream: {ours['records_in']:.1f} in, {ours['records_sent']:.2f} sent, "
            f"{ours['changelog_records']:.1f} changelog records)"
        )
    return per


def _machine_line(facts: dict[str, Any]) -> str:
    return (
        f"{facts['cores']} cores ({facts['cpu_model']}), {facts['memory_gib']} GiB, "
        f"Python {facts['python']}, Kafka {facts.get('kafka', '?')}, faust-streaming "
        f"{facts.get('faust-streaming', '?')}, aiokafka {facts.get('aiokafka', '?')}, "
        f"rocksdict {facts.get('rocksdict', '?')}; load average "
        f"{facts['load_average_1m_at_start']} at start"
    )


def plots(result: dict[str, Any], img_dir: Path) -> list[Path]:
    """Answers per second over each run that was measured (PNG), or none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [found for found in result["runs"] if "answered_per_second" in found]
    if not measured:
        return []
    img_dir.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(7, 3.5))
    for found in measured:
        series = found["answered_per_second"]
        axes.plot(range(len(series)), series, label=f"{found['processes']} worker(s)")
    axes.set_xlabel("seconds since the first transfer was produced")
    axes.set_ylabel("payments answered / s")
    axes.set_title("faust-streaming, exactly_once (not crash-safe)")
    axes.legend()
    figure.tight_layout()
    path = img_dir / "bench-baseline-faust.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transfers", type=int, default=TRANSFERS)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--processes", type=int, nargs="+", default=list(PROCESSES))
    parser.add_argument("--linger-ms", type=int, default=LINGER_MS,
                        help="faust's producer_linger, in ms")  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the workers' logs")
    args = parser.parse_args(argv)
    arguments = sys.argv[1:] if argv is None else list(argv)
    result = {"command": shlex.join(["python", "-m", "bench.baseline_faust", *arguments])}
    result |= run(transfers=args.transfers, accounts=args.accounts, processes=args.processes,
                  linger_ms=args.linger_ms, log_dir=args.log_dir)  # fmt: skip
    print(markdown(result))
    write_result(args.output, result)


if __name__ == "__main__":
    main()
