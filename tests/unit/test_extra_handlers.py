"""``DELPHI_EXTRA_HANDLERS``: job types added to a real poller (the benchmarks' in-process no-op job,
see docs/performance.md); a built-in type can never be replaced by one."""

from __future__ import annotations

import pytest

from delphi_jobs.config import ConfigError, Settings
from delphi_jobs.handlers import default_registry
from delphi_jobs.handlers.base import Completed, JobContext, Outcome
from delphi_jobs.model import FULL_PIPELINE, Job


class EchoHandler:
    job_type = "TEST_ECHO"
    state_type = None

    def validate(self, job: Job) -> list[str]:
        return []

    def run(self, ctx: JobContext) -> Outcome:
        return Completed({"echo": ctx.job.job_id})


class ImpostorHandler(EchoHandler):
    job_type = FULL_PIPELINE


def test_settings_read_the_benchmark_switches() -> None:
    env = {"DELPHI_REQUEST_LOG": "/tmp/calls", "DELPHI_EXTRA_HANDLERS": " a.b:C , d:E ,"}
    settings = Settings.from_env(env)
    assert settings.request_log == "/tmp/calls"
    assert settings.extra_handlers == ("a.b:C", "d:E")
    assert Settings.from_env({}).request_log is None and Settings.from_env({}).extra_handlers == ()


def test_extra_handler_adds_a_job_type() -> None:
    registry = default_registry(Settings(extra_handlers=(f"{__name__}:EchoHandler",)))
    assert isinstance(registry.get("TEST_ECHO"), EchoHandler)
    assert FULL_PIPELINE in registry.known


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (f"{__name__}:ImpostorHandler", "would replace built-in FULL_PIPELINE"),
        (f"{__name__}:Missing", "cannot load"),
        ("no_such_module_here:Handler", "cannot load"),
        (__name__, "cannot load"),
    ],
)
def test_bad_extra_handler_is_a_configuration_error(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="DELPHI_EXTRA_HANDLERS") as error:
        default_registry(Settings(extra_handlers=(spec,)))
    assert problem in str(error.value)
