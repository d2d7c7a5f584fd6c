"""JobQueue: the job lifecycle on top of a JobStore; the only module that writes job records.

Every state change is ONE conditional write whose condition comes from the transition's guard in
``states.py`` and that bumps ``version``, the fencing token. A worker's writes after claiming are
fenced on (status PROCESSING, its worker_id, the claimed version): after its lease was taken over, none
of them can change the item. Losing a race is a normal outcome, reported one way: ``Lost``.

Polling cost is bounded (defect 1): each status is read with ``Limit``ed pages of
``StatusCreatedIndex``, oldest first; further pages are read only when the status holds more than one
page, at most ``max_pages + 2`` per look (docs/poller.md, "Lanes"):

- the priority lane (PENDING, when the table has the optional ``StatusPriorityIndex``): one page of
  jobs above the default priority, highest first, so a high-priority job is found whatever the backlog;
- the newest page, when nothing read so far is claimable: a fresh job behind a wall of backed-off
  retries is found at the first look, whatever the wall's size;
- the rotating cursor: up to ``max_pages - 1`` further pages, continuing from where the previous look
  stopped, so that every job is eventually seen however long the queue is.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from delphi_jobs.config import Settings
from delphi_jobs.logs import get_logger
from delphi_jobs.model import (
    AWAITING_NARRATIVE_BATCH,
    DEFAULT_MAX_RETRIES,
    DEFAULT_PRIORITY,
    MAX_ERROR_BYTES,
    MAX_LOGS_BYTES,
    UNCLAIMED_WORKER,
    Activity,
    ChildJob,
    HistoryEvent,
    Job,
    JobValidationError,
    LogEntry,
    cap_results,
    cap_text,
    encode_history,
    encode_json,
    encode_logs,
    encode_state,
    format_timestamp,
    utcnow,
)
from delphi_jobs.redact import scrub, scrub_value
from delphi_jobs.states import TRANSITIONS, Guard, InvalidStateError, Status, operator_actions, transition
from delphi_jobs.store import (
    MAX_ITEM_BYTES,
    Change,
    Condition,
    Cursor,
    Equals,
    JobStore,
    Lost,
    OneOf,
    StoreError,
    as_observed,
    item_size,
)
from delphi_jobs.tables import (
    CONVERSATION_INDEX,
    JOB_TYPE_INDEX,
    STATUS_CREATED_INDEX,
    STATUS_PRIORITY_INDEX,
)

Clock = Callable[[], datetime]
_log = get_logger(component="queue")

EVENTS = {
    Status.COMPLETED: "job.completed",
    Status.FAILED: "job.failed",
    Status.CANCELLED: "job.cancelled",
    Status.PAUSED: "job.paused",
    Status.AWAITING_RECHECK: "job.rechecking",
}
"""The structured log event of an owner's transition into each status."""
OPERATOR_EVENTS = {
    "cancel": "job.cancelled",
    "pause": "job.paused",
    "resume": "job.resumed",
    "retry": "job.retried",
    "cancel_stuck": "job.cancelled",
    "retry_stuck": "job.retried",
}
RETRY_BASE_SECONDS = 30.0
RETRY_CAP_SECONDS = 3600.0
REQUESTS = ("cancel_requested", "pause_requested")
DEFAULT_LEASE_SECONDS = 60.0
SKEW_ALLOWANCE_SECONDS = 300.0
"""How far a lease may reach beyond now + the configured lease before it cannot be a live poller's
(clock skew between hosts, a poller configured with a longer lease). Past that, cancel and retry act on
the PROCESSING job directly (see JobQueue.cancel)."""
ITEM_MARGIN_BYTES = 4 * 1024
"""Room kept free under the item limit when sizing the logs of a write: heartbeats add progress, an
operator adds a request, and the size rules are approximated."""


class Keep(Enum):
    """Leave an attribute as it is (where None would remove it)."""

    KEEP = "keep"


KEEP = Keep.KEEP


class JobNotFound(KeyError):
    """No job with this id."""


class JobChanging(RuntimeError):
    """An operator action kept losing to other writers; trying again later is safe."""


@dataclass(frozen=True)
class Claim:
    """Proof of ownership: the job as claimed, and the fencing token every later write is checked on."""

    job: Job
    worker_id: str
    version: int
    reclaimed: bool = False
    claimed_from: str = "PENDING"
    """The status the job had before this claim (a paused checker resumes to it)."""


@dataclass(frozen=True)
class OperatorResult:
    """What an operator action did: ``applied`` (the new status) or ``requested`` (the owner will act)."""

    job_id: str
    action: str
    status: str
    requested: bool = False


def _parsed(item: Mapping[str, Any]) -> Job | None:
    """A record as a Job, or None (logged) when it has no usable job_id: it cannot be claimed, failed
    or even named, so readers skip it (``delphi-jobs doctor`` reports such records)."""
    try:
        return Job.from_item(item)
    except JobValidationError:
        _log.error(
            "skipping a job record without a usable job_id",
            status=str(item.get("status"))[:40],
            item_keys=sorted(item)[:40],
        )
        return None


def _safe_error(message: str | None) -> str | None:
    """An error message as written on a job: secrets scrubbed, size capped."""
    return None if message is None else cap_text(scrub(message), MAX_ERROR_BYTES)


def retry_delay(retry_count: int, base: float = RETRY_BASE_SECONDS, cap: float = RETRY_CAP_SECONDS) -> float:
    """Exponential backoff with full jitter over the upper half, so retries of a batch spread out."""
    ceiling = min(cap, base * (2**retry_count))
    return random.uniform(ceiling / 2, ceiling)


