"""What the performance pages call the figures they show, and how they write them.

A run keeps its figures under machine keys (`p95_ms`, `failure_rate`, `db_ram_peak` in
bytes), its thresholds and floors as the scenario's YAML wrote them, and its verdict lines
as `check` strings such as "/report p95_ms" or "/report p95 vs run #12". People read
"p95 ≤ 500 ms", "48.9 MiB", "1.2 %" and "All endpoints": every label of a threshold key
(perfruns.thresholds.FIGURES), a floor key (regression.FLOOR_SETTINGS) and a comparison's
metric is here, in one place, translated; and every number goes through Django's number
formatting, in the reader's language (48,9 Mio and 1 500 in French).

Read-only helpers over plain values, for the templates (fixproof/jinja2.py installs them
as filters and globals) and the views.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.utils import formats
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext, pgettext, pgettext_lazy

from perfruns.regression.verdicts import (
    DB_RAM_PEAK,
    FAILURE_RATE,
    FLOOR_SETTINGS,
    MEMORY_PER_REQUEST,
    MEMORY_SLOPE,
    METRICS,
    MIN_REPLICATES,
    RPS,
    RUN_LEVEL,
    Floors,
)
from perfruns.thresholds import FIGURES

MIB = 2**20
NBSP = "\u00a0"  # between a number and its unit: "48.9 MiB" never breaks in a table cell
MINUS = "\u2212"

# ---------------------------------------------------------------------------- units
# A figure's unit says how its value is written: "ms" is a duration in milliseconds,
# "rate" a share from 0 to 1, "points" a difference of two rates, "bytes" a size in bytes,
# "mib" a size already in MiB (the thresholds'), "rps" requests a second, "users" a count
# of users, "flag" a yes/no.
UNITS = (
    "ms",
    "rate",
    "points",
    "bytes",
    "bytes_per_min",
    "bytes_per_request",
    "mib",
    "mib_per_min",
    "rps",
    "users",
    "count",
    "flag",
)


def _significant(value: float, digits: int = 3, most_decimals: int = 2) -> Decimal:
    """The value rounded to about `digits` significant digits (never more than
    `most_decimals` decimals), as a Decimal without trailing zeros or exponent."""
    if value == 0 or not math.isfinite(value):
        return Decimal(0)
    decimals = max(0, min(most_decimals, digits - 1 - math.floor(math.log10(abs(value)))))
    rounded = Decimal(repr(round(value, decimals)))
    return Decimal(format(rounded.normalize(), "f"))


def number(value: float | int | None, *, digits: int = 3, signed: bool = False) -> str:
    """A number in the reader's language, to about three significant digits: 48.9, 412,
    1,500 (48,9, 412 and 1 500 in French); never 5.127e+07."""
    if value is None:
        return ""
    if isinstance(value, bool):
        value = int(value)
    shown = _significant(float(value), digits)
    text = formats.number_format(abs(shown), force_grouping=True)
    if shown < 0:
        return MINUS + text
    return ("+" + text) if signed and shown > 0 else text


def p_value(value: float | None) -> str:
    """A p- or q-value: two significant digits, "< 0.001" below that."""
    if value is None:
        return ""
    if value < 0.001:
        return "< " + formats.number_format(Decimal("0.001"))
    return formats.number_format(_significant(value, 2, most_decimals=3))


def _with_unit(value: float, unit: str, *, signed: bool) -> str:
    return f"{number(value, signed=signed)}{NBSP}{unit}"


def size(value: float | None, *, signed: bool = False) -> str:
    """Bytes as a person reads them: 512 bytes, 3.2 KiB, 48.9 MiB, 1.5 GiB."""
    if value is None:
        return ""
    steps = (
        (2**40, pgettext("unit", "TiB")),
        (2**30, pgettext("unit", "GiB")),
        (MIB, pgettext("unit", "MiB")),
        (1024, pgettext("unit", "KiB")),
    )
    for scale, unit in steps:
        if abs(value) >= scale:
            return _with_unit(value / scale, unit, signed=signed)
    return _with_unit(value, pgettext("unit", "bytes"), signed=signed)


def duration_ms(value: float | None, *, signed: bool = False) -> str:
    """Milliseconds, in seconds from 10 s on: 412 ms, 2,400 ms, 12.5 s."""
    if value is None:
        return ""
    if abs(value) >= 10_000:
        return _with_unit(value / 1000, pgettext("unit", "s"), signed=signed)
    return _with_unit(value, pgettext("unit", "ms"), signed=signed)


def percent(rate: float | None, *, signed: bool = False) -> str:
    """A share from 0 to 1 as a percentage: 0.0123 is 1.23 %."""
    if rate is None:
        return ""
    return _with_unit(100 * rate, "%", signed=signed)


def rps(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return ""
    return _with_unit(value, pgettext("unit", "req/s"), signed=signed)


def figure(value: Any, unit: str, *, signed: bool = False) -> str:
    """A value written in its unit (one of UNITS)."""
    if value is None:
        return ""
    if unit == "flag":
        return _("yes") if value else _("no")
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return str(value)
    value = float(value)
    if unit == "ms":
        return duration_ms(value, signed=signed)
    if unit == "rate":
        return percent(value, signed=signed)
    if unit == "points":
        points = 100 * value
        return _with_unit(
            points, ngettext("point", "points", 1 if abs(points) == 1 else 2), signed=signed
        )
    if unit == "bytes":
        return size(value, signed=signed)
    if unit == "bytes_per_min":
        return f"{size(value, signed=signed)}{pgettext('unit', '/min')}"
    if unit == "bytes_per_request":
        return f"{size(value, signed=signed)}{pgettext('unit', '/request')}"
    if unit == "mib":
        return _with_unit(value, pgettext("unit", "MiB"), signed=signed)
    if unit == "mib_per_min":
        return _with_unit(value, pgettext("unit", "MiB/min"), signed=signed)
    if unit == "rps":
        return rps(value, signed=signed)
    if unit == "users":
        count = round(value)
        text = number(count, signed=signed)
        return f"{text}{NBSP}{ngettext('user', 'users', count)}"
    return number(value, signed=signed)


# ---------------------------------------------------------------------- thresholds

# Every threshold key of perfruns.thresholds.FIGURES: its label and its unit.
THRESHOLD_LABELS: dict[str, tuple[Promise, str]] = {
    "p50_ms": (pgettext_lazy("figure", "p50"), "ms"),
    "p95_ms": (pgettext_lazy("figure", "p95"), "ms"),
    "p99_ms": (pgettext_lazy("figure", "p99"), "ms"),
    "failure_rate": (gettext_lazy("failure rate"), "rate"),
    "min_rps": (gettext_lazy("throughput"), "rps"),
    "db_ram_peak_mb": (gettext_lazy("DB RAM peak"), "mib"),
    "db_ram_slope_mb_per_min": (gettext_lazy("DB RAM growth"), "mib_per_min"),
    "target_memory_peak_mb": (gettext_lazy("target memory peak"), "mib"),
    "target_memory_slope_mb_per_min": (gettext_lazy("target memory growth"), "mib_per_min"),
    "probable_leak": (gettext_lazy("probable memory leak"), "flag"),
    "first_failure_users": (gettext_lazy("first failing step"), "users"),
    "min_knee_users": (gettext_lazy("knee"), "users"),
    "max_sustained_rps": (gettext_lazy("max sustained throughput"), "rps"),
}

# The figures of a run's summary (PerfRun.summary, Scenario.trend) by their keys.
SUMMARY_LABELS: dict[str, tuple[Promise, str]] = {
    "p50_ms": (pgettext_lazy("figure", "p50"), "ms"),
    "p95_ms": (pgettext_lazy("figure", "p95"), "ms"),
    "p99_ms": (pgettext_lazy("figure", "p99"), "ms"),
    "avg_ms": (gettext_lazy("mean response time"), "ms"),
    "failure_rate": (gettext_lazy("failure rate"), "rate"),
    "rps": (gettext_lazy("throughput"), "rps"),
    "requests": (gettext_lazy("requests"), "count"),
    "failures": (gettext_lazy("failures"), "count"),
    "db_ram_peak": (gettext_lazy("DB RAM peak"), "bytes"),
    "db_ram_peak_anon": (gettext_lazy("DB RAM peak, anonymous"), "bytes"),
    "db_cgroup_peak": (gettext_lazy("DB container memory peak"), "bytes"),
    "target_rss_peak": (gettext_lazy("target memory peak"), "bytes"),
}


def trend_for_page(trend: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """A scenario's trend (Scenario.trend) with each metric's label in the reader's
    language, for the page's charts (the stored label is the English one)."""
    return [
        {**metric, "label": summary_label(metric["key"])}
        if metric.get("key") in SUMMARY_LABELS
        else dict(metric)
        for metric in trend or []
    ]


