"""services.postmortem_import: a wiki page becomes a post-mortem, or nothing at all.

Every bad page must give the author a message naming the problem (and the
line, when there is one), and must leave every table as it was.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import pytest
from django.utils import translation

from postmortems import services
from postmortems.markdown import MarkdownError
from postmortems.models import (
    Action,
    ActionStatus,
    ExtraSection,
    HistoryEntry,
    ImpactFigure,
    PostMortem,
    PostMortemStatus,
    RootCause,
    Team,
    TimelineEntry,
)

FIXTURES = Path(__file__).parent / "fixtures" / "postmortems"


def read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def line_of(text: str, fragment: str) -> int:
    """The 1-based number of the one line of ``text`` holding ``fragment``."""
    numbers = [n for n, line in enumerate(text.splitlines(), start=1) if fragment in line]
    assert len(numbers) == 1, (fragment, numbers)
    return numbers[0]


def row_counts() -> dict[str, int]:
    models: list[Any] = [
        PostMortem,
        PostMortem.authors.through,
        ImpactFigure,
        RootCause,
        TimelineEntry,
        Action,
        ExtraSection,
        HistoryEntry,
        Team,
    ]
    return {model.__name__: model.objects.count() for model in models}


@pytest.fixture
def existing(make_postmortem, engineer) -> dict[str, int]:
    """A post-mortem already in the database, so "unchanged" is not "empty"."""
    pm = make_postmortem(title="An earlier incident", authors=[engineer])
    pm.extra_sections.create(heading="Communication", body="Status page updated.", position=13)
    Team.objects.create(name="Billing", slug="billing")
    counts = row_counts()
    assert all(counts.values()), counts
    return counts


def import_bytes(data: bytes, **kwargs: Any) -> services.ImportResult:
    return services.postmortem_import(data=data, actor=None, **kwargs)


# ---------------------------------------------------------------- happy paths


def test_it_creates_the_post_mortem_with_all_its_rows(engineer):
    result = services.postmortem_import(
        data=(FIXTURES / "invoice-export-full-scan-sev1.md").read_bytes(), actor=engineer
    )
    pm = PostMortem.objects.get(pk=result.postmortem.pk)
    assert result.warnings == []
    assert pm.title == "Invoice export full scan took the orders database down"
    assert pm.status == PostMortemStatus.PUBLISHED
    assert pm.published_at is not None
    assert pm.severity == "sev1"
    assert pm.team.name == "Billing"
    assert pm.external_authors == ["Hannah Becker", "Luis Ortega"]
    assert pm.created_by == engineer
    assert pm.impacts.count() == 4
    assert pm.root_causes.count() == 2
    assert [(a.number, a.kind, a.status) for a in pm.actions.all()] == [
        (1, "mitigate", "in_progress"),
        (2, "prevent", "todo"),
        (3, "detect", "done"),
    ]
    history = HistoryEntry.objects.get(postmortem=pm, subject="post-mortem")
    assert (history.verb, history.actor) == ("imported", engineer)


def test_the_wiki_sample_imports_with_a_title_given_with_the_file(db):
    untitled = read("checkout-latency-wiki.md").replace(
        "## POST MORTEM: Checkout latency at the lunch peak", "## POST MORTEM"
    )
    pm = import_bytes(untitled.encode(), title="Checkout latency").postmortem
    assert pm.title == "Checkout latency"
    assert pm.status == PostMortemStatus.IN_REVIEW
    assert pm.actions.count() == 2


def test_authors_and_owners_with_an_account_are_linked_to_it(engineer):
    text = read("reporting-pool-exhaustion-owners.md")
    text = text.replace("### Authors\nNora Kowalski", "### Authors\nNora Kowalski, Emma Martin")
    text = text.replace("Owner: Idris Okafor\nDue: 2026-04-30", "Owner: emma\nDue: 2026-04-30")
    pm = import_bytes(text.encode()).postmortem
    assert list(pm.authors.all()) == [engineer]
    assert pm.external_authors == ["Nora Kowalski"]
    second = pm.actions.get(number=2)
    assert (second.owner, second.owner_name) == (engineer, "")
    fourth = pm.actions.get(number=4)
    assert (fourth.owner, fourth.owner_name) == (None, "Idris Okafor")


def test_it_reuses_a_team_of_the_same_name(existing):
    pm = import_bytes((FIXTURES / "invoice-export-full-scan-sev1.md").read_bytes()).postmortem
    assert pm.team == Team.objects.get(slug="billing")
    assert Team.objects.count() == existing["Team"]


def test_a_new_team_whose_slug_is_taken_gets_its_own(db):
    taken = Team.objects.create(name="Data-Platform", slug="data-platform")
    pm = import_bytes((FIXTURES / "reporting-pool-exhaustion-owners.md").read_bytes()).postmortem
    assert pm.team != taken
    assert (pm.team.name, pm.team.slug) == ("Data Platform", "data-platform-2")


def test_a_published_page_missing_what_publishing_needs_comes_in_as_in_review(db):
    text = read("invoice-export-full-scan-sev1.md").replace("(prevent)", "(process)")
    with translation.override("en"):
        result = import_bytes(text.encode())
    assert result.postmortem.status == PostMortemStatus.IN_REVIEW
    assert result.postmortem.published_at is None
    assert result.warnings == [
        "The page says Published, but publishing needs: A prevent action (SEV1/SEV2). "
        "It was imported as In review."
    ]


def test_a_done_action_without_a_time_is_done_now(db):
    text = read("reporting-pool-exhaustion-owners.md").replace("Status: to debate", "Status: done")
    action = import_bytes(text.encode()).postmortem.actions.get(number=3)
    assert action.status == ActionStatus.DONE
    assert action.done_at is not None


def test_a_utf8_byte_order_mark_and_windows_line_ends_are_accepted(db):
    data = codecs.BOM_UTF8 + read("search-indexer-memory-leak.md").replace("\n", "\r\n").encode()
    pm = import_bytes(data).postmortem
    assert pm.title == "Memory leak in the search indexer"
    assert pm.summary.startswith("From 20 February the search indexer's memory grew")
    assert "\r" not in pm.summary


# ---------------------------------------------------------------- bad files


def assert_rejected(
    data: bytes, existing: dict[str, int], message: str, line: int | None, strict: bool = False
):
    with pytest.raises(MarkdownError) as exc:
        import_bytes(data, strict=strict)
    assert message in exc.value.message
    assert exc.value.line == line
    assert row_counts() == existing


def test_an_image_is_not_markdown(existing):
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x02\x80\x00\x00\x01\xe0\x08\x06"
    with pytest.raises(MarkdownError) as exc:
        import_bytes(png)
    assert exc.value.message == (
        "The file is not Markdown: it holds binary data (an image, an archive or a PDF?)."
    )
    assert row_counts() == existing


def test_a_page_with_a_nul_byte_is_binary_and_the_line_is_named(existing):
    data = b"## POST MORTEM: Pool exhausted\n\n### Summary\nThe pool\x00 was full.\n"
    assert_rejected(data, existing, "The file is not Markdown: it holds binary data", 4)


def test_an_html_page_is_not_markdown(existing):
    data = b"\n\n<!DOCTYPE html>\n<html><body><h2>Post mortem</h2></body></html>\n"
    assert_rejected(data, existing, "The file is not Markdown: it is an HTML or XML document.", 3)


def test_a_json_export_is_not_markdown(existing):
    data = b'{"title": "Pool exhausted", "summary": "The pool was full."}\n'
    assert_rejected(data, existing, "The file is not Markdown: it looks like JSON.", 1)


def test_plain_text_without_headings_is_not_a_markdown_post_mortem(existing):
    data = b"Pool exhausted at lunch.\nWe restarted the API at 12:40.\n"
    assert_rejected(
        data,
        existing,
        "The file is not a Markdown post-mortem: it has no '#' headings "
        "(expected a title and sections such as '### Summary').",
        None,
    )


def test_a_page_with_headings_but_no_post_mortem_section_is_refused(existing):
    data = b"# Team notes\n\n## Lunch menu\nPasta.\n"
    assert_rejected(data, existing, "No post-mortem section found", None)


def test_a_windows_1252_file_is_not_utf8_and_the_line_is_named(existing):
    text = read("checkout-latency-wiki.md")
    assert_rejected(
        text.encode("cp1252"),
        existing,
        "The file is not UTF-8 text (byte 0xe1 cannot be decoded); save it as UTF-8 and try again.",
        line_of(text, "Tomás"),
    )


def test_a_utf16_file_is_not_utf8(existing):
    data = read("checkout-latency-wiki.md").encode("utf-16")
    assert_rejected(data, existing, "The file is not UTF-8 text (byte 0xff", 1)


@pytest.mark.parametrize("data", [b"", b" \n\n\t\n"])
def test_an_empty_file_is_refused(existing, data):
    assert_rejected(data, existing, "The file is empty.", None)


def test_a_page_whose_heading_does_not_name_the_incident_has_no_title_under_strict(existing):
    untitled = read("checkout-latency-wiki.md").replace(
        "## POST MORTEM: Checkout latency at the lunch peak", "## POST MORTEM"
    )
    assert_rejected(
        untitled.encode(),
        existing,
        "The post-mortem has no title: its first heading 'POST MORTEM' does not name the "
        "incident. Write it as '## POST MORTEM: <title>', add a '### Title' section, or give "
        "a title with the file.",
        1,
        strict=True,
    )


# ---------------------------------------------------------------- bad lines


def sample_with(old: str, new: str) -> tuple[bytes, str]:
    text = read("checkout-latency-wiki.md")
    assert old in text
    text = text.replace(old, new)
    return text.encode(), text


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "**Action 1 (mitigate):",
            "**Action 1 (hotfix):",
            "Action 1 kind 'hotfix' is not one of investigate, mitigate, repair, detect, "
            "prevent, process.",
        ),
        (
            "**Action 2 (detect):",
            "**Action 2:",
            "Action 2 has no kind: write '**Action 2 (mitigate): …**'",
        ),
        (
            "Status: to debate",
            "Status: next quarter",
            "Action 2 status 'next quarter' is not one of to do, to debate, in progress, done, "
            "won't do.",
        ),
        (
            "14 March 2026",
            "31 February 2026",
            "Date '31 February 2026' is not a date (expected e.g. 14 March 2026).",
        ),
        (
            "Status: in progress",
            "Status: in progress\nDue: end of sprint",
            "Due date 'end of sprint' is not a date (expected e.g. 14 March 2026).",
        ),
        (
            "Status: in progress",
            "Status: in progress\nTicket: OPS-1234",
            "Action 1 ticket 'OPS-1234' is not an http(s) URL.",
        ),
        (
            "In review",
            "Almost done",
            "Status 'Almost done' is not one of Draft, In review, Published.",
        ),
    ],
    ids=[
        "action-kind",
        "action-without-kind",
        "action-status",
        "date",
        "due-date",
        "ticket",
        "status",
    ],
)
def test_a_bad_line_is_named_with_its_problem_under_strict(existing, old, new, message):
    data, text = sample_with(old, new)
    assert_rejected(data, existing, message, line_of(text, new.splitlines()[-1]), strict=True)


def test_without_strict_each_guess_is_imported_and_said(db):
    data, text = sample_with("Status: to debate", "Status: to debatre")
    data = data.replace(b"**Action 1 (mitigate):", b"**Action 1 (hotfix):")
    result = import_bytes(data)
    assert [a.status for a in result.postmortem.actions.all()] == ["in_progress", "to_debate"]
    line = line_of(text, "Status: to debatre")
    assert f"Line {line}: Action 2 status 'to debatre' read as 'to debate'." in result.warnings
    assert any("Action 1 has no kind the reader knows ('hotfix')" in w for w in result.warnings)


def test_every_problem_of_a_page_is_reported_at_once_under_strict(existing):
    data, text = sample_with("14 March 2026", "31 February 2026")
    data = data.replace(b"Status: in progress", b"Status: in progress\nDue: someday")
    with pytest.raises(MarkdownError) as exc:
        import_bytes(data, strict=True)
    messages = [p.message for p in exc.value.problems]
    assert messages[0] == "Date '31 February 2026' is not a date (expected e.g. 14 March 2026)."
    assert "Due date 'someday' is not a date (expected e.g. 14 March 2026)." in messages
    assert exc.value.message.startswith(f"{len(messages)} problems: Line 4: Date '31 February")
    assert row_counts() == existing


def test_a_due_date_that_is_a_plan_not_a_date_is_kept_in_the_action_and_said(db):
    data, text = sample_with(
        "Status: in progress", "Status: in progress\nDue: Q3, after the freeze"
    )
    result = import_bytes(data)
    action = result.postmortem.actions.get(number=1)
    assert action.due_date is None and "Due: Q3, after the freeze" in action.description
    line = line_of(text, "Due: Q3, after the freeze")
    assert (
        f"Line {line}: Action 1 due date 'Q3, after the freeze' is not a date: kept in its "
        "description." in result.warnings
    )


def test_an_action_number_written_twice_is_refused_at_its_second_heading_under_strict(existing):
    data, text = sample_with("**Action 2 (detect): Know", "**Action 1 (detect): Know")
    first = line_of(text, "**Action 1 (mitigate)")
    assert_rejected(
        data,
        existing,
        f"Action 1 appears twice (first on line {first}).",
        line_of(text, "**Action 1 (detect)"),
        strict=True,
    )


@pytest.mark.parametrize("heading", ["### Summary", "### Résumé", "### SUMMARY"])
def test_a_section_written_twice_is_refused_at_its_second_heading_under_strict(existing, heading):
    data, text = sample_with("### Trigger", f"{heading}\nAnother summary.\n\n### Trigger")
    first = text.splitlines().index("### Summary") + 1
    assert_rejected(
        data,
        existing,
        f"The section '{heading[4:]}' appears twice (first on line {first}).",
        line_of(text, "Another summary.") - 1,
        strict=True,
    )


def test_an_incident_that_ends_before_it_starts_is_refused(existing):
    data, text = sample_with(
        "### Summary", "### When\nStarted: 2026-03-13 12:02\nEnded: 2026-03-13 11:40\n\n### Summary"
    )
    assert_rejected(
        data,
        existing,
        "The incident cannot end before it starts: Ended 2026-03-13 11:40 is before Started "
        "2026-03-13 12:02.",
        line_of(text, "Ended:"),
    )


@pytest.mark.parametrize(
    ("old", "new", "message", "fragment"),
    [
        (
            "- 31% of requests failed",
            "- 31% of requests failed, " + "mostly on the payment step " * 12,
            "The impact '31% of requests failed, mostly on the pa…' is longer than 300 "
            "characters; shorten it.",
            "31% of",
        ),
        (
            "Make order events cheaper to read",
            "Make order events cheaper to read " + "and write " * 20,
            "Action 1 title 'Make order events cheaper to read and wr…' is longer than 200 "
            "characters; shorten it.",
            "**Action 1",
        ),
        (
            "Status: to debate",
            "Status: to debate\nOwner: " + "the database reliability working group " * 3,
            "Action 2 owner 'the database reliability working group t…' is longer than 100 "
            "characters; shorten it.",
            "Owner:",
        ),
        (
            "### Trigger",
            "### " + "Communication with merchants " * 8 + "\nE-mail.\n\n### Trigger",
            "The heading 'Communication with merchants Communicati…' is longer than 200 "
            "characters; shorten it.",
            "### Communication",
        ),
        (
            "- 31% of requests failed",
            "- order 20260313120512345 was charged twice",
            "The figure 20260313120512345 is too large to store (at most 16 digits before the "
            "decimal point).",
            "was charged twice",
        ),
    ],
    ids=["impact", "action-title", "owner", "heading", "figure"],
)
def test_a_value_too_long_to_store_is_named_instead_of_crashing(
    existing, old, new, message, fragment
):
    data, text = sample_with(old, new)
    assert_rejected(data, existing, message, line_of(text, fragment))


def test_a_failure_after_the_rows_are_written_leaves_nothing_behind(existing, monkeypatch):
    # The import creates a team, the post-mortem and its rows before it
    # reindexes; a failure there must undo all of it, team included.
    def fail(**kwargs: Any) -> None:
        raise RuntimeError("search index unavailable")

    monkeypatch.setattr(services, "postmortem_reindex", fail)
    with pytest.raises(RuntimeError):
        import_bytes((FIXTURES / "reporting-pool-exhaustion-owners.md").read_bytes())
    assert row_counts() == existing
    assert not Team.objects.filter(name="Data Platform").exists()
