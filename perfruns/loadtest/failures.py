"""Locust's failures grouped by cause, across endpoints.

Locust groups failures by method, name and exact error text, so one cause shows as many
groups: "too many clients" once per endpoint, and again for every port, pid or number the
text happens to hold; and a 500 whose body says the database refused the connection looks
unrelated to the connection error itself. failure_cause() reduces an error text to its
cause: a known cause when the text (or the response body it quotes) names one, else the
text with its variable parts (numbers, addresses, ports, hex ids, quoted values, URLs) as
placeholders. group_failures() sums the groups of each cause.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

# Causes recognised wherever they appear in an error text, first match wins; the label is
# PostgreSQL's or the operating system's own wording, the one people search for.
KNOWN_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), label)
    for pattern, label in (
        (r"too many clients already", "FATAL: sorry, too many clients already"),
        (
            r"remaining connection slots are reserved",
            "FATAL: remaining connection slots are reserved (too many clients)",
        ),
        (r"too many connections for (?:role|database)", "FATAL: too many connections"),
        (
            r"the database system is (?:starting up|shutting down|in recovery mode)",
            "FATAL: the database system is not accepting connections",
        ),  # fmt: skip
        (r"deadlock detected", "ERROR: deadlock detected"),
        (r"canceling statement due to statement timeout", "ERROR: statement timeout"),
        (r"could not serialize access", "ERROR: could not serialize access"),
        (r"out of shared memory|out of memory", "out of memory"),
        (r"connection refused|errno 111\b", "connection refused"),
        (r"connection reset by peer|errno 104\b|ConnectionResetError", "connection reset"),
        (
            r"remote ?disconnected|remote end closed connection|"
            r"server closed the connection unexpectedly",
            "connection closed by the server",
        ),
        (r"read ?timed ?out|timed out|timeout", "timeout"),
    )
)
MAX_CAUSE = 300

# The variable parts of an error text, in the order they are replaced (URLs before the
# addresses and numbers they hold; hex before plain numbers).
_PLACEHOLDERS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), placeholder)
    for pattern, placeholder in (
        (r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>)]+", "<url>"),
        (r"(for url|url|path):\s*/[^\s'\")]*", r"\1: <url>"),
        (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<id>"),
        (r"\b0x[0-9a-f]+\b", "<hex>"),
        (r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", "<hex>"),
        (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "<address>"),
        (r"\[[0-9a-f:]*:[0-9a-f:]+\](?::\d+)?", "<address>"),
        (r"\b(port|pid|process)\s*[=:]?\s*\d+", r"\1 <n>"),
        (r"'[^'\s]{1,80}'", "<value>"),
        (r'"[^"\s]{1,80}"', "<value>"),
        (r"\(([^()\s]{1,80})\)=\(([^()]{0,200})\)", r"(\1)=(<value>)"),
        (r"\b\d+(?:\.\d+)?\b", "<n>"),
    )
)
# HTTP status codes stay: a 500 and a 503 are different causes.
_STATUS = re.compile(
    r"\b([1-5]\d\d)(?=\s+(?:Server|Client)\s+Error)|(?<=HTTPError\s)([1-5]\d\d)\b"
    r"|(?<=HTTPError\(')([1-5]\d\d)\b|(?<=status code\s)([1-5]\d\d)\b",
    re.IGNORECASE,
)
_SPACES = re.compile(r"\s+")
_KEPT = 0xF0000  # Unicode's supplementary private-use area
# An error text is read this far: its head says what it is (a body may be a whole page).
_READ = 4000


def _kept(match: re.Match[str], statuses: list[str]) -> str:
    index = ord(match.group()) - _KEPT
    return statuses[index] if index < len(statuses) else ""


def failure_cause(error: str) -> str:
    """The cause of one Locust error text: a known cause, else the normalised text."""
    for pattern, label in KNOWN_CAUSES:
        if pattern.search(error):
            return label
    return normalise_error(error)


def normalise_error(error: str) -> str:
    """The error text with its variable parts as placeholders, whitespace collapsed."""
    statuses: list[str] = []

    # Each status code is set aside as one private-use character (no digit for the
    # number placeholder to take), put back at the end.
    def keep(match: re.Match[str]) -> str:
        statuses.append(next(group for group in match.groups() if group))
        return chr(_KEPT + len(statuses) - 1)

    text = _STATUS.sub(keep, error[:_READ])
    for pattern, placeholder in _PLACEHOLDERS:
        text = pattern.sub(placeholder, text)
    text = re.sub(f"[{chr(_KEPT)}-{chr(_KEPT + 255)}]", lambda m: _kept(m, statuses), text)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > MAX_CAUSE:
        text = text[: MAX_CAUSE - 1] + "…"
    return text


class _Group(Protocol):
    method: str
    name: str
    error: str
    occurrences: int


@dataclass
class FailureCause:
    cause: str
    occurrences: int = 0
    endpoints: list[str] = field(default_factory=list)
    # One error text as Locust wrote it: the first, most frequent, group's.
    example: str = ""


def group_failures(groups: Iterable[_Group], *, example_chars: int = 500) -> list[FailureCause]:
    """The failure groups summed by cause, most occurrences first; each cause lists the
    endpoints it hit ("GET /users/[id]") in the order of their occurrences."""
    causes: dict[str, FailureCause] = {}
    per_endpoint: dict[str, dict[str, int]] = {}
    for group in groups:
        cause = failure_cause(group.error)
        entry = causes.get(cause)
        if entry is None:
            entry = causes[cause] = FailureCause(cause=cause, example=group.error[:example_chars])
            per_endpoint[cause] = {}
        entry.occurrences += group.occurrences
        endpoint = f"{group.method} {group.name}".strip()
        per_endpoint[cause][endpoint] = per_endpoint[cause].get(endpoint, 0) + group.occurrences
    for cause, entry in causes.items():
        counts = per_endpoint[cause]
        entry.endpoints = sorted(counts, key=lambda endpoint: (-counts[endpoint], endpoint))
    return sorted(causes.values(), key=lambda entry: (-entry.occurrences, entry.cause))


# The causes that say the database's connection limit was reached.
CONNECTION_LIMIT_CAUSES = frozenset(
    label for _pattern, label in KNOWN_CAUSES if "too many" in label
)
