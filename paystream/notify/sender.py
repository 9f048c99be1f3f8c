"""The outbox's sender: due emails claimed, rendered, sent over SMTP, until sent or dead.

One round:

1. Nothing due: close the SMTP session and wait ``idle_s`` (stop-aware).
2. Open the session first. The server down (:class:`smtp.Unavailable`): back off (capped,
   jittered) and charge no email an attempt -- emails wait, ``queue_depth`` and
   ``oldest_pending_seconds`` show it, and nothing is lost however long the outage.
3. Claim at most ``claim_max`` due rows (``FOR UPDATE SKIP LOCKED``, so copies of the
   service never claim the same row) and lease them: ``attempts + 1`` and
   ``next_attempt_at = now() + lease_s``, committed before anything is sent.
4. Send each: accepted -> ``sent``; :class:`smtp.Temporary` -> retried after an
   exponential, jittered backoff, or ``dead`` once ``attempts_max`` attempts are spent;
   :class:`smtp.Permanent` or a template that fails -> ``dead`` now. A session lost mid-way
   releases the rows not tried yet (their attempt given back).

``dead`` rows are the DLQ: kept with their last error, counted by the
``paystream_notify_dlq_depth`` gauge; :func:`redrive` puts them back in the queue.

Guarantee: at least once, with a stable Message-ID. An email is marked sent after the
server accepted it; a crash (or Postgres lost) between the two leaves the row leased, and
it is sent again when the lease ends -- with the same Message-ID (derived from the
notification id), so the repeat is recognisable and receivers that deduplicate by
Message-ID show one email. The same holds when the connection drops after the message's
data went out and before the server's answer came back. Otherwise each email is sent
once: an SMTP server that is down costs waiting, never a second send.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg

from paystream.audit import db, store
from paystream.ledger.errors import InvariantViolation, ensure
from paystream.notify import metrics, smtp, templates

__all__ = [
    "ATTEMPTS_MAX",
    "DEFAULT_POLICY",
    "Claimed",
    "OutboxStats",
    "Policy",
    "Sender",
    "outbox_stats",
    "redrive",
    "retry_delay_s",
]

ATTEMPTS_MAX: Final = 15
"""Attempts per email before it is dead: with the backoff below, about two hours of a
server that answers but refuses (an outage does not count: see the module)."""
BACKOFF_INITIAL_S: Final = 2.0
BACKOFF_MAX_S: Final = 1_800.0
CLAIM_MAX: Final = 10
SEND_TIMEOUT_S: Final = 20.0
"""Each SMTP socket operation's bound (connect, each command, the data)."""
SEND_OPERATIONS_MAX: Final = 5
"""Socket operations one email takes (MAIL, RCPT, DATA, the data, its answer), each bounded
by ``send_timeout_s``."""
LEASE_MARGIN_S: Final = 60.0
IDLE_S: Final = 1.0
CONNECT_BACKOFF_MAX_S: Final = 30.0
STATS_EVERY_S: Final = 5.0
DB_BACKOFF_MAX_S: Final = 10.0
REDRIVE_MAX: Final = 10_000
"""Dead rows one redrive puts back at most."""
logger = logging.getLogger("paystream.notify")


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The sender's bounds (tests shorten them; production uses the defaults)."""

    attempts_max: int = ATTEMPTS_MAX
    backoff_initial_s: float = BACKOFF_INITIAL_S
    backoff_max_s: float = BACKOFF_MAX_S
    claim_max: int = CLAIM_MAX
    send_timeout_s: float = SEND_TIMEOUT_S
    idle_s: float = IDLE_S
    connect_backoff_max_s: float = CONNECT_BACKOFF_MAX_S
    stats_every_s: float = STATS_EVERY_S

    def __post_init__(self) -> None:
        ensure(
            self.attempts_max >= 1 and self.claim_max >= 1, f"a policy that sends nothing: {self}"
        )
        ensure(0 < self.backoff_initial_s <= self.backoff_max_s, f"backoff bounds: {self}")

    @property
    def lease_s(self) -> float:
        """How long a claimed row is this sender's: every claimed email's budget, plus a
        minute. A sender that dies leaves its rows to others after this."""
        return self.claim_max * SEND_OPERATIONS_MAX * self.send_timeout_s + LEASE_MARGIN_S


DEFAULT_POLICY: Final = Policy()


