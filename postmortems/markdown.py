"""Post-mortems as wiki Markdown: the classic structure, in English or French.

    ## POST MORTEM: <title>
    ### Date / Authors / Status / Severity / Team / Services / When
    ### Summary / Impacts / Root Causes / Trigger / Resolution / Detection
    ### Timeline / Actions / Lessons learned

``parse`` turns a file into plain data (no database access besides looking
up users and teams by name) and raises ``MarkdownError`` naming the problem
and its line; ``export`` writes the same structure back. Sections the parser
does not know are kept verbatim and written back where they stood.
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import Field, Model
from django.utils import timezone

from .models import (
    Action,
    ActionKind,
    ActionStatus,
    ExtraSection,
    ImpactFigure,
    PostMortem,
    PostMortemStatus,
    RootCauseCategory,
    Severity,
    Team,
)

# Canonical section order; an unknown section is written back after the
# known section it followed (its ExtraSection.position is that index + 1).
SECTIONS = (
    "title",
    "date",
    "authors",
    "status",
    "severity",
    "team",
    "services",
    "when",
    "summary",
    "impacts",
    "root_causes",
    "trigger",
    "resolution",
    "detection",
    "timeline",
    "actions",
    "lessons_learned",
)

HEADINGS = {
    "en": {
        "title": "Title",
        "date": "Date",
        "authors": "Authors",
        "status": "Status",
        "severity": "Severity",
        "team": "Team",
        "services": "Services",
        "when": "When",
        "summary": "Summary",
        "impacts": "Impacts",
        "root_causes": "Root Causes",
        "trigger": "Trigger",
        "resolution": "Resolution",
        "detection": "Detection",
        "timeline": "Timeline",
        "actions": "Actions",
        "lessons_learned": "Lessons Learned",
    },
    "fr": {
        "title": "Titre",
        "date": "Date",
        "authors": "Auteurs",
        "status": "Statut",
        "severity": "Sévérité",
        "team": "Équipe",
        "services": "Services",
        "when": "Quand",
        "summary": "Résumé",
        "impacts": "Impacts",
        "root_causes": "Causes racines",
        "trigger": "Déclencheur",
        "resolution": "Résolution",
        "detection": "Détection",
        "timeline": "Chronologie",
        "actions": "Actions",
        "lessons_learned": "Leçons apprises",
    },
}


def _fold(text: str) -> str:
    """Lower case, no accents, single spaces: 'Résumé ' and 'resume' match."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[\s_\-’']+", " ", bare).strip(" :").lower()


_SECTION_ALIASES = {
    "title": ["title", "titre"],
    "date": ["date"],
    "authors": ["authors", "author", "auteurs", "auteur", "auteur(s)", "redacteurs", "author(s)"],
    "status": ["status", "statut", "etat"],
    "severity": ["severity", "severite", "gravite", "sev"],
    "team": ["team", "equipe"],
    "services": ["services", "service"],
    "when": ["when", "quand", "incident window", "fenetre"],
    "summary": ["summary", "resume", "synthese", "executive summary"],
    "impacts": ["impacts", "impact"],
    "root_causes": ["root causes", "root cause", "causes racines", "cause racine", "causes"],
    "trigger": ["trigger", "declencheur", "element declencheur"],
    "resolution": ["resolution"],
    "detection": ["detection"],
    "timeline": ["timeline", "chronologie"],
    "actions": ["actions", "action items", "plan d action"],
    "lessons_learned": [
        "lessons learned",
        "lessons learnt",
        "lessons",
        "lecons apprises",
        "enseignements",
        "lecons",
        "retour d experience",
    ],
}
SECTION_BY_NAME = {_fold(alias): key for key, names in _SECTION_ALIASES.items() for alias in names}

_GENERIC_TITLES = {"post mortem", "postmortem", "post mortem report", "incident report", "retex"}

_STATUS_WORDS = {
    PostMortemStatus.DRAFT: ["draft", "brouillon"],
    PostMortemStatus.IN_REVIEW: ["in review", "review", "en relecture", "en revue", "a relire"],
    PostMortemStatus.PUBLISHED: ["published", "publie", "final"],
}
POSTMORTEM_STATUS_BY_WORD = {_fold(w): k for k, ws in _STATUS_WORDS.items() for w in ws}
POSTMORTEM_STATUS_WORD = {
    PostMortemStatus.DRAFT: "Draft",
    PostMortemStatus.IN_REVIEW: "In review",
    PostMortemStatus.PUBLISHED: "Published",
}

