"""The baseline (issue 18): the same transfers as plain PostgreSQL transactions with row locks.

What users build instead of paystream: one table of balances, one of ledger lines, and
each transfer one READ COMMITTED transaction (autocommit off)::

    SELECT id, balance_minor FROM accounts WHERE id = ANY(%s) ORDER BY id FOR UPDATE
    -- balance checked in Python: too little -> ROLLBACK, counted as refused
    UPDATE accounts ... (source), UPDATE accounts ... (destination)
    INSERT INTO ledger ... (debit), INSERT INTO ledger ... (credit)
    COMMIT

Both rows are locked in id order, so two transfers never wait on each other in a cycle:
no deadlocks are expected. Any ``DeadlockDetected`` or ``SerializationFailure`` is
counted, rolled back and retried, at most ``RETRY_COUNT_MAX`` times, then the run fails.

``--connections`` threads, one connection each, take transfers from one pre-generated
list. Threads are enough: psycopg's C implementation (``psycopg[binary]``) waits for the
server's answer with the GIL released, so the threads' round trips overlap; only the
Python between two round trips holds it (the client's CPU seconds are in the JSON).
psycopg prepares a statement on the server after its 5th execution (``prepare_threshold``,
its default, said at the connection).

Per distribution (``uniform``, ``zipf`` with s = 1.1: the saga benchmark's own transfers,
``bench.saga.honest_mix``), in a fresh
database of the embedded Postgres (the project's ``EmbeddedPostgres``, initdb defaults:
fsync and synchronous_commit on; a temporary data directory, stopped at the end):
``--accounts`` accounts each funded ``FUNDING_MINOR``; a warm-up of ``WARMUP_S`` seconds
on transfers of its own (same law, another seed), then the timed transfers. Throughput is
committed transfers over the window from the first timed transaction's start to the end
of the last one (a commit, bar the rare refusal); latency is ``perf_counter`` around each
transfer (its retries included; refused ones too). At the end, always-on checks: the sum
of balances is unchanged, no balance is negative, every balance equals its funding plus
its ledger lines, and the ledger holds two lines per committed transfer (warm-up included).

Other benchmarks and test runs share these cores: the run first waits (bounded) for a
quiet machine, and flags a window in which other processes kept the cores busy (the CPU
seconds of this process, of Postgres and of the whole machine are in the JSON).

    .venv/bin/python -m bench.baseline_postgres [--accounts 10000] [--transfers 40000]
        [--connections 8] [--distribution uniform|zipf|both]
        [--output bench/results/baseline_postgres.json]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg import IsolationLevel, errors
from tqdm import tqdm  # type: ignore[import-untyped]

from bench import machine as bench_machine
from bench.report import command_line, machine_line, markdown_table, pyplot, write_result
from bench.saga import ZIPF_S, honest_mix
from paystream import workload
from paystream.ledger import Transfer as LedgerTransfer
from paystream.ledger.errors import ensure
from paystream.services.postgres import EmbeddedPostgres

__all__ = ["markdown", "plots", "run"]

Distribution = Literal["uniform", "zipf"]
Connection = psycopg.Connection[tuple[Any, ...]]
DISTRIBUTIONS: tuple[Distribution, ...] = ("uniform", "zipf")

RESULTS = Path("bench/results/baseline_postgres.json")
ACCOUNTS = 10_000
TRANSFERS = 40_000
CONNECTIONS = 8
SEED = 18
RUN_ID = "pg"
WORKLOAD_NOW_MS = 1_790_000_000_000
"""Command ids need a minting time; Postgres never reads it."""
FUNDING_MINOR = 100_000_000
"""Each account's opening balance (1,000,000.00), as the saga benchmark funds its accounts."""
WARMUP_S = 2.0
"""The warm-up runs this long, or until its own transfers (as many as the timed ones) end."""

ACCOUNTS_MAX = 1_000_000
TRANSFERS_MAX = 1_000_000
CONNECTIONS_MAX = 64
RETRY_COUNT_MAX = 5
RETRY_BACKOFF_S = 0.005
RETRY_BACKOFF_MAX_S = 0.1
STATEMENT_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10
RUN_S_MAX = 170.0
"""No transfer starts this long after the run started; if the timed ones are cut, it fails."""
DRAIN_S_MAX = STATEMENT_TIMEOUT_MS / 1000 + 5
"""After the feed's deadline, how long the transfers in flight may take to end."""
PROGRESS_TICK_S = 0.2
QUIET_SAMPLE_S = 5.0
QUIET_BUSY_MAX = 0.15
"""The share of all cores others may keep busy for the machine to count as quiet."""
QUIET_WAIT_S_MAX = 900.0
DISTURBED_SHARE = 0.10
"""Other processes above this share of the machine in a window: the figures are flagged."""
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")

