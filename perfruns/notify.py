"""Notifying a team of a performance event through its webhooks: Mattermost and Slack
incoming webhooks, and a generic JSON webhook.

Pure library: no model, no task, no database. The caller chooses the hooks (a team's
settings), the deduplication store and when to call.

A webhook URL is a secret (it carries the token), so no message this module produces
(exception or returned line) ever contains it: errors from urllib are redacted and raised
without their original exception attached.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

# "regression": a worse level confirmed by change-point detection over the weekly series.
EVENT_KINDS = (
    "regression",
    "verification_failed",
    "verification_regressed",
    "run_error",
    "reminder",
)
HOOK_KINDS = ("mattermost", "slack", "json")
MAX_DELAY_S = 60.0
REDACTED = "[webhook URL]"

_MARKDOWN_SPECIALS = "\\`*_[]~"


@dataclass(frozen=True)
class Event:
    kind: str  # one of EVENT_KINDS
    title: str
    url: str  # absolute link to the run or action page
    figures: dict[str, str]  # label -> already formatted value, in display order
    dedupe_key: str  # e.g. "regression:scenario=demo:run=12"

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}: expected one of {EVENT_KINDS}")


# --- Messages -------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _slack_escape(text: str) -> str:
    return _one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _markdown_escape(text: str) -> str:
    return "".join("\\" + c if c in _MARKDOWN_SPECIALS else c for c in _one_line(text))


def _link_target(url: str, unsafe: str) -> str:
    """The link with the characters that would end the link syntax percent-encoded."""
    return "".join(f"%{ord(c):02X}" if c in unsafe or c.isspace() else c for c in url.strip())


def payload(kind_of_hook: str, event: Event) -> dict[str, Any]:
    """The JSON body for a hook of this kind."""
    if kind_of_hook == "slack":
        link = f"<{_link_target(event.url, '<>|')}|{_slack_escape(event.title)}>"
        lines = [f"*{link}*"]
        lines += [f"• {_slack_escape(k)}: {_slack_escape(v)}" for k, v in event.figures.items()]
        return {"text": "\n".join(lines)}
    if kind_of_hook == "mattermost":
        link = f"[{_markdown_escape(event.title)}]({_link_target(event.url, '()<>')})"
        lines = [f"**{link}**"]
        lines += [
            f"- {_markdown_escape(k)}: {_markdown_escape(v)}" for k, v in event.figures.items()
        ]
        return {"text": "\n".join(lines)}
    if kind_of_hook == "json":
        return {
            "event": event.kind,
            "title": event.title,
            "url": event.url,
            "figures": dict(event.figures),
            "dedupe_key": event.dedupe_key,
        }
    raise ValueError(f"unknown webhook kind {kind_of_hook!r}: expected one of {HOOK_KINDS}")


# --- Delivery -------------------------------------------------------------------------


class DeliveryError(Exception):
    """A webhook did not take the message. The message never contains the webhook URL."""

    def __init__(self, message: str, *, kind: str, status: int | None, attempts: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status  # the last HTTP status, None when the hook was not reached
        self.attempts = attempts


def redact_url(text: str, url: str) -> str:
    """The text with the webhook URL, and the parts of it that carry a secret (path,
    query, credentials), replaced: http.client echoes the request path, not the URL."""
    parts = urllib.parse.urlsplit(url)
    selector = parts.path + (f"?{parts.query}" if parts.query else "")
    secrets = {url, url.strip(), selector, parts.path, parts.query, parts.fragment}
    if parts.username:
        secrets.add(parts.username)
    if parts.password:
        secrets.add(parts.password)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) > 1:  # never "/" alone: it would eat every slash of the text
            text = text.replace(secret, REDACTED)
    return text


def _check_url(url: str) -> None:
    """Raise ValueError, without the URL, unless it is a plain absolute http(s) URL."""
    if not isinstance(url, str):
        raise ValueError("the webhook URL must be a string")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("the webhook URL contains whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError("the webhook URL is malformed") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("the webhook URL must be an absolute http or https URL")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a hop: following it would drop the body of the POST
    (urllib re-sends it as a GET) or hand the message to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def build_opener() -> urllib.request.OpenerDirector:
    """The default opener of send(): urllib's, refusing redirects."""
    return urllib.request.build_opener(_NoRedirect)


def _retry_after(headers: Any) -> float | None:
    """Retry-After in seconds (the HTTP-date form is ignored), or None."""
    value = (headers.get("Retry-After") or "").strip() if headers is not None else ""
    if not (value.isascii() and value.isdigit()):
        return None
    return float(int(value))


