"""Every schema change is backward compatible: today's reader reads every old writer.

``schemas/history/<name>.v<N>.avsc`` are frozen copies of every published schema.
For each one, the static check (Avro resolution rules) must find nothing, and
data generated for the old writer must read with ``schemas/<name>.avsc``. The
latest history version must equal today's schema, so a change adds a version.
The batch manifest is also forward compatible: every old reader reads today's writer.
"""

from __future__ import annotations

import copy
import io
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from paystream.topology.avro import SCHEMA_DIR
from paystream.topology.compatibility import backward_incompatibilities

HISTORY_DIR = SCHEMA_DIR / "history"
SAMPLE_COUNT = 300
SEED = 20_260_101
_HISTORY_NAME = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>[1-9][0-9]*)\.avsc$")


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _history() -> list[tuple[str, int, Path]]:
    found = []
    for path in sorted(HISTORY_DIR.glob("*.avsc")):
        match = _HISTORY_NAME.match(path.name)
        assert match, f"history file name must be <name>.v<N>.avsc: {path.name}"
        found.append((match["name"], int(match["version"]), path))
    return found


def _current() -> dict[str, Path]:
    return {path.stem: path for path in sorted(SCHEMA_DIR.glob("*.avsc"))}


_LONG_MAX = 2**63 - 1
_INT_MAX = 2**31 - 1
_PRIMITIVES: dict[str, Any] = {
    "null": lambda rng: None,
    "boolean": lambda rng: rng.random() < 0.5,
    "int": lambda rng: rng.randint(-_INT_MAX - 1, _INT_MAX),
    "long": lambda rng: rng.randint(-_LONG_MAX - 1, _LONG_MAX),
    "float": lambda rng: rng.random(),
    "double": lambda rng: rng.random(),
    "bytes": lambda rng: rng.randbytes(rng.randint(0, 8)),
    "string": lambda rng: "".join(rng.choices("abcXYZ:@é", k=rng.randint(0, 8))),
}


def _type_name(schema: Any) -> str:
    if isinstance(schema, dict):
        return str(schema.get("name") or schema["type"])
    return str(schema)


def generate(schema: Any, rng: random.Random) -> Any:
    """A random datum for an expanded parsed schema; union branches in tuple notation,
    so every branch gets written (fastavro would pick the first empty record for ``{}``).
    """
    if isinstance(schema, list):
        branch = rng.choice(schema)
        return (_type_name(branch), generate(branch, rng))
    kind = schema["type"] if isinstance(schema, dict) else schema
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind](rng)
    if kind == "record":
        return {f["name"]: generate(f["type"], rng) for f in schema["fields"]}
    if kind == "enum":
        return rng.choice(schema["symbols"])
    if kind == "array":
        return [generate(schema["items"], rng) for _ in range(rng.randint(0, 3))]
    if kind == "map":
        return {str(i): generate(schema["values"], rng) for i in range(rng.randint(0, 3))}
    if kind == "fixed":
        return rng.randbytes(schema["size"])
    raise ValueError(f"cannot generate {kind!r}")


def data_incompatibilities(*, reader: Any, writer: Any, count: int = SAMPLE_COUNT) -> list[str]:
    """Write random data with ``writer``, read it with ``reader``; every failure found."""
    writer_parsed = parse_schema(copy.deepcopy(writer))
    reader_parsed = parse_schema(copy.deepcopy(reader))
    expanded = parse_schema(copy.deepcopy(writer), expand=True)
    rng = random.Random(SEED)
    failures = []
    for record in (generate(expanded, rng) for _ in range(count)):
        out = io.BytesIO()
        schemaless_writer(out, writer_parsed, record)
        out.seek(0)
        try:
            schemaless_reader(out, writer_parsed, reader_parsed)
        except Exception as error:  # any failure to read is an incompatibility
            failures.append(f"{type(error).__name__}: {error}")
    return failures


def incompatibilities(*, reader: Any, writer: Any) -> list[str]:
    """The check: static Avro resolution rules plus a data round trip."""
    return backward_incompatibilities(reader=reader, writer=writer) + data_incompatibilities(
        reader=reader, writer=writer
    )


HISTORY = _history()


def test_there_is_history() -> None:
    assert {name for name, _, _ in HISTORY} == set(_current())


@pytest.mark.parametrize(("name", "version", "path"), HISTORY, ids=[p.name for *_, p in HISTORY])
def test_current_reader_reads_every_old_writer(name: str, version: int, path: Path) -> None:
    current = _current()
    assert name in current, f"{path.name}: schemas/{name}.avsc is gone; readers of old data need it"
    assert incompatibilities(reader=_load(current[name]), writer=_load(path)) == []


FORWARD = ("batch_manifest",)
"""Payloads whose older readers must also read today's writer: a replay of an earlier
release reads manifests written since (it then refuses their newer core version)."""
FORWARD_HISTORY = [h for h in HISTORY if h[0] in FORWARD]


@pytest.mark.parametrize(
    ("name", "version", "path"), FORWARD_HISTORY, ids=[p.name for *_, p in FORWARD_HISTORY]
)
def test_every_old_reader_reads_the_current_writer(name: str, version: int, path: Path) -> None:
    assert incompatibilities(reader=_load(path), writer=_load(_current()[name])) == []


