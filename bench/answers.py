"""When each command was in Kafka and when its answer came: the clocks bench.latency and
bench.growth (issue 18) read, and what else they share (a platform of their own, the CPU
of the workers).

Three times per command, all on this machine's one clock (broker, workers and this
process share it):

- **command in Kafka**: the command record's timestamp on ``commands``. The inputs are
  ``LogAppendTime`` topics (``paystream.topology.topics``), so this is the broker's clock
  when it appended the command: the moment the command is durable and the workers can
  read it, whoever published it and however long its producer lingered.
- **answer produced**: the answer event's record timestamp on ``events`` (``CreateTime``):
  the worker's producer's clock when it produced the event inside its transaction, before
  the commit.
- **answer readable**: when a read_committed consumer in this process first read the
  event: after the worker's transaction committed, what a client waiting for the answer
  sees first. It includes this consumer's own delay (a fetch returns as soon as the
  broker has committed records; the GIL of this process is shared with the publisher).

A command's answer is its payment's own terminal event (``is_own_event``, one of
``TERMINAL_EVENT_TYPES``): ``Completed`` for an account opened or funded and for an
honest transfer (``Rejected`` for the rare one the workload draws to its own account).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from tqdm import tqdm

from bench.consistency import Usage, broker_pid, percentile, summary_ms
from paystream.ledger import TERMINAL_EVENT_TYPES, is_own_event
from paystream.runner import Platform, running
from paystream.settings import Settings
from paystream.topology.reader import drain

__all__ = [
    "WORKERS",
    "Answer",
    "Answers",
    "answers_of",
    "command_times",
    "end_offsets",
    "latencies",
    "platform",
    "worker_usage",
]

WORKERS = 2
"""Worker processes, as shipped (``paystream.runner.running``)."""
CONSUME_BATCH_MAX = 500
CONSUME_TIMEOUT_S = 0.05
CONNECT_WAIT_S = 1.0
"""A first consume that connects the consumer before any load (nothing is awaited yet)."""
WATERMARK_TIMEOUT_S = 10.0
WINDOW_MS = 1_000
"""Latency percentiles are also given per window of this many ms of command time."""


@dataclass(frozen=True, slots=True)
class Answer:
    type: str
    produced_ms: int
    """The event's record timestamp (CreateTime: the worker produced it)."""
    read_ms: int
    """When this process first read it, read_committed (the transaction had committed)."""


