"""Repairs: reset jobs stuck in PROCESSING, and stop a narrative job's batch check cycle.

Both replace the original deployment's operator scripts (``reset_processing_jobs.py``,
``stop_batch_check_cycle.py``), which had hard-coded endpoints, no dry run, no age filter and no audit
(defect 11): every change here is one conditional write on the state that was read, and the job
records who made it and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from delphi_jobs.model import AWAITING_NARRATIVE_BATCH, CREATE_NARRATIVE_BATCH, Job
from delphi_jobs.ops.context import OpsContext
from delphi_jobs.ops.errors import Busy, Invalid, Refused
from delphi_jobs.ops.jobs import ActionResult, act, created_range, get_job, walk
from delphi_jobs.ops.views import JobSummary, summarize, timestamp_of
from delphi_jobs.states import TERMINAL, Status, operator_actions
from delphi_jobs.tables import STATUS_CREATED_INDEX, WORKER_STATUS_INDEX

# ---- reset-stuck --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetRequest:
    by: str
    to: Status = Status.FAILED
    older_than: timedelta | None = None
    """Only jobs running (since started_at) at least this long; required with ``force``."""
    job_type: str | None = None
    worker: str | None = None
    limit: int = 100
    dry_run: bool = False
    force: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class ResetItem:
    job: JobSummary
    lease_expired: bool
    running_seconds: float | None
    outcome: str
    """``reset``, ``would reset``, ``skipped: lease alive`` or ``lost: the job changed first``."""


@dataclass(frozen=True)
class ResetReport:
    to: str
    dry_run: bool
    force: bool
    items: list[ResetItem]

    @property
    def changed(self) -> int:
        return sum(1 for item in self.items if item.outcome == "reset")


def reset_stuck(ctx: OpsContext, request: ResetRequest) -> ResetReport:
    """PROCESSING jobs whose lease expired (with ``force``, live ones too) -> FAILED or PENDING.

    A poller reclaims an expired lease by itself; this is for when none runs, or to fail a job rather
    than run it again. Without ``force`` a job whose lease is alive is never taken: the write is
    conditioned on the lease and version as read, so a heartbeat in between wins.
    """
    if request.to not in (Status.FAILED, Status.PENDING):
        raise Invalid("to", f"must be failed or pending, got {request.to!r}")
    if request.force and request.older_than is None:
        raise Invalid("older_than", "required with force: say how long a live job must have run")
    if request.limit < 1:
        raise Invalid("limit", f"must be at least 1, got {request.limit}")
    now = ctx.clock()
    reason = request.reason or "reset-stuck" + (" --force" if request.force else "")
    items: list[ResetItem] = []
    for job in _processing(ctx, request, now):
        if sum(1 for i in items if i.outcome != "skipped: lease alive") >= request.limit:
            break
        running = _running_since(job)
        running_seconds = (now - running).total_seconds() if running else None
        if request.older_than is not None and (
            running_seconds is None or running_seconds < request.older_than.total_seconds()
        ):
            continue
        expired = job.lock_expires_at is None or job.lock_expires_at < now
        if not expired and not request.force:
            outcome = "skipped: lease alive"
        elif request.dry_run:
            outcome = "would reset"
        elif ctx.queue.reset(job, request.to, by=request.by, reason=reason, force=request.force):
            outcome = "reset"
        else:
            outcome = "lost: the job changed first"
        items.append(ResetItem(summarize(job, now), expired, running_seconds, outcome))
    return ResetReport(str(request.to), request.dry_run, request.force, items)


def reset_job(
    ctx: OpsContext,
    job_id: str,
    *,
    by: str,
    to: Status = Status.FAILED,
    force: bool = False,
    reason: str | None = None,
) -> ActionResult:
    """One PROCESSING job -> FAILED or PENDING: ``reset-stuck`` for a job an operator points at (the
    HTTP API's reset). Refused while the owner's lease is alive unless ``force``."""
    if to not in (Status.FAILED, Status.PENDING):
        raise Invalid("to", f"must be FAILED or PENDING, got {to!r}")
    job = get_job(ctx, job_id)
    if job.status != Status.PROCESSING:
        state = job.status or "(no status)"
        raise Refused.in_state(f"cannot reset job {job_id}: it is {state}, not PROCESSING", job.status)
    alive = job.lock_expires_at is not None and job.lock_expires_at >= ctx.clock()
    if alive and not force:
        raise Refused.in_state(
            f"cannot reset job {job_id}: its owner {job.worker_id} holds a live lease",
            job.status,
            hint="a poller reclaims it once the lease expires; force takes it from the live owner",
        )
    why = reason or "reset" + (" (forced)" if force else "")
    if not ctx.queue.reset(job, to, by=by, reason=why, force=force):
        raise Busy(f"job {job_id} changed while it was being reset; look at it again")
    return ActionResult(job_id, "reset", str(to), False, f"reset: now {to}")


def _processing(ctx: OpsContext, request: ResetRequest, now: datetime) -> list[Job]:
    """PROCESSING jobs of the worker (WorkerStatusIndex) or of all (StatusCreatedIndex, oldest first,
    created before the age cut: a job cannot have run longer than it has existed)."""
    if request.worker:
        processing = Status.PROCESSING.value
        found = walk(ctx, WORKER_STATUS_INDEX, request.worker, range_from=processing, range_to=processing)
    else:
        cut = now - request.older_than if request.older_than is not None else None
        found = walk(ctx, STATUS_CREATED_INDEX, Status.PROCESSING, **created_range(None, cut))
    wanted = request.job_type
    return [j for j in found if j.status == Status.PROCESSING and (wanted is None or j.job_type == wanted)]


def _running_since(job: Job) -> datetime | None:
    return job.started_at or timestamp_of(job, "updated_at") or job.created_at


# ---- stop-batch-cycle ---------------------------------------------------------------------------

BatchCanceller = Callable[[str], str]
"""Cancels an Anthropic batch by id; returns what happened, in a few words."""


@dataclass(frozen=True)
class CycleStep:
    job_id: str
    role: str
    """``parent`` or ``checker``."""
    status: str
    outcome: str


@dataclass(frozen=True)
class BatchStep:
    batch_id: str
    outcome: str


@dataclass(frozen=True)
class StopCycleReport:
    parent_id: str
    dry_run: bool
    jobs: list[CycleStep]
    batches: list[BatchStep]


def stop_batch_cycle(
    ctx: OpsContext,
    job_id: str,
    *,
    by: str,
    dry_run: bool = False,
    cancel_batch: BatchCanceller | None = None,
) -> StopCycleReport:
    """Cancel a narrative job's checker(s), found by index query, its batch at Anthropic (when
    ``cancel_batch`` is given: the poller's checker cancels it otherwise, once it sees the request),
    and the parent itself while it has not finished. ``job_id`` may name the parent or a checker."""
    job = get_job(ctx, job_id)
    if job.job_type == AWAITING_NARRATIVE_BATCH and job.batch_job_id:
        parent = ctx.queue.get(job.batch_job_id)
        parent_id = job.batch_job_id
    elif job.job_type == CREATE_NARRATIVE_BATCH:
        parent, parent_id = job, job.job_id
    else:
        raise Invalid("job_id", f"{job_id} is a {job.job_type} job: only narrative jobs have a batch cycle")
    checkers = ctx.queue.checkers_of(parent) if parent else [job]
    reason = "batch check cycle stopped"
    steps = [_stop(ctx, c, "checker", by, reason, dry_run) for c in checkers]
    if parent is not None:
        steps.insert(0, _stop(ctx, parent, "parent", by, reason, dry_run))
    batch_ids = sorted({j.batch_id for j in [*([parent] if parent else []), *checkers] if j and j.batch_id})
    batches = []
    for batch_id in batch_ids:
        if dry_run:
            outcome = "would cancel at Anthropic"
        elif cancel_batch is None:
            outcome = (
                "not cancelled here (no ANTHROPIC_API_KEY): the checker cancels it when it sees the request"
            )
        else:
            outcome = cancel_batch(batch_id)
        batches.append(BatchStep(batch_id, outcome))
    return StopCycleReport(parent_id, dry_run, steps, batches)


def _stop(ctx: OpsContext, job: Job, role: str, by: str, reason: str, dry_run: bool) -> CycleStep:
    if job.status in TERMINAL:
        return CycleStep(job.job_id, role, job.status, f"already {job.status}")
    if "cancel" not in operator_actions(job.status):
        return CycleStep(job.job_id, role, job.status, f"left alone: cannot cancel a {job.status} job")
    if dry_run:
        return CycleStep(job.job_id, role, job.status, "would cancel")
    try:
        result: ActionResult = act(ctx, "cancel", job.job_id, by=by, reason=reason)
    except Refused as exc:
        return CycleStep(job.job_id, role, exc.status, f"left alone: {exc.message}")
    return CycleStep(job.job_id, role, result.status, result.message)


def anthropic_canceller(api_key: str, base_url: str | None) -> BatchCanceller:
    """Cancels through the Message Batches API (the narrative handlers' client)."""
    from delphi_jobs.narrative.batch_client import BatchApiError, BatchClient  # the SDK loads slowly

    client = BatchClient(api_key, base_url)

    def cancel(batch_id: str) -> str:
        try:
            info = client.cancel(batch_id)
        except BatchApiError as exc:
            return f"not cancelled: {exc}"
        return f"cancel sent; the batch is {info.processing_status}"

    return cancel
