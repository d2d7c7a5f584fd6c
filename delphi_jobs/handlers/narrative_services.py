"""What both narrative handlers use: the stores, the batch client, the Polis database, and the rules
for which model and report id a job means. Built once per poller from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from delphi_jobs import polisdb
from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.model import (
    CREATE_NARRATIVE_BATCH,
    Job,
    JobValidationError,
    count_field,
    decode_state,
    document_field,
    parse_timestamp,
    string_map_field,
    text_field,
)
from delphi_jobs.narrative.batch_client import BatchClient
from delphi_jobs.queue import JobQueue
from delphi_jobs.reports import NarrativeReportStore
from delphi_jobs.states import Status
from delphi_jobs.store import open_store
from delphi_jobs.topic_tables import TopicStore

MAX_RECHECK_SECONDS = 600.0
GIVE_UP_HOURS = 30.0


@dataclass(frozen=True)
class Submission:
    """On a CREATE_NARRATIVE_BATCH job: what it keeps across runs so a paid batch is never submitted
    twice (see create_narrative_batch.py)."""

    batch_submission: dict[str, Any] | None = document_field()
    """``{"queued_at", "ticket"}`` while the job waits for its conversation's turn to submit, then
    ``{"started_at", "requests", "ticket"}`` written (fenced) just before the batch is created
    (create_narrative_batch.py)."""
    section_map: dict[str, str] | None = string_map_field()
    """custom_id -> section name, never re-derived from the ids."""
    batch_id: str | None = text_field(external=True)
    model: str | None = text_field()


TURN_ATTRIBUTES = ("job_id", "job_type", "status", "batch_id", "batch_submission", "lock_expires_at")
"""What a look at a conversation's turn to submit reads of each of its jobs."""


@dataclass(frozen=True)
class Contender:
    """Another CREATE job of the conversation, in line for its turn to submit or holding it."""

    job_id: str
    ticket: tuple[datetime, str]
    """When it first queued, and its id: its place in the line."""
    started_at: datetime | None
    """When it was about to create a batch it has not recorded: it holds the turn. None: it waits."""


def _contender(job: Job, started_since: datetime, queued_since: datetime, now: datetime) -> Contender | None:
    """``job`` as a contender for its conversation's turn (NarrativeServices.contenders), or None."""
    try:
        marker = decode_state(Submission, job.item).batch_submission or {}
        started = parse_timestamp(marker.get("started_at"), "batch_submission.started_at")
        queued = parse_timestamp(marker.get("queued_at"), "batch_submission.queued_at")
        first = parse_timestamp(marker.get("ticket"), "batch_submission.ticket")
    except JobValidationError:
        return None  # such a record fails validation and never runs its handler
    if started is not None and started >= started_since:
        return Contender(job.job_id, (first or started, job.job_id), started)
    live = job.status == Status.AWAITING_RECHECK or (
        job.status == Status.PROCESSING and job.lock_expires_at is not None and job.lock_expires_at >= now
    )
    if queued is not None and queued >= queued_since and live:
        return Contender(job.job_id, (first or queued, job.job_id), None)
    return None


@dataclass(frozen=True)
class BatchCheck:
    """On an AWAITING_NARRATIVE_BATCH job: which batch to check, for whom, and how often it was."""

    batch_id: str | None = text_field(required="the Anthropic msgbatch_ id to check", external=True)
    batch_job_id: str | None = text_field(required="the CREATE_NARRATIVE_BATCH job this checker reports to")
    model: str | None = text_field()
    section_map: dict[str, str] | None = string_map_field()
    check_count: int = count_field()
    batch_status: str | None = text_field()


@dataclass(frozen=True)
class ModelChoice:
    """The model a narrative runs on, and what the job asked for."""

    model: str | None
    """None when there is no usable model (the job fails validation, nothing is submitted)."""
    requested: str | None = None
    """The job's own ``model`` setting (the report client always sends one)."""

    @property
    def substituted(self) -> bool:
        return self.requested is not None and self.requested != self.model

    def problem(self) -> str | None:
        """Why there is no usable model, naming the settings; None when there is one."""
        if self.model:
            return None
        if self.requested:
            return (
                f"job_config.model: {self.requested!r} is not in DELPHI_ALLOWED_MODELS and ANTHROPIC_MODEL "
                "is not set; nothing was submitted"
            )
        return "ANTHROPIC_MODEL: not set in the poller's environment; nothing was submitted"