_ACTION_STATUS_WORDS = {
    ActionStatus.TODO: ["to do", "todo", "a faire", "open", "ouvert"],
    ActionStatus.TO_DEBATE: ["to debate", "a debattre", "to discuss", "a discuter"],
    ActionStatus.IN_PROGRESS: ["in progress", "en cours", "doing"],
    ActionStatus.DONE: ["done", "fait", "termine", "closed", "ferme"],
    ActionStatus.WONT_DO: ["won t do", "wont do", "abandonne", "ne sera pas fait", "won't do"],
}
ACTION_STATUS_BY_WORD = {_fold(w): k for k, ws in _ACTION_STATUS_WORDS.items() for w in ws}
ACTION_STATUS_WORD = {
    ActionStatus.TODO: "to do",
    ActionStatus.TO_DEBATE: "to debate",
    ActionStatus.IN_PROGRESS: "in progress",
    ActionStatus.DONE: "done",
    ActionStatus.WONT_DO: "won't do",
}

_ACTION_KIND_WORDS = {
    ActionKind.INVESTIGATE: ["investigate", "investiguer", "enqueter", "analyser"],
    ActionKind.MITIGATE: ["mitigate", "attenuer", "mitiger"],
    ActionKind.REPAIR: ["repair", "fix", "reparer", "corriger"],
    ActionKind.DETECT: ["detect", "detecter"],
    ActionKind.PREVENT: ["prevent", "prevenir", "eviter"],
    ActionKind.PROCESS: ["process", "processus"],
}
ACTION_KIND_BY_WORD = {_fold(w): k for k, ws in _ACTION_KIND_WORDS.items() for w in ws}

_FIELD_WORDS = {
    "status": ["status", "statut", "etat"],
    "owner": ["owner", "responsable", "proprietaire", "porteur", "assignee"],
    "due_date": ["due", "due date", "echeance", "date limite", "deadline"],
    "ticket_url": ["ticket"],
    "done_at": ["done at", "done on", "fait le", "termine le"],
    "category": ["category", "categorie"],
    "started_at": ["started", "start", "debut", "started at"],
    "ended_at": ["ended", "end", "fin", "ended at"],
    "detected_at": ["detected", "detected at", "detecte", "detection"],
    "resolved_at": ["resolved", "resolved at", "resolu", "resolution"],
}
FIELD_BY_WORD = {_fold(w): k for k, ws in _FIELD_WORDS.items() for w in ws}

_MONTHS = {
    "january": 1,
    "february": 2,
    "march": 3,
    "april": 4,
    "may": 5,
    "june": 6,
    "july": 7,
    "august": 8,
    "september": 9,
    "october": 10,
    "november": 11,
    "december": 12,
    "janvier": 1,
    "fevrier": 2,
    "mars": 3,
    "avril": 4,
    "mai": 5,
    "juin": 6,
    "juillet": 7,
    "aout": 8,
    "septembre": 9,
    "octobre": 10,
    "novembre": 11,
    "decembre": 12,
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "sept": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
}
_MONTH_NAMES = (
    "January February March April May June July August September October November December"
).split()

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ACTION_HEAD = re.compile(
    r"^\*\*\s*Action\s+(?P<number>\d+)\s*(?:\((?P<kind>[^)]*)\))?\s*:\s*(?P<title>.+?)\s*\*\*\s*$",
    re.IGNORECASE,
)
_FIELD_LINE = re.compile(r"^\s*(?:[-*]\s+)?(?P<name>[^:\n]{2,20}?)\s*:\s*(?P<value>.*?)\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(?P<text>.*)$")
# A number that is not part of a clock time (12:05, 12h05), a date (13/03/2026,
# 2026-03-13) nor a name (p95, SEV1). Thousands are grouped with commas
# (1,904) or, as French writers do, with spaces (2 318, 12 000,5).
_NUMBER = re.compile(
    r"(?<![\w:.,/-])"
    r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:,\d+)?|\d+(?:[.,]\d+)?)"
    r"(?![\d:/]|h\d|-\d{1,2}-\d)"
)
# "(?!\w)" rather than "\b": after "%" a word boundary needs a letter, so
# "58% of requests" would lose its unit.
_UNIT = re.compile(
    r"^\s?(%|ms|s|sec|secs|seconds?|secondes?|min|mins|minutes?|h|hours?|heures?|"
    r"[kmgt]i?b|bytes|octets|rps|req/s|requests?|requêtes?|users?|utilisateurs?|"
    r"errors?|erreurs?|orders?|commandes?|rows|lignes)(?!\w)",
    re.IGNORECASE,
)
_TIME_ONLY = re.compile(r"^(\d{1,2})[:h](\d{2})$")


