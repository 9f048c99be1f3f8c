"""The directory's records applied to a dict (pure): what the workers' follower does and what
replay does to rebuild the directory a batch saw.

A record that is not a directory entry (a tombstone, bytes that do not decode, an entry under
another account's key) is skipped: client-reachable bytes on a topic must not stop every
worker. A bad record is the newest under its key, so the account is forgotten, as a worker
restored after compaction would forget it (unknown -> the destination's partition decides).
"""

from __future__ import annotations

import contextlib
from typing import Final, Literal

from paystream.ledger import DirectoryEntry
from paystream.tables import codecs

__all__ = ["SKIP_REASONS", "SkipReason", "apply", "classify"]

SkipReason = Literal["tombstone", "undecodable", "key_mismatch"]
SKIP_REASONS: Final[tuple[SkipReason, ...]] = ("tombstone", "undecodable", "key_mismatch")


def classify(key: bytes | None, value: bytes | None) -> DirectoryEntry | SkipReason:
    """The entry a directory record carries, or why it is skipped."""
    if not value:
        return "tombstone"
    try:
        entry = codecs.decode_directory_entry(value)
    except codecs.CodecError:
        return "undecodable"
    if key != codecs.encode_account_key(entry.account_id):
        return "key_mismatch"
    return entry


def apply(
    entries: dict[str, DirectoryEntry], key: bytes | None, value: bytes | None
) -> SkipReason | None:
    """One record onto ``entries``; why it was skipped, if it was."""
    result = classify(key, value)
    if isinstance(result, DirectoryEntry):
        entries[result.account_id] = result
        return None
    if key is not None:
        with contextlib.suppress(codecs.CodecError):
            entries.pop(codecs.decode_account_key(key), None)
    return result
