"""The faust-streaming app of the faust baseline (bench/baseline_faust.py drives it).

What a team would write on the design card's framework: one agent over ``commands`` and
``legs``, a RocksDB table of balances (faust's ``rocksdb://`` store, which runs on
rocksdict when the ``rocksdb`` binding is absent, as here), a table of the payments'
steps seen (a step seen before is skipped: the repeat guard), faust's
``processing_guarantee="exactly_once"`` and faust's own commit timer (its defaults:
``broker_commit_every`` 10,000 events, ``broker_commit_interval`` 2.8 s). Records are
faust Records in JSON, faust's default codec. A payment is three steps, the records
paystream's saga reads and writes per payment (bench/results/baseline_passthrough.json,
``wire_profile``):

1. ``transfer`` on the source's partition: balance checked, ``balances[source]`` debited,
   a ``credit`` leg keyed by the destination to ``legs``, a ledger line, a ``Debited``
   event (too little money: a ``Rejected`` event, nothing else);
2. ``credit`` on the destination's partition: ``balances[destination]`` credited, a
   ``confirm`` leg keyed by the source to ``legs``, a ledger line, a ``Completed`` event;
3. ``confirm`` on the source's partition: a ledger line (the transit settled).

Per payment: 3 records in (1 command, 2 legs), 7 sent (2 legs, 3 ledger lines, 2 events),
5 table writes (2 balances, 3 steps) -- paystream writes 10.4 changelog records a payment.
Every account opens with ``FAUST_BENCH_OPENING_BALANCE_MINOR`` (the balances table's
default: the saga benchmark's deposit, so no transfer is refused).

Not crash-safe: paystream's first worker was a faust-streaming 0.15.3 agent under this
mode and lost 15 to 750 of 20,000 transfers under SIGKILL (README, "Why not faust's
consumer loop"). This app is for throughput only.

Run by the baseline as ``python -c "from bench.faust_app import main; main()"`` (imported
as ``bench.faust_app``, not ``__main__``, so its Records keep one name) with its settings in
the environment (``FAUST_BENCH_*``, read once at import: faust's worker needs the app at
import time). ``producer_linger`` is faust's default (0) unless the baseline's
``--linger-ms`` says otherwise; the log level is ``FAUST_BENCH_LOG_LEVEL`` (warning).
"""

from __future__ import annotations

import os
from typing import Any

import faust

__all__ = ["Step", "app", "main"]

PARTITIONS = 8
LOG_LEVEL = os.environ.get("FAUST_BENCH_LOG_LEVEL", "warning")


class Step(faust.Record, serializer="json"):
    """A transfer, or a leg of one (``credit``, ``confirm``)."""

    kind: str
    payment_id: str
    source: str
    destination: str
    amount_minor: int


class LedgerLine(faust.Record, serializer="json"):
    payment_id: str
    account_id: str
    amount_minor: int
    side: str


class Event(faust.Record, serializer="json"):
    type: str
    payment_id: str
    account_id: str
    amount_minor: int
    balance_minor: int


def _setting(name: str) -> str:
    value = os.environ.get(f"FAUST_BENCH_{name}")
    if value is None:
        raise RuntimeError(f"FAUST_BENCH_{name} is not set (bench/baseline_faust.py sets it)")
    return value


def build() -> tuple[faust.App, Any]:
    """The app and its agent, every option said."""
    prefix = _setting("TOPIC_PREFIX")
    app = faust.App(
        _setting("APP_ID"),
        broker=f"kafka://{_setting('BOOTSTRAP')}",
        store="rocksdb://",
        datadir=_setting("DATADIR"),
        processing_guarantee="exactly_once",
        topic_partitions=PARTITIONS,
        topic_replication_factor=1,
        table_standby_replicas=0,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=int(_setting("PRODUCER_LINGER_MS")) / 1000,
        broker_commit_every=10_000,  # faust's default
        broker_commit_interval=2.8,  # faust's default (seconds)
    )  # fmt: skip
    inputs = app.topic(f"{prefix}.commands", f"{prefix}.legs", value_type=Step,
                       partitions=PARTITIONS)  # fmt: skip
    legs = app.topic(f"{prefix}.legs", value_type=Step, partitions=PARTITIONS)
    ledger = app.topic(f"{prefix}.ledger", value_type=LedgerLine, partitions=PARTITIONS)
    events = app.topic(f"{prefix}.events", value_type=Event, partitions=PARTITIONS)
    opening_minor = int(_setting("OPENING_BALANCE_MINOR"))
    balances = app.Table("balances", default=lambda: opening_minor, partitions=PARTITIONS)
    steps = app.Table("steps", default=bool, partitions=PARTITIONS)

    async def line(step: Step, account_id: str, side: str) -> None:
        value = LedgerLine(payment_id=step.payment_id, account_id=account_id,
                           amount_minor=step.amount_minor, side=side)  # fmt: skip
        await ledger.send(key=account_id, value=value)

    async def event(step: Step, kind: str, account_id: str) -> None:
        value = Event(
            type=kind, payment_id=step.payment_id, account_id=account_id,
            amount_minor=step.amount_minor, balance_minor=balances[account_id],
        )  # fmt: skip
        await events.send(key=step.payment_id, value=value)

    async def apply(step: Step) -> None:
        if step.kind == "transfer":
            if balances[step.source] < step.amount_minor:
                await event(step, "Rejected", step.source)
                return
            balances[step.source] -= step.amount_minor
            await legs.send(key=step.destination, value=step.derive(kind="credit"))
            await line(step, step.source, "debit")
            await event(step, "Debited", step.source)
        elif step.kind == "credit":
            balances[step.destination] += step.amount_minor
            await legs.send(key=step.source, value=step.derive(kind="confirm"))
            await line(step, step.destination, "credit")
            await event(step, "Completed", step.destination)
        elif step.kind == "confirm":
            await line(step, step.source, "settled")
        else:
            raise ValueError(f"unknown step {step.kind!r}")

    async def ledger_agent(stream: Any) -> None:
        async for step in stream:
            seen = f"{step.payment_id}:{step.kind}"
            if not steps[seen]:  # a repeat of a step already applied is skipped
                steps[seen] = True
                await apply(step)

    agent = app.agent(inputs, name="ledger")(ledger_agent)
    return app, agent


app, ledger_agent = build()


def main() -> None:
    worker = faust.Worker(app, loglevel=LOG_LEVEL, quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
