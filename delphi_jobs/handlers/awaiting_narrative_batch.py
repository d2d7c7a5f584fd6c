"""AWAITING_NARRATIVE_BATCH: check a submitted batch; when it has ended, store every result.

Schedule: ``in_progress`` and ``canceling`` (a state, not an error) go back to AWAITING_RECHECK with
``next_check_at`` growing from DELPHI_BATCH_RECHECK_SECONDS, doubling, to 10 minutes; a batch still
not ended 30 hours after its creation ends the checker FAILED. Transient API errors re-check later.

Results (defect 6: nothing is dropped silently): each ``succeeded`` result becomes a report item (the
model that answered, the parent CREATE job's id, and as timestamp the batch's ``ended_at``: fixed per
batch, so processing again overwrites); refusals, ``errored`` (with their error type), ``canceled``
and ``expired`` results and malformed lines are counted per section. The checker ends COMPLETED when
at least one section was stored, else FAILED.

The parent CREATE job stays COMPLETED (the hand-off), but its record alone tells the narrative's
outcome: whenever the checker ends (results stored, given up, cancelled), it sets the parent's
``job_results.result_type`` to SUCCESS (every section stored), PARTIAL (some), FAILURE (none, or the
checker failed) or CANCELLED, with the counts under ``job_results.narrative``, and an
``error_message`` when nothing was stored (docs/contract.md, "Outcome fields").
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from delphi_jobs import faults
from delphi_jobs.handlers.base import (
    Annotation,
    Completed,
    Failed,
    JobContext,
    Outcome,
    Recheck,
    Stopped,
    StopReason,
)
from delphi_jobs.handlers.narrative_services import GIVE_UP_HOURS, BatchCheck, NarrativeServices
from delphi_jobs.model import AWAITING_NARRATIVE_BATCH, Job, JobValidationError, format_timestamp, utcnow
from delphi_jobs.narrative.batch_client import BatchApiError, BatchClient, BatchInfo, ResultLine
from delphi_jobs.reports import ReportSection

PROGRESS_EVERY = 10


class AwaitingNarrativeBatchHandler:
    job_type = AWAITING_NARRATIVE_BATCH
    state_type = BatchCheck

    def __init__(self, services: NarrativeServices) -> None:
        self._services = services

    def validate(self, job: Job) -> list[str]:
        problems = []
        try:
            job.zid()
        except JobValidationError as exc:
            problems.append(str(exc))
        if not self._services.settings.anthropic_api_key:
            problems.append("ANTHROPIC_API_KEY: not set in the poller's environment")
        return problems

    def run(self, ctx: JobContext) -> Outcome:
        outcome = self._check(ctx)
        parent = str(ctx.state.batch_job_id)
        if isinstance(outcome, Failed) and not outcome.annotate:
            note = {"outcome": "failure", "error": outcome.reason}
            told = Annotation(parent, {"result_type": "FAILURE", "narrative": note}, outcome.reason)
            return replace(outcome, annotate=(told,))
        if isinstance(outcome, Stopped) and ctx.cancellation.reason == StopReason.CANCEL:
            message = f"narrative cancelled: {ctx.cancellation.detail}"
            note = {"outcome": "cancelled", "error": message}
            told = Annotation(parent, {"result_type": "CANCELLED", "narrative": note}, message)
            return replace(outcome, annotate=(told,))
        return outcome

    def _check(self, ctx: JobContext) -> Outcome:
        state: BatchCheck = ctx.state
        batch_id = str(state.batch_id)
        client = self._services.batches()
        if ctx.cancellation.reason == StopReason.CANCEL:
            return self._cancel_batch(ctx, client, batch_id)
        ctx.step(1, 2, "check", f"check {state.check_count + 1} of batch {batch_id}")
        try:
            info = client.retrieve(batch_id)
        except BatchApiError as exc:
            return self._api_trouble(ctx, exc, state)
        status = info.processing_status
        ctx.log.info(f"batch {batch_id} is {status}: {dict(info.request_counts)}")
        if status in ("in_progress", "canceling"):
            age = utcnow() - info.created_at
            if age > timedelta(hours=GIVE_UP_HOURS):
                return Failed(f"gave up: batch {batch_id} still {status} {age} after its creation")
            if ctx.cancellation.reason == StopReason.CANCEL:  # asked while we were looking
                return self._cancel_batch(ctx, client, batch_id)
            return Recheck(
                utcnow() + timedelta(seconds=self._services.recheck_delay(state.check_count)),
                results={"batch_status": status, "request_counts": dict(info.request_counts)},
                state=replace(state, check_count=state.check_count + 1, batch_status=status),
            )
        if status != "ended":
            return Failed(f"batch {batch_id} has an unknown processing_status {status!r}")
        return self._store_results(ctx, client, info, replace(state, batch_status=status))

    def _cancel_batch(self, ctx: JobContext, client: BatchClient, batch_id: str) -> Outcome:
        try:
            client.cancel(batch_id)
            ctx.log.warning(f"cancel requested: batch {batch_id} cancelled at Anthropic")
        except BatchApiError as exc:
            ctx.log.warning(f"cancel requested: cancelling batch {batch_id} failed ({exc}); it may still run")
        return Stopped("checker cancelled")

    def _api_trouble(self, ctx: JobContext, exc: BatchApiError, state: BatchCheck) -> Outcome:
        if not exc.retryable:
            return Failed(str(exc))
        ctx.log.warning(f"{exc}; checking again later")
        return self._later(state)

    def _later(self, state: BatchCheck) -> Recheck:
        return Recheck(
            utcnow() + timedelta(seconds=self._services.recheck_delay(state.check_count)),
            state=replace(state, check_count=state.check_count + 1),
        )

    def _store_results(
        self, ctx: JobContext, client: BatchClient, info: BatchInfo, state: BatchCheck
    ) -> Outcome:
        job = ctx.job
        zid = job.zid()
        report_id = self._services.report_id_for(job)
        section_map = state.section_map or {}
        ctx.step(2, 2, "store results", f"batch {info.id} ended")
        if not section_map:
            ctx.log.warning(
                "no section map on the job: section names fall back to the custom_id minus the zid"
            )
        # The time the batch ended ("Generated" in the report client), fixed per batch: a re-run overwrites.
        timestamp = format_timestamp(info.ended_at or info.created_at)
        counts: Counter[str] = Counter()
        errors: dict[str, str] = {}
        stored: list[str] = []
        seen: set[str] = set()
        total = max(1, info.total_requests)
        try:
            for n, line in enumerate(client.results(info.id), start=1):
                if ctx.cancellation.is_set():
                    return Stopped("stopped while storing results")
                section = self._record(
                    ctx, line, section_map, zid, report_id, timestamp, info.id, counts, errors
                )
                if section:
                    stored.append(section)
                    faults.point("between_results")
                if line.custom_id:
                    seen.add(line.custom_id)
                if n % PROGRESS_EVERY == 0:
                    ctx.report(50 + 50 * n / total, f"{n} of {total} results read")
        except BatchApiError as exc:
            return self._api_trouble(ctx, exc, state)
        except (BotoCoreError, ClientError) as exc:
            # Storing is idempotent (fixed timestamp per batch): try the whole batch again later.
            ctx.log.warning(f"storing results failed ({type(exc).__name__}: {exc}); checking again later")
            return Recheck(
                utcnow() + timedelta(seconds=self._services.recheck_delay(0)),
                state=replace(state, check_count=state.check_count + 1),
            )
        missing = sorted(set(section_map) - seen)
        if missing:
            counts["missing"] = len(missing)
            ctx.log.warning(f"{len(missing)} requests have no result line: {', '.join(missing)}")
        summary: dict[str, Any] = {
            "batch_id": info.id,
            "report_id": report_id,
            "stored": len(stored),
            "errored": counts["errored"],
            "expired": counts["expired"],
            "canceled": counts["canceled"],
            "refused": counts["refused"],
            "malformed": counts["malformed"],
            "missing": counts["missing"],
            "foreign": counts["foreign"],
            "sections": sorted(stored),
            "errors": errors,
            "timestamp": timestamp,
        }
        annotate = (_parent_outcome(str(state.batch_job_id), summary),)
        if not stored:
            return Failed(
                f"batch {info.id} ended with no section stored ({_count_text(summary)})",
                results=summary,
                state=state,
                annotate=annotate,
            )
        ctx.log.info(f"stored {len(stored)} sections for report {report_id} ({_count_text(summary)})")
        return Completed(results=summary, state=state, annotate=annotate)

    def _record(
        self,
        ctx: JobContext,
        line: ResultLine,
        section_map: dict[str, str],
        zid: int,
        report_id: str,
        timestamp: str,
        batch_id: str,
        counts: Counter[str],
        errors: dict[str, str],
    ) -> str | None:
        """Store one result line or count why not; returns the stored section name."""
        if line.malformed:
            counts["malformed"] += 1
            ctx.log.warning(f"malformed result line skipped: {line.malformed}")
            return None
        if section_map and line.custom_id not in section_map:
            # Not one of our requests: an adopted batch that was someone else's. Never store it.
            counts["foreign"] += 1
            ctx.log.warning(f"result {line.custom_id!r} is not a request of this report; not stored")
            return None
        section = section_map.get(line.custom_id) or line.custom_id.removeprefix(f"{zid}_")
        if line.type == "succeeded" and line.stop_reason == "refusal":
            counts["refused"] += 1
            errors[section] = "refusal"
            return None
        if line.type != "succeeded":
            counts[line.type] += 1
            errors[section] = line.error_type or line.type
            detail = f": {line.error_message}" if line.error_message else ""
            ctx.log.warning(f"section {section}: {line.type} ({line.error_type or '-'}){detail}")
            return None
        model = line.model or str(ctx.state.model or "")
        self._services.reports.put(
            ReportSection(
                report_id=report_id,
                section=section,
                model=model,
                timestamp=timestamp,
                report_data=line.text,
                job_id=str(ctx.state.batch_job_id),
                batch_id=batch_id,
                metadata={
                    "custom_id": line.custom_id,
                    "stop_reason": line.stop_reason,
                    "usage": dict(line.usage),
                    "valid_json": _is_json(line.text),
                },
            )
        )
        counts["stored"] += 1
        return section


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


FAILED_KINDS = ("errored", "expired", "canceled", "refused", "malformed", "missing")
"""Requests of ours that stored nothing (``foreign`` lines were never ours, so they do not count)."""


def _parent_outcome(parent_id: str, summary: dict[str, Any]) -> Annotation:
    """SUCCESS, PARTIAL or FAILURE on the parent, with the counts; an error_message only when nothing
    was stored (the original's wording), removed otherwise (a re-run may have fixed it)."""
    stored = int(summary["stored"])
    failed = sum(int(summary[kind]) for kind in FAILED_KINDS)
    error = None
    if stored and not failed:
        result_type = "SUCCESS"
    elif stored:
        result_type = "PARTIAL"
    else:
        result_type = "FAILURE"
        counts = _count_text(summary) or "no result lines"
        error = (
            f"{failed} of {failed} batch requests failed ({counts})"
            if failed
            else f"no section stored ({counts})"
        )
    narrative = {**summary, "outcome": result_type.lower()}
    return Annotation(parent_id, {"result_type": result_type, "narrative": narrative}, error)


def _count_text(summary: dict[str, Any]) -> str:
    keys = ("stored", "errored", "expired", "canceled", "refused", "malformed", "missing", "foreign")
    return ", ".join(f"{summary[k]} {k}" for k in keys if summary[k])
