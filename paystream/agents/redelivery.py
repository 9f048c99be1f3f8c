"""Drop events faust hands over again after this process already committed them.

Seen here: right after a table recovery, faust delivered a source partition's
messages again from an older position (the fetcher had resumed during
recovery, then the stream was sought back), so one worker processed the same
command twice, 0.4 s apart, in one consumer generation. An event whose offset
is below what this process itself committed for that partition, in the same
generation, is such a repeat. Nothing else is dropped: a batch whose commit
did not happen (the partition was revoked meanwhile) is processed again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from faust.types import TP, EventT

logger = logging.getLogger(__name__)


class RedeliveryFilter:
    def __init__(self) -> None:
        self._committed: dict[TP, tuple[int, int]] = {}  # tp -> (generation, next offset)

    def fresh(self, events: Sequence[EventT[bytes]]) -> list[EventT[bytes]]:
        """The events not yet committed by this process in their generation."""
        kept = [event for event in events if not self._committed_before(event)]
        if len(kept) != len(events):
            logger.warning("dropped %d events delivered twice", len(events) - len(kept))
        return kept

    def _committed_before(self, event: EventT[bytes]) -> bool:
        message = event.message
        generation, next_offset = self._committed.get(message.tp, (-1, -1))
        return generation == _generation(event) and message.offset < next_offset

    def on_committed(self, events: Sequence[EventT[bytes]], offsets: Mapping[TP, int]) -> None:
        """Remember ``offsets`` (next offset per partition) as committed by this process."""
        generations = {event.message.tp: _generation(event) for event in events}
        for tp, offset in offsets.items():
            self._committed[tp] = (generations[tp], offset)


def _generation(event: EventT[bytes]) -> int:
    return int(event.message.generation_id or 0)
