"""What events ask for, into Postgres with the consumer positions: a batching sink's target.

The webhook service's deliveries and the notifier's outbox are both this: a batch of
``events`` read read_committed is decoded, the subclass writes what the events ask for and
moves the batch's positions (``sink_offsets``) in one Postgres transaction of its own, as
the sink's role (no UPDATE or DELETE of recorded facts). A batch whose partitions moved to
another copy meanwhile is refused by the stored positions (``Fenced``); Postgres away is
retried by the loop; any other refusal by Postgres is a bug and stops the process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import psycopg
from confluent_kafka import Message

from paystream.audit import db, store
from paystream.ledger import Event
from paystream.ledger.errors import InvariantViolation
from paystream.topology.avro import AvroSerde
from paystream.topology.batching import Fenced, Position

__all__ = ["RETRIABLE", "EventTarget"]

RETRIABLE: Final = (psycopg.OperationalError,)
"""Postgres unreachable or restarting, a deadlock or a serialization conflict: retried."""


class EventTarget:
    """A batching sink's target over ``events``; subclasses say what a batch writes."""

    retriable: tuple[type[Exception], ...] = RETRIABLE
    what: str = "a batch"
    """What Postgres refused, in the error of a refused batch."""

    def __init__(self, dsn: str, *, consumer: str, serde: AvroSerde) -> None:
        self._dsn = dsn
        self._consumer = consumer
        self._serde = serde
        self._conn: db.Connection | None = None

    def positions(self, assigned: Sequence[Position]) -> Mapping[Position, int]:
        return store.stored_positions(self._connection(), self._consumer, assigned)

    def write(
        self,
        messages: Sequence[Message],
        *,
        next_offsets: Mapping[Position, int],
        started_at: Mapping[Position, int | None],
    ) -> Mapping[str, int]:
        events = [self._serde.decode_event(message.value() or b"") for message in messages]
        try:
            return self.store(
                self._connection(), events, next_offsets=next_offsets, started_at=started_at
            )
        except store.Fenced as error:
            raise Fenced(str(error)) from error
        except RETRIABLE:
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                self._conn = None
            raise
        except psycopg.Error as error:  # a constraint refused a row: a bug, never retried
            raise InvariantViolation(f"Postgres refused {self.what}: {error}") from error

    def store(
        self,
        conn: db.Connection,
        events: list[Event],
        *,
        next_offsets: Mapping[Position, int],
        started_at: Mapping[Position, int | None],
    ) -> Mapping[str, int]:
        """Write what ``events`` ask for and move the positions, in one transaction; rows
        written by kind."""
        raise NotImplementedError

    @property
    def consumer(self) -> str:
        return self._consumer

    def _connection(self) -> db.Connection:
        if self._conn is None or self._conn.closed:
            conn = db.connect(self._dsn, autocommit=True)
            conn.execute(f"SET ROLE {store.SINK_ROLE}")  # no UPDATE/DELETE of recorded facts
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