SELECT_FOR_UPDATE = (
    "SELECT id, balance_minor FROM accounts WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
)
DEBIT = "UPDATE accounts SET balance_minor = balance_minor - %s WHERE id = %s"
CREDIT = "UPDATE accounts SET balance_minor = balance_minor + %s WHERE id = %s"
LEDGER_LINE = (
    "INSERT INTO ledger (entry_id, account_id, amount_minor, side) VALUES (%s, %s, %s, %s)"
)
SCHEMA = (
    "CREATE TABLE accounts (id text PRIMARY KEY,"
    " balance_minor bigint NOT NULL CHECK (balance_minor >= 0))",
    "CREATE TABLE ledger (entry_id text PRIMARY KEY, account_id text, amount_minor bigint,"
    " side text, created_at timestamptz DEFAULT now())",
)


# --- the transfers ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transfer:
    transfer_id: str
    source: str
    destination: str
    amount_minor: int


def account_id(index: int) -> str:
    """The workload's name of account ``index`` (``paystream.workload.build``)."""
    return f"{RUN_ID}-acct-{index:06d}"


def build_transfers(
    distribution: Distribution, *, accounts: int, count: int, seed: int
) -> list[Transfer]:
    """The saga benchmark's transfers (``bench.saga.honest_mix``: the same pairs and amounts
    for the same seed), less the rare one to its own account (paystream refuses it
    ``same_account``; here it would lock one row)."""
    mix = honest_mix(accounts=accounts, transfers=count, distribution=distribution)
    load = workload.build(seed=seed, mix=mix, run_id=RUN_ID, now_ms=WORKLOAD_NOW_MS)
    return [
        Transfer(
            transfer_id=c.command_id,
            source=c.account_id,
            destination=c.destination_account_id,
            amount_minor=c.amount_minor,
        )
        for c in map(workload.command_of, load.traffic)
        if isinstance(c, LedgerTransfer) and c.account_id != c.destination_account_id
    ]  # fmt: skip  (a uniform draw pays its own account about once in 10,000: refused there)


def hottest_share(transfers: Sequence[Transfer]) -> float:
    """The share of transfers that touch the account touched most often."""
    touches: dict[str, int] = {}
    for transfer in transfers:
        for account in (transfer.source, transfer.destination):
            touches[account] = touches.get(account, 0) + 1
    return max(touches.values()) / len(transfers) if transfers else 0.0


# --- one transfer -----------------------------------------------------------------------


class Refused(Exception):
    """Insufficient funds: an operating error, rolled back and counted."""


def transfer_once(conn: Connection, transfer: Transfer) -> None:
    """One transaction; commits, or rolls back and raises (``Refused`` or psycopg's)."""
    try:
        with conn.cursor() as cur:
            ids = sorted((transfer.source, transfer.destination))
            balances: dict[str, int] = dict(cur.execute(SELECT_FOR_UPDATE, (ids,)).fetchall())
            ensure(len(balances) == 2, f"transfer {transfer.transfer_id}: an account is missing")
            if balances[transfer.source] < transfer.amount_minor:
                raise Refused(transfer.transfer_id)
            cur.execute(DEBIT, (transfer.amount_minor, transfer.source))
            cur.execute(CREDIT, (transfer.amount_minor, transfer.destination))
            cur.execute(LEDGER_LINE, (f"{transfer.transfer_id}:debit", transfer.source,
                                      transfer.amount_minor, "debit"))  # fmt: skip
            cur.execute(LEDGER_LINE, (f"{transfer.transfer_id}:credit", transfer.destination,
                                      transfer.amount_minor, "credit"))  # fmt: skip
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


@dataclass
class Tally:
    """One worker's counts; only its own thread writes it."""

    committed: int = 0
    refused: int = 0
    deadlocks: int = 0
    serialization_failures: int = 0
    latencies_s: list[float] = field(default_factory=list)
    first_start: float = float("inf")
    last_end: float = float("-inf")
    error: BaseException | None = None


