"""CREATE_NARRATIVE_BATCH: plan a report's sections, submit ONE Anthropic batch, hand over to a checker.

The hand-off is one transaction: the parent becomes COMPLETED with ``batch_id`` and ``model`` while
its checker (AWAITING_NARRATIVE_BATCH) is inserted, so neither can exist without the other (defect 6).

A paid batch must never be submitted twice by accident (defect 5). Before submitting, the parent gets a
``batch_submission`` marker (fenced write); right after, its ``batch_id``. When a run finds:
- ``batch_id`` set: the submit happened; it only hands over (no second batch);
- a marker with ``started_at`` but no ``batch_id``: an earlier run died between submit and recording
  the id. It lists the batches that can be that submission's: created within the create call's reach of
  the marker (RECOVERY_SLACK before it for clock skew, CREATE_REACH after it), with the same number of
  requests, and not recorded as ``batch_id`` by another job of the same conversation. None: nothing was
  paid, and it submits; exactly one, which it adopts; several, and it FAILS without submitting, naming
  them, for an operator to decide (set ``batch_id`` on the job to adopt one, or remove
  ``batch_submission``).

The Anthropic API cannot say whose a batch is: a listed batch shows only its size and times. Two
reports of one conversation (same size) whose creates overlapped, with neither id recorded, could not
be told apart (issue 11 item 7: a recovery adopting the other's batch, or failing both and stranding
them). So a conversation's reports take turns, in two steps:

1. In line: the job writes ``{"queued_at", "ticket"}`` (the ticket: when it first queued) and looks at
   the conversation's other CREATE jobs through the index. While one holds the turn (a started marker,
   below) or has an older ticket and still waits, it goes AWAITING_RECHECK (no attempt spent) keeping
   its ticket, and looks again after about a second per job ahead of it. Cheap, and only for order:
   the line keeps many reports from contending at once.
2. The turn: after planning, the job writes ``{"started_at", "requests", "ticket"}`` and reads the other
   jobs again, each with a consistent read. Should another hold a started marker, it goes back in line
   (step 1, same ticket); otherwise it creates. Of two jobs that write started markers at once, the one
   reading last sees the other's, so no two ever create at once.

A started marker holds the turn until its batch id is recorded (or for TURN_HORIZON, the bound behind a
job that died and is never rescued), so a recovery only ever finds its own batch among the
conversation's. A queued marker found by a later run means nothing was created: that run queues again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from delphi_jobs import faults
from delphi_jobs.handlers.base import (
    Completed,
    Failed,
    JobContext,
    LeaseLost,
    Outcome,
    Paused,
    Recheck,
    Stopped,
    StopReason,
)
from delphi_jobs.handlers.narrative_services import BatchCheck, Contender, NarrativeServices, Submission
from delphi_jobs.model import (
    AWAITING_NARRATIVE_BATCH,
    CREATE_NARRATIVE_BATCH,
    ChildJob,
    Job,
    JobValidationError,
    format_timestamp,
    parse_timestamp,
    utcnow,
)
from delphi_jobs.narrative.batch_client import BatchApiError, BatchClient
from delphi_jobs.narrative.conversation import ConversationDataError, load_conversation
from delphi_jobs.narrative.prompts import batch_requests
from delphi_jobs.narrative.sections import plan_sections

STEPS = 3
"""plan, submit, hand over"""
RECOVERY_SLACK = timedelta(minutes=2)
CREATE_REACH = timedelta(seconds=60) + RECOVERY_SLACK
"""A create that started at the marker ends within the client's 60 s timeout: batches created later
belong to somebody else."""
TURN_HORIZON = CREATE_REACH + 2 * RECOVERY_SLACK
"""Another job's marker older than this no longer holds the conversation's turn: a batch created now
lies outside its recovery window, and its batch outside ours, even with the two pollers' clocks
RECOVERY_SLACK apart. Bounds the wait behind a job that died and is not rescued."""
QUEUE_HORIZON = timedelta(minutes=2)
"""A queued marker older than this is not in line any more: a waiting job writes its marker again at
every look, at most MAX_TURN_WAIT (jittered) apart."""
MAX_TURN_WAIT = 30.0
"""Seconds between two looks at the line, at most: about one per job ahead, or half the age of the
marker holding the turn (a job that died is rescued only after its lease), at least 1."""


class AmbiguousSubmission(Exception):
    pass


@dataclass(frozen=True)
class _Plan:
    requests: list[dict[str, Any]]
    state: Submission
    """The job's state with the plan's section map and model."""


class _TurnTaken(Exception):
    """Another job of the conversation holds the turn: seen by the consistent read after our started
    marker was written."""

    def __init__(self, holders: list[Contender]) -> None:
        super().__init__(", ".join(c.job_id for c in holders))
        self.holders = holders


def _may_have_created(state: Submission) -> bool:
    """A marker written just before a create (``started_at``): that create may have made a batch."""
    return bool(state.batch_submission and "started_at" in state.batch_submission)


def _ticket(state: Submission) -> datetime:
    """When the job first queued for its conversation's turn (now, if it never did)."""
    marker = state.batch_submission or {}
    for key in ("ticket", "queued_at", "started_at"):
        try:
            first = parse_timestamp(marker.get(key), f"batch_submission.{key}")
        except JobValidationError:
            continue
        if first is not None:
            return first
    return utcnow()


