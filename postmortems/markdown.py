"""Post-mortems as wiki Markdown: the classic structure, in English or French.

    ## POST MORTEM: <title>
    ### Date / Authors / Status / Severity / Team / Services / When
    ### Summary / Impacts / Root Causes / Trigger / Resolution / Detection
    ### Timeline / Actions / Lessons learned

``parse`` reads a page whatever its house style (the structure from ``wikidoc``, a
CommonMark parser; the mapping to fields here: sections by meaning, tables, bold labels,
front matter, forgiving words) into plain data, with every guess in ``notes``; it
raises ``MarkdownError`` listing every problem and its line, and under ``strict`` any
guess is a problem. ``export`` writes the classic structure back, in the language asked.
Sections the parser does not know are kept verbatim and written back where they stood.
No database access besides looking up users and teams by name.
"""

from __future__ import annotations

import codecs
import datetime as dt
import difflib
import re
import unicodedata
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import Field, Model
from django.utils import timezone

from . import wikidoc
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
    "date": [
        "date", "incident date", "date of incident", "date of the incident", "date de l incident",
    ],
    "authors": [
        "authors", "author", "auteurs", "auteur", "auteur(s)", "redacteurs", "author(s)",
        "written by", "prepared by", "redige par", "redaction", "postmortem owner", "redacteur",
        "redactrice", "posted by",
        "post mortem owner",
    ],
    "status": ["status", "statut", "etat"],
    "severity": [
        "severity", "severite", "gravite", "sev", "incident severity", "priority", "priorite",
        "criticite", "severity level", "niveau de gravite",
    ],
    "team": ["team", "equipe", "owning team", "equipe responsable"],
    "services": [
        "services", "service", "affected services", "services affected", "services impactes",
        "services concernes", "impacted services", "systems affected",
    ],
    "when": [
        "when", "quand", "incident window", "fenetre", "incident duration", "duration",
        "duree", "duree de l incident",
    ],
    "summary": [
        "summary", "resume", "synthese", "executive summary", "overview", "tl;dr", "tldr",
        "what happened", "ce qui s est passe", "description", "incident summary", "issue",
        "the issue", "problem", "probleme", "le probleme", "incident description",
    ],
    "impacts": [
        "impacts", "impact", "impact overview", "customer impact", "user impact",
        "impact client", "impact utilisateurs", "consequences",
    ],
    "root_causes": [
        "root causes", "root cause", "root cause(s)", "root cause analysis", "causes racines",
        "cause racine", "causes", "cause", "analyse des causes", "why it happened",
        "contributing factors", "facteurs contributifs",
    ],
    "trigger": ["trigger", "declencheur", "element declencheur", "triggers"],
    "resolution": [
        "resolution", "resolution and recovery", "recovery", "fix",
        "resolution et retablissement", "retablissement",
    ],
    "detection": [
        "detection", "how we found out", "how it was detected", "detection and response",
        "detection et reponse",
    ],
    "timeline": [
        "timeline", "chronologie", "timeline (all times utc)", "detailed timeline",
        "deroule", "deroulement", "sequence of events", "chronology", "incident timeline",
        "timeline of events", "deroule de l incident", "deroulement de l incident",
        "chronologie de l incident", "chronologie des evenements",
    ],
    "actions": [
        "actions", "action items", "action item", "plan d action", "actions correctives",
        "follow ups", "follow-ups", "followups", "follow up", "next steps", "corrective actions",
        "remediation items", "to do", "todo", "suites", "actions a mener", "plan d actions",
        "remediation", "remediations", "remediation steps", "follow up actions",
        "what we re doing about it", "what we are doing about it", "what we re doing",
        "what we are doing", "what we will do", "what we re changing", "what we are changing",
        "how we re fixing it", "preventing recurrence", "prevention", "mesures correctives",
        "ce que nous faisons", "ce que nous allons faire", "prochaines etapes",
    ],
    "lessons_learned": [
        "lessons learned", "lessons learnt", "lessons", "lecons apprises", "enseignements",
        "lecons", "retour d experience", "what went well", "what went wrong",
        "where we got lucky", "ce qui a bien fonctionne", "ce qui n a pas fonctionne",
        "ce qui a bien marche", "ce qui a mal marche", "points positifs", "points a ameliorer",
        "ou nous avons eu de la chance", "what can be improved", "what could be improved",
        "what didn t go so well", "what didn t go well", "how d we do", "areas for improvement",
        "ce qui peut etre ameliore", "axes d amelioration",
    ],
}  # fmt: skip
SECTION_BY_NAME = {_fold(alias): key for key, names in _SECTION_ALIASES.items() for alias in names}
# "2. Chronologie", "IV - Impact", "A) Root cause": numbered headings, as Word and
# Confluence outlines write them.
_HEADING_NUMBER = re.compile(r"^(?:\d+(?:\.\d+)*|[ivxlc]+|[a-h])\s*[.)\-–—:]\s*|^\d+\s+(?=\D)")


def section_key(heading: str) -> str | None:
    """The section a heading or label names, whatever its numbering, emoji or final '?'
    ("2. Chronologie", "How'd We Do?", "Timeline (UTC)", "📉 Impact")."""
    folded = _fold(_plain(heading))
    if folded in SECTION_BY_NAME:
        return SECTION_BY_NAME[folded]
    bare = _HEADING_NUMBER.sub("", folded, count=1)
    bare = re.sub(r"^[^\w(]+", "", bare)
    bare = re.sub(r"[\s?!.:]+$", "", bare).strip()
    if bare in SECTION_BY_NAME:
        return SECTION_BY_NAME[bare]
    # "Timeline (UTC)", "Chronologie (heure de Paris)"; never "Root Causes (notes)", the
    # text an export keeps beside a field under a heading of its own.
    unbracketed = re.sub(
        r"\s*\((?:[^)]*\b(?:utc|gmt|z|cet|cest|[pmce][sd]t|times?|heures?|heure de [^)]+|"
        r"local|fuseau)\b[^)]*)\)$",
        "",
        bare,
    ).strip()
    return SECTION_BY_NAME.get(unbracketed) if unbracketed != bare else None


_GENERIC_TITLES = {
    "post mortem", "postmortem", "post mortem report", "incident report", "retex",
    "incident", "incident review", "rapport d incident", "compte rendu d incident",
}  # fmt: skip

_STATUS_WORDS = {
    PostMortemStatus.DRAFT: ["draft", "brouillon", "wip", "work in progress", "en redaction"],
    PostMortemStatus.IN_REVIEW: [
        "in review",
        "review",
        "en relecture",
        "en revue",
        "a relire",
        "under review",
        "pending review",
        "a valider",
    ],
    PostMortemStatus.PUBLISHED: [
        "published",
        "publie",
        "final",
        "complete",
        "completed",
        "closed",
        "done",
        "termine",
        "clos",
        "valide",
        "approved",
        "finalise",
    ],
}
POSTMORTEM_STATUS_BY_WORD = {_fold(w): k for k, ws in _STATUS_WORDS.items() for w in ws}
POSTMORTEM_STATUS_WORD = {
    PostMortemStatus.DRAFT: "Draft",
    PostMortemStatus.IN_REVIEW: "In review",
    PostMortemStatus.PUBLISHED: "Published",
}

_ACTION_STATUS_WORDS = {
    ActionStatus.TODO: [
        "to do",
        "todo",
        "a faire",
        "open",
        "ouvert",
        "not started",
        "planned",
        "prevu",
        "planifie",
        "scheduled",
        "backlog",
    ],
    ActionStatus.TO_DEBATE: [
        "to debate",
        "a debattre",
        "to discuss",
        "a discuter",
        "proposal",
        "proposed",
        "proposition",
    ],
    ActionStatus.IN_PROGRESS: ["in progress", "en cours", "doing", "started", "ongoing", "wip"],
    ActionStatus.DONE: [
        "done",
        "fait",
        "termine",
        "closed",
        "ferme",
        "fixed",
        "complete",
        "completed",
        "resolved",
        "resolu",
        "x",
    ],
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
    ActionKind.INVESTIGATE: [
        "investigate",
        "investiguer",
        "enqueter",
        "analyser",
        "investigation",
        "analyse",
    ],
    ActionKind.MITIGATE: ["mitigate", "attenuer", "mitiger", "mitigation", "attenuation"],
    ActionKind.REPAIR: ["repair", "fix", "reparer", "corriger", "correction", "correctif"],
    ActionKind.DETECT: ["detect", "detecter", "detection", "monitoring", "alerting", "supervision"],
    ActionKind.PREVENT: ["prevent", "prevenir", "eviter", "prevention"],
    ActionKind.PROCESS: ["process", "processus", "procedure"],
}
ACTION_KIND_BY_WORD = {_fold(w): k for k, ws in _ACTION_KIND_WORDS.items() for w in ws}

