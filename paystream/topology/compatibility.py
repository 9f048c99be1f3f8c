"""Backward compatibility of Avro schemas: can a new reader read an old writer?

The rules are Avro's schema resolution (the same ones the Confluent registry's
BACKWARD check applies): records match by name or reader alias; a reader field
the writer lacks needs a default; the reader's enum needs every writer symbol
(or a default); every branch of a writer union must be readable; primitives
may only widen (int -> long -> float -> double, string <-> bytes).
"""

from __future__ import annotations

from typing import Any, Final

from fastavro import parse_schema

__all__ = ["backward_incompatibilities"]

_PROMOTIONS: Final[dict[str, frozenset[str]]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}
_DEPTH_MAX: Final = 64
"""Deepest nesting checked; recursive schemas are not used in paystream."""


def backward_incompatibilities(*, reader: Any, writer: Any) -> list[str]:
    """Every reason data written with ``writer`` cannot be read with ``reader``.

    Both are Avro schemas as JSON values (``json.loads`` of an ``.avsc``); an
    empty list means compatible.
    """
    problems: list[str] = []
    _check(_expand(reader), _expand(writer), "$", problems, 0)
    return problems


def _expand(schema: Any) -> Any:
    return parse_schema(schema, expand=True)


def _type_of(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def _check(reader: Any, writer: Any, path: str, problems: list[str], depth: int) -> None:
    if depth > _DEPTH_MAX:
        raise ValueError(f"{path}: schema nested deeper than {_DEPTH_MAX}")
    if isinstance(writer, list):
        for branch in writer:
            _check(reader, branch, f"{path}|{_label(branch)}", problems, depth + 1)
    elif isinstance(reader, list):
        if not any(_compatible(branch, writer, path, depth) for branch in reader):
            problems.append(f"{path}: no branch of the reader union reads {_label(writer)}")
    else:
        _check_single(reader, writer, path, problems, depth)


def _check_single(reader: Any, writer: Any, path: str, problems: list[str], depth: int) -> None:
    r_type, w_type = _type_of(reader), _type_of(writer)
    if r_type != w_type:
        if r_type not in _PROMOTIONS.get(w_type, frozenset()):
            problems.append(f"{path}: reader {r_type} cannot read writer {w_type}")
    elif r_type == "record":
        _check_record(reader, writer, path, problems, depth)
    elif r_type == "enum":
        _check_enum(reader, writer, path, problems)
    elif r_type == "array":
        _check(reader["items"], writer["items"], f"{path}[]", problems, depth + 1)
    elif r_type == "map":
        _check(reader["values"], writer["values"], f"{path}{{}}", problems, depth + 1)
    elif r_type == "fixed":
        _check_named(reader, writer, path, problems)
        if reader["size"] != writer["size"]:
            problems.append(f"{path}: fixed size {writer['size']} read as {reader['size']}")


def _compatible(reader: Any, writer: Any, path: str, depth: int) -> bool:
    trial: list[str] = []
    _check(reader, writer, path, trial, depth + 1)
    return not trial


def _check_record(reader: Any, writer: Any, path: str, problems: list[str], depth: int) -> None:
    if not _check_named(reader, writer, path, problems):
        return
    writer_fields = {field["name"]: field for field in writer["fields"]}
    for field in reader["fields"]:
        names = [field["name"], *field.get("aliases", ())]
        found = next((writer_fields[n] for n in names if n in writer_fields), None)
        field_path = f"{path}.{field['name']}"
        if found is not None:
            _check(field["type"], found["type"], field_path, problems, depth + 1)
        elif "default" not in field:
            problems.append(f"{field_path}: new reader field without a default")


def _check_enum(reader: Any, writer: Any, path: str, problems: list[str]) -> None:
    if not _check_named(reader, writer, path, problems):
        return
    missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
    if missing and "default" not in reader:
        problems.append(f"{path}: reader enum lacks writer symbols {missing}")


def _check_named(reader: Any, writer: Any, path: str, problems: list[str]) -> bool:
    name = reader["name"]
    namespace = name.rpartition(".")[0]
    aliases = {
        a if "." in a or not namespace else f"{namespace}.{a}" for a in reader.get("aliases", ())
    }
    if writer["name"] == name or writer["name"] in aliases:
        return True
    problems.append(f"{path}: writer {writer['name']} read as {name}")
    return False


def _label(schema: Any) -> str:
    if isinstance(schema, dict) and "name" in schema:
        return str(schema["name"])
    return _type_of(schema)
