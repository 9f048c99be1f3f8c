"""The worker's batch path without Kafka, counted in instructions (issue 18's optimisations).

On a shared 2-core machine the CPU time of the same run moves by 20-30 % from one minute
to the next (neighbours, steal), more than most single optimisations save. This counts
what does not move: the instructions a payment costs in the worker's own code path, under
valgrind (``--tool=cachegrind --cache-sim=no``), as the difference of two runs (``--transfers``
and ``--base-transfers``) so that start-up, imports and set-up cancel out. Two counts of the
same code differ by under 0.1 %.

The path: the real ``BatchProcessor`` (shell: decode, core, route, manifests) and real
``Stores`` (RocksDB, each batch's writes applied as after a commit) on one partition, fed
batches of up to 2,000 records like the worker's consumer: every transfer, then the credit
legs those batches sent, then the confirmations; 2,000 funded accounts. Kafka is the unit
tests' stand-in (``tests/unit/kafka_fakes.py``): producing, committing and librdkafka's own
threads are not counted (bench/baseline_passthrough.py measures the pipe). The young
generation is collected every 50,000 allocations, as in the worker (``paystream.runtime``).

    .venv/bin/python -m bench.batch_path [--transfers 2000] [--base-transfers 500]
    .venv/bin/python -m bench.batch_path --run 2000    # one run, CPU time, no valgrind
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Message

from paystream.agents import stores as stores_module
from paystream.agents.directory import FixedDirectory
from paystream.agents.processor import BALANCES, IDEMPOTENCY, INDEXES, BatchProcessor
from paystream.agents.stores import Stores
from paystream.ledger import Deposit, DirectoryEntry, OpenAccount, Rules, Transfer, mint_command_id
from paystream.runtime import fewer_collections
from paystream.settings import KafkaConnection, Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.partitioner import partition_for
from paystream.topology.registry import FileSchemaRegistry
from paystream.topology.topics import Topics
from tests.unit.kafka_fakes import FakeLog

PARTITIONS: Final = 8
PARTITION: Final = 3
ACCOUNTS: Final = 2_000
BATCH_MAX: Final = 2_000
"""Records per batch: the worker's MESSAGES_PER_BATCH_MAX."""
PARTNER: Final = "partner-1"
T0_MS: Final = 1_764_500_000_000
INSTRUCTIONS: Final = re.compile(r"I\s+refs:\s+([\d,]+)")


