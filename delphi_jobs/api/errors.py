"""The HTTP API's one error envelope, ``{"error": {"code", "message", "hint", "retryable"}}``.

Every failure leaves the API in this shape, whoever raised it: an operator action (``OpsError``, whose
``code`` picks the HTTP status), DynamoDB (translated by the operator layer, so the CLI and the API say
the same thing), FastAPI's request validation (its default 422 body is replaced, so a client parses one
shape), Starlette's routing (404, 405) and the security gate (401, 413, 400 for a foreign Host).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from delphi_jobs.logs import get_logger
from delphi_jobs.ops.errors import Invalid, OpsError, Refused

_log = get_logger(component="api")

HTTP_STATUS = {
    "not_found": 404,
    "refused": 409,
    "busy": 409,
    "invalid": 422,
    "unavailable": 503,
    "table_missing": 503,
    "dynamodb": 502,
}
"""OpsError.code -> HTTP status. ``busy`` (the job kept changing under the action) is a conflict that
is worth retrying; ``dynamodb`` (credentials, permissions) is the upstream's refusal, not ours."""


class ErrorBody(BaseModel):
    code: str
    """not_found, refused, busy, invalid, unavailable, table_missing, dynamodb, unauthorized,
    too_large, bad_host, method_not_allowed, internal."""
    message: str
    hint: str | None = None
    retryable: bool = False
    field: str | None = None
    """invalid: the input that was refused (a body field, query parameter or header)."""
    status: str | None = None
    """refused: the job's current status."""
    allowed: list[str] | None = None
    """refused: the actions the job's current status allows."""


class ErrorEnvelope(BaseModel):
    error: ErrorBody


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    hint: str | None = None,
    retryable: bool = False,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, hint=hint, retryable=retryable, **extra)
    return JSONResponse(
        {"error": body.model_dump(exclude_none=True) | {"hint": hint, "retryable": retryable}},
        status_code=status_code,
        headers=dict(headers or {}),
    )


def ops_error_response(exc: OpsError) -> JSONResponse:
    extra: dict[str, Any] = {}
    if isinstance(exc, Refused):
        extra = {"status": exc.status, "allowed": list(exc.allowed)}
    elif isinstance(exc, Invalid):
        extra = {"field": exc.field}
    return error_response(
        HTTP_STATUS.get(exc.code, 500),
        exc.code,
        exc.message,
        hint=exc.hint,
        retryable=exc.retryable,
        **extra,
    )


def validation_response(errors: Sequence[Any]) -> JSONResponse:
    """FastAPI's validation errors in the envelope: the first problem's field in ``field``, every
    problem in the message (``zid: Input should be greater than or equal to 0; ...``)."""
    problems = [(_field_of(error.get("loc", ())), str(error.get("msg", "invalid"))) for error in errors]
    field = problems[0][0] if problems else "request"
    message = "; ".join(f"{name}: {text}" for name, text in problems) or "invalid request"
    hint = "see /openapi.json for the accepted input"
    return error_response(422, "invalid", message, field=field, hint=hint)


def _field_of(location: Sequence[Any]) -> str:
    """``("body", "zid")`` -> ``zid``; ``("query", "limit")`` -> ``limit``; ``("body",)`` -> ``body``;
    a malformed JSON body's position (``("body", 12)``) -> ``body``."""
    parts = [str(part) for part in location[1:] if not isinstance(part, int)] if len(location) > 1 else []
    return ".".join(parts) or (str(location[0]) if location else "request")


async def on_ops_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpsError)
    return ops_error_response(exc)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(exc.errors())


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (no such route, method not allowed): keep their status and headers
    (``Allow`` on a 405), in the envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8, not JSON): bad input
        return error_response(422, "invalid", f"body: {exc.detail}", field="body", hint="send a JSON object")
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = f"no route {request.method} {request.url.path}" if code == "not_found" else str(exc.detail)
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug: logged with its traceback, answered without it (a response never carries internals)."""
    _log.exception("api.internal_error", method=request.method, path=request.url.path)
    return error_response(500, "internal", "internal error; the server's log has the details")
