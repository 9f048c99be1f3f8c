"""RFC 9457 problem details: every error the API gives, with a stable ``code``.

The codes are the core's rejection codes plus the API's own. A handler for
each kind of failure turns it into ``application/problem+json``; nothing
answers an error in another shape, and an unexpected exception is a 500
problem, logged, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias, get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from paystream.api.auth import ProviderUnavailable, Unauthorized
from paystream.ledger.models import REJECTION_CODES, RejectionCode

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_S = 5
VALIDATION_ERRORS_MAX = 20
"""Field errors listed in one validation problem (the rest are counted)."""

ApiCode: TypeAlias = Literal[
    "validation_error",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "rate_limited",
    "unavailable",
    "internal_error",
    "batch_too_large",
    "duplicate_payout",
    "currency_not_supported",
    "retry_limit_reached",
    "endpoint_disabled",
]
Code: TypeAlias = RejectionCode | ApiCode
CODES: tuple[str, ...] = (*REJECTION_CODES, *get_args(ApiCode))

TITLES: Mapping[str, str] = {
    "validation_error": "The request is not valid",
    "unauthorized": "A valid bearer token is required",
    "forbidden": "The token does not allow this",
    "not_found": "No such resource",
    "method_not_allowed": "Method not allowed",
    "rate_limited": "Too many requests",
    "unavailable": "A service the API needs is unavailable",
    "internal_error": "Internal error",
    "batch_too_large": "The batch carries more payouts than allowed",
    "duplicate_payout": "A payout appears twice in the batch",
    "currency_not_supported": "The bank rail does not pay out in this currency",
    "retry_limit_reached": "The delivery was retried as often as allowed",
    "endpoint_disabled": "The webhook endpoint is disabled",
}

logger = logging.getLogger("paystream.api")


class Problem(Exception):
    """An error answer: raise it from anywhere in a request."""

    def __init__(
        self,
        status: int,
        code: Code,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class FieldError(BaseModel):
    field: str
    message: str


class ProblemOut(BaseModel):
    """RFC 9457 problem details, with paystream's stable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str = Field(description="Stable: " + ", ".join(CODES))
    errors: list[FieldError] | None = Field(default=None, description="validation_error only")
    payment_id: str | None = Field(default=None, description="The refused command's payment")


ERROR_STATUSES: dict[int, str] = {
    400: "The body is not JSON",
    401: "No valid bearer token",
    403: "The token lacks the scope, or is not a partner's",
    404: "No such resource (or another partner's)",
    405: "Method not allowed",
    409: "Refused: a conflict (duplicate_conflict, account_frozen, ...)",
    422: "Not valid, or refused by the ledger (insufficient_funds, ...)",
    429: "Too many requests",
    500: "A bug: never expected",
    503: "Kafka, Postgres or the identity provider is unavailable; nothing was accepted",
}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Every operation of an OpenAPI document answers each error status with a problem."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ProblemOut"] = ProblemOut.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    for name, definition in components["ProblemOut"].pop("$defs", {}).items():
        components[name] = definition
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    reference = {"$ref": "#/components/schemas/ProblemOut"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_STATUSES.items():
                if str(status) in responses and status != 422:  # declared by the route itself
                    continue
                responses[str(status)] = {
                    "description": description,
                    "content": {PROBLEM_JSON: {"schema": reference}},
                }
    return schema


def not_found(what: str) -> Problem:
    return Problem(404, "not_found", f"{what} not found")


def problem_body(request: Request, problem: Problem) -> dict[str, Any]:
    return {
        "type": f"/problems/{problem.code}",
        "title": TITLES.get(problem.code, problem.code.replace("_", " ").capitalize()),
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
        "code": problem.code,
        **problem.extra,
    }


def respond(request: Request, problem: Problem) -> JSONResponse:
    return JSONResponse(
        problem_body(request, problem),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_JSON,
    )


def field_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic's errors as ``{field, message}``; input values are never echoed back."""
    listed = []
    for error in errors[:VALIDATION_ERRORS_MAX]:
        location = ".".join(str(part) for part in error.get("loc", ()))
        listed.append({"field": location, "message": str(error.get("msg", "invalid"))})
    return listed


def install(app: FastAPI) -> None:
    """Every error path of ``app`` answers problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, problem: Problem) -> JSONResponse:
        return respond(request, problem)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = error.errors()
        return respond(
            request,
            Problem(
                422,
                "validation_error",
                f"{len(errors)} field(s) are not valid",
                extra={"errors": field_errors(errors)},
            ),
        )

    @app.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, error: Unauthorized) -> JSONResponse:
        challenge = f'Bearer error="invalid_token", error_description="{error.reason}"'
        return respond(
            request,
            Problem(401, "unauthorized", error.reason, headers={"WWW-Authenticate": challenge}),
        )

    @app.exception_handler(ProviderUnavailable)
    async def _provider(request: Request, error: ProviderUnavailable) -> JSONResponse:
        logger.warning("identity provider unavailable: %s", error)
        return respond(request, unavailable("the identity provider cannot be reached"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code: Code = {404: "not_found", 405: "method_not_allowed"}.get(  # type: ignore[assignment]
            error.status_code, "validation_error"
        )
        headers = dict(error.headers or {})
        if error.status_code == 405:  # every method of the path, not of one route (RFC 9110)
            headers["Allow"] = ", ".join(_allowed_methods(request))
        problem = Problem(error.status_code, code, str(error.detail), headers=headers)
        return respond(request, problem)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return respond(request, Problem(500, "internal_error", "an unexpected error; it is logged"))


def _allowed_methods(request: Request) -> list[str]:
    path = request.url.path
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(path):
            methods |= route.methods
    return sorted(methods)


def unavailable(detail: str) -> Problem:
    return Problem(503, "unavailable", detail, headers={"Retry-After": str(RETRY_AFTER_S)})
