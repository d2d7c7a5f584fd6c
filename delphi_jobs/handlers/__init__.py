"""The handler registry: job_type -> handler. A missing job_type means FULL_PIPELINE (the model
fills that in); an unknown one is never run (defect 8): the job fails naming the known types."""

from __future__ import annotations

from collections.abc import Iterable

from delphi_jobs.config import Settings
from delphi_jobs.handlers.awaiting_narrative_batch import AwaitingNarrativeBatchHandler
from delphi_jobs.handlers.base import Handler
from delphi_jobs.handlers.create_narrative_batch import CreateNarrativeBatchHandler
from delphi_jobs.handlers.full_pipeline import FullPipelineHandler
from delphi_jobs.handlers.narrative_services import NarrativeServices


class Registry:
    def __init__(self, handlers: Iterable[Handler]) -> None:
        self._handlers = {h.job_type: h for h in handlers}

    def get(self, job_type: str) -> Handler | None:
        return self._handlers.get(job_type)

    @property
    def known(self) -> list[str]:
        return sorted(self._handlers)

    def unknown_message(self, job_type: str) -> str:
        return f"job_type: unknown job type {job_type!r}; known types: {', '.join(self.known)}"


def default_registry(settings: Settings) -> Registry:
    services = NarrativeServices.from_settings(settings)
    return Registry(
        [
            FullPipelineHandler(),
            CreateNarrativeBatchHandler(services),
            AwaitingNarrativeBatchHandler(services),
        ]
    )