_FIELD_WORDS = {
    "status": ["status", "statut", "etat"],
    "owner": ["owner", "responsable", "proprietaire", "porteur", "assignee"],
    "due_date": ["due", "due date", "echeance", "date limite", "deadline"],
    "ticket_url": ["ticket", "bug", "issue", "jira", "lien"],
    "done_at": ["done at", "done on", "fait le", "termine le"],
    "category": ["category", "categorie"],
    "started_at": [
        "started",
        "start",
        "debut",
        "started at",
        "start time",
        "incident start",
        "impact start",
        "debut de l incident",
        "debut de l impact",
        "heure de debut",
    ],
    "ended_at": [
        "ended",
        "end",
        "fin",
        "ended at",
        "end time",
        "incident end",
        "impact end",
        "fin de l incident",
        "fin de l impact",
        "heure de fin",
    ],
    "detected_at": [
        "detected",
        "detected at",
        "detecte",
        "detection",
        "detection time",
        "heure de detection",
        "first alert",
    ],
    "resolved_at": [
        "resolved",
        "resolved at",
        "resolu",
        "resolution",
        "mitigated",
        "mitigated at",
        "attenue",
        "retablissement",
    ],
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
_FIELD_LINE = re.compile(r"^\s*(?:[-*]\s+)?(?P<name>[^:\n]{2,20}?)\s*::?\s*(?P<value>.*?)\s*$")
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
    """A file that cannot be read as a post-mortem; ``line`` is 1-based or None.

    `problems` lists every problem found (one or more): a page is read to the end and
    its problems are reported together."""

    def __init__(self, message: str, line: int | None = None):
        self.message = message
        self.line = line
        self.problems: list[MarkdownError] = [self]
        super().__init__(f"line {line}: {message}" if line else message)

    @classmethod
    def of(cls, problems: list[MarkdownError]) -> MarkdownError:
        if len(problems) == 1:
            return problems[0]
        ordered = sorted(problems, key=lambda p: p.line or 0)
        error = cls(
            f"{len(problems)} problems: "
            + " ".join((f"Line {p.line}: {p.message}" if p.line else p.message) for p in ordered),
            ordered[0].line,
        )
        error.problems = ordered
        return error


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
    front_matter: bool = False  # a key of the YAML front matter

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
    # Each guess the reader made (a typo read as a status, a title taken from the file
    # name...): shown with the import, refused under strict.
    notes: list[str] = field(default_factory=list)


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
    return lines


# `**Summary:** text` or `**Status**: done`: a section written as a bold label.
_BOLD_FIELD = re.compile(
    r"^\s*(?:[-*+]\s+)?\*\*(?P<name>[^*\n]{2,40}?)\s*:?\s*\*\*\s*:?\s*(?P<rest>.*)$"
)
_WHOLE_BOLD = re.compile(r"^\s*(?:\*\*|__)(?P<text>[^*_\s][^*_]{2,198}?)(?:\*\*|__)\s*$")
# `Gravité : critique` before the first section: a one-line field.
# `Severity:: SEV-2` (Dokuwiki, Obsidian and Logseq properties) too.
_META_LINE = re.compile(r"^\s*(?:[-*+]\s+)?(?P<name>[^:*#|<\n]{2,30}?)\s*::?\s*(?P<rest>\S.*)$")
# A Pandoc or PHP Markdown Extra definition: `Severity` then `: SEV-2` on the next line.
_DEFINITION = re.compile(r"^:\s+(?P<rest>\S.*)$")
_HTML_TABLE = re.compile(r"<table\b.*?</table>", re.IGNORECASE | re.DOTALL)
_HTML_ROW = re.compile(r"<tr\b[^>]*>(?P<cells>.*?)</tr>", re.IGNORECASE | re.DOTALL)
_HTML_CELL = re.compile(r"<t(?P<tag>[dh])\b[^>]*>(?P<text>.*?)</t[dh]>", re.IGNORECASE | re.DOTALL)
_TIME_FIELDS = ("started_at", "ended_at", "detected_at", "resolved_at")
_ONE_LINE_KEYS = ("title", "date", "status", "severity", "team", "authors", "services")


def _front_matter_sections(doc: wikidoc.Document) -> list[Section]:
    """Known keys of the YAML front matter, as one-line sections on its first line."""
    if doc.front_matter_lines is None:
        return []
    sections = []
    line = doc.front_matter_lines[0] + 1
    times: list[tuple[int, str]] = []
    items = list(doc.front_matter.items())
    for name, value in items:
        if isinstance(value, dict):
            # "incident: {started: …, resolved: …}", "meta: {severity: …}": the nested keys
            # are read as if they stood at the top.
            items += [(str(k), v) for k, v in value.items() if not isinstance(v, dict)]
            continue
        key = section_key(str(name))
        if value in (None, ""):
            continue
        if isinstance(value, list):
            text = ", ".join(str(v) for v in value)
        elif isinstance(value, dt.datetime | dt.date):
            text = value.isoformat()
        else:
            text = str(value)
        if key is None and FIELD_BY_WORD.get(_fold(str(name))) in _TIME_FIELDS:
            # "started: 2024-04-22 08:40 UTC": one line of the incident's times.
            times.append((line, f"{name}: {text}"))
            continue
        if key is not None:
            sections.append(Section(key, str(name), line, [(line, text)], front_matter=True))
    if times and not any(s.key == "when" for s in sections):
        sections.append(Section("when", "When", line, times, front_matter=True))
    return sections


def _split_sections(
    lines: list[str], doc: wikidoc.Document
) -> tuple[tuple[int, str] | None, list[Section]]:
    """The title heading (line, text) and the sections under it.

    A heading names a known section by its words (in English or French, see
    _SECTION_ALIASES), at any level; an unknown heading at the level of the sections is
    a section of its own, kept as text; a deeper unknown heading (a day of the timeline,
    "What went well" under Lessons learned) stays inside the section above it. A bold
    label (`**Summary:** …`) and, before the first section, a `Severity: …` line start a
    known section too."""
    skip = set(doc.code_lines)
    if doc.front_matter_lines:
        skip.update(range(doc.front_matter_lines[0], doc.front_matter_lines[1] + 1))
    table_lines = {n for t in doc.tables for n in range(t.line, t.end + 1)}
    headings = [(n, lvl, text, "") for n, lvl, text in doc.headings]
    title: tuple[int, str] | None = None
    if headings and section_key(headings[0][2]) is None:
        title = (headings[0][0], headings[0][2])
        headings = headings[1:]
    if title is None:
        # A page without headings (a Google Docs or Word export) whose first line is all
        # bold names the incident there: "**Incident report: search API memory leak**".
        first = next(
            ((n, text) for n, text in enumerate(lines, start=1) if text.strip() and n not in skip),
            None,
        )
        whole = _WHOLE_BOLD.match(first[1]) if first else None
        if (
            first
            and whole
            and first[0] < min((n for n, *_ in headings), default=len(lines) + 1)
            and section_key(whole.group("text")) is None
        ):
            title = (first[0], whole.group("text").strip())
            skip.add(first[0])
    base = min((lvl for _, lvl, _, _ in headings), default=99)
    first_section = min((n for n, *_ in headings), default=len(lines) + 1)
    heading_lines = {n for n, *_ in headings}
    starts: dict[int, tuple[int, str, str]] = {}  # line -> (level, heading, first text)
    for n, lvl, text, rest in headings:
        starts[n] = (lvl, text, rest)
    markup: set[int] = set()
    for table in doc.tables:
        # "| Severity | SEV1 |" rows of a table above the first section: one field a row.
        rows = [(table.line, table.header), *table.rows]
        if table.line > first_section or len(table.header) != 2:
            continue
        if not any(section_key(r[0]) in _ONE_LINE_KEYS for _, r in rows):
            continue
        for number, cells in rows:
            if len(cells) == 2 and (number != table.line or section_key(cells[0]) is not None):
                starts[number] = (99, _plain(cells[0]), _plain(cells[1]))
        skip.update(n for n in range(table.line, table.end + 1) if n not in starts)
        if table.line not in starts and _fold(" ".join(map(_plain, table.header))) in _KV_HEADERS:
            # "| Field | Value |" or an empty header, and the rule under it: markup.
            markup.update((table.line, table.line + 1))
    # Lines whose text went into a field: an HTML table's markup around its rows, a
    # definition's ': value'.
    consumed = _html_fields(lines, first_section, starts) | doc.heading_rest | markup
    skip |= consumed
    for number, line in enumerate(lines, start=1):
        if number in skip or number in table_lines or number in heading_lines:
            continue
        bold = _BOLD_FIELD.match(line)
        bold_key = section_key(bold.group("name")) if bold else None
        if bold and bold_key and (bold_key not in _ONE_LINE_KEYS or number < first_section):
            starts[number] = (99, bold.group("name").strip(), bold.group("rest"))
            continue
        if (
            bold
            and number < first_section
            and (re.match(r"^\s*[-*+]\s", line) or starts.get(number - 1, (0,))[0] == 99)
        ):
            # "- **Incident commander:** Rafael", or "**Rédacteur :** Claire" under
            # "**Statut :** Publié": a field of the header, kept as text, never glued to
            # the value above.
            starts[number] = (99, bold.group("name").strip(), bold.group("rest"))
            continue
        meta = _META_LINE.match(line)
        if meta and number < first_section and section_key(meta.group("name")) in _ONE_LINE_KEYS:
            starts[number] = (99, meta.group("name").strip(), meta.group("rest"))
            continue
        if meta and number < first_section and starts.get(number - 1, (0,))[0] == 99:
            # "Owner: Alice" under "Date: …" in one header block (a Notion or Google Docs
            # page): a field of its own, kept as text, never glued to the value above.
            starts[number] = (99, meta.group("name").strip(), meta.group("rest"))
            continue
        definition = _DEFINITION.match(line)
        name = lines[number - 2].strip() if number >= 2 else ""
        if (
            definition
            and number < first_section
            and section_key(name) in _ONE_LINE_KEYS
            and number - 1 not in starts
        ):
            starts[number - 1] = (99, name, definition.group("rest"))
            consumed.add(number)
    sections: list[Section] = []
    current: Section | None = None
    level = 99
    preamble: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if title and number == title[0]:
            continue
        if number in consumed:
            continue
        if doc.front_matter_lines and number <= doc.front_matter_lines[1]:
            continue
        if number in starts:
            lvl, heading, rest = starts[number]
            key = section_key(heading)
            inside = (
                current is not None
                and lvl != 99
                and lvl > level
                and (key is None or key == current.key)
            )
            if not inside and (key is not None or lvl <= base or lvl == 99):
                current = Section(key, heading, number)
                level = lvl if lvl != 99 else base
                sections.append(current)
                if rest.strip():
                    current.lines.append((number, rest))
                continue
        if current is None:
            preamble.append((number, line))
        else:
            if number in starts and starts[number][0] != 99:
                # A sub-heading is kept one level below its section, as export writes
                # sections (###): "#### What went well" whatever the page's levels.
                depth = min(6, 3 + max(1, starts[number][0] - level))
                line = "#" * depth + " " + starts[number][1]
            current.lines.append((number, line))
    if any(t.strip() for _, t in preamble):
        # Text between the title and the first section: kept, never dropped.
        sections.insert(0, Section(None, "", preamble[0][0], preamble))
    return title, sections


_KV_HEADERS = {
    "", "field value", "key value", "property value", "champ valeur", "cle valeur",
    "propriete valeur", "attribute value", "item value", "information valeur",
}  # fmt: skip


def _html_fields(
    lines: list[str], first_section: int, starts: dict[int, tuple[int, str, str]]
) -> set[int]:
    """`<tr><td>Severity</td><td>S1</td></tr>` rows of an HTML table above the first
    section (a Confluence or Word export): one field a row, as a Markdown table's. The
    lines of such a table, now read."""
    text = "\n".join(lines[: first_section - 1])
    used: set[int] = set()
    for table in _HTML_TABLE.finditer(text):
        rows = []
        for row in _HTML_ROW.finditer(table.group(0)):
            cells = [
                (c.group("tag").lower(), _plain(re.sub(r"<[^>]+>", "", c.group("text"))))
                for c in _HTML_CELL.finditer(row.group("cells"))
            ]
            line = text.count("\n", 0, table.start() + row.start()) + 1
            rows.append((line, cells))
        fields = [
            (line, cells[0][1], cells[1][1])
            for line, cells in rows
            if len(cells) == 2 and cells[0][1] and cells[1][0] == "d"
        ]
        lines_of_rows = [line for line, _ in rows]
        if (
            not any(section_key(name) in _ONE_LINE_KEYS for _, name, _ in fields)
            or len(set(lines_of_rows)) != len(lines_of_rows)
            or any(len(cells) != 2 for _, cells in rows)
        ):
            continue
        for line, name, value in fields:
            starts[line] = (99, name, value)
        first = text.count("\n", 0, table.start()) + 1
        last = text.count("\n", 0, table.end()) + 1
        used.update(n for n in range(first, last + 1) if n not in starts)
    return used


def _title_from_heading(text: str) -> str | None:
    folded = _fold(text)
    if folded in _GENERIC_TITLES:
        return None
    for generic in (
        "POST MORTEM", "POST-MORTEM", "POSTMORTEM", "Post mortem", "Post-mortem", "Incident",
        "Incident report", "Rapport d'incident", "RETEX",
    ):  # fmt: skip
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


# Magnitudes written after a figure: 1.21B, 3k, 2 millions, 1,5 milliard.
_MAGNITUDE = re.compile(
    r"^\s?(?P<word>thousand|mille|millions?|milliards?|billions?|bn)\b|^(?P<letter>[kKMB])(?![A-Za-z])"
)
_MAGNITUDES = {
    "k": 10**3, "thousand": 10**3, "mille": 10**3, "m": 10**6, "million": 10**6,
    "millions": 10**6, "b": 10**9, "bn": 10**9, "billion": 10**9, "billions": 10**9,
    "milliard": 10**9, "milliards": 10**9,
}  # fmt: skip
# Units as people write them -> as Fixproof stores them.
_UNIT_NAMES = {
    "ms": "ms", "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "seconde": "s", "secondes": "s", "min": "min", "mins": "min", "minute": "min",
    "minutes": "min", "h": "h", "hour": "h", "hours": "h", "heure": "h", "heures": "h",
}  # fmt: skip
_SECONDS = {"ms": Decimal("0.001"), "s": Decimal(1), "min": Decimal(60), "h": Decimal(3600)}
# "from 850 ms to 14 s", "de 40 ms à 1,2 s", "94% -> 38%".
_FIGURE = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:,\d+)?|\d+(?:[.,]\d+)?"
_CHANGE = re.compile(
    r"(?:\bfrom\b|\bde\b|\bd['’]|\bpassed\b)?\s*(?P<a>" + _FIGURE + r")\s*(?P<ua>%|[^\W\d_]+)?"
    r"\s*(?:\bto\b|\bà\b|->|→|—>)\s*(?P<b>" + _FIGURE + r")(?![\d])",
    re.IGNORECASE,
)
_STOP_WORDS = {
    "of", "were", "was", "are", "is", "had", "have", "could", "did", "went", "en",
    "ont", "a", "sont", "ete", "de", "des", "du", "in", "on", "at", "for", "to",
    "the", "and", "et", "with", "avec", "par", "by", "still", "not", "pas", "lost",
}  # fmt: skip


def _unit_after(rest: str) -> str:
    """The unit right after a figure: a known unit (%, ms, GB...) or the thing counted,
    past "of 6,140" / "sur 1620": 'requests', 'dashboard tabs'."""
    known = _UNIT.match(rest)
    if known:
        return _UNIT_NAMES.get(known.group(1).lower(), known.group(1))
    rest = re.sub(r"^\s*(?:of|out of|sur|/)\s+\d[\d,. \u00a0\u202f]*", "", rest, flags=re.I)
    known = _UNIT.match(rest)
    if known:
        return _UNIT_NAMES.get(known.group(1).lower(), known.group(1))
    words = re.findall(r"[^\W\d_][\w-]*", rest[:60])
    if not words or not re.match(r"^\s*[^\W\d_]", rest) or _fold(words[0]) in _STOP_WORDS:
        return ""
    # "dashboard tabs", "month-end close jobs": the noun the first words qualify.
    if not words[0].endswith("s"):
        for k in (1, 2):
            if len(words) <= k or _fold(words[k]) in _STOP_WORDS:
                break
            if words[k].endswith("s"):
                return " ".join(words[: k + 1])
    return words[0]


def _figure(raw: str, rest: str) -> tuple[Decimal | None, str]:
    """A figure and what follows it: its magnitude applied, the rest after it."""
    value = _parse_number(raw.strip())
    magnitude = _MAGNITUDE.match(rest)
    if value is not None and magnitude:
        word = (magnitude.group("word") or magnitude.group("letter")).lower()
        value *= _MAGNITUDES[word]
        rest = rest[magnitude.end() :]
    return value, rest