class MarkdownError(ValueError):
    """A file that cannot be read as a post-mortem; ``line`` is 1-based or None."""

    def __init__(self, message: str, line: int | None = None):
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


def _max_length(model: type[Model], name: str) -> int:
    field = model._meta.get_field(name)
    # An array of text holds its items' length on its base field.
    field = getattr(field, "base_field", field)
    if not isinstance(field, Field) or field.max_length is None:
        raise TypeError(f"{model.__name__}.{name} has no maximum length")
    return field.max_length


def _check_length(text: str, model: type, name: str, what: str, line: int | None) -> str:
    """Refuse a value longer than its column: PostgreSQL would reject it with a
    DataError (a crash, not a message), or silently cut it in an array column."""
    limit = _max_length(model, name)
    if len(text) > limit:
        raise MarkdownError(
            f"{what} '{text[:40]}…' is longer than {limit} characters; shorten it.", line
        )
    return text


@dataclass
class Section:
    key: str | None  # None: a section Fixproof has no field for
    heading: str
    line: int  # the heading's line number
    lines: list[tuple[int, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.lines).strip("\n").rstrip()

    def content_lines(self) -> list[tuple[int, str]]:
        return [(n, t) for n, t in self.lines if t.strip()]


@dataclass
class ParsedPostMortem:
    title: str
    fields: dict[str, Any]
    author_names: list[str]
    team_name: str | None
    impacts: list[dict[str, Any]]
    root_causes: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    extra_sections: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- reading


def decode(data: bytes) -> str:
    """Bytes of an uploaded file to text, or a MarkdownError naming the problem."""
    if not data or not data.strip():
        raise MarkdownError("The file is empty.")
    # A NUL byte means an image, an archive or a PDF (git and grep use the same
    # test); checked before decoding so such a file is not reported as "not
    # UTF-8", which would send its author to re-save it. UTF-16 text also holds
    # NULs but starts with its byte-order mark and is reported as not UTF-8.
    nul = data.find(b"\x00", 0, 8192)
    if nul != -1 and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise MarkdownError(
            "The file is not Markdown: it holds binary data (an image, an archive or a PDF?).",
            data[:nul].count(b"\n") + 1,
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MarkdownError(
            f"The file is not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be decoded); "
            "save it as UTF-8 and try again.",
            line,
        ) from None
    return text


def _check_markdown(text: str) -> list[str]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for number, line in enumerate(lines, start=1):
        if any(ord(c) < 32 and c not in "\t\f" for c in line):
            raise MarkdownError("The file is not Markdown: it holds binary data.", number)
    first = next(((n, t) for n, t in enumerate(lines, start=1) if t.strip()), None)
    if first is None:
        raise MarkdownError("The file is empty.")
    head = first[1].lstrip().lower()
    if head.startswith(("<!doctype", "<html", "<?xml")):
        raise MarkdownError("The file is not Markdown: it is an HTML or XML document.", first[0])
    if head.startswith(("{", "[")) and not head.startswith("[!"):
        raise MarkdownError("The file is not Markdown: it looks like JSON.", first[0])
    if not _heading_lines(lines):
        raise MarkdownError(
            "The file is not a Markdown post-mortem: it has no '#' headings "
            "(expected a title and sections such as '### Summary')."
        )
    return lines


_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")


def _heading_lines(lines: list[str]) -> list[tuple[int, re.Match[str]]]:
    """The headings (line number, match), skipping fenced code blocks: a
    "# pgbouncer.ini" comment in a config snippet is not a section."""
    headings = []
    fence = ""
    for number, line in enumerate(lines, start=1):
        m = _FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = ""
        elif m:
            fence = m.group(1)
        elif h := _HEADING.match(line):
            headings.append((number, h))
    return headings


def _split_sections(lines: list[str]) -> tuple[tuple[int, str] | None, list[Section]]:
    """The title heading (line, text) and the sections under it."""
    headings = [(n, len(m.group(1)), m.group(2)) for n, m in _heading_lines(lines)]
    title: tuple[int, str] | None = None
    first = headings[0]
    if _fold(first[2]) not in SECTION_BY_NAME:
        title = (first[0], first[2])
        rest = headings[1:]
    else:
        rest = headings
    level = min((lvl for _, lvl, _ in rest), default=None)
    sections: list[Section] = []
    starts = {n: text for n, lvl, text in rest if lvl == level}
    current: Section | None = None
    preamble: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if title and number == title[0]:
            continue
        if number in starts:
            heading = starts[number]
            current = Section(SECTION_BY_NAME.get(_fold(heading)), heading, number)
            sections.append(current)
            continue
        if current is None:
            preamble.append((number, line))
        else:
            current.lines.append((number, line))
    if any(t.strip() for _, t in preamble):
        # Text between the title and the first section: kept, never dropped.
        sections.insert(0, Section(None, "", preamble[0][0], preamble))
    return title, sections


def _title_from_heading(text: str) -> str | None:
    folded = _fold(text)
    if folded in _GENERIC_TITLES:
        return None
    for generic in ("POST MORTEM", "POST-MORTEM", "POSTMORTEM", "Post mortem", "Post-mortem"):
        m = re.match(rf"^{re.escape(generic)}\s*[:\-–—]\s*(.+)$", text, re.IGNORECASE)
        if m:
            return m.group(1).strip()
    return text.strip()


def _parse_number(raw: str) -> Decimal | None:
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", raw):
        raw = raw.replace(",", "")
    else:
        raw = re.sub(r"[ \u00a0\u202f]", "", raw).replace(",", ".")
    try:
        return Decimal(raw)
    except InvalidOperation:
        return None


def parse_impact(text: str, window: str, line: int | None = None) -> dict[str, Any]:
    """'in total 1,904 of 6,140 requests failed' -> label (as written), value 1904."""
    value = None
    unit = ""
    m = _NUMBER.search(text)
    if m:
        value = _parse_number(m.group(1))
        unit_match = _UNIT.match(text[m.end() :])
        unit = unit_match.group(1) if unit_match else ""
    column = ImpactFigure._meta.get_field("value")
    if m and value is not None and value.adjusted() >= column.max_digits - column.decimal_places:
        raise MarkdownError(
            f"The figure {m.group(1)} is too large to store (at most "
            f"{column.max_digits - column.decimal_places} digits before the decimal point).",
            line,
        )
    label = _check_length(text.strip(), ImpactFigure, "label", "The impact", line)
    return {"label": label, "value": value, "unit": unit, "window": window}


def _parse_impacts(section: Section) -> list[dict[str, Any]]:
    impacts: list[dict[str, Any]] = []
    window = ""
    for number, line in section.lines:
        stripped = line.strip()
        if not stripped:
            continue
        bullet = _BULLET.match(line)
        if bullet:
            impacts.append(parse_impact(bullet.group("text"), window, number))
        elif stripped.endswith(":"):
            window = _check_length(
                stripped[:-1].strip(), ImpactFigure, "window", "The impact window", number
            )
        else:
            impacts.append(parse_impact(stripped, window, number))
    return impacts


def _parse_root_causes(section: Section) -> list[dict[str, Any]]:
    causes: list[dict[str, Any]] = []
    block: list[tuple[int, str]] = []

    def flush() -> None:
        if not block:
            return
        category = ""
        lines = [t for _, t in block]
        m = _FIELD_LINE.match(lines[0])
        if m and FIELD_BY_WORD.get(_fold(m.group("name"))) == "category":
            word = _fold(m.group("value"))
            if word not in RootCauseCategory.values:
                raise MarkdownError(
                    f"Root cause category '{m.group('value')}' is not one of "
                    f"{', '.join(v for v in RootCauseCategory.values if v)}.",
                    block[0][0],
                )
            category = word
            lines = lines[1:]
        description = "\n".join(lines).strip()
        if description:
            causes.append({"category": category, "description": description})
        block.clear()

    for number, line in section.lines:
        if line.strip():
            block.append((number, line.rstrip()))
        else:
            flush()
    flush()
    return causes


def parse_date(raw: str, line: int, what: str) -> dt.date:
    text = raw.strip().rstrip(".")
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    words = re.findall(r"[^\W\d_]+|\d+", text)
    folded = [_fold(w) for w in words]
    numbers = [int(w) for w in words if w.isdigit()]
    months = [_MONTHS[w] for w in folded if w in _MONTHS]
    if len(numbers) == 2 and len(months) == 1:
        day, year = numbers if numbers[0] <= 31 else numbers[::-1]
        try:
            return dt.date(year, months[0], day)
        except ValueError:
            pass
    raise MarkdownError(
        f"{what} '{raw.strip()}' is not a date (expected e.g. 14 March 2026).", line
    )


def parse_datetime(raw: str, line: int, what: str, day: dt.date | None) -> dt.datetime:
    text = raw.strip()
    tz = timezone.get_current_timezone()
    m = _TIME_ONLY.match(text)
    if m:
        if day is None:
            raise MarkdownError(
                f"{what} '{text}' has no date, and the post-mortem has no Date to take it from.",
                line,
            )
        naive = dt.datetime.combine(day, dt.time(int(m.group(1)), int(m.group(2))))
        return timezone.make_aware(naive, tz)
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M"):
        try:
            return timezone.make_aware(dt.datetime.strptime(text, fmt), tz)
        except ValueError:
            pass
    raise MarkdownError(
        f"{what} '{text}' is not a time (expected 2026-03-13 12:02 or 12:02).", line
    )


_TIMELINE_LINE = re.compile(
    r"^\s*[-*+]\s+(?:\*\*)?(?P<when>\d{4}-\d{2}-\d{2}[ T]\d{1,2}:\d{2}|\d{1,2}[:h]\d{2})(?:\*\*)?"
    r"\s*(?:[—–:-]\s*)?(?P<text>.*)$"
)


def _parse_timeline(section: Section, day: dt.date | None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for number, line in section.content_lines():
        m = _TIMELINE_LINE.match(line)
        if m:
            when = parse_datetime(m.group("when").replace("h", ":"), number, "Timeline time", day)
            entries.append({"occurred_at": when, "text": m.group("text").strip()})
        elif entries:
            # A continuation line belongs to the entry above it.
            entries[-1]["text"] += "\n" + line.strip()
        else:
            raise MarkdownError(
                "A timeline line must start with a time: '- 12:02 — what happened'.", number
            )
    return entries


def _parse_when(section: Section, day: dt.date | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    anchor = day
    for number, line in section.content_lines():
        m = _FIELD_LINE.match(line)
        name = FIELD_BY_WORD.get(_fold(m.group("name"))) if m else None
        if m is None or name not in ("started_at", "ended_at", "detected_at", "resolved_at"):
            raise MarkdownError(
                "Expected 'Started:', 'Detected:', 'Resolved:' or 'Ended:' with a time.", number
            )
        values[name] = parse_datetime(m.group("value"), number, m.group("name"), anchor)
        lines[name] = number
        if name == "started_at":
            # "Detected: 12:10" below a full start time is on the incident's day,
            # not on the Date the page was written.
            anchor = timezone.localtime(values[name]).date()
    # The database holds this rule too (postmortem_ends_after_start), but there
    # it would surface as an IntegrityError with no line to point the author to.
    if "started_at" in values and "ended_at" in values:
        if values["ended_at"] < values["started_at"]:
            raise MarkdownError(
                "The incident cannot end before it starts: Ended "
                f"{_format_datetime(values['ended_at'])} is before Started "
                f"{_format_datetime(values['started_at'])}.",
                lines["ended_at"],
            )
    return values


def _parse_actions(section: Section) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """The actions, and any text that stands before the first one."""
    actions: list[dict[str, Any]] = []
    before: list[tuple[int, str]] = []
    current: dict[str, Any] | None = None
    seen_numbers: dict[int, int] = {}
    for number, line in section.lines:
        head = _ACTION_HEAD.match(line.strip())
        if head:
            n = int(head.group("number"))
            if n in seen_numbers:
                raise MarkdownError(
                    f"Action {n} appears twice (first on line {seen_numbers[n]}).", number
                )
            seen_numbers[n] = number
            kind_word = _fold(head.group("kind") or "")
            if not kind_word:
                raise MarkdownError(
                    f"Action {n} has no kind: write '**Action {n} (mitigate): …**' with one of "
                    f"{', '.join(ActionKind.values)}.",
                    number,
                )
            if kind_word not in ACTION_KIND_BY_WORD:
                raise MarkdownError(
                    f"Action {n} kind '{head.group('kind')}' is not one of "
                    f"{', '.join(ActionKind.values)}.",
                    number,
                )
            current = {
                "number": n,
                "kind": ACTION_KIND_BY_WORD[kind_word],
                "title": _check_length(
                    head.group("title").strip(), Action, "title", f"Action {n} title", number
                ),
                "status": ActionStatus.TODO,
                "owner_name": "",
                "due_date": None,
                "ticket_url": "",
                "done_at": None,
                "_lines": [],
                "_line": number,
            }
            actions.append(current)
            continue
        if current is None:
            before.append((number, line))
            continue
        m = _FIELD_LINE.match(line)
        name = FIELD_BY_WORD.get(_fold(m.group("name"))) if m else None
        if m and name in ("status", "owner", "due_date", "ticket_url", "done_at"):
            value = m.group("value").strip()
            if name == "status":
                status = ACTION_STATUS_BY_WORD.get(_fold(value))
                if status is None:
                    raise MarkdownError(
                        f"Action {current['number']} status '{value}' is not one of "
                        f"{', '.join(ACTION_STATUS_WORD.values())}.",
                        number,
                    )
                current["status"] = status
            elif name == "owner":
                current["owner_name"] = _check_length(
                    value, Action, "owner_name", f"Action {current['number']} owner", number
                )
            elif name == "due_date":
                current["due_date"] = parse_date(value, number, "Due date") if value else None
            elif name == "done_at":
                current["done_at"] = parse_datetime(value, number, "Done at", None)
            elif name == "ticket_url":
                if value and not re.match(r"^https?://\S+$", value):
                    raise MarkdownError(
                        f"Action {current['number']} ticket '{value}' is not an http(s) URL.",
                        number,
                    )
                current["ticket_url"] = _check_length(
                    value, Action, "ticket_url", f"Action {current['number']} ticket", number
                )
            continue
        current["_lines"].append(line.rstrip())
    for action in actions:
        action["description"] = "\n".join(action.pop("_lines")).strip("\n")
        action.pop("_line")
        if action["status"] != ActionStatus.DONE:
            action["done_at"] = None
    return actions, before


def _list_of_names(text: str) -> list[str]:
    parts = re.split(r",|;|\band\b|\bet\b|\n", text)
    return [re.sub(r"^[-*+]\s+", "", p).strip() for p in parts if p.strip(" -*+")]


def _names_in(section: Section, name: str, what: str) -> list[str]:
    """The names listed in an Authors or Services section, each short enough to store."""
    names = _list_of_names(section.text)
    for item in names:
        line = next((n for n, t in section.lines if item in t), section.line)
        _check_length(item, PostMortem, name, what, line)
    return names


def _single_value(section: Section, what: str) -> tuple[int, str]:
    lines = section.content_lines()
    if not lines:
        raise MarkdownError(f"The {what} section is empty.", section.line)
    return lines[0][0], " ".join(t.strip() for _, t in lines)


def parse(text: str, *, title: str | None = None) -> ParsedPostMortem:
    """Read a post-mortem page. ``title`` is used when the page has none."""
    lines = _check_markdown(text)
    title_heading, sections = _split_sections(lines)
    found_title = _title_from_heading(title_heading[1]) if title_heading else None
    parsed = ParsedPostMortem(
        title="",
        fields={},
        author_names=[],
        team_name=None,
        impacts=[],
        root_causes=[],
        timeline=[],
        actions=[],
        extra_sections=[],
    )
    known = [s for s in sections if s.key]
    if not known:
        raise MarkdownError(
            "No post-mortem section found: expected headings such as '### Summary', "
            "'### Impacts', '### Root Causes' or '### Actions' (or their French names)."
        )
    seen: dict[str, int] = {}
    last_known = 0
    for section in sections:
        if section.key is None:
            heading = _check_length(
                section.heading, ExtraSection, "heading", "The heading", section.line
            )
            parsed.extra_sections.append(
                {"heading": heading, "body": section.text, "position": last_known}
            )
            continue
        if section.key in seen:
            raise MarkdownError(
                f"The section '{section.heading}' appears twice (first on line "
                f"{seen[section.key]}).",
                section.line,
            )
        seen[section.key] = section.line
        last_known = SECTIONS.index(section.key) + 1

    by_key = {s.key: s for s in known}
    if "title" in by_key:
        found_title = _single_value(by_key["title"], "Title")[1]
    found_title = found_title or (title or "").strip()
    if not found_title:
        where = title_heading[0] if title_heading else 1
        heading = f" '{title_heading[1]}'" if title_heading else ""
        raise MarkdownError(
            f"The post-mortem has no title: its first heading{heading} does not name the "
            "incident. Write it as '## POST MORTEM: <title>', add a '### Title' section, "
            "or give a title with the file.",
            where,
        )
    if len(found_title) > 200:
        raise MarkdownError(
            "The title is longer than 200 characters.", title_heading[0] if title_heading else None
        )
    parsed.title = found_title
    fields = parsed.fields

    day: dt.date | None = None
    if "date" in by_key:
        number, value = _single_value(by_key["date"], "Date")
        day = parse_date(value, number, "Date")
        fields["written_on"] = day
    if "authors" in by_key:
        parsed.author_names = _names_in(by_key["authors"], "external_authors", "The author")
    if "status" in by_key:
        number, value = _single_value(by_key["status"], "Status")
        status = POSTMORTEM_STATUS_BY_WORD.get(_fold(value))
        if status is None:
            raise MarkdownError(
                f"Status '{value}' is not one of Draft, In review, Published.", number
            )
        fields["status"] = status
    if "severity" in by_key:
        number, value = _single_value(by_key["severity"], "Severity")
        m = re.fullmatch(r"(?:sev)?\s*([1-4])", value.strip(), re.IGNORECASE)
        if not m:
            raise MarkdownError(f"Severity '{value}' is not one of SEV1, SEV2, SEV3, SEV4.", number)
        fields["severity"] = Severity(f"sev{m.group(1)}")
    if "team" in by_key:
        number, value = _single_value(by_key["team"], "Team")
        parsed.team_name = _check_length(value, Team, "name", "The team", number)
    if "services" in by_key:
        fields["services"] = _names_in(by_key["services"], "services", "The service")
    if "when" in by_key:
        fields.update(_parse_when(by_key["when"], day))
    for key in ("summary", "trigger", "resolution", "detection", "lessons_learned"):
        if key in by_key:
            fields[key] = by_key[key].text
    if "impacts" in by_key:
        parsed.impacts = _parse_impacts(by_key["impacts"])
    if "root_causes" in by_key:
        parsed.root_causes = _parse_root_causes(by_key["root_causes"])
    if "timeline" in by_key:
        # A bare "12:05" happened on the incident's day; the Date section is the
        # day the page was written, usually the day after.
        parsed.timeline = _parse_timeline(by_key["timeline"], _day_of(fields) or day)
    if "actions" in by_key:
        parsed.actions, before = _parse_actions(by_key["actions"])
        if any(t.strip() for _, t in before):
            parsed.extra_sections.append(
                {
                    "heading": by_key["actions"].heading + " (notes)",
                    "body": "\n".join(t for _, t in before).strip("\n"),
                    "position": SECTIONS.index("actions"),
                }
            )
    return parsed


def _day_of(fields: dict[str, Any]) -> dt.date | None:
    started = fields.get("started_at")
    return timezone.localtime(started).date() if started else None


# ---------------------------------------------------------------- writing


def _format_number(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def _format_date(day: dt.date) -> str:
    return f"{day.day} {_MONTH_NAMES[day.month - 1]} {day.year}"


def _format_datetime(value: dt.datetime) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M")


def impact_line(label: str, value: Decimal | None, unit: str) -> str:
    """An impact as one line: the label as written when it already holds the figure."""
    if value is None:
        return label
    m = _NUMBER.search(label)
    if m and _parse_number(m.group(1)) == value:
        return label
    figure = _format_number(value)
    if unit:
        figure += unit if unit == "%" else f" {unit}"
    return f"{label}: {figure}"


def export(pm: PostMortem, *, language: str = "en") -> str:
    """The post-mortem as Markdown, in the classic order."""
    names = HEADINGS.get(language, HEADINGS["en"])
    extras: dict[int, list[Any]] = {}
    for extra in pm.extra_sections.all():
        extras.setdefault(extra.position, []).append(extra)
    blocks: list[str] = [f"## POST MORTEM: {pm.title}"]

    def emit(key: str, body: str | None) -> None:
        if body is not None and body.strip():
            blocks.append(f"### {names[key]}\n{body.rstrip()}")

    def emit_extras(position: int) -> None:
        for extra in extras.get(position, []):
            if extra.heading:
                blocks.append(f"### {extra.heading}\n{extra.body}".rstrip())
            else:
                blocks.append(extra.body.rstrip())

    authors = [u.get_full_name() or u.get_username() for u in pm.authors.all()]
    authors += list(pm.external_authors)
    when = [
        (label, getattr(pm, name))
        for name, label in (
            ("started_at", "Started"),
            ("detected_at", "Detected"),
            ("resolved_at", "Resolved"),
            ("ended_at", "Ended"),
        )
        if getattr(pm, name)
    ]
    bodies: dict[str, str | None] = {
        "title": None,
        "date": _format_date(pm.written_on) if pm.written_on else None,
        "authors": ", ".join(authors),
        "status": POSTMORTEM_STATUS_WORD[PostMortemStatus(pm.status)],
        "severity": Severity(pm.severity).label,
        "team": pm.team.name if pm.team is not None else None,
        "services": ", ".join(pm.services),
        "when": "\n".join(f"{label}: {_format_datetime(value)}" for label, value in when),
        "summary": pm.summary,
        "impacts": _export_impacts(pm),
        "root_causes": "\n\n".join(
            (f"Category: {c.category}\n" if c.category else "") + c.description
            for c in pm.root_causes.all()
        ),
        "trigger": pm.trigger,
        "resolution": pm.resolution,
        "detection": pm.detection,
        "timeline": "\n".join(
            f"- {_format_datetime(t.occurred_at)} — {t.text}" for t in pm.timeline.all()
        ),
        "actions": "\n\n".join(_export_action(a) for a in pm.actions.all()),
        "lessons_learned": pm.lessons_learned,
    }
    emit_extras(0)
    for index, key in enumerate(SECTIONS, start=1):
        emit(key, bodies[key])
        emit_extras(index)
    return "\n\n".join(blocks) + "\n"


def _export_impacts(pm: PostMortem) -> str:
    groups: list[tuple[str, list[str]]] = []
    for impact in pm.impacts.all():
        line = "- " + impact_line(impact.label, impact.value, impact.unit)
        if groups and groups[-1][0] == impact.window:
            groups[-1][1].append(line)
        else:
            groups.append((impact.window, [line]))
    return "\n\n".join(
        (f"{window}:\n" if window else "") + "\n".join(lines) for window, lines in groups
    )


def _export_action(action: Any) -> str:
    lines = [f"**Action {action.number} ({action.kind}): {action.title}**"]
    if action.description:
        lines.append(action.description)
    if action.owner_display:
        lines.append(f"Owner: {action.owner_display}")
    if action.due_date:
        lines.append(f"Due: {action.due_date.isoformat()}")
    if action.ticket_url:
        lines.append(f"Ticket: {action.ticket_url}")
    lines.append("")
    lines.append(f"Status: {ACTION_STATUS_WORD[ActionStatus(action.status)]}")
    if action.done_at:
        lines.append(f"Done at: {_format_datetime(action.done_at)}")
    return "\n".join(lines)
