from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.messages import get_messages
from django.templatetags.static import static
from django.urls import reverse
from django.utils import formats, timezone, translation
from django.utils.html import json_script
from django.utils.translation import gettext, ngettext, npgettext, pgettext
from jinja2 import Environment

from perfruns import labels
from postmortems import access


def url(name: str, *args: Any, **kwargs: Any) -> str:
    return reverse(name, args=args or None, kwargs=kwargs or None)


def localtime(value: Any) -> Any:
    return timezone.localtime(value) if value else value


def date_format(value: Any, fmt: str | None = None) -> str:
    """A date or a moment in the reader's language, in one format on every page: the
    language's DATE_FORMAT for a date, its DATETIME_FORMAT (the same date, then the time)
    for a moment, in the site's time zone. `fmt` names another of Django's formats."""
    if not value:
        return ""
    if hasattr(value, "tzinfo") and value.tzinfo is not None:
        value = timezone.localtime(value)
    if fmt is None:
        fmt = "DATETIME_FORMAT" if isinstance(value, datetime.datetime) else "DATE_FORMAT"
    return formats.date_format(value, fmt)


def number(value: Decimal | int | None) -> str:
    """A figure as written, in the reader's language: 270, 2.5 or 2,5; never 2.7E+2.
    Counts (ints) get the reader's thousands separator: 12,345 or 12 345."""
    if value is None:
        return ""
    if isinstance(value, int):
        # Below a thousand there is nothing to group: the dashboard prints hundreds of
        # counts, and each number_format() looks the language's formats up again.
        if -1000 < value < 1000:
            return str(value)
        return formats.number_format(value, force_grouping=True)
    # normalize() alone gives 2.7E+2 for 270; going through "f" drops the exponent.
    return formats.number_format(Decimal(format(value.normalize(), "f")))


def environment(**options: Any) -> Environment:
    options.setdefault("extensions", []).append("jinja2.ext.i18n")
    env = Environment(**options)
    # Added by the i18n extension, which the stubs do not know.
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext, ngettext, newstyle=True, pgettext=pgettext, npgettext=npgettext
    )
    env.globals.update(
        {
            "url": url,
            "static": static,
            "get_messages": get_messages,
            "get_current_language": translation.get_language,
            "LANGUAGES": settings.LANGUAGES,
            # Links shown only to who may follow them (roles are cached per request).
            "user_can_write": access.can_write,
            # The performance pages' labels and figures (perfruns/labels.py).
            "perf": labels,
        }
    )
    env.filters.update(
        {
            "localtime": localtime,
            "date": date_format,
            "number": number,
            # Figures in the units people read, in their language: 48.9 MiB, 412 ms, 1.2 %.
            "size": labels.size,
            "ms": labels.duration_ms,
            "percent": labels.percent,
            "rps": labels.rps,
            "num": labels.number,
            # Data for a page's script, escaped for a <script> element.
            "json_script": json_script,
        }
    )
    return env
