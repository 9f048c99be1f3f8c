"""docs/openapi.json is the API as built (regenerate: python -m paystream.api.openapi)."""

from __future__ import annotations

from paystream.api import openapi
from paystream.api.routes.schemas import PUBLIC_PATH_PREFIXES


def test_the_committed_openapi_document_matches_the_api() -> None:
    assert openapi.DOC_PATH.read_text() == openapi.render(), (
        "docs/openapi.json is stale: run python -m paystream.api.openapi"
    )


def test_every_endpoint_but_health_and_the_schema_registry_needs_a_bearer_token() -> None:
    paths = openapi.document()["paths"]
    for path, operations in paths.items():
        public = path in ("/healthz", "/readyz") or path.startswith(PUBLIC_PATH_PREFIXES)
        for method, operation in operations.items():
            secured = bool(operation.get("security"))
            assert secured == (not public), f"{method} {path}"
    assert any(path.startswith("/schemas/") for path in paths)