def parse_impact(text: str, window: str, line: int | None = None) -> dict[str, Any]:
    """'in total 1,904 of 6,140 requests failed' -> value 1904, unit requests; '1.21B
    queries lost' -> 1210000000 queries; 'from 40 ms to 1,2 s' -> 1.2 s, before 0.04."""
    value = before = None
    unit = ""
    change = _CHANGE.search(text)
    m = _NUMBER.search(text)
    if change and _parse_number(change.group("a").strip()) is not None:
        after, after_rest = _figure(change.group("b"), text[change.end("b") :])
        first, first_rest = _figure(change.group("a"), text[change.end("a") :])
        unit = _unit_after(after_rest) or _unit_after(first_rest)
        unit_before = _unit_after(first_rest) or unit
        value = after
        if first is not None and unit_before in _SECONDS and unit in _SECONDS:
            before = (first * _SECONDS[unit_before] / _SECONDS[unit]).normalize()
            if before.as_tuple().exponent < -4 and value is not None:  # type: ignore[operator]
                # "from 2 s to 40 min": 0.0333… min would be rounded where it is stored;
                # 2400 s after 2 s is exact.
                value = (value * _SECONDS[unit] / _SECONDS[unit_before]).normalize()
                value = value.quantize(Decimal(1)) if value == value.to_integral() else value
                before, unit = first, unit_before
        elif first is not None and unit_before == unit:
            before = first
    elif m:
        value, rest = _figure(m.group(1), text[m.end() :])
        unit = _unit_after(rest)
    column = ImpactFigure._meta.get_field("value")
    limit = column.max_digits - column.decimal_places
    for figure in (value, before):
        if figure is not None and figure.adjusted() >= limit:
            raise MarkdownError(
                f"The figure {figure} is too large to store (at most {limit} digits before the "
                "decimal point).",
                line,
            )
    label = _check_length(text.strip(), ImpactFigure, "label", "The impact", line)
    unit = unit[: _max_length(ImpactFigure, "unit")]
    return {"label": label, "value": value, "value_before": before, "unit": unit, "window": window}


def _joined_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Lines with a wrapped sentence put back on one: an item's indented next line, or a
    next line that starts in lower case ("…went from 40 ms\n  to 1,2 s"), goes on to the
    line above, unless a blank line, a bullet, a heading or a "Window:" line parts them."""
    joined: list[tuple[int, str]] = []
    for number, line in lines:
        stripped = line.strip()
        above = joined[-1][1].strip() if joined else ""
        if (
            stripped
            and above
            and not _BULLET.match(line)
            and not stripped.startswith("#")
            and not above.endswith(":")
            and not above.startswith("#")
            and (stripped[0].islower() or (line[:1].isspace() and bool(_BULLET.match(above))))
        ):
            joined[-1] = (joined[-1][0], joined[-1][1].rstrip() + " " + stripped)
            continue
        joined.append((number, line))
    return joined


def _parse_impacts(section: Section) -> list[dict[str, Any]]:
    impacts: list[dict[str, Any]] = []
    window = ""
    for number, line in _joined_lines(section.lines):
        stripped = line.strip()
        if not stripped:
            continue
        bullet = _BULLET.match(line)
        heading = re.match(r"^#{1,6}\s+(?P<text>.+?)\s*#*$", stripped)
        if bullet:
            impacts.append(parse_impact(bullet.group("text"), window, number))
        elif heading:
            # "#### Customer impact" above its figures: their window, as "Customers:" is.
            window = _check_length(
                _plain(heading.group("text")).rstrip(" :"),
                ImpactFigure,
                "window",
                "The impact window",
                number,
            )
        elif stripped.endswith(":"):
            window = _check_length(
                stripped[:-1].strip(), ImpactFigure, "window", "The impact window", number
            )
        elif len(clauses := _figure_clauses(stripped)) > 1:
            # "Between 10:02 and 11:40, 6.5% of calls failed and p95 rose from 300 ms to
            # 7 s.": a paragraph telling two figures is two impacts.
            impacts += [parse_impact(clause, window, number) for clause in clauses]
        else:
            impacts.append(parse_impact(stripped, window, number))
    return impacts


def _root_cause_blocks(section: Section) -> list[dict[str, Any]]:
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


_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s+(?P<text>.*)$")
_INLINE_NUMBERS = re.compile(r"\((\d)\)\s+")


def _parse_root_causes(section: Section) -> tuple[list[dict[str, Any]], str]:
    """The causes, and the text around them (kept as notes). A section holding a list:
    the items of its last list are the causes ("What we think happened:" after the
    measurements), the rest is context. One paragraph numbering its causes inline —
    "(1) … (2) …" — gives one cause a number. Otherwise each block between blank lines
    is a cause, a 'Category:' line opening it."""
    lists: list[list[list[tuple[int, str]]]] = []
    current: list[list[tuple[int, str]]] | None = None
    in_list: set[int] = set()
    for number, line in section.lines:
        item = _ITEM.match(line)
        if item:
            if current is None:
                current = []
                lists.append(current)
            current.append([(number, item.group("text"))])
            in_list.add(number)
        elif current is not None and line.strip() and line[:1] in (" ", "\t"):
            current[-1].append((number, line.strip()))
            in_list.add(number)
        elif line.strip():
            current = None
    if lists:
        last = lists[-1]
        used = {n for item in last for n, _ in item}
        causes = [
            {"category": "", "description": "\n".join(t for _, t in item).strip()} for item in last
        ]
        context = "\n".join(t for n, t in section.lines if n not in used).strip("\n")
        return causes, context
    text = section.text
    marks = list(_INLINE_NUMBERS.finditer(text))
    if len(marks) >= 2 and [m.group(1) for m in marks] == [str(i + 1) for i in range(len(marks))]:
        parts = [
            text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)].strip()
            for i, m in enumerate(marks)
        ]
        return [{"category": "", "description": p} for p in parts], text[: marks[0].start()].strip()
    return _root_cause_blocks(section), ""


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
    # As a timeline writes it: "March 3rd, 2024 2:51 PM PDT", "14/03/2024 14h05",
    # "2024-05-14 09:05 UTC", "2 décembre 09:00".
    m = _TIMELINE_LINE.match(text)
    if (
        m
        and not m.group("text").strip()
        and (not m.group("month") or _fold(m.group("month")) in _MONTHS)
        and (not m.group("month2") or _fold(m.group("month2")) in _MONTHS)
    ):
        try:
            return _entry_time(m, day, line, day)
        except (MarkdownError, ValueError):
            pass
    raise MarkdownError(
        f"{what} '{text}' is not a time (expected 2026-03-13 12:02 or 12:02).", line
    )


_TIME_ZONES = {
    "utc": 0, "gmt": 0, "z": 0, "cet": 60, "cest": 120, "bst": 60, "wet": 0, "west": 60,
    "pst": -480, "pdt": -420, "est": -300, "edt": -240, "cst": -360, "cdt": -300,
    "mst": -420, "mdt": -360, "ist": 330, "jst": 540,
}  # fmt: skip
_TZ = (
    r"(?P<tz>UTC|GMT|Z|CEST|CET|BST|WEST|WET|PST|PDT|EST|EDT|CST|CDT|MST|MDT|IST|JST"
    r"|[+-]\d{2}:?\d{2})"
)
# A timeline line: an optional bullet or table cell, an optional date (2015-10-21,
# 21/10/2015, 2 décembre [2023]), a time (14:51, 17h15, 9:05 pm), an optional time zone,
# then what happened; bold around the time allowed (**06:27 UTC**:).
_TIMELINE_LINE = re.compile(
    r"^\s*(?:[-*+]\s+|\|\s*)?(?:\*\*|__)?\s*"
    r"(?:(?P<iso>\d{4}-\d{2}-\d{2})[ T,]*|(?P<dmy>\d{1,2}/\d{1,2}(?:/\d{4})?)[ ,]*(?:à\s+)?"
    r"|(?P<day>\d{1,2})(?:er)?\s+(?P<month>[^\W\d_]{3,10})\.?(?:\s+(?P<year>\d{4}))?"
    r"[ ,]*(?:à\s+)?"
    r"|(?P<month2>[^\W\d_]{3,10})\.?\s+(?P<day2>\d{1,2})(?:st|nd|rd|th)?,?(?:\s+(?P<year2>\d{4}))?"
    r"[ ,]*(?:at\s+)?"
    r"|(?P<year3>\d{4})\s+(?P<month3>[^\W\d_]{3,10})\.?\s+(?P<day3>\d{1,2})(?:st|nd|rd|th)?,?"
    r"[ ,]*(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})\s*(?:[:h]|\.(?=\d{2}\s*[ap]\.?m\b))\s*(?P<minute>\d{2})(?::\d{2}(?:\.\d+)?)?"
    r"\s*(?P<ampm>[ap]\.?m\b\.?)?"
    r"\s*" + _TZ + r"?\b\s*(?:\*\*|__)?\s*(?:[—–:|-]+\s*)?(?P<text>.*)$",
    re.IGNORECASE,
)
_TIMES_ARE = re.compile(
    r"\b(all times|times are|times in|heures (?:en|sont)|horaires|fuseau|time zone)\b", re.I
)
_DATE_IN_TEXT = re.compile(
    r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4}|\d{1,2}(?:er)?\s+[^\W\d_]{3,10}\.?\s+\d{4}"
    r"|[^\W\d_]{3,10}\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}"
)
_DAY_LINE = re.compile(r"^\s*(?:#{1,6}\s+|\*\*|__)(?P<day>[^*_#]+?)(?:\*\*|__)?\s*:?\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?[\s:|-]+\|?\s*$")
# What marks the incident's start, end and detection in a timeline's entries.
_START_MARKERS = (
    "outage begins", "outage starts", "incident begins", "incident starts", "impact begins",
    "impact starts", "start of the incident", "start of impact", "debut de l incident",
    "debut de l impact", "debut de la panne", "debut de l indisponibilite",
)  # fmt: skip
_END_MARKERS = (
    "outage ends", "incident ends", "impact ends", "end of the incident", "end of impact",
    "incident resolved", "service restored", "fully recovered", "fin de l incident",
    "fin de l impact", "fin de la panne", "retour a la normale", "service retabli",
)  # fmt: skip
_DETECT_MARKERS = (
    "detected", "detection", "alert fired", "alert triggered", "paged", "alerte",
    "detecte", "detection", "on call paged", "astreinte appelee", "first alert",
)  # fmt: skip
# The same said in other tenses and words ("alert fires", "pages the on-call", "incident
# mitigated", "l'astreinte est alertée"): patterns over the folded text.
_MARKER_PATTERNS = {
    "started_at": (
        r"\b(?:outage|incident|impact|degradation|panne)\s+(?:begins|began|starts|started)\b",
        r"\b(?:premiers?|first)\s+(?:erreurs?|errors?|timeouts?)\b",
        r"^debut (?:de la |de l |des |du )?(?:degradation|lenteurs?|erreurs?|ralentissement)\b",
    ),
    "ended_at": (
        r"\b(?:incident|outage|impact)\s+(?:mitigated|closed|over|ended|resolved)\b",
        r"\b(?:service|latency|error rate|errors?)\b.{0,30}\bback to (?:normal|baseline)\b",
        r"\ball clear\b|\bfin de l incident\b|\bincident clos\b|\bservice restaure\b",
        r"\bretour a la normale\b",
        r"\b(?:service|api|site|app|latency|traffic)\s+(?:recovers|recovered|is restored)\b",
    ),
    "detected_at": (
        r"\balerts?\b.{0,40}\b(?:fire[sd]?|firing|trigger(?:s|ed)?|went off|goes off|pages?d?)\b",
        # "Alert: billing error rate > 5 %", "PagerDuty alert for …": an entry that is one.
        r"^(?:[a-z]+\s+)?alerts?\b",
        r"\bpage[sd]?\s+(?:the\s+)?on\s?call\b|\bincident (?:declared|opened)\b",
        r"\bastreinte\s+(?:est\s+)?(?:alertee|appelee|prevenue)\b|\bincident declare\b",
    ),
}


def _timeline_day(text: str, reference: dt.date | None = None) -> dt.date | None:
    """The day a timeline heading names: '2015-10-21', 'Sunday, October 21', 'Mardi 2
    décembre' (the year from the page's date when it has none)."""
    bare = re.sub(
        r"^(?:[^\W\d_]+day|lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche),?\s+",
        "",
        text.strip(),
        flags=re.IGNORECASE,
    )
    try:
        return parse_date(bare, 0, "Day")
    except MarkdownError:
        pass
    m = re.fullmatch(r"(\d{1,2})(?:er)?\s+([^\W\d_]{3,10})\.?", bare) or re.fullmatch(
        r"([^\W\d_]{3,10})\.?\s+(\d{1,2})(?:st|nd|rd|th)?", bare
    )
    if m is None:
        return None
    number, month = (m.group(1), m.group(2)) if m.group(1).isdigit() else (m.group(2), m.group(1))
    if _fold(month) not in _MONTHS or reference is None:
        return None
    try:
        return _dated(number, month, None, reference, 0)
    except (MarkdownError, ValueError):
        return None


def _dated(
    day_of_month: str, month_name: str, year: str | None, reference: dt.date | None, line: int
) -> dt.date:
    month = _MONTHS[_fold(month_name)]
    if year:
        return dt.date(int(year), month, int(day_of_month))
    return _in_page_year(int(day_of_month), month, reference, f"{day_of_month} {month_name}", line)


def _in_page_year(
    day_of_month: int, month: int, reference: dt.date | None, written: str, line: int
) -> dt.date:
    """A date written without its year takes the page's: the latest such date not after
    the page was written ("2 décembre" on a page of 24 January is last December)."""
    if reference is None:
        raise MarkdownError(
            f"Timeline date '{written}' has no year, and the post-mortem has no Date to take "
            "it from.",
            line,
        )
    found = dt.date(reference.year, month, day_of_month)
    if found > reference + dt.timedelta(days=1):
        found = found.replace(year=reference.year - 1)
    return found


def _day_month(text: str, reference: dt.date | None, line: int) -> dt.date:
    """21/10/2015, or 02/06 in the page's year as _in_page_year takes it (day first, as in
    French and most of the world)."""
    numbers = [int(part) for part in text.split("/")]
    try:
        if len(numbers) == 3:
            return dt.date(numbers[2], numbers[1], numbers[0])
        return _in_page_year(numbers[0], numbers[1], reference, text, line)
    except MarkdownError:
        raise
    except ValueError:
        raise MarkdownError(f"Timeline date '{text}' is not a day/month date.", line) from None


def _entry_time(
    m: re.Match[str],
    day: dt.date | None,
    line: int,
    reference: dt.date | None = None,
    default_zone: str = "",
) -> dt.datetime:
    if m.group("iso"):
        day = dt.date.fromisoformat(m.group("iso"))
    elif m.group("dmy"):
        day = _day_month(m.group("dmy"), reference or day, line)
    elif m.group("day"):
        day = _dated(m.group("day"), m.group("month"), m.group("year"), reference or day, line)
    elif m.group("day2"):
        day = _dated(m.group("day2"), m.group("month2"), m.group("year2"), reference or day, line)
    elif m.group("day3"):
        day = _dated(m.group("day3"), m.group("month3"), m.group("year3"), reference or day, line)
    if day is None:
        raise MarkdownError(
            f"Timeline time '{m.group('hour')}:{m.group('minute')}' has no date, and the "
            "post-mortem has no Date to take it from.",
            line,
        )
    hour = int(m.group("hour"))
    if m.group("ampm"):
        hour = hour % 12 + (12 if m.group("ampm").lower().startswith("p") else 0)
    if hour > 23 or int(m.group("minute")) > 59:
        raise MarkdownError(f"Timeline time '{m.group(0).strip()[:20]}' is not a time.", line)
    naive = dt.datetime.combine(day, dt.time(hour, int(m.group("minute"))))
    if not m.group("tz") and "/" in default_zone:
        # "Chronologie (heure de Paris)": the zone's offset on that day, summer or winter.
        naive = dt.datetime.combine(day, dt.time(hour, int(m.group("minute"))))
        return timezone.make_aware(naive, zoneinfo.ZoneInfo(default_zone))
    tz_name = (m.group("tz") or default_zone).lower()
    if tz_name in _TIME_ZONES:
        tz: dt.tzinfo = dt.timezone(dt.timedelta(minutes=_TIME_ZONES[tz_name]))
    elif tz_name:
        sign = -1 if tz_name[0] == "-" else 1
        digits = tz_name[1:].replace(":", "")
        tz = dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    else:
        tz = timezone.get_current_timezone()
    return naive.replace(tzinfo=tz) if tz_name else timezone.make_aware(naive, tz)


_TIMELINE_HEADER = re.compile(
    r"^\s*\|?\s*(?:\*\*)?(?:time|timestamp|heure|horaire|date|when|quand)\b[^|]*\|"
    r"(?:\s*(?:time|heure|hour|horaire)\b[^|]*\|)?\s*(?:\*\*)?"
    r"(?:event|events|evenement|evenements|what happened|description|action|details?"
    r"|ce qui s est passe|quoi|fait|activity|activite|update|updates|notes?|comment"
    r"|message|observation|step|etape|entry)\b",
    re.IGNORECASE,
)


_DATE_TIME_CELLS = re.compile(
    r"^\s*\|\s*(?P<date>\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4})\s*\|"
    r"\s*(?P<time>\d{1,2}[:h]\d{2}(?::\d{2})?(?:\s*[ap]\.?m\.?)?(?:\s*[A-Z]{1,4})?)\s*\|"
)


def _parse_timeline(
    section: Section,
    day: dt.date | None,
    reading: _Reading,
    reference: dt.date | None = None,
    day_note: str = "",
) -> tuple[list[dict[str, Any]], str]:
    """Dated entries, and the lines before the first one (kept as text). Day headings
    ("### 2015-10-21", "**2 décembre**") date the entries under them. `day_note`: the
    guess to note when a bare time takes `day`."""
    entries: list[dict[str, Any]] = []
    before: list[str] = []
    # "Timeline (all times CET)": the heading gives the zone of the entries below.
    zone_in_heading = re.search(r"\(([^)]*)\)", section.heading)
    in_heading = (
        re.search(r"\b" + _TZ + r"\b", zone_in_heading.group(1)) if zone_in_heading else None
    )
    default_zone = in_heading.group("tz") if in_heading else ""
    if zone_in_heading and not default_zone:
        named = _fold(zone_in_heading.group(1))
        region = re.search(r"\b[A-Z][a-z]+/[A-Z][A-Za-z_]+\b", zone_in_heading.group(1))
        if region and region.group(0) in zoneinfo.available_timezones():
            default_zone = region.group(0)
        elif re.search(r"\bparis\b|heure francaise|french time", named):
            default_zone = "Europe/Paris"
    relative = _RelativeTimes(section, reference or day, reading)
    for number, line in section.content_lines():
        if _TABLE_RULE.match(line) and "|" in line:
            continue
        if relative.anchor(line, number, default_zone):
            # Kept as text with the lines before the first entry.
            before.append(line)
            continue
        if (entry := relative.entry(line, number)) is not None:
            if entry:
                entries.append(entry)
            continue
        heading = _DAY_LINE.match(line)
        if heading and (found := _timeline_day(heading.group("day"), reference or day)):
            day, day_note = found, ""
            continue
        if not entries and (_TIMES_ARE.search(line) or _TIMELINE_HEADER.match(_fold(_plain(line)))):
            # "All times are UTC, 12 June 2024." or a table's "| Time (UTC) | Event |":
            # the day and zone of the entries below.
            zone = re.search(r"\b" + _TZ + r"\b", line)
            default_zone = zone.group("tz") if zone else default_zone
            dated = _DATE_IN_TEXT.search(line)
            if dated and (found := _timeline_day(dated.group(0))):
                day, day_note = found, ""
            continue
        # "| 2024-11-29 | 09:40 | deploy |": a table giving the day and the time apart.
        line = _DATE_TIME_CELLS.sub(r"| \g<date> \g<time> |", line, count=1)
        # "### 2018 October 21 22:52 UTC" over the paragraphs that tell what happened then.
        m = _TIMELINE_LINE.match(re.sub(r"^\s*#{1,6}\s+", "", line))
        if (
            m
            and (not m.group("month") or _fold(m.group("month")) in _MONTHS)
            and (not m.group("month2") or _fold(m.group("month2")) in _MONTHS)
            and (not m.group("month3") or _fold(m.group("month3")) in _MONTHS)
        ):
            when = reading.attempt(_entry_time, m, day, number, reference, default_zone)
            if when is None:
                continue
            dated_entry = any(m.group(g) for g in ("iso", "dmy", "day", "day2", "day3"))
            if day_note and not dated_entry:
                reading.guess(day_note, number)
            day_note = ""
            if not dated_entry and entries and when < entries[-1]["occurred_at"]:
                # "23:55" then "00:30" with no day between them: the night went on. Only
                # from evening to morning: a timeline written newest first stays as is.
                later = when + dt.timedelta(days=1)
                if entries[-1]["occurred_at"].hour >= 18 and when.hour < 12:
                    reading.guess(
                        f"Timeline time '{m.group('hour')}:{m.group('minute')}' comes before "
                        f"the entry above it: read as the next day, {later.date().isoformat()}.",
                        number,
                        f"Timeline time '{m.group('hour')}:{m.group('minute')}' comes before "
                        "the entry above it: give its day (e.g. a '**2024-11-06**' line).",
                    )
                    when = later
            # A bare time below a dated entry is on that entry's day, as written (a
            # "5:40 PM PST" is still that day in Los Angeles).
            day = when.date()
            text = re.sub(r"\s*\|\s*$", "", m.group("text")).strip()
            text = re.sub(r"\s*\|\s*", " — ", text)
            entries.append({"occurred_at": when, "text": text})
        elif entries:
            # A continuation line belongs to the entry above it (its only text, under a
            # heading that is just the time).
            text = entries[-1]["text"]
            entries[-1]["text"] = f"{text}\n{line.strip()}" if text else line.strip()
        elif reading.strict:
            reading.problems.append(
                MarkdownError(
                    "A timeline line must start with a time: '- 12:02 — what happened' (also "
                    "'2015-10-21 14:51', '**06:27 UTC**:', '2 décembre 09:00', '17h15').",
                    number,
                )
            )
        else:
            before.append(line)
    if before:
        reading.guess(
            f"{len(before)} line(s) of the timeline have no time: kept as text.", section.line
        )
    return entries, "\n".join(before)


_RELATIVE = re.compile(
    r"^\s*(?:[-*+]\s+|\|\s*)?(?:\*\*|__)?\s*T\s*(?P<sign>[+-])\s*(?P<amount>\d+(?:[.,]\d+)?)"
    r"(?:\s*(?P<unit>min(?:utes?)?|mn|m|h(?:ours?|eures?)?|s(?:ec(?:onds?)?)?|d(?:ays?)?|j(?:ours?)?)"
    r"(?:\s*(?P<more>\d{1,2})\s*(?:min|mn|m)?)?)?\b\s*(?:\*\*|__)?\s*(?:[—–:|-]+\s*)?(?P<text>.*)$",
    re.IGNORECASE,
)
_RELATIVE_ANCHOR = re.compile(
    r"\bT\s*(?:\+\s*0|0)\b\s*(?:=|:|is|est|at|à|was)\s*(?P<when>[^)\n]+)", re.I
)
_RELATIVE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "j": 86400}


class _RelativeTimes:
    """'T+0', 'T+12 min', 'T+1h30' entries, timed from the moment the page gives T+0
    ('T+0 = 2024-09-18 10:00 UTC'), else from the incident's start."""

    def __init__(self, section: Section, day: dt.date | None, reading: _Reading) -> None:
        self.day, self.reading, self.section = day, reading, section
        self.start: dt.datetime | None = None

    def anchor(self, line: str, number: int, zone: str) -> bool:
        """Read T+0 from a line that gives it; True when the line says only that ('T+0 =
        2024-09-18 10:00 UTC'), no entry of its own."""
        m = _RELATIVE_ANCHOR.search(line)
        found = (
            _TIMELINE_LINE.match(re.sub(r"[).,;]+$", "", m.group("when").strip())) if m else None
        )
        if m is None or found is None:
            return False
        self.start = self.reading.attempt(_entry_time, found, self.day, number, self.day, zone)
        return not line[: m.start()].strip(" -*+|(_") and not found.group("text").strip()

    def entry(self, line: str, number: int) -> dict[str, Any] | None:
        """The entry a 'T+12 min' line gives; {} when it cannot be timed (a problem)."""
        m = _RELATIVE.match(line)
        if m is None:
            return None
        if self.start is None:
            self.reading.problems.append(
                MarkdownError(
                    f"Timeline time 'T{m.group('sign')}{m.group('amount')}' is relative, and "
                    "the page does not say when T+0 was: write e.g. 'T+0 = 2024-09-18 10:00 "
                    "UTC' above the timeline.",
                    number,
                )
            )
            return {}
        unit = _fold(m.group("unit") or "min")[0]
        seconds = float(m.group("amount").replace(",", ".")) * _RELATIVE_UNITS[unit]
        if m.group("more"):
            seconds += int(m.group("more")) * 60
        sign = -1 if m.group("sign") == "-" else 1
        return {
            "occurred_at": self.start + sign * dt.timedelta(seconds=seconds),
            "text": m.group("text").strip(),
        }


