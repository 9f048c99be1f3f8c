"""A batch's tallies: per partition it read, the counts and sums the dashboard adds up over
long ranges and all time (pure).

A batch's tallies are its positions. Per partition it read, one row holds the range of
offsets it covered -- ``first_offset`` to ``next_offset``, ``covered`` their difference --
and the positions are the greatest ``next_offset`` of each partition's range rows. Further
rows, pooled over partitions, hold what its records add: own events of payments per hour of
command time and type (the funnel), histograms of end-to-end latency and of time to
consistency per hour (log-spaced bins: percentiles of long ranges), and each currency's
money sums. The store merges rows of one key by adding them up (and keeping the least first
and the greatest next offset), so the table stays one row per partition's range and one per
hour, kind and bin however many batches there were.

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

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from paystream.analytics.rows import (
    COLUMNS,
    MONEY_COLUMNS,
    Money,
    at,
    balance_row,
    dead_letter_row,
    event_row,
    is_final_entry,
    line_money,
    line_rows,
)
from paystream.ledger import Account, Event, JournalEntry, is_own_event

HOUR_MS: Final = 3_600_000
PAYMENT_COMMANDS: Final = ("Transfer", "Deposit", "Withdrawal")
TERMINAL_EVENTS: Final = ("Completed", "Reversed", "Rejected")
TALLY_COLUMNS: Final = (
    "topic", "partition", "hour", "command_type", "type", "currency", "bin",
    "first_offset", "next_offset", "covered", "events", *MONEY_COLUMNS,
)  # fmt: skip
FunnelKey = tuple[int, str, str]
"""(hour of command time in ms, command type, event type)."""
Measure = Literal["latency", "settled"]
"""A histogram's measure (in the ``type`` column): command time -> the terminal event logged,
or -> the payment's last journal entry logged."""
HistogramKey = tuple[int, str, Measure, int]
"""(hour of command time in ms, command type, measure, bin)."""
NO_MONEY: Final[Money] = (0, 0, 0, 0, 0, 0, 0)
POOLED: Final = 0
"""The partition of the rows that are not a range: counts and sums of every partition."""
RANGES: Final = "type = '' AND currency = ''"
"""The rows that name a partition's range (SQL): the positions, and what the tiling check
adds up."""
BINS_PER_DOUBLING: Final = 16
"""Bin ``b > 0`` holds (2^((b-1)/16), 2^(b/16)] ms; its middle 2^((b-0.5)/16) is within 2.2 %
of anything in it. Bin 0 holds 1 ms and less (a command time ahead of the log's, too)."""
BIN_MAX: Final = 40 * BINS_PER_DOUBLING
"""2^40 ms, 35 years: the last bin holds anything longer."""
BIN_SQL: Final = "least(if({ms} <= 1, 0, toUInt16(ceil(16 * log2({ms})))), 640)"
""":func:`latency_bin` in ClickHouse's words (checked against it on the real engine)."""
COMMAND_OF_KIND: Final = {
    "deposit": "Deposit", "withdrawal": "Withdrawal", "transfer_debit": "Transfer",
    "transfer_credit": "Transfer", "payout_debit": "RequestPayout",
    "payout_settlement": "RequestPayout",
}  # fmt: skip
"""The command of each journal entry kind (``ledger.models.ENTRY_KINDS``, every one)."""


def latency_bin(ms: int) -> int:
    """The histogram bin of ``ms`` milliseconds."""
    if ms <= 1:
        return 0
    return min(math.ceil(BINS_PER_DOUBLING * math.log2(ms)), BIN_MAX)


def bin_ms(number: int) -> float:
    """What bin ``number`` stands for: its geometric middle (0 for bin 0)."""
    return 0.0 if number == 0 else 2 ** ((number - 0.5) / BINS_PER_DOUBLING)


@dataclass(slots=True)
class Tally:
    """One partition's share of a batch."""

    first_offset: int
    next_offset: int
    funnel: Counter[FunnelKey] = field(default_factory=Counter)
    histograms: Counter[HistogramKey] = field(default_factory=Counter)
    money: dict[str, Money] = field(default_factory=dict)

    def count_event(self, event: Event, logged_at_ms: int) -> None:
        """A payment's own event, by the hour of its command time (what the funnel counts),
        and a terminal one's latency."""
        if event.command_type in PAYMENT_COMMANDS and is_own_event(event):
            hour_ms = event.issued_at_ms // HOUR_MS * HOUR_MS
            self.funnel[(hour_ms, event.command_type, event.type)] += 1
            if event.type in TERMINAL_EVENTS:
                waited = latency_bin(logged_at_ms - event.issued_at_ms)
                self.histograms[(hour_ms, event.command_type, "latency", waited)] += 1

    def count_entry(self, entry: JournalEntry, logged_at_ms: int) -> None:
        """An entry's money sums, and the time to consistency of its payment's last one."""
        if is_final_entry(entry):
            hour_ms = entry.issued_at_ms // HOUR_MS * HOUR_MS
            waited = latency_bin(logged_at_ms - entry.issued_at_ms)
            self.histograms[(hour_ms, COMMAND_OF_KIND[entry.kind], "settled", waited)] += 1
        for line in entry.lines:
            before = self.money.get(line.currency, NO_MONEY)
            added = line_money(entry.phase, line)
            self.money[line.currency] = (
                before[0] + added[0], before[1] + added[1], before[2] + added[2],
                before[3] + added[3], before[4] + added[4], before[5] + added[5],
                before[6] + added[6],
            )  # fmt: skip


def tally_rows(topic: str, partition: int, tally: Tally) -> list[list[Any]]:
    """The store's rows of a tally (columns :data:`TALLY_COLUMNS`): its range (the row that
    names its partition), then its funnel counts, histograms and money sums, pooled over
    the topic's partitions (partition 0, no range): merges add them up across partitions,
    so a month's histograms stay one row per hour, kind and bin."""
    covered = tally.next_offset - tally.first_offset
    head = [topic, partition, at(0), "", "", "", 0, tally.first_offset, tally.next_offset]
    return [
        [*head, covered, 0, *NO_MONEY],
        *(
            [topic, POOLED, at(hour_ms), command, kind, "", 0, 0, 0, 0, count, *NO_MONEY]
            for (hour_ms, command, kind), count in sorted(tally.funnel.items())
        ),
        *(
            [topic, POOLED, at(hour_ms), command, measure, "", number, 0, 0, 0, count, *NO_MONEY]
            for (hour_ms, command, measure, number), count in sorted(tally.histograms.items())
        ),
        *(
            [topic, POOLED, at(0), "", "", currency, 0, 0, 0, 0, 0, *money]
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
        self._tally(at).count_event(event, at.logged_at_ms)

    def entry(self, entry: JournalEntry, at: Place) -> None:
        self.facts["ledger_lines"].extend(line_rows(entry, **at.where()))
        self._tally(at).count_entry(entry, at.logged_at_ms)

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