def _history(job: Job | None, now: datetime, to: str, by: str, reason: str) -> str:
    """The job's history (none for a new job) with this transition appended; written in the
    transition's own conditional write, so the history can never disagree with the status."""
    past = job.history if job else ()
    # Capped and scrubbed like error_message: 100 events of whole error texts would fill the item.
    event = HistoryEvent(
        format_timestamp(now), to, by, job.status if job else None, cap_text(scrub(reason), 512)
    )
    return encode_history((*past, event))


def _emit(event: str, job: Job, by: str, reason: str, **extra: Any) -> None:
    _log.info(event, job_id=job.job_id, job_type=job.job_type, by=by, reason=reason, **extra)


def reclaim_delay(retry_count: int, base: float = RETRY_BASE_SECONDS) -> float:
    """How long after its lease ran out a lost worker's job waits: the same backoff as a retry, without
    jitter (the lower end of ``retry_delay``), so every poller agrees on when the job is claimable."""
    return float(min(RETRY_CAP_SECONDS, base * 2.0**retry_count)) / 2


def passed(moment: datetime | None, now: datetime, *, strictly: bool = False) -> bool:
    """Unset counts as passed: a job without run_after is due, one without a lease is abandoned."""
    if moment is None:
        return True
    return moment < now if strictly else moment <= now


CLAIMABLE = (Status.PENDING, Status.AWAITING_RECHECK, Status.PROCESSING)
"""Statuses a worker may claim from: due, due for a check, or abandoned by a lost worker."""
PRIORITY_LANE_FROM = DEFAULT_PRIORITY + 1
"""The priority lane reads jobs above the default priority (priorities are whole numbers: producers
write 50, the CLI and API take 0-1000); jobs at or below it are in age order in the FIFO lane."""
INDEX_RETRY_SECONDS = 300.0
"""How long a queue that found StatusPriorityIndex unusable (absent, still backfilling, not allowed)
waits before trying it again: an index added online is used within this long, without a restart."""


