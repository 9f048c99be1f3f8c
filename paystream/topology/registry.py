"""Schema registries: where Avro schema ids come from.

A real Confluent Schema Registry when a URL is configured, otherwise a JSON file
under the data directory that several processes on one machine share. Both give
Confluent's semantics: ids are global, the same schema (by Avro parsing
canonical form) gets the same id under any subject, and ids never change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from paystream.durable import write_atomically

__all__ = [
    "FILE_REGISTRY_NAME",
    "SCHEMA_COUNT_MAX",
    "ConfluentSchemaRegistry",
    "FileSchemaRegistry",
    "SchemaNotFound",
    "SchemaRegistry",
    "SubjectCatalog",
    "canonical_form",
    "registry_from_url",
]

FILE_REGISTRY_NAME: Final = "schema-registry.json"
"""File name of the file-backed registry inside the data directory."""

SCHEMA_COUNT_MAX: Final = 10_000
"""Most schemas the file registry holds; a runaway registration loop stops here."""

_FILE_FORMAT: Final = 1
_HTTP_NOT_FOUND: Final = 404


class SchemaNotFound(LookupError):
    """No schema has this id (an operating error for the message that carries it)."""


class SubjectCatalog(Protocol):
    """A registry that also lists a subject's versions (served to partners read-only)."""

    def subject_versions(self, subject: str) -> list[tuple[int, int]]: ...

    def schema_for_id(self, schema_id: int) -> str: ...


class SchemaRegistry(Protocol):
    """Registers schemas under subjects and looks them up by global id."""

    def register(self, subject: str, schema_str: str) -> int:
        """Return the id of ``schema_str`` under ``subject``, registering it if new."""
        ...

    def schema_for_id(self, schema_id: int) -> str:
        """Return the schema text with this id; raise ``SchemaNotFound`` if none."""
        ...


def canonical_form(schema_str: str) -> str:
    """Avro parsing canonical form: equal iff two schemas encode data alike."""
    return str(to_parsing_canonical_form(parse_schema(json.loads(schema_str))))


def registry_from_url(
    url: str | None, data_dir: Path | str
) -> FileSchemaRegistry | ConfluentSchemaRegistry:
    """A Confluent registry at ``http(s)://…``, else the file registry in ``data_dir``."""
    if not url:
        return FileSchemaRegistry(Path(data_dir) / FILE_REGISTRY_NAME)
    if url.startswith(("http://", "https://")):
        return ConfluentSchemaRegistry(url)
    raise ValueError(f"schema registry url must be http(s)://…, got {url!r}")


class MemorySchemaRegistry:
    """Schemas held in memory, by id: those a log file carries (``audit.log_file``), so
    records written under another registry's ids decode without it. A schema registered
    again gets the id of a schema with the same canonical form, if it holds one."""

    def __init__(self, schemas: Mapping[int, str]) -> None:
        self._schemas = dict(schemas)
        self._ids = {canonical_form(text): schema_id for schema_id, text in self._schemas.items()}

    def register(self, subject: str, schema_str: str) -> int:
        form = canonical_form(schema_str)
        found = self._ids.get(form)
        if found is None:
            found = max(self._schemas, default=0) + 1
            self._schemas[found], self._ids[form] = schema_str, found
        return found

    def schema_for_id(self, schema_id: int) -> str:
        found = self._schemas.get(schema_id)
        if found is None:
            raise SchemaNotFound(f"no schema with id {schema_id} in this file")
        return found


