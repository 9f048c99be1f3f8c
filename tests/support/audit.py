"""An audit store written from the core's real outputs, as the sink writes it (tests only)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

from paystream.audit import store
from paystream.audit.records import Origin
from paystream.audit.store import Batch
from paystream.ledger import DirectoryEntry, Event, Input, JournalEntry, Output, Transfer
from tests.support.ledger import Cluster, of_type

LEDGER_TOPIC = "p.ledger"
EVENTS_TOPIC = "p.events"
CONSUMER = "test-sink"


@dataclass
class Recorded:
    """What the workers emitted through a Cluster, each output with its partition."""

    cluster: Cluster = field(default_factory=Cluster)
    entries: list[tuple[JournalEntry, int]] = field(default_factory=list)
    events: list[tuple[Event, int]] = field(default_factory=list)
    directory: list[DirectoryEntry] = field(default_factory=list)

    def apply(self, inputs: Sequence[Input], partition: int) -> None:
        self._keep(self.cluster.apply(inputs, partition=partition).outputs, partition)

    def saga(self, command: Transfer, source: int, destination: int) -> None:
        steps = self.cluster.saga(
            command, source_partition=source, destination_partition=destination
        )
        for result, partition in zip(steps, (source, destination, source), strict=False):
            self._keep(result.outputs, partition)

    def _keep(self, outputs: Sequence[Output], partition: int) -> None:
        self.entries += [(e, partition) for e in of_type(outputs, JournalEntry)]
        self.events += [(e, partition) for e in of_type(outputs, Event)]
        self.directory += of_type(outputs, DirectoryEntry)

    def write(self, dsn: str) -> None:
        """Everything in one sink batch, at consecutive offsets per topic partition."""
        entries = list(
            zip([e for e, _ in self.entries], _placed(self.entries, "ledger"), strict=True)
        )
        events = list(zip([e for e, _ in self.events], _placed(self.events, "events"), strict=True))
        next_offsets: dict[tuple[str, int], int] = {}
        for topic, placed in ((LEDGER_TOPIC, entries), (EVENTS_TOPIC, events)):
            for _, origin in placed:
                next_offsets[(topic, origin.partition)] = origin.offset + 1
        batch = Batch(entries=entries, events=events, directory=self.directory)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"SET ROLE {store.SINK_ROLE}")
            heads = store.chain_heads(conn, {o.chain for _, o in [*entries, *events]})
            store.write(
                conn, batch, consumer=CONSUMER, started_at=dict.fromkeys(next_offsets),
                next_offsets=next_offsets, heads=heads,
            )  # fmt: skip


def _placed(items: Sequence[tuple[object, int]], kind: str) -> list[Origin]:
    offsets: Counter[int] = Counter()
    origins = []
    for _item, partition in items:
        origins.append(Origin(kind, partition, offsets[partition]))  # type: ignore[arg-type]
        offsets[partition] += 1
    return origins
