"""The transition table of DESIGN 4: every legal transition is allowed, every other one is refused."""

from __future__ import annotations

import itertools

import pytest

from delphi_jobs.states import (
    FINAL,
    TERMINAL,
    TRANSITIONS,
    InvalidStateError,
    Status,
    operator_actions,
    transition,
)

LEGAL = {
    ("claim", "PENDING", "PROCESSING"),
    ("claim_recheck", "AWAITING_RECHECK", "PROCESSING"),
    ("reclaim", "PROCESSING", "PROCESSING"),
    ("finish", "PROCESSING", "COMPLETED"),
    ("finish", "PROCESSING", "FAILED"),
    ("finish", "PROCESSING", "AWAITING_RECHECK"),
    ("hand_back", "PROCESSING", "PENDING"),
    ("cancel", "PENDING", "CANCELLED"),
    ("cancel", "PAUSED", "CANCELLED"),
    ("cancel", "PENDING", "FAILED"),
    ("cancel", "PAUSED", "FAILED"),
    ("cancel_owned", "PROCESSING", "CANCELLED"),
    ("cancel_owned", "PROCESSING", "FAILED"),
    ("pause", "PENDING", "PAUSED"),
    ("pause", "AWAITING_RECHECK", "PAUSED"),
    ("pause_owned", "PROCESSING", "PAUSED"),
    ("resume", "PAUSED", "PENDING"),
    ("resume", "PAUSED", "AWAITING_RECHECK"),
    ("retry", "FAILED", "PENDING"),
    ("reset", "PROCESSING", "FAILED"),
    ("reset", "PROCESSING", "PENDING"),
    ("force_reset", "PROCESSING", "FAILED"),
    ("force_reset", "PROCESSING", "PENDING"),
    # issue 11: a lease no live poller can hold, and records DynamoDB refuses to let us claim
    ("cancel_stuck", "PROCESSING", "CANCELLED"),
    ("cancel_stuck", "PROCESSING", "FAILED"),
    ("cancel_stuck", "PROCESSING", "PENDING"),
    ("retry_stuck", "PROCESSING", "PENDING"),
    ("reject", "PENDING", "FAILED"),
    ("reject", "AWAITING_RECHECK", "FAILED"),
    ("reject", "PROCESSING", "FAILED"),
}

ALL = list(itertools.product(sorted(TRANSITIONS), [s.value for s in Status], [s.value for s in Status]))


def test_table_is_exactly_the_design() -> None:
    table = {(t.name, s, d) for t in TRANSITIONS.values() for s in t.sources for d in t.targets}
    assert table == LEGAL


@pytest.mark.parametrize(("name", "source", "target"), sorted(LEGAL))
def test_legal_transitions(name: str, source: str, target: str) -> None:
    assert transition(name, source, target).name == name


@pytest.mark.parametrize(("name", "source", "target"), [c for c in ALL if c not in LEGAL])
def test_illegal_transitions_raise(name: str, source: str, target: str) -> None:
    with pytest.raises(InvalidStateError) as info:
        transition(name, source, target)
    assert info.value.current == source


def test_nothing_leaves_completed_or_cancelled() -> None:
    for t in TRANSITIONS.values():
        assert not (t.sources & FINAL), t.name
    assert FINAL < TERMINAL
    assert Status.FAILED in TERMINAL


def test_error_message_names_the_allowed_sources() -> None:
    with pytest.raises(InvalidStateError, match=r"cannot cancel a job in status COMPLETED .*PAUSED, PENDING"):
        transition("cancel", "COMPLETED", "CANCELLED")


def test_operator_actions_include_requests_the_owner_carries_out() -> None:
    assert operator_actions("PROCESSING") == ("cancel", "pause", "reset")
    assert operator_actions("AWAITING_RECHECK") == ("cancel", "pause")
    assert operator_actions("PAUSED") == ("cancel", "resume")
    assert operator_actions("FAILED") == ("retry",)
    assert operator_actions("COMPLETED") == ()
    assert operator_actions("pending") == ()
