"""Batch manifests: what replay needs to feed the core exactly the batches the workers ran.

A worker's batch covers several source partitions; the core runs once per partition, on
that partition's records of ``commands`` and ``legs`` in the order they were consumed,
with the directory as the worker's follower had read it and the partition's clock. For
each partition a batch touched, the worker writes one :class:`BatchManifest` in the batch's
own transaction to ``batches`` (keyed and partitioned by the source partition), so a
manifest exists exactly when its batch committed, and each partition of ``batches`` lists
its source partition's batches in the order they ran.

The output digest hashes the records the batch sent (journal entries, events, legs,
directory entries, dead letters) in order, as bytes: replay encodes its outputs with the
same serde and must find the same digest. Avro values are hashed without their 5-byte
header (a schema id is the registry's, not the content).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from paystream.ledger import Rules
from paystream.topology.avro import HEADER_SIZE, AvroSerde

__all__ = [
    "AVRO_OUTPUTS",
    "BatchManifest",
    "InputKind",
    "InputRun",
    "OutputDigest",
    "OutputHasher",
    "OutputKind",
    "decode_manifest",
    "encode_manifest",
    "manifest_from_record",
    "manifest_to_record",
    "runs_of",
]

InputKind: TypeAlias = Literal["commands", "legs"]
OutputKind: TypeAlias = Literal["ledger", "events", "legs", "directory", "dlq"]
AVRO_OUTPUTS: Final[frozenset[OutputKind]] = frozenset({"ledger", "events", "legs"})
_LENGTH: Final = struct.Struct(">q")
_NONE: Final = _LENGTH.pack(-1)


@dataclass(frozen=True, slots=True)
class InputRun:
    """Consecutive records of one input topic: offsets ``first_offset..last_offset``."""

    topic: InputKind
    first_offset: int
    last_offset: int
    records: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputDigest:
    journal_entries: int
    events: int
    legs: int
    directory_entries: int
    dead_letters: int
    sha256: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchManifest:
    partition: int
    worker: str
    core_version: str
    rules: Rules
    clock_before_ms: int
    runs: tuple[InputRun, ...]
    directory: tuple[tuple[int, int], ...]
    """(directory partition, next offset): every committed record before it was applied."""
    outputs: OutputDigest


def runs_of(inputs: Iterable[tuple[InputKind, int]]) -> tuple[InputRun, ...]:
    """The (topic, offset) of each input, in the order the core took them, as runs."""
    runs: list[InputRun] = []
    for topic, offset in inputs:
        last = runs[-1] if runs else None
        if last is not None and last.topic == topic and offset > last.last_offset:
            runs[-1] = InputRun(topic, last.first_offset, offset, last.records + 1)
        else:
            runs.append(InputRun(topic, offset, offset, 1))
    return tuple(runs)


class OutputHasher:
    """Counts and sha256 of the records a batch sent on one partition, in order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._counts: dict[OutputKind, int] = dict.fromkeys(
            ("ledger", "events", "legs", "directory", "dlq"), 0
        )

    def add(self, kind: OutputKind, key: bytes, value: bytes | None) -> None:
        if value is not None and kind in AVRO_OUTPUTS:
            value = value[HEADER_SIZE:]
        self._counts[kind] += 1
        self._hash.update(kind.encode())
        for part in (key, value):
            if part is None:
                self._hash.update(_NONE)
            else:
                self._hash.update(_LENGTH.pack(len(part)))
                self._hash.update(part)

    def digest(self) -> OutputDigest:
        counts = self._counts
        return OutputDigest(
            journal_entries=counts["ledger"], events=counts["events"], legs=counts["legs"],
            directory_entries=counts["directory"], dead_letters=counts["dlq"],
            sha256=self._hash.digest(),
        )  # fmt: skip


def manifest_to_record(manifest: BatchManifest) -> dict[str, Any]:
    outputs = manifest.outputs
    return {
        "partition": manifest.partition,
        "worker": manifest.worker,
        "core_version": manifest.core_version,
        "rules": {
            "retention_ms": manifest.rules.retention_ms,
            "future_skew_ms": manifest.rules.future_skew_ms,
            "amount_max_minor": manifest.rules.amount_max_minor,
        },
        "clock_before_ms": manifest.clock_before_ms,
        "runs": [
            {
                "topic": r.topic,
                "first_offset": r.first_offset,
                "last_offset": r.last_offset,
                "records": r.records,
            }
            for r in manifest.runs
        ],
        "directory": [{"partition": p, "next_offset": o} for p, o in manifest.directory],
        "outputs": {
            "journal_entries": outputs.journal_entries,
            "events": outputs.events,
            "legs": outputs.legs,
            "directory_entries": outputs.directory_entries,
            "dead_letters": outputs.dead_letters,
            "sha256": outputs.sha256,
        },
    }


def manifest_from_record(record: Mapping[str, Any]) -> BatchManifest:
    rules, outputs = record["rules"], record["outputs"]
    return BatchManifest(
        partition=record["partition"],
        worker=record["worker"],
        core_version=record["core_version"],
        rules=Rules(
            retention_ms=rules["retention_ms"],
            future_skew_ms=rules["future_skew_ms"],
            amount_max_minor=rules["amount_max_minor"],
        ),
        clock_before_ms=record["clock_before_ms"],
        runs=tuple(
            InputRun(r["topic"], r["first_offset"], r["last_offset"], r["records"])
            for r in record["runs"]
        ),
        directory=tuple((d["partition"], d["next_offset"]) for d in record["directory"]),
        outputs=OutputDigest(
            journal_entries=outputs["journal_entries"],
            events=outputs["events"],
            legs=outputs["legs"],
            directory_entries=outputs["directory_entries"],
            dead_letters=outputs["dead_letters"],
            sha256=bytes(outputs["sha256"]),
        ),
    )


def encode_manifest(serde: AvroSerde, manifest: BatchManifest) -> bytes:
    return serde.encode_record("batch_manifest", manifest_to_record(manifest))


def decode_manifest(serde: AvroSerde, data: bytes) -> BatchManifest:
    return manifest_from_record(serde.decode_record("batch_manifest", data))
