"""JobQueue: the only module that writes ``Delphi_JobQueue``.

Every state change is ONE conditional ``UpdateItem`` whose condition comes from the transition's guard
in ``states.py`` and that bumps ``version``, the fencing token. A worker's writes after claiming are
fenced on (status PROCESSING, its worker_id, the claimed version): after its lease was taken over, none
of them can change the item. A lost condition is a normal outcome (someone else won) and is returned as
None/False, never retried blindly.

Polling cost is bounded (defect 1): each status is read with ``Limit``ed ``Query`` pages on
``StatusCreatedIndex``, oldest first; further pages are read only when a page holds nothing claimable,
and at most ``max_pages`` of them, continuing from where the previous poll stopped so that every job is
eventually seen however long the queue is.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from delphi_jobs.dynamo import Expression, from_item, is_condition_failure, to_item, to_value
from delphi_jobs.logs import get_logger
from delphi_jobs.model import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_PRIORITY,
    UNCLAIMED_WORKER,
    Job,
    JobValidationError,
    LogEntry,
    encode_json,
    encode_logs,
    format_timestamp,
    utcnow,
)
from delphi_jobs.states import TRANSITIONS, Guard, InvalidStateError, Status, transition
from delphi_jobs.tables import STATUS_CREATED_INDEX

Clock = Callable[[], datetime]
_log = get_logger(component="queue")

RETRY_BASE_SECONDS = 30.0
RETRY_CAP_SECONDS = 3600.0
_NEW_JOB_CONDITION = {
    "ConditionExpression": "attribute_not_exists(#id)",
    "ExpressionAttributeNames": {"#id": "job_id"},
}


class JobExists(Exception):
    """enqueue() found a job with the same id."""


@dataclass(frozen=True)
class Claim:
    """Proof of ownership: the job as claimed, and the fencing token every later write is checked on."""

    job: Job
    worker_id: str
    version: int
    reclaimed: bool = False


@dataclass(frozen=True)
class OperatorResult:
    """What an operator action did: ``applied`` (the new status) or ``requested`` (the owner will act)."""

    job_id: str
    action: str
    status: str
    requested: bool = False


def retry_delay(retry_count: int, base: float = RETRY_BASE_SECONDS, cap: float = RETRY_CAP_SECONDS) -> float:
    """Exponential backoff with full jitter over the upper half, so retries of a batch spread out."""
    ceiling = min(cap, base * (2**retry_count))
    return random.uniform(ceiling / 2, ceiling)


class JobQueue:
    def __init__(
        self,
        client: Any,
        table: str,
        *,
        clock: Clock = utcnow,
        page_size: int = 25,
        max_pages: int = 4,
    ) -> None:
        self._client = client
        self._table = table
        self._clock = clock
        self._page_size = page_size
        self._max_pages = max_pages
        self._cursors: dict[str, dict[str, Any] | None] = {}

    @property
    def table(self) -> str:
        return self._table

    # ---- reads -----------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        response = self._client.get_item(
            TableName=self._table, Key=to_item({"job_id": job_id}), ConsistentRead=True
        )
        item = response.get("Item")
        return Job.from_item(from_item(item)) if item else None

    def list_by_status(self, status: str, *, limit: int = 100) -> list[Job]:
        """Oldest first, at most ``limit`` jobs: for operator tools, never for the poll loop."""
        jobs: list[Job] = []
        for page in self._status_pages(status, start=None, pages=max(1, -(-limit // self._page_size))):
            jobs += page.jobs
            if len(jobs) >= limit:
                break
        return jobs[:limit]

    def find_candidates(self, now: datetime | None = None) -> list[Job]:
        """Jobs claimable now, highest priority first, then oldest; bounded number of requests."""
        now = now or self._clock()
        found: list[Job] = []
        found += self._scan(Status.PENDING, lambda j: _passed(j.run_after, now))
        found += self._scan(Status.AWAITING_RECHECK, lambda j: _passed(j.next_check_at, now))
        found += self._scan(Status.PROCESSING, lambda j: _passed(j.lock_expires_at, now, strictly=True))
        return sorted(found, key=lambda j: (-j.priority, j.created_at or now))

    @dataclass(frozen=True)
    class _Page:
        jobs: list[Job]
        next_key: dict[str, Any] | None

    def _status_pages(self, status: str, start: dict[str, Any] | None, pages: int) -> list[_Page]:
        read: list[JobQueue._Page] = []
        key = start
        for _ in range(pages):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": STATUS_CREATED_INDEX,
                "KeyConditionExpression": "#s = :s",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {":s": to_value(status)},
                "Limit": self._page_size,
                "ScanIndexForward": True,
            }
            if key:
                kwargs["ExclusiveStartKey"] = key
            response = self._client.query(**kwargs)
            jobs = []
            for raw in response.get("Items", []):
                try:
                    jobs.append(Job.from_item(from_item(raw)))
                except JobValidationError:
                    # Without a job_id a record cannot be claimed, failed or even named: log and skip.
                    _log.error(
                        "skipping a job record without a usable job_id", status=status, item_keys=sorted(raw)
                    )
            key = response.get("LastEvaluatedKey")
            read.append(JobQueue._Page(jobs, key))
            if key is None:
                break
        return read

    def _scan(self, status: Status, claimable: Callable[[Job], bool]) -> list[Job]:
        first = self._status_pages(status, start=None, pages=1)[0]
        found = [j for j in first.jobs if claimable(j)]
        if found or first.next_key is None:
            return found
        # The head of the queue holds nothing claimable (e.g. backed-off jobs, long-running live
        # jobs): look further, resuming where the last poll stopped, a bounded number of pages.
        cursor = self._cursors.get(status) or first.next_key
        for page in self._status_pages(status, start=cursor, pages=self._max_pages - 1):
            found += [j for j in page.jobs if claimable(j)]
            self._cursors[status] = page.next_key
            if found:
                break
        return found

    # ---- producer side ---------------------------------------------------------------------------

    def enqueue(self, record: Mapping[str, Any]) -> Job:
        """Insert a new job; fills in what the Polis server would write for omitted fields."""
        item = self.new_record(record)
        job = Job.from_item(item)
        try:
            self._client.put_item(TableName=self._table, Item=to_item(item), **_NEW_JOB_CONDITION)
        except Exception as exc:
            if is_condition_failure(exc):
                raise JobExists(job.job_id) from None
            raise
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
        return item

    # ---- worker side -----------------------------------------------------------------------------

    def claim(self, job: Job, worker_id: str, lease_seconds: float) -> Claim | None:
        """Take ``job`` as observed by find_candidates; None when someone else changed it first."""
        now = self._clock()
        expr = Expression()
        if job.status == Status.PROCESSING:
            found = transition("reclaim", job.status, Status.PROCESSING)
            expr.when(expr.equals_or_missing("lock_expires_at", job.item.get("lock_expires_at")))
            if not _passed(job.lock_expires_at, now, strictly=True):
                return None
        elif job.status == Status.AWAITING_RECHECK:
            found = transition("claim_recheck", job.status, Status.PROCESSING)
            expr.when(expr.equals_or_missing("next_check_at", job.item.get("next_check_at")))
            if not _passed(job.next_check_at, now):
                return None
        else:
            found = transition("claim", job.status, Status.PROCESSING)
            expr.when(expr.equals_or_missing("run_after", job.item.get("run_after")))
            if not _passed(job.run_after, now):
                return None
        assert found.guard in (Guard.DUE, Guard.LEASE_EXPIRED)
        expr.when(expr.equals("status", job.status))
        expr.when(expr.equals_or_missing("version", job.item.get("version")))
        version = (job.version or 0) + 1
        expr.set_many(
            {
                "status": Status.PROCESSING.value,
                "worker_id": worker_id,
                "started_at": format_timestamp(now),
                "updated_at": format_timestamp(now),
                "lock_expires_at": format_timestamp(now + timedelta(seconds=lease_seconds)),
                "version": version,
            }
        )
        if found.name == "reclaim":
            expr.set("reclaim_count", job.reclaim_count + 1)
        expr.remove("run_after", "next_check_at")
        item = self._update(job.job_id, expr, return_values=True)
        if item is None:
            return None
        return Claim(Job.from_item(item), worker_id, version, reclaimed=found.name == "reclaim")

    def heartbeat(
        self,
        claim: Claim,
        lease_seconds: float,
        *,
        logs: tuple[LogEntry, ...] | None = None,
        progress: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Job | None:
        """Extend the lease and flush logs/progress in one fenced write; None means the lease is lost.

        Returns the fresh item so the worker sees cancel and pause requests. Does not bump version.
        """
        now = self._clock()
        expr = self._fenced(claim)
        expr.set("lock_expires_at", format_timestamp(now + timedelta(seconds=lease_seconds)))
        expr.set("updated_at", format_timestamp(now))
        if logs is not None:
            expr.set("logs", encode_logs(logs))
        if progress is not None:
            expr.set("progress", encode_json({**progress, "updated_at": format_timestamp(now)}))
        if attributes:
            expr.set_many(attributes)
        item = self._update(claim.job.job_id, expr, return_values=True)
        return Job.from_item(item) if item is not None else None

    def finish(
        self,
        claim: Claim,
        status: Status,
        *,
        results: Mapping[str, Any] | None = None,
        error_message: str | None = None,
        logs: tuple[LogEntry, ...] | None = None,
        attributes: Mapping[str, Any] | None = None,
        children: tuple[Mapping[str, Any], ...] = (),
    ) -> bool:
        """COMPLETED / FAILED (finish), CANCELLED (cancel_owned) or PAUSED (pause_owned).

        ``children`` are new job records inserted in the same transaction (a batch checker), so a
        parent can never be COMPLETED without its follow-up job existing, nor the other way round.
        """
        name = {Status.CANCELLED: "cancel_owned", Status.PAUSED: "pause_owned"}.get(status, "finish")
        transition(name, Status.PROCESSING, status)
        now = format_timestamp(self._clock())
        sets: dict[str, Any] = {"status": status.value, "updated_at": now, "error_message": error_message}
        if status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED):
            outcome = {"COMPLETED": "SUCCESS", "FAILED": "FAILURE", "CANCELLED": "CANCELLED"}[status]
            body: dict[str, Any] = {"result_type": outcome, "completed_at": now, **(results or {})}
            if error_message and "error" not in body:
                body["error"] = error_message
            sets.update({"completed_at": now, "job_results": encode_json(body)})
        if status == Status.PAUSED:
            sets.update({"paused_from": Status.PENDING.value, "worker_id": UNCLAIMED_WORKER})
        removed = ("cancel_requested", "pause_requested")
        if not children:
            return self._owner_write(claim, sets, logs, attributes, remove=removed)
        expr = self._owner_expression(claim, sets, logs, attributes, removed)
        key = to_item({"job_id": claim.job.job_id})
        actions: list[dict[str, Any]] = [{"Update": {"TableName": self._table, "Key": key, **expr.request()}}]
        for child in children:
            item = to_item(self.new_record(child))
            actions.append({"Put": {"TableName": self._table, "Item": item, **_NEW_JOB_CONDITION}})
        try:
            self._client.transact_write_items(TransactItems=actions)
        except Exception as exc:
            reasons = getattr(exc, "response", {}).get("CancellationReasons", [])
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return self._landed(claim, status)  # the fence, or our own lost-response retry
            if any(r.get("Code") == "ConditionalCheckFailed" for r in reasons[1:]):
                raise JobExists(", ".join(str(c.get("job_id")) for c in children)) from exc
            raise
        return True

    def schedule_recheck(
        self,
        claim: Claim,
        next_check_at: datetime,
        *,
        results: Mapping[str, Any] | None = None,
        logs: tuple[LogEntry, ...] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> bool:
        transition("finish", Status.PROCESSING, Status.AWAITING_RECHECK)
        sets: dict[str, Any] = {
            "status": Status.AWAITING_RECHECK.value,
            "next_check_at": format_timestamp(next_check_at),
            "worker_id": UNCLAIMED_WORKER,
            "updated_at": format_timestamp(self._clock()),
        }
        if results is not None:
            sets["job_results"] = encode_json(results)
        return self._owner_write(claim, sets, logs, attributes)

    def release(self, claim: Claim, *, reason: str, logs: tuple[LogEntry, ...] | None = None) -> bool:
        """Hand the job back to PENDING without consuming an attempt (shutdown)."""
        transition("hand_back", Status.PROCESSING, Status.PENDING)
        sets = self._back_to_pending()
        sets["handed_back_reason"] = reason
        return self._owner_write(claim, sets, logs, None)

    def retry_later(
        self,
        claim: Claim,
        *,
        error: str,
        logs: tuple[LogEntry, ...] | None = None,
        delay_seconds: float | None = None,
    ) -> Status | None:
        """PENDING again after a backoff while attempts are left, else FAILED. None: fence lost."""
        job = claim.job
        if job.retry_count >= job.max_retries:
            message = f"{error} (gave up after {job.retry_count + 1} attempts)"
            done = self.finish(claim, Status.FAILED, error_message=message, logs=logs)
            return Status.FAILED if done else None
        transition("hand_back", Status.PROCESSING, Status.PENDING)
        delay = retry_delay(job.retry_count) if delay_seconds is None else delay_seconds
        sets = self._back_to_pending()
        sets.update(
            {
                "retry_count": job.retry_count + 1,
                "run_after": format_timestamp(self._clock() + timedelta(seconds=delay)),
                "error_message": error,
            }
        )
        return Status.PENDING if self._owner_write(claim, sets, logs, None) else None

    def _back_to_pending(self) -> dict[str, Any]:
        return {
            "status": Status.PENDING.value,
            "worker_id": UNCLAIMED_WORKER,
            "started_at": "",
            "updated_at": format_timestamp(self._clock()),
        }

    def _fenced(self, claim: Claim) -> Expression:
        expr = Expression()
        expr.when(expr.equals("status", Status.PROCESSING.value))
        expr.when(expr.equals("worker_id", claim.worker_id))
        expr.when(expr.equals("version", claim.version))
        return expr

    def _owner_expression(
        self,
        claim: Claim,
        sets: Mapping[str, Any],
        logs: tuple[LogEntry, ...] | None,
        attributes: Mapping[str, Any] | None,
        remove: tuple[str, ...],
    ) -> Expression:
        expr = self._fenced(claim)
        expr.set_many(
            {**(attributes or {}), **sets, "version": claim.version + 1, "updated_by": claim.worker_id}
        )
        if logs is not None:
            expr.set("logs", encode_logs(logs))
        expr.remove("lock_expires_at", *remove)
        return expr

    def _owner_write(
        self,
        claim: Claim,
        sets: Mapping[str, Any],
        logs: tuple[LogEntry, ...] | None,
        attributes: Mapping[str, Any] | None,
        remove: tuple[str, ...] = (),
    ) -> bool:
        expr = self._owner_expression(claim, sets, logs, attributes, remove)
        if self._update(claim.job.job_id, expr, return_values=False) is not None:
            return True
        return self._landed(claim, Status(sets["status"]))

    def _landed(self, claim: Claim, status: Status) -> bool:
        """Did our write apply although its condition failed? botocore retries a write whose response
        was lost; the retry then fails our own fence. Only this worker can move the job from the
        claimed version to the next one and sign it ``updated_by``."""
        current = self.get(claim.job.job_id)
        return (
            current is not None
            and current.version == claim.version + 1
            and current.item.get("updated_by") == claim.worker_id
            and current.status == status
        )

    def merge_results(self, job_id: str, updates: Mapping[str, Any]) -> bool:
        """Merge keys into another job's ``job_results`` (a checker reporting to its parent).

        Not a transition, so no version bump; conditioned on ``job_results`` as read, so two writers
        never lose each other's keys. False when the job does not exist.
        """
        for attempt in range(5):
            job = self.get(job_id)
            if job is None:
                return False
            expr = Expression()
            expr.when(expr.equals_or_missing("job_results", job.item.get("job_results")))
            expr.set("job_results", encode_json({**job.job_results, **updates}))
            if self._update(job_id, expr, return_values=False) is not None:
                return True
            time.sleep(0.05 * (attempt + 1))
        raise RuntimeError(f"job {job_id}: job_results kept changing; merge not applied")

    # ---- operator side ---------------------------------------------------------------------------

    def cancel(self, job_id: str, reason: str) -> OperatorResult:
        """Cancel now (PENDING, PAUSED) or ask the owner or checker to (PROCESSING, AWAITING_RECHECK)."""

        def act(job: Job) -> OperatorResult | None:
            if job.status == Status.PENDING and job.batch_id:
                # It owns a paid batch: its handler must cancel that too. Ask it, and make it due now.
                ok = self._request(job, {"cancel_requested": reason, "run_after": None})
                return OperatorResult(job_id, "cancel", job.status, requested=True) if ok else None
            if job.status in TRANSITIONS["cancel"].sources:
                now = format_timestamp(self._clock())
                body = {"result_type": "CANCELLED", "completed_at": now, "error": reason}
                ok = self._status_write(
                    job,
                    "cancel",
                    Status.CANCELLED,
                    {"completed_at": now, "error_message": reason, "job_results": encode_json(body)},
                )
                return OperatorResult(job_id, "cancel", Status.CANCELLED) if ok else None
            if job.status in (Status.PROCESSING, Status.AWAITING_RECHECK):
                sets: dict[str, Any] = {"cancel_requested": reason}
                if job.status == Status.AWAITING_RECHECK:
                    # Make the checker due now: it claims the job, cancels the batch and ends CANCELLED.
                    sets["next_check_at"] = format_timestamp(self._clock())
                ok = self._request(job, sets)
                return OperatorResult(job_id, "cancel", job.status, requested=True) if ok else None
            raise InvalidStateError("cancel", job.status, Status.CANCELLED)

        return self._operator(job_id, act)

    def pause(self, job_id: str, reason: str = "paused by operator") -> OperatorResult:
        def act(job: Job) -> OperatorResult | None:
            if job.status in TRANSITIONS["pause"].sources:
                ok = self._status_write(job, "pause", Status.PAUSED, {"paused_from": job.status})
                return OperatorResult(job_id, "pause", Status.PAUSED) if ok else None
            if job.status == Status.PROCESSING:
                ok = self._request(job, {"pause_requested": reason})
                return OperatorResult(job_id, "pause", job.status, requested=True) if ok else None
            raise InvalidStateError("pause", job.status, Status.PAUSED)

        return self._operator(job_id, act)

    def resume(self, job_id: str) -> OperatorResult:
        def act(job: Job) -> OperatorResult | None:
            target = Status(job.item.get("paused_from") or Status.PENDING)
            ok = self._status_write(
                job, "resume", target, {"paused_from": None, "worker_id": UNCLAIMED_WORKER}
            )
            return OperatorResult(job_id, "resume", target) if ok else None

        return self._operator(job_id, act)

    def retry(self, job_id: str) -> OperatorResult:
        """An operator's retry of a FAILED job: a fresh set of attempts, due now."""

        def act(job: Job) -> OperatorResult | None:
            sets = {
                "worker_id": UNCLAIMED_WORKER,
                "retry_count": 0,
                "reclaim_count": 0,
                "started_at": "",
                "completed_at": "",
                "error_message": None,
                "run_after": None,
            }
            ok = self._status_write(job, "retry", Status.PENDING, sets)
            return OperatorResult(job_id, "retry", Status.PENDING) if ok else None

        return self._operator(job_id, act)

    def _operator(self, job_id: str, act: Callable[[Job], OperatorResult | None]) -> OperatorResult:
        """Read, decide, write conditionally; re-read when the job moved in between (a few times)."""
        for attempt in range(5):
            job = self.get(job_id)
            if job is None:
                raise KeyError(job_id)
            result = act(job)
            if result is not None:
                return result
            time.sleep(0.05 * (attempt + 1))
        raise RuntimeError(f"job {job_id} kept changing; try again")

    def _status_write(self, job: Job, name: str, target: Status, sets: Mapping[str, Any]) -> bool:
        found = transition(name, job.status, target)
        assert found.guard is Guard.STATUS
        expr = Expression()
        expr.when(expr.one_of("status", sorted(found.sources)))
        expr.when(expr.equals_or_missing("version", job.item.get("version")))
        now = format_timestamp(self._clock())
        expr.set_many({**sets, "status": target.value, "updated_at": now, "version": (job.version or 0) + 1})
        expr.remove("cancel_requested", "pause_requested")
        return self._update(job.job_id, expr, return_values=False) is not None

    def _request(self, job: Job, sets: Mapping[str, Any]) -> bool:
        """Flag a request for the owner: no status change, so no version bump, but fenced on both."""
        expr = Expression()
        expr.when(expr.equals("status", job.status))
        expr.when(expr.equals_or_missing("version", job.item.get("version")))
        expr.set_many(sets)
        return self._update(job.job_id, expr, return_values=False) is not None

    # ---- plumbing --------------------------------------------------------------------------------

    def _update(self, job_id: str, expr: Expression, *, return_values: bool) -> dict[str, Any] | None:
        """One conditional UpdateItem; None when the condition failed (someone else won)."""
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key=to_item({"job_id": job_id}),
                ReturnValues="ALL_NEW" if return_values else "NONE",
                **expr.request(),
            )
        except Exception as exc:
            if is_condition_failure(exc):
                return None
            raise
        return from_item(response.get("Attributes", {})) if return_values else {}


def _passed(moment: datetime | None, now: datetime, *, strictly: bool = False) -> bool:
    """Unset counts as passed: a job without run_after is due, one without a lease is abandoned."""
    if moment is None:
        return True
    return moment < now if strictly else moment <= now