def threshold_label(key: str) -> str:
    entry = THRESHOLD_LABELS.get(key)
    return str(entry[0]) if entry else key


def summary_label(key: str) -> str:
    entry = SUMMARY_LABELS.get(key)
    return str(entry[0]) if entry else key


def summary_figure(value: Any, key: str) -> str:
    """A figure of a run's summary, by its key: db_ram_peak's bytes as MiB, and so on."""
    entry = SUMMARY_LABELS.get(key)
    return figure(value, entry[1] if entry else "count")


def _limit(key: str, limit: Any) -> str:
    """ "≤ 500 ms", "≥ 20 req/s"; for a yes/no figure, what its only limit means."""
    entry = THRESHOLD_LABELS.get(key)
    spec = FIGURES.get(key)
    if entry is None or spec is None:
        return str(limit)
    if spec.flag:
        return _("none")
    return f"{'≥' if spec.at_least else '≤'} {figure(limit, entry[1])}"


def threshold_text(key: str, limit: Any, endpoint: str = "") -> str:
    """One threshold as a line: "p95 ≤ 500 ms", "no probable memory leak", "/report:
    p95 ≤ 300 ms"."""
    spec = FIGURES.get(key)
    if spec is not None and spec.flag:
        text = _("no %(figure)s") % {"figure": threshold_label(key)}
    else:
        text = f"{threshold_label(key)} {_limit(key, limit)}"
    if endpoint:
        return _("%(endpoint)s: %(check)s") % {"endpoint": endpoint_label(endpoint), "check": text}
    return text


