"""Replay snapshots: every partition's state after its first N batches, in one file with
its digest, so a long log need not be replayed from the beginning.

The file is an Avro object container (fastavro): the rows are the partitions' accounts and
idempotency records in the workers' own table encoding (:mod:`paystream.tables.codecs`),
sorted; the header's metadata holds each partition's position (batches replayed, the
``batches`` offset of the last one), log clock and journal chain head, and the sha256 over
all of it. Loading recomputes the digest and refuses a file that does not match it; replay
refuses a snapshot whose positions are not manifests of the log it reads.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import fastavro

from paystream.ledger import (
    CORE_VERSION,
    Account,
    IdempotencyKey,
    IdempotencyRecord,
    Payout,
    PayoutProfile,
    ScreeningRules,
)
from paystream.tables import codecs, payout_codecs

__all__ = ["PartitionState", "Snapshot", "SnapshotError", "load_snapshot", "write_snapshot"]

FORMAT: Final = "paystream.replay-snapshot.v1"
_METADATA_KEY: Final = "paystream.snapshot"
_LENGTH: Final = struct.Struct(">q")
_ROW_SCHEMA: Final = fastavro.parse_schema({
    "type": "record", "name": "SnapshotRow", "namespace": "paystream.v1",
    "doc": "One table row of a partition in a replay snapshot (the workers' table codecs).",
    "fields": [
        {"name": "partition", "type": "int"},
        {"name": "table", "type": {"type": "enum", "name": "SnapshotTable",
                                   "symbols": ["balances", "idempotency", "payouts"]}},
        {"name": "key", "type": "bytes"},
        {"name": "value", "type": "bytes"},
    ],
})  # fmt: skip
Table = Literal["balances", "idempotency", "payouts"]


class SnapshotError(ValueError):
    """A snapshot file that is not one, or whose digest does not match its content."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionState:
    """A partition after its first ``batches`` manifests."""

    batches: int
    last_offset: int
    """The ``batches`` offset of the last manifest replayed (-1: none)."""
    clock_ms: int
    chain: bytes
    accounts: Mapping[str, Account]
    idempotency: Mapping[IdempotencyKey, IdempotencyRecord]
    payouts: Mapping[str, Payout] = field(default_factory=dict)
    profiles: Mapping[str, PayoutProfile] = field(default_factory=dict)
    screening: ScreeningRules = field(default_factory=ScreeningRules)


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    partitions: Mapping[int, PartitionState]
    core_version: str = CORE_VERSION
    until_ms: int | None = None
    """The manifests' time it was taken at (None: the log's end)."""

    @property
    def sha256(self) -> str:
        return _digest(self.core_version, self.until_ms, self._positions(), self._rows())

    def _positions(self) -> dict[str, dict[str, Any]]:
        return {
            str(p): {"batches": s.batches, "last_offset": s.last_offset, "clock_ms": s.clock_ms,
                     "chain": s.chain.hex()}
            for p, s in sorted(self.partitions.items())
        }  # fmt: skip

    def _rows(self) -> Iterator[tuple[int, Table, bytes, bytes]]:
        for partition, state in sorted(self.partitions.items()):
            accounts = sorted(
                (codecs.encode_account_key(a), codecs.encode_account(v))
                for a, v in state.accounts.items()
            )
            for key, value in accounts:
                yield partition, "balances", key, value
            records = sorted(
                (codecs.encode_idempotency_key(k), codecs.encode_idempotency_record(v))
                for k, v in state.idempotency.items()
            )
            for key, value in records:
                yield partition, "idempotency", key, value
            for key, value in sorted(_payout_rows(state)):
                yield partition, "payouts", key, value


def _payout_rows(state: PartitionState) -> Iterator[tuple[bytes, bytes]]:
    for payout_id, payout in state.payouts.items():
        yield payout_codecs.payout_key(payout_id), payout_codecs.encode_payout(payout)
    for account_id, profile in state.profiles.items():
        yield payout_codecs.profile_key(account_id), payout_codecs.encode_profile(profile)
    if state.screening != ScreeningRules():
        yield payout_codecs.RULES_KEY, payout_codecs.encode_rules(state.screening)


