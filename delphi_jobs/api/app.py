"""The HTTP API and the dashboard: the third face of the operator layer (``delphi_jobs.ops``).

Each route parses its input, calls one operator action and returns its dataclass as JSON, converted
by ``ops.views.jsonable`` exactly as ``--json`` converts it for the CLI; the response models published
in ``/openapi.json`` are those same dataclasses. Nothing here queries DynamoDB itself. Routes are plain
functions: FastAPI runs them in its thread pool, where boto3's blocking calls belong.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, unquote_to_bytes

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import Body, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException

from delphi_jobs.api.errors import (
    ErrorEnvelope,
    on_http_error,
    on_ops_error,
    on_unexpected,
    on_validation_error,
    ops_error_response,
)
from delphi_jobs.api.security import TOKEN_LABEL, Gate, Message, Receive, Scope, Send, acting_operator
from delphi_jobs.config import Settings
from delphi_jobs.logs import get_logger
from delphi_jobs.model import FULL_PIPELINE, JobValidationError, parse_timestamp
from delphi_jobs.ops.context import OpsContext
from delphi_jobs.ops.errors import Invalid, OpsError, translate
from delphi_jobs.ops.jobs import (
    MAX_PRIORITY,
    MAX_TIMEOUT_SECONDS,
    MAX_ZID,
    MIN_PRIORITY,
    REPORT_ID_PATTERN,
    SUBMITTABLE,
    ActionResult,
    JobDetail,
    JobList,
    JobLogs,
    ListQuery,
    SubmitRequest,
    act,
    job_logs,
    list_jobs,
    show,
    submit,
)
from delphi_jobs.ops.repair import reset_job
from delphi_jobs.ops.reports import ReportView, show_report
from delphi_jobs.ops.stats import Stats, stats
from delphi_jobs.ops.views import jsonable
from delphi_jobs.states import Status
from delphi_jobs.store import StoreError

STATIC = Path(__file__).parent / "static"
MAX_LIST_LIMIT = 200
STATS_TTL_SECONDS = 3.0
"""Every open dashboard asks for the stats every few seconds; they are computed at most this often."""
TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?$"
)
TIME_HELP = "ISO-8601 (2026-11-29T15:00:00Z); without a zone, UTC"
"""What the created_after/before filters accept: RFC 3339, and the minutes-only form of a browser's
datetime-local input; a pattern, so that the schema says exactly what is refused."""
ID_LENGTH = 512
"""Longer than any producer's job id; DynamoDB refuses keys over 2048 bytes with an error that would
otherwise surface as the backend's."""

_log = get_logger(component="api")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope, "description": description}
    for code, description in (
        (400, "bad_host: no token is configured and the Host header names no loopback host"),
        (401, "no valid bearer token (when DELPHI_API_TOKEN is set)"),
        (413, "request body too large"),
        (422, "invalid input; error.field names it"),
        (502, "DynamoDB refused the request (credentials, permissions)"),
        (503, "DynamoDB unreachable or overloaded (retryable), or its tables missing"),
    )
}
JOB_ERRORS = {**ERRORS, 404: {"model": ErrorEnvelope, "description": "no such job"}}
REPORT_ERRORS = {**ERRORS, 404: {"model": ErrorEnvelope, "description": "no such report, or no such run"}}
ACTION_ERRORS = {
    **JOB_ERRORS,
    409: {
        "model": ErrorEnvelope,
        "description": "the job's status does not allow the action (error.status, error.allowed), "
        "or the job kept changing (busy, retryable)",
    },
}
REQUESTED: dict[int | str, dict[str, Any]] = {
    202: {"model": ActionResult, "description": "requested: the job's owner carries it out"}
}

CREATED_LINKS = {
    operation: {"operationId": operation, "parameters": {"job_id": "$response.body#/summary/job_id"}}
    for operation in (
        "get_job",
        "get_job_logs",
        "cancel_job",
        "pause_job",
        "resume_job",
        "retry_job",
        "reset_job",
    )
}
"""OpenAPI links: what can be done with a created job (clients and Schemathesis's stateful runs follow
them from POST /jobs to the job's own operations)."""


