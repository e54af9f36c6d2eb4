"""$DATABASE_URL for the demo's app.py and seed.py, and error messages that never show it.

The URL may hold a password, so nothing here prints it: errors name the variable, and
`redact` takes the URL and its password out of a database error before it is logged.
"""

from __future__ import annotations

import os
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict

VARIABLE = "DATABASE_URL"
EXAMPLE = "postgresql://postgres@127.0.0.1:5432/demo"


class MissingDatabaseUrl(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            f"{VARIABLE} is not set: set it to the demo database's connection URL, e.g. {EXAMPLE}"
        )


class InvalidDatabaseUrl(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            f"{VARIABLE} is not a valid PostgreSQL connection URL (its value is not shown: "
            f"it may hold a password), e.g. {EXAMPLE}"
        )


def required() -> str:
    """The connection URL; MissingDatabaseUrl or InvalidDatabaseUrl name the variable only."""
    url = os.environ.get(VARIABLE, "").strip()
    if not url:
        raise MissingDatabaseUrl()
    try:
        conninfo_to_dict(url)
    except psycopg.Error:
        raise InvalidDatabaseUrl() from None
    return url


def redact(message: str, url: str) -> str:
    """A database error's message without the URL or its password in it.

    A URL that does not parse gets no details at all: libpq's parse errors quote
    pieces of the string, and any piece could be the password.
    """
    try:
        password = conninfo_to_dict(url).get("password") or ""
    except psycopg.Error:
        return f"(details hidden: {VARIABLE} could not be parsed)"
    for secret in (url, password, quote(password, safe="")):
        if secret:
            message = message.replace(secret, "***")
    return message


def describe(exc: BaseException, url: str) -> str:
    """`ClassName: redacted message` on one line, for logs."""
    text = " ".join(redact(str(exc), url).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
