"""The file-backed schema registry: Confluent's id semantics, safe across processes."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from fastavro.schema import UnknownType

from paystream.topology.avro import SCHEMA_DIR
from paystream.topology.registry import (
    FILE_REGISTRY_NAME,
    FileSchemaRegistry,
    SchemaNotFound,
    canonical_form,
    registry_from_url,
)

PROCESS_COUNT = 6
EXTRA_SCHEMA_COUNT = 40
CONCURRENCY_TIMEOUT_S = 60


def _record(name: str, *fields: str) -> str:
    return json.dumps(
        {"type": "record", "name": name, "fields": [{"name": f, "type": "long"} for f in fields]}
    )


SCHEMAS = {path.stem: path.read_text() for path in sorted(SCHEMA_DIR.glob("*.avsc"))}
MANY_SCHEMAS = {**SCHEMAS, **{f"r{i}": _record(f"R{i}", "a") for i in range(EXTRA_SCHEMA_COUNT)}}


def test_same_schema_same_id(tmp_path: Path) -> None:
    registry = FileSchemaRegistry(tmp_path / "r.json")
    first = registry.register("commands-value", SCHEMAS["command"])
    assert registry.register("commands-value", SCHEMAS["command"]) == first


def test_same_canonical_form_same_id(tmp_path: Path) -> None:
    registry = FileSchemaRegistry(tmp_path / "r.json")
    compact = json.dumps(json.loads(SCHEMAS["event"]), separators=(",", ":"))
    without_docs = json.loads(SCHEMAS["event"])
    del without_docs["doc"]
    first = registry.register("events-value", SCHEMAS["event"])
    assert registry.register("events-value", compact) == first
    assert registry.register("events-value", json.dumps(without_docs)) == first


def test_different_schemas_get_sequential_ids(tmp_path: Path) -> None:
    registry = FileSchemaRegistry(tmp_path / "r.json")
    ids = [registry.register(f"{name}-value", text) for name, text in SCHEMAS.items()]
    assert ids == list(range(1, len(SCHEMAS) + 1))
    assert registry.register("x-value", _record("X", "a")) == len(SCHEMAS) + 1
    assert registry.register("x-value", _record("X", "a", "b")) == len(SCHEMAS) + 2


def test_ids_are_global_across_subjects(tmp_path: Path) -> None:
    registry = FileSchemaRegistry(tmp_path / "r.json")
    events = registry.register("events-value", SCHEMAS["event"])
    assert registry.register("partner.p1-value", SCHEMAS["event"]) == events


def test_schema_for_id_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "data" / "r.json"
    schema_id = FileSchemaRegistry(path).register("legs-value", SCHEMAS["leg"])
    reopened = FileSchemaRegistry(path)
    assert reopened.schema_for_id(schema_id) == SCHEMAS["leg"]
    assert reopened.register("legs-value", SCHEMAS["leg"]) == schema_id


def test_another_process_registration_is_seen(tmp_path: Path) -> None:
    reader = FileSchemaRegistry(tmp_path / "r.json")
    with pytest.raises(SchemaNotFound):
        reader.schema_for_id(1)
    FileSchemaRegistry(tmp_path / "r.json").register("legs-value", SCHEMAS["leg"])
    assert canonical_form(reader.schema_for_id(1)) == canonical_form(SCHEMAS["leg"])


def test_unknown_id(tmp_path: Path) -> None:
    registry = FileSchemaRegistry(tmp_path / "r.json")
    registry.register("legs-value", SCHEMAS["leg"])
    with pytest.raises(SchemaNotFound):
        registry.schema_for_id(99)


def test_invalid_schema_is_refused(tmp_path: Path) -> None:
    registry = FileSchemaRegistry(tmp_path / "r.json")
    with pytest.raises(UnknownType):
        registry.register("x-value", _record("X", "a").replace('"long"', '"lng"'))
    assert not registry.path.exists()


def test_registry_from_url(tmp_path: Path) -> None:
    registry = registry_from_url(None, tmp_path)
    assert isinstance(registry, FileSchemaRegistry)
    assert registry.path == tmp_path / FILE_REGISTRY_NAME
    with pytest.raises(ValueError, match="http"):
        registry_from_url("ftp://registry", tmp_path)


def _register_all(
    path: str,
    order: list[str],
    start: Any,
    results: multiprocessing.Queue[dict[str, int]],
) -> None:
    registry = FileSchemaRegistry(path)
    start.wait(CONCURRENCY_TIMEOUT_S)  # all processes register at the same moment
    results.put({name: registry.register(f"{name}-value", MANY_SCHEMAS[name]) for name in order})


def test_processes_registering_concurrently_agree(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[dict[str, int]] = context.Queue()
    start = context.Barrier(PROCESS_COUNT)
    names = list(MANY_SCHEMAS)
    path = str(tmp_path / "r.json")
    processes = [
        context.Process(target=_register_all, args=(path, names[i:] + names[:i], start, results))
        for i in range(0, PROCESS_COUNT * 7, 7)
    ]
    for process in processes:
        process.start()
    answers = [results.get(timeout=CONCURRENCY_TIMEOUT_S) for _ in processes]
    for process in processes:
        process.join(timeout=CONCURRENCY_TIMEOUT_S)
        assert process.exitcode == 0
    assert all(answer == answers[0] for answer in answers)
    assert sorted(answers[0].values()) == list(range(1, len(MANY_SCHEMAS) + 1))
    stored = FileSchemaRegistry(path)
    for name, schema_id in answers[0].items():
        assert stored.schema_for_id(schema_id) == MANY_SCHEMAS[name]