_PROSE_DAY = re.compile(
    r"(?P<iso>\d{4}-\d{2}-\d{2})|\b(?P<dmy>\d{1,2}/\d{1,2}/\d{4})"
    r"|\b(?P<d>\d{1,2})(?:er)?\s+(?P<m>[^\W\d_]{3,10})\.?(?:\s+(?P<y>\d{4}))?"
    r"|\b(?P<m2>[^\W\d_]{3,10})\.?\s+(?P<d2>\d{1,2})(?:st|nd|rd|th)?\b,?(?:\s+(?P<y2>\d{4}))?"
)
_CLOCK = r"\d{1,2}[:h]\d{2}(?:\s*[ap]\.?m\b\.?)?"
_PROSE_DATE = r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4}"
# "between 12:02 and 12:40 UTC", "de 14h05 à 15h20", "from 2024-05-14 09:05 UTC to
# 2024-05-14 11:40 UTC", "between 1:10 PM and 3:12 PM PST".
_PROSE_RANGE = re.compile(
    r"\b(?:between|from|de|entre|du)\s+(?:(?P<d1>" + _PROSE_DATE + r")[ T,]*(?:at\s+|à\s+)?)?"
    r"(?P<t1>" + _CLOCK + r")\s*(?:(?:UTC|GMT|Z|CES?T|[PMCE][SD]T|[+-]\d{2}:?\d{2})\s+)?"
    r"(?:and|to|until|à|et|au|–|—)\s+(?:(?P<d2>" + _PROSE_DATE + r")[ T,]*(?:at\s+|à\s+)?)?"
    r"(?P<t2>" + _CLOCK + r")\s*" + _TZ + r"?",
    re.IGNORECASE,
)
_PROSE_DETECT = re.compile(
    r"(?:alert|paged|page[ds]?\b|detect|détect|alerté|prévenu)[^.]{0,80}?\b(?:at|à)\s+(?P<t>"
    + _CLOCK
    + r")\s*"
    + _TZ
    + r"?",
    re.IGNORECASE,
)


