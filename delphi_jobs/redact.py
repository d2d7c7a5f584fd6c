"""Secrets never reach a job record or a log line (DESIGN 7), whatever an error message echoes.

Libraries repeat settings in their errors: libpq quotes a malformed connection URL's bad part
(``invalid percent-encoded token: "s3cr%zzet"``, an unbalanced ``[`` in the host), and a traceback can
carry either. So every sink scrubs text just before writing it: job log lines (stdout and ``logs``),
structured log events (tracebacks included), ``error_message`` and ``job_results``. Two layers:

- the exact secret values this process knows, registered from its Settings: the Anthropic key, the
  database URL and its password, raw and percent-decoded, found even in a URL that does not parse,
  and the HTTP API's tokens;
- patterns that are secret wherever they come from: the password of ``scheme://user:password@host``,
  ``password=...`` pairs of a libpq conninfo string, Anthropic keys (``sk-ant-...``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from delphi_jobs.config import Settings

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter known values are not masked by value (a one-letter password would mask every 'a'); the
patterns still catch them where they appear as passwords."""

_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@")
_PATTERNS = (
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^\s@]*(@)"), rf"\1{MASK}\2"),
    (re.compile(r"(\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE), rf"\1{MASK}"),
    (re.compile(r"\bsk-ant-[A-Za-z0-9_-]+"), f"sk-ant-{MASK}"),
)
_known: set[str] = set()
_lock = threading.Lock()


def url_secrets(url: str | None) -> list[str]:
    """The password of a connection URL as written and percent-decoded; by string matching, so that
    a URL too malformed for a URL parser still has its password found."""
    if not url:
        return []
    found = _USERINFO.match(url.strip())
    if not found or ":" not in found.group(1):
        return []
    raw = found.group(1).split(":", 1)[1]
    return [raw, unquote(raw)]


def remember(*values: str | None) -> None:
    """Mask these values wherever they appear from now on (for the life of the process)."""
    with _lock:
        _known.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)


def remember_settings(settings: Settings) -> None:
    remember(
        settings.anthropic_api_key,
        settings.database_url,
        *url_secrets(settings.database_url),
        *(token.secret for token in settings.api_tokens),  # a client may paste one into a reason
    )


def scrub(text: str) -> str:
    """``text`` with every known secret and every secret-shaped part replaced by ``***``."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)  # the whole URL before the password inside it
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def scrub_value(value: Any) -> Any:
    """Strings scrubbed anywhere inside documents and lists (job_results, log event fields)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {key: scrub_value(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(inner) for inner in value]
    return value
