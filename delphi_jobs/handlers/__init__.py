"""The handler registry: job_type -> handler, and which job types this poller serves.

A missing job_type means FULL_PIPELINE (the model fills that in); an unknown one is never run
(defect 8): the job fails naming the known types. A known type whose requirements this poller lacks
(no ANTHROPIC_API_KEY, no database) is not served at all: it stays PENDING for a poller that can run
it, instead of being claimed and failed. The narrative modules (and with them the Anthropic SDK and
psycopg2) are imported only when a narrative type is served.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping

from delphi_jobs.config import ConfigError, Settings
from delphi_jobs.handlers.base import Handler
from delphi_jobs.handlers.full_pipeline import FullPipelineHandler
from delphi_jobs.model import AWAITING_NARRATIVE_BATCH, CREATE_NARRATIVE_BATCH, FULL_PIPELINE

JOB_TYPES = (FULL_PIPELINE, CREATE_NARRATIVE_BATCH, AWAITING_NARRATIVE_BATCH)


def missing_requirements(job_type: str, settings: Settings) -> list[str]:
    """What this poller would need to run ``job_type``, in words an operator can act on."""
    missing = []
    if job_type in (CREATE_NARRATIVE_BATCH, AWAITING_NARRATIVE_BATCH) and not settings.anthropic_api_key:
        missing.append("ANTHROPIC_API_KEY is not set")
    if job_type == CREATE_NARRATIVE_BATCH and not settings.database_url:
        missing.append("no database (DATABASE_URL or DATABASE_HOST)")
    return missing


class Registry:
    def __init__(self, handlers: Iterable[Handler], skipped: Mapping[str, str] | None = None) -> None:
        self._handlers = {h.job_type: h for h in handlers}
        self.skipped = dict(skipped or {})
        """Known job types this poller does not serve, with the reason."""

    def get(self, job_type: str) -> Handler | None:
        return self._handlers.get(job_type)

    @property
    def known(self) -> list[str]:
        return sorted(set(self._handlers) | set(self.skipped))

    @property
    def served(self) -> list[str]:
        return sorted(self._handlers)

    def accepts(self, job_type: str) -> bool:
        """Claim it: a type we serve, or a type nobody knows (claimed only to be failed, naming it)."""
        return job_type in self._handlers or job_type not in self.skipped

    def unknown_message(self, job_type: str) -> str:
        return f"job_type: unknown job type {job_type!r}; known types: {', '.join(self.known)}"


def default_registry(settings: Settings) -> Registry:
    """The handlers for ``settings.job_types`` (default: every type whose requirements are met)."""
    asked = settings.job_types
    unknown = sorted(set(asked or ()) - set(JOB_TYPES))
    if unknown:
        raise ConfigError(f"--job-types: unknown {', '.join(unknown)}; known: {', '.join(JOB_TYPES)}")
    skipped: dict[str, str] = {}
    for job_type in JOB_TYPES:
        missing = missing_requirements(job_type, settings)
        if asked is not None and job_type not in asked:
            skipped[job_type] = "not in --job-types"
        elif missing and asked is not None:
            raise ConfigError(f"--job-types: {job_type} cannot run here: {'; '.join(missing)}")
        elif missing:
            skipped[job_type] = "; ".join(missing)
    handlers: list[Handler] = []
    if FULL_PIPELINE not in skipped:
        handlers.append(FullPipelineHandler())
    if not {CREATE_NARRATIVE_BATCH, AWAITING_NARRATIVE_BATCH} <= set(skipped):
        from delphi_jobs.handlers.awaiting_narrative_batch import AwaitingNarrativeBatchHandler
        from delphi_jobs.handlers.create_narrative_batch import CreateNarrativeBatchHandler
        from delphi_jobs.handlers.narrative_services import NarrativeServices

        services = NarrativeServices.from_settings(settings)
        if CREATE_NARRATIVE_BATCH not in skipped:
            handlers.append(CreateNarrativeBatchHandler(services))
        if AWAITING_NARRATIVE_BATCH not in skipped:
            handlers.append(AwaitingNarrativeBatchHandler(services))
    handlers += [_extra_handler(spec) for spec in settings.extra_handlers]
    return Registry(handlers, skipped)


def _extra_handler(spec: str) -> Handler:
    """``module:factory`` from DELPHI_EXTRA_HANDLERS (e.g. the benchmarks' in-process no-op job type),
    served whatever --job-types says. It may only add a job type: replacing a built-in one by a stray
    variable must be impossible."""
    module, _, name = spec.partition(":")
    try:
        handler: Handler = getattr(importlib.import_module(module), name)()
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise ConfigError(f"DELPHI_EXTRA_HANDLERS: cannot load {spec!r}: {exc}") from None
    if handler.job_type in JOB_TYPES:
        raise ConfigError(f"DELPHI_EXTRA_HANDLERS: {spec!r} would replace built-in {handler.job_type}")
    return handler