def _prose_day(text: str, reference: dt.date | None) -> dt.date | None:
    """The first date a text names ('13 March', 'mardi 7 mai 2024', 'Oct 21, 2015')."""
    found = []
    for m in _PROSE_DAY.finditer(text):
        found.append((m.start(), m))
    for m in re.finditer(
        r"\b(?P<d>\d{1,2})(?:er)?\s+(?P<m>[^\W\d_]{3,10})\.?(?:\s+(?P<y>\d{4}))?", text
    ):
        found.append((m.start(), m))
    for _, m in sorted(found, key=lambda item: item[0]):
        groups = m.groupdict()
        try:
            if groups.get("iso"):
                return dt.date.fromisoformat(groups["iso"])
            if groups.get("dmy"):
                return dt.datetime.strptime(groups["dmy"], "%d/%m/%Y").date()
            if groups.get("d") and _fold(groups["m"]) in _MONTHS:
                return _dated(groups["d"], groups["m"], groups.get("y"), reference, 0)
            if groups.get("d2") and _fold(groups["m2"]) in _MONTHS:
                return _dated(groups["d2"], groups["m2"], groups.get("y2"), reference, 0)
        except (MarkdownError, ValueError):
            continue
    return None


def _at(day: dt.date, clock: str, zone: str | None) -> dt.datetime:
    m = re.match(r"(\d{1,2})[:h](\d{2})\s*(?:([ap])\.?m\.?)?", clock, re.IGNORECASE)
    if m is None:
        raise ValueError(clock)
    hour, minute = int(m.group(1)), int(m.group(2))
    if m.group(3):
        hour = hour % 12 + (12 if m.group(3).lower() == "p" else 0)
    naive = dt.datetime.combine(day, dt.time(hour, minute))
    if zone and zone.lower() in _TIME_ZONES:
        return naive.replace(tzinfo=dt.timezone(dt.timedelta(minutes=_TIME_ZONES[zone.lower()])))
    return timezone.make_aware(naive, timezone.get_current_timezone())


def _times_from_prose(
    fields: dict[str, Any],
    by_key: dict[str, Section],
    reference: dt.date | None,
    reading: _Reading,
    lead: str = "",
) -> None:
    """'On 13 March between 12:02 and 12:40' in the summary, 'paged the on-call at 14:54'
    in the detection: the incident's times when no When section or timeline gave them."""
    if reading.strict:
        return
    summary = by_key["summary"].text if "summary" in by_key else ""
    summary = f"{lead}\n\n{summary}" if lead else summary
    detection = by_key["detection"].text if "detection" in by_key else ""
    day = _prose_day(summary, reference)
    span = _PROSE_RANGE.search(summary)
    if span:
        # "On 14 February, between 09:12 and 10:47": the day told with the range, not the
        # date of a byline above it ("Posted on 16 February").
        paragraph = summary[max(0, summary.rfind("\n\n", 0, span.start())) : span.end()]
        day = _prose_day(paragraph, reference) or day
    if "started_at" not in fields and span and (day or span.group("d1")):
        try:
            first_day = _prose_day(span.group("d1"), None) if span.group("d1") else day
            last_day = _prose_day(span.group("d2"), None) if span.group("d2") else first_day
            if first_day is None or last_day is None:
                raise ValueError(span.group(0))
            started = _at(first_day, span.group("t1"), span.group("tz"))
            ended = _at(last_day, span.group("t2"), span.group("tz"))
        except ValueError:
            pass
        else:
            if ended >= started:
                fields["started_at"], fields["ended_at"] = started, ended
                reading.notes.append(
                    f"The incident's start and end are read from the summary: {span.group(0)}."
                )
    start = fields.get("started_at")
    day = start.date() if start else day
    if "detected_at" not in fields and day:
        for text in (detection, summary):
            found = _PROSE_DETECT.search(text)
            if found:
                try:
                    fields["detected_at"] = _at(day, found.group("t"), found.group("tz"))
                except ValueError:
                    continue
                reading.notes.append(f"The detection time is read from: '{found.group(0)}'.")
                break


# "p99 latency went from 350 ms to 9.8 s", "18% of requests failed": a figure told in a
# sentence of the summary.
_PROSE_FIGURE = re.compile(
    r"(?:\bfrom\s+|\bde\s+)"
    + _FIGURE
    + r"\s*(?:%|ms|s|min|h)\s+(?:to|à)\s+"
    + _FIGURE
    + r"\s*(?:%|ms|s|min|h)\b|"
    + _FIGURE
    + r"\s*%\s+(?:of|des|de)\s+[^\W\d_]",
    re.IGNORECASE,
)


def _figure_clauses(text: str, *, trim: bool = False) -> list[str]:
    """The clauses of a prose text that tell a figure, one a sentence or one a part of it
    joined by 'and' ('18% timed out and p99 went from 350 ms to 9.8 s' is two). `trim`:
    without the 'On 14 February, between 09:12 and 10:47,' that opens one (the text it
    came from keeps it)."""
    clauses = []
    prose = re.sub(r"[*_`]", "", text)
    for sentence in re.split(r"(?<=[.!?])\s+|\n\s*\n|\n(?=\s*(?:[-*+]|\d+[.)])\s)", prose):
        # Never at "between 10:02 and 11:40": that "and" joins two times.
        for clause in re.split(
            r";|,?\s+(?:and|et|while|alors que)\s+(?!\d{1,2}[:h.]\d{2})(?=[^,]*\d)", sentence
        ):
            clause = re.sub(r"^\s*(?:[-*+]|\d+[.)])\s+", "", clause).strip().rstrip(".")
            found = _PROSE_FIGURE.search(clause)
            cut = clause.rfind(", ", 0, found.start()) if found and trim else -1
            if found and cut >= 0 and re.search(r"\d", clause[:cut]):
                clause = clause[cut + 2 :]
            if found and len(clause) <= 200:
                clauses.append(clause)
    return clauses


def _impacts_from_prose(text: str, reading: _Reading) -> list[dict[str, Any]]:
    """The figures a page without an Impact section tells in its opening prose, each a
    guess that is noted; one a clause ('18% timed out and p99 went from 350 ms to 9.8 s'
    is two), the same figure told twice kept once."""
    impacts: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for clause in _figure_clauses(text, trim=True):
        impact = reading.attempt(parse_impact, clause, "")
        if impact is None or impact["value"] is None:
            continue
        same = (impact["value"], impact["unit"], impact["value_before"])
        if same in seen:
            continue
        seen.add(same)
        impacts.append(impact)
    if impacts:
        reading.guess(
            f"The page has no Impact section: {len(impacts)} impact(s) read from its prose ("
            + "; ".join(f"'{i['label']}'" for i in impacts)
            + ").",
            None,
        )
    return impacts


def _times_from_timeline(fields: dict[str, Any], timeline: list[dict[str, Any]]) -> None:
    """The incident's start, end and detection from markers in the timeline ("OUTAGE
    BEGINS", "alert fired"...), where the page gives no When section."""

    def first(
        markers: tuple[str, ...], name: str, entries: list[dict[str, Any]]
    ) -> dt.datetime | None:
        for entry in entries:
            text = _fold(entry["text"])
            if any(marker in text for marker in markers):
                return entry["occurred_at"]
        for entry in entries:
            text = _fold(entry["text"])
            if any(re.search(pattern, text) for pattern in _MARKER_PATTERNS[name]):
                return entry["occurred_at"]
        return None

    found = {
        "started_at": first(_START_MARKERS, "started_at", timeline),
        "ended_at": first(_END_MARKERS, "ended_at", list(reversed(timeline))),
        "detected_at": first(_DETECT_MARKERS, "detected_at", timeline),
    }
    for name, value in found.items():
        if value is not None and name not in fields:
            fields[name] = value
    start, end = fields.get("started_at"), fields.get("ended_at")
    if start and end and end < start:
        fields.pop("ended_at")


_WHEN_RANGE = re.compile(
    r"^\s*(?P<d1>\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4})?[ ,T]*(?P<t1>\d{1,2}[:h]\d{2})\s*"
    r"(?:\s*(?:–|—|-|to|à|→|->)\s*)(?P<d2>\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4})?[ ,T]*"
    r"(?P<t2>\d{1,2}[:h]\d{2})\s*" + _TZ + r"?\s*$",
    re.IGNORECASE,
)


def _when_range(line: str, number: int, day: dt.date | None) -> dict[str, Any] | None:
    """'2025-09-03, 13:12 – 15:47 UTC': the incident's start and end on one line."""
    m = _WHEN_RANGE.match(line)
    if m is None:
        return None
    zone = (m.group("tz") or "").lower()
    values = {}
    for name, d, t in (("started_at", "d1", "t1"), ("ended_at", "d2", "t2")):
        raw_day = m.group(d) or m.group("d1")
        on = parse_date(raw_day, number, "When") if raw_day else day
        if on is None:
            raise MarkdownError(f"When '{line.strip()}' has no date.", number)
        hour, minute = (int(x) for x in re.split(r"[:h]", m.group(t)))
        naive = dt.datetime.combine(on, dt.time(hour, minute))
        if zone in _TIME_ZONES:
            values[name] = naive.replace(
                tzinfo=dt.timezone(dt.timedelta(minutes=_TIME_ZONES[zone]))
            )
        else:
            values[name] = timezone.make_aware(naive, timezone.get_current_timezone())
    return values


def _parse_when(
    section: Section, day: dt.date | None, reading: _Reading
) -> tuple[dict[str, Any], list[str]]:
    """The incident's times, and the lines that hold none ("Duration: 2 h 35 min"), kept
    as text; a line with a time the reader cannot place is refused."""
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    kept: list[str] = []
    anchor = day
    content = section.content_lines()
    if len(content) == 1 and (found := _when_range(content[0][1], content[0][0], day)):
        return found, []
    for number, line in content:
        m = _FIELD_LINE.match(line)
        name = FIELD_BY_WORD.get(_fold(m.group("name"))) if m else None
        if m is None or name not in ("started_at", "ended_at", "detected_at", "resolved_at"):
            if not re.search(_CLOCK, line) and not reading.strict:
                kept.append(line)
                continue
            raise MarkdownError(
                "Expected 'Started:', 'Detected:', 'Resolved:' or 'Ended:' with a time.", number
            )
        values[name] = parse_datetime(m.group("value"), number, m.group("name"), anchor)
        lines[name] = number
        if name == "started_at":
            # "Detected: 12:10" below a full start time is on the incident's day,
            # not on the Date the page was written (in the zone it is written in).
            anchor = values[name].date()
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
    if kept:
        reading.guess(
            f"{len(kept)} line(s) of '{section.heading}' hold no time: kept as text.", section.line
        )
    return values, kept


_ACTION_COLUMNS = {
    "title": [
        "action", "action item", "action items", "item", "task", "tache", "titre", "title",
        "what", "description", "follow up", "mesure", "actions",
    ],
    "kind": ["type", "kind", "categorie", "category", "nature"],
    "owner": [
        "owner", "owners", "responsable", "assignee", "assigned to", "porteur", "qui", "who",
        "pilote",
    ],
    "status": ["status", "statut", "etat", "state", "avancement"],
    "ticket": ["bug", "ticket", "issue", "lien", "link", "jira", "tracking", "tickets"],
    "due": ["due", "due date", "echeance", "deadline", "date limite", "date", "pour le"],
}  # fmt: skip
_COLUMN_BY_NAME = {_fold(w): k for k, ws in _ACTION_COLUMNS.items() for w in ws}
_LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<url>https?://[^)\s]+)\)")
_URL = re.compile(r"https?://[^\s)>\]|]+")
# What a title says about an action's kind, when the page does not say.
_KIND_HINTS = (
    (
        ActionKind.DETECT,
        r"alert|monitor|dashboard|detect|surveill|supervis|metric|sonde|probe|tableau de bord",
    ),
    (
        ActionKind.PROCESS,
        r"runbook|process|procedure|review|train|document|communicat|playbook|revue|relecture"
        r"|formation|former |astreinte",
    ),
    (ActionKind.INVESTIGATE, r"investigat|analy|understand|find out|enqu|comprendre|root cause"),
    (
        ActionKind.PREVENT,
        r"prevent|test|validat|lint|guard|check|empech|eviter|canary|interdire|exiger|bloquer",
    ),
    (
        ActionKind.MITIGATE,
        r"limit|timeout|pool|rate|cache|scale|capacit|throttl|circuit|retry|plafonn|reduire",
    ),
)
_TASK = re.compile(r"^\[(?P<mark>[ xX])\]\s+")


def _plain(cell: str) -> str:
    """A cell's text without its Markdown: links as their text, no emphasis or code."""
    text = _LINK.sub(lambda m: m.group("text"), cell)
    return re.sub(r"(\*\*|__|`|~~)", "", text).strip()


def _new_action(number: int, title: str, line: int) -> dict[str, Any]:
    cut = title
    if len(title) > _max_length(Action, "title"):
        cut = title[: _max_length(Action, "title") - 1].rstrip() + "…"
    return {
        "number": number,
        "kind": None,
        "title": cut,
        "status": ActionStatus.TODO,
        "owner_name": "",
        "due_date": None,
        "ticket_url": "",
        "done_at": None,
        "_lines": [title] if cut != title else [],
        "_line": line,
    }


