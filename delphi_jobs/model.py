"""The job record: parse what any producer wrote, and the one place for timestamps and JSON fields.

Producers disagree on details (DESIGN 2.1): timestamps come as ``...Z``, ``+00:00`` or naive, JSON
documents are stored as strings, settings sit in ``job_config.stages[0].config`` or at the top level,
booleans arrive as ``"false"``. Parsing never raises for a bad field of a job that has an id: the
problem is recorded in ``Job.problems`` so the poller can claim the job and fail it with a message that
names the field, instead of skipping it forever.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar, cast

FULL_PIPELINE = "FULL_PIPELINE"
CREATE_NARRATIVE_BATCH = "CREATE_NARRATIVE_BATCH"
AWAITING_NARRATIVE_BATCH = "AWAITING_NARRATIVE_BATCH"

DEFAULT_PRIORITY = 50
DEFAULT_TIMEOUT_SECONDS = 3600
DEFAULT_MAX_RETRIES = 3
MAX_LOG_ENTRIES = 50
MAX_HISTORY_EVENTS = 100
UNCLAIMED_WORKER = "none"

# Size bounds of what the poller writes on a job: DynamoDB refuses any write that would take an item past
# 400 KB, and a refused outcome write used to make a finished job run again (issue 11). Each bound is
# applied when the field is encoded, and every cut is marked so a reader knows text is missing.
MAX_LOG_MESSAGE_BYTES = 4 * 1024
"""One log entry's message (a pipeline may print a 20 KB line)."""
MAX_LOGS_BYTES = 64 * 1024
"""The whole ``logs`` attribute: the newest entries that fit, at most MAX_LOG_ENTRIES of them."""
MAX_ERROR_BYTES = 4 * 1024
"""``error_message`` and the ``error`` of job_results."""
MAX_RESULTS_BYTES = 32 * 1024
"""``job_results``: larger results keep their scalar keys and are marked ``truncated``."""
MAX_WHOLE_NUMBER = 2**53
"""Numbers a job field may hold: exact in JavaScript (the server's readers) and far from DynamoDB's
38-digit limit, so ``version + 1`` can always be written."""
CUT_MARK = " …[cut {} bytes]"
_S = TypeVar("_S")


class JobValidationError(ValueError):
    """A field of a job record is malformed; ``field`` names it for the job's error_message."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


# ---- timestamps -------------------------------------------------------------------------------

_FRACTION = re.compile(r"(\.\d{6})\d+")
_ZID = re.compile(r"[0-9]{1,19}")


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """UTC, ISO-8601, millisecond precision, ``Z``: what the Polis server writes (``toISOString``)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(value: Any, field_name: str = "timestamp") -> datetime | None:
    """Parse any timestamp a producer writes; "" and None mean not set; naive means UTC."""
    if value is None:
        return None
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        seconds = float(value)
        if seconds > 1e11:  # epoch milliseconds (JavaScript's Date.now())
            seconds /= 1000
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (ValueError, OverflowError, OSError):
            raise JobValidationError(field_name, f"epoch number out of range: {value}") from None
    if not isinstance(value, str):
        raise JobValidationError(field_name, f"expected an ISO-8601 string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        return None
    normalised = _FRACTION.sub(r"\1", text.replace(" ", "T", 1))
    if normalised.endswith(("z", "Z")):
        normalised = normalised[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(normalised)
        # An offset can move a valid local time out of datetime's range (0001-01-01T00:00+01:00).
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise JobValidationError(field_name, f"not a usable ISO-8601 timestamp: {_shown(value)}") from None


# ---- JSON fields and scalars --------------------------------------------------------------------


def _shown(value: Any, limit: int = 80) -> str:
    """A value for an error message: its repr, cut (a bad field may be 300 KB long)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def cap_text(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, the cut marked with how much was dropped."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    mark = CUT_MARK.format(len(data))
    kept = data[: max(0, max_bytes - len(mark.encode()))].decode(errors="ignore")
    return kept + CUT_MARK.format(len(data) - len(kept.encode()))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_json(value: Any) -> str:
    """Encode a JSON job field the way the server does (compact, UTF-8 kept)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def decode_json_field(raw: Any, field_name: str) -> dict[str, Any]:
    """Decode a JSON-document attribute; producers store strings, hand-made records may store maps."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, str):
        raise JobValidationError(field_name, f"expected a JSON string, got {type(raw).__name__}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise JobValidationError(field_name, f"malformed JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise JobValidationError(field_name, "JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise JobValidationError(field_name, f"unusable JSON ({_shown(str(exc))})") from None
    if not isinstance(value, dict):
        raise JobValidationError(field_name, f"expected a JSON object, got {type(value).__name__}")
    return value


_TRUE = {"true", "1", "yes", "y", "on", "t"}
_FALSE = {"false", "0", "no", "n", "off", "f", ""}


def parse_bool(value: Any, field_name: str) -> bool:
    """Booleans from JSON, numbers or strings; ``"False"`` is false (original defect 7)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise JobValidationError(field_name, f"expected true or false, got {_shown(value)}")


def parse_int(value: Any, field_name: str, default: int) -> int:
    """A whole number within ±2**53 (MAX_WHOLE_NUMBER), from a number or a numeric string."""
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise JobValidationError(field_name, f"expected a number, got {type(value).__name__}")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else str(value))
    except ArithmeticError:
        raise JobValidationError(field_name, f"expected a number, got {_shown(value)}") from None
    # Order matters: NaN and infinities first, then size, and only then int() (which could build a
    # number of a billion digits from "1E999999999").
    if not number.is_finite() or abs(number) > MAX_WHOLE_NUMBER:
        raise JobValidationError(field_name, f"out of range (at most ±2**53), got {_shown(value)}")
    if number != number.to_integral_value():
        raise JobValidationError(field_name, f"expected a whole number, got {_shown(value)}")
    return int(number)


# ---- the job ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogEntry:
    timestamp: str
    level: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"timestamp": self.timestamp, "level": self.level, "message": self.message}