class JobQueue:
    def __init__(
        self,
        store: JobStore,
        *,
        clock: Clock = utcnow,
        page_size: int = 25,
        max_pages: int = 4,
        retry_base: float = RETRY_BASE_SECONDS,
        legacy_statuses: bool = False,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        """``retry_base``: the first backoff of a retry or a reclaim (DELPHI_RETRY_BASE_SECONDS).
        ``legacy_statuses``: write only the original statuses (DELPHI_LEGACY_STATUSES): a cancel is
        written as FAILED with the cancelled marker, pausing is refused."""
        self._store = store
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._page_size = page_size
        self._max_pages = max_pages
        self._retry_base = retry_base
        self._legacy = legacy_statuses
        self._cursors: dict[str, Cursor | None] = {}
        self._priority_index: bool | None = None
        """Whether StatusPriorityIndex answered the last time it was asked (None: never asked)."""
        self._priority_retry_at: datetime | None = None

    def allowed_actions(self, status: str) -> tuple[str, ...]:
        """What an operator may do to a job in ``status`` here: the state table's actions, less
        pausing under DELPHI_LEGACY_STATUSES."""
        return tuple(a for a in operator_actions(status) if not (self._legacy and a == "pause"))

    @classmethod
    def for_settings(cls, store: JobStore, settings: Settings, *, clock: Clock = utcnow) -> JobQueue:
        """The queue with the settings every face must share (backoff, legacy statuses, the lease that
        tells a live lease from an impossible one): the poller, the
        CLI, the HTTP API and the dashboard all build theirs here, so a cancel is written alike."""
        return cls(
            store,
            clock=clock,
            retry_base=settings.retry_base_seconds,
            legacy_statuses=settings.legacy_statuses,
            lease_seconds=settings.lease_seconds,
        )

    @property
    def table(self) -> str:
        return self._store.table

    # ---- reads -----------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        item = self._store.get(job_id)
        return Job.from_item(item) if item else None

    def list_by_status(self, status: str, *, limit: int = 100) -> list[Job]:
        """Oldest first, at most ``limit`` jobs: for operator tools, never for the poll loop."""
        jobs: list[Job] = []
        cursor: Cursor | None = None
        while len(jobs) < limit:
            page = self._status_page(status, cursor)
            jobs += page[0]
            cursor = page[1]
            if cursor is None:
                break
        return jobs[:limit]

    def conversation_jobs(
        self, conversation_id: str, *, limit: int = 200, attributes: Sequence[str] | None = None
    ) -> list[Job]:
        """A conversation's jobs, newest first, at most ``limit`` (ConversationIndex, never a Scan);
        with ``attributes``, jobs parsed from only those attributes (a cheap look at many jobs)."""
        jobs: list[Job] = []
        cursor: Cursor | None = None
        while len(jobs) < limit:
            page = self._store.query(
                CONVERSATION_INDEX,
                conversation_id,
                limit=min(100, limit),
                start=cursor,
                newest_first=True,
                attributes=attributes,
            )
            jobs += [job for job in map(_parsed, page.items) if job is not None]
            cursor = page.next
            if cursor is None:
                break
        return jobs[:limit]

    def ping(self) -> None:
        """One small read of the status index: raises TableMissing or StoreUnavailable (startup)."""
        self._store.query(STATUS_CREATED_INDEX, Status.PENDING, limit=1)

    def depth(self, statuses: Sequence[str]) -> tuple[dict[str, int], datetime | None]:
        """Jobs per status (index counts, no items read) and when the oldest PENDING job was created."""
        counts = {status: self._store.count(STATUS_CREATED_INDEX, status) for status in statuses}
        oldest = self._store.query(STATUS_CREATED_INDEX, Status.PENDING, limit=1).items
        return counts, (Job.from_item(oldest[0]).created_at if oldest else None)

    def find_candidates(self, now: datetime | None = None) -> list[Job]:
        """Every job claimable now, of every claimable status, best first (for one-shot tools)."""
        now = now or self._clock()
        found = [job for status in CLAIMABLE for job in self.find_due(status, now)]
        return sorted(found, key=lambda j: (-j.priority, j.created_at or now))

    def find_due(
        self, status: Status, now: datetime | None = None, accept: Callable[[Job], bool] | None = None
    ) -> list[Job]:
        """Jobs of ``status`` claimable now (and ``accept``-ed: e.g. of a type this poller serves, of a
        size it takes), highest priority first, then oldest; a bounded number of requests. The search
        goes on past jobs ``accept`` leaves out, so they never hide the jobs behind them."""
        now = now or self._clock()
        found = self._look(status, lambda job: self.is_due(job, now) and (accept is None or accept(job)))
        return sorted(found, key=lambda j: (-j.priority, j.created_at or now))

    def is_due(self, job: Job, now: datetime) -> bool:
        """Claimable now: PENDING past run_after, AWAITING_RECHECK past next_check_at, or PROCESSING
        whose lease ran out longer ago than a lost worker's backoff (``reclaim_delay``)."""
        if job.status == Status.PENDING:
            return passed(job.run_after, now)
        if job.status == Status.AWAITING_RECHECK:
            return passed(job.next_check_at, now)
        if job.status == Status.PROCESSING:
            backoff = timedelta(seconds=reclaim_delay(job.retry_count, self._retry_base))
            expired = job.lock_expires_at
            return passed(None if expired is None else expired + backoff, now, strictly=True)
        return False

    def _status_page(self, status: str, start: Cursor | None) -> tuple[list[Job], Cursor | None]:
        page = self._store.query(STATUS_CREATED_INDEX, status, limit=self._page_size, start=start)
        return [job for job in map(_parsed, page.items) if job is not None], page.next

    def _look(self, status: Status, claimable: Callable[[Job], bool]) -> list[Job]:
        """The head page of one status (oldest first). When the status holds more than that page: the
        priority lane (PENDING), and, when nothing read so far is claimable, the newest page and then
        up to ``max_pages - 1`` further pages from the rotating cursor."""
        jobs, head_next = self._status_page(status, None)
        found = [j for j in jobs if claimable(j)]
        if head_next is None:
            return found  # the head page is the whole status: nothing else to read
        if status == Status.PENDING:
            seen = {j.job_id for j in found}
            found += [j for j in self._priority_lane() if claimable(j) and j.job_id not in seen]
        if found:
            return found
        # The head holds nothing claimable (backed-off retries, checkers not due, live leases). Fresh
        # jobs are at the other end: one page from there finds them whatever the size of the wall.
        newest = self._store.query(STATUS_CREATED_INDEX, status, limit=self._page_size, newest_first=True)
        found = [j for j in map(_parsed, newest.items) if j is not None and claimable(j)]
        if found or newest.next is None:
            return found
        # Still nothing: a due job in the middle (a retry whose backoff ran out while younger ones
        # still wait). Look further, resuming where the last look stopped, a bounded number of pages.
        cursor: Cursor | None = self._cursors.get(status) or head_next
        for _ in range(self._max_pages - 1):
            jobs, cursor = self._status_page(status, cursor)
            self._cursors[status] = cursor
            found += [j for j in jobs if claimable(j)]
            if found or cursor is None:
                break
        return found

    def _priority_lane(self) -> list[Job]:
        """One page of PENDING jobs above the default priority, highest first (StatusPriorityIndex);
        none when the table has no usable index (the look then orders only what it read by priority).
        Whether the index exists is learnt by using it, which costs no request of its own, and checked
        again every INDEX_RETRY_SECONDS while it is not usable (an index added online, or dropped)."""
        now = self._clock()
        if self._priority_index is False and self._priority_retry_at and now < self._priority_retry_at:
            return []
        try:
            page = self._store.query(
                STATUS_PRIORITY_INDEX,
                Status.PENDING,
                limit=self._page_size,
                newest_first=True,
                range_from=PRIORITY_LANE_FROM,
            )
        except StoreError as exc:
            if exc.retryable:
                raise
            if self._priority_index is not False:
                _log.info(
                    "priority index not usable: priority orders only the jobs read by age",
                    index=STATUS_PRIORITY_INDEX,
                    code=exc.code,
                    retry_in=INDEX_RETRY_SECONDS,
                )
            self._priority_index = False
            self._priority_retry_at = now + timedelta(seconds=INDEX_RETRY_SECONDS)
            return []
        if self._priority_index is not True:
            _log.info("priority index in use", index=STATUS_PRIORITY_INDEX)
            self._priority_index = True
        return [job for job in map(_parsed, page.items) if job is not None]

    # ---- producer side ---------------------------------------------------------------------------

    def enqueue(self, record: Mapping[str, Any]) -> Job:
        """Insert a new job; fills in what the Polis server would write for omitted fields.
        Raises JobExists when the id is taken."""
        item = self.new_record(record)
        job = Job.from_item(item)
        by = str(item.get("created_by") or "delphi-jobs")
        item["history"] = _history(None, self._clock(), Status.PENDING, by, "created")
        self._store.insert(item)
        _emit("job.created", job, by, "created")
        return job

    def new_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A complete producer-compatible record: defaults first, then ``record``, JSON fields encoded."""
        now = format_timestamp(self._clock())
        item: dict[str, Any] = {
            "status": Status.PENDING.value,
            "created_at": now,
            "updated_at": now,
            "started_at": "",
            "completed_at": "",
            "worker_id": UNCLAIMED_WORKER,
            "priority": DEFAULT_PRIORITY,
            "version": 1,
            "retry_count": 0,
            "max_retries": DEFAULT_MAX_RETRIES,
            "job_results": "{}",
            "logs": encode_logs([]),
        }
        item.update(record)
        for name in ("job_config", "job_results", "logs"):
            if isinstance(item.get(name), Mapping):
                item[name] = encode_json(item[name])
        return {name: value for name, value in item.items() if value is not None}

    def child_record(self, child: ChildJob, by: str) -> dict[str, Any]:
        """A follow-up job: due at ``due_at`` for our pollers (run_after) and for readers (next_check_at)."""
        due = format_timestamp(child.due_at)
        item = self.new_record(
            {
                **child.fields,
                **encode_state(child.state),
                "job_id": child.job_id,
                "job_type": child.job_type,
                "run_after": due,
                "next_check_at": due,
            }
        )
        item["history"] = _history(None, self._clock(), Status.PENDING, by, "created as a follow-up job")
        return item

    # ---- worker side -----------------------------------------------------------------------------

    def claim(self, job: Job, worker_id: str, lease_seconds: float) -> Claim | Lost:
        """Take ``job`` as observed by find_candidates; Lost when someone else changed it first."""
        now = self._clock()
        if job.status == Status.PROCESSING:
            found = transition("reclaim", job.status, Status.PROCESSING)
            when = "lock_expires_at"
        elif job.status == Status.AWAITING_RECHECK:
            found = transition("claim_recheck", job.status, Status.PROCESSING)
            when = "next_check_at"
        else:
            found = transition("claim", job.status, Status.PROCESSING)
            when = "run_after"
        if not self.is_due(job, now):
            return Lost(dict(job.item))
        version = (job.version or 0) + 1
        sets: dict[str, Any] = {
            "status": Status.PROCESSING.value,
            "worker_id": worker_id,
            "started_at": format_timestamp(now),
            "updated_at": format_timestamp(now),
            "lock_expires_at": format_timestamp(now + timedelta(seconds=lease_seconds)),
            "version": version,
        }
        reclaimed = found.guard is Guard.LEASE_EXPIRED
        reason = f"lease of {job.worker_id} expired" if reclaimed else "claimed"
        sets["history"] = _history(job, now, Status.PROCESSING, worker_id, reason)
        if reclaimed:
            # A lost worker's run consumes an attempt, like a retry (one budget: max_retries).
            sets["reclaim_count"] = job.reclaim_count + 1
            sets["retry_count"] = job.retry_count + 1
        change = Change(
            set=sets,
            remove=("run_after", "next_check_at"),
            when=(
                Equals("status", job.status),
                as_observed(job.item, when),
                as_observed(job.item, "version"),
            ),
        )
        written = self._store.update(job.job_id, change)
        if isinstance(written, Lost):
            return written
        assert written.item is not None
        _emit("job.reclaimed" if reclaimed else "job.started", job, worker_id, reason, worker_id=worker_id)
        claimed = Job.from_item(written.item)
        if job.problems:
            # The claim rewrites bookkeeping fields (version, run_after, lock_expires_at, started_at):
            # a malformed one must still fail the job, naming it, instead of being silently repaired.
            claimed = replace(claimed, problems=tuple(dict.fromkeys(job.problems + claimed.problems)))
        return Claim(claimed, worker_id, version, reclaimed=reclaimed, claimed_from=job.status)

    def reject(self, job: Job, reason: str) -> Status | Lost:
        """Fail a record that looks claimable but whose claim DynamoDB refuses (an item at the size
        limit, a value it cannot store): one small conditional write on the record as observed, so it
        is failed once instead of being tried on every poll. InvalidRequest when even this cannot be
        written (the caller then sets the record aside and reports it)."""
        transition("reject", job.status, Status.FAILED)
        now = format_timestamp(self._clock())
        change = Change(
            set={
                "status": Status.FAILED.value,
                "error_message": cap_text(scrub(reason), 200),
                "completed_at": now,
                "updated_at": now,
                "version": (job.version or 0) + 1,
            },
            remove=("lock_expires_at",),
            when=(Equals("status", job.status), as_observed(job.item, "version")),
        )
        written = self._store.update(job.job_id, change)
        return written if isinstance(written, Lost) else Status.FAILED

    def heartbeat(
        self,
        claim: Claim,
        lease_seconds: float,
        *,
        logs: tuple[LogEntry, ...] | None = None,
        activity: Activity | None = None,
        state: Any = None,
    ) -> Job | Lost:
        """Extend the lease and flush logs, progress, live output and the handler's state in one fenced
        write.

        Returns the fresh job so the worker sees cancel and pause requests. Does not bump version.
        """
        now = self._clock()
        sets: dict[str, Any] = {
            "lock_expires_at": format_timestamp(now + timedelta(seconds=lease_seconds)),
            "updated_at": format_timestamp(now),
        }
        if activity is not None:
            sets.update(activity.attributes(format_timestamp(now)))
        if state is not None:
            sets.update(encode_state(state))
        if logs is not None:
            sets["logs"] = encode_logs(logs, self._logs_budget(claim.job.item, sets))
        written = self._store.update(claim.job.job_id, Change(set=sets, when=self._fence(claim)))
        if isinstance(written, Lost):
            return written
        assert written.item is not None
        return Job.from_item(written.item)

    def finish(
        self,
        claim: Claim,
        status: Status,
        *,
        results: Mapping[str, Any] | None = None,
        error_message: str | None = None,
        logs: tuple[LogEntry, ...] | None = None,
        state: Any = None,
        children: Sequence[ChildJob] = (),
        process_exit_confirmed: bool = True,
        activity: Activity | None = None,
        paused_from: str = Status.PENDING,
        next_check_at: datetime | None = None,
    ) -> Status | Lost:
        """COMPLETED / FAILED (finish), CANCELLED (cancel_owned) or PAUSED (pause_owned: resuming makes
        it ``paused_from`` again, a checker with its ``next_check_at``).

        ``children`` are inserted in the same transaction (a batch checker), so a parent can never be
        COMPLETED without its follow-up job existing, nor the other way round. Terminal writes carry
        ``process_exit_confirmed``: no process of the run is left (see handlers.base.Completed).
        """
        if self._legacy and status == Status.PAUSED:
            return self._refuse_owned_pause(claim, logs)
        name = {Status.CANCELLED: "cancel_owned", Status.PAUSED: "pause_owned"}.get(status, "finish")
        written_as = self._written_status(status)
        transition(name, Status.PROCESSING, written_as)
        now = format_timestamp(self._clock())
        error_message = _safe_error(error_message)
        sets: dict[str, Any] = {"status": written_as.value, "updated_at": now, "error_message": error_message}
        if status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED):
            outcome = {"COMPLETED": "SUCCESS", "FAILED": "FAILURE", "CANCELLED": "CANCELLED"}[status]
            body: dict[str, Any] = {"result_type": outcome, "completed_at": now, **(results or {})}
            if error_message and "error" not in body:
                body["error"] = error_message
            sets.update(
                {
                    "completed_at": now,
                    "job_results": cap_results(scrub_value(body)),
                    "process_exit_confirmed": process_exit_confirmed,
                }
            )
        if status == Status.PAUSED:
            sets.update(
                {
                    "paused_from": str(paused_from),
                    "paused_at": now,
                    "worker_id": UNCLAIMED_WORKER,
                    "next_check_at": format_timestamp(next_check_at) if next_check_at else None,
                }
            )
            if activity is not None and activity.progress is not None:
                activity = replace(activity, progress=replace(activity.progress, is_paused=True))
        # The requests are answered by this write; a re-check or hand-back keeps them for the next run.
        sets.update(dict.fromkeys(REQUESTS))
        reason = error_message or ("paused at a checkpoint" if status == Status.PAUSED else "finished")
        return self._owner_write(
            claim, sets, logs, state, reason, children=children, event=EVENTS[status], activity=activity
        )

    def _written_status(self, status: Status) -> Status:
        """A cancel is written as FAILED (job_results.result_type CANCELLED) under legacy statuses."""
        return Status.FAILED if self._legacy and status == Status.CANCELLED else status

    def _refuse_owned_pause(self, claim: Claim, logs: tuple[LogEntry, ...] | None) -> Status | Lost:
        """A pause request that predates DELPHI_LEGACY_STATUSES: hand the job back instead, request gone."""
        transition("hand_back", Status.PROCESSING, Status.PENDING)
        sets = self._back_to_pending()
        reason = "pause refused: DELPHI_LEGACY_STATUSES is on"
        sets.update(pause_requested=None, handed_back_reason=reason)
        return self._owner_write(claim, sets, logs, None, f"handed back: {reason}", event="job.released")

    def schedule_recheck(
        self,
        claim: Claim,
        next_check_at: datetime,
        *,
        results: Mapping[str, Any] | None = None,
        logs: tuple[LogEntry, ...] | None = None,
        state: Any = None,
        activity: Activity | None = None,
    ) -> Status | Lost:
        transition("finish", Status.PROCESSING, Status.AWAITING_RECHECK)
        sets: dict[str, Any] = {
            "status": Status.AWAITING_RECHECK.value,
            "next_check_at": format_timestamp(next_check_at),
            "worker_id": UNCLAIMED_WORKER,
            "updated_at": format_timestamp(self._clock()),
        }
        if results is not None:
            sets["job_results"] = cap_results(scrub_value(results))
        reason = f"next check at {sets['next_check_at']}"
        return self._owner_write(claim, sets, logs, state, reason, activity=activity)

    def release(
        self,
        claim: Claim,
        *,
        reason: str,
        logs: tuple[LogEntry, ...] | None = None,
        activity: Activity | None = None,
    ) -> Status | Lost:
        """Hand the job back to PENDING without consuming an attempt (shutdown)."""
        transition("hand_back", Status.PROCESSING, Status.PENDING)
        sets = self._back_to_pending()
        sets["handed_back_reason"] = reason
        note = f"handed back: {reason}"
        return self._owner_write(claim, sets, logs, None, note, event="job.released", activity=activity)

    def retry_later(
        self,
        claim: Claim,
        *,
        error: str,
        logs: tuple[LogEntry, ...] | None = None,
        delay_seconds: float | None = None,
        process_exit_confirmed: bool = True,
        activity: Activity | None = None,
    ) -> Status | Lost:
        """PENDING again after a backoff while attempts are left, else FAILED."""
        job = claim.job
        if job.retry_count >= job.max_retries:
            message = f"{error} (gave up after {job.retry_count + 1} attempts)"
            return self.finish(
                claim,
                Status.FAILED,
                error_message=message,
                logs=logs,
                process_exit_confirmed=process_exit_confirmed,
                activity=activity,
            )
        transition("hand_back", Status.PROCESSING, Status.PENDING)
        delay = retry_delay(job.retry_count, self._retry_base) if delay_seconds is None else delay_seconds
        sets = self._back_to_pending()
        sets.update(
            {
                "retry_count": job.retry_count + 1,
                "run_after": format_timestamp(self._clock() + timedelta(seconds=delay)),
                "error_message": _safe_error(error),
            }
        )
        reason = f"retry {job.retry_count + 1} of {job.max_retries} at {sets['run_after']}: {error}"
        return self._owner_write(claim, sets, logs, None, reason, event="job.retrying", activity=activity)

    def _back_to_pending(self) -> dict[str, Any]:
        return {
            "status": Status.PENDING.value,
            "worker_id": UNCLAIMED_WORKER,
            "started_at": "",
            "updated_at": format_timestamp(self._clock()),
        }

    @staticmethod
    def _logs_budget(item: Mapping[str, Any], values: Mapping[str, Any]) -> int:
        """The bytes ``logs`` may take in a write of ``values`` on ``item`` (as claimed): whatever else
        the item will hold counts first, so that a record that arrived large still takes our writes
        (issue 11). At worst the logs shrink to one entry saying they were cut."""
        after = {name: value for name, value in item.items() if name not in values and name != "logs"}
        after.update({name: value for name, value in values.items() if value is not None and name != "logs"})
        room = MAX_ITEM_BYTES - item_size(after) - ITEM_MARGIN_BYTES - len("logs")
        return max(0, min(MAX_LOGS_BYTES, room))

    @staticmethod
    def _fence(claim: Claim) -> tuple[Condition, ...]:
        return (
            Equals("status", Status.PROCESSING.value),
            Equals("worker_id", claim.worker_id),
            Equals("version", claim.version),
        )

    def _owner_write(
        self,
        claim: Claim,
        sets: Mapping[str, Any],
        logs: tuple[LogEntry, ...] | None,
        state: Any,
        reason: str,
        *,
        children: Sequence[ChildJob] = (),
        event: str | None = None,
        activity: Activity | None = None,
    ) -> Status | Lost:
        """The owner's final write of a run. Signed ``updated_by`` so that a write whose response was
        lost (botocore retries it, and the retry then fails our own fence) is recognised as ours."""
        target = Status(sets["status"])
        values: dict[str, Any] = {
            **(encode_state(state) if state is not None else {}),
            **sets,
            "version": claim.version + 1,
            "updated_by": claim.worker_id,
            "lock_expires_at": None,
            "history": _history(claim.job, self._clock(), target, claim.worker_id, reason),
        }
        if activity is not None:
            values.update(activity.attributes(format_timestamp(self._clock())))
        if logs is not None:
            values["logs"] = encode_logs(logs, self._logs_budget(claim.job.item, values))
        change = Change(set=values, when=self._fence(claim))
        if children:
            inserts = [self.child_record(child, claim.worker_id) for child in children]
            written = self._store.transact(claim.job.job_id, change, inserts)
        else:
            written = self._store.update(claim.job.job_id, change)
        if isinstance(written, Lost):
            current = written.current or {}
            landed = (
                current.get("version") == claim.version + 1
                and current.get("updated_by") == claim.worker_id
                and current.get("status") == target
            )
            if not landed:
                return written
        _emit(event or EVENTS[target], claim.job, claim.worker_id, reason, worker_id=claim.worker_id)
        return target

    def merge_results(
        self, job_id: str, updates: Mapping[str, Any], *, error_message: str | Keep | None = KEEP
    ) -> bool:
        """Merge keys into another job's ``job_results`` (a checker reporting to its parent), and set
        its ``error_message`` unless KEEP (None removes it).

        Not a transition, so no version bump and no status change (COMPLETED stays COMPLETED);
        conditioned on ``job_results`` as read, so two writers never lose each other's keys. False
        when the job does not exist.
        """
        for attempt in range(5):
            job = self.get(job_id)
            if job is None:
                return False
            sets: dict[str, Any] = {"job_results": encode_json({**job.job_results, **updates})}
            if error_message is not KEEP:
                sets["error_message"] = error_message
            change = Change(set=sets, when=(Equals("job_id", job_id), as_observed(job.item, "job_results")))
            if not isinstance(self._store.update(job_id, change), Lost):
                return True
            time.sleep(0.05 * (attempt + 1))
        raise JobChanging(f"job {job_id}: job_results kept changing; merge not applied")

    # ---- operator side ---------------------------------------------------------------------------

    def cancel(self, job_id: str, reason: str, *, by: str = "operator") -> OperatorResult:
        """Cancel now (PENDING, PAUSED) or ask the owner or checker to (PROCESSING, AWAITING_RECHECK,
        and a PENDING job that holds something outside DynamoDB, which its handler must release)."""
        request = f"{reason} (requested by {by})"

        def act(job: Job) -> OperatorResult | Lost:
            if self._stuck(job):
                now = format_timestamp(self._clock())
                if job.needs_owner_cleanup:
                    # Its handler must release what it holds (a paid batch): due now, with the request.
                    handback = {"cancel_requested": request, "worker_id": UNCLAIMED_WORKER, "run_after": None}
                    return self._status_write(job, "cancel_stuck", Status.PENDING, handback, by, reason)
                body = {"result_type": "CANCELLED", "completed_at": now, "error": reason}
                stuck: dict[str, Any] = {
                    "completed_at": now,
                    "error_message": reason,
                    "job_results": encode_json(body),
                    "process_exit_confirmed": False,  # whoever holds the lease may still be running it
                }
                target = self._written_status(Status.CANCELLED)
                return self._status_write(job, "cancel_stuck", target, stuck, by, reason)
            if job.status == Status.PENDING and job.needs_owner_cleanup:
                # Make it due now: a worker claims it, its handler releases what it holds, it ends CANCELLED.
                return self._request(job, "cancel", {"cancel_requested": request, "run_after": None}, by)
            if job.status == Status.PAUSED and job.needs_owner_cleanup:
                # Resumed with the request and due now, so its handler releases what it holds.
                return self._status_write(
                    job, "resume", self._paused_from(job), self._unpaused(job, request), by, reason
                )
            if job.status in TRANSITIONS["cancel"].sources:
                now = format_timestamp(self._clock())
                body = {"result_type": "CANCELLED", "completed_at": now, "error": reason}
                done: dict[str, Any] = {
                    "completed_at": now,
                    "error_message": reason,
                    "job_results": encode_json(body),
                    "process_exit_confirmed": True,  # it runs nothing while PENDING or PAUSED
                }
                return self._status_write(
                    job, "cancel", self._written_status(Status.CANCELLED), done, by, reason
                )
            if job.status in (Status.PROCESSING, Status.AWAITING_RECHECK):
                sets: dict[str, Any] = {"cancel_requested": request}
                if job.status == Status.AWAITING_RECHECK:
                    # Make the checker due now: it claims the job, cancels the batch and ends CANCELLED.
                    sets["next_check_at"] = format_timestamp(self._clock())
                return self._request(job, "cancel", sets, by)
            raise InvalidStateError("cancel", job.status, Status.CANCELLED)

        return self._operator(job_id, act)

    def pause(
        self, job_id: str, reason: str = "paused by operator", *, by: str = "operator"
    ) -> OperatorResult:
        """Pause now (PENDING, AWAITING_RECHECK) or ask the owner to (PROCESSING); refused under
        DELPHI_LEGACY_STATUSES, since readers that know only the original statuses would count a
        PAUSED job as running for ever."""

        def act(job: Job) -> OperatorResult | Lost:
            if self._legacy:
                raise InvalidStateError(
                    "pause",
                    job.status,
                    Status.PAUSED,
                    why="pausing is disabled (DELPHI_LEGACY_STATUSES): Polis readers that know only the "
                    "original statuses would count a PAUSED job as running for ever; cancel it instead",
                )
            if job.status in TRANSITIONS["pause"].sources:
                paused = {"paused_from": job.status, "paused_at": format_timestamp(self._clock())}
                return self._status_write(job, "pause", Status.PAUSED, paused, by, reason)
            if job.status == Status.PROCESSING:
                return self._request(job, "pause", {"pause_requested": f"{reason} (requested by {by})"}, by)
            raise InvalidStateError("pause", job.status, Status.PAUSED)

        return self._operator(job_id, act)

    def resume(self, job_id: str, *, by: str = "operator") -> OperatorResult:
        """PAUSED back to what it was paused from, to go on from its checkpoint on any poller."""

        def act(job: Job) -> OperatorResult | Lost:
            return self._status_write(
                job, "resume", self._paused_from(job), self._unpaused(job), by, "resumed"
            )

        return self._operator(job_id, act)

    @staticmethod
    def _paused_from(job: Job) -> Status:
        paused_from = job.item.get("paused_from")
        return (
            Status(paused_from)
            if paused_from in (Status.PENDING, Status.AWAITING_RECHECK)
            else Status.PENDING
        )

    def _unpaused(self, job: Job, cancel_request: str | None = None) -> dict[str, Any]:
        """What a resume writes; with a cancel request the job is also due at once."""
        sets: dict[str, Any] = {"paused_from": None, "paused_at": None, "worker_id": UNCLAIMED_WORKER}
        if job.progress:
            sets["progress"] = encode_json({**job.progress, "is_paused": False})
        if cancel_request:
            now = format_timestamp(self._clock())
            sets.update(cancel_requested=cancel_request, run_after=None, next_check_at=now)
        return sets

    def expire_pauses(self, timeout_seconds: float, *, by: str = "pause-timeout") -> list[OperatorResult]:
        """Cancel the PAUSED jobs paused longer than ``timeout_seconds``: one bounded look at the PAUSED
        jobs (rotating through them across calls), one fenced write each. Whichever poller notices first
        does it; the others lose the race quietly."""
        now = self._clock()
        limit = now - timedelta(seconds=timeout_seconds)
        expired = self._look(Status.PAUSED, lambda job: (job.paused_at or now) <= limit)
        done = []
        for job in expired:
            reason = f"paused for more than {timeout_seconds:g}s (DELPHI_PAUSE_TIMEOUT)"
            try:
                done.append(self.cancel(job.job_id, reason, by=by))
            except (InvalidStateError, JobNotFound, JobChanging):
                continue  # resumed, cancelled or changed meanwhile: nothing to expire
        return done

    def retry(self, job_id: str, *, by: str = "operator") -> OperatorResult:
        """An operator's retry of a FAILED job, or of a PROCESSING job held by an impossible lease (see
        cancel): a fresh set of attempts, due now."""

        def act(job: Job) -> OperatorResult | Lost:
            name = "retry_stuck" if self._stuck(job) else "retry"
            sets = {
                "worker_id": UNCLAIMED_WORKER,
                "retry_count": 0,
                "reclaim_count": 0,
                "started_at": "",
                "completed_at": "",
                "error_message": None,
                "run_after": None,
            }
            return self._status_write(job, name, Status.PENDING, sets, by, "retried by an operator")

        return self._operator(job_id, act)

    def _operator(self, job_id: str, act: Callable[[Job], OperatorResult | Lost]) -> OperatorResult:
        """Read, decide, write conditionally; re-read when the job moved in between (a few times)."""
        for attempt in range(5):
            job = self.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            result = act(job)
            if not isinstance(result, Lost):
                return result
            time.sleep(0.05 * (attempt + 1))
        raise JobChanging(f"job {job_id} kept changing; try again")

    def _stuck(self, job: Job) -> bool:
        """PROCESSING with a lease no live poller can have written: further ahead than now + the lease
        + SKEW_ALLOWANCE_SECONDS (clock skew, hand edits). Such a job would otherwise be held for ever:
        nobody renews it, nobody may reclaim it, and its owner (if any) never sees a request. Acting on
        it directly is safe: the version bump fences off any owner, which stops and writes nothing."""
        limit = self._clock() + timedelta(seconds=self._lease_seconds + SKEW_ALLOWANCE_SECONDS)
        lease = job.lock_expires_at
        return job.status == Status.PROCESSING and lease is not None and lease > limit

    def _status_write(
        self, job: Job, name: str, target: Status, sets: Mapping[str, Any], by: str, reason: str
    ) -> OperatorResult | Lost:
        found = transition(name, job.status, target)
        assert found.guard in (Guard.STATUS, Guard.STUCK)
        now = self._clock()
        requests = dict.fromkeys(REQUESTS)
        requests.update({k: v for k, v in sets.items() if k in REQUESTS})
        values = {
            **sets,
            **requests,
            "status": target.value,
            "updated_at": format_timestamp(now),
            "version": (job.version or 0) + 1,
            "history": _history(job, now, target, by, reason),
        }
        when: tuple[Condition, ...] = (
            OneOf("status", tuple(sorted(found.sources))),
            as_observed(job.item, "version"),
        )
        if found.guard is Guard.STUCK:
            values["lock_expires_at"] = None
            when += (as_observed(job.item, "lock_expires_at"),)
        change = Change(set=values, when=when)
        written = self._store.update(job.job_id, change)
        if isinstance(written, Lost):
            return written
        _emit(OPERATOR_EVENTS[name], job, by, reason)
        return OperatorResult(job.job_id, name, target)

    def _request(self, job: Job, action: str, sets: Mapping[str, Any], by: str) -> OperatorResult | Lost:
        """Flag a request for the owner: no status change, so no version bump, but fenced on both."""
        change = Change(set=sets, when=(Equals("status", job.status), as_observed(job.item, "version")))
        written = self._store.update(job.job_id, change)
        if isinstance(written, Lost):
            return written
        _emit(f"job.{action}_requested", job, by, str(next(iter(sets.values()))))
        return OperatorResult(job.job_id, action, job.status, requested=True)

    # ---- operator reads and repairs -------------------------------------------------------------
    # What only the operator layer (delphi_jobs.ops) needs: pages, counts and a scan of the table, a
    # parent's checkers, and the operator's reset. Thin on purpose: each is one store primitive.

    def query_index(
        self,
        index: str,
        key: Any,
        *,
        limit: int,
        start: Cursor | None = None,
        newest_first: bool = False,
        range_from: Any = None,
        range_to: Any = None,
    ) -> JobPage:
        """One page of a GSI: jobs whose hash key equals ``key``, ordered by the range key, which is
        bounded by ``range_from`` / ``range_to`` (inclusive) when given. Never a Scan."""
        page = self._store.query(
            index,
            key,
            limit=limit,
            start=start,
            newest_first=newest_first,
            range_from=range_from,
            range_to=range_to,
        )
        return JobPage([Job.from_item(item) for item in page.items], page.next)

    def count_index(self, index: str, key: Any, *, range_from: Any = None, range_to: Any = None) -> int:
        """How many jobs one GSI key holds (in the range), without transferring them."""
        return self._store.count(index, key, range_from=range_from, range_to=range_to)

    def scan_page(self, *, start: Cursor | None = None, limit: int = 500) -> JobPage:
        """One page of a full-table Scan: only for an operator who asked for one (``doctor --scan``)."""
        page = self._store.scan(limit=limit, start=start)
        return JobPage([Job.from_item(item) for item in page.items], page.next)

    def checkers_of(self, parent: Job) -> list[Job]:
        """The jobs that report to ``parent`` (``batch_job_id``). A checker inherits its parent's
        conversation and priority, so one conversation's jobs (or, without a conversation, the
        checkers of that priority) are read: an index query, never a Scan."""
        bounds: dict[str, Any] = {}
        if parent.conversation_id:
            index, key = CONVERSATION_INDEX, parent.conversation_id
        else:
            index, key = JOB_TYPE_INDEX, AWAITING_NARRATIVE_BATCH
            bounds = {"range_from": parent.priority, "range_to": parent.priority}
        found: list[Job] = []
        start: Cursor | None = None
        while True:
            page = self.query_index(index, key, limit=100, start=start, **bounds)
            found += [job for job in page.jobs if job.batch_job_id == parent.job_id]
            if page.next is None:
                return found
            start = page.next

    def reset(self, job: Job, target: Status, *, by: str, reason: str, force: bool = False) -> bool:
        """An operator takes a PROCESSING job away from its owner: FAILED, or PENDING to run again.

        One conditional write on the job as observed. Without ``force`` the lease must have expired
        and still be the one observed (a heartbeat since then wins); with ``force`` a live owner loses
        the job: the version bump makes its next fenced write, a heartbeat, fail, which stops the job.
        False when the job changed first, or its lease is alive and ``force`` is not given.
        """
        found = transition("force_reset" if force else "reset", job.status, target)
        now = self._clock()
        when: list[Condition] = [Equals("status", Status.PROCESSING.value), as_observed(job.item, "version")]
        if found.guard is Guard.LEASE_EXPIRED:
            if not passed(job.lock_expires_at, now, strictly=True):  # an operator waits for no backoff
                return False
            when.append(as_observed(job.item, "lock_expires_at"))
        stamp = format_timestamp(now)
        message = f"reset to {target} by {by}: {reason}"
        values: dict[str, Any] = {
            "history": _history(job, now, target, by, f"reset: {reason}"),
            "status": target.value,
            "worker_id": UNCLAIMED_WORKER,
            "updated_at": stamp,
            "version": (job.version or 0) + 1,
            "reset_by": by,
            "reset_reason": reason,
            "error_message": message,
            "lock_expires_at": None,
            **dict.fromkeys(REQUESTS),
        }
        if target == Status.FAILED:
            body = {"result_type": "FAILURE", "completed_at": stamp, "error": message, "reset_by": by}
            # Nothing proved the old owner's processes gone (it may still run on a lost host).
            values.update(
                {"completed_at": stamp, "job_results": encode_json(body), "process_exit_confirmed": False}
            )
        else:
            values.update({"started_at": "", "run_after": None})
        if isinstance(self._store.update(job.job_id, Change(set=values, when=tuple(when))), Lost):
            return False
        _emit("job.reset", job, by, reason, to=target.value, forced=force)
        return True


@dataclass(frozen=True)
class JobPage:
    """One page of an index query or scan; ``next`` continues it, None when nothing more matched."""

    jobs: list[Job]
    next: Cursor | None
