"""A Confluent-compatible, read-only schema registry for partners' event topics.

Partners' topics carry the ``events`` records byte for byte: Avro in Confluent's wire
format, whose 4-byte id names the writer schema. A partner's stock
``confluent_kafka.schema_registry.avro.AvroDeserializer`` (``SchemaRegistryClient({"url":
<this API>})``) fetches that schema here, so a partner decodes its topic with no paystream
code. Only the event schemas are served (the subject ``<events topic>-value``, and each
partner topic's subject as the same versions): commands, legs and the ledger's schemas are
the platform's own. Errors use the registry's shape (``error_code``, ``message``), since
that is what its clients read (as ``application/json``, which they accept). Schemas are not
secret and these routes need no token, as a registry's reads are commonly open (the one
exception to the API's bearer tokens besides health); they change nothing.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from paystream.settings import Settings
from paystream.topology.registry import SubjectCatalog
from paystream.topology.topics import Topics, partner_topic

__all__ = ["PUBLIC_PATH_PREFIXES", "SchemaService", "router"]

PUBLIC_PATH_PREFIXES: Final = ("/schemas/", "/subjects")
"""The registry's paths: read without a token."""
SUBJECT_NOT_FOUND: Final = 40401
VERSION_NOT_FOUND: Final = 40402
SCHEMA_NOT_FOUND: Final = 40403
SUBJECT_LENGTH_MAX: Final = 300
SCHEMA_ID_MAX: Final = 2**31 - 1


class SchemaOut(BaseModel):
    schema_text: str = Field(alias="schema", description="the Avro schema, as JSON text")


class SubjectVersionOut(BaseModel):
    subject: str
    version: int
    id: int
    schema_text: str = Field(alias="schema")


class RegistryError(BaseModel):
    """The registry's own error shape (what confluent-kafka's client reads)."""

    error_code: int = Field(description="40401 subject, 40402 version, 40403 schema not found")
    message: str


router = APIRouter(tags=["schemas"], responses={404: {"model": RegistryError}})


class SchemaService:
    """What is served: the events subject's versions, under it and each partner subject."""

    def __init__(self, settings: Settings, catalog: SubjectCatalog) -> None:
        self._events_subject = f"{Topics.from_settings(settings).events}-value"
        before, after = (partner_topic(settings, "\0") + "-value").split("\0")
        self._partner_subject = re.compile(
            f"{re.escape(before)}[a-z0-9][a-z0-9-]{{0,39}}{re.escape(after)}"
        )
        self._catalog = catalog

    @property
    def subjects(self) -> list[str]:
        return [self._events_subject]

    def versions(self, subject: str) -> list[tuple[int, int]]:
        """(version, id) of a served subject; empty for any other."""
        if subject != self._events_subject and not self._partner_subject.fullmatch(subject):
            return []
        return self._catalog.subject_versions(self._events_subject)

    def schema(self, schema_id: int) -> str | None:
        """The text of an event schema; None for an id that is not one."""
        served = {schema_id for _, schema_id in self.versions(self._events_subject)}
        return self._catalog.schema_for_id(schema_id) if schema_id in served else None


def _service(request: Request) -> SchemaService:
    service: SchemaService = request.app.state.schemas
    return service


def _answer(content: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status_code)


def _not_found(code: int, message: str) -> JSONResponse:
    return _answer({"error_code": code, "message": message}, status_code=404)


Subject = Annotated[str, Path(max_length=SUBJECT_LENGTH_MAX)]
# What confluent-kafka's client may send along (it asks for the schema as stored).
ClientSubject = Annotated[str | None, Query(alias="subject", max_length=SUBJECT_LENGTH_MAX)]
ClientFormat = Annotated[str | None, Query(alias="format", max_length=50)]
ClientReferenceFormat = Annotated[str | None, Query(alias="reference_format", max_length=50)]


@router.get(
    "/schemas/ids/{schema_id}", summary="An event schema by its global id", response_model=SchemaOut
)
def schema_by_id(
    request: Request,
    schema_id: Annotated[int, Path(ge=1, le=SCHEMA_ID_MAX)],
    subject: ClientSubject = None,
    schema_format: ClientFormat = None,
    reference_format: ClientReferenceFormat = None,
) -> JSONResponse:
    text = _service(request).schema(schema_id)
    if text is None:
        return _not_found(SCHEMA_NOT_FOUND, f"Schema {schema_id} not found")
    return _answer({"schema": text})


@router.get("/subjects", summary="The subjects partners read", response_model=list[str])
def subjects(request: Request) -> JSONResponse:
    return _answer(_service(request).subjects)


@router.get(
    "/subjects/{subject}/versions", summary="A subject's versions", response_model=list[int]
)
def subject_versions(request: Request, subject: Subject) -> JSONResponse:
    versions = _service(request).versions(subject)
    if not versions:
        return _not_found(SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")
    return _answer([version for version, _ in versions])


@router.get(
    "/subjects/{subject}/versions/{version}",
    summary="One version of a subject",
    response_model=SubjectVersionOut,
)
def subject_version(
    request: Request,
    subject: Subject,
    version: Annotated[str, Path(pattern=r"^(latest|-1|[1-9][0-9]{0,8})$")],
) -> JSONResponse:
    service = _service(request)
    versions = service.versions(subject)
    if not versions:
        return _not_found(SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")
    wanted = versions[-1][0] if version in ("latest", "-1") else int(version)
    found = next((schema_id for v, schema_id in versions if v == wanted), None)
    if found is None:
        return _not_found(VERSION_NOT_FOUND, f"Version {version} not found.")
    return _answer({"subject": subject, "version": wanted, "id": found,
                    "schema": service.schema(found)})  # fmt: skip