@dataclass(frozen=True)
class Progress:
    """Where a running job is, as the ``progress`` attribute shows it (written with heartbeats)."""

    current_step: int = 0
    """1-based index of the step under way (0: not started)."""
    total_steps: int = 0
    percent: float = 0.0
    message: str = ""
    step: str = ""
    is_paused: bool = False

    def to_json(self, updated_at: str) -> dict[str, Any]:
        return {
            "current_step": self.current_step,
            "total_steps": self.total_steps,
            "percent": round(min(100.0, max(0.0, self.percent)), 1),
            "message": self.message[:500],
            "step": self.step[:100],
            "is_paused": self.is_paused,
            "updated_at": updated_at,
        }


@dataclass(frozen=True)
class Activity:
    """What a run shows while it goes: written with every heartbeat and with the run's last write."""

    progress: Progress | None = None
    live_output: tuple[str, ...] | None = None

    def attributes(self, now: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.progress is not None:
            values["progress"] = encode_json(self.progress.to_json(now))
        if self.live_output is not None:
            values["live_output"] = encode_live_output(self.live_output)
        return values


MAX_LIVE_LINES = 20
MAX_LIVE_LINE_CHARS = 400


def encode_live_output(lines: Sequence[str]) -> str:
    """The ``live_output`` attribute: the job's last console lines, each cut to a readable length."""
    kept = [line if len(line) <= MAX_LIVE_LINE_CHARS else line[:MAX_LIVE_LINE_CHARS] + "…" for line in lines]
    return encode_json(kept[-MAX_LIVE_LINES:])


@dataclass(frozen=True)
class HistoryEvent:
    """One transition of a job: when, from which status to which, by whom (worker or operator), why."""

    at: str
    to: str
    by: str
    source: str | None = None
    reason: str = ""

    def to_json(self) -> dict[str, str | None]:
        return {"at": self.at, "from": self.source, "to": self.to, "by": self.by, "reason": self.reason}


@dataclass(frozen=True)
class Job:
    """A parsed job record. ``item`` keeps the record as read, for conditions on observed values."""

    job_id: str
    status: str
    job_type: str
    item: Mapping[str, Any] = field(repr=False)
    conversation_id: str | None = None
    report_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    worker_id: str | None = None
    priority: int = DEFAULT_PRIORITY
    version: int | None = None
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    retry_count: int = 0
    max_retries: int = DEFAULT_MAX_RETRIES
    reclaim_count: int = 0
    """How often the job was taken over after its owner's lease ran out."""
    job_config: Mapping[str, Any] = field(default_factory=dict)
    job_results: Mapping[str, Any] = field(default_factory=dict)
    logs: tuple[LogEntry, ...] = ()
    history: tuple[HistoryEvent, ...] = ()
    """Every transition, oldest first (the newest 100)."""
    lock_expires_at: datetime | None = None
    paused_at: datetime | None = None
    progress: Mapping[str, Any] = field(default_factory=dict)
    run_after: datetime | None = None
    next_check_at: datetime | None = None
    batch_id: str | None = None
    batch_job_id: str | None = None
    model: str | None = None
    error_message: str | None = None
    cancel_requested: str | None = None
    pause_requested: str | None = None
    problems: tuple[str, ...] = ()

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Job:
        """Parse a deserialized DynamoDB item; raises only when there is no usable job_id."""
        job_id = item.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            raise JobValidationError("job_id", "missing or not a non-empty string")
        problems: list[str] = []

        def attempt(name: str, default: Any, parse: Any, *args: Any) -> Any:
            try:
                return parse(*args)
            except JobValidationError as exc:
                problems.append(str(exc))
            except Exception as exc:  # one bad field must never make a whole record unreadable
                problems.append(f"{name}: cannot be parsed ({type(exc).__name__})")
            return default

        def text(name: str) -> str | None:
            value = item.get(name)
            if value is None or value == "":
                return None
            if isinstance(value, int | Decimal) and not isinstance(value, bool):
                return str(value)
            if not isinstance(value, str):
                problems.append(f"{name}: expected a string, got {type(value).__name__}")
                return None
            return value

        def stamp(name: str) -> datetime | None:
            return attempt(name, None, parse_timestamp, item.get(name), name)  # type: ignore[no-any-return]

        def number(name: str, default: int) -> int:
            return attempt(name, default, parse_int, item.get(name), name, default)  # type: ignore[no-any-return]

        def document(name: str) -> dict[str, Any]:
            return attempt(name, {}, decode_json_field, item.get(name), name)  # type: ignore[no-any-return]

        worker = text("worker_id")
        version = item.get("version")
        logs_doc = document("logs")
        return cls(
            job_id=job_id,
            status=text("status") or "",
            job_type=text("job_type") or FULL_PIPELINE,
            item=dict(item),
            conversation_id=text("conversation_id"),
            report_id=text("report_id"),
            created_at=stamp("created_at"),
            started_at=stamp("started_at"),
            completed_at=stamp("completed_at"),
            worker_id=None if worker == UNCLAIMED_WORKER else worker,
            priority=number("priority", DEFAULT_PRIORITY),
            version=None if version is None else number("version", 0),
            timeout_seconds=number("timeout_seconds", DEFAULT_TIMEOUT_SECONDS),
            retry_count=number("retry_count", 0),
            max_retries=number("max_retries", DEFAULT_MAX_RETRIES),
            reclaim_count=number("reclaim_count", 0),
            job_config=document("job_config"),
            job_results=document("job_results"),
            logs=attempt("logs", (), _parse_log_entries, logs_doc),
            history=attempt("history", (), _parse_history, item.get("history")),
            lock_expires_at=stamp("lock_expires_at"),
            paused_at=stamp("paused_at") or (stamp("updated_at") if item.get("status") == "PAUSED" else None),
            progress=document("progress"),
            run_after=stamp("run_after"),
            next_check_at=stamp("next_check_at"),
            batch_id=text("batch_id"),
            batch_job_id=text("batch_job_id"),
            model=text("model"),
            error_message=text("error_message"),
            cancel_requested=text("cancel_requested"),
            pause_requested=text("pause_requested"),
            problems=tuple(problems),
        )

    def config_value(self, name: str, default: Any = None) -> Any:
        """A job setting: ``job_config.stages[0].config`` first, then the top level (defect 7)."""
        stages = self.job_config.get("stages")
        if isinstance(stages, list) and stages and isinstance(stages[0], Mapping):
            nested = stages[0].get("config")
            if isinstance(nested, Mapping) and name in nested:
                return nested[name]
        return self.job_config.get(name, default)

    def config_bool(self, name: str, default: bool) -> bool:
        value = self.config_value(name)
        return default if value is None else parse_bool(value, f"job_config.{name}")

    def zid(self) -> int:
        """The conversation's zid, from ``conversation_id``; JobValidationError when unusable."""
        if not self.conversation_id:
            raise JobValidationError("conversation_id", "missing")
        # ASCII digits only: int() would also take "1_000", "-1", "+1", " 1" and digits of any script.
        if not _ZID.fullmatch(self.conversation_id):
            raise JobValidationError(
                "conversation_id",
                f"must be a conversation's zid (plain digits 0-9), got {_shown(self.conversation_id)}",
            )
        return int(self.conversation_id)

    @property
    def effective_report_id(self) -> str | None:
        """report_id at the top level, else in the config (the narrative producer nests it)."""
        if self.report_id:
            return self.report_id
        nested = self.config_value("report_id")
        return str(nested) if nested not in (None, "") else None

    @property
    def short_id(self) -> str:
        return self.job_id[:8]

    @property
    def needs_owner_cleanup(self) -> bool:
        return self.item.get(OWNER_CLEANUP) is True


@dataclass(frozen=True)
class ChildJob:
    """A follow-up job a handler asks for (e.g. a batch checker); the queue turns it into a record in
    the same transaction that ends its parent."""

    job_id: str
    job_type: str
    due_at: datetime
    state: Any
    """The child handler's typed state (a dataclass instance)."""
    fields: Mapping[str, Any] = field(default_factory=dict)
    """Contract attributes such as conversation_id, report_id, priority, job_config."""


def _parse_log_entries(doc: Mapping[str, Any]) -> tuple[LogEntry, ...]:
    entries = doc.get("entries", [])
    if not isinstance(entries, list):
        raise JobValidationError("logs", "entries must be a list")
    parsed = []
    for entry in entries:
        if isinstance(entry, Mapping):
            parsed.append(
                LogEntry(
                    timestamp=str(entry.get("timestamp", "")),
                    level=str(entry.get("level", "INFO")),
                    message=str(entry.get("message", "")),
                )
            )
    return tuple(parsed)


def _parse_history(raw: Any) -> tuple[HistoryEvent, ...]:
    if raw is None or raw == "":
        return ()
    if not isinstance(raw, str):
        raise JobValidationError("history", f"expected a JSON string, got {type(raw).__name__}")
    try:
        events = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise JobValidationError("history", f"malformed JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(events, list):
        raise JobValidationError("history", "expected a JSON list of events")
    return tuple(
        HistoryEvent(
            at=str(e.get("at", "")),
            to=str(e.get("to", "")),
            by=str(e.get("by", "")),
            source=None if e.get("from") is None else str(e.get("from")),
            reason=str(e.get("reason", "")),
        )
        for e in events
        if isinstance(e, Mapping)
    )


def encode_history(events: tuple[HistoryEvent, ...] | list[HistoryEvent]) -> str:
    """The ``history`` attribute: the newest 100 transitions, one JSON list."""
    return encode_json([event.to_json() for event in list(events)[-MAX_HISTORY_EVENTS:]])


def encode_logs(entries: tuple[LogEntry, ...] | list[LogEntry], max_bytes: int = MAX_LOGS_BYTES) -> str:
    """The ``logs`` attribute: the newest entries (at most 50, defect 9) that fit in ``max_bytes``,
    each message capped at MAX_LOG_MESSAGE_BYTES; entries cut for size are counted in a first entry."""
    recent = list(entries)[-MAX_LOG_ENTRIES:]
    kept: list[dict[str, str]] = []
    used = len(encode_json({"entries": [], "log_location": ""}).encode()) + 200  # the note's room
    for entry in reversed(recent):
        message = cap_text(entry.message, MAX_LOG_MESSAGE_BYTES)
        shown = LogEntry(entry.timestamp[:40], entry.level[:20], message).to_json()
        size = len(encode_json(shown).encode()) + 1
        if used + size > max_bytes:
            break
        kept.append(shown)
        used += size
    kept.reverse()
    cut = len(recent) - len(kept)
    if cut:
        note = f"…[{cut} older log entries cut to keep the job record small]"
        kept.insert(0, LogEntry(kept[0]["timestamp"] if kept else "", "WARNING", note).to_json())
    return encode_json({"entries": kept, "log_location": ""})


def cap_results(body: Mapping[str, Any], max_bytes: int = MAX_RESULTS_BYTES) -> str:
    """``job_results`` encoded within ``max_bytes``. Too large: numbers and flags are kept, text is
    capped, lists and documents are dropped, and ``truncated`` says so; if even that is too large, only
    result_type, completed_at and error remain."""
    encoded = encode_json(body)
    size = len(encoded.encode())
    if size <= max_bytes:
        return encoded
    small: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in body.items():
        if value is None or isinstance(value, bool | int | float | Decimal):
            small[key] = value
        elif isinstance(value, str):
            small[key] = cap_text(value, MAX_ERROR_BYTES if key == "error" else 256)
        else:
            dropped.append(str(key))
    small["truncated"] = f"job_results was {size} bytes, over {max_bytes}; dropped: {', '.join(dropped)}"
    encoded = encode_json(small)
    if len(encoded.encode()) <= max_bytes:
        return encoded
    essential: dict[str, Any] = {k: small[k] for k in ("result_type", "completed_at", "error") if k in small}
    essential["truncated"] = f"job_results was {size} bytes, over {max_bytes}; only the outcome kept"
    return encode_json(essential)


# ---- typed per-handler state ----------------------------------------------------------------------
#
# A handler declares the attributes it keeps on its job as a frozen dataclass whose fields carry a
# codec (``text_field``, ``count_field``, ``document_field``). Decoding happens before the handler runs,
# so a bad value fails the job naming the attribute instead of surfacing as an internal error; encoding
# produces exactly the declared attributes, so a handler cannot write anything else on its job.

LIFECYCLE_ATTRIBUTES = frozenset(
    {
        "job_id",
        "status",
        "version",
        "worker_id",
        "lock_expires_at",
        "run_after",
        "next_check_at",
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "job_results",
        "logs",
        "error_message",
        "retry_count",
        "max_retries",
        "reclaim_count",
        "updated_by",
        "cancel_requested",
        "pause_requested",
        "paused_from",
        "owner_cleanup",
    }
)
"""Attributes the queue owns: no handler state may declare them."""

OWNER_CLEANUP = "owner_cleanup"
"""Set while a job holds something outside DynamoDB (e.g. a paid batch): cancelling it must go through
a worker that runs its handler, not straight to CANCELLED."""


@dataclass(frozen=True)
class _Codec:
    decode: Callable[[Any, str], Any]
    encode: Callable[[Any], Any]


def _decode_text(raw: Any, name: str) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise JobValidationError(name, f"expected a string, got {type(raw).__name__}")
    return raw


def _decode_count(raw: Any, name: str) -> int:
    count = parse_int(raw, name, 0)
    if count < 0:
        raise JobValidationError(name, f"must not be negative, got {count}")
    return count


def _decode_document(raw: Any, name: str) -> dict[str, Any] | None:
    return decode_json_field(raw, name) or None


def _decode_string_map(raw: Any, name: str) -> dict[str, str] | None:
    document = decode_json_field(raw, name)
    wrong = [key for key, value in document.items() if not isinstance(value, str)]
    if wrong:
        raise JobValidationError(name, f"values must be strings (not at {', '.join(sorted(wrong)[:3])})")
    return document or None


def _identity(value: Any) -> Any:
    return value


def _encode_document(value: Any) -> str | None:
    return None if value is None else encode_json(value)


_TEXT = _Codec(_decode_text, _identity)


def _encode_count(value: int) -> int | None:
    """Zero is the default a missing attribute reads as: not written."""
    return value or None


_COUNT = _Codec(_decode_count, _encode_count)
_DOCUMENT = _Codec(_decode_document, _encode_document)
_STRING_MAP = _Codec(_decode_string_map, _encode_document)


def _state_field(codec: _Codec, default: Any, required: str | None, external: bool) -> Any:
    return field(default=default, metadata={"codec": codec, "required": required, "external": external})


def text_field(*, required: str | None = None, external: bool = False) -> Any:
    """A string attribute; ``required`` explains what it is when it is missing; ``external`` marks an
    id of something outside DynamoDB the job holds (see OWNER_CLEANUP)."""
    return _state_field(_TEXT, None, required, external)


def count_field() -> Any:
    return _state_field(_COUNT, 0, None, False)


def document_field(*, required: str | None = None) -> Any:
    """A JSON object stored as a string, decoded to a dict."""
    return _state_field(_DOCUMENT, None, required, False)


def string_map_field() -> Any:
    """A JSON object of strings stored as a string."""
    return _state_field(_STRING_MAP, None, None, False)


def state_attributes(state_type: type[Any]) -> tuple[str, ...]:
    names = tuple(f.name for f in fields(state_type))
    clash = LIFECYCLE_ATTRIBUTES.intersection(names)
    if clash:
        raise TypeError(f"{state_type.__name__} declares queue-owned attributes: {sorted(clash)}")
    return names


def decode_state(state_type: type[_S], item: Mapping[str, Any]) -> _S:
    """The handler's state from the job record; JobValidationError names the first bad attribute."""
    state_attributes(state_type)
    values: dict[str, Any] = {}
    for spec in fields(cast(Any, state_type)):
        codec: _Codec = spec.metadata["codec"]
        value = codec.decode(item.get(spec.name), spec.name)
        required = spec.metadata["required"]
        if required and value is None:
            raise JobValidationError(spec.name, f"missing ({required})")
        if value is not None:
            values[spec.name] = value
    return state_type(**values)


def encode_state(state: Any) -> dict[str, Any]:
    """Exactly the declared attributes (None removes one), plus the owner-cleanup marker."""
    attributes: dict[str, Any] = {}
    external = False
    for spec in fields(state):
        value = getattr(state, spec.name)
        codec: _Codec = spec.metadata["codec"]
        attributes[spec.name] = codec.encode(value)
        external = external or (bool(spec.metadata["external"]) and value is not None)
    attributes[OWNER_CLEANUP] = True if external else None
    return attributes
