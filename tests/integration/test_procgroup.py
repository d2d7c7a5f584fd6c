"""run_group and the child guard on real processes: a command's own exit code is told apart from a
death by a signal nobody here sent, and the guard's sweep is what ``process_exit_confirmed`` rests on."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from delphi_jobs.procgroup import ProcessResult, run_group
from tests.pollers import alive


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


PARENT = "import os; print(os.getppid(), flush=True)"


def test_one_guard_serves_every_run_of_a_process() -> None:
    parents = {run(PARENT)[1][0] for _ in range(3)}
    assert len(parents) == 1 and int(parents.pop()) != os.getpid()


def test_concurrent_runs_keep_their_own_output_and_status() -> None:
    results: dict[int, tuple[ProcessResult, list[str]]] = {}

    def one(n: int) -> None:
        results[n] = run(f"import sys; print('run {n}'); sys.exit({n})")

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {n: (r.exit_code, lines) for n, (r, lines) in results.items()} == {
        n: (n, [f"run {n}"]) for n in range(8)
    }


ORPHAN = """
import os, time
if os.fork() == 0:
    grandchild = os.fork()
    if grandchild == 0:
        os.setsid()
        time.sleep(60)
    print(grandchild, flush=True)
    os._exit(0)
os.wait()
time.sleep(60)
"""
"""Leaves a grandchild in a session of its own whose parent exited, then runs on."""


def test_an_orphan_is_swept_with_its_own_run_not_with_another() -> None:
    """A grandchild whose parent exited (adopted by the guard) and that left its group with setsid
    belongs to the run that started it: another run ending leaves it alone, its own run's end stops it."""
    orphans: list[str] = []
    release = threading.Event()
    holder: list[ProcessResult] = []

    def long_run() -> None:
        holder.append(
            run_group(
                [sys.executable, "-c", ORPHAN],
                env=dict(os.environ),
                timeout=60,
                on_stdout=orphans.append,
                on_stderr=orphans.append,
                should_stop=release.is_set,
                grace=1,
            )
        )

    thread = threading.Thread(target=long_run)
    thread.start()
    deadline = time.monotonic() + 20
    while not orphans and time.monotonic() < deadline:
        time.sleep(0.05)
    orphan = int(orphans[0])
    assert run("print('short')")[0].tree_gone
    assert alive(orphan), "another run's end swept an orphan that is not its own"
    release.set()
    thread.join(30)
    assert holder[0].stopped and holder[0].tree_gone and not alive(orphan)


def test_a_command_ignoring_sigterm_is_killed_after_the_grace() -> None:
    started = time.monotonic()
    result, _ = run(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)", timeout=0.5
    )
    assert result.timed_out and result.tree_gone and time.monotonic() - started < 10


def test_a_dead_guard_is_replaced_and_its_run_reported_killed() -> None:
    lines: list[str] = []
    box: list[ProcessResult] = []
    thread = threading.Thread(
        target=lambda: box.append(
            run_group(
                [sys.executable, "-c", PARENT + "; import time; time.sleep(60)"],
                env=dict(os.environ),
                timeout=60,
                on_stdout=lines.append,
                on_stderr=lines.append,
                should_stop=lambda: False,
                grace=1,
            )
        )
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not lines and time.monotonic() < deadline:
        time.sleep(0.05)
    guard = int(lines[0])
    os.kill(guard, signal.SIGKILL)
    thread.join(30)
    assert box[0].killed_by is not None and box[0].exit_code is None and not box[0].tree_gone
    assert int(run(PARENT)[1][0]) != guard, "a new guard serves the next run"
