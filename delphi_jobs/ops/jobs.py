"""Submit, list, show, and the operator's transitions (cancel, retry, pause, resume) of single jobs."""

from __future__ import annotations

import base64
import heapq
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from delphi_jobs import records
from delphi_jobs.model import (
    CREATE_NARRATIVE_BATCH,
    FULL_PIPELINE,
    HistoryEvent,
    Job,
    LogEntry,
    decode_json_field,
)
from delphi_jobs.ops.context import OpsContext
from delphi_jobs.ops.errors import Busy, Invalid, NotFound, Refused
from delphi_jobs.ops.views import JobSummary, decoded_attributes, jsonable, summarize
from delphi_jobs.queue import JobChanging, JobNotFound, OperatorResult
from delphi_jobs.states import InvalidStateError, Status
from delphi_jobs.store import Cursor, JobExists
from delphi_jobs.tables import (
    CONVERSATION_INDEX,
    JOB_INDEXES,
    JOB_TYPE_INDEX,
    STATUS_CREATED_INDEX,
    WORKER_STATUS_INDEX,
)

SUBMITTABLE = (FULL_PIPELINE, CREATE_NARRATIVE_BATCH)
"""Checkers (AWAITING_NARRATIVE_BATCH) are created by their parent, never by hand."""
MIN_PRIORITY, MAX_PRIORITY = 0, 1000
MAX_ZID = 2**31 - 1
"""zid is a PostgreSQL integer in the Polis database."""
MAX_TIMEOUT_SECONDS = 7 * 86400
REPORT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
"""Polis report ids are short and alphanumeric; the narrative job's id and its sections' custom_ids
are built from them, so nothing else is accepted."""

MAX_CONFIG_DEPTH = 16
"""The settings the Polis server writes nest three levels; deeper is a mistake or an attack (a config
nested hundreds deep is stored, and then fails every reader that recurses through it)."""

PAGE_SIZE = 100
MAX_EXAMINED = 2000
"""A filtered listing reads at most this many records before handing back a cursor."""

# ---- submit -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitRequest:
    zid: int
    job_type: str = FULL_PIPELINE
    report_id: str | None = None
    priority: int | None = None
    timeout_seconds: int | None = None
    config: Mapping[str, Any] | None = None
    """Settings, stored where the server stores them for the job type."""
    by: str = "operator"


def submit(ctx: OpsContext, request: SubmitRequest) -> JobSummary:
    """Insert a job of the server's own record shape (DESIGN 2.1), signed ``created_by``."""
    if not 0 <= request.zid <= MAX_ZID:
        raise Invalid("zid", f"must be a conversation's zid (0 to {MAX_ZID}), got {request.zid}")
    if request.job_type not in SUBMITTABLE:
        raise Invalid("job_type", f"must be one of {', '.join(SUBMITTABLE)}, got {request.job_type!r}")
    if request.priority is not None and not MIN_PRIORITY <= request.priority <= MAX_PRIORITY:
        limits = f"between {MIN_PRIORITY} and {MAX_PRIORITY}"
        raise Invalid("priority", f"must be {limits}, got {request.priority}")
    if request.report_id is not None and not re.match(REPORT_ID_PATTERN, request.report_id):
        raise Invalid("report_id", "must be 1-100 letters, digits, _ or - (a Polis report id)")
    if request.timeout_seconds is not None and not 0 < request.timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise Invalid(
            "timeout", f"must be 1 to {MAX_TIMEOUT_SECONDS} seconds (7 days), got {request.timeout_seconds}"
        )
    if request.config is not None:
        check_config(request.config)
    now = ctx.clock()
    shape: dict[str, Any] = {"now": now, "settings": request.config}
    if request.priority is not None:
        shape["priority"] = request.priority
    if request.job_type == FULL_PIPELINE:
        if request.timeout_seconds is not None:
            shape["timeout_seconds"] = request.timeout_seconds
        record = records.full_pipeline(request.zid, request.report_id, created_by=request.by, **shape)
    else:
        if not request.report_id:
            raise Invalid(
                "report_id", "required for CREATE_NARRATIVE_BATCH (the report the sections are for)"
            )
        if request.config and request.config.get("model"):
            shape["model"] = str(request.config["model"])
        record = {**records.narrative(request.report_id, request.zid, **shape), "created_by": request.by}
        if request.timeout_seconds is not None:
            record["timeout_seconds"] = request.timeout_seconds
    try:
        job = ctx.queue.enqueue(record)
    except JobExists:
        raise Invalid("job_id", f"{record['job_id']} exists already; submit again") from None
    return summarize(job, now)