def threshold_lines(thresholds: Mapping[str, Any] | None) -> list[str]:
    """A scenario's thresholds, one readable line each (run-wide first, then per
    endpoint)."""
    if not isinstance(thresholds, Mapping):
        return []
    lines = [threshold_text(key, limit) for key, limit in thresholds.items() if key != "endpoints"]
    endpoints = thresholds.get("endpoints")
    if isinstance(endpoints, Mapping):
        for name, limits in endpoints.items():
            if isinstance(limits, Mapping):
                lines += [threshold_text(key, limit, name) for key, limit in limits.items()]
    return lines


# The figures an action's proof asks for (models.CriterionMetric): the thresholds' keys,
# with "rps" and "knee_users" for their minimums.
CRITERION_LABELS: dict[str, tuple[Promise, str]] = {
    **THRESHOLD_LABELS,
    "rps": THRESHOLD_LABELS["min_rps"],
    "knee_users": THRESHOLD_LABELS["min_knee_users"],
}
_COMPARISONS = {"lt": "<", "le": "≤", "gt": ">", "ge": "≥"}


def criterion_figure(value: Any, metric: str) -> str:
    """A value an action's proof measured, in its metric's unit."""
    entry = CRITERION_LABELS.get(metric)
    if entry is None or entry[1] == "flag":
        return number(value) if isinstance(value, int | float) else ""
    return figure(value, entry[1])


def criterion_limit(criterion: Any) -> str:
    """The limit of an action's proof: "500 ms"; "10 %" better for "better by"."""
    if criterion.value is None:
        return ""
    if criterion.comparison == "better_by":
        return _with_unit(criterion.value, "%", signed=False)
    return criterion_figure(criterion.value, criterion.metric)


