"""A batch's tallies: per partition it read, the counts and sums the dashboard adds up over
long ranges and all time (pure).

A batch's tallies are its positions. Per partition it read, one row holds the range of
offsets it covered -- ``first_offset`` to ``next_offset``, ``covered`` their difference --
and further rows what its records add: own events of payments per hour of command time and
type (the funnel), and each currency's money sums. Every row carries the range, so the
positions are the greatest ``next_offset`` per partition. The store merges rows of one key by
adding them up (and keeping the least first and the greatest next offset), so the table
stays one row per partition, hour and kind however many batches there were.

All of a batch's rows go into the store in one insert, after its facts: a MergeTree insert of
one block is atomic, so its tallies are there exactly when its positions are, and a sink
killed before them reads the batch again and inserts them once. Summed tallies count every
record once without reading the facts -- as long as each partition's ranges tile it:
``Σ covered = greatest next - least first``. The queries check that before they trust the
tallies (:func:`paystream.analytics.queries.tallies_tile`): only a second copy of the sink
on a ClickHouse server that lost its partitions mid-batch could insert an overlapping range,
and the queries then read the facts instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from paystream.analytics.rows import (
    COLUMNS,
    MONEY_COLUMNS,
    Money,
    at,
    balance_row,
    dead_letter_row,
    event_row,
    line_money,
    line_rows,
)
from paystream.ledger import Account, Event, JournalEntry, is_own_event

HOUR_MS: Final = 3_600_000
PAYMENT_COMMANDS: Final = ("Transfer", "Deposit", "Withdrawal")
TALLY_COLUMNS: Final = (
    "topic", "partition", "hour", "command_type", "type", "currency",
    "first_offset", "next_offset", "covered", "events", *MONEY_COLUMNS,
)  # fmt: skip
FunnelKey = tuple[int, str, str]
"""(hour of command time in ms, command type, event type)."""
NO_MONEY: Final[Money] = (0, 0, 0, 0, 0, 0, 0)


@dataclass(slots=True)
class Tally:
    """One partition's share of a batch."""

    first_offset: int
    next_offset: int
    funnel: Counter[FunnelKey] = field(default_factory=Counter)
    money: dict[str, Money] = field(default_factory=dict)

    def count_event(self, event: Event) -> None:
        """A payment's own event, by the hour of its command time (what the funnel counts)."""
        if event.command_type in PAYMENT_COMMANDS and is_own_event(event):
            hour_ms = event.issued_at_ms // HOUR_MS * HOUR_MS
            self.funnel[(hour_ms, event.command_type, event.type)] += 1

    def count_entry(self, entry: JournalEntry) -> None:
        for line in entry.lines:
            before = self.money.get(line.currency, NO_MONEY)
            added = line_money(entry.phase, line)
            self.money[line.currency] = (
                before[0] + added[0], before[1] + added[1], before[2] + added[2],
                before[3] + added[3], before[4] + added[4], before[5] + added[5],
                before[6] + added[6],
            )  # fmt: skip


def tally_rows(topic: str, partition: int, tally: Tally) -> list[list[Any]]:
    """The store's rows of a tally (columns :data:`TALLY_COLUMNS`): its range, its funnel
    counts, its money sums."""
    offsets = [tally.first_offset, tally.next_offset]
    none = at(0)
    covered = tally.next_offset - tally.first_offset
    return [
        [topic, partition, none, "", "", "", *offsets, covered, 0, *NO_MONEY],
        *(
            [topic, partition, at(hour_ms), command, kind, "", *offsets, 0, count, *NO_MONEY]
            for (hour_ms, command, kind), count in sorted(tally.funnel.items())
        ),
        *(
            [topic, partition, none, "", "", currency, *offsets, 0, 0, *money]
            for currency, money in sorted(tally.money.items())
        ),
    ]


Position = tuple[str, int]
"""(topic, partition)."""


@dataclass(frozen=True, slots=True)
class Place:
    """Where a record was read, and the time Kafka logged it."""

    topic: str
    partition: int
    offset: int
    logged_at_ms: int

    def where(self) -> dict[str, int]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "logged_at_ms": self.logged_at_ms,
        }


class Batch:
    """A batch's rows for the store, as the sink reads its records: facts per table and a
    tally per partition (pure)."""

    def __init__(
        self, *, next_offsets: Mapping[Position, int], started_at: Mapping[Position, int | None]
    ) -> None:
        """``next_offsets``: the positions after the batch; ``started_at``: where each
        partition stood before it (None: from the log's start, i.e. its first record)."""
        self.facts: dict[str, list[list[Any]]] = {table: [] for table in COLUMNS}
        self._next_offsets = next_offsets
        self._tallies = {
            position: Tally(first_offset=first, next_offset=next_offsets[position])
            for position, first in started_at.items()
            if first is not None
        }

    def event(self, event: Event, at: Place) -> None:
        self.facts["events"].append(event_row(event, **at.where()))
        self._tally(at).count_event(event)

    def entry(self, entry: JournalEntry, at: Place) -> None:
        self.facts["ledger_lines"].extend(line_rows(entry, **at.where()))
        self._tally(at).count_entry(entry)

    def dead_letter(self, headers: Mapping[str, bytes], value: bytes | None, at: Place) -> None:
        self.facts["dead_letters"].append(dead_letter_row(headers, value, **at.where()))
        self._tally(at)

    def account(self, account: Account, at: Place) -> None:
        self.facts["balances"].append(balance_row(account, **at.where()))
        self._tally(at)

    def skipped(self, at: Place) -> None:
        """A record that adds no fact (a tombstone): its offset is still covered."""
        self._tally(at)

    def tallies(self) -> list[list[Any]]:
        """Every partition's tally rows, those whose positions moved past markers only too."""
        for position, next_offset in self._next_offsets.items():
            self._tallies.setdefault(
                position, Tally(first_offset=next_offset, next_offset=next_offset)
            )
        return [
            row
            for (topic, partition), tally in sorted(self._tallies.items())
            for row in tally_rows(topic, partition, tally)
        ]

    def _tally(self, at: Place) -> Tally:
        position = (at.topic, at.partition)
        found = self._tallies.get(position)
        if found is None:
            found = Tally(first_offset=at.offset, next_offset=self._next_offsets[position])
            self._tallies[position] = found
        return found