class Segment(Convertor[str]):
    """One path segment as ``SegmentPaths`` leaves it: a whole job or report id, ``/`` and ``%``
    included (they arrive percent-encoded and stay so until here)."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return quote(value, safe="")


register_url_convertor("segment", Segment())

JobId = Annotated[str, PathParam(min_length=1, max_length=ID_LENGTH)]
OperatorName = Annotated[
    str | None,
    Header(
        alias="X-Delphi-Operator",
        max_length=64,
        pattern=r"^[A-Za-z0-9 _.@'-]+$",
        description="who is acting, recorded in the job's history with the token's label",
    ),
]


class JobCreate(BaseModel):
    """A new job, written in the Polis server's own record shape."""

    model_config = ConfigDict(extra="forbid", strict=True)
    zid: int = Field(ge=0, le=MAX_ZID, description="the conversation's zid")
    job_type: str = Field(FULL_PIPELINE, json_schema_extra={"enum": list(SUBMITTABLE)})
    report_id: str | None = Field(
        None, pattern=REPORT_ID_PATTERN, description="required for CREATE_NARRATIVE_BATCH"
    )
    priority: int | None = Field(None, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="higher runs first (50)")
    timeout: int | None = Field(None, ge=1, le=MAX_TIMEOUT_SECONDS, description="wall-clock limit, seconds")
    config: dict[str, Any] | None = Field(None, description="settings, stored where the server stores them")


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str | None = Field(None, max_length=500, description="recorded in the job's history")


class ResetBody(ActionBody):
    to: Literal["FAILED", "PENDING"] = "FAILED"
    force: bool = Field(False, description="also take the job from an owner whose lease is alive")


class Health(BaseModel):
    status: Literal["ok"]
    jobs_table: str


class StatsCache:
    """The last stats and when they were computed; one computation at a time."""

    def __init__(self, compute: Callable[[], Stats], ttl: float) -> None:
        self._compute = compute
        self._ttl = ttl
        self._lock = threading.Lock()
        self._value: tuple[float, Stats] | None = None

    def get(self) -> Stats:
        with self._lock:
            if self._value is None or time.monotonic() - self._value[0] > self._ttl:
                self._value = (time.monotonic(), self._compute())
            return self._value[1]