class _Path:
    """One partition's processor and stores; records are fed back as the next inputs."""

    def __init__(self, home: Path) -> None:
        self.log = FakeLog()
        stores_module.Consumer = self.log.consumer  # type: ignore[misc,assignment]
        settings = Settings(topic_prefix="b", partitions=PARTITIONS, kafka_bootstrap="127.0.0.1:9")
        self.topics = Topics.from_settings(settings)
        self.serde = AvroSerde(
            FileSchemaRegistry(home / "registry.json"), topics=self.topics.payloads()
        )
        self.stores = Stores(
            directory=home / "stores", kafka=KafkaConnection.plaintext("127.0.0.1:9"),
            changelogs={BALANCES: self.topics.balances_changelog,
                        IDEMPOTENCY: self.topics.idempotency_changelog},
            indexes=INDEXES, client_id="bench", topic_ids=lambda names: dict.fromkeys(names, "id"),
        )  # fmt: skip
        self.stores.hold({PARTITION})
        self.accounts = _accounts_on(PARTITION)
        directory = {a: DirectoryEntry(a, "EUR", PARTNER, "open") for a in self.accounts}
        self.processor = BatchProcessor(
            topics=self.topics, serde=self.serde, stores=self.stores,
            directory=FixedDirectory(directory), rules=Rules(), worker="bench",
        )  # fmt: skip
        self.offset = 0
        self.minted = 0

    def command_id(self) -> str:
        self.minted += 1
        random_bytes = self.minted.to_bytes(10, "big")
        return mint_command_id(partition=PARTITION, at_ms=T0_MS, random_bytes=random_bytes)

    def message(self, topic: str, key: bytes, value: bytes | None) -> Message:
        self.offset += 1
        return Message(topic=topic, partition=PARTITION, offset=self.offset, key=key,
                       value=value, timestamp=(TIMESTAMP_LOG_APPEND_TIME, T0_MS))  # fmt: skip

    def commands(self, commands: Sequence[OpenAccount | Deposit | Transfer]) -> list[Message]:
        encode, topic = self.serde.encode_command, self.topics.commands
        return [self.message(topic, c.account_id.encode(), encode(c)) for c in commands]

    def run(self, messages: Sequence[Message]) -> list[Message]:
        """Batches of ``messages`` as after each commit; the legs they sent, as inputs."""
        legs = []
        for start in range(0, len(messages), BATCH_MAX):
            batch = self.processor.process(messages[start : start + BATCH_MAX])
            self.stores.apply(batch.writes)
            legs += [r for r in batch.records if r.topic == self.topics.legs]
        return [self.message(self.topics.legs, r.key, r.value) for r in legs]

    def set_up(self) -> None:
        opened = [OpenAccount(self.command_id(), f"o{a}", PARTNER, T0_MS, a, currency="EUR")
                  for a in self.accounts]  # fmt: skip
        self.run(self.commands(opened))
        funded = [Deposit(self.command_id(), f"d{a}", PARTNER, T0_MS, a, 10**12, "EUR")
                  for a in self.accounts]  # fmt: skip
        self.run(self.commands(funded))

    def transfers(self, count: int) -> list[Message]:
        draw = random.Random(18)
        made = []
        for n in range(count):
            source, destination = draw.sample(self.accounts, 2)
            made.append(Transfer(self.command_id(), f"t{n}", PARTNER, T0_MS, source,
                                 destination, 100, "EUR"))  # fmt: skip
        return self.commands(made)


def _accounts_on(partition: int) -> list[str]:
    found: list[str] = []
    n = 0
    while len(found) < ACCOUNTS:
        account = f"acct-{n}"
        n += 1
        if partition_for(account.encode(), PARTITIONS) == partition:
            found.append(account)
    return found


def run_once(transfers: int) -> float:
    """CPU seconds of the timed part: the transfers, their credit legs, their confirmations."""
    with tempfile.TemporaryDirectory(prefix="bench-batch-path-") as directory, fewer_collections():
        path = _Path(Path(directory))
        try:
            path.set_up()
            inputs = path.transfers(transfers)
            started = time.process_time()
            credit_legs = path.run(inputs)
            confirmations = path.run(credit_legs)
            path.run(confirmations)
            spent = time.process_time() - started
            if len(credit_legs) != transfers or len(confirmations) != transfers:
                raise RuntimeError(f"{len(credit_legs)} legs, {len(confirmations)} confirmations")
            return spent
        finally:
            path.stores.close()


def instructions(transfers: int) -> int:
    """Instructions of a whole ``--run transfers`` process under valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (Debian's package valgrind)")
    found = subprocess.run(
        [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, "-m", "bench.batch_path", "--run", str(transfers)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    match = INSTRUCTIONS.search(found.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {found.stderr[-500:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=2_000)
    parser.add_argument("--base-transfers", type=int, default=500)
    parser.add_argument("--run", type=int, help="one run of this many transfers, CPU time")
    args = parser.parse_args()
    if args.run is not None:
        spent = run_once(args.run)
        print(f"{args.run} transfers: {spent / args.run * 1e6:,.0f} us of CPU a payment")
        return
    print(f"valgrind: {args.base_transfers:,} then {args.transfers:,} transfers ...", flush=True)
    base, full = instructions(args.base_transfers), instructions(args.transfers)
    per_payment = (full - base) / (args.transfers - args.base_transfers)
    print(f"{per_payment:,.0f} instructions a payment "
          f"({base:,} and {full:,} instructions in all)")  # fmt: skip


if __name__ == "__main__":
    main()