def criterion_text(criterion: Any) -> str:
    """What an action's proof asks for, for people: "/users/[id]: p95 < 500 ms, at 200
    users (checkout)"."""
    metric = criterion.metric
    label = str(CRITERION_LABELS[metric][0]) if metric in CRITERION_LABELS else metric
    if metric == "not_worse":
        what = _("not worse than run #%(run)s") % {"run": criterion.reference_run_id}
    elif metric == "probable_leak":
        what = _("no probable memory leak")
    elif criterion.comparison == "better_by":
        what = _("%(figure)s better than run #%(run)s by at least %(limit)s") % {
            "figure": label,
            "run": criterion.reference_run_id,
            "limit": criterion_limit(criterion),
        }
    else:
        sign = _COMPARISONS.get(criterion.comparison, criterion.comparison)
        what = f"{label} {sign} {criterion_limit(criterion)}"
    text = _("%(endpoint)s: %(check)s") % {
        "endpoint": endpoint_label(criterion.endpoint)
        if criterion.endpoint
        else _("All endpoints"),
        "check": what,
    }
    if criterion.users:
        text += ", " + _("at %(users)s") % {"users": figure(criterion.users, "users")}
    if criterion.red_then_green:
        text += ", " + _("red then green")
    return f"{text} ({criterion.scenario})"


# --------------------------------------------------------------------------- floors

# Every floor key of regression.FLOOR_SETTINGS: its label and its unit, as people write it.
FLOOR_LABELS: dict[str, tuple[Promise, str]] = {
    "latency_rel": (gettext_lazy("latency, relative"), "rate"),
    "latency_abs_ms": (gettext_lazy("latency, absolute"), "ms"),
    "failure_rate_points": (gettext_lazy("failure rate"), "points"),
    "db_ram_rel": (gettext_lazy("DB RAM peak, relative"), "rate"),
    "db_ram_abs_mb": (gettext_lazy("DB RAM peak, absolute"), "mib"),
    "rps_rel": (gettext_lazy("throughput, relative"), "rate"),
    "rps_abs": (gettext_lazy("throughput, absolute"), "rps"),
    "memory_slope_rel": (gettext_lazy("memory growth, relative"), "rate"),
    "memory_slope_abs_mb_per_min": (gettext_lazy("memory growth, absolute"), "mib_per_min"),
    "memory_per_request_rel": (gettext_lazy("memory per request, relative"), "rate"),
    "memory_per_request_abs_bytes": (gettext_lazy("memory per request, absolute"), "bytes"),
    "leak_mb_per_min": (gettext_lazy("probable leak above"), "mib_per_min"),
}
# A floor on throughput is a drop; the others a rise.
_FLOOR_DOWN = frozenset({"rps_rel", "rps_abs"})


def floor_text(key: str, value: Any) -> str:
    entry = FLOOR_LABELS.get(key)
    if entry is None or not isinstance(value, int | float) or isinstance(value, bool):
        return f"{key}: {value}"
    label, unit = entry
    if key == "leak_mb_per_min":
        return f"{label} {figure(value, unit)}"
    shown = figure(-value if key in _FLOOR_DOWN else value, unit, signed=True)
    return f"{label}: {shown}"


def floor_lines(floors: Mapping[str, Any] | None, *, effective: bool = False) -> list[str]:
    """A scenario's floors, one readable line each; with `effective`, every floor a
    comparison uses (the scenario's, the defaults for the others)."""
    given = dict(floors) if isinstance(floors, Mapping) else {}
    if not effective:
        return [floor_text(key, value) for key, value in given.items()]
    defaults = Floors()
    lines = []
    for key, (field, scale) in FLOOR_SETTINGS.items():
        value = given.get(key, getattr(defaults, field) / scale)
        lines.append(floor_text(key, value))
    return lines


# ----------------------------------------------------------------- comparison metrics

METRIC_LABELS: dict[str, tuple[Promise, str]] = {
    "p50": (pgettext_lazy("figure", "p50"), "ms"),
    "p95": (pgettext_lazy("figure", "p95"), "ms"),
    "p99": (pgettext_lazy("figure", "p99"), "ms"),
    FAILURE_RATE: (gettext_lazy("failure rate"), "rate"),
    RPS: (gettext_lazy("throughput"), "rps"),
    DB_RAM_PEAK: (gettext_lazy("DB RAM peak"), "bytes"),
    MEMORY_SLOPE: (gettext_lazy("memory growth"), "bytes_per_min"),
    MEMORY_PER_REQUEST: (gettext_lazy("memory per request"), "bytes_per_request"),
}


