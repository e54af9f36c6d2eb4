"""postmortems.markdown: wiki pages read into post-mortems and written back.

The files under tests/fixtures/postmortems/ are incidents as people write them
in the wiki; three of them are already in the exporter's own format, so they
must come back byte for byte.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from postmortems import markdown, services
from postmortems.models import ActionKind, ActionStatus, PostMortem, PostMortemStatus, Severity

FIXTURES = Path(__file__).parent / "fixtures" / "postmortems"
ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.md"))
# Written exactly as markdown.export writes them.
CANONICAL = [
    "invoice-export-full-scan-sev1.md",
    "reporting-pool-exhaustion-owners.md",
    "search-indexer-memory-leak.md",
]
# Written as people write them: French headings and dates, no Severity section.
WIKI_STYLE = [name for name in ALL_FIXTURES if name not in CANONICAL]


def read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def at(year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return timezone.make_aware(dt.datetime(year, month, day, hour, minute))


def import_text(text: str, **kwargs: Any) -> PostMortem:
    return services.postmortem_import(data=text.encode(), actor=None, **kwargs).postmortem


def headings(text: str) -> list[str]:
    return re.findall(r"^### (.+)$", text, re.MULTILINE)


def content_of(pm: PostMortem) -> dict[str, Any]:
    """Everything a page can say about a post-mortem, without ids or write times."""
    pm = PostMortem.objects.get(pk=pm.pk)
    fields = (
        "title",
        "severity",
        "status",
        "written_on",
        "started_at",
        "detected_at",
        "resolved_at",
        "ended_at",
        "services",
        "external_authors",
        "summary",
        "trigger",
        "resolution",
        "detection",
        "lessons_learned",
    )
    content: dict[str, Any] = {name: getattr(pm, name) for name in fields}
    content["team"] = pm.team.name if pm.team else None
    content["authors"] = sorted(u.username for u in pm.authors.all())
    content["impacts"] = list(pm.impacts.values("label", "value", "unit", "window", "position"))
    content["root_causes"] = list(pm.root_causes.values("category", "description", "position"))
    content["timeline"] = list(pm.timeline.values("occurred_at", "text"))
    content["actions"] = list(
        pm.actions.values(
            "number",
            "kind",
            "title",
            "description",
            "owner_id",
            "owner_name",
            "due_date",
            "status",
            "ticket_url",
            "done_at",
        )
    )
    content["extra_sections"] = list(pm.extra_sections.values("heading", "body", "position"))
    return content


# ---------------------------------------------------------------- impacts


@pytest.mark.parametrize(
    ("line", "value", "unit"),
    [
        ("in total 1,904 of 6,140 requests failed", Decimal("1904"), "requests"),
        ("at 12:05, 58% of requests failed", Decimal("58"), "%"),
        ("31% of requests failed", Decimal("31"), "%"),
        ("mean response time was 4.2 seconds", Decimal("4.2"), "s"),
        ("p95 response time of the orders API was 30 seconds", Decimal("30"), "s"),
        ("1.21B queries lost", Decimal("1210000000"), "queries"),
        ("412 dashboard tabs were open", Decimal("412"), "dashboard tabs"),
        ("270 sur 1620 commandes en échec", Decimal("270"), "commandes"),
        ("3.5 GB of resident memory at the last kill", Decimal("3.5"), "GB"),
        ("on 2026-03-13, 300 orders were lost", Decimal("300"), "orders"),
        ("on 13/03/2026 the API answered in 850 ms", Decimal("850"), "ms"),
        ("12,5 % des paiements ont échoué", Decimal("12.5"), "%"),
        ("latence moyenne 4,2 secondes", Decimal("4.2"), "s"),
        ("au total 2 318 paiements refusés à tort", Decimal("2318"), "paiements"),
        ("à 12h05, 58 % des requêtes ont échoué", Decimal("58"), "%"),
        ("the search page was unusable", None, ""),
    ],
)
def test_an_impact_line_gives_its_first_figure_and_unit(line, value, unit):
    impact = markdown.parse_impact(line, "")
    assert (impact["value"], impact["unit"]) == (value, unit)
    assert impact["label"] == line


@pytest.mark.parametrize(
    ("line", "before", "value", "unit"),
    [
        ("temps de réponse de 40 ms à 1,2 s", Decimal("0.04"), Decimal("1.2"), "s"),
        ("p99 latency rose from 850 ms to 14 s", Decimal("0.85"), Decimal("14"), "s"),
        ("cache hit ratio fell from 94% to 38%", Decimal("94"), Decimal("38"), "%"),
        ("the table grew from 2.1 GB to 14 GB", Decimal("2.1"), Decimal("14"), "GB"),
    ],
)
def test_a_change_gives_the_value_after_and_the_value_before_in_its_unit(line, before, value, unit):
    impact = markdown.parse_impact(line, "")
    assert (impact["value_before"], impact["value"], impact["unit"]) == (before, value, unit)


def test_impacts_are_grouped_under_the_window_line_above_them():
    parsed = markdown.parse(read("checkout-latency-wiki.md"))
    first, second = "For 12 minutes (12:02-12:14)", "For 26 minutes (12:14-12:40)"
    assert [(i["window"], i["label"], i["value"], i["unit"]) for i in parsed.impacts] == [
        (first, "mean response time was 4.2 seconds", Decimal("4.2"), "s"),
        (first, "31% of requests failed", Decimal("31"), "%"),
        (first, "at 12:05, 58% of requests failed", Decimal("58"), "%"),
        (first, "in total 1,904 of 6,140 requests failed", Decimal("1904"), "requests"),
        (second, "mean response time was 1.8 seconds", Decimal("1.8"), "s"),
        (
            second,
            'the "my orders" page took up to 90 seconds to display',
            Decimal("90"),
            "s",
        ),
    ]


# ---------------------------------------------------------------- sections


def test_the_wiki_sample_reads_into_every_classic_section():
    parsed = markdown.parse(read("checkout-latency-wiki.md"))
    assert parsed.title == "Checkout latency at the lunch peak"
    assert parsed.author_names == ["Priya Raman", "Tomás Ferreira"]
    assert parsed.fields["written_on"] == dt.date(2026, 3, 14)
    assert parsed.fields["status"] == PostMortemStatus.IN_REVIEW
    assert parsed.fields["summary"].startswith("On 13 March between 12:02 and 12:40")
    assert parsed.fields["summary"].endswith("we doubled the database instance's\nmemory then.")
    assert parsed.fields["trigger"] == "Lunch-time traffic peak after a marketing e-mail."
    assert parsed.fields["resolution"].splitlines()[-1] == (
        "- the order page no longer loads per-event details; the history tab still does"
    )
    assert parsed.fields["detection"] == (
        "Alert in the #ops chat channel from the error-rate monitor."
    )
    # The incident's window is read from the summary, and said.
    assert parsed.fields["started_at"] == at(2026, 3, 13, 12, 2)
    assert parsed.fields["ended_at"] == at(2026, 3, 13, 12, 40)
    assert parsed.notes == [
        "No severity on the page: imported as SEV3, the default; set it on the post-mortem if "
        "it was worse.",
        "The incident's start and end are read from the summary: between 12:02 and 12:40 .",
    ]


def test_root_causes_are_the_items_of_the_last_list_and_the_rest_is_kept_as_notes():
    parsed = markdown.parse(read("checkout-latency-wiki.md"))
    assert parsed.root_causes == [
        {"category": "", "description": "`order_events` holds 41 million rows and has 6 indexes"},
        {
            "category": "",
            "description": "the lunch peak mixes heavy writes and reads on that table",
        },
        {"category": "", "description": "index maintenance competes with reads for memory"},
    ]
    assert parsed.extra_sections == [
        {
            "heading": "Root Causes (notes)",
            "body": 'While the incident was on we replayed the "my orders" query:\n'
            "- with the join on `order_events`: 38 seconds\n"
            "- without the join: 0.3 seconds\n\n"
            "What we think happened:",
            "position": markdown.SECTIONS.index("root_causes") + 1,
        }
    ]


def test_root_causes_without_a_list_are_the_blocks_between_blank_lines():
    parsed = markdown.parse(read("paiement-pool-connexions-fr.md"))
    assert len(parsed.root_causes) == 2
    assert all("\n\n" not in cause["description"] for cause in parsed.root_causes)


def test_a_category_line_opens_a_root_cause_block():
    parsed = markdown.parse(read("invoice-export-full-scan-sev1.md"))
    assert [c["category"] for c in parsed.root_causes] == ["database", "capacity"]
    assert parsed.root_causes[1]["description"] == (
        "The export and the checkout share the primary; there is no read replica for\nbatch jobs."
    )


def test_actions_give_their_number_kind_title_status_and_description():
    parsed = markdown.parse(read("checkout-latency-wiki.md"))
    assert parsed.actions == [
        {
            "number": 1,
            "kind": ActionKind.MITIGATE,
            "title": "Make order events cheaper to read",
            "status": ActionStatus.IN_PROGRESS,
            "description": "- create a table `order_events_recent` with only the last 14 days\n"
            "- index it on `order_id` only\n"
            "- drop the unused indexes on `order_events`",
            "owner_name": "",
            "due_date": None,
            "ticket_url": "",
            "done_at": None,
        },
        {
            "number": 2,
            "kind": ActionKind.DETECT,
            "title": "Know how much memory the database needs at peak",
            "status": ActionStatus.TO_DEBATE,
            "description": "Proposal:\n"
            "- a script that dumps production, anonymized\n"
            "- restore it every week in a review environment\n"
            "- load test it to simulate the lunch peak\n"
            "- measure response time, failure rate and database memory",
            "owner_name": "",
            "due_date": None,
            "ticket_url": "",
            "done_at": None,
        },
    ]


def test_owner_due_and_ticket_lines_are_read_out_of_the_description():
    parsed = markdown.parse(read("reporting-pool-exhaustion-owners.md"))
    second = parsed.actions[1]
    assert second["description"] == (
        "- add a `sales_hourly` materialized view refreshed every 5 minutes\n"
        "- the dashboard never queries `sales_events` directly"
    )
    assert second["owner_name"] == "Idris Okafor"
    assert second["due_date"] == dt.date(2026, 4, 30)
    assert second["ticket_url"] == "https://tracker.example.com/browse/DATA-813"
    assert [(a["number"], a["kind"], a["status"]) for a in parsed.actions] == [
        (1, ActionKind.MITIGATE, ActionStatus.IN_PROGRESS),
        (2, ActionKind.REPAIR, ActionStatus.TODO),
        (3, ActionKind.PROCESS, ActionStatus.TO_DEBATE),
        (4, ActionKind.INVESTIGATE, ActionStatus.WONT_DO),
    ]
    assert parsed.actions[3]["due_date"] is None


def test_a_done_action_keeps_its_done_at_time():
    parsed = markdown.parse(read("search-indexer-memory-leak.md"))
    assert parsed.actions[0]["status"] == ActionStatus.DONE
    assert parsed.actions[0]["done_at"] == at(2026, 2, 24, 11, 0)


def test_severity_team_services_and_incident_times_are_read():
    parsed = markdown.parse(read("invoice-export-full-scan-sev1.md"))
    assert parsed.fields["severity"] == Severity.SEV1
    assert parsed.team_name == "Billing"
    assert parsed.fields["services"] == ["billing-api", "invoice-export", "orders-db"]
    assert [parsed.fields[k] for k in ("started_at", "detected_at", "resolved_at", "ended_at")] == [
        at(2026, 1, 6, 8, 58),
        at(2026, 1, 6, 9, 3),
        at(2026, 1, 6, 9, 47),
        at(2026, 1, 6, 10, 5),
    ]


def test_a_french_page_reads_like_an_english_one():
    parsed = markdown.parse(read("paiement-pool-connexions-fr.md"))
    assert parsed.title == "Pool de connexions épuisé sur l'API paiement"
    assert parsed.fields["written_on"] == dt.date(2026, 3, 14)
    assert parsed.fields["status"] == PostMortemStatus.DRAFT
    assert parsed.author_names == ["Camille Rousseau", "Julien Moreau"]
    assert parsed.fields["summary"].startswith("Le 13 mars entre 18:10 et 18:55")
    assert parsed.fields["trigger"].startswith("Le rattrapage du rapprochement bancaire")
    assert parsed.fields["resolution"].startswith("Arrêt de la moitié des workers")
    assert parsed.fields["detection"].startswith("Alerte « taux d'erreur paiement")
    assert len(parsed.root_causes) == 2
    assert [(i["value"], i["unit"]) for i in parsed.impacts] == [
        (Decimal("12.5"), "%"),
        (Decimal("4.2"), "s"),
        (Decimal("2318"), "paiements"),
    ]
    assert [(a["kind"], a["status"]) for a in parsed.actions] == [
        (ActionKind.MITIGATE, ActionStatus.TODO),
        (ActionKind.PREVENT, ActionStatus.TO_DEBATE),
        (ActionKind.DETECT, ActionStatus.IN_PROGRESS),
    ]
    assert parsed.extra_sections == []


def test_bare_times_are_on_the_incident_day_not_on_the_day_the_page_was_written():
    # Written on 14 March about the evening of 13 March.
    parsed = markdown.parse(read("paiement-pool-connexions-fr.md"))
    assert parsed.fields["detected_at"] == at(2026, 3, 13, 18, 14)
    assert parsed.fields["ended_at"] == at(2026, 3, 13, 18, 55)
    assert [e["occurred_at"] for e in parsed.timeline] == [
        at(2026, 3, 13, 18, 5),
        at(2026, 3, 13, 18, 10),
        at(2026, 3, 13, 18, 14),
        at(2026, 3, 13, 18, 50),
    ]
    assert parsed.timeline[2]["text"] == "alerte sur #astreinte, Julien prend la main"


def test_sections_it_does_not_know_are_kept_where_they_stood():
    parsed = markdown.parse(read("search-indexer-memory-leak.md"))
    assert parsed.extra_sections == [
        {
            "heading": "Communication",
            "body": "- status page updated at 11:30 on 23 February\n"
            "- merchants with products created in the window received an e-mail",
            "position": markdown.SECTIONS.index("detection") + 1,
        },
        {
            "heading": "Links",
            "body": "- Grafana: indexer memory, 20-23 February\n- Sentry issue SEARCH-2291",
            "position": len(markdown.SECTIONS),
        },
    ]


def test_a_heading_inside_a_code_block_is_not_a_section():
    parsed = markdown.parse(
        "## POST MORTEM: Pool too small\n"
        "\n"
        "### Summary\n"
        "The pool was too small:\n"
        "\n"
        "```ini\n"
        "# pgbouncer.ini\n"
        "default_pool_size = 20\n"
        "```\n"
        "\n"
        "### Root Causes\n"
        "Pool size 20 for 64 workers.\n"
    )
    assert parsed.fields["summary"] == (
        "The pool was too small:\n\n```ini\n# pgbouncer.ini\ndefault_pool_size = 20\n```"
    )
    assert parsed.root_causes == [{"category": "", "description": "Pool size 20 for 64 workers."}]
    assert parsed.extra_sections == []


def test_a_title_given_with_the_file_names_a_page_whose_heading_is_generic():
    untitled = read("checkout-latency-wiki.md").replace(
        "## POST MORTEM: Checkout latency at the lunch peak", "## POST MORTEM"
    )
    assert markdown.parse(untitled, title="Checkout latency").title == "Checkout latency"
    # Without one, the file's name, said as a guess; strict refuses.
    named = markdown.parse(untitled, file_name="checkout-latency.md")
    assert named.title == "Checkout latency"
    assert "No title: the file's name is the title, 'Checkout latency'." in named.notes[0]
    with pytest.raises(markdown.MarkdownError) as exc:
        markdown.parse(untitled, strict=True)
    assert exc.value.line == 1
    assert exc.value.message.startswith(
        "The post-mortem has no title: its first heading 'POST MORTEM' does not name the incident."
    )


@pytest.mark.parametrize(
    ("heading", "key"),
    [
        ("2. Chronologie", "timeline"),
        ("IV. Impact", "impacts"),
        ("How'd We Do?", "lessons_learned"),
        ("Timeline (UTC)", "timeline"),
        ("📉 Impact", "impacts"),
        ("**Priorité**", "severity"),
        # What an export writes beside a field is never that field again.
        ("Root Causes (notes)", None),
        ("Status (as written)", None),
    ],
)
def test_a_heading_names_its_section_whatever_its_numbering_emoji_or_final_mark(heading, key):
    assert markdown.section_key(heading) == key


def test_fields_written_as_properties_definitions_or_an_html_table_are_read():
    page = (
        "Pool saturation\n===============\n\nSeverity:: SEV-2\n\nStatus\n: In review\n\n"
        "<table>\n<tr><th>Field</th><th>Value</th></tr>\n"
        "<tr><td>Date</td><td>2024-10-08</td></tr>\n<tr><td>Pager</td><td>#search</td></tr>\n"
        "</table>\n\nSummary\n-------\n\nThe pool was full.\n"
    )
    parsed = markdown.parse(page)
    assert parsed.title == "Pool saturation"
    assert parsed.fields["severity"] == Severity.SEV2
    assert parsed.fields["status"] == PostMortemStatus.IN_REVIEW
    assert parsed.fields["written_on"] == dt.date(2024, 10, 8)
    assert parsed.fields["summary"] == "The pool was full."
    # The row with no field is kept; the markup and the setext underlines are not text.
    assert [(s["heading"], s["body"]) for s in parsed.extra_sections] == [("Pager", "#search")]


def test_a_status_or_severity_it_does_not_know_is_kept_as_text_and_said_unless_strict():
    page = "# Basket slowdown\n\n**Status:** Resolved\n**Severity:** customer-facing\n\n"
    page += "## Summary\n\nSlow basket.\n"
    parsed = markdown.parse(page)
    assert "status" not in parsed.fields and "severity" not in parsed.fields
    assert [(s["heading"], s["body"]) for s in parsed.extra_sections] == [
        ("Status (as written)", "Resolved"),
        ("Severity (as written)", "customer-facing"),
    ]
    assert parsed.notes[0] == (
        "Line 3: Status 'Resolved' is not one of Draft, In review, Published: imported as "
        "Draft; the page's word is kept as text."
    )
    with pytest.raises(markdown.MarkdownError) as exc:
        markdown.parse(page, strict=True)
    assert [p.line for p in exc.value.problems] == [3, 4]


def test_bare_timeline_times_take_the_day_the_summary_names_and_say_so():
    page = (
        "# Slow order search\n\nDate: March 5th, 2024\n\n## Summary\n\n"
        "Order search was slow on March 4th, 2024.\n\n## Timeline\n\nAll times are PST.\n\n"
        "- 11:50 PM - autovacuum ANALYZE finishes\n- 11:58 PM - incident declared\n"
    )
    parsed = markdown.parse(page)
    pst = dt.timezone(dt.timedelta(hours=-8))
    assert [e["occurred_at"] for e in parsed.timeline] == [
        dt.datetime(2024, 3, 4, 23, 50, tzinfo=pst),
        dt.datetime(2024, 3, 4, 23, 58, tzinfo=pst),
    ]
    assert parsed.fields["detected_at"] == dt.datetime(2024, 3, 4, 23, 58, tzinfo=pst)
    assert any("2024-03-04, the day the summary names" in note for note in parsed.notes)


def test_a_task_list_item_gives_its_mention_link_due_date_and_keeps_the_rest():
    page = (
        "# Catalog OOM\n\n## Summary\n\nOOM kills.\n\n## Corrective actions\n\n"
        "- [x] Bound the image cache @mchen https://gitlab.example.com/catalog/-/issues/812\n"
        "- [ ] Add a soak test (due 2024-06-14) — Ana — needs a bigger runner\n"
    )
    first, second = markdown.parse(page).actions
    assert (first["title"], first["owner_name"], first["status"]) == (
        "Bound the image cache",
        "@mchen",
        ActionStatus.DONE,
    )
    assert first["ticket_url"] == "https://gitlab.example.com/catalog/-/issues/812"
    assert (second["title"], second["owner_name"], second["due_date"]) == (
        "Add a soak test",
        "Ana",
        dt.date(2024, 6, 14),
    )
    assert second["description"] == "needs a bigger runner"


# ---------------------------------------------------------------- export


def test_export_writes_the_sections_in_the_classic_order(make_postmortem, engineer):
    pm = make_postmortem(title="Pool exhausted", authors=[engineer])
    text = markdown.export(pm)
    assert text.startswith("## POST MORTEM: Pool exhausted\n\n### Date\n14 March 2026\n\n")
    assert headings(text) == [
        "Date",
        "Authors",
        "Status",
        "Severity",
        "When",
        "Summary",
        "Impacts",
        "Root Causes",
        "Trigger",
        "Resolution",
        "Detection",
        "Timeline",
        "Actions",
    ]
    assert "### Authors\nEmma Martin\n" in text
    assert "### Status\nDraft\n" in text
    assert "### Root Causes\nCategory: database\nA slow join on order_events.\n" in text


def test_export_writes_each_action_with_its_kind_and_status(make_postmortem):
    pm = make_postmortem()
    pm.actions.filter(number=2).update(status=ActionStatus.WONT_DO)
    text = markdown.export(pm)
    assert text.endswith(
        "### Actions\n"
        "**Action 1 (detect): Weekly load test**\n"
        "\n"
        "Status: to do\n"
        "\n"
        "**Action 2 (prevent): Index order_events**\n"
        "\n"
        "Status: won't do\n"
    )


def test_export_adds_the_figure_when_the_label_does_not_hold_it(make_postmortem):
    pm = make_postmortem()
    pm.impacts.create(label="error rate", value=Decimal("12.5"), unit="%", position=1)
    pm.impacts.create(label="p95 was 6 s", value=Decimal("6"), unit="s", position=2)
    text = markdown.export(pm)
    assert "### Impacts\n- failed requests: 270\n- error rate: 12.5%\n- p95 was 6 s\n" in text


def test_export_in_french_uses_the_french_headings(make_postmortem, engineer):
    text = markdown.export(make_postmortem(authors=[engineer]), language="fr")
    assert headings(text) == [
        "Date",
        "Auteurs",
        "Statut",
        "Sévérité",
        "Quand",
        "Résumé",
        "Impacts",
        "Causes racines",
        "Déclencheur",
        "Résolution",
        "Détection",
        "Chronologie",
        "Actions",
    ]


def test_export_in_french_writes_its_values_in_french_too(db):
    pm = import_text(read("checkout-latency-wiki.md"))
    text = markdown.export(pm, language="fr")
    assert "### Statut\nEn relecture" in text
    assert "### Date\n14 mars 2026" in text
    assert "**Action 1 (atténuer) : Make order events cheaper to read**" in text
    assert "Statut : en cours" in text and "Statut : à débattre" in text
    assert "Début : 2026-03-13 12:02" in text
    assert "Status:" not in text


def test_text_before_the_first_section_and_the_first_action_is_written_back(db):
    pm = import_text(
        "## POST MORTEM: Slow order search\n"
        "Draft written during the incident review.\n"
        "\n"
        "### Summary\n"
        "Order search took 20 seconds on a table of 12 million rows.\n"
        "\n"
        "### Actions\n"
        "Agreed at the review on 3 March.\n"
        "\n"
        "**Action 1 (repair): Add a trigram index on orders.reference**\n"
        "\n"
        "Status: to do\n"
    )
    text = markdown.export(pm)
    assert "## POST MORTEM: Slow order search\n\nDraft written during the incident review.\n" in (
        text
    )
    assert "### Actions (notes)\nAgreed at the review on 3 March.\n\n### Actions\n" in text


# ---------------------------------------------------------------- round trip


def test_the_fixtures_cover_both_formats():
    assert len(ALL_FIXTURES) >= 5
    assert set(CANONICAL) < set(ALL_FIXTURES)
    assert "checkout-latency-wiki.md" in WIKI_STYLE


@pytest.mark.parametrize("name", CANONICAL)
def test_a_page_in_the_exporters_format_comes_back_byte_for_byte(db, name):
    text = read(name)
    assert markdown.export(import_text(text)) == text


@pytest.mark.parametrize("name", WIKI_STYLE)
def test_a_wiki_page_settles_after_one_export(db, name):
    text = read(name)
    exported = markdown.export(import_text(text))
    # Otherwise it is in the exporter's format and belongs in CANONICAL.
    assert exported != text
    assert markdown.export(import_text(exported)) == exported


@pytest.mark.parametrize("language", ["en", "fr"])
@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_importing_the_export_gives_the_same_content_field_by_field(db, name, language):
    pm = import_text(read(name))
    first = content_of(pm)
    second = content_of(import_text(markdown.export(pm, language=language)))
    assert second.keys() == first.keys()
    for key in first:
        assert second[key] == first[key], key


def test_a_bullet_actions_aside_gives_its_owner_and_status_only_when_it_names_one():
    page = (
        "# Cache leak\n\n**Date:** 2025-06-03\n\n## Actions\n\n"
        "- Limit the facet cache (Julie Roux, done)\n"
        "- Bound the chart cache (LRU, 200 entries)\n"
        "- Alert on the memory slope (Marc Petit, todo, 2025-07-01)\n"
    )

    first, second, third = markdown.parse(page).actions

    assert (first["title"], first["owner_name"], first["status"]) == (
        "Limit the facet cache", "Julie Roux", ActionStatus.DONE,
    )  # fmt: skip
    assert second["title"] == "Bound the chart cache (LRU, 200 entries)"
    assert third["owner_name"] == "Marc Petit" and third["due_date"] == dt.date(2025, 7, 1)


def test_a_timeline_day_and_month_without_a_year_take_the_pages_and_an_impossible_one_is_named():
    page = "# Leak\n\n**Date:** 3 juin 2025\n\n## Chronologie\n\n* {} 08h10 : alerte\n"

    entry = markdown.parse(page.format("02/06")).timeline[0]

    assert entry["occurred_at"].date() == dt.date(2025, 6, 2)
    with pytest.raises(markdown.MarkdownError, match="'31/02' is not a day/month date"):
        markdown.parse(page.format("31/02"))
    undated = "# Leak\n\n## Chronologie\n\n* 02/06 08h10 : alerte\n"
    with pytest.raises(markdown.MarkdownError, match="'02/06' has no year, and the post-mortem"):
        markdown.parse(undated)


def test_an_impact_wrapped_over_two_lines_is_one_impact_with_its_figures():
    page = (
        "# Orders API slow\n\n**Date:** 2025-03-04\n\n## Impact\n\n"
        "- p95 latency of the orders API went from 180 ms\n  to 4.2 s during the import\n"
        "- 1,200 orders delayed\n\n"
        "Les paiements ont été ralentis de 300 ms\nà 2,1 s pendant 40 minutes.\n"
    )

    impacts = markdown.parse(page).impacts

    assert [(i["value_before"], i["value"], i["unit"]) for i in impacts] == [
        (Decimal("0.18"), Decimal("4.2"), "s"),
        (None, Decimal("1200"), "orders"),
        (Decimal("0.3"), Decimal("2.1"), "s"),
    ]
    assert impacts[0]["label"].endswith("to 4.2 s during the import")


def test_a_page_dated_03_04_2024_is_read_day_first_and_says_so():
    page = "# Pool exhausted\n\n**Date:** 03/04/2024\n\n## Summary\n\n3/4 pods restarted.\n"

    parsed = markdown.parse(page)

    assert parsed.fields["written_on"] == dt.date(2024, 4, 3)
    assert parsed.notes[-1] == (
        "Dates such as 03/04/2024 are read day first (3 April, not March 4): check them if "
        "the page was written month first."
    )
    assert not any("3/4" in note for note in markdown.parse(page.replace("03/04", "13/04")).notes)


def test_a_due_date_without_a_year_takes_the_pages_or_the_next_and_says_so():
    page = (
        "# Slow invoices\n\n**Date:** 12/12/2024\n\n## Plan d'action\n\n"
        "| Action | Porteur | Échéance | État |\n|---|---|---|---|\n"
        "| Paginer | Claire | 20/12 | Fait |\n| Indexer | Hugo | 15/01 | À faire |\n"
    )

    parsed = markdown.parse(page)

    assert [a["due_date"] for a in parsed.actions] == [dt.date(2024, 12, 20), dt.date(2025, 1, 15)]
    assert "Line 10: Due date '15/01' has no year: read as 2025-01-15." in parsed.notes
    with pytest.raises(markdown.MarkdownError) as exc:
        markdown.parse(page, strict=True)
    assert "Due date '20/12' has no year (expected e.g. 14 March 2026)." in str(exc.value)


def test_a_timeline_past_midnight_moves_to_the_next_day_but_one_newest_first_does_not():
    page = (
        "# Batch overran\n\nDate: 2024-11-05\n\n## Timeline (all times CET)\n\n"
        "- 23:10 — batch starts\n- 00:30 — alert: batch above 1 h\n- 08:20 — batch killed\n"
    )

    parsed = markdown.parse(page)

    assert [e["occurred_at"].isoformat() for e in parsed.timeline] == [
        "2024-11-05T23:10:00+01:00",
        "2024-11-06T00:30:00+01:00",
        "2024-11-06T08:20:00+01:00",
    ]
    assert any("read as the next day, 2024-11-06" in note for note in parsed.notes)
    newest_first = page.replace("- 23:10 — batch starts\n", "").replace(
        "- 00:30", "- 15:00 — batch killed\n- 14:30"
    )
    times = [e["occurred_at"].day for e in markdown.parse(newest_first).timeline]
    assert times == [5, 5, 5]


def test_relative_timeline_times_need_the_moment_of_t_plus_0():
    page = (
        "# CDN purge\n\nDate: 2024-09-18\n\n## Timeline\n\n"
        "T+0 = 2024-09-18 10:00 UTC.\n\n- T+0: purge issued\n- T+12 min: rate limit on\n"
        "- T+1h30: hit ratio back\n"
    )

    timeline = markdown.parse(page).timeline

    assert [e["occurred_at"].strftime("%H:%M") for e in timeline] == ["10:00", "10:12", "11:30"]
    with pytest.raises(markdown.MarkdownError) as exc:
        markdown.parse(page.replace("T+0 = 2024-09-18 10:00 UTC.\n", ""))
    assert "Timeline time 'T+12' is relative, and the page does not say when T+0 was" in str(
        exc.value
    )


def test_a_british_timeline_reads_2_15pm():
    page = "# Basket slow\n\nDate: 3rd March 2024\n\n## Timeline\n\n- 2.15pm — email sent\n"

    (entry,) = markdown.parse(page).timeline

    assert entry["occurred_at"].strftime("%Y-%m-%d %H:%M") == "2024-03-03 14:15"


def test_a_write_up_without_an_impact_section_gives_the_figures_of_its_prose_and_says_so():
    page = (
        "# Slow API\n\nOn 14 February 2024, between 09:12 and 10:47 UTC, about 18% of requests "
        "timed out and p99 latency went from 350 ms to 9.8 s.\n\n## What happened\n\n"
        "p99 latency went from 350 ms to 9.8 s after a deploy.\n"
    )

    parsed = markdown.parse(page)

    assert [(i["value"], i["unit"], i["value_before"]) for i in parsed.impacts] == [
        (Decimal("18"), "%", None),
        (Decimal("9.8"), "s", Decimal("0.35")),
    ]
    assert parsed.fields["started_at"].isoformat() == "2024-02-14T09:12:00+00:00"
    assert any("2 impact(s) read from its prose" in note for note in parsed.notes)


def test_nested_front_matter_gives_the_incidents_times():
    page = (
        "---\ntitle: Webhook backlog\ndate: 2024-04-22\nincident:\n  started: 2024-04-22 08:40 "
        "UTC\n  detected: 2024-04-22 08:52 UTC\n---\n\n## Summary\n\nLagged.\n"
    )

    fields = markdown.parse(page).fields

    assert fields["started_at"].isoformat() == "2024-04-22T08:40:00+00:00"
    assert fields["detected_at"].isoformat() == "2024-04-22T08:52:00+00:00"


@pytest.mark.parametrize(
    ("day", "offset"), [("2024-04-17", "+02:00"), ("2024-01-17", "+01:00")], ids=["été", "hiver"]
)
def test_a_timeline_in_paris_time_takes_the_offset_of_its_day(day, offset):
    page = f"# Sessions\n\nDate : {day}\n\n## Chronologie (heure de Paris)\n\n- 21h40 — début\n"

    (entry,) = markdown.parse(page).timeline

    assert entry["occurred_at"].isoformat() == f"{day}T21:40:00{offset}"


def test_an_impact_paragraph_telling_two_figures_gives_two_impacts_and_keeps_its_times():
    page = (
        "# Payments errors\n\n## Impact\n\nBetween 10:02 and 11:40 UTC, 6.5% of payment API "
        "calls failed and p95 latency rose from 300 ms to 7 s.\n"
    )

    impacts = markdown.parse(page).impacts

    assert [(i["value"], i["unit"], i["value_before"]) for i in impacts] == [
        (Decimal("6.5"), "%", None),
        (Decimal("7"), "s", Decimal("0.3")),
    ]
    assert impacts[0]["label"].startswith("Between 10:02 and 11:40 UTC, 6.5% of payment")
