"""CREATE_NARRATIVE_BATCH: plan a report's sections, submit ONE Anthropic batch, hand over to a checker.

The hand-off is one transaction: the parent becomes COMPLETED with ``batch_id`` and ``model`` while
its checker (AWAITING_NARRATIVE_BATCH) is inserted, so neither can exist without the other (defect 6).

A paid batch must never be submitted twice by accident (defect 5). Before submitting, the parent gets a
``batch_submission`` marker (fenced write); right after, its ``batch_id``. When a run finds:
- ``batch_id`` set: the submit happened; it only hands over (no second batch);
- a marker but no ``batch_id``: an earlier run died between submit and recording the id. It lists the
  batches created since the marker with the same number of requests: none, so nothing was paid, and
  it submits; exactly one, which it adopts; several, and it FAILS without submitting, naming them,
  for an operator to decide (set ``batch_id`` on the job to adopt one, or remove ``batch_submission``).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from delphi_jobs.handlers.base import Completed, Failed, JobContext, LeaseLost, Outcome, Stopped
from delphi_jobs.handlers.narrative_services import NarrativeServices, stored_section_map
from delphi_jobs.model import (
    AWAITING_NARRATIVE_BATCH,
    CREATE_NARRATIVE_BATCH,
    Job,
    JobValidationError,
    encode_json,
    format_timestamp,
    parse_timestamp,
    utcnow,
)
from delphi_jobs.narrative.batch_client import BatchApiError, BatchClient
from delphi_jobs.narrative.conversation import ConversationDataError, load_conversation
from delphi_jobs.narrative.prompts import batch_requests
from delphi_jobs.narrative.sections import plan_sections

MAX_TOKENS = 4096
RECOVERY_SLACK = timedelta(minutes=2)


class AmbiguousSubmission(Exception):
    pass


class CreateNarrativeBatchHandler:
    job_type = CREATE_NARRATIVE_BATCH

    def __init__(self, services: NarrativeServices) -> None:
        self._services = services

    def validate(self, job: Job) -> list[str]:
        problems = []
        try:
            job.zid()
        except JobValidationError as exc:
            problems.append(str(exc))
        if not self._services.model_for(job):
            problems.append("job_config.model: no model in the job's config and ANTHROPIC_MODEL is not set")
        if not self._services.settings.anthropic_api_key:
            problems.append("ANTHROPIC_API_KEY: not set in the poller's environment; nothing was submitted")
        try:
            job.config_bool("exclude_comment_selections", True)
        except JobValidationError as exc:
            problems.append(str(exc))
        return problems

    def run(self, ctx: JobContext) -> Outcome:
        if ctx.cancellation.is_set():
            return Stopped("cancelled before submitting")
        job = ctx.job
        model = str(self._services.model_for(job))
        client = self._services.batches()
        section_map = stored_section_map(job)
        batch_id = job.batch_id
        if batch_id:
            ctx.log.warning(f"batch {batch_id} was already submitted by an earlier run; handing over only")
        else:
            try:
                requests, section_map = self._plan(ctx, model)
            except ConversationDataError as exc:
                return Failed(str(exc))
            if not requests:
                return Failed(f"no section of conversation {job.zid()} has comments to write about")
            try:
                batch_id = self._recover(ctx, client, len(requests))
                if batch_id is None:
                    batch_id = self._submit(ctx, client, requests, section_map, model)
            except AmbiguousSubmission as exc:
                return Failed(str(exc))
            except BatchApiError as exc:
                return Failed(f"batch not submitted: {exc}", retryable=exc.retryable)
        return self._hand_over(ctx, batch_id, model, section_map)

    def _plan(self, ctx: JobContext, model: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
        job = ctx.job
        zid = job.zid()
        ctx.progress("plan", 0.0, f"reading conversation {zid}")
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
        ctx.progress("plan", 1.0, f"{len(plan.sections)} sections from {len(data.comments)} comments")
        return batch_requests(data, plan, model=model, max_tokens=MAX_TOKENS), plan.section_map

    def _recover(self, ctx: JobContext, client: BatchClient, request_count: int) -> str | None:
        marker_raw = ctx.job.item.get("batch_submission")
        if not marker_raw:
            return None
        marker = json.loads(str(marker_raw))
        started = parse_timestamp(marker.get("started_at"), "batch_submission.started_at") or utcnow()
        recent, complete = client.created_since(started - RECOVERY_SLACK)
        candidates = [b for b in recent if b.total_requests == request_count]
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
            ctx.checkpoint({"batch_id": candidates[0].id})
            return candidates[0].id
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
        requests: list[dict[str, Any]],
        section_map: dict[str, str],
        model: str,
    ) -> str:
        marker = {"started_at": format_timestamp(utcnow()), "requests": len(requests)}
        ctx.checkpoint({"batch_submission": encode_json(marker), "section_map": encode_json(section_map)})
        ctx.progress("submit", 0.0, f"submitting {len(requests)} requests to model {model}")
        info = client.create(requests)
        ctx.log.info(f"submitted batch {info.id} with {len(requests)} requests")
        try:
            ctx.checkpoint({"batch_id": info.id, "model": model})
        except LeaseLost:
            raise
        except Exception as exc:
            # The hand-over transaction writes batch_id too; failing here would strand a paid batch.
            ctx.log.warning(
                f"could not record batch_id before the hand-over ({type(exc).__name__}); going on"
            )
        return info.id

    def _hand_over(self, ctx: JobContext, batch_id: str, model: str, section_map: dict[str, str]) -> Outcome:
        job = ctx.job
        now = utcnow()
        first_check = format_timestamp(now + timedelta(seconds=self._services.recheck_delay(0)))
        report_id = self._services.report_id_for(job)
        checker_id = f"batch_check_{job.job_id}_{int(now.timestamp())}"
        checker = {
            "job_id": checker_id,
            "job_type": AWAITING_NARRATIVE_BATCH,
            "conversation_id": job.conversation_id,
            "report_id": report_id,
            "batch_id": batch_id,
            "batch_job_id": job.job_id,
            "model": model,
            "priority": job.priority,
            "section_map": encode_json(section_map),
            # next_check_at for readers; run_after is what makes a PENDING job due for our pollers.
            "next_check_at": first_check,
            "run_after": first_check,
            "job_config": {"job_type": AWAITING_NARRATIVE_BATCH, "report_id": report_id, "model": model},
            "created_by": "delphi-jobs",
        }
        ctx.log.info(f"checker {checker_id} will first look at batch {batch_id} at {first_check}")
        return Completed(
            results={
                "batch_id": batch_id,
                "checker_job_id": checker_id,
                "model": model,
                "sections": len(section_map),
                "report_id": report_id,
            },
            attributes={"batch_id": batch_id, "model": model, "section_map": encode_json(section_map)},
            children=(checker,),
        )