def metric_label(metric: str) -> str:
    entry = METRIC_LABELS.get(metric)
    return str(entry[0]) if entry else metric


def metric_figure(value: Any, metric: str, *, change: bool = False) -> str:
    """A comparison's value of a metric; with `change`, a signed difference (a failure
    rate's in percentage points)."""
    entry = METRIC_LABELS.get(metric)
    unit = entry[1] if entry else "count"
    if change and unit == "rate":
        unit = "points"
    return figure(value, unit, signed=change)


_LEVEL = re.compile(r"^(\d+) users$")


def endpoint_label(name: str) -> str:
    """Locust's "Aggregated" row is every endpoint; a step load's levels ("40 users"), the
    database and the target (memory growth) are named for people."""
    if name == RUN_LEVEL:
        return _("All endpoints")
    if name == "db":
        return _("the database")
    if name == "target":
        return _("the target")
    level = _LEVEL.match(name)
    if level:
        users = int(level.group(1))
        return ngettext("%(n)s user", "%(n)s users", users) % {"n": number(users)}
    return name


# ---------------------------------------------------------------------- verdict lines

_REGRESSION_CHECK = re.compile(r"^(?P<endpoint>.*) (?P<metric>\S+) vs run #(?P<run>\d+)$")

# The notes perfruns.thresholds and the judging write, in the reader's language.
_NOTES = {
    "no requests": gettext_lazy("no requests"),
    "not measured": gettext_lazy("not measured"),
    "not measured (the process was not sampled)": gettext_lazy(
        "not measured (the process was not sampled)"
    ),
    "no steady phase long enough to fit the memory's growth": gettext_lazy(
        "no steady phase long enough to fit the memory’s growth"
    ),
    "no probable leak": gettext_lazy("no probable leak"),
    "probable leak: the database": gettext_lazy("probable leak of the database"),
    "probable leak: the target": gettext_lazy("probable leak of the target"),
    "probable leak: the database and the target": gettext_lazy(
        "probable leak of the database and of the target"
    ),
    "not a step load: no breaking point": gettext_lazy("not a step load: no breaking point"),
    "no step failed": gettext_lazy("no step failed"),
    "no knee": gettext_lazy("no knee"),
    "the endpoint did not answer in this run": gettext_lazy(
        "the endpoint did not answer in this run"
    ),
    "suspected: memory fails a run only when its scenario asks": gettext_lazy(
        "suspected: memory fails a run only when its scenario asks"
    ),
    "not measured by this run": gettext_lazy("not measured by this run"),
    "not measured by this run or the reference": gettext_lazy(
        "not measured by this run or the reference"
    ),
}


def note_text(note: str) -> str:
    return str(_NOTES.get(note, note))


def _parse_check(check: str) -> tuple[str, str, str, int | None]:
    """(kind, endpoint, key, baseline run) of a verdict line's `check`: kind "threshold"
    (key of FIGURES), "regression" (metric of a comparison) or "" (unknown)."""
    if check in FIGURES:
        return "threshold", "", check, None
    found = _REGRESSION_CHECK.match(check)
    if found and found.group("metric") in METRICS:
        return "regression", found.group("endpoint"), found.group("metric"), int(found["run"])
    endpoint, _sep, key = check.rpartition(" ")
    if endpoint and key in FIGURES and FIGURES[key].per_endpoint:
        return "threshold", endpoint, key, None
    return "", "", check, None