def respond(result: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(jsonable(result), status_code=status_code, headers=headers)


def moment(text: str | None, field: str) -> datetime | None:
    """A query's time (``TIME_PATTERN``) as UTC, parsed as job timestamps are (naive means UTC)."""
    if text is None:
        return None
    try:
        return parse_timestamp(text, field)
    except (JobValidationError, OverflowError):
        raise Invalid(field, f"not a time: {text!r}") from None


def create_app(settings: Settings, ctx: OpsContext | None = None) -> FastAPI:
    """The application; ``ctx`` defaults to a connection made from ``settings``."""
    ops = ctx or OpsContext.connect(settings)
    app = FastAPI(
        title="delphi-jobs",
        version=version("delphi-jobs"),
        description="Jobs of the Polis Delphi queue: create, look at, steer; narrative reports. "
        "Errors: {error: {code, message, hint, retryable}}. See docs/api.md.",
        docs_url=None,  # Swagger UI and ReDoc load their assets from a CDN
        redoc_url=None,
    )
    app.state.ctx = ops
    cached_stats = StatsCache(lambda: stats(ops), STATS_TTL_SECONDS)
    _handlers(app)
    _routes(app, ops, cached_stats)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _openapi(app, secured=bool(settings.api_tokens))
    app.add_middleware(Gate, tokens=settings.api_tokens, max_body=settings.api_max_body_bytes)
    app.add_middleware(SegmentPaths)  # outside the gate: it judges the path the router will route
    app.add_middleware(AccessLog)
    return app


def _handlers(app: FastAPI) -> None:
    async def on_backend_failure(request: Request, exc: Exception) -> JSONResponse:
        ctx: OpsContext = request.app.state.ctx
        assert isinstance(exc, BotoCoreError | ClientError | StoreError)
        error = await run_in_threadpool(translate, exc, ctx.settings, ctx.client)
        _log.warning("api.dynamodb_error", path=request.url.path, code=error.code, message=error.message)
        return ops_error_response(error)

    app.add_exception_handler(OpsError, on_ops_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    for failure in (BotoCoreError, ClientError, StoreError):
        app.add_exception_handler(failure, on_backend_failure)
    app.add_exception_handler(Exception, on_unexpected)


def _routes(app: FastAPI, ctx: OpsContext, cached_stats: StatsCache) -> None:
    """Job and report ids are one path segment each (``Segment``): an id holding ``/`` (hand-made
    records may) is addressed percent-encoded, and ``/jobs/x%2Flogs`` is job ``x/logs``, never the
    logs of job ``x``."""

    def by(request: Request, named: str | None) -> str:
        return acting_operator(getattr(request.state, TOKEN_LABEL, None), named)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", response_model=Health, responses=ERRORS, tags=["service"])
    def healthz() -> JSONResponse:
        """200 while DynamoDB answers and the job table exists; 503 otherwise."""
        ctx.queue.ping()
        return respond({"status": "ok", "jobs_table": ctx.settings.jobs_table})

    @app.get("/stats", response_model=Stats, responses=ERRORS, tags=["service"])
    def get_stats() -> JSONResponse:
        """Jobs per status and type, oldest pending age, throughput of the last 15 minutes (bounded
        reads; computed at most every few seconds whoever asks)."""
        return respond(cached_stats.get())

    @app.get("/jobs", response_model=JobList, responses=ERRORS, tags=["jobs"])
    def get_jobs(
        status: Status | None = None,
        job_type: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        conversation: Annotated[str | None, Query(min_length=1, max_length=64, description="zid")] = None,
        worker: Annotated[str | None, Query(min_length=1, max_length=ID_LENGTH)] = None,
        created_after: Annotated[str | None, Query(pattern=TIME_PATTERN, description=TIME_HELP)] = None,
        created_before: Annotated[str | None, Query(pattern=TIME_PATTERN, description=TIME_HELP)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
        oldest_first: bool = False,
        cursor: Annotated[str | None, Query(min_length=1, max_length=4096)] = None,
    ) -> JSONResponse:
        """Jobs, newest first, by index queries only (the most selective filter picks the index).
        ``next_cursor`` continues the listing; a cursor works only with the filters it came from."""
        query = ListQuery(
            status=status,
            job_type=job_type,
            conversation=conversation,
            worker=worker,
            created_after=moment(created_after, "created_after"),
            created_before=moment(created_before, "created_before"),
            limit=limit,
            oldest_first=oldest_first,
            cursor=cursor,
        )
        return respond(list_jobs(ctx, query))

    @app.post(
        "/jobs",
        status_code=201,
        response_model=JobDetail,
        responses={**ERRORS, 201: {"description": "the job, as stored", "links": CREATED_LINKS}},
        tags=["jobs"],
        operation_id="create_job",
    )
    def create_job(job: JobCreate, request: Request, operator: OperatorName = None) -> JSONResponse:
        """A new PENDING job of the Polis server's record shape, ``created_by`` the operator."""
        created = submit(
            ctx,
            SubmitRequest(
                zid=job.zid,
                job_type=job.job_type,
                report_id=job.report_id,
                priority=job.priority,
                timeout_seconds=job.timeout,
                config=job.config,
                by=by(request, operator),
            ),
        )
        return respond(
            show(ctx, created.job_id), 201, {"Location": f"/jobs/{quote(created.job_id, safe='')}"}
        )

    @app.get(
        "/jobs/{job_id:segment}/logs",
        response_model=JobLogs,
        responses=JOB_ERRORS,
        tags=["jobs"],
        operation_id="get_job_logs",
    )
    def get_logs(job_id: JobId) -> JSONResponse:
        return respond(job_logs(ctx, job_id))

    @app.get(
        "/jobs/{job_id:segment}",
        response_model=JobDetail,
        responses=JOB_ERRORS,
        tags=["jobs"],
        operation_id="get_job",
    )
    def get_job(job_id: JobId) -> JSONResponse:
        """Every field, decoded logs, results, progress, live output, history, linked parent/checker."""
        return respond(show(ctx, job_id))

    def action(
        name: str, job_id: str, request: Request, reason: str | None, operator: str | None
    ) -> JSONResponse:
        result = act(ctx, name, job_id, by=by(request, operator), reason=reason)
        return respond(result, 202 if result.requested else 200)

    @app.delete(
        "/jobs/{job_id:segment}",
        operation_id="cancel_job",
        response_model=ActionResult,
        responses={**ACTION_ERRORS, **REQUESTED},
        tags=["actions"],
    )
    def cancel_job(
        job_id: JobId,
        request: Request,
        reason: Annotated[str | None, Query(max_length=500)] = None,
        operator: OperatorName = None,
    ) -> JSONResponse:
        """Cancel: at once when PENDING or PAUSED (200), else the owner or checker is asked (202)."""
        return action("cancel", job_id, request, reason, operator)

    def register_action(name: str, summary: str, requested: bool) -> None:
        def run(
            job_id: JobId,
            request: Request,
            body: Annotated[ActionBody | None, Body()] = None,
            operator: OperatorName = None,
        ) -> JSONResponse:
            return action(name, job_id, request, body.reason if body else None, operator)

        run.__doc__ = summary
        app.post(
            f"/jobs/{{job_id:segment}}/{name}",
            response_model=ActionResult,
            responses={**ACTION_ERRORS, **(REQUESTED if requested else {})},
            tags=["actions"],
            name=f"{name}_job",
            operation_id=f"{name}_job",
        )(run)

    register_action("retry", "A FAILED job runs again with fresh attempts (PENDING).", False)
    register_action(
        "pause", "PENDING or AWAITING_RECHECK: PAUSED at once; PROCESSING: at its next checkpoint.", True
    )
    register_action("resume", "A PAUSED job goes back to the status it was paused from.", False)

    @app.post(
        "/jobs/{job_id:segment}/reset",
        operation_id="reset_job",
        response_model=ActionResult,
        responses=ACTION_ERRORS,
        tags=["actions"],
    )
    def reset(
        job_id: JobId,
        request: Request,
        body: Annotated[ResetBody | None, Body()] = None,
        operator: OperatorName = None,
    ) -> JSONResponse:
        """A PROCESSING job whose owner's lease expired -> FAILED or PENDING (``force``: even a live one,
        whose owner's next fenced write then fails)."""
        options = body or ResetBody.model_validate({})
        result = reset_job(
            ctx,
            job_id,
            by=by(request, operator),
            to=Status(options.to),
            force=options.force,
            reason=options.reason,
        )
        return respond(result)

    @app.get(
        "/reports/{report_id:segment}", response_model=ReportView, responses=REPORT_ERRORS, tags=["reports"]
    )
    def get_report(
        report_id: Annotated[str, PathParam(min_length=1, max_length=ID_LENGTH)],
        run: Annotated[str | None, Query(min_length=1, max_length=ID_LENGTH)] = None,
    ) -> JSONResponse:
        """A narrative report as the Polis server reads it: its newest run's sections, or ``run``'s."""
        return respond(show_report(ctx, report_id, run))


def _openapi(app: FastAPI, *, secured: bool) -> None:
    """The schema, with the bearer scheme on every operation when this server asks for a token."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            if secured:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}
                }
                schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
]


class SegmentPaths:
    """The path to route, decoded one segment at a time from the path as sent (``raw_path``).

    The server hands the application a path with every escape decoded, ``%2F`` included, so an id
    holding ``/`` would be split in two and could name another route (``/jobs/x%2Flogs`` would be the
    logs of job ``x``). Here each segment is decoded on its own and a ``/`` or ``%`` inside it stays
    escaped, for ``Segment`` to decode once the route is chosen."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and isinstance(raw, bytes):
            decoded = (unquote_to_bytes(segment).decode("utf-8", "replace") for segment in raw.split(b"/"))
            scope["path"] = "/".join(segment.replace("%", "%25").replace("/", "%2F") for segment in decoded)
        await self._app(scope, receive, send)


class AccessLog:
    """One structured line per request (method, path, status, duration: never headers or the query,
    so no token or cursor reaches the log) and the security headers on every response; API answers
    are never cached (they hold live job data)."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0
        path = str(scope.get("path", ""))

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if not path.startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            _log.info(
                "api.request",
                method=scope.get("method"),
                path=path,
                status=status,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
