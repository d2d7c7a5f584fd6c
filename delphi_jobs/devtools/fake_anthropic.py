"""A loopback fake of the Anthropic Message Batches API (DESIGN 6 and 8).

The real `anthropic` SDK runs against it unchanged through `base_url`, so the handlers, their tests and
the offline demo exercise the same HTTP paths, headers, retries and JSON Lines decoding as production.
Batch state is derived from the clock (no worker thread): a batch ends `end_after_seconds` after its
creation, and its requests finish evenly spread over that span, which is what decides which of them a
cancel catches. Faults (status errors, slow creates, chosen result outcomes, a malformed or cut results
body) are injected through a small typed API on `FakeAnthropic`.

Deliberate choices where the public documentation is silent: cancelling an ended batch, a list cursor
that names no batch and a request without `anthropic-version` are 400 `invalid_request_error`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import secrets
import signal
import socket
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, MappingProxyType, TracebackType
from typing import Any, Literal, Self, cast
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "AuthKind",
    "BatchSnapshot",
    "FakeAnthropic",
    "FakeRequest",
    "LoggedRequest",
    "ProcessingStatus",
    "ResultOutcome",
    "fake_narrative",
    "prompt_comment_ids",
    "prompt_text",
    "serve_forever",
]

JsonObject = dict[str, Any]
AuthKind = Literal["x-api-key", "bearer", "both", "none"]
ProcessingStatus = Literal["in_progress", "canceling", "ended"]
ResultOutcome = Literal["errored", "expired", "canceled"]
_Kind = Literal["succeeded", "refusal", "errored", "expired", "canceled"]

BATCHES_PATH = "/v1/messages/batches"
MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1024 * 1024
EXPIRY_SECONDS = 24 * 60 * 60
LIST_LIMIT_DEFAULT = 20
LIST_LIMIT_MAX = 1000

_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_BATCH_ROUTE = re.compile(r"/v1/messages/batches/([^/]+)(/cancel|/results)?")
_COMMENT_TAG = re.compile(r"<comment\b[^>]*>")
_ID_ATTRIBUTE = re.compile(r'(?<![\w-])id\s*=\s*"(\d+)"')
_HOST_HEADER = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
_ID_ALPHABET = string.ascii_letters + string.digits
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_REFUSAL_TEXT = "I can't help with this request."


@dataclass(frozen=True)
class FakeRequest:
    """One request of a created batch, as the client sent it."""

    custom_id: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class BatchSnapshot:
    """A batch as the fake sees it at one moment, for test assertions."""

    id: str
    processing_status: ProcessingStatus
    requests: tuple[FakeRequest, ...]
    created_at: datetime
    ended_at: datetime | None
    cancel_initiated_at: datetime | None


@dataclass(frozen=True)
class LoggedRequest:
    """One HTTP request the fake answered. Records which credential header came, never its value."""

    method: str
    path: str
    query: str
    auth: AuthKind
    anthropic_version: str | None
    status: int


@dataclass(frozen=True)
class _Planned:
    kind: _Kind
    error_type: str = ""


@dataclass(frozen=True)
class _OutcomeRule:
    matches: Callable[[str], bool]
    planned: _Planned


@dataclass
class _Failure:
    status: int
    remaining: int
    retry_after: float | None
    path_contains: str | None
    after_processing: bool


@dataclass
class _Batch:
    id: str
    requests: tuple[FakeRequest, ...]
    planned: tuple[_Planned, ...]
    created_at: float
    natural_end: float
    ends_at: float
    malformed: bool = False
    cut: bool = False
    cancel_initiated_at: float | None = None


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    cut: bool = False
    delay: float = 0.0


@dataclass
class _Pending:
    """Faults waiting for the next create (or the next matching request)."""

    failures: list[_Failure] = field(default_factory=list)
    slow_creates: list[float] = field(default_factory=list)
    rules: list[_OutcomeRule] = field(default_factory=list)
    malformed_next: bool = False
    cut_next: bool = False


class _ApiError(Exception):
    """Raised inside a route to answer with an Anthropic-shaped error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def prompt_text(params: Mapping[str, Any]) -> str:
    """The text of the last user message: what the fake treats as the prompt."""
    messages = params.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [
                block["text"]
                for block in content
                if isinstance(block, dict)
                and block.get("type") == "text"
                and isinstance(block.get("text"), str)
            ]
            return "\n".join(texts)
        return ""
    return ""


