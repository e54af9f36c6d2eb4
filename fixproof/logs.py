"""Logging filters of the service."""

from __future__ import annotations

import logging


class NoTracebackFor4xx(logging.Filter):
    """A 403 or 404 is an ordinary answer: Django logs it with the exception that made it,
    a traceback per refused request. Keep the one line, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