def _reason(exc: BaseException) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    text = str(reason).strip()
    return text or type(reason).__name__


def send(
    kind_of_hook: str,
    url: str,
    event: Event,
    *,
    attempts: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 10.0,
    sleep: Callable[[float], object] = time.sleep,
    opener: Any = None,
) -> int:
    """POST the event to one webhook and return the HTTP status (2xx).

    Network errors, 429 and 5xx are retried, up to `attempts` tries in all, waiting
    backoff_s, 2x, 4x ... (at most MAX_DELAY_S) or the Retry-After the hook asked for (at
    most MAX_DELAY_S). Any other answer raises DeliveryError at once, redirects included.
    """
    body = json.dumps(payload(kind_of_hook, event)).encode()
    _check_url(url)
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    if backoff_s < 0 or timeout_s <= 0:
        raise ValueError("backoff_s must be >= 0 and timeout_s > 0")
    opener = opener if opener is not None else build_opener()
    headers = {"Content-Type": "application/json", "User-Agent": "fixproof-notify"}

    failure = ""
    status: int | None = None
    for attempt in range(1, attempts + 1):
        asked_delay: float | None = None
        retryable = True
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with opener.open(request, timeout=timeout_s) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            failure = f"the {kind_of_hook} webhook answered HTTP {exc.code}"
            retryable = exc.code == 429 or exc.code >= 500
            asked_delay = _retry_after(exc.headers)
            exc.close()  # it holds the connection of the answer
        except (http.client.InvalidURL, ValueError) as exc:  # ValueError: unencodable URL
            status = None
            failure = f"the {kind_of_hook} webhook could not be reached: {_reason(exc)}"
            retryable = False
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            status = None
            failure = f"the {kind_of_hook} webhook could not be reached: {_reason(exc)}"
        if not retryable or attempt == attempts:
            break
        delay = min(backoff_s * 2 ** (attempt - 1), MAX_DELAY_S)
        if asked_delay is not None:
            delay = min(asked_delay, MAX_DELAY_S)
        sleep(delay)

    # Raised here, outside the except clauses, so that the urllib exception (which may
    # carry the URL) is not attached to it as its context.
    if attempt > 1:
        failure += f" (after {attempt} attempts)"
    raise DeliveryError(
        redact_url(failure, url), kind=kind_of_hook, status=status, attempts=attempt
    )


# --- Deduplication --------------------------------------------------------------------


class Deduplicator(Protocol):
    """Remembers which notifications went out. The service backs it with the database or
    Redis; first_time must be an atomic check-and-set (SET NX with an expiry, an INSERT
    on a unique key) so that two workers do not both send."""

    def first_time(self, key: str) -> bool:
        """True, and the key is remembered, unless it was seen within the TTL."""
        ...

    def forget(self, key: str) -> None:
        """Drop the key: the notification it claimed could not be delivered."""
        ...


class MemoryDeduplicator:
    """In-process Deduplicator. A key is remembered for ttl_s from the first time it is
    seen; repeats within the window do not extend it."""

    def __init__(self, ttl_s: float = 86400, clock: Callable[[], float] = time.monotonic):
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.ttl_s = ttl_s
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        with self._lock:
            now = self._clock()
            for stale in [k for k, expiry in self._expiry.items() if expiry <= now]:
                del self._expiry[stale]
            if key in self._expiry:
                return False
            self._expiry[key] = now + self.ttl_s
            return True

    def forget(self, key: str) -> None:
        with self._lock:
            self._expiry.pop(key, None)


def dedupe_key(event: Event, kind_of_hook: str, url: str) -> str:
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"{event.dedupe_key}:{kind_of_hook}:{digest}"


def notify(
    hooks: Iterable[tuple[str, str]],
    event: Event,
    *,
    dedupe: Deduplicator,
    **send_options: Any,
) -> list[str]:
    """Send the event to each (kind, url) hook not already notified of it; one line per
    hook says what happened. A failing hook does not stop the others, and is forgotten by
    `dedupe` so that a later call tries it again."""
    lines = []
    for kind_of_hook, url in hooks:
        key = dedupe_key(event, kind_of_hook, url)
        if not dedupe.first_time(key):
            lines.append(f"already sent to {kind_of_hook}")
            continue
        try:
            send(kind_of_hook, url, event, **send_options)
        except (DeliveryError, ValueError) as exc:
            dedupe.forget(key)
            lines.append(redact_url(f"failed to send to {kind_of_hook}: {exc}", url))
        else:
            lines.append(f"sent to {kind_of_hook}")
    return lines