def prompt_comment_ids(prompt: str) -> list[int]:
    """Comment ids of the `<comment id="...">` tags in a prompt, first appearance first, no repeats."""
    seen: dict[int, None] = {}
    for tag in _COMMENT_TAG.finditer(prompt):
        match = _ID_ATTRIBUTE.search(tag.group(0))
        if match:
            seen.setdefault(int(match.group(1)), None)
    return list(seen)


def fake_narrative(prompt: str) -> str:
    """The model text the fake answers with: narrative JSON (DESIGN 2.4) citing only the prompt's ids.

    Deterministic for a prompt, so tests can compute the expected report text themselves.
    """
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    ids = prompt_comment_ids(prompt)
    clauses: list[JsonObject] = [
        {"text": f"Participants responded to comment {cid}.", "citations": [cid]} for cid in ids
    ] or [{"text": "The prompt named no comments to cite.", "citations": []}]
    sentences = [{"clauses": clauses[i : i + 2]} for i in range(0, len(clauses), 2)]
    paragraphs = [
        {"id": f"p{n + 1}", "title": f"Theme {n + 1}", "sentences": sentences[i : i + 2]}
        for n, i in enumerate(range(0, len(sentences), 2))
    ]
    narrative = {
        "id": f"narrative_{digest[:12]}",
        "title": f"Fake narrative {digest[:8]}",
        "paragraphs": paragraphs,
    }
    return json.dumps(narrative)


def _random_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _derived_id(prefix: str, *parts: str) -> str:
    """Stable ids inside results, so downloading the same results twice gives the same bytes."""
    return prefix + hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


