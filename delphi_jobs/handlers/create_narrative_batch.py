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
them). So a conversation's reports take turns: before planning, a job writes ``{"queued_at"}`` as its
marker, then reads (consistently) the markers of the conversation's other CREATE jobs; while any of
them may be creating a batch or holds one it has not recorded (an unrecorded marker younger than
TURN_HORIZON), it gives the turn back (marker removed in the same write) and looks again later
(AWAITING_RECHECK, no attempt spent). Of two jobs that queue at once, the one reading last sees the
other, so no two create at once; a job that passed holds its marker until its batch id is recorded, so
a recovery only ever finds its own batch among the conversation's. A queued marker (no ``started_at``)
found by a later run means nothing was created: that run queues again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import timedelta
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
from delphi_jobs.handlers.narrative_services import BatchCheck, NarrativeServices, Submission
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
MAX_TURN_WAIT = 30.0
"""Seconds between two looks at whether the turn is free, at most (half the blocker's age, at least 1)."""


class AmbiguousSubmission(Exception):
    pass


@dataclass(frozen=True)
class _Plan:
    requests: list[dict[str, Any]]
    state: Submission
    """The job's state with the plan's section map and model."""


def _may_have_created(state: Submission) -> bool:
    """A marker written just before a create (``started_at``): that create may have made a batch."""
    return bool(state.batch_submission and "started_at" in state.batch_submission)


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
        waiting = self._take_turn(ctx, state)
        if waiting:
            return waiting
        if plan is None:
            planned = self._planned(ctx, state, model)
            if isinstance(planned, Failed):
                return replace(planned, state=replace(state, batch_submission=None))  # the turn, given back
            plan = planned
        try:
            state = self._submit(ctx, client, plan.state, plan.requests)
        except BatchApiError as exc:
            if exc.not_applied:  # no batch exists: the conversation's turn is given back
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

    def _take_turn(self, ctx: JobContext, state: Submission) -> Recheck | None:
        """Queue for the conversation's turn to submit (module docstring): None once it is ours (the
        queued marker stays until the batch is recorded), else a Recheck that gives it back."""
        queued = utcnow()
        ctx.checkpoint(replace(state, batch_submission={"queued_at": format_timestamp(queued)}))
        others = self._services.submissions_in_flight(ctx.job, queued - TURN_HORIZON)
        if not others:
            return None
        age = (queued - min(others.values())).total_seconds()
        delay = min(MAX_TURN_WAIT, max(1.0, age / 2)) * random.uniform(0.75, 1.25)
        ctx.log.info(
            f"waiting for the conversation's other report(s) {', '.join(sorted(others))} to record their "
            f"batch before submitting; looking again in {delay:.1f}s"
        )
        return Recheck(at=queued + timedelta(seconds=delay), state=replace(state, batch_submission=None))

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
    ) -> Submission:
        """Marker first (fenced), then the paid call, then the id: see the module docstring."""
        marker = {"started_at": format_timestamp(utcnow()), "requests": len(requests)}
        state = replace(state, batch_submission=marker)
        ctx.checkpoint(state)
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