def write_snapshot(snapshot: Snapshot, path: Path) -> str:
    """Write ``snapshot`` to ``path`` (replaced atomically); its sha256."""
    rows = list(snapshot._rows())
    digest = _digest(snapshot.core_version, snapshot.until_ms, snapshot._positions(), iter(rows))
    header = {
        "format": FORMAT, "core_version": snapshot.core_version, "until_ms": snapshot.until_ms,
        "partitions": snapshot._positions(), "sha256": digest,
    }  # fmt: skip
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        records = ({"partition": p, "table": t, "key": k, "value": v} for p, t, k, v in rows)
        fastavro.writer(out, _ROW_SCHEMA, records, codec="deflate",
                        metadata={_METADATA_KEY: json.dumps(header, sort_keys=True)})  # fmt: skip
    partial.replace(path)
    return digest


def load_snapshot(path: Path) -> Snapshot:
    """The snapshot in ``path``; :class:`SnapshotError` unless its digest matches."""
    try:
        with path.open("rb") as found:
            reader = fastavro.reader(found)
            header = json.loads(reader.metadata[_METADATA_KEY])
            rows = [_row(r) for r in reader]
    except (OSError, KeyError, ValueError, EOFError) as error:
        raise SnapshotError(f"{path}: not a replay snapshot ({error})") from error
    if header.get("format") != FORMAT:
        raise SnapshotError(f"{path}: format {header.get('format')!r}, expected {FORMAT}")
    digest = _digest(header["core_version"], header["until_ms"], header["partitions"], iter(rows))
    if digest != header["sha256"]:
        raise SnapshotError(f"{path}: content sha256 {digest}, the file says {header['sha256']}")
    return Snapshot(
        partitions=_states(header["partitions"], rows), core_version=header["core_version"],
        until_ms=header["until_ms"],
    )  # fmt: skip


def _row(record: Any) -> tuple[int, Table, bytes, bytes]:
    return record["partition"], record["table"], record["key"], record["value"]


def _states(
    positions: Mapping[str, Mapping[str, Any]], rows: list[tuple[int, Table, bytes, bytes]]
) -> dict[int, PartitionState]:
    accounts: dict[int, dict[str, Account]] = {int(p): {} for p in positions}
    records: dict[int, dict[IdempotencyKey, IdempotencyRecord]] = {int(p): {} for p in positions}
    payout_rows: dict[int, list[tuple[bytes, bytes]]] = {int(p): [] for p in positions}
    for partition, table, key, value in rows:
        if table == "balances":
            accounts[partition][codecs.decode_account_key(key)] = codecs.decode_account(value)
        elif table == "payouts":
            payout_rows[partition].append((key, value))
        else:
            records[partition][codecs.decode_idempotency_key(key)] = (
                codecs.decode_idempotency_record(value)
            )
    return {
        int(p): PartitionState(
            batches=int(s["batches"]), last_offset=int(s["last_offset"]),
            clock_ms=int(s["clock_ms"]), chain=bytes.fromhex(s["chain"]),
            accounts=accounts[int(p)], idempotency=records[int(p)],
            **_payout_state(payout_rows[int(p)]),
        )
        for p, s in positions.items()
    }  # fmt: skip


def _payout_state(rows: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """A partition's payouts, profiles and rules from its ``payouts`` rows (by key kind)."""
    payouts: dict[str, Payout] = {}
    profiles: dict[str, PayoutProfile] = {}
    screening = ScreeningRules()
    for key, value in rows:
        if key == payout_codecs.RULES_KEY:
            screening = payout_codecs.decode_rules(value)
        elif key.startswith(payout_codecs.payout_key("")):
            payouts[key[1:].decode("utf-8")] = payout_codecs.decode_payout(value)
        else:
            profiles[key[1:].decode("utf-8")] = payout_codecs.decode_profile(value)
    return {"payouts": payouts, "profiles": profiles, "screening": screening}


def _digest(
    core_version: str,
    until_ms: int | None,
    positions: Mapping[str, Any],
    rows: Iterator[tuple[int, Table, bytes, bytes]],
) -> str:
    digest = hashlib.sha256()
    head = {"core_version": core_version, "until_ms": until_ms, "partitions": positions}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for partition, table, key, value in rows:
        digest.update(f"{partition}:{table}".encode())
        for part in (key, value):
            digest.update(_LENGTH.pack(len(part)))
            digest.update(part)
    return digest.hexdigest()