@dataclass(frozen=True)
class NarrativeServices:
    settings: Settings
    topics: TopicStore
    reports: NarrativeReportStore
    batches: Callable[[], BatchClient]
    database: Callable[[], Any]
    jobs: JobQueue
    """Read only here: which batches other jobs of a conversation have recorded."""

    @classmethod
    def from_settings(cls, settings: Settings) -> NarrativeServices:
        client = make_client(settings)

        def batches() -> BatchClient:
            if not settings.anthropic_api_key:
                raise RuntimeError("ANTHROPIC_API_KEY is not set")
            return BatchClient(settings.anthropic_api_key, settings.anthropic_base_url)

        return cls(
            settings=settings,
            topics=TopicStore(client, settings),
            reports=NarrativeReportStore(client, settings.reports_table),
            batches=batches,
            database=lambda: polisdb.connect(settings),
            jobs=JobQueue.for_settings(open_store(settings), settings),
        )

    def batches_of_others(self, job: Job) -> dict[str, str]:
        """batch_id -> job_id for the batches other jobs of ``job``'s conversation have recorded (a
        second report's CREATE job and its checker): never ``job``'s own lost batch."""
        if not job.conversation_id:
            return {}
        return {
            str(other.batch_id): other.job_id
            for other in self.jobs.conversation_jobs(job.conversation_id)
            if other.batch_id and other.job_id != job.job_id and other.batch_job_id != job.job_id
        }

    def contenders(
        self,
        job: Job,
        *,
        started_since: datetime,
        queued_since: datetime,
        now: datetime,
        consistent: bool,
    ) -> list[Contender]:
        """The other CREATE jobs of ``job``'s conversation that hold its turn to submit (a started
        marker written since ``started_since`` and no ``batch_id``, whatever their status) or wait in
        line for it (a queued marker written since ``queued_since`` by a job AWAITING_RECHECK, or
        PROCESSING under a lease that has not run out). See create_narrative_batch.py.

        Without ``consistent``, the index's view, read cheaply (a few attributes): enough to keep the
        line in order. With it, every job that may hold the turn is read again with a consistent read,
        since the index may not show a marker written a moment ago: no two jobs create at once rests on
        this read."""
        if not job.conversation_id:
            return []
        found: list[Contender] = []
        for listed in self.jobs.conversation_jobs(job.conversation_id, attributes=TURN_ATTRIBUTES):
            if (
                listed.job_id == job.job_id
                or listed.job_type != CREATE_NARRATIVE_BATCH
                or listed.status == Status.COMPLETED  # final, and its batch, if any, is recorded
                or listed.batch_id
            ):
                continue
            other = self.jobs.get(listed.job_id) if consistent else listed
            if other is None or other.batch_id:
                continue
            contender = _contender(other, started_since, queued_since, now)
            if contender is not None:
                found.append(contender)
        return found

    def choose_model(self, job: Job) -> ModelChoice:
        """ANTHROPIC_MODEL, unless the job asks for a model in DELPHI_ALLOWED_MODELS. The operator pays:
        the original poller always used ANTHROPIC_MODEL, and the report client asks for a fixed model."""
        wish = job.config_value("model")
        requested = str(wish).strip() if wish is not None else ""
        if not requested:
            return ModelChoice(self.settings.anthropic_model)
        if requested in self.settings.allowed_models:
            return ModelChoice(requested, requested)
        return ModelChoice(self.settings.anthropic_model, requested)

    @staticmethod
    def report_id_for(job: Job) -> str:
        """report_id, else the one in the config, else the zid: results are never dropped for lack of one."""
        return job.effective_report_id or str(job.conversation_id)

    def recheck_delay(self, checks_done: int) -> float:
        """From DELPHI_BATCH_RECHECK_SECONDS, doubling per check, capped at 10 minutes."""
        base = self.settings.batch_recheck_seconds
        return float(min(MAX_RECHECK_SECONDS, base * 2 ** max(0, checks_done)))