def _action_kind(action: dict[str, Any], word: str, reading: _Reading, line: int) -> None:
    n = action["number"]
    if word.strip():
        kind = _match(
            word,
            ACTION_KIND_BY_WORD,
            what=f"Action {n} kind",
            shown={k: k.value for k in ActionKind},
            line=line,
            reading=reading,
        )
        if kind is not None:
            action["kind"] = kind
            return
        refusal = f"Action {n} kind '{word.strip()}' is not one of {', '.join(ActionKind.values)}."
    else:
        refusal = (
            f"Action {n} has no kind: write '**Action {n} (mitigate): …**' with one of "
            f"{', '.join(ActionKind.values)}."
        )
    title = _fold(action["title"])
    guessed = next(
        (kind for kind, hint in _KIND_HINTS if re.search(hint, title)), ActionKind.REPAIR
    )
    action["kind"] = guessed
    reading.guess(
        f"Action {n} has no kind the reader knows ('{word.strip()}'): {guessed.value}, guessed "
        "from its title."
        if word.strip()
        else f"Action {n} has no kind: {guessed.value}, guessed from its title.",
        line,
        refusal,
    )


def _action_status(action: dict[str, Any], value: str, reading: _Reading, line: int) -> None:
    n = action["number"]
    status = _match(
        value,
        ACTION_STATUS_BY_WORD,
        what=f"Action {n} status",
        shown=ACTION_STATUS_WORD,
        line=line,
        reading=reading,
    )
    if status is None:
        reading.guess(
            f"Action {n} status '{value}' is not understood: imported as to do.",
            line,
            f"Action {n} status '{value}' is not one of {', '.join(ACTION_STATUS_WORD.values())}.",
        )
        status = ActionStatus.TODO
    action["status"] = status


def _action_ticket(action: dict[str, Any], value: str, reading: _Reading, line: int) -> None:
    n = action["number"]
    link = _LINK.search(value) or _URL.search(value)
    url = link.group("url") if isinstance(link, re.Match) and "url" in link.groupdict() else None
    url = url or (link.group(0) if link else None)
    if url and len(url) <= _max_length(Action, "ticket_url"):
        action["ticket_url"] = url
        return
    if value.strip():
        reading.guess(
            f"Action {n} ticket '{value.strip()}' is not an http(s) URL: kept in its description.",
            line,
            f"Action {n} ticket '{value.strip()}' is not an http(s) URL.",
        )
        action["_lines"].append(f"Ticket: {_plain(value)}")


_NO_DATE = {"", "-", "--", "—", "–", "n/a", "na", "tbd", "tbc", "none", "aucune", "?", "a definir"}


_DAY_MONTH_ONLY = re.compile(
    r"^(?P<d>\d{1,2})[/.](?P<m>\d{1,2})$|^(?P<d2>\d{1,2})(?:er|st|nd|rd|th)?\s+(?P<m2>[^\W\d_]{3,10})\.?$"
    r"|^(?P<m3>[^\W\d_]{3,10})\.?\s+(?P<d3>\d{1,2})(?:st|nd|rd|th)?$"
)


def _due_without_year(text: str, reading: _Reading, line: int) -> dt.date | None:
    """'15/03', '15 mars', 'March 15': a due date comes after the incident, so the year is
    the page's, or the next when that day had already passed well before it."""
    m = _DAY_MONTH_ONLY.match(text.strip())
    if m is None or reading.day is None:
        return None
    if m.group("d"):
        day_of_month, month = int(m.group("d")), int(m.group("m"))
    else:
        name = m.group("m2") or m.group("m3")
        if _fold(name) not in _MONTHS:
            return None
        day_of_month, month = int(m.group("d2") or m.group("d3")), _MONTHS[_fold(name)]
    try:
        found = dt.date(reading.day.year, month, day_of_month)
    except ValueError:
        return None
    if found < reading.day - dt.timedelta(days=31):
        found = found.replace(year=found.year + 1)
    reading.guess(
        f"Due date '{text.strip()}' has no year: read as {found.isoformat()}.",
        line,
        f"Due date '{text.strip()}' has no year (expected e.g. 14 March 2026).",
    )
    return found


def _due(action: dict[str, Any], value: str, reading: _Reading, line: int) -> None:
    if _fold(_plain(value)) in _NO_DATE or not _plain(value).strip("—–- "):
        return
    if reading.day is not None and (found := _due_without_year(_plain(value), reading, line)):
        action["due_date"] = found
        return
    try:
        action["due_date"] = parse_date(_plain(value), line, "Due date")
    except MarkdownError as exc:
        # "Q3", "fin mai", "end of sprint": a plan, not a date. Kept, and said; --strict
        # refuses it as before.
        reading.guess(
            f"Action {action['number']} due date '{_plain(value)}' is not a date: kept in "
            "its description.",
            line,
            exc.message,
        )
        action["_lines"].append(f"Due: {_plain(value)}")


def _action_owner(action: dict[str, Any], value: str, reading: _Reading, line: int) -> None:
    owner = _plain(value)
    if owner and _fold(owner) not in _NO_DATE:
        action["owner_name"] = (
            reading.attempt(
                _check_length, owner, Action, "owner_name", f"Action {action['number']} owner", line
            )
            or ""
        )


def _table_actions(tables: list[wikidoc.Table], reading: _Reading) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = []
    for table in tables:
        columns = [_COLUMN_BY_NAME.get(_fold(_plain(h))) for h in table.header]
        if "title" not in columns:
            columns[0] = "title"
        for line, cells in table.rows:
            row = {c: cells[i] for i, c in enumerate(columns) if c and i < len(cells)}
            title = _plain(row.get("title", ""))
            if not title:
                continue
            action = _new_action(len(actions) + 1, title, line)
            # A column Fixproof has no field for (Priority, Notes, Sprint): kept in the
            # action's description, never dropped.
            action["_lines"] += [
                f"{_plain(table.header[i])}: {cell}"
                for i, cell in enumerate(cells)
                if i < len(columns) and columns[i] is None and _plain(cell)
            ]
            ticket = row.get("ticket", "")
            word = re.match(r"^\s*(?:\*\*|__)?(TODO|DONE|WIP|OPEN|CLOSED)\b", ticket, re.I)
            if word:
                ticket = ticket[word.end() :].lstrip("*_ ")
            _action_kind(action, _plain(row.get("kind", "")), reading, line)
            status = _plain(row.get("status", "")) or (word.group(1) if word else "")
            if status:
                _action_status(action, status, reading, line)
            _action_owner(action, row.get("owner", ""), reading, line)
            _action_ticket(action, ticket, reading, line)
            _due(action, row.get("due", ""), reading, line)
            actions.append(action)
    return actions


_OWNER_IN_TEXT = re.compile(
    r"\(\s*(?P<pre>[^(),:]{2,30},\s*)?(?:owner|responsable|assignee|porteur|qui)\s*:\s*(?P<name>[^,)]+?)\s*(?:,(?P<more>[^)]*))?\)"
    r"|\(\s*(?P<handle>@[\w.-]+)\s*\)",
    re.IGNORECASE,
)
_DUE_IN_TEXT = re.compile(
    r"\b(?:due|échéance|echeance|by|avant le|pour le)\s*:?\s*"
    r"(?P<date>\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}(?:/\d{4})?"
    r"|\d{1,2}(?:st|nd|rd|th|er)?\s+[^\W\d_]+\.?(?:\s+\d{4})?"
    r"|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?"
    r"(?:,?\s+\d{4})?)",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"^[\w.+-]+@[\w-]+(?:\.[\w-]+)+$")
# "(due 2024-06-14)", "(échéance : 22/03/2024)": a due date aside, without an owner.
_DUE_ASIDE = re.compile(
    r"\s*\(\s*(?:due|échéance|echeance|by|avant le|pour le)\s*:?\s*"
    r"(?P<date>\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}(?:/\d{4})?"
    r"|\d{1,2}(?:st|nd|rd|th|er)?\s+[^\W\d_]+\.?(?:\s+\d{4})?"
    r"|[^\W\d_]+\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4})\s*\)",
    re.IGNORECASE,
)
# A mention ending the item or standing before its links: "@mchen", "@a.kowalski".
_HANDLE = re.compile(r"(?<![\w.])(?P<handle>@[A-Za-z0-9][\w.-]*[\w])(?=\s*(?:$|[(\[~]|https?:))")


def _is_date(text: str) -> bool:
    try:
        parse_date(text, 0, "Due date")
    except MarkdownError:
        return False
    return True


def _status_word(piece: str) -> bool:
    return _fold(piece) in ACTION_STATUS_BY_WORD or bool(
        difflib.get_close_matches(_fold(piece), list(ACTION_STATUS_BY_WORD), n=1, cutoff=0.8)
    )


# "Ines Garcia", "Jean-Marc de la Tour": two to four words, the first and last capitalised.
_PERSON = re.compile(
    r"[A-ZÀ-Ý][a-zà-ÿ'-]+(?:\s+(?:de|du|la|le|van|von|der)?\s*[A-ZÀ-Ý][a-zà-ÿ'-]+){1,3}"
)


def _bullet_actions(
    section: Section, reading: _Reading
) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """`- [x] Roll back (owner: Bob, due 2025-09-30)`, `- Fix the key (@alice) [INFRA-1](url)
    — in progress, due 2024-06-28`, `1. [prevent] Page the products — mei@example.com —
    done`: one action a top-level item, its indented lines its description."""
    actions: list[dict[str, Any]] = []
    before: list[tuple[int, str]] = []
    for number, line in section.lines:
        bullet = re.match(r"^(?:[-*+]|\d+[.)])\s+(?P<text>.*)$", line)
        if bullet is None:
            if actions and line.strip():
                actions[-1]["_lines"].append(line.strip())
            elif not actions:
                before.append((number, line))
            continue
        if reading.strict:
            reading.problems.append(
                MarkdownError(
                    "An action must be written '**Action 1 (mitigate): …**' or as a table row.",
                    number,
                )
            )
            continue
        text = bullet.group("text").strip()
        task = _TASK.match(text)
        if task:
            text = text[task.end() :]
        kind_word = ""
        tagged = re.match(r"^\[(?P<kind>[^\]\d]{3,20})\]\s+", text)
        if tagged:
            kind_word, text = tagged.group("kind"), text[tagged.end() :]
        owner = due = status = ""
        found = _OWNER_IN_TEXT.search(text)
        pre = found.group("pre").strip(" ,") if found and found.group("pre") else ""
        if found and pre and not (_status_word(pre) or _fold(pre) in ACTION_KIND_BY_WORD):
            found = None
        if found:
            owner = found.group("name") or found.group("handle") or ""
            due_in = _DUE_IN_TEXT.search(found.group("more") or "")
            due = due_in.group("date") if due_in else ""
            text = (text[: found.start()] + text[found.end() :]).strip()
            # "(Prevent, owner: Ana Silva)": the kind or the status before the owner.
            if _fold(pre) in ACTION_KIND_BY_WORD and not kind_word:
                kind_word = pre
            elif pre:
                status = pre
        due_aside = _DUE_ASIDE.search(text)
        if due_aside and not due and _is_date(due_aside.group("date")):
            due = due_aside.group("date")
            text = (text[: due_aside.start()] + text[due_aside.end() :]).strip()
        link = _LINK.search(text) or _URL.search(text)
        url = (link.groupdict().get("url") or link.group(0)) if link else ""
        if link:
            text = (text[: link.start()] + text[link.end() :]).strip()
        handle = _HANDLE.search(text)
        if handle and not owner:
            # GitLab and GitHub assign with a mention: "Bound the cache @mchen".
            owner = handle.group("handle")
            text = (text[: handle.start()] + text[handle.end() :]).strip()
        aside = re.search(r"\s*\((?P<inner>[^()]{2,80})\)\s*$", text)
        said: list[str] = []
        if aside and any(
            _status_word(piece) or _is_date(piece)
            for piece in (q.strip() for q in aside.group("inner").split(","))
        ):
            # "Limit the cache (Julie Roux, done)": the owner, status or due date aside.
            said, text = [aside.group("inner")], text[: aside.start()].strip()
        elif aside and not owner and _PERSON.fullmatch(aside.group("inner").strip()):
            # "Restore concurrency (Ines Garcia)": a person's name alone in brackets.
            owner, text = aside.group("inner").strip(), text[: aside.start()].strip()
            reading.guess(
                f"Action {len(actions) + 1}: '{owner}' in brackets after its title read as "
                "its owner.",
                number,
            )
        parts = [p.strip() for p in re.split(r"\s+[—–]\s+", text)]
        title, rest = parts[0], parts[1:] + said
        leftover: list[str] = []
        for part in rest:
            # "due March 22nd, 2024" is one piece: a comma before a year splits nothing.
            for piece in [q.strip() for q in re.split(r",(?!\s*\d{4}(?![-/\d]))", part)]:
                due_in = _DUE_IN_TEXT.fullmatch(piece) or _DUE_IN_TEXT.match(piece)
                if due_in:
                    due = due_in.group("date")
                elif named := re.match(
                    r"^(?:owner|responsable|porteur|assignee|assigned to|qui)\s*:?\s+(?P<n>.+)$",
                    piece,
                    re.IGNORECASE,
                ):
                    owner = named.group("n")
                elif _status_word(piece):
                    status = piece
                elif said and not due and _is_date(piece):
                    due = piece
                elif (_EMAIL.match(piece) or piece.startswith("@") or not owner) and not owner:
                    owner = piece
                elif piece:
                    # Neither a date, a status nor the owner: kept, never dropped.
                    leftover.append(piece)
        action = _new_action(len(actions) + 1, _plain(title).strip(" -—:"), number)
        action["_lines"] += leftover
        _action_kind(action, kind_word, reading, number)
        if task:
            action["status"] = ActionStatus.DONE if task.group("mark") != " " else ActionStatus.TODO
        if status:
            _action_status(action, status, reading, number)
        if owner:
            _action_owner(action, owner, reading, number)
        if url:
            action["ticket_url"] = url
        if due:
            _due(action, due, reading, number)
        actions.append(action)
    if actions and not reading.strict:
        # Said, never silent: a list is read by guessing which words are the owner, the
        # status and the due date (--strict refuses it).
        reading.notes.append(
            f"Line {actions[0]['_line']}: {len(actions)} action(s) read from a list: check "
            "their owner, status and due date."
        )
    return actions, before


