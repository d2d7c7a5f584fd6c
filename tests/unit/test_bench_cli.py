"""The benchmark suite's own command line and report (``python -m bench``, ``python -m bench.render``):
a narrowed throughput run and a benchmark run with and without ``--table-flags`` must render as what
they are. The benchmarks themselves run against DynamoDB Local, outside the test run."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench.__main__ import cells
from bench.render import headline, merge, render


def test_cells_are_processes_by_workers() -> None:
    assert cells("1x1,1x4,4x4") == [(1, 1), (1, 4), (4, 4)]
    for bad in ("", "1", "1x", "x4", "0x4", "1x2x3", "ax1"):
        with pytest.raises(argparse.ArgumentTypeError):
            cells(bad)


def _priority(polls: float, claimed: bool = True) -> dict[str, Any]:
    def scenario(wall: int) -> dict[str, Any]:
        return {"wall": wall, "claimed": claimed, "seconds": 0.1, "polls": polls, "claims_before": 0}

    return {
        "params": {"cap_seconds": 60.0},
        "empty": scenario(0),
        "priority": scenario(10_000),
        "behind_retries": scenario(5_000),
        "seconds": 10.0,
        "load_average_start": 3.0,
    }


def _run(commit: str, flags: str, polls: float) -> dict[str, Any]:
    machine = {
        "date": "2026-11-29 18:00 UTC",
        "commit": commit,
        "nproc": 2,
        "cpu": "x",
        "memory_gb": 1.0,
        "python": "3.11",
        "dynamodb_local": "3",
        "load_average_start": [1.0, 1.0, 1.0],
        "load_average_end": [2.0, 1.0, 1.0],
    }
    return {
        "profile": "full",
        "machine": machine,
        "table_flags": flags,
        "benchmarks": {"priority": _priority(polls)},
    }


def test_a_run_with_table_flags_is_kept_beside_the_plain_one() -> None:
    plain, indexed = _run("aaa", "", 61), _run("bbb", "--with-priority-index", 1)
    doc = merge([plain, indexed, _run("ccc", "", 40)])  # a later plain run replaces the first
    assert sorted(doc["benchmarks"]) == ["priority", "priority --with-priority-index"]
    found = headline(doc)
    assert found["polls to claim priority 90 behind 10,000"] == "40 (0.10 s)"
    assert found["polls to claim priority 90 behind 10,000 (`--with-priority-index`)"] == "1 (0.10 s)"
    text = render(doc, merge([plain]))
    assert "### Priority and retries (`priority`), tables by `create-tables --with-priority-index`" in text
    assert "run bbb, 2026-11-29 18:00 UTC" in text and "run ccc" in text
    assert "| polls to claim priority 90 behind 10,000 | 61 (0.10 s) | 40 (0.10 s) |" in text
