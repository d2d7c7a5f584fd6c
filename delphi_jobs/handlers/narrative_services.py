"""What both narrative handlers use: the stores, the batch client, the Polis database, and the rules
for which model and report id a job means. Built once per poller from the settings."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from delphi_jobs import polisdb
from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.model import Job, JobValidationError
from delphi_jobs.narrative.batch_client import BatchClient
from delphi_jobs.reports import NarrativeReportStore
from delphi_jobs.topic_tables import TopicStore

MAX_RECHECK_SECONDS = 600.0
GIVE_UP_HOURS = 30.0


@dataclass(frozen=True)
class NarrativeServices:
    settings: Settings
    topics: TopicStore
    reports: NarrativeReportStore
    batches: Callable[[], BatchClient]
    database: Callable[[], Any]

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
        )

    def model_for(self, job: Job) -> str | None:
        """The job's configured model, else ANTHROPIC_MODEL."""
        configured = job.config_value("model")
        return str(configured) if configured else self.settings.anthropic_model

    @staticmethod
    def report_id_for(job: Job) -> str:
        """report_id, else the one in the config, else the zid: results are never dropped for lack of one."""
        return job.effective_report_id or str(job.conversation_id)

    def recheck_delay(self, checks_done: int) -> float:
        """From DELPHI_BATCH_RECHECK_SECONDS, doubling per check, capped at 10 minutes."""
        base = self.settings.batch_recheck_seconds
        return float(min(MAX_RECHECK_SECONDS, base * 2 ** max(0, checks_done)))


def stored_section_map(job: Job) -> dict[str, str]:
    """The custom_id -> section map the CREATE job recorded; never re-derived from the ids."""
    raw = job.item.get("section_map")
    if not raw:
        return {}
    try:
        value = json.loads(str(raw))
    except json.JSONDecodeError:
        raise JobValidationError("section_map", "malformed JSON") from None
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