class FileSchemaRegistry:
    """A JSON file of schemas and subjects, safe for several processes at once.

    Writers serialise on an ``fcntl`` lock next to the file and replace the file
    atomically (write a temporary file, fsync, rename), so readers never see a
    partial file and need no lock. Ids are assigned 1, 2, 3… in registration
    order. Lookups are cached in memory; an id, once assigned, never changes.
    """

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._lock_path = self._path.with_name(self._path.name + ".lock")
        self._schema_by_id: dict[int, str] = {}
        self._id_by_subject_form: dict[tuple[str, str], int] = {}

    @property
    def path(self) -> Path:
        return self._path

    def register(self, subject: str, schema_str: str) -> int:
        form = canonical_form(schema_str)
        cached = self._id_by_subject_form.get((subject, form))
        if cached is not None:
            return cached
        with self._locked():
            state = self._read_state()
            schema_id, changed = _register_in_state(state, subject, schema_str, form)
            if changed:
                self._write_state(state)
        self._remember(state)
        return schema_id

    def schema_for_id(self, schema_id: int) -> str:
        cached = self._schema_by_id.get(schema_id)
        if cached is not None:
            return cached
        self._remember(self._read_state())
        found = self._schema_by_id.get(schema_id)
        if found is None:
            raise SchemaNotFound(f"no schema with id {schema_id} in {self._path}")
        return found

    def subject_versions(self, subject: str) -> list[tuple[int, int]]:
        """(version, schema id) of ``subject``, oldest first; versions count from 1."""
        ids = self._read_state()["subjects"].get(subject, [])
        return [(version, int(schema_id)) for version, schema_id in enumerate(ids, start=1)]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _read_state(self) -> dict[str, Any]:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"format": _FILE_FORMAT, "schemas": [], "subjects": {}}
        state: dict[str, Any] = json.loads(text)
        if state.get("format") != _FILE_FORMAT:
            raise ValueError(f"{self._path}: unknown registry file format {state.get('format')!r}")
        return state

    def _write_state(self, state: Mapping[str, Any]) -> None:
        write_atomically(self._path, json.dumps(state, indent=1, sort_keys=True).encode("utf-8"))

    def _remember(self, state: Mapping[str, Any]) -> None:
        form_by_id: dict[int, str] = {}
        for entry in state["schemas"]:
            self._schema_by_id[entry["id"]] = entry["schema"]
            form_by_id[entry["id"]] = entry["canonical"]
        for subject, ids in state["subjects"].items():
            for schema_id in ids:
                self._id_by_subject_form[(subject, form_by_id[schema_id])] = schema_id


def _register_in_state(
    state: dict[str, Any], subject: str, schema_str: str, form: str
) -> tuple[int, bool]:
    """Find or add ``form`` (globally) and list it under ``subject``: (id, changed)."""
    schemas: list[dict[str, Any]] = state["schemas"]
    schema_id = next((e["id"] for e in schemas if e["canonical"] == form), None)
    changed = False
    if schema_id is None:
        if len(schemas) >= SCHEMA_COUNT_MAX:
            raise RuntimeError(f"schema registry holds {SCHEMA_COUNT_MAX} schemas already")
        schema_id = len(schemas) + 1
        schemas.append({"id": schema_id, "canonical": form, "schema": schema_str})
        changed = True
    versions: list[int] = state["subjects"].setdefault(subject, [])
    if schema_id not in versions:
        versions.append(schema_id)
        changed = True
    return schema_id, changed


class ConfluentSchemaRegistry:
    """A Confluent Schema Registry over HTTP (compatibility is checked by the server).

    Needs ``confluent-kafka[schemaregistry]`` (authlib, httpx2, cachetools, attrs);
    imported on construction so the file registry works without them.
    """

    def __init__(self, url: str, *, conf: Mapping[str, str] | None = None) -> None:
        try:
            from confluent_kafka.schema_registry import SchemaRegistryClient
        except ImportError as error:
            raise ImportError(
                f"a schema registry URL needs confluent-kafka[schemaregistry]: {error}"
            ) from error
        self._client = SchemaRegistryClient({**(conf or {}), "url": url})

    def register(self, subject: str, schema_str: str) -> int:
        from confluent_kafka.schema_registry import Schema

        return int(self._client.register_schema(subject, Schema(schema_str, "AVRO")))

    def schema_for_id(self, schema_id: int) -> str:
        from confluent_kafka.schema_registry import SchemaRegistryError

        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as error:
            if error.http_status_code == _HTTP_NOT_FOUND:
                raise SchemaNotFound(f"no schema with id {schema_id}: {error}") from error
            raise
        if schema.schema_str is None:
            raise SchemaNotFound(f"schema {schema_id} has no text")
        return str(schema.schema_str)

    def subject_versions(self, subject: str) -> list[tuple[int, int]]:
        """(version, schema id) of ``subject``, oldest first (none for an unknown subject)."""
        from confluent_kafka.schema_registry import SchemaRegistryError

        try:
            versions = self._client.get_versions(subject)
        except SchemaRegistryError as error:
            if error.http_status_code == _HTTP_NOT_FOUND:
                return []
            raise
        found = (self._client.get_version(subject, version) for version in sorted(versions))
        return [(int(v.version), int(v.schema_id)) for v in found if v.version and v.schema_id]

    def close(self) -> None:
        self._client.close()
