"""run_group and the child guard on real processes: a command's own exit code is told apart from a
death by a signal nobody here sent, and the guard's sweep is what ``process_exit_confirmed`` rests on."""

from __future__ import annotations

import os
import sys

import pytest

from delphi_jobs.procgroup import ProcessResult, run_group


def run(code: str, *, timeout: float = 30, cwd: str | None = None) -> tuple[ProcessResult, list[str]]:
    lines: list[str] = []
    result = run_group(
        [sys.executable, "-c", code],
        env=dict(os.environ),
        timeout=timeout,
        on_stdout=lines.append,
        on_stderr=lines.append,
        should_stop=lambda: False,
        grace=1,
        cwd=cwd,
    )
    return result, lines


@pytest.mark.parametrize("code", [0, 1, 137])
def test_an_own_exit_is_reported_as_an_exit_code(code: int) -> None:
    result, _ = run(f"import sys; sys.exit({code})")
    assert (result.exit_code, result.killed_by, result.tree_gone, result.started) == (code, None, True, True)


def test_a_kill_from_outside_is_reported_as_a_signal() -> None:
    result, _ = run("import os, signal; print('dying', flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    assert (result.exit_code, result.killed_by, result.tree_gone) == (None, 9, True)


def test_a_timeout_sweeps_the_tree_and_says_so() -> None:
    result, _ = run("import time; time.sleep(60)", timeout=0.5)
    assert result.timed_out and result.exit_code is None and result.killed_by is None and result.tree_gone


def test_the_command_runs_in_the_given_directory(tmp_path: object) -> None:
    result, lines = run("import os; print(os.getcwd())", cwd=str(tmp_path))
    assert result.exit_code == 0 and lines == [str(tmp_path)]


def test_a_command_that_cannot_start() -> None:
    lines: list[str] = []
    result = run_group(
        ["/nonexistent/python"],
        env=dict(os.environ),
        timeout=10,
        on_stdout=lines.append,
        on_stderr=lines.append,
        should_stop=lambda: False,
    )
    assert not result.started and result.exit_code == 127 and "cannot start" in lines[0]