def transfer_with_retries(conn: Connection, transfer: Transfer, tally: Tally) -> None:
    """``transfer_once``, retried after a deadlock or serialization failure (bounded)."""
    started = time.perf_counter()
    tally.first_start = min(tally.first_start, started)
    for attempt in range(RETRY_COUNT_MAX + 1):
        try:
            transfer_once(conn, transfer)
        except Refused:
            tally.refused += 1
        except (errors.DeadlockDetected, errors.SerializationFailure) as error:
            if isinstance(error, errors.DeadlockDetected):
                tally.deadlocks += 1
            else:
                tally.serialization_failures += 1
            if attempt == RETRY_COUNT_MAX:
                raise
            time.sleep(min(RETRY_BACKOFF_S * 2**attempt, RETRY_BACKOFF_MAX_S))
            continue
        else:
            tally.committed += 1
        break
    ended = time.perf_counter()
    tally.last_end = max(tally.last_end, ended)
    tally.latencies_s.append(ended - started)


# --- a phase: the workers over one list -------------------------------------------------


class Feed:
    """The shared pre-generated list; each ``take`` hands out the next transfer once."""

    def __init__(self, transfers: Sequence[Transfer], deadline: float) -> None:
        self._transfers = transfers
        self._deadline = deadline
        self._next = 0
        self._lock = threading.Lock()
        self.stopped = threading.Event()

    def take(self) -> Transfer | None:
        if self.stopped.is_set() or time.perf_counter() >= self._deadline:
            return None
        with self._lock:
            if self._next >= len(self._transfers):
                return None
            self._next += 1
            return self._transfers[self._next - 1]


def work(conn: Connection, feed: Feed, tally: Tally) -> None:
    try:
        while (transfer := feed.take()) is not None:
            transfer_with_retries(conn, transfer, tally)
    except BaseException as error:  # handed to the main thread, which raises it
        tally.error = error
        feed.stopped.set()


@dataclass(frozen=True, slots=True)
class Phase:
    tallies: list[Tally]
    client_cpu_s: float
    postgres_cpu_s: float
    machine_busy_s: float
    measured_s: float
    """The wall time between the two CPU readings (threads started to threads joined)."""

    @property
    def done(self) -> int:
        return sum(t.committed + t.refused for t in self.tallies)

    @property
    def window_s(self) -> float:
        return max(t.last_end for t in self.tallies) - min(t.first_start for t in self.tallies)


def run_phase(
    conns: Sequence[Connection], transfers: Sequence[Transfer], *, until: float, label: str,
    postgres_pid: int | None,
) -> Phase:  # fmt: skip
    """Every connection's thread takes from ``transfers`` until they run out or ``until``
    (a ``perf_counter`` time) passes."""
    feed = Feed(transfers, deadline=until)
    tallies = [Tally() for _ in conns]
    threads = [threading.Thread(target=work, args=(conn, feed, tally), name=f"baseline-{i}")
               for i, (conn, tally) in enumerate(zip(conns, tallies, strict=True))]  # fmt: skip
    cpu, measured_from = cpu_now(postgres_pid), time.perf_counter()
    for thread in threads:
        thread.start()
    with tqdm(total=len(transfers), desc=label, unit="tx", file=sys.stderr, leave=False) as bar:

        def progress() -> None:
            bar.update(sum(len(t.latencies_s) for t in tallies) - bar.n)

        watch(threads, feed, progress, until=until + DRAIN_S_MAX)
    used = [after - before for before, after in zip(cpu, cpu_now(postgres_pid), strict=True)]
    measured_s = time.perf_counter() - measured_from
    for tally in tallies:
        if tally.error is not None:
            raise tally.error
    ensure(any(t.latencies_s for t in tallies), f"{label}: no transfer ran before its deadline")
    return Phase(
        tallies, client_cpu_s=used[0], postgres_cpu_s=used[1], machine_busy_s=used[2],
        measured_s=measured_s,
    )  # fmt: skip


def watch(
    threads: Sequence[threading.Thread], feed: Feed, tick: Callable[[], None], *, until: float
) -> None:
    """Until every thread ends; stops the feed and fails if one still runs at ``until``."""
    while any(thread.is_alive() for thread in threads):
        if time.perf_counter() > until:
            feed.stopped.set()
            for thread in threads:
                thread.join(timeout=DRAIN_S_MAX)
            raise RuntimeError("a transfer still ran long after the phase's deadline")
        tick()
        time.sleep(PROGRESS_TICK_S)
    tick()