def check_config(config: Mapping[str, Any]) -> None:
    """Settings every reader of the record can decode: JSON has no NaN or Infinity (Python's parser
    accepts them, the Polis server's does not), a lone surrogate has no UTF-8 form (DynamoDB refuses the
    write), and a config nested deeper than ``MAX_CONFIG_DEPTH`` is refused before it is stored."""
    pending: list[tuple[Any, int]] = [(config, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, Mapping | list):
            if depth > MAX_CONFIG_DEPTH:
                raise Invalid("config", f"nested deeper than {MAX_CONFIG_DEPTH} levels")
            inner = [*value, *value.values()] if isinstance(value, Mapping) else value  # keys are text too
            pending += [(item, depth + 1) for item in inner]
        elif isinstance(value, float) and not math.isfinite(value):
            raise Invalid("config", f"{value} is not a JSON number")
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise Invalid("config", "holds text that is not valid Unicode (a lone surrogate)") from None


def parse_config(text: str) -> dict[str, Any]:
    """``--config``: a JSON object, named in the error when it is not (``submit`` checks the rest)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid("config", f"not JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise Invalid("config", f"nested deeper than {MAX_CONFIG_DEPTH} levels") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise Invalid("config", f"not usable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise Invalid("config", f"must be a JSON object, got {type(value).__name__}")
    return value


# ---- list ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListQuery:
    status: str | None = None
    job_type: str | None = None
    conversation: str | None = None
    worker: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = 50
    oldest_first: bool = False
    cursor: str | None = None


@dataclass(frozen=True)
class JobList:
    jobs: list[JobSummary]
    index: str
    """The index that answered (never a Scan)."""
    next_cursor: str | None
    """Pass it back as ``cursor`` for the next page; None when nothing more matched."""


def list_jobs(ctx: OpsContext, query: ListQuery) -> JobList:
    """Jobs matching the filters, by index queries only: the most selective index for the filters
    given (conversation, worker, status, job type), the rest checked on the records read; without any
    filter, every status's newest (or oldest) merged."""
    if query.limit < 1:
        raise Invalid("limit", f"must be at least 1, got {query.limit}")
    status = normalize_status(query.status) if query.status else None
    if not (query.conversation or query.worker or status or query.job_type):
        every = {s.value: (STATUS_CREATED_INDEX, s.value) for s in Status}
        return _merged(ctx, query, _decode_cursor(query.cursor, every))
    if query.conversation:
        index, key, bounds = (
            CONVERSATION_INDEX,
            query.conversation,
            created_range(query.created_after, query.created_before),
        )
    elif query.worker:
        index, key = WORKER_STATUS_INDEX, query.worker
        bounds = {"range_from": status, "range_to": status} if status else {}
    elif status:
        index, key, bounds = (
            STATUS_CREATED_INDEX,
            status,
            created_range(query.created_after, query.created_before),
        )
    else:
        index, key, bounds = JOB_TYPE_INDEX, str(query.job_type), {}

    def wanted(job: Job) -> bool:
        return _matches(job, query, status)

    found: list[Job] = []
    start = _decode_cursor(query.cursor, {index: (index, key)})
    position = start.get(index) if start else None
    walked = walk(ctx, index, key, start=position, newest_first=not query.oldest_first, **bounds)
    last: Job | None = None
    for examined, job in enumerate(walked, start=1):
        last = job
        if wanted(job):
            found.append(job)
        if len(found) == query.limit or examined == MAX_EXAMINED:
            break
    else:
        last = None  # the index is exhausted
    cursor = _encode_cursor({index: _key_of(last, index)}) if last else None
    now = ctx.clock()
    return JobList([summarize(job, now) for job in found], index, cursor)


def normalize_status(text: str) -> str:
    status = text.strip().upper()
    if status not in Status.__members__:
        raise Invalid("status", f"must be one of {', '.join(Status)}, got {text!r}")
    return status


def _matches(job: Job, query: ListQuery, status: str | None) -> bool:
    if status and job.status != status:
        return False
    if query.job_type and job.job_type != query.job_type:
        return False
    if query.conversation and job.conversation_id != query.conversation:
        return False
    if query.worker and job.item.get("worker_id") != query.worker:
        return False
    created = job.created_at
    if query.created_after and (created is None or created < query.created_after):
        return False
    return not (query.created_before and (created is None or created > query.created_before))


def created_range(after: datetime | None, before: datetime | None) -> dict[str, Any]:
    """A created_at range for an index query that holds every record created in [after, before]
    whatever format its producer wrote (``...Z``, ``+00:00``, naive, a space for ``T``): a loose first
    cut on the text; the parsed times decide."""
    bounds: dict[str, Any] = {}
    if after:
        bounds["range_from"] = after.astimezone(UTC).strftime("%Y-%m-%d")
    if before:
        bounds["range_to"] = before.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + "\uffff"
    return bounds


def _merged(ctx: OpsContext, query: ListQuery, start: dict[str, Cursor | None] | None) -> JobList:
    """Every status's index walked lazily and merged by creation time; the cursor keeps each
    status's position (a status absent from it is exhausted)."""
    newest_first = not query.oldest_first
    bounds = created_range(query.created_after, query.created_before)
    statuses = list(start) if start is not None else [s.value for s in Status]
    walks = {
        status: walk(
            ctx,
            STATUS_CREATED_INDEX,
            status,
            start=(start or {}).get(status),
            newest_first=newest_first,
            **bounds,
        )
        for status in statuses
    }
    positions: dict[str, Cursor | None] = {status: (start or {}).get(status) for status in statuses}
    heap: list[tuple[float, int, str, Job]] = []
    order = 0

    def push(status: str) -> None:
        nonlocal order
        job = next(walks[status], None)
        if job is None:
            positions.pop(status)  # exhausted
            return
        moment = job.created_at.timestamp() if job.created_at else 0.0
        order += 1
        heapq.heappush(heap, (-moment if newest_first else moment, order, status, job))

    for status in statuses:
        push(status)
    found: list[Job] = []
    while heap and len(found) < query.limit:
        _, _, status, job = heapq.heappop(heap)
        positions[status] = _key_of(job, STATUS_CREATED_INDEX)
        if _matches(job, query, None):
            found.append(job)
        push(status)
    # Items read ahead but not shown are read again from the cursor, never skipped.
    cursor = _encode_cursor(positions) if positions else None
    now = ctx.clock()
    return JobList([summarize(job, now) for job in found], STATUS_CREATED_INDEX, cursor)


def walk(
    ctx: OpsContext,
    index: str,
    key: str,
    *,
    start: Cursor | None = None,
    newest_first: bool = False,
    range_from: Any = None,
    range_to: Any = None,
    page_size: int = PAGE_SIZE,
) -> Iterator[Job]:
    """The jobs of one index key in index order, read a page at a time as they are consumed."""
    while True:
        page = ctx.queue.query_index(
            index,
            key,
            limit=page_size,
            start=start,
            newest_first=newest_first,
            range_from=range_from,
            range_to=range_to,
        )
        yield from page.jobs
        if page.next is None:
            return
        start = page.next


def _key_of(job: Job, index: str) -> Cursor:
    """A job's position in an index: the table key and the index's key attributes."""
    return {name: job.item[name] for name in _position_names(index) if name in job.item}


def _position_names(index: str) -> tuple[str, ...]:
    """The attributes of a position in ``index``: the table key, then the index's hash and range."""
    key = dict(JOB_INDEXES)[index]
    return ("job_id", key.hash[0], *([key.range[0]] if key.range else []))


def _encode_cursor(positions: Mapping[str, Cursor | None]) -> str:
    raw = json.dumps(jsonable(positions), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(
    cursor: str | None, expected: Mapping[str, tuple[str, str]]
) -> dict[str, Cursor | None] | None:
    """A cursor handed out by ``list_jobs`` for the same filters. ``expected`` maps each position the
    cursor may hold to its (index, hash key). Anything else, tampered with or from other filters, is
    refused here rather than sent to DynamoDB as an ExclusiveStartKey it would reject."""
    if not cursor:
        return None
    refused = Invalid("cursor", "not a cursor handed out for these filters; start again without it")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (ValueError, json.JSONDecodeError):
        raise refused from None
    if not isinstance(value, dict) or not value or not set(value) <= set(expected):
        raise refused
    for name, position in value.items():
        if position is None:
            continue
        index, key = expected[name]
        names = _position_names(index)
        if (
            not isinstance(position, dict)
            or set(position) != set(names)
            or position.get(names[1]) != key
            or any(isinstance(v, bool) or not isinstance(v, str | int | float) for v in position.values())
        ):
            raise refused
    return value


# ---- show ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    relation: str
    """``parent`` (the CREATE job a checker reports to) or ``checker``."""
    job: JobSummary | None
    job_id: str


@dataclass(frozen=True)
class JobDetail:
    summary: JobSummary
    attributes: dict[str, Any]
    """Every attribute as stored, JSON documents decoded."""
    config: Mapping[str, Any]
    results: Mapping[str, Any]
    progress: Mapping[str, Any]
    live_output: tuple[str, ...]
    """The running job's last output lines, as its worker last flushed them."""
    logs: tuple[LogEntry, ...]
    history: tuple[HistoryEvent, ...]
    """Every transition, oldest first: when, from, to, by whom, why."""
    links: list[Link]
    lease_expired: bool | None
    """For PROCESSING jobs: has the owner's lease run out (a poller will reclaim it)?"""
    allowed_actions: tuple[str, ...]
    problems: tuple[str, ...]
    """Fields the poller would reject the job for."""


def get_job(ctx: OpsContext, job_id: str) -> Job:
    job = ctx.queue.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r} in {ctx.settings.jobs_table}")
    return job


def show(ctx: OpsContext, job_id: str) -> JobDetail:
    job = get_job(ctx, job_id)
    now = ctx.clock()
    links: list[Link] = []
    if job.batch_job_id:
        parent = ctx.queue.get(job.batch_job_id)
        links.append(Link("parent", summarize(parent, now) if parent else None, job.batch_job_id))
    if job.job_type == CREATE_NARRATIVE_BATCH:
        links += [Link("checker", summarize(c, now), c.job_id) for c in ctx.queue.checkers_of(job)]
    try:
        progress = decode_json_field(job.item.get("progress"), "progress")
    except ValueError:
        progress = {}
    expired = None
    if job.status == Status.PROCESSING:
        expired = job.lock_expires_at is None or job.lock_expires_at < now
    return JobDetail(
        summary=summarize(job, now),
        attributes=decoded_attributes(job),
        config=job.job_config,
        results=job.job_results,
        progress=progress,
        live_output=live_output(job),
        logs=job.logs,
        history=job.history,
        links=links,
        lease_expired=expired,
        allowed_actions=ctx.queue.allowed_actions(job.status),
        problems=job.problems,
    )


@dataclass(frozen=True)
class JobLogs:
    job_id: str
    status: str
    entries: tuple[LogEntry, ...]
    """The job's ``logs`` attribute: its last 50 entries, oldest first."""
    live_output: tuple[str, ...]


def job_logs(ctx: OpsContext, job_id: str) -> JobLogs:
    job = get_job(ctx, job_id)
    return JobLogs(job.job_id, job.status, job.logs, live_output(job))


def live_output(job: Job) -> tuple[str, ...]:
    """``live_output`` (a JSON list of the last console lines, ``model.encode_live_output``) as lines;
    it is informative only, so anything else a hand-made record holds there shows as text."""
    raw = job.item.get("live_output")
    if raw is None or raw == "":
        return ()
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        value = raw
    if isinstance(value, list):
        return tuple(str(line) for line in value)
    return tuple(str(value).splitlines())


# ---- transitions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionResult:
    job_id: str
    action: str
    status: str
    """The status now: the new one, or the current one when the owner was asked to act."""
    requested: bool
    message: str


def act(ctx: OpsContext, action: str, job_id: str, *, by: str, reason: str | None = None) -> ActionResult:
    """cancel, pause, resume or retry, as the state machine allows; ``Refused`` names the job's status
    and what may be done to it instead."""
    queue = ctx.queue
    actions: dict[str, Callable[[], OperatorResult]] = {
        "cancel": lambda: queue.cancel(job_id, reason or f"cancelled by {by}", by=by),
        "pause": lambda: queue.pause(job_id, reason or f"paused by {by}", by=by),
        "resume": lambda: queue.resume(job_id, by=by),
        "retry": lambda: queue.retry(job_id, by=by),
    }
    if action not in actions:
        raise Invalid("action", f"must be one of {', '.join(actions)}, got {action!r}")
    try:
        result = actions[action]()
    except JobNotFound:
        raise NotFound(f"no job {job_id!r} in {ctx.settings.jobs_table}") from None
    except JobChanging as exc:
        raise Busy(str(exc)) from None
    except InvalidStateError as exc:
        why = exc.why or f"it is {exc.current or '(no status)'}"
        message = f"cannot {action} job {job_id}: {why}"
        raise Refused.in_state(message, exc.current, refused=action) from None
    if result.requested:
        message = f"{action} requested: the job is {result.status}; its owner carries it out"
    else:
        message = f"{action}: now {result.status}"
    return ActionResult(job_id, action, str(result.status), result.requested, message)