def retry_delay_s(attempts: int, policy: Policy, rng: random.Random) -> float:
    """After ``attempts`` failed attempts: exponential, capped, with equal jitter (half
    fixed, half random: never ~0 as full jitter can be, and copies still spread)."""
    doublings = min(max(attempts - 1, 0), 64)  # 2.0**64 s is past any cap: no overflow
    ceiling = min(policy.backoff_max_s, policy.backoff_initial_s * 2.0**doublings)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    notification_id: str
    template: str
    recipient: str
    context: dict[str, Any]
    attempts: int
    """Including this one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxStats:
    pending: int
    dead: int
    oldest_pending_s: float


def outbox_stats(conn: db.Connection) -> OutboxStats:
    """Queue depth, DLQ depth and the oldest waiting email's age (the partial indexes' rows)."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'pending'),"
        " count(*) FILTER (WHERE status = 'dead'),"
        " coalesce(extract(epoch FROM now() - min(created_at) FILTER"
        "  (WHERE status = 'pending')), 0)"
        " FROM notifications WHERE status IN ('pending', 'dead')"
    ).fetchone()
    if row is None:
        raise InvariantViolation("no answer from Postgres to a count")
    pending, dead, oldest_s = row
    return OutboxStats(pending=int(pending), dead=int(dead), oldest_pending_s=float(oldest_s))


def redrive(conn: db.Connection, *, limit: int = REDRIVE_MAX) -> int:
    """Put up to ``limit`` dead emails back in the queue with fresh attempts; how many."""
    ensure(0 < limit <= REDRIVE_MAX, f"redrive at most {REDRIVE_MAX} at once")
    cursor = conn.execute(
        "UPDATE notifications SET status = 'pending', dead_at = NULL, attempts = 0,"
        " next_attempt_at = now() WHERE status = 'dead' AND notification_id IN"
        " (SELECT notification_id FROM notifications WHERE status = 'dead'"
        "  ORDER BY dead_at, notification_id LIMIT %s)",
        (limit,),
    )
    return cursor.rowcount


class Sender:
    """One sender (several copies, in one process or many, share the outbox safely)."""

    def __init__(
        self,
        dsn: str,
        *,
        server: smtp.SmtpServer,
        sender: str,
        policy: Policy = DEFAULT_POLICY,
        rng: random.Random | None = None,
    ) -> None:
        self._dsn = dsn
        self._from = sender
        self._policy = policy
        self._session = smtp.Session(server, timeout_s=policy.send_timeout_s)
        self._rng = rng or random.Random()
        self._conn: db.Connection | None = None
        self._stopping = threading.Event()
        self._stats_at_s = 0.0
        self._connect_failures = 0
        self._db_failures = 0

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        """Rounds until :meth:`stop`; Postgres down: back off and reconnect."""
        try:
            while not self._stopping.is_set():
                try:
                    self.round()
                    self._db_failures = 0
                except psycopg.OperationalError as error:
                    self._postgres_failed(error)
        finally:
            self._session.close()
            if self._conn is not None:
                self._conn.close()

    def round(self) -> int:
        """One round (see the module); how many emails were sent."""
        conn = self._connection()
        if time.monotonic() - self._stats_at_s >= self._policy.stats_every_s:
            self._report(conn)
        if not _any_due(conn):
            self._session.close()
            self._stopping.wait(self._policy.idle_s)
            return 0
        if not self._open_session():
            return 0
        return self._send_all(conn, _claim(conn, self._policy))

    def _open_session(self) -> bool:
        try:
            self._session.open()
        except smtp.Unavailable as error:
            self._connect_failures += 1
            metrics.NOTIFY_FAILURES.labels(reason="connect").inc()
            delay_s = min(
                self._policy.connect_backoff_max_s,
                retry_delay_s(self._connect_failures, self._policy, self._rng),
            )
            logger.warning("SMTP server unavailable (%s); retry %d in %.1f s", error,
                           self._connect_failures, delay_s)  # fmt: skip
            self._stopping.wait(delay_s)
            return False
        if self._connect_failures:
            logger.warning("SMTP server back after %d failed connects", self._connect_failures)
            self._connect_failures = 0
        return True

    def _send_all(self, conn: db.Connection, claimed: Sequence[Claimed]) -> int:
        sent = 0
        for index, row in enumerate(claimed):
            if not self._session.is_open or self._stopping.is_set():
                _release(conn, [r.notification_id for r in claimed[index:]])
                break
            sent += self._send_one(conn, row)
        return sent

    def _send_one(self, conn: db.Connection, row: Claimed) -> int:
        try:
            rendered = templates.render(row.template, row.context)
        except templates.TemplateError as error:
            metrics.NOTIFY_FAILURES.labels(reason="render").inc()
            _dead(conn, row, str(error), reason="render")
            return 0
        email = smtp.message(
            rendered, notification_id=row.notification_id, sender=self._from,
            recipient=row.recipient, now_s=time.time(),
        )  # fmt: skip
        started = time.monotonic()
        try:
            self._session.send(email)
        except smtp.Permanent as error:
            metrics.NOTIFY_FAILURES.labels(reason="permanent").inc()
            _dead(conn, row, str(error), reason="permanent")
            return 0
        except smtp.Temporary as error:
            metrics.NOTIFY_FAILURES.labels(reason="temporary").inc()
            self._failed(conn, row, str(error))
            return 0
        metrics.NOTIFY_SEND_SECONDS.observe(time.monotonic() - started)
        _sent(conn, row)
        metrics.NOTIFY_SENT.labels(template=row.template).inc()
        return 1

    def _failed(self, conn: db.Connection, row: Claimed, error: str) -> None:
        if row.attempts >= self._policy.attempts_max:
            _dead(conn, row, f"{row.attempts} attempts: {error}", reason="exhausted")
            return
        delay_s = retry_delay_s(row.attempts, self._policy, self._rng)
        conn.execute(
            "UPDATE notifications SET next_attempt_at = now() + make_interval(secs => %s),"
            " last_error = %s WHERE notification_id = %s AND status = 'pending'",
            (delay_s, error[: smtp.ERROR_TEXT_LENGTH_MAX], row.notification_id),
        )
        logger.info("email %s not sent (attempt %d): %s; retry in %.1f s",
                    row.notification_id, row.attempts, error, delay_s)  # fmt: skip

    def _report(self, conn: db.Connection) -> None:
        stats = outbox_stats(conn)
        metrics.NOTIFY_QUEUE_DEPTH.set(stats.pending)
        metrics.NOTIFY_DLQ_DEPTH.set(stats.dead)
        metrics.NOTIFY_OLDEST_PENDING_SECONDS.set(stats.oldest_pending_s)
        self._stats_at_s = time.monotonic()

    def _postgres_failed(self, error: psycopg.OperationalError) -> None:
        self._db_failures += 1
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        delay_s = min(DB_BACKOFF_MAX_S, retry_delay_s(self._db_failures, self._policy, self._rng))
        logger.warning(
            "Postgres failed (%s); retry %d in %.1f s", error, self._db_failures, delay_s
        )
        self._stopping.wait(delay_s)

    def _connection(self) -> db.Connection:
        if self._conn is None or self._conn.closed:
            conn = db.connect(self._dsn, autocommit=True)
            conn.execute(f"SET ROLE {store.SINK_ROLE}")
            self._conn = conn
        return self._conn