@contextlib.contextmanager
def platform(bootstrap: str, home: Path, *, name: str, partitions: int) -> Iterator[Platform]:
    """Topics of their own and ``WORKERS`` worker processes as shipped; stopped on exit."""
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        environment="test", data_dir=home / tag, kafka_bootstrap=bootstrap,
        kafka_security="plaintext", topic_prefix=tag,
        partitions=partitions,
    )  # fmt: skip
    with running(settings, workers=WORKERS, log_dir=home / tag / "logs") as found:
        yield found


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's high watermark now: where records published from now on start."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "bench-answers-offsets",
        "enable.auto.commit": False,
    })  # fmt: skip
    try:
        return {
            p: consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=WATERMARK_TIMEOUT_S
            )[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


class Answers:
    """Reads ``events`` read_committed from ``start`` (offsets per partition) whenever
    :meth:`wait` runs, in the caller's thread, and keeps the answer of each awaited payment
    id. One per platform, made before the first load, so its connections are warm when a
    load starts (a new consumer's first fetch would add its own start to the first
    answers' readable times)."""

    def __init__(self, p: Platform, start: Mapping[int, int]) -> None:
        self._serde = p.serde
        self._awaited: set[str] = set()
        self.found: dict[str, Answer] = {}
        self._consumer = Consumer({
            "bootstrap.servers": p.kafka.bootstrap, "group.id": "bench-answers",
            "enable.auto.commit": False, "isolation.level": "read_committed",
        })  # fmt: skip
        self._consumer.assign([TopicPartition(p.topics.events, q, o) for q, o in start.items()])
        self._consumer.consume(CONSUME_BATCH_MAX, CONNECT_WAIT_S)

    def wait(self, ids: Collection[str], *, timeout_s: float, label: str) -> dict[str, Answer]:
        """Until every id in ``ids`` has its answer (``RuntimeError`` after ``timeout_s``).
        Call it as soon as their commands are being published: answers read while nobody
        awaits them are dropped."""
        self._awaited = set(ids)
        deadline = time.monotonic() + timeout_s
        done = sum(1 for i in self._awaited if i in self.found)
        with tqdm(total=len(ids), initial=done, desc=label, unit="answers", leave=False) as bar:
            while done < len(ids) and time.monotonic() < deadline:
                new = self._poll()
                done += new
                bar.update(new)
        if done < len(ids):
            raise RuntimeError(f"{len(ids) - done} of {len(ids)} unanswered ({label})")
        return {i: self.found[i] for i in ids}

    def close(self) -> None:
        self._consumer.close()

    def _poll(self) -> int:
        messages = self._consumer.consume(CONSUME_BATCH_MAX, CONSUME_TIMEOUT_S)
        read_ms = int(time.time() * 1000)
        new = 0
        for message in messages:
            if message.error() is not None:
                raise KafkaException(message.error())
            event = self._serde.decode_event(message.value() or b"")
            if (event.type in TERMINAL_EVENT_TYPES and event.payment_id in self._awaited
                    and is_own_event(event) and event.payment_id not in self.found):  # fmt: skip
                produced_ms = int(message.timestamp()[1])
                self.found[event.payment_id] = Answer(event.type, produced_ms, read_ms)
                new += 1
        return new


@contextlib.contextmanager
def answers_of(p: Platform) -> Iterator[Answers]:
    """An :class:`Answers` from the end of ``events`` now; closed on exit."""
    answers = Answers(p, end_offsets(p.kafka.bootstrap, p.topics.events, p.settings.partitions))
    try:
        yield answers
    finally:
        answers.close()


def command_times(p: Platform, start: Mapping[int, int], ids: Collection[str]) -> dict[str, int]:
    """Command id -> its record timestamp on ``commands`` (LogAppendTime), for ``ids``, read
    from ``start`` up to the end offsets now."""
    topic = p.topics.commands
    ends = end_offsets(p.kafka.bootstrap, topic, len(start))
    consumer = Consumer({
        "bootstrap.servers": p.kafka.bootstrap, "group.id": "bench-answers-commands",
        "enable.auto.commit": False, "isolation.level": "read_committed",
    })  # fmt: skip
    consumer.assign([TopicPartition(topic, q, o) for q, o in start.items()])
    found: dict[str, int] = {}
    try:
        for message in drain(consumer, {(topic, q): o for q, o in ends.items() if o > start[q]}):
            command = p.serde.decode_command(message.value() or b"")
            if command.command_id in ids:
                found[command.command_id] = int(message.timestamp()[1])
    finally:
        consumer.close()
    return found


def latencies(
    commands_ms: Mapping[str, int], found: Mapping[str, Answer], *, warmup_ms: int = 0
) -> dict[str, Any]:
    """Percentiles of command in Kafka -> answer produced and -> answer readable for the
    commands after the first ``warmup_ms`` (those are summarised apart, as ``warmup``), the
    outcomes, and both per ``WINDOW_MS`` of command time, warm-up included (for plots)."""
    ids = sorted(commands_ms, key=commands_ms.__getitem__)
    first_ms = commands_ms[ids[0]]
    produced = [found[i].produced_ms - commands_ms[i] for i in ids]
    readable = [found[i].read_ms - commands_ms[i] for i in ids]
    warm = sum(1 for i in ids if commands_ms[i] - first_ms < warmup_ms)
    outcomes: dict[str, int] = {}
    for i in ids:
        outcomes[found[i].type] = outcomes.get(found[i].type, 0) + 1
    return {
        "warmup_ms": warmup_ms, "sampled": len(ids) - warm,
        "produced": summary_ms(produced[warm:]), "readable": summary_ms(readable[warm:]),
        "warmup": {"produced": summary_ms(produced[:warm]),
                   "readable": summary_ms(readable[:warm])} if warm else None,
        "outcomes": outcomes, "windows": _windows(ids, commands_ms, first_ms, produced, readable),
    }  # fmt: skip


def _windows(
    ids: Sequence[str], commands_ms: Mapping[str, int], first_ms: int,
    produced: Sequence[float], readable: Sequence[float],
) -> list[dict[str, float]]:  # fmt: skip
    by_window: dict[int, tuple[list[float], list[float]]] = {}
    for i, a, b in zip(ids, produced, readable, strict=True):
        lists = by_window.setdefault((commands_ms[i] - first_ms) // WINDOW_MS, ([], []))
        lists[0].append(a)
        lists[1].append(b)
    return [
        {"start_s": w * WINDOW_MS / 1000, "count": len(a),
         "produced_p50_ms": percentile(sorted(a), 50), "produced_p99_ms": percentile(sorted(a), 99),
         "readable_p50_ms": percentile(sorted(b), 50), "readable_p99_ms": percentile(sorted(b), 99)}
        for w, (a, b) in sorted(by_window.items())
    ]  # fmt: skip


def worker_usage(p: Platform, home: Path) -> Usage:
    """CPU of the worker processes, the broker (started under ``home / "kafka"``) and this
    process; ``Usage.since`` also gives what everything else on the machine used."""
    return Usage({
        "workers": ([w.process.pid for w in p.workers.workers if w.process], True),
        "kafka": ([pid] if (pid := broker_pid(home)) else [], True),
        "bench": ([os.getpid()], False),
    })  # fmt: skip