def _parse_actions(
    section: Section, doc: wikidoc.Document, reading: _Reading
) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """The actions, and any text that stands before the first one: `**Action N (kind):
    title**` blocks, a table (action / type / owner / status / ticket / due, in English
    or French), or one action a bullet (task lists included)."""
    last = section.lines[-1][0] if section.lines else section.line
    tables = [t for t in doc.tables if section.line < t.line <= last]
    if any(_ACTION_HEAD.match(t.strip()) for _, t in section.lines):
        actions, before = _classic_actions(section, reading)
    elif tables:
        in_table = {n for t in tables for n in range(t.line, t.end + 1)}
        actions = _table_actions(tables, reading)
        before = [(n, t) for n, t in section.lines if n not in in_table]
    else:
        actions, before = _bullet_actions(section, reading)
    for action in actions:
        action["description"] = "\n".join(action.pop("_lines")).strip("\n")
        action.pop("_line")
        if action["status"] != ActionStatus.DONE:
            action["done_at"] = None
    return actions, before


def _classic_actions(
    section: Section, reading: _Reading
) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    actions: list[dict[str, Any]] = []
    before: list[tuple[int, str]] = []
    current: dict[str, Any] | None = None
    seen_numbers: dict[int, int] = {}
    for number, line in section.lines:
        head = _ACTION_HEAD.match(line.strip())
        if head:
            n = int(head.group("number"))
            if n in seen_numbers:
                renumbered = max(seen_numbers) + 1
                reading.guess(
                    f"Action {n} appears twice (first on line {seen_numbers[n]}): the second "
                    f"is Action {renumbered}.",
                    number,
                    f"Action {n} appears twice (first on line {seen_numbers[n]}).",
                )
                n = renumbered
            seen_numbers[n] = number
            title = reading.attempt(
                _check_length,
                head.group("title").strip(),
                Action,
                "title",
                f"Action {n} title",
                number,
            )
            current = _new_action(n, title or head.group("title").strip()[:200], number)
            _action_kind(current, head.group("kind") or "", reading, number)
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
                _action_status(current, value, reading, number)
            elif name == "owner":
                _action_owner(current, value, reading, number)
            elif name == "due_date":
                _due(current, value, reading, number)
            elif name == "done_at":
                current["done_at"] = reading.attempt(parse_datetime, value, number, "Done at", None)
            elif name == "ticket_url":
                _action_ticket(current, value, reading, number)
            continue
        current["_lines"].append(line.rstrip())
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


_THEMATIC_BREAK = re.compile(r"^\s*([-*_])(?:\s*\1){2,}\s*$")


def _single_value(section: Section, what: str) -> tuple[int, str]:
    # A '---' rule under a header table's last row closes the header, no part of the value.
    lines = [(n, t) for n, t in section.content_lines() if not _THEMATIC_BREAK.match(t)]
    if not lines:
        raise MarkdownError(f"The {what} section is empty.", section.line)
    return lines[0][0], " ".join(t.strip() for _, t in lines)


class _Reading:
    """The problems and the guesses of one reading; `strict` turns guesses into problems."""

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self.problems: list[MarkdownError] = []
        self.notes: list[str] = []
        # The page's date, once read: the year of a due date written without one.
        self.day: dt.date | None = None

    def guess(self, note: str, line: int | None, refusal: str | None = None) -> None:
        """A guess the page's author should know about; under strict, `refusal` (or the
        note) is a problem instead."""
        if self.strict:
            self.problems.append(MarkdownError(refusal or note, line))
        else:
            self.notes.append(f"Line {line}: {note}" if line else note)

    def attempt(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MarkdownError as exc:
            self.problems.extend(exc.problems)
            return None


def _match(
    value: str,
    table: dict[str, Any],
    *,
    what: str,
    shown: dict[Any, str],
    line: int | None,
    reading: _Reading,
) -> Any:
    """The key a word stands for: exact (case, accents and spaces aside); else its first
    clause or words ("Complete, action items in progress"), else the closest word ("to
    debatre"), each guess noted; None when nothing is close."""
    folded = _fold(value.replace("*", ""))
    if folded in table:
        return table[folded]
    candidates = [_fold(part) for part in re.split(r"[,;:()/—–]| - ", value) if part.strip()]
    words = folded.split()
    candidates += [" ".join(words[:k]) for k in range(len(words) - 1, 0, -1)]
    found = next((table[c] for c in candidates if c in table), None)
    if found is None:
        close = difflib.get_close_matches(folded, list(table), n=1, cutoff=0.75)
        found = table[close[0]] if close else None
    if found is not None:
        reading.guess(
            f"{what} '{value.strip()}' read as '{shown[found]}'.",
            line,
            f"{what} '{value.strip()}' is not one of {', '.join(shown.values())}.",
        )
    return found


_SEVERITY_WORDS = {
    "critical": Severity.SEV1, "critique": Severity.SEV1, "blocker": Severity.SEV1,
    "bloquant": Severity.SEV1, "urgent": Severity.SEV1,
    "major": Severity.SEV2, "majeur": Severity.SEV2, "majeure": Severity.SEV2,
    "high": Severity.SEV2, "haute": Severity.SEV2, "elevee": Severity.SEV2,
    "minor": Severity.SEV3, "mineur": Severity.SEV3, "mineure": Severity.SEV3,
    "medium": Severity.SEV3, "moyenne": Severity.SEV3, "moderate": Severity.SEV3,
    "low": Severity.SEV4, "basse": Severity.SEV4, "faible": Severity.SEV4,
    "trivial": Severity.SEV4, "cosmetic": Severity.SEV4,
}  # fmt: skip
_PRIORITY = {"0": Severity.SEV1, "1": Severity.SEV2, "2": Severity.SEV3, "3": Severity.SEV4}


def parse_severity(value: str, line: int | None, reading: _Reading) -> Severity | None:
    """SEV1-4 (SEV0 is SEV1), P0-P3, or a word (critical, majeur...); None when the value
    says none of them."""
    text = value.strip().replace("*", "")
    m = re.fullmatch(r"(?:sev)?\s*([1-4])", text, re.IGNORECASE)
    if m:
        return Severity(f"sev{m.group(1)}")
    # "Sev 2", "SEV-2", "S1", GitLab's ~"severity::2", "Severity 3 - minor".
    m = re.search(
        r"\b(?:sev|severity|severite|s)\s*(?:-|::?)?\s*([0-4])\b", _fold(text), re.IGNORECASE
    )
    p = re.search(r"\b(?:p|priority|priorite)\s*(?:-|::?)?\s*([0-3])\b", _fold(text), re.I)
    found: Severity | None = None
    if m:
        found = Severity(f"sev{max(1, int(m.group(1)))}")
    elif p:
        found = _PRIORITY[p.group(1)]
    else:
        words = _fold(text).split()
        found = next((_SEVERITY_WORDS[w] for w in words if w in _SEVERITY_WORDS), None)
    if found is None:
        return None
    reading.guess(
        f"Severity '{value.strip()}' read as {found.label}.",
        line,
        f"Severity '{value.strip()}' is not one of SEV1, SEV2, SEV3, SEV4.",
    )
    return found


def _title_from_text(text: str) -> str:
    """The first sentence of a text, short enough for a title."""
    plain = re.sub(r"\s+", " ", re.sub(r"[*_`#>\[\]]", "", text)).strip()
    sentence = re.split(r"(?<=[.!?])\s", plain, maxsplit=1)[0].strip().rstrip(".")
    return sentence if len(sentence) <= 120 else sentence[:117].rstrip() + "…"


def parse(
    text: str,
    *,
    title: str | None = None,
    file_name: str | None = None,
    strict: bool = False,
) -> ParsedPostMortem:
    """Read a post-mortem page to the end; raise MarkdownError listing every problem.

    ``title`` is used when the page has none. Without `strict`, what the reader guessed
    (a title from the summary or the file name, a status read through a typo, sections
    written twice and joined) is listed in `notes`; with it, each guess is a problem."""
    lines = _check_markdown(text)
    try:
        doc = wikidoc.read(lines)
    except wikidoc.FrontMatterError as exc:
        raise MarkdownError(str(exc), exc.line) from None
    title_heading, sections = _split_sections(lines, doc)
    sections = _front_matter_sections(doc) + sections
    reading = _Reading(strict=strict)
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
        notes=reading.notes,
    )
    known = [s for s in sections if s.key]
    if not known:
        if not doc.headings:
            raise MarkdownError(
                "The file is not a Markdown post-mortem: it has no '#' headings "
                "(expected a title and sections such as '### Summary')."
            )
        raise MarkdownError(
            "No post-mortem section found: expected headings such as '### Summary', "
            "'### Impacts', '### Root Causes' or '### Actions' (or their French names)."
        )
    by_key: dict[str, Section] = {}
    last_known = 0
    for section in sections:
        if section.key is None:
            heading = reading.attempt(
                _check_length, section.heading, ExtraSection, "heading", "The heading", section.line
            )
            parsed.extra_sections.append(
                {
                    "heading": heading or section.heading[:200],
                    "body": section.text,
                    "position": last_known,
                }
            )
            continue
        first = by_key.get(section.key)
        if first is None or first.front_matter:
            # A section of the page wins over the same key in the front matter.
            by_key[section.key] = section
        elif section.key in _ONE_LINE_KEYS:
            reading.problems.append(
                MarkdownError(
                    f"The section '{section.heading}' appears twice (first on line {first.line}).",
                    section.line,
                )
            )
        else:
            reading.guess(
                f"The section '{section.heading}' is joined to '{first.heading}' (line "
                f"{first.line}).",
                section.line,
                f"The section '{section.heading}' appears twice (first on line {first.line}).",
            )
            first.lines += [(section.line, ""), (section.line, f"#### {section.heading}")]
            first.lines += section.lines
        if not section.front_matter:
            last_known = SECTIONS.index(section.key) + 1

    fields = parsed.fields
    parsed.title = _read_title(by_key, title_heading, title, file_name, reading) or ""
    day: dt.date | None = None
    if "date" in by_key:
        number, value = _single_value(by_key["date"], "Date")
        day = reading.attempt(parse_date, value, number, "Date")
        if day is not None:
            fields["written_on"] = day
            reading.day = day
    if "authors" in by_key:
        parsed.author_names = (
            reading.attempt(_names_in, by_key["authors"], "external_authors", "The author") or []
        )
    if "status" in by_key:
        number, value = _single_value(by_key["status"], "Status")
        status = _match(
            value,
            POSTMORTEM_STATUS_BY_WORD,
            what="Status",
            shown=POSTMORTEM_STATUS_WORD,
            line=number,
            reading=reading,
        )
        if status is None:
            _keep_unread(
                parsed,
                reading,
                by_key["status"],
                f"Status '{value}' is not one of Draft, In review, Published.",
                "imported as Draft",
                number,
            )
        else:
            fields["status"] = status
    if "severity" in by_key:
        number, value = _single_value(by_key["severity"], "Severity")
        severity = parse_severity(value, number, reading)
        if severity is not None:
            fields["severity"] = severity
        else:
            _keep_unread(
                parsed,
                reading,
                by_key["severity"],
                f"Severity '{value.strip()}' is not one of SEV1-SEV4, P0-P3, critical, major, "
                "minor, low (or critique, majeur, mineur, faible).",
                f"imported as {Severity.SEV3.label}",
                number,
            )
    elif not reading.strict:
        # Said, never silent: the default stands in for a severity the page never gives.
        reading.notes.append(
            f"No severity on the page: imported as {Severity.SEV3.label}, the default; set "
            "it on the post-mortem if it was worse."
        )
    if "team" in by_key:
        number, value = _single_value(by_key["team"], "Team")
        parsed.team_name = reading.attempt(_check_length, value, Team, "name", "The team", number)
    if "services" in by_key:
        fields["services"] = (
            reading.attempt(_names_in, by_key["services"], "services", "The service") or []
        )
    if "when" in by_key:
        times, kept = reading.attempt(_parse_when, by_key["when"], day, reading) or ({}, [])
        fields.update(times)
        if kept:
            parsed.extra_sections.append(
                {
                    "heading": by_key["when"].heading + " (notes)",
                    "body": "\n".join(kept),
                    "position": SECTIONS.index("when") + 1,
                }
            )
    for key in ("summary", "trigger", "resolution", "detection", "lessons_learned"):
        if key in by_key:
            fields[key] = by_key[key].text
    if "impacts" in by_key:
        parsed.impacts = reading.attempt(_parse_impacts, by_key["impacts"]) or []
    if "root_causes" in by_key:
        causes, context = reading.attempt(_parse_root_causes, by_key["root_causes"]) or ([], "")
        parsed.root_causes = causes
        if context.strip():
            parsed.extra_sections.append(
                {
                    "heading": by_key["root_causes"].heading + " (notes)",
                    "body": context,
                    "position": SECTIONS.index("root_causes") + 1,
                }
            )
    if "timeline" in by_key:
        # A bare "12:05" happened on the incident's day; the Date section is the
        # day the page was written, usually the day after.
        incident_day, day_note = _day_of(fields), ""
        named = _prose_day(by_key["summary"].text, day) if "summary" in by_key else None
        if incident_day is None and named is not None and named != day:
            # "Last night, on March 4th" on a page written the 5th: the timeline's bare
            # times are on the 4th.
            incident_day = named
            day_note = (
                f"The timeline's times have no date: {named.isoformat()}, the day the summary "
                "names, taken as theirs."
            )
        timeline, notes = _parse_timeline(
            by_key["timeline"], incident_day or day, reading, day, day_note
        )
        parsed.timeline = timeline
        if notes:
            parsed.extra_sections.append(
                {
                    "heading": by_key["timeline"].heading + " (notes)",
                    "body": notes,
                    "position": SECTIONS.index("timeline") + 1,
                }
            )
        _times_from_timeline(fields, timeline)
    # A blog-style write-up opens with the paragraph that says when and how bad: read it
    # with the summary.
    lead = next((s.text for s in sections if s.key is None and not s.heading), "")
    _times_from_prose(fields, by_key, day, reading, lead)
    if "impacts" not in by_key and not reading.strict:
        parsed.impacts = _impacts_from_prose(
            "\n\n".join(t for t in (lead, fields.get("summary", "")) if t), reading
        )
    if "actions" in by_key:
        parsed.actions, before = _parse_actions(by_key["actions"], doc, reading)
        if any(t.strip() for _, t in before):
            parsed.extra_sections.append(
                {
                    "heading": by_key["actions"].heading + " (notes)",
                    "body": "\n".join(t for _, t in before).strip("\n"),
                    "position": SECTIONS.index("actions"),
                }
            )
    ambiguous = next(
        (m for m in _SLASH_DATE.finditer(text) if m.group(1) != m.group(2)
         and int(m.group(1)) <= 12 and int(m.group(2)) <= 12),
        None,
    )  # fmt: skip
    if ambiguous and not reading.strict:
        # 03/04/2024 is 3 April in most of the world and March 4 in the United States.
        dd, mm = int(ambiguous.group(1)), int(ambiguous.group(2))
        reading.notes.append(
            f"Dates such as {ambiguous.group(0)} are read day first ({dd} "
            f"{_MONTH_NAMES_EN[mm - 1]}, not {_MONTH_NAMES_EN[dd - 1]} {mm}): check "
            "them if the page was written month first."
        )
    if reading.problems:
        raise MarkdownError.of(reading.problems)
    return parsed


