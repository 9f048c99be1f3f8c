"""The compiled Avro writers write what fastavro writes, for any value of every schema
paystream writes; values a schema cannot carry are refused, never written wrongly."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from paystream.topology.avro import SCHEMA_DIR, SCHEMA_FILES
from paystream.topology.avro_writer import (
    INT_MAX,
    INT_MIN,
    LONG_MAX,
    LONG_MIN,
    AvroWriteError,
    compile_writer,
)

SCHEMAS = {
    kind: parse_schema(json.loads((SCHEMA_DIR / name).read_text()))
    for kind, name in SCHEMA_FILES.items()
}


def values(schema: Any, named: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Any value ``schema`` carries, in fastavro's form (tuple notation for record unions);
    ``named``: the named types seen so far (a later field may name an earlier enum)."""
    named = {} if named is None else named
    if isinstance(schema, str) and schema in named:
        return values(named[schema], named)
    if isinstance(schema, dict) and "name" in schema:
        named[schema["name"]] = schema
    if isinstance(schema, list):
        if all(isinstance(b, dict) and b.get("type") == "record" for b in schema):
            return st.one_of([st.tuples(st.just(b["name"]), values(b, named)) for b in schema])
        return st.one_of([values(b, named) for b in schema])
    kind = schema if isinstance(schema, str) else schema["type"]
    simple: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(INT_MIN, INT_MAX),
        "long": st.integers(LONG_MIN, LONG_MAX),
        "string": st.text(max_size=40),
    }
    if kind in simple:
        return simple[kind]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(values(schema["items"], named), max_size=4)
    if kind == "record":
        fields = {f["name"]: values(f["type"], named) for f in schema["fields"]}
        return st.fixed_dictionaries(fields)
    raise NotImplementedError(kind)


def fastavro_bytes(schema: Any, value: Any) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, value)
    return out.getvalue()


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_compiled_writer_writes_fastavros_bytes(kind: str, data: st.DataObject) -> None:
    schema = SCHEMAS[kind]
    value = data.draw(values(schema))
    out = bytearray()
    compile_writer(schema)(value, out)
    assert bytes(out) == fastavro_bytes(schema, value)


def test_a_missing_field_takes_its_default_as_in_fastavro() -> None:
    schema = SCHEMAS["event"]
    event = {
        "event_id": "e", "payment_id": "p", "type": "Completed", "command_type": "Transfer",
        "partner_id": "partner", "account_id": "a", "issued_at_ms": 5,
    }  # fmt: skip
    out = bytearray()
    compile_writer(schema)(event, out)
    assert bytes(out) == fastavro_bytes(schema, event)


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [
        ("event", "issued_at_ms", 2**63),  # beyond a long
        ("event", "issued_at_ms", -(2**63) - 1),
        ("event", "type", "Exploded"),  # not a symbol
        ("leg", None, ("paystream.v1.Nothing", {})),  # not a branch
        ("leg", None, {"transfer_id": "t"}),  # a record union without its name
    ],
)
def test_values_a_schema_cannot_carry_are_refused(kind: str, path: str | None, bad: Any) -> None:
    schema = SCHEMAS[kind]
    value = bad
    if path is not None:
        value = {"event_id": "e", "payment_id": "p", "type": "Completed", "command_type": "T",
                 "partner_id": "p", "account_id": "a", "issued_at_ms": 0, path: bad}  # fmt: skip
    with pytest.raises(AvroWriteError):
        compile_writer(schema)(value, bytearray())


def test_a_schema_with_types_it_does_not_compile_is_refused_when_compiled() -> None:
    with pytest.raises(NotImplementedError, match="map"):
        compile_writer(parse_schema({"type": "map", "values": "long"}))
    with pytest.raises(NotImplementedError, match="union"):
        compile_writer(parse_schema(["null", "long", "string"]))
