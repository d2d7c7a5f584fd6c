"""Job statuses and the transition table of DESIGN 4, as data.

The queue derives the condition of every write from the ``guard`` of the transition it applies, so the
table below is the single statement of what may happen to a job and under which condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class Status(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    AWAITING_RECHECK = "AWAITING_RECHECK"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PAUSED = "PAUSED"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
"""No worker will touch a job in these states again (FAILED leaves only by an operator's retry)."""

FINAL = frozenset({Status.COMPLETED, Status.CANCELLED})
"""No transition leaves these states at all."""


class Guard(Enum):
    DUE = "status as observed, due (run_after / next_check_at as observed and passed), version as observed"
    LEASE_EXPIRED = "status PROCESSING, lock_expires_at as observed and passed, version as observed"
    OWNER = "status PROCESSING, worker_id = the claimer, version = the claimed version"
    STATUS = "status in the transition's sources"
    OBSERVED = "status and version as observed (an operator overriding a live owner)"
    STUCK = (
        "status PROCESSING, version and lock_expires_at as observed, the lease beyond now + the lease "
        "+ a skew allowance (no live poller can hold it)"
    )
    REFUSED = "status and version as observed (a record whose claim DynamoDB refuses)"


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[Status]
    targets: frozenset[Status]
    guard: Guard
    trigger: str


def _t(name: str, sources: set[Status], targets: set[Status], guard: Guard, trigger: str) -> Transition:
    return Transition(name, frozenset(sources), frozenset(targets), guard, trigger)


S = Status
TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        _t("claim", {S.PENDING}, {S.PROCESSING}, Guard.DUE, "a worker claims a due job"),
        _t("claim_recheck", {S.AWAITING_RECHECK}, {S.PROCESSING}, Guard.DUE, "a checker is due"),
        _t("reclaim", {S.PROCESSING}, {S.PROCESSING}, Guard.LEASE_EXPIRED, "the owner's lease expired"),
        _t(
            "finish",
            {S.PROCESSING},
            {S.COMPLETED, S.FAILED, S.AWAITING_RECHECK},
            Guard.OWNER,
            "the owner finishes or schedules a re-check",
        ),
        _t("hand_back", {S.PROCESSING}, {S.PENDING}, Guard.OWNER, "shutdown, or a retryable failure"),
        # A cancel ends FAILED (with a cancelled marker) under DELPHI_LEGACY_STATUSES.
        _t("cancel", {S.PENDING, S.PAUSED}, {S.CANCELLED, S.FAILED}, Guard.STATUS, "an operator cancels"),
        _t(
            "cancel_owned",
            {S.PROCESSING},
            {S.CANCELLED, S.FAILED},
            Guard.OWNER,
            "the owner sees a cancel request",
        ),
        _t("pause", {S.PENDING, S.AWAITING_RECHECK}, {S.PAUSED}, Guard.STATUS, "an operator pauses"),
        _t("pause_owned", {S.PROCESSING}, {S.PAUSED}, Guard.OWNER, "the owner sees a pause request"),
        _t("resume", {S.PAUSED}, {S.PENDING, S.AWAITING_RECHECK}, Guard.STATUS, "an operator resumes"),
        _t("retry", {S.FAILED}, {S.PENDING}, Guard.STATUS, "an operator retries a failed job"),
        _t(
            "reset",
            {S.PROCESSING},
            {S.FAILED, S.PENDING},
            Guard.LEASE_EXPIRED,
            "an operator resets a job whose owner's lease expired",
        ),
        _t(
            "force_reset",
            {S.PROCESSING},
            {S.FAILED, S.PENDING},
            Guard.OBSERVED,
            "an operator takes a live job from its owner, whose next fenced write then fails",
        ),
        _t(
            "cancel_stuck",
            {S.PROCESSING},
            {S.CANCELLED, S.FAILED, S.PENDING},
            Guard.STUCK,
            "an operator cancels a job held by an impossible lease (PENDING with the request when its "
            "handler must release something outside DynamoDB)",
        ),
        _t("retry_stuck", {S.PROCESSING}, {S.PENDING}, Guard.STUCK, "an operator retries such a job"),
        _t(
            "reject",
            {S.PENDING, S.AWAITING_RECHECK, S.PROCESSING},
            {S.FAILED},
            Guard.REFUSED,
            "a poller fails a record DynamoDB will not let it claim (too large, unstorable values)",
        ),
    )
}

REQUESTS: dict[str, frozenset[Status]] = {
    "cancel": frozenset({S.PROCESSING, S.AWAITING_RECHECK}),
    "pause": frozenset({S.PROCESSING}),
}
"""Operator actions that, from these statuses, are requests carried out by the owner (or by the
checker once it is due), not transitions the operator writes."""

OPERATOR_ACTIONS = ("cancel", "pause", "resume", "retry", "reset")


def operator_actions(status: str) -> tuple[str, ...]:
    """What an operator may do to a job in ``status``: a transition from it, or a request."""
    return tuple(
        name
        for name in OPERATOR_ACTIONS
        if status in TRANSITIONS[name].sources or status in REQUESTS.get(name, frozenset())
    )


class InvalidStateError(Exception):
    """A transition that the table does not allow (e.g. anything out of COMPLETED or CANCELLED)."""

    def __init__(self, name: str, current: str, target: str | None = None, why: str | None = None) -> None:
        transition = TRANSITIONS.get(name)
        allowed = ", ".join(sorted(transition.sources)) if transition else "nothing"
        into = f" to {target}" if target else ""
        super().__init__(
            why or f"cannot {name} a job in status {current or '(none)'}{into} (allowed from: {allowed})"
        )
        self.name = name
        self.current = current
        self.target = target
        self.why = why
        """Why, when the table alone does not say (a setting forbids the transition)."""


def transition(name: str, current: str, target: str) -> Transition:
    """The transition ``name`` from ``current`` to ``target``; InvalidStateError when illegal."""
    found = TRANSITIONS.get(name)
    if found is None or current not in found.sources or target not in found.targets:
        raise InvalidStateError(name, current, target)
    return found