def _any_due(conn: db.Connection) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM notifications WHERE status = 'pending' AND next_attempt_at <= now()"
            " LIMIT 1"
        ).fetchone()
        is not None
    )


def _claim(conn: db.Connection, policy: Policy) -> list[Claimed]:
    """Lease up to ``claim_max`` due rows, oldest due first, skipping rows others hold."""
    rows = conn.execute(
        "WITH due AS (SELECT notification_id, next_attempt_at AS due_at FROM notifications"
        "  WHERE status = 'pending' AND next_attempt_at <= now()"
        "  ORDER BY next_attempt_at, notification_id LIMIT %s FOR UPDATE SKIP LOCKED)"
        " UPDATE notifications n SET attempts = n.attempts + 1,"
        "  next_attempt_at = now() + make_interval(secs => %s)"
        " FROM due WHERE n.notification_id = due.notification_id"
        " RETURNING n.notification_id, n.template, n.recipient, n.context, n.attempts,"
        "  due.due_at",
        (policy.claim_max, policy.lease_s),
    ).fetchall()
    rows.sort(key=lambda row: (row[5], row[0]))
    return [
        Claimed(notification_id=nid, template=template, recipient=recipient,
                context=dict(context), attempts=attempts)
        for nid, template, recipient, context, attempts, _ in rows
    ]  # fmt: skip


def _sent(conn: db.Connection, row: Claimed) -> None:
    conn.execute(
        "UPDATE notifications SET status = 'sent', sent_at = now(), last_error = NULL"
        " WHERE notification_id = %s AND status = 'pending'",
        (row.notification_id,),
    )


def _dead(conn: db.Connection, row: Claimed, error: str, *, reason: str) -> None:
    conn.execute(
        "UPDATE notifications SET status = 'dead', dead_at = now(), last_error = %s"
        " WHERE notification_id = %s AND status = 'pending'",
        (error[: smtp.ERROR_TEXT_LENGTH_MAX], row.notification_id),
    )
    metrics.NOTIFY_DEAD_TOTAL.labels(reason=reason).inc()
    logger.warning("email %s to the DLQ (%s): %s", row.notification_id, reason, error)


def _release(conn: db.Connection, notification_ids: list[str]) -> None:
    """Give back claimed rows not tried: their attempt undone, due again now."""
    if notification_ids:
        conn.execute(
            "UPDATE notifications SET attempts = attempts - 1, next_attempt_at = now()"
            " WHERE notification_id = ANY(%s) AND status = 'pending'",
            (notification_ids,),
        )
