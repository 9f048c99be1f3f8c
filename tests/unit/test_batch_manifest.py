"""Batch manifests carry the rules a batch ran under, the amount limit included."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_writer

from paystream.ledger import AMOUNT_MAX_MINOR, Rules
from paystream.topology.avro import SCHEMA_DIR, AvroSerde
from paystream.topology.manifest import (
    BatchManifest,
    OutputHasher,
    decode_manifest,
    encode_manifest,
    manifest_from_record,
    manifest_to_record,
    runs_of,
)
from paystream.topology.registry import FileSchemaRegistry

RULES = Rules(retention_ms=3_600_000, future_skew_ms=1_000, amount_max_minor=50_000)


def manifest(rules: Rules = RULES) -> BatchManifest:
    return BatchManifest(
        partition=2, worker="paystream-ledger-w1", core_version="2", rules=rules,
        clock_before_ms=7, runs=runs_of([("commands", 4), ("legs", 2)]), directory=((0, 12),),
        outputs=OutputHasher().digest(),
    )  # fmt: skip


def test_the_amount_limit_survives_the_avro_round_trip(tmp_path: Path) -> None:
    serde = AvroSerde(FileSchemaRegistry(tmp_path / "registry.json"))
    decoded = decode_manifest(serde, encode_manifest(serde, manifest()))
    assert decoded == manifest()
    assert decoded.rules.amount_max_minor == 50_000


def test_the_record_names_every_rule() -> None:
    record = manifest_to_record(manifest())
    assert record["rules"] == {
        "retention_ms": 3_600_000,
        "future_skew_ms": 1_000,
        "amount_max_minor": 50_000,
    }
    assert manifest_from_record(record) == manifest()


def test_a_manifest_written_before_the_limit_reads_with_no_limit(tmp_path: Path) -> None:
    """A v1 writer (no ``amount_max_minor``): the batch ran without a limit, and replay
    must run it so."""
    registry = FileSchemaRegistry(tmp_path / "registry.json")
    v1 = json.loads((SCHEMA_DIR / "history" / "batch_manifest.v1.avsc").read_text())
    schema_id = registry.register("batches-value", json.dumps(v1))
    old = manifest_to_record(manifest(Rules(retention_ms=3_600_000, future_skew_ms=1_000)))
    del old["rules"]["amount_max_minor"]
    old["core_version"] = "1"
    decoded = decode_manifest(AvroSerde(registry), _frame(schema_id, v1, old))
    assert decoded.rules == Rules(retention_ms=3_600_000, future_skew_ms=1_000)
    assert decoded.rules.amount_max_minor == AMOUNT_MAX_MINOR


def _frame(schema_id: int, schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    schemaless_writer(out, parse_schema(schema), record)
    return out.getvalue()