@pytest.mark.parametrize("name", sorted(_current()))
def test_every_current_schema_is_in_history(name: str) -> None:
    versions = sorted((v, p) for n, v, p in HISTORY if n == name)
    assert versions, f"schemas/{name}.avsc has no history: add schemas/history/{name}.v1.avsc"
    assert [v for v, _ in versions] == list(range(1, len(versions) + 1)), "versions have gaps"
    latest = versions[-1][1]
    form = to_parsing_canonical_form(parse_schema(_load(_current()[name])))
    assert to_parsing_canonical_form(parse_schema(_load(latest))) == form, (
        f"schemas/{name}.avsc changed: copy it to schemas/history/{name}.v{len(versions) + 1}.avsc"
    )


# --- the check can fail ---------------------------------------------------------------------


def _event() -> dict[str, Any]:
    return dict(_load(SCHEMA_DIR / "event.avsc"))


def _command() -> dict[str, Any]:
    return dict(_load(SCHEMA_DIR / "command.avsc"))


def _body(schema: dict[str, Any]) -> list[Any]:
    body: list[Any] = next(f for f in schema["fields"] if f["name"] == "body")["type"]
    return body


def _enum(schema: dict[str, Any], field: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in schema["fields"] if f["name"] == field)["type"]
    return found


def test_new_field_without_default_is_detected() -> None:
    newer = _event()
    newer["fields"].append({"name": "fee_minor", "type": "long"})
    static = backward_incompatibilities(reader=newer, writer=_event())
    assert static == ["$.fee_minor: new reader field without a default"]
    assert len(data_incompatibilities(reader=newer, writer=_event())) == SAMPLE_COUNT


def test_new_field_with_default_is_compatible() -> None:
    newer = _event()
    newer["fields"].append({"name": "fee_minor", "type": ["null", "long"], "default": None})
    assert incompatibilities(reader=newer, writer=_event()) == []


def test_removed_enum_symbol_is_detected() -> None:
    newer = _event()
    _enum(newer, "type")["symbols"].remove("Duplicate")
    assert backward_incompatibilities(reader=newer, writer=_event()) == [
        "$.type: reader enum lacks writer symbols ['Duplicate']",
        # previous_type names the same enum: its union no longer reads the writer's
        "$.previous_type|paystream.v1.EventType: no branch of the reader union reads"
        " paystream.v1.EventType",
    ]
    assert data_incompatibilities(reader=newer, writer=_event()) != []


def test_added_enum_symbol_is_compatible() -> None:
    newer = _event()
    _enum(newer, "type")["symbols"].append("Returned")
    assert incompatibilities(reader=newer, writer=_event()) == []


def test_removed_command_type_is_detected() -> None:
    newer = _command()
    body = _body(newer)
    body[:] = [branch for branch in body if branch["name"] != "CloseAccount"]
    problems = backward_incompatibilities(reader=newer, writer=_command())
    assert problems == [
        "$.body|paystream.v1.CloseAccount: no branch of the reader union reads "
        "paystream.v1.CloseAccount"
    ]
    assert data_incompatibilities(reader=newer, writer=_command()) != []


def test_added_command_type_is_compatible() -> None:
    newer = _command()
    _body(newer).append({"type": "record", "name": "Payout", "fields": []})
    assert incompatibilities(reader=newer, writer=_command()) == []


def test_narrowed_type_is_detected_and_widening_is_not() -> None:
    narrower = _event()
    next(f for f in narrower["fields"] if f["name"] == "issued_at_ms")["type"] = "int"
    assert backward_incompatibilities(reader=narrower, writer=_event()) == [
        "$.issued_at_ms: reader int cannot read writer long"
    ]
    assert backward_incompatibilities(reader=_event(), writer=narrower) == []


def test_renamed_record_is_detected_unless_aliased() -> None:
    renamed = _event()
    renamed["name"] = "StatusEvent"
    assert backward_incompatibilities(reader=renamed, writer=_event()) != []
    renamed["aliases"] = ["Event"]
    assert incompatibilities(reader=renamed, writer=_event()) == []


def test_optional_field_made_required_is_detected() -> None:
    newer = _event()
    field = next(f for f in newer["fields"] if f["name"] == "currency")
    field["type"], field["default"] = "string", ""
    problems = backward_incompatibilities(reader=newer, writer=_event())
    assert problems == ["$.currency|null: reader string cannot read writer null"]


def test_generated_data_covers_every_union_branch_and_enum_symbol() -> None:
    rng = random.Random(SEED)
    schema = parse_schema(_command(), expand=True)
    written = {generate(schema, rng)["body"][0] for _ in range(SAMPLE_COUNT)}
    assert written == {f"paystream.v1.{branch['name']}" for branch in _body(_command())}
    event = parse_schema(_event(), expand=True)
    types = {generate(event, rng)["type"] for _ in range(SAMPLE_COUNT)}
    assert types == set(_enum(_event(), "type")["symbols"])
