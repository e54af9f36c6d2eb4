"""What every perfruns service shares: the refusal a person reads, the names pages link
to, the id of the worker process that claims a job, and error text fit for a page."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from django.conf import settings

from perfruns.pipeline.pgtools import redact


class PipelineRefused(Exception):
    """A request that cannot be taken: the message says why, for a person."""


DSN_GIVEN = "Give the NAME of the variable holding the DSN, not the DSN."
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def describe(exc: BaseException) -> str:
    """An exception as one line for a page or a log: its message, never a password."""
    return redact(f"{exc.__class__.__name__}: {exc}" if not str(exc) else str(exc))


def looks_like_dsn(value: str) -> bool:
    """A URI or a key=value conninfo, where a variable name was expected."""
    return "://" in value or "=" in value or "@" in value


def check_env_name(value: str) -> None:
    """Refuse a value that is not a variable name, without ever echoing a DSN:
    a pasted DSN holds a password, and this message reaches pages and logs."""
    if looks_like_dsn(value):
        raise PipelineRefused(DSN_GIVEN)
    if not _ENV_NAME.match(value):
        raise PipelineRefused(
            f"'{value}' is not an environment variable name (letters, digits, underscores)."
        )


def check_name(name: str) -> None:
    # Pages link to sources, environments and scenarios by name (a <slug:name> URL):
    # one saved with a space would break every page that lists it.
    if not _NAME.match(name):
        raise PipelineRefused(
            f"'{name}' is not a valid name: use letters, digits, hyphens and underscores "
            "(at most 100)."
        )


def data_dir() -> Path:
    """FIXPROOF_DATA_DIR: dumps, managed clusters, scratch space, each run's files."""
    return Path(settings.FIXPROOF_DATA_DIR)


def runs_root() -> Path:
    """Where each run keeps its files, in `run-<id>/`."""
    return data_dir() / "runs"
