"""Events into the outbox: a batching sink's target (:mod:`paystream.topology.batching`).

For each batch of ``events`` read read_committed, the emails the rules want
(:func:`paystream.notify.rules.wanted`) are matched with the holders' addresses in
``account_contacts`` and inserted into ``notifications`` ``ON CONFLICT DO NOTHING``, with
the batch's consumer positions (``sink_offsets``, consumer ``notify_group``) in the same
Postgres transaction. A batch read twice (a restart, a rebalance) inserts nothing twice;
a batch whose partitions moved to another copy meanwhile is refused (``Fenced``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Final

from psycopg.types.json import Jsonb

from paystream.audit import db, store
from paystream.audit.event_target import EventTarget
from paystream.ledger import Event
from paystream.notify import metrics, rules, templates
from paystream.notify.rules import Wanted
from paystream.topology.batching import Limits, Observer, Position

__all__ = ["LIMITS", "OutboxTarget", "observer", "outbox_rows"]

LIMITS: Final = Limits(records_max=2_000, window_s=0.2)
"""A batch is written when a fetch comes back short, or at ``records_max`` events, or
``window_s`` old. Most events ask for no email; each that does costs a row."""
logger = logging.getLogger("paystream.notify")
OutboxRow = tuple[str, str, str, Jsonb]
"""(notification_id, template, recipient, context)."""


def outbox_rows(wanted: Iterable[Wanted], contacts: Mapping[str, str]) -> list[OutboxRow]:
    """The outbox rows of ``wanted`` whose account has a contact; each id once, first kept."""
    rows: dict[str, OutboxRow] = {}
    for email in wanted:
        recipient = contacts.get(email.account_id)
        if recipient is None or email.notification_id in rows:
            continue
        templates.check_context(email.template, email.context)
        rows[email.notification_id] = (
            email.notification_id, email.template, recipient, Jsonb(email.context),
        )  # fmt: skip
    return list(rows.values())


class OutboxTarget(EventTarget):
    """The outbox as a batching sink's target: events' emails and positions, one transaction."""

    what = "the outbox batch"

    def store(
        self,
        conn: db.Connection,
        events: list[Event],
        *,
        next_offsets: Mapping[Position, int],
        started_at: Mapping[Position, int | None],
    ) -> dict[str, int]:
        wanted = [w for event in events for w in rules.wanted(event)]
        counts: dict[str, int] = {}
        with conn.transaction():
            contacts = _contacts(conn, {w.account_id for w in wanted})
            for row in outbox_rows(wanted, contacts):
                cursor = conn.execute(
                    "INSERT INTO notifications (notification_id, template, recipient, context)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (notification_id) DO NOTHING",
                    row,
                )
                if cursor.rowcount == 1:
                    counts[row[1]] = counts.get(row[1], 0) + 1
            store.move_positions(conn, self.consumer, started_at, next_offsets)
        return counts


def _contacts(conn: db.Connection, account_ids: set[str]) -> dict[str, str]:
    if not account_ids:
        return {}
    found = conn.execute(
        "SELECT account_id, email FROM account_contacts WHERE account_id = ANY(%s)",
        (sorted(account_ids),),
    ).fetchall()
    return {str(account_id): str(email) for account_id, email in found}


def observer() -> Observer:
    """The loop's reports as the notifier's metrics (rows per template: emails enqueued)."""

    def written(
        counts: Mapping[str, int], _offsets: Mapping[Position, int], _records: int, seconds: float
    ) -> None:
        for template, rows in counts.items():
            metrics.NOTIFY_ENQUEUED.labels(template=template).inc(rows)
        metrics.NOTIFY_INGEST_BATCH_SECONDS.observe(seconds)

    def retried(reason: str) -> None:
        metrics.NOTIFY_INGEST_RETRIES.labels(
            reason="postgres" if reason == "store" else reason
        ).inc()

    def lag(_topic: str, partition: int, records: int, _seconds: float) -> None:
        metrics.NOTIFY_LAG_RECORDS.labels(partition=str(partition)).set(records)

    return Observer(written=written, retried=retried, lag=lag)