def _rfc3339(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _as_datetime(moment: float | None) -> datetime | None:
    return None if moment is None else datetime.fromtimestamp(moment, tz=UTC)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _error_reply(
    status: int, message: str, request_id: str, headers: tuple[tuple[str, str], ...] = ()
) -> _Reply:
    error_type = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
    return _Reply(status, _json_bytes(body), headers=headers)


def _auth_kind(headers: Mapping[str, str]) -> AuthKind:
    has_key = bool(headers.get("x-api-key", "").strip())
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    has_bearer = scheme.lower() == "bearer" and bool(token.strip())
    if has_key and has_bearer:
        return "both"
    if has_key:
        return "x-api-key"
    return "bearer" if has_bearer else "none"


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _validate_params(index: int, params: Any) -> JsonObject:
    where = f"requests.{index}.params"
    if not isinstance(params, dict):
        raise _ApiError(400, f"{where}: expected an object")
    if not isinstance(params.get("model"), str) or not params["model"]:
        raise _ApiError(400, f"{where}.model: a model name is required")
    max_tokens = params.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _ApiError(400, f"{where}.max_tokens: a positive integer is required")
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _ApiError(400, f"{where}.messages: a non-empty list is required")
    return params


def _validate_create(body: Any) -> tuple[FakeRequest, ...]:
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise _ApiError(400, "requests: a list of {custom_id, params} objects is required")
    items: list[Any] = body["requests"]
    if not 1 <= len(items) <= MAX_REQUESTS:
        raise _ApiError(400, f"requests: between 1 and {MAX_REQUESTS} requests are allowed, got {len(items)}")
    seen: set[str] = set()
    requests: list[FakeRequest] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _ApiError(400, f"requests.{index}: expected an object")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise _ApiError(400, f"requests.{index}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
        if custom_id in seen:
            raise _ApiError(400, f"requests.{index}.custom_id: {custom_id!r} is not unique within the batch")
        seen.add(custom_id)
        requests.append(FakeRequest(custom_id, _validate_params(index, item.get("params"))))
    return tuple(requests)


def _page(batches: list[_Batch], query: Mapping[str, list[str]]) -> tuple[list[_Batch], bool]:
    """One page of a newest-first listing, with the real API's cursor meanings."""
    raw_limit = query.get("limit", [str(LIST_LIMIT_DEFAULT)])[-1]
    try:
        limit = int(raw_limit)
    except ValueError:
        raise _ApiError(400, f"limit: expected an integer, got {raw_limit!r}") from None
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise _ApiError(400, f"limit: must be between 1 and {LIST_LIMIT_MAX}")
    after_id = query.get("after_id", [""])[-1]
    before_id = query.get("before_id", [""])[-1]
    if after_id and before_id:
        raise _ApiError(400, "after_id and before_id cannot be combined")
    newest_first = list(reversed(batches))
    ids = [batch.id for batch in newest_first]
    cursor = after_id or before_id
    if cursor and cursor not in ids:
        raise _ApiError(400, f"{'after_id' if after_id else 'before_id'}: no batch {cursor!r}")
    if after_id:
        candidates = newest_first[ids.index(after_id) + 1 :]
        return candidates[:limit], len(candidates) > limit
    if before_id:
        candidates = newest_first[: ids.index(before_id)]
        return candidates[-limit:], len(candidates) > limit
    return newest_first[:limit], len(newest_first) > limit


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeAnthropic) -> None:
        super().__init__(address, _Handler)
        self.fake = fake
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP into calls on the fake; keep-alive HTTP/1.1 like the real API."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeAnthropic/1"
    # Headers and body go out as separate writes; with Nagle on, each reply waits ~40 ms for an ACK.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        server = cast(_Server, self.server)
        with server.sockets_lock:
            server.open_sockets.add(self.connection)

    def finish(self) -> None:
        server = cast(_Server, self.server)
        with server.sockets_lock:
            server.open_sockets.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: per-request lines would drown test and demo output; `request_log` has them."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        fake = cast(_Server, self.server).fake
        headers = {name.lower(): value for name, value in self.headers.items()}
        body = self._read_body(headers)
        reply = fake._handle(method, self.path, headers, body, self._origin(headers))
        if reply.delay > 0:
            time.sleep(reply.delay)
        self._send(reply)

    def _origin(self, headers: Mapping[str, str]) -> str:
        """Where the client reached us, so a `results_url` works from wherever the client stands."""
        host = headers.get("host", "")
        if _HOST_HEADER.fullmatch(host):
            return f"http://{host}"
        address, port = self.connection.getsockname()[:2]
        return f"http://{address}:{port}"

    def _read_body(self, headers: Mapping[str, str]) -> bytes | None:
        """The request body; None (and the connection closed after replying) when it cannot be read."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.close_connection = True
            return None
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self.close_connection = True
            return None
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers:
                self.send_header(name, value)
            if reply.cut:
                self.send_header("Content-Length", str(len(reply.body) + 1024))
                self.end_headers()
                self.wfile.write(reply.body[: len(reply.body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.send_header("Content-Length", str(len(reply.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:
            # The client gave up (a timeout, or the fake stopping); nobody is left to answer.
            self.close_connection = True


class FakeAnthropic:
    """The fake API server. Thread-safe: the SDK, the test and the handlers may call it at once.

    `clock` is injectable so tests can move time instead of sleeping; `cancel_delay_seconds` (default:
    `end_after_seconds`) bounds how long a cancelled batch stays `canceling`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        end_after_seconds: float = 0.0,
        cancel_delay_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if end_after_seconds < 0 or (cancel_delay_seconds is not None and cancel_delay_seconds < 0):
            raise ValueError("delays must be >= 0")
        self._address = (host, port)
        self._end_after = float(end_after_seconds)
        self._cancel_delay = None if cancel_delay_seconds is None else float(cancel_delay_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._batches: dict[str, _Batch] = {}
        self._pending = _Pending()
        self._create_calls = 0
        self._log: list[LoggedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> Self:
        """Bind and serve in a daemon thread; the port is known (see `base_url`) once this returns."""
        if self._server is not None:
            raise RuntimeError("FakeAnthropic is already started")
        self._server = _Server(self._address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-anthropic",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop kept-alive connections, so no handler thread outlives the fake."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        with server.sockets_lock:
            sockets = list(server.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue
        thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """`http://host:port` of the running fake (a wildcard bind is reported as 127.0.0.1)."""
        if self._server is None:
            raise RuntimeError("FakeAnthropic is not started")
        host, port = self._server.socket.getsockname()[:2]
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    # configuration and fault injection

    @property
    def end_after_seconds(self) -> float:
        with self._lock:
            return self._end_after

    @end_after_seconds.setter
    def end_after_seconds(self, seconds: float) -> None:
        """Applies to batches created from now on; existing batches keep their end time."""
        if seconds < 0:
            raise ValueError("end_after_seconds must be >= 0")
        with self._lock:
            self._end_after = float(seconds)

    def fail_next(
        self,
        status: int,
        count: int = 1,
        retry_after: float | None = None,
        path_contains: str | None = None,
        *,
        after_processing: bool = False,
    ) -> None:
        """Answer the next `count` authenticated requests (whose path contains `path_contains`) with `status`.

        429 is `rate_limit_error` and always carries `retry-after` (0 when not given, which makes the SDK
        use its own backoff), 529 `overloaded_error`, other 5xx `api_error`. With `after_processing` the
        request takes effect first and only its response is lost, as when a connection drops after a
        create: that is how a retried create makes a second batch.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status, got {status}")
        if count < 1:
            raise ValueError("count must be >= 1")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        with self._lock:
            self._pending.failures.append(
                _Failure(status, count, retry_after, path_contains, after_processing)
            )

    def slow_next_create(self, seconds: float, count: int = 1) -> None:
        """Delay the response of the next `count` creates; the batch is created before the wait."""
        if seconds < 0 or count < 1:
            raise ValueError("seconds must be >= 0 and count >= 1")
        with self._lock:
            self._pending.slow_creates.extend([float(seconds)] * count)

    def result_outcome(
        self,
        custom_ids: Callable[[str], bool] | Iterable[str],
        outcome: ResultOutcome,
        *,
        error_type: str = "overloaded_error",
    ) -> None:
        """Give matching requests of batches created from now on this outcome instead of success.

        `custom_ids` is a predicate, a collection of ids or one id. `errored` results carry `error_type`
        at `result.error.error.type`. Later rules win.
        """
        self._add_rule(custom_ids, _Planned(outcome, error_type if outcome == "errored" else ""))

    def refuse(self, custom_ids: Callable[[str], bool] | Iterable[str]) -> None:
        """Matching requests of batches created from now on succeed with `stop_reason: "refusal"`."""
        self._add_rule(custom_ids, _Planned("refusal"))

    def malformed_line(self, batch_id: str | None = None) -> None:
        """Make one results line of `batch_id` (default: the next batch created) invalid JSON."""
        with self._lock:
            if batch_id is None:
                self._pending.malformed_next = True
            else:
                self._known(batch_id).malformed = True

    def cut_results(self, batch_id: str | None = None) -> None:
        """Cut the next results download of `batch_id` (default: the next batch) short, like a dropped
        connection; later downloads are whole."""
        with self._lock:
            if batch_id is None:
                self._pending.cut_next = True
            else:
                self._known(batch_id).cut = True

    def clear_faults(self) -> None:
        """Forget every pending fault and outcome rule; existing batches keep what they were given."""
        with self._lock:
            self._pending = _Pending()

    # observation

    @property
    def batches(self) -> Mapping[str, BatchSnapshot]:
        """Live (not deleted) batches in creation order; a read-only snapshot."""
        with self._lock:
            now = self._clock()
            return MappingProxyType(
                {batch.id: self._snapshot(batch, now) for batch in self._batches.values()}
            )

    @property
    def create_calls(self) -> int:
        """Authenticated create requests received, whatever their outcome (failed, invalid or retried)."""
        with self._lock:
            return self._create_calls

    @property
    def request_log(self) -> tuple[LoggedRequest, ...]:
        """Every answered request in arrival order, to assert retries, cursors and credential kinds."""
        with self._lock:
            return tuple(self._log)

    # internals

    def _add_rule(self, custom_ids: Callable[[str], bool] | Iterable[str], planned: _Planned) -> None:
        if callable(custom_ids):
            matches = custom_ids
        else:
            chosen = frozenset([custom_ids] if isinstance(custom_ids, str) else custom_ids)
            matches = chosen.__contains__
        with self._lock:
            self._pending.rules.append(_OutcomeRule(matches, planned))

    def _known(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise KeyError(batch_id)
        return batch

    def _status(self, batch: _Batch, now: float) -> ProcessingStatus:
        if now >= batch.ends_at:
            return "ended"
        return "in_progress" if batch.cancel_initiated_at is None else "canceling"

    def _final(self, batch: _Batch) -> list[_Planned]:
        """Per-request outcomes once ended: requests still unfinished when the cancel came are canceled."""
        if batch.cancel_initiated_at is None:
            return list(batch.planned)
        count = len(batch.requests)
        span = batch.natural_end - batch.created_at
        return [
            _Planned("canceled")
            if batch.created_at + span * (i + 1) / count > batch.cancel_initiated_at
            else plan
            for i, plan in enumerate(batch.planned)
        ]

    def _snapshot(self, batch: _Batch, now: float) -> BatchSnapshot:
        status = self._status(batch, now)
        return BatchSnapshot(
            id=batch.id,
            processing_status=status,
            requests=batch.requests,
            created_at=datetime.fromtimestamp(batch.created_at, tz=UTC),
            ended_at=_as_datetime(batch.ends_at if status == "ended" else None),
            cancel_initiated_at=_as_datetime(batch.cancel_initiated_at),
        )

    def _batch_json(self, batch: _Batch, now: float, origin: str, *, fresh: bool = False) -> JsonObject:
        status: ProcessingStatus = "in_progress" if fresh else self._status(batch, now)
        counts = {
            "processing": len(batch.requests),
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
        if status == "ended":
            counts["processing"] = 0
            for plan in self._final(batch):
                counts["succeeded" if plan.kind == "refusal" else plan.kind] += 1
        ended = status == "ended"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": _rfc3339(batch.created_at),
            "expires_at": _rfc3339(batch.created_at + EXPIRY_SECONDS),
            "ended_at": _rfc3339(batch.ends_at if ended else None),
            "cancel_initiated_at": _rfc3339(batch.cancel_initiated_at),
            "archived_at": None,
            "results_url": f"{origin}{BATCHES_PATH}/{batch.id}/results" if ended else None,
        }

    def _result(self, batch: _Batch, request: FakeRequest, plan: _Planned) -> JsonObject:
        if plan.kind in ("succeeded", "refusal"):
            prompt = prompt_text(request.params)
            text = fake_narrative(prompt) if plan.kind == "succeeded" else _REFUSAL_TEXT
            message = {
                "id": _derived_id("msg_", batch.id, request.custom_id),
                "type": "message",
                "role": "assistant",
                "model": request.params["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn" if plan.kind == "succeeded" else "refusal",
                "stop_sequence": None,
                "usage": {"input_tokens": max(1, len(prompt) // 4), "output_tokens": max(1, len(text) // 4)},
            }
            result: JsonObject = {"type": "succeeded", "message": message}
        elif plan.kind == "errored":
            error = {
                "type": plan.error_type,
                "message": f"injected {plan.error_type} for {request.custom_id}",
            }
            request_id = _derived_id("req_", batch.id, request.custom_id)
            result = {"type": "errored", "error": {"type": "error", "error": error, "request_id": request_id}}
        else:
            result = {"type": plan.kind}
        return {"custom_id": request.custom_id, "result": result}

    def _results_body(self, batch: _Batch) -> bytes:
        """JSON Lines in a deterministic order that is never request order when there are two or more."""
        order = list(range(len(batch.requests)))
        random.Random(batch.id).shuffle(order)
        if order == sorted(order):
            order.reverse()
        plans = self._final(batch)
        lines = [json.dumps(self._result(batch, batch.requests[i], plans[i])) for i in order]
        if batch.malformed:
            bad = min(1, len(lines) - 1)
            lines[bad] = lines[bad][: len(lines[bad]) // 2]
        return "".join(line + "\n" for line in lines).encode()

    def _handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, origin: str
    ) -> _Reply:
        """Answer one request; the handler thread sleeps `delay` and writes the reply."""
        request_id = _random_id("req_")
        split = urlsplit(target)
        path = split.path
        auth = _auth_kind(headers)
        reply = self._decide(method, path, split.query, headers, body, auth, origin, request_id)
        reply = replace(reply, headers=(*reply.headers, ("request-id", request_id)))
        entry = LoggedRequest(method, path, split.query, auth, headers.get("anthropic-version"), reply.status)
        with self._lock:
            self._log.append(entry)
        return reply

    def _decide(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes | None,
        auth: AuthKind,
        origin: str,
        request_id: str,
    ) -> _Reply:
        if auth == "none":
            return _error_reply(401, "x-api-key or Authorization: Bearer header is required", request_id)
        if not headers.get("anthropic-version"):
            return _error_reply(400, "anthropic-version: header is required", request_id)
        if body is None:
            return _error_reply(400, "the body needs a Content-Length and at most 256 MB", request_id)
        with self._lock:
            if method == "POST" and path == BATCHES_PATH:
                self._create_calls += 1
            failure = self._take_failure(path)
        if failure is not None and not failure.after_processing:
            return self._failure_reply(failure, request_id)
        try:
            reply = self._route(method, path, query, body, origin)
        except _ApiError as error:
            reply = _error_reply(error.status, error.message, request_id)
        return reply if failure is None else self._failure_reply(failure, request_id)

    def _take_failure(self, path: str) -> _Failure | None:
        for failure in self._pending.failures:
            if failure.path_contains is None or failure.path_contains in path:
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._pending.failures.remove(failure)
                return failure
        return None

    def _failure_reply(self, failure: _Failure, request_id: str) -> _Reply:
        retry_after = failure.retry_after
        if retry_after is None and failure.status == 429:
            retry_after = 0.0
        headers = () if retry_after is None else (("retry-after", _format_seconds(retry_after)),)
        return _error_reply(failure.status, f"injected failure {failure.status}", request_id, headers)

    def _route(self, method: str, path: str, query: str, body: bytes, origin: str) -> _Reply:
        if path == BATCHES_PATH:
            if method == "POST":
                return self._create(body, origin)
            if method == "GET":
                return self._list(parse_qs(query), origin)
            raise _ApiError(404, f"no route for {method} {path}")
        match = _BATCH_ROUTE.fullmatch(path)
        if match is None:
            raise _ApiError(404, f"no route for {method} {path}")
        batch_id, action = match.group(1), match.group(2)
        route = {
            ("GET", None): self._retrieve,
            ("DELETE", None): self._delete,
            ("POST", "/cancel"): self._cancel,
            ("GET", "/results"): self._results,
        }.get((method, action))
        if route is None:
            raise _ApiError(404, f"no route for {method} {path}")
        return route(batch_id, origin)

    def _lookup(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise _ApiError(404, f"message batch {batch_id!r} not found")
        return batch

    def _create(self, body: bytes, origin: str) -> _Reply:
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _ApiError(400, "the request body is not valid JSON") from None
        requests = _validate_create(parsed)
        with self._lock:
            now = self._clock()
            pending = self._pending
            planned: list[_Planned] = []
            for request in requests:
                plan = _Planned("succeeded")
                for rule in pending.rules:
                    if rule.matches(request.custom_id):
                        plan = rule.planned
                planned.append(plan)
            end = now + self._end_after
            batch = _Batch(
                id=_random_id("msgbatch_"),
                requests=requests,
                planned=tuple(planned),
                created_at=now,
                natural_end=end,
                ends_at=end,
                malformed=pending.malformed_next,
                cut=pending.cut_next,
            )
            pending.malformed_next = pending.cut_next = False
            delay = pending.slow_creates.pop(0) if pending.slow_creates else 0.0
            self._batches[batch.id] = batch
            payload = self._batch_json(batch, now, origin, fresh=True)
        return _Reply(200, _json_bytes(payload), delay=delay)

    def _retrieve(self, batch_id: str, origin: str) -> _Reply:
        with self._lock:
            payload = self._batch_json(self._lookup(batch_id), self._clock(), origin)
        return _Reply(200, _json_bytes(payload))

    def _list(self, query: Mapping[str, list[str]], origin: str) -> _Reply:
        with self._lock:
            now = self._clock()
            page, has_more = _page(list(self._batches.values()), query)
            data = [self._batch_json(batch, now, origin) for batch in page]
        payload = {
            "data": data,
            "has_more": has_more,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }
        return _Reply(200, _json_bytes(payload))

    def _cancel(self, batch_id: str, origin: str) -> _Reply:
        with self._lock:
            batch = self._lookup(batch_id)
            now = self._clock()
            if self._status(batch, now) == "ended":
                raise _ApiError(400, f"message batch {batch_id!r} has already ended and cannot be canceled")
            if batch.cancel_initiated_at is None:
                batch.cancel_initiated_at = now
                delay = self._end_after if self._cancel_delay is None else self._cancel_delay
                batch.ends_at = min(batch.natural_end, now + delay)
            payload = self._batch_json(batch, now, origin)
        return _Reply(200, _json_bytes(payload))

    def _delete(self, batch_id: str, origin: str) -> _Reply:
        with self._lock:
            batch = self._lookup(batch_id)
            if self._status(batch, self._clock()) != "ended":
                raise _ApiError(400, f"message batch {batch_id!r} is still processing; cancel it first")
            del self._batches[batch_id]
        return _Reply(200, _json_bytes({"id": batch_id, "type": "message_batch_deleted"}))

    def _results(self, batch_id: str, origin: str) -> _Reply:
        with self._lock:
            batch = self._lookup(batch_id)
            if self._status(batch, self._clock()) != "ended":
                raise _ApiError(
                    400, f"message batch {batch_id!r} has not ended; results are not available yet"
                )
            body = self._results_body(batch)
            cut, batch.cut = batch.cut, False  # a dropped connection: the next download is whole
        return _Reply(200, body, content_type="application/x-jsonl", cut=cut)


def serve_forever(host: str, port: int, end_after_seconds: float) -> None:
    """Run a fake in the foreground until Ctrl-C or SIGTERM, printing its base URL on one line.

    For `delphi-jobs fake-anthropic` and the offline demo: point `ANTHROPIC_BASE_URL` at the printed URL.
    """
    stopping = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous: Callable[[int, FrameType | None], Any] | int | None = None

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    if in_main_thread:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with FakeAnthropic(host, port, end_after_seconds=end_after_seconds) as fake:
            print(fake.base_url, flush=True)
            try:
                while not stopping.wait(0.2):
                    pass
            except KeyboardInterrupt:
                pass
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