class CreateNarrativeBatchHandler:
    job_type = CREATE_NARRATIVE_BATCH
    state_type = Submission

    def __init__(self, services: NarrativeServices) -> None:
        self._services = services

    def validate(self, job: Job) -> list[str]:
        problems = []
        try:
            job.zid()
        except JobValidationError as exc:
            problems.append(str(exc))
        no_model = self._services.choose_model(job).problem()
        if no_model:
            problems.append(no_model)
        if not self._services.settings.anthropic_api_key:
            problems.append("ANTHROPIC_API_KEY: not set in the poller's environment; nothing was submitted")
        try:
            job.config_bool("exclude_comment_selections", True)
        except JobValidationError as exc:
            problems.append(str(exc))
        return problems

    def run(self, ctx: JobContext) -> Outcome:
        job = ctx.job
        state: Submission = ctx.state
        client = self._services.batches()
        if ctx.cancellation.is_set():
            if ctx.cancellation.reason == StopReason.CANCEL and state.batch_id:
                self._cancel_batch(ctx, client, state.batch_id)
            return Stopped("stopped before handing over")
        choice = self._services.choose_model(job)
        model = str(choice.model)
        if choice.substituted:
            ctx.log.info(f"model {choice.requested} is not allowed (DELPHI_ALLOWED_MODELS); using {model}")
        if state.batch_id:
            ctx.log.warning(
                f"batch {state.batch_id} was already submitted by an earlier run; handing over only"
            )
            return self._hand_over(ctx, state)
        plan: _Plan | None = None
        if _may_have_created(state):
            planned = self._planned(ctx, state, model)
            if isinstance(planned, Failed):
                return planned
            plan = planned
            try:
                adopted = self._recover(ctx, client, plan.state, len(plan.requests))
            except AmbiguousSubmission as exc:
                return Failed(str(exc))
            except BatchApiError as exc:
                return Failed(f"batch not submitted: {exc}", retryable=exc.retryable)
            if adopted:
                ctx.step(3, STEPS, "hand over", f"batch {adopted.batch_id}")
                return self._hand_over(ctx, adopted)
        pause = ctx.pause_requested()
        if pause:
            # The checkpoint before anything is paid for: nothing submitted, nothing to recover.
            kept = plan.state if plan else state
            return Paused(replace(kept, batch_submission=None), note=f"paused before submitting: {pause}")
        ticket = _ticket(state)
        waiting = self._wait_in_line(ctx, state, ticket)
        if waiting:
            return waiting
        if plan is None:
            planned = self._planned(ctx, state, model)
            if isinstance(planned, Failed):
                return replace(planned, state=replace(state, batch_submission=None))  # out of the line
            plan = planned
        try:
            state = self._submit(ctx, client, plan.state, plan.requests, ticket)
        except _TurnTaken as taken:
            return self._later(ctx, plan.state, ticket, taken.holders, ahead=0)
        except BatchApiError as exc:
            if exc.not_applied:  # no batch exists: the conversation's turn is free again
                ctx.checkpoint(replace(plan.state, batch_submission=None))
            return Failed(f"batch not submitted: {exc}", retryable=exc.retryable)
        ctx.step(3, STEPS, "hand over", f"batch {state.batch_id}")
        return self._hand_over(ctx, state)

    def _planned(self, ctx: JobContext, state: Submission, model: str) -> _Plan | Failed:
        """The report's requests, and ``state`` with their section map and the model."""
        try:
            requests, section_map = self._plan(ctx, model)
        except ConversationDataError as exc:
            return Failed(str(exc))
        if not requests:
            return Failed(f"no section of conversation {ctx.job.zid()} has comments to write about")
        return _Plan(requests, replace(state, section_map=section_map, model=model))

    def _contenders(self, job: Job, *, consistent: bool) -> list[Contender]:
        now = utcnow()
        return self._services.contenders(
            job,
            started_since=now - TURN_HORIZON,
            queued_since=now - QUEUE_HORIZON,
            now=now,
            consistent=consistent,
        )

    def _wait_in_line(self, ctx: JobContext, state: Submission, ticket: datetime) -> Recheck | None:
        """Step 1 of the turn (module docstring): None when nobody holds the turn and nobody queued
        before us; else a Recheck that keeps our place in line."""
        queued = {"queued_at": format_timestamp(utcnow()), "ticket": format_timestamp(ticket)}
        ctx.checkpoint(replace(state, batch_submission=queued))
        others = self._contenders(ctx.job, consistent=False)
        holders = [c for c in others if c.started_at is not None]
        ahead = sum(1 for c in others if c.started_at is None and c.ticket < (ticket, ctx.job.job_id))
        if not holders and not ahead:
            return None
        return self._later(ctx, state, ticket, holders, ahead)

    def _later(
        self, ctx: JobContext, state: Submission, ticket: datetime, holders: list[Contender], ahead: int
    ) -> Recheck:
        """Back in line with our ticket: AWAITING_RECHECK (no attempt spent), due again after about a
        second per job ahead, or half the age of the oldest marker holding the turn."""
        now = utcnow()
        ages = [(now - c.started_at).total_seconds() / 2 for c in holders if c.started_at is not None]
        delay = min(MAX_TURN_WAIT, max([1.0, float(ahead), *ages])) * random.uniform(0.75, 1.25)
        held = f"held by {', '.join(c.job_id for c in holders)}" if holders else "free"
        ctx.log.info(
            f"waiting for the conversation's turn to submit (turn {held}; {ahead} report(s) ahead in line); "
            f"looking again in {delay:.1f}s"
        )
        queued = {"queued_at": format_timestamp(now), "ticket": format_timestamp(ticket)}
        return Recheck(at=now + timedelta(seconds=delay), state=replace(state, batch_submission=queued))

    @staticmethod
    def _cancel_batch(ctx: JobContext, client: BatchClient, batch_id: str) -> None:
        try:
            client.cancel(batch_id)
            ctx.log.warning(f"cancel requested: batch {batch_id} cancelled at Anthropic")
        except BatchApiError as exc:
            ctx.log.warning(f"cancel requested: cancelling batch {batch_id} failed ({exc}); it may still run")

    def _plan(self, ctx: JobContext, model: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
        job = ctx.job
        zid = job.zid()
        ctx.step(1, STEPS, "plan", f"reading conversation {zid}")
        conn = self._services.database()
        try:
            data = load_conversation(
                conn,
                zid,
                math_env=self._services.settings.math_env,
                exclude_comment_selections=job.config_bool("exclude_comment_selections", True),
            )
        finally:
            conn.close()
        topics = self._services.topics.load(str(zid))
        plan = plan_sections(data, topics, job.job_id)
        for skipped in plan.skipped:
            ctx.log.info(f"section skipped: {skipped}")
        ctx.report(message=f"{len(plan.sections)} sections from {len(data.comments)} comments")
        return batch_requests(data, plan, model=model), plan.section_map

    def _recover(
        self, ctx: JobContext, client: BatchClient, state: Submission, request_count: int
    ) -> Submission | None:
        """After an interrupted submission: the batch it created, adopted; None when there is none."""
        marker = state.batch_submission
        if not marker:
            return None
        started = parse_timestamp(marker.get("started_at"), "batch_submission.started_at") or utcnow()
        recent, complete = client.created_since(started - RECOVERY_SLACK)
        others = self._services.batches_of_others(ctx.job)
        candidates = [
            b
            for b in recent
            if b.total_requests == request_count
            and b.created_at <= started + CREATE_REACH
            and b.id not in others
        ]
        for batch in recent:
            if batch.id in others:
                ctx.log.info(f"batch {batch.id} belongs to job {others[batch.id]}; not ours")
        if not complete:
            raise AmbiguousSubmission(
                f"an earlier submission was interrupted and more batches were created since "
                f"{format_timestamp(started)} than can be checked; not submitting another. Set batch_id on "
                "this job to adopt the right one, or remove batch_submission to submit anew"
            )
        if not candidates:
            ctx.log.warning("an earlier submission was interrupted before creating a batch; submitting again")
            return None
        if len(candidates) == 1:
            ctx.log.warning(
                f"adopting batch {candidates[0].id}, created by an interrupted earlier submission"
            )
            adopted = replace(state, batch_id=candidates[0].id)
            ctx.checkpoint(adopted)
            return adopted
        ids = ", ".join(b.id for b in candidates)
        raise AmbiguousSubmission(
            f"an earlier submission was interrupted and {len(candidates)} batches of {request_count} "
            f"requests were created since ({ids}); not submitting another. Set batch_id on this job to "
            "adopt one, or remove batch_submission to submit anew, then retry the job"
        )

    def _submit(
        self,
        ctx: JobContext,
        client: BatchClient,
        state: Submission,
        requests: list[dict[str, Any]],
        ticket: datetime,
    ) -> Submission:
        """The started marker (fenced) and step 2 of the turn, then the paid call, then the id: see the
        module docstring. Raises _TurnTaken when another job of the conversation holds the turn."""
        marker = {
            "started_at": format_timestamp(utcnow()),
            "requests": len(requests),
            "ticket": format_timestamp(ticket),
        }
        state = replace(state, batch_submission=marker)
        ctx.checkpoint(state)
        holders = [c for c in self._contenders(ctx.job, consistent=True) if c.started_at is not None]
        if holders:
            raise _TurnTaken(holders)
        ctx.step(2, STEPS, "submit", f"submitting {len(requests)} requests to model {state.model}")
        faults.point("before_submit")
        info = client.create(requests)
        faults.point("after_submit")
        ctx.log.info(f"submitted batch {info.id} with {len(requests)} requests")
        state = replace(state, batch_id=info.id)
        try:
            ctx.checkpoint(state)
        except LeaseLost:
            raise
        except Exception as exc:
            # The hand-over transaction writes batch_id too; failing here would strand a paid batch.
            ctx.log.warning(
                f"could not record batch_id before the hand-over ({type(exc).__name__}); going on"
            )
        return state

    def _hand_over(self, ctx: JobContext, state: Submission) -> Outcome:
        job = ctx.job
        batch_id = str(state.batch_id)
        model = state.model or str(self._services.choose_model(job).model)
        section_map = state.section_map or {}
        now = utcnow()
        first_check = now + timedelta(seconds=self._services.recheck_delay(0))
        report_id = self._services.report_id_for(job)
        checker_id = f"batch_check_{job.job_id}_{int(now.timestamp())}"
        checker = ChildJob(
            job_id=checker_id,
            job_type=AWAITING_NARRATIVE_BATCH,
            due_at=first_check,
            state=BatchCheck(
                batch_id=batch_id, batch_job_id=job.job_id, model=model, section_map=section_map
            ),
            fields={
                "conversation_id": job.conversation_id,
                "report_id": report_id,
                "priority": job.priority,
                "job_config": {"job_type": AWAITING_NARRATIVE_BATCH, "report_id": report_id, "model": model},
                "created_by": "delphi-jobs",
            },
        )
        ctx.log.info(
            f"checker {checker_id} will first look at batch {batch_id} at {format_timestamp(first_check)}"
        )
        return Completed(
            results={
                "batch_id": batch_id,
                "checker_job_id": checker_id,
                "model": model,
                "sections": len(section_map),
                "report_id": report_id,
            },
            state=replace(state, batch_id=batch_id, model=model, section_map=section_map),
            children=(checker,),
        )