def verdict_row(line: Mapping[str, Any]) -> dict[str, str]:
    """A verdict line for people: what was checked, what was measured (and its interval),
    the limit, and its note."""
    kind, endpoint, key, baseline = _parse_check(str(line.get("check", "")))
    value, low, high = line.get("value"), line.get("low"), line.get("high")
    limit = line.get("limit")
    if kind == "threshold":
        unit = THRESHOLD_LABELS[key][1] if key in THRESHOLD_LABELS else "count"
        check = threshold_label(key)
        if endpoint:
            check = _("%(endpoint)s: %(check)s") % {
                "endpoint": endpoint_label(endpoint),
                "check": check,
            }
        limit_text = _limit(key, limit)
        show = (lambda v: figure(v, unit)) if unit != "flag" else (lambda v: figure(bool(v), unit))
    elif kind == "regression":
        check = _("%(endpoint)s: %(metric)s against run #%(run)s") % {
            "endpoint": endpoint_label(endpoint),
            "metric": metric_label(key),
            "run": baseline,
        }
        limit_text = _("%(value)s on run #%(run)s") % {
            "value": metric_figure(limit, key),
            "run": baseline,
        }

        def show(v: Any) -> str:
            return metric_figure(v, key)
    else:
        check = key
        limit_text = _("none") if limit is False else (number(limit) if limit is not None else "")
        show = number
    measured = show(value) if value is not None else _("not measured")
    interval = f"{show(low)} – {show(high)}" if low is not None and high is not None else ""
    return {
        "check": check,
        "measured": measured,
        "interval": interval,
        "limit": limit_text,
        "note": note_text(str(line.get("note", ""))),
    }


def failed_checks(verdict: Iterable[Mapping[str, Any]] | None) -> list[str]:
    """The lines of a run's verdict that failed it, each short: "p95 412 ms (≤ 300 ms)"."""
    lines = []
    for line in verdict or []:
        if line.get("passed"):
            continue
        row = verdict_row(line)
        lines.append(
            _("%(check)s %(measured)s (%(limit)s)")
            % {"check": row["check"], "measured": row["measured"], "limit": row["limit"]}
        )
    return lines


def run_problems(run: Any, *, most: int = 2) -> list[str]:
    """Why a run did not pass, briefly, for a list of runs: the checks it failed, its
    invalid reason, its error; at most `most` of them, then how many more."""
    problems: list[str] = []
    if run.status == "failed":
        problems += failed_checks(run.verdict)
    if run.invalid_reason:
        problems.append(str(run.invalid_reason))
    if run.status == "error" and getattr(run, "error", ""):
        first = str(run.error).strip().splitlines()
        if first:
            problems.append(first[0][:160])
    if len(problems) > most:
        more = len(problems) - most
        problems = problems[:most] + [
            ngettext("and %(n)s more", "and %(n)s more", more) % {"n": more}
        ]
    return problems


# ------------------------------------------------------------ inconclusive comparisons


def _field(verdict: Any, name: str) -> Any:
    if isinstance(verdict, Mapping):
        return verdict.get(name)
    return getattr(verdict, name, None)


def inconclusive_reason(verdict: Any) -> str:
    """Why one comparison row (a MetricVerdict or its JSON) is inconclusive, from the
    figures it carries: a side without data, too few intervals or requests for an interval,
    or an interval too wide to tell a change that matters from none."""
    metric = _field(verdict, "metric")
    if _field(verdict, "baseline") is None or _field(verdict, "candidate") is None:
        if metric == FAILURE_RATE:
            return _("no requests in one of the runs")
        return _("not measured in one of the runs")
    if _field(verdict, "low") is None or _field(verdict, "high") is None:
        if metric in (MEMORY_SLOPE, MEMORY_PER_REQUEST):
            return _("no interval on the memory growth of one of the runs")
        return ngettext(
            "too short a run: fewer than %(n)s ten-second interval on one side",
            "too short a run: fewer than %(n)s ten-second intervals on one side",
            MIN_REPLICATES,
        ) % {"n": MIN_REPLICATES}
    if metric == FAILURE_RATE:
        return _("too few requests to tell a change of the failure rate")
    return _(
        "the runs vary too much: the interval of the change spans both no change and one "
        "that matters"
    )


def comparison_outcome(verdicts: Iterable[Any] | None) -> dict[str, Any]:
    """What a comparison's rows add up to: the rows worse or better, whether every row is
    inconclusive, and the reasons of the inconclusive ones (most frequent first, each
    with its count)."""
    rows = list(verdicts or [])
    changed = [v for v in rows if _field(v, "verdict") in ("worse", "better")]
    inconclusive = [v for v in rows if _field(v, "verdict") == "inconclusive"]
    reasons = Counter(inconclusive_reason(v) for v in inconclusive)
    return {
        "changed": changed,
        "all_inconclusive": bool(rows) and len(inconclusive) == len(rows),
        "inconclusive": len(inconclusive),
        "reasons": reasons.most_common(),
    }