# A day and a month with a year, or with a time after them ("02/06 08h10"): not "3/4 pods".
_SLASH_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})(?:/\d{4}\b|(?=\s+\d{1,2}[:h]\d{2}))")
_MONTH_NAMES_EN = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip


def _keep_unread(
    parsed: ParsedPostMortem,
    reading: _Reading,
    section: Section,
    problem: str,
    instead: str,
    line: int,
) -> None:
    """A one-line field whose value the reader does not know ("Status: Resolved", the
    incident's state rather than the page's): refused under strict, else noted and kept
    as text under '<heading> (as written)' so that nothing the author wrote is lost."""
    if reading.strict:
        reading.problems.append(MarkdownError(problem, line))
        return
    reading.guess(f"{problem.rstrip('.')}: {instead}; the page's word is kept as text.", line)
    parsed.extra_sections.append(
        {
            "heading": f"{section.heading} (as written)",
            "body": section.text,
            "position": SECTIONS.index(section.key or "title") + 1,
        }
    )


def _read_title(
    by_key: dict[str, Section],
    title_heading: tuple[int, str] | None,
    given: str | None,
    file_name: str | None,
    reading: _Reading,
) -> str | None:
    """The title: a Title section or front matter key, the first heading, the one given
    with the file; else (a guess) the summary's first sentence or the file's name."""
    found: str | None = None
    if "title" in by_key:
        found = _single_value(by_key["title"], "Title")[1]
    elif title_heading:
        found = _title_from_heading(title_heading[1])
    found = found or (given or "").strip() or None
    where = title_heading[0] if title_heading else 1
    refusal = (
        "The post-mortem has no title: "
        + (
            f"its first heading '{title_heading[1]}' does not name the incident. "
            if title_heading
            else "no heading names the incident. "
        )
        + "Write it as '## POST MORTEM: <title>', add a '### Title' section, or give a "
        "title with the file."
    )
    sentence = _title_from_text(by_key["summary"].text) if "summary" in by_key else ""
    if not found and sentence and (len(sentence) <= 100 or not file_name):
        found = sentence
        reading.guess(
            f"No title: the summary's first sentence is the title, '{found}'.", where, refusal
        )
    elif not found and file_name:
        stem = re.sub(r"\.(md|markdown|txt)$", "", file_name.rsplit("/", 1)[-1], flags=re.I)
        found = re.sub(r"[-_]+", " ", stem).strip().capitalize() or None
        if found:
            reading.guess(f"No title: the file's name is the title, '{found}'.", where, refusal)
    if not found:
        reading.problems.append(MarkdownError(refusal, where))
        return None
    if len(found) > 200:
        reading.problems.append(MarkdownError("The title is longer than 200 characters.", where))
        return None
    return found


def _day_of(fields: dict[str, Any]) -> dt.date | None:
    started = fields.get("started_at")
    return started.date() if started else None


def describe(parsed: ParsedPostMortem) -> str:
    """What an import would save, field by field, then the reader's guesses: the dry run."""
    fields = parsed.fields
    out = [f"Title: {parsed.title}"]
    for name, label in (
        ("status", "Status"),
        ("severity", "Severity"),
        ("written_on", "Date"),
        ("started_at", "Started"),
        ("detected_at", "Detected"),
        ("ended_at", "Ended"),
    ):
        if fields.get(name) is not None:
            value = fields[name]
            out.append(f"{label}: {value.isoformat() if hasattr(value, 'isoformat') else value}")
    if parsed.author_names:
        out.append("Authors: " + ", ".join(parsed.author_names))
    if parsed.team_name:
        out.append(f"Team: {parsed.team_name}")
    for key in ("summary", "trigger", "resolution", "detection", "lessons_learned"):
        if fields.get(key):
            out.append(f"{key.replace('_', ' ').capitalize()}: {len(fields[key])} characters")
    out.append(f"Impacts: {len(parsed.impacts)}")
    for impact in parsed.impacts:
        figure = (
            "" if impact["value"] is None else f" = {impact['value']} {impact['unit']}".rstrip()
        )
        if impact.get("value_before") is not None:
            figure += f" (before: {impact['value_before']})"
        out.append(f"  - {impact['label']}{figure}")
    out.append(f"Root causes: {len(parsed.root_causes)}")
    out.append(f"Timeline: {len(parsed.timeline)} entries")
    for entry in parsed.timeline:
        out.append(f"  - {entry['occurred_at'].isoformat()} {entry['text'].splitlines()[0][:70]}")
    out.append(f"Actions: {len(parsed.actions)}")
    for action in parsed.actions:
        extra = [action["status"], action["kind"]]
        if action["owner_name"]:
            extra.append(f"owner {action['owner_name']}")
        if action["due_date"]:
            extra.append(f"due {action['due_date'].isoformat()}")
        if action["ticket_url"]:
            extra.append(action["ticket_url"])
        out.append(f"  {action['number']}. {action['title']} ({', '.join(map(str, extra))})")
    kept = [s["heading"] or "(text before the first section)" for s in parsed.extra_sections]
    out.append("Kept as text: " + (", ".join(kept) if kept else "nothing"))
    out.append(f"Guesses: {len(parsed.notes)}")
    out += [f"  - {note}" for note in parsed.notes]
    return "\n".join(out)


# ---------------------------------------------------------------- writing


def _format_number(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


_MONTH_NAMES_FR = (
    "janvier février mars avril mai juin juillet août septembre octobre novembre décembre"
).split()
# The words of an export, values included: a French export says "Statut : à faire".
EXPORT_WORDS = {
    "en": {
        "Started": "Started", "Detected": "Detected", "Resolved": "Resolved", "Ended": "Ended",
        "Category": "Category", "Owner": "Owner", "Due": "Due", "Ticket": "Ticket",
        "Status": "Status", "Done at": "Done at", "sep": ": ",
        "status": dict(POSTMORTEM_STATUS_WORD), "action_status": dict(ACTION_STATUS_WORD),
        "kind": {k: k.value for k in ActionKind},
    },
    "fr": {
        "Started": "Début", "Detected": "Détecté", "Resolved": "Résolu", "Ended": "Fin",
        "Category": "Catégorie", "Owner": "Responsable", "Due": "Échéance", "Ticket": "Ticket",
        "Status": "Statut", "Done at": "Fait le", "sep": " : ",
        "status": {
            PostMortemStatus.DRAFT: "Brouillon", PostMortemStatus.IN_REVIEW: "En relecture",
            PostMortemStatus.PUBLISHED: "Publié",
        },
        "action_status": {
            ActionStatus.TODO: "à faire", ActionStatus.TO_DEBATE: "à débattre",
            ActionStatus.IN_PROGRESS: "en cours", ActionStatus.DONE: "fait",
            ActionStatus.WONT_DO: "abandonné",
        },
        "kind": {
            ActionKind.INVESTIGATE: "investiguer", ActionKind.MITIGATE: "atténuer",
            ActionKind.REPAIR: "réparer", ActionKind.DETECT: "détecter",
            ActionKind.PREVENT: "prévenir", ActionKind.PROCESS: "processus",
        },
    },
}  # fmt: skip


def _format_date(day: dt.date, language: str = "en") -> str:
    months = _MONTH_NAMES_FR if language == "fr" else _MONTH_NAMES
    return f"{day.day} {months[day.month - 1]} {day.year}"


def _format_datetime(value: dt.datetime) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M")


def impact_line(
    label: str, value: Decimal | None, unit: str, value_before: Decimal | None = None
) -> str:
    """An impact as one line: the label as written when reading it gives the same figure
    (so that export and import agree), else the label and the figure."""
    if value is None:
        return label
    try:
        read = parse_impact(label, "")
    except MarkdownError:
        read = {}
    same = (
        read.get("value") == value
        and (read.get("unit") == unit or not unit)
        and (value_before is None or read.get("value_before") == value_before)
    )
    if same:
        return label
    figure = _format_number(value)
    if unit:
        figure += unit if unit == "%" else f" {unit}"
    return f"{label}: {figure}"


def export(pm: PostMortem, *, language: str = "en") -> str:
    """The post-mortem as Markdown, in the classic order."""
    names = HEADINGS.get(language, HEADINGS["en"])
    words: dict[str, Any] = EXPORT_WORDS.get(language, EXPORT_WORDS["en"])
    sep = words["sep"]
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
        "date": _format_date(pm.written_on, language) if pm.written_on else None,
        "authors": ", ".join(authors),
        "status": words["status"][PostMortemStatus(pm.status)],
        "severity": Severity(pm.severity).label,
        "team": pm.team.name if pm.team is not None else None,
        "services": ", ".join(pm.services),
        "when": "\n".join(f"{words[label]}{sep}{_format_datetime(value)}" for label, value in when),
        "summary": pm.summary,
        "impacts": _export_impacts(pm),
        "root_causes": "\n\n".join(
            (f"{words['Category']}{sep}{c.category}\n" if c.category else "") + c.description
            for c in pm.root_causes.all()
        ),
        "trigger": pm.trigger,
        "resolution": pm.resolution,
        "detection": pm.detection,
        "timeline": "\n".join(
            f"- {_format_datetime(t.occurred_at)} — {t.text}" for t in pm.timeline.all()
        ),
        "actions": "\n\n".join(_export_action(a, words) for a in pm.actions.all()),
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
        line = "- " + impact_line(impact.label, impact.value, impact.unit, impact.value_before)
        if groups and groups[-1][0] == impact.window:
            groups[-1][1].append(line)
        else:
            groups.append((impact.window, [line]))
    return "\n\n".join(
        (f"{window}:\n" if window else "") + "\n".join(lines) for window, lines in groups
    )


def _export_action(action: Any, words: dict[str, Any]) -> str:
    sep = words["sep"]
    kind = words["kind"][ActionKind(action.kind)]
    lines = [f"**Action {action.number} ({kind}){sep}{action.title}**"]
    if action.description:
        lines.append(action.description)
    if action.owner_display:
        lines.append(f"{words['Owner']}{sep}{action.owner_display}")
    if action.due_date:
        lines.append(f"{words['Due']}{sep}{action.due_date.isoformat()}")
    if action.ticket_url:
        lines.append(f"{words['Ticket']}{sep}{action.ticket_url}")
    lines.append("")
    lines.append(f"{words['Status']}{sep}{words['action_status'][ActionStatus(action.status)]}")
    if action.done_at:
        lines.append(f"{words['Done at']}{sep}{_format_datetime(action.done_at)}")
    return "\n".join(lines)