# --- CPU seconds: this process, Postgres, the machine -----------------------------------


def cpu_now(postgres_pid: int | None) -> tuple[float, float, float]:
    """CPU seconds so far of this process, of the Postgres processes, of the whole machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    postgres = 0
    if postgres_pid is not None:
        for pid in [postgres_pid, *children(postgres_pid)]:
            postgres += process_ticks(pid)
    return (usage.ru_utime + usage.ru_stime, postgres / CLOCK_TICKS_PER_S,
            machine_busy_s())  # fmt: skip


def machine_busy_s() -> float:
    """The machine's CPU seconds so far: user, nice, system, irq, softirq (not idle, iowait
    nor steal, the time the hypervisor gave to someone else)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(fields[i]) for i in (0, 1, 2, 5, 6)) / CLOCK_TICKS_PER_S


def wait_for_quiet(wait_s_max: float) -> dict[str, Any]:
    """Until the other processes use less than ``QUIET_BUSY_MAX`` of the machine over a
    ``QUIET_SAMPLE_S`` sample (other benchmarks and test runs share these cores), at most
    ``wait_s_max``; then the run goes on either way, and says whether it was quiet."""
    started = time.monotonic()
    share = 1.0
    for _ in range(math.ceil(wait_s_max / QUIET_SAMPLE_S) + 1):
        before = machine_busy_s()
        time.sleep(QUIET_SAMPLE_S)
        share = (machine_busy_s() - before) / (QUIET_SAMPLE_S * (os.cpu_count() or 1))
        waited_s = time.monotonic() - started
        if share < QUIET_BUSY_MAX or waited_s >= wait_s_max:
            break
        print(f"waiting for a quiet machine: {share:.0%} busy ({waited_s:.0f} s of at most "
              f"{wait_s_max:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    waited_s = time.monotonic() - started
    return {"quiet": share < QUIET_BUSY_MAX, "busy_share": share, "waited_s": waited_s}


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def process_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # the process ended in between
        return 0
    after_name = stat.rsplit(")", 1)[1].split()
    return int(after_name[11]) + int(after_name[12])  # utime, stime


# --- the database -----------------------------------------------------------------------


def fresh_database(server_dsn: str, name: str) -> str:
    with psycopg.connect(server_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(server_dsn, dbname=name)


def create_and_fund(dsn: str, accounts: int, funding_minor: int) -> None:
    """The two tables, ``accounts`` rows of ``funding_minor`` each; analysed, checkpointed."""
    with psycopg.connect(dsn, autocommit=False, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
        with conn.cursor().copy("COPY accounts (id, balance_minor) FROM STDIN") as copy:
            for index in range(accounts):
                copy.write_row((account_id(index), funding_minor))
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE accounts")
        conn.execute("CHECKPOINT")  # the load's dirty pages are not written in the window


def open_worker(dsn: str, number: int) -> Connection:
    """A connection as the workers use it; every option said here, not left to defaults."""
    conn: Connection = psycopg.connect(
        dsn, autocommit=False, connect_timeout=CONNECT_TIMEOUT_S,
        application_name=f"baseline-{number}",
        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
    )  # fmt: skip
    conn.isolation_level = IsolationLevel.READ_COMMITTED
    conn.prepare_threshold = 5
    return conn


@contextmanager
def workers(dsn: str, count: int) -> Iterator[list[Connection]]:
    with ExitStack() as stack:
        yield [stack.enter_context(open_worker(dsn, number)) for number in range(count)]


def verify(dsn: str, *, accounts: int, funding_minor: int, committed: int) -> dict[str, int]:
    """Money conserved and two ledger lines per committed transfer; raises otherwise."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        count, total, lowest = conn.execute(
            "SELECT count(*), sum(balance_minor), min(balance_minor) FROM accounts"
        ).fetchone() or (0, 0, 0)
        lines, debits, credits = conn.execute(
            "SELECT count(*), coalesce(sum(amount_minor) FILTER (WHERE side = 'debit'), 0),"
            " coalesce(sum(amount_minor) FILTER (WHERE side = 'credit'), 0) FROM ledger"
        ).fetchone() or (0, 0, 0)
        off = conn.execute(
            "SELECT count(*) FROM accounts a LEFT JOIN (SELECT account_id, sum(CASE side"
            " WHEN 'credit' THEN amount_minor ELSE -amount_minor END) AS net FROM ledger"
            " GROUP BY account_id) l ON l.account_id = a.id"
            " WHERE a.balance_minor <> %s + coalesce(l.net, 0)",
            (funding_minor,),
        ).fetchone() or (-1,)
    ensure(count == accounts, f"{count} accounts, not {accounts}")
    ensure(total == accounts * funding_minor, f"money not conserved: {total} minor in total, "
           f"not {accounts * funding_minor}")  # fmt: skip
    ensure(lowest >= 0, f"a balance is negative: {lowest}")
    ensure(lines == 2 * committed, f"{lines} ledger lines for {committed} committed transfers")
    ensure(debits == credits, f"the ledger's debits {debits} differ from its credits {credits}")
    ensure(off[0] == 0, f"{off[0]} balances differ from their funding plus their ledger lines")
    return {
        "balance_total_minor": int(total),
        "ledger_lines": int(lines),
        "ledger_debits_minor": int(debits),
        "accounts_off_their_ledger": int(off[0]),
    }


# --- one distribution -------------------------------------------------------------------


def run_distribution(
    server_dsn: str, distribution: Distribution, *, accounts: int, transfers: int,
    connections: int, seed: int, funding_minor: int, postgres_pid: int | None, until: float,
) -> dict[str, Any]:  # fmt: skip
    """One fresh database, its warm-up and timed phases, then the checks."""
    dsn = fresh_database(server_dsn, f"baseline_{distribution}_{uuid.uuid4().hex[:8]}")
    create_and_fund(dsn, accounts, funding_minor)
    timed = build_transfers(distribution, accounts=accounts, count=transfers, seed=seed)
    warm = build_transfers(distribution, accounts=accounts, count=transfers, seed=seed + 1)
    load = os.getloadavg()
    with workers(dsn, connections) as conns:
        warm_until = min(time.perf_counter() + WARMUP_S, until)
        warmup = run_phase(conns, warm, until=warm_until, label=f"{distribution} warm-up",
                           postgres_pid=postgres_pid)  # fmt: skip
        phase = run_phase(conns, timed, until=until, label=distribution,
                          postgres_pid=postgres_pid)  # fmt: skip
    ensure(phase.done == len(timed), f"only {phase.done} of {len(timed)} timed transfers ran "
           "before the run's time ran out (run_s_max)")  # fmt: skip
    committed = sum(t.committed for t in (*warmup.tallies, *phase.tallies))
    checked = verify(dsn, accounts=accounts, funding_minor=funding_minor, committed=committed)
    extra = {"load_average_at_start": load, "verified": checked}
    return figures(distribution, phase, warmup, timed) | extra


def figures(
    distribution: Distribution, phase: Phase, warmup: Phase, timed: Sequence[Transfer]
) -> dict[str, Any]:
    latencies_ms = np.array([s for t in phase.tallies for s in t.latencies_s]) * 1000
    p50, p95, p99 = np.percentile(latencies_ms, [50, 95, 99]).tolist()
    committed = sum(t.committed for t in phase.tallies)
    window_s = phase.window_s
    return {
        "distribution": distribution,
        "zipf_s": ZIPF_S if distribution == "zipf" else None,
        "hottest_account_share_of_transfers": hottest_share(timed),
        "transfers": len(timed), "committed": committed,
        "refused": sum(t.refused for t in phase.tallies),
        "deadlock_retries": sum(t.deadlocks for t in phase.tallies),
        "serialization_retries": sum(t.serialization_failures for t in phase.tallies),
        "window_s": window_s, "transfers_per_s": committed / window_s,
        "latency_ms": {"p50": p50, "p95": p95, "p99": p99,
                       "mean": float(latencies_ms.mean()), "max": float(latencies_ms.max())},
        "disturbed": others_share(phase) > DISTURBED_SHARE,
        "cpu_s": {"measured_s": phase.measured_s, "client": phase.client_cpu_s,
                  "postgres": phase.postgres_cpu_s, "machine_busy": phase.machine_busy_s,
                  "other": phase.machine_busy_s - phase.client_cpu_s - phase.postgres_cpu_s,
                  "machine_available": phase.measured_s * (os.cpu_count() or 1)},
        "warmup": {"transfers": warmup.done, "seconds": warmup.window_s,
                   "committed": sum(t.committed for t in warmup.tallies),
                   "retries": sum(t.deadlocks + t.serialization_failures
                                  for t in warmup.tallies)},
    }  # fmt: skip


def others_share(phase: Phase) -> float:
    """The share of all cores that processes other than this one and Postgres kept busy."""
    others_s = phase.machine_busy_s - phase.client_cpu_s - phase.postgres_cpu_s
    return others_s / (phase.measured_s * (os.cpu_count() or 1))


# --- the run ----------------------------------------------------------------------------


def machine(server_dsn: str) -> dict[str, Any]:
    """What the figures were measured on."""
    with psycopg.connect(server_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        settings = {name: str((conn.execute(f"SHOW {name}").fetchone() or ("?",))[0])
                    for name in ("server_version", "fsync", "synchronous_commit",
                                 "shared_buffers", "max_connections", "wal_level")}  # fmt: skip
    psycopg_version = f"{psycopg.__version__} ({psycopg.pq.__impl__}, libpq {psycopg.pq.version()})"
    return bench_machine.facts(psycopg=psycopg_version, postgres=settings)


def command(accounts: int, transfers: int, connections: int, distribution: str, seed: int,
            output: Path | None) -> str:  # fmt: skip
    """The command that repeats the run, every option spelled out."""
    spelled = (
        f"python -m bench.baseline_postgres --accounts {accounts} --transfers {transfers}"
        f" --connections {connections} --distribution {distribution} --seed {seed}"
    )
    return spelled + (f" --output {output}" if output is not None else "")


def run(
    *, accounts: int = ACCOUNTS, transfers: int = TRANSFERS, connections: int = CONNECTIONS,
    distribution: Literal["uniform", "zipf", "both"] = "both", seed: int = SEED,
    funding_minor: int = FUNDING_MINOR, run_s_max: float = RUN_S_MAX,
    quiet_wait_s_max: float = QUIET_WAIT_S_MAX, output: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Start an embedded Postgres, run each distribution, stop it; the figures as a dict.

    No transfer starts ``run_s_max`` seconds after the call; a distribution whose timed
    transfers did not all run by then fails the run. Before that clock starts, it waits
    (at most ``quiet_wait_s_max``) for the other processes to leave the cores alone.
    """
    quiet = wait_for_quiet(quiet_wait_s_max)
    until = time.perf_counter() + run_s_max
    ensure(2 <= accounts <= ACCOUNTS_MAX, f"--accounts must be in 2..{ACCOUNTS_MAX:,}")
    ensure(1 <= transfers <= TRANSFERS_MAX, f"--transfers must be in 1..{TRANSFERS_MAX:,}")
    ensure(1 <= connections <= CONNECTIONS_MAX, f"--connections must be in 1..{CONNECTIONS_MAX}")
    chosen = DISTRIBUTIONS if distribution == "both" else (distribution,)
    with tempfile.TemporaryDirectory(prefix="bench-baseline-postgres-") as directory:
        postgres = EmbeddedPostgres(home=Path(directory) / "postgres")
        try:
            server_dsn = postgres.start()
            facts = machine(server_dsn)
            results = [
                run_distribution(
                    server_dsn,
                    name,
                    accounts=accounts,
                    transfers=transfers,
                    connections=connections,
                    seed=seed,
                    funding_minor=funding_minor,
                    postgres_pid=postgres.pid(),
                    until=until,
                )
                for name in chosen
            ]
        finally:
            postgres.stop()
    return {
        "command": command(accounts, transfers, connections, distribution, seed, output),
        "machine": facts,
        "machine_at_start": quiet,
        "parameters": {
            "accounts": accounts,
            "transfers": transfers,
            "connections": connections,
            "funding_minor": funding_minor,
            "amount_max_minor": workload.Mix().amount_max_minor,
            "warmup_s": WARMUP_S,
            "run_s_max": run_s_max,
            "retry_count_max": RETRY_COUNT_MAX,
            "isolation_level": "READ COMMITTED",
            "seed": seed,
        },
        "distributions": results,
    }


def table(result: dict[str, Any]) -> str:
    header = f"{'distribution':<12} {'transfers/s':>11} {'P50 ms':>7} {'P95 ms':>7} " \
             f"{'P99 ms':>7} {'refused':>7} {'retries':>7}"  # fmt: skip
    rows = [header, "-" * len(header)]
    for found in result["distributions"]:
        latency = found["latency_ms"]
        retries = found["deadlock_retries"] + found["serialization_retries"]
        rows.append(
            f"{found['distribution']:<12} {found['transfers_per_s']:>11,.0f} "
            f"{latency['p50']:>7.2f} {latency['p95']:>7.2f} {latency['p99']:>7.2f} "
            f"{found['refused']:>7,} {retries:>7,}"
        )
    return "\n".join(rows)


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown fragment (bench/report.py puts it in docs/benchmarks.md)."""
    rows = []
    for found in result["distributions"]:
        latency = found["latency_ms"]
        rows.append((
            found["distribution"], f"**{found['transfers_per_s']:,.0f}**",
            f"{found['committed']:,}", f"{found['window_s']:.1f}", f"{latency['p50']:.1f}",
            f"{latency['p95']:.1f}", f"{latency['p99']:.1f}",
            f"{found['hottest_account_share_of_transfers']:.1%}",
            found["deadlock_retries"] + found["serialization_retries"],
            "yes" if found["disturbed"] else "no",
        ))  # fmt: skip
    table = markdown_table(
        ("distribution", "transfers/s", "committed", "seconds", "P50 ms", "P95 ms", "P99 ms",
         "hottest account's share", "retries", "disturbed"),
        rows,
    )  # fmt: skip
    parameters = result.get("parameters", {})
    intro = (
        "The same transfers as the saga's (`bench.saga.honest_mix`) as single READ COMMITTED "
        "transactions with row locks (`SELECT ... FOR UPDATE` in id order, balance check, "
        f"two updates, two ledger rows), psycopg, {parameters.get('connections', '?')} "
        'connections, embedded Postgres with fsync and synchronous commit on. "disturbed": '
        f"other processes kept more than {DISTURBED_SHARE:.0%} of the machine busy."
    )
    return "\n\n".join((
        "### Baseline: PostgreSQL with row locks (`bench/baseline_postgres.py`)", intro, table,
        command_line(result), machine_line(result.get("machine", {})),
    ))  # fmt: skip


def plots(result: dict[str, Any], img_dir: Path) -> list[Path]:
    """P50 / P95 / P99 of a transfer per distribution (PNG)."""
    found = result["distributions"]
    if not found:
        return []
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    width = 0.8 / len(found)
    for index, distribution in enumerate(found):
        latency = distribution["latency_ms"]
        axes.bar([x + index * width for x in range(3)],
                 [latency["p50"], latency["p95"], latency["p99"]], width,
                 label=distribution["distribution"])  # fmt: skip
    axes.set_xticks([x + width * (len(found) - 1) / 2 for x in range(3)], ["P50", "P95", "P99"])
    axes.set_ylabel("ms per transfer")
    axes.set_title("PostgreSQL row-lock baseline: transfer latency")
    axes.legend()
    figure.tight_layout()
    img_dir.mkdir(parents=True, exist_ok=True)
    path = img_dir / "bench-postgres-latency.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--transfers", type=int, default=TRANSFERS)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--distribution", choices=("uniform", "zipf", "both"), default="both")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--quiet-wait-s-max", type=float, default=QUIET_WAIT_S_MAX)
    args = parser.parse_args(argv)
    result = run(accounts=args.accounts, transfers=args.transfers, connections=args.connections,
                 distribution=args.distribution, seed=args.seed, output=args.output,
                 quiet_wait_s_max=args.quiet_wait_s_max)  # fmt: skip
    print(table(result))
    for found in result["distributions"]:
        cpu = found["cpu_s"]
        print(f"{found['distribution']}: {found['committed']:,} committed in "
              f"{found['window_s']:.1f} s; CPU s client {cpu['client']:.1f}, Postgres "
              f"{cpu['postgres']:.1f}, others {cpu['other']:.1f}, machine busy "
              f"{cpu['machine_busy']:.1f} of {cpu['machine_available']:.1f}; "
              f"verified: {found['verified']}")  # fmt: skip
        if found["disturbed"]:
            print(f"  warning: other processes kept more than {DISTURBED_SHARE:.0%} of the "
                  "machine busy in this window: its figures are disturbed")  # fmt: skip
    write_result(args.output, result)


if __name__ == "__main__":
    main()
