"""The Anthropic Message Batches API through the official SDK, reduced to what the handlers need.

Errors are classified once here: ``retryable`` (429, 5xx, 529, lost connections) or not (4xx). A lost
connection may hide a request that was applied, which for a create means a batch may exist that we do
not know about: creates are sent without SDK retries for that reason (a silently retried create could
pay for a second batch), and the create handler's submission marker finds such a batch when the job
runs again. Only a refusal, 429 (rate limited) or 529 (overloaded), says for sure that nothing was
created: those creates are sent again here, honouring ``retry-after``, so a burst of refusals does not
spend the job's attempts (a storm longer than that still fails the run as retryable).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
REFUSED_STATUS = frozenset({429, 529})
"""The API turned the request away before doing anything: safe to send a create again."""
REFUSED_RETRIES = 5
MAX_REFUSED_WAIT = 60.0


class BatchApiError(Exception):
    def __init__(
        self, message: str, *, retryable: bool, status: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        """Seconds the API asked us to wait (``retry-after``), when it said."""

    @property
    def not_applied(self) -> bool:
        """The API answered that it did not carry the request out: a refusal (429, 529) or a client
        error other than a timeout (408) or a conflict (409). For a create: no batch exists. A lost
        connection or another 5xx may hide a batch that was created."""
        if self.status is None:
            return False
        return self.status in REFUSED_STATUS or (400 <= self.status < 500 and self.status not in (408, 409))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        seconds = float(headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if seconds > 0 else None


@dataclass(frozen=True)
class BatchInfo:
    id: str
    processing_status: str
    request_counts: Mapping[str, int]
    created_at: datetime
    ended_at: datetime | None

    @property
    def total_requests(self) -> int:
        return sum(self.request_counts.values())


@dataclass(frozen=True)
class ResultLine:
    """One line of a batch's results; ``malformed`` carries the parse problem of a bad line."""

    custom_id: str
    type: str
    text: str = ""
    model: str = ""
    stop_reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    malformed: str | None = None
    usage: Mapping[str, Any] = field(default_factory=dict)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _info(batch: Any) -> BatchInfo:
    counts = batch.request_counts
    return BatchInfo(
        id=batch.id,
        processing_status=batch.processing_status,
        request_counts={
            "processing": counts.processing,
            "succeeded": counts.succeeded,
            "errored": counts.errored,
            "canceled": counts.canceled,
            "expired": counts.expired,
        },
        created_at=_aware(batch.created_at),
        ended_at=_aware(batch.ended_at) if batch.ended_at is not None else None,
    )


def parse_result_line(raw: str) -> ResultLine:
    """Decode one JSONL line; a malformed line becomes a ResultLine with ``malformed`` set."""
    try:
        doc = json.loads(raw)
        custom_id = str(doc["custom_id"])
        result = doc["result"]
        kind = str(result["type"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        return ResultLine(custom_id="", type="malformed", malformed=f"{type(exc).__name__}: {exc}"[:200])
    if kind == "succeeded":
        message = result.get("message") or {}
        text = "".join(
            block.get("text", "") for block in message.get("content", []) if block.get("type") == "text"
        )
        return ResultLine(
            custom_id,
            kind,
            text=text,
            model=str(message.get("model", "")),
            stop_reason=message.get("stop_reason"),
            usage=message.get("usage") or {},
        )
    if kind == "errored":
        error = (result.get("error") or {}).get("error") or {}
        return ResultLine(
            custom_id, kind, error_type=str(error.get("type", "unknown")), error_message=error.get("message")
        )
    return ResultLine(custom_id, kind)


class BatchClient:
    def __init__(
        self, api_key: str, base_url: str | None = None, *, timeout: float = 60.0, max_retries: int = 2
    ) -> None:
        import anthropic  # the SDK and pydantic weigh ~50 MB: loaded by the first narrative job, not at start

        self._client = anthropic.Anthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import anthropic

        try:
            return fn(*args, **kwargs)
        except anthropic.APIStatusError as exc:
            kind = ""
            if isinstance(exc.body, Mapping):
                kind = str((exc.body.get("error") or {}).get("type", ""))
            raise BatchApiError(
                f"{what}: Anthropic API returned {exc.status_code} {kind}".rstrip(),
                retryable=exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500,
                status=exc.status_code,
                retry_after=_retry_after(exc.response.headers),
            ) from None
        except anthropic.APIConnectionError as exc:  # includes APITimeoutError
            raise BatchApiError(
                f"{what}: no response from the Anthropic API ({type(exc).__name__})",
                retryable=True,
            ) from None

    def create(self, requests: Sequence[Mapping[str, Any]]) -> BatchInfo:
        """Create one batch. No SDK retries (see the module docstring); refusals are sent again."""
        no_retry = self._client.with_options(max_retries=0)
        refused = 0
        while True:
            try:
                batch = self._call("create batch", no_retry.messages.batches.create, requests=list(requests))
                return _info(batch)
            except BatchApiError as exc:
                if exc.status not in REFUSED_STATUS or refused == REFUSED_RETRIES:
                    raise
                backoff = min(8.0, 0.5 * 2**refused) * random.uniform(0.75, 1.0)
                time.sleep(min(MAX_REFUSED_WAIT, exc.retry_after or backoff))
                refused += 1

    def retrieve(self, batch_id: str) -> BatchInfo:
        return _info(self._call("retrieve batch", self._client.messages.batches.retrieve, batch_id))

    def cancel(self, batch_id: str) -> BatchInfo:
        return _info(self._call("cancel batch", self._client.messages.batches.cancel, batch_id))

    def created_since(self, moment: datetime, *, limit: int = 1000) -> tuple[list[BatchInfo], bool]:
        """Batches created at or after ``moment`` (newest first), to find a batch whose create
        response was lost; the flag is False when ``limit`` cut the list short."""
        found: list[BatchInfo] = []
        after: str | None = None
        while len(found) < limit:
            kwargs: dict[str, Any] = {"limit": 100}
            if after:
                kwargs["after_id"] = after
            page = self._call("list batches", self._client.messages.batches.list, **kwargs)
            batches = [_info(b) for b in page.data]
            for batch in batches:
                if batch.created_at < moment:
                    return found, True
                found.append(batch)
            if not page.has_more or not batches:
                return found, True
            after = page.last_id
        return found, False

    def results(self, batch_id: str) -> Iterator[ResultLine]:
        """Stream and parse the results; the response is closed however the caller stops."""
        import anthropic

        streaming = self._client.messages.batches.with_streaming_response
        try:
            with streaming.results(batch_id) as response:
                for raw in response.iter_lines():
                    if raw.strip():
                        yield parse_result_line(raw)
        except anthropic.APIStatusError as exc:
            raise BatchApiError(
                f"results: Anthropic API returned {exc.status_code}",
                retryable=exc.status_code >= 429,
                status=exc.status_code,
            ) from None
        except Exception as exc:  # a cut body surfaces as the HTTP library's own transport error
            raise BatchApiError(f"results: stream broken ({type(exc).__name__})", retryable=True) from None
