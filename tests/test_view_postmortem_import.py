from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse

from postmortems.models import (
    Action,
    ExtraSection,
    HistoryEntry,
    ImpactFigure,
    PostMortem,
    RootCause,
    Team,
    TimelineEntry,
)

URL = reverse("postmortems:import")

PAGE = """## POST MORTEM: Checkout pool exhausted

### Date
14 March 2026

### Authors
Emma Martin, Jean Dupont

### Status
{status}

### Severity
SEV2

### Team
Payments

### Summary
The checkout API returned 502s for 38 minutes.

### Impacts
- 270 failed requests

### Root Causes
Category: database
A slow join on order_events.

### Customer communication
We posted on the status page.

### Actions
**Action 1 (detect): Alert on pool usage**
Owner: karim
Status: in progress

**Action 2 (prevent): Index order_events**
Owner: Jean Dupont
Due: 2026-04-30
Status: to do
"""


def upload(text: str, name: str = "postmortem.md") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="text/markdown")


def confirm(client, text: str, *, name: str = "postmortem.md", title: str = ""):
    """Preview the page, then confirm it as the preview's form does."""
    preview = client.post(URL, {"file": upload(text, name), "title": title})
    assert preview.status_code == 200, preview.content.decode()[:2000]
    assert 'name="confirm"' in preview.content.decode()
    return client.post(URL, {"confirm": "1", "text": text, "title": title, "file_name": name})


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def nothing_written() -> bool:
    return not any(
        model.objects.exists()
        for model in (
            PostMortem,
            ImpactFigure,
            RootCause,
            TimelineEntry,
            Action,
            ExtraSection,
            HistoryEntry,
            Team,
        )
    )


def test_it_shows_the_upload_form(client, engineer, django_assert_num_queries):
    client.force_login(engineer)

    # session, user, groups: the form has no <select>.
    with django_assert_num_queries(3):
        response = client.get(URL)

    assert response.status_code == 200
    assert 'enctype="multipart/form-data"' in response.content.decode()


def test_it_imports_a_wiki_page(client, engineer, other_engineer, django_assert_num_queries):
    client.force_login(engineer)

    # session, user, groups (3); SAVEPOINT (1); the authors: "Emma Martin" and
    # "Jean Dupont" by username, then by first and last name (4); the team: by
    # name, its slug taken?, INSERT (3); the owners: "karim" by username, "Jean
    # Dupont" by username and by name (3); the save: SAVEPOINT, INSERT post-mortem,
    # authors SELECT + INSERT (4); SELECT + INSERT for impacts, root causes and
    # other sections, SELECT only for the empty timeline (7); actions: SELECT + 2
    # INSERTs (3); bulk INSERT history (1); reindex: SELECT post-mortem, causes,
    # actions + UPDATE (4); refresh, RELEASE, RELEASE (3).
    preview = client.post(URL, {"file": upload(PAGE.format(status="Draft"))})
    assert preview.status_code == 200 and nothing_written()
    with django_assert_num_queries(36):
        response = client.post(
            URL, {"confirm": "1", "text": PAGE.format(status="Draft"), "file_name": "pm.md"}
        )

    pm = PostMortem.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("postmortems:detail", args=[pm.pk])
    assert messages_of(response) == [("success", "Post-mortem imported.")]
    pm.refresh_from_db()
    assert pm.title == "Checkout pool exhausted"
    assert pm.status == "draft"
    assert pm.severity == "sev2"
    assert pm.written_on == dt.date(2026, 3, 14)
    assert pm.team.name == "Payments"
    assert pm.created_by == engineer
    assert list(pm.authors.all()) == [engineer]
    assert pm.external_authors == ["Jean Dupont"]
    assert [(i.label, i.value) for i in pm.impacts.all()] == [("270 failed requests", Decimal(270))]
    assert [(c.category, c.description) for c in pm.root_causes.all()] == [
        ("database", "A slow join on order_events.")
    ]
    assert [(s.heading, s.body) for s in pm.extra_sections.all()] == [
        ("Customer communication", "We posted on the status page.")
    ]
    first, second = pm.actions.all()
    assert (first.number, first.kind, first.owner, first.status) == (
        1,
        "detect",
        other_engineer,
        "in_progress",
    )
    assert (second.owner, second.owner_name, second.due_date) == (
        None,
        "Jean Dupont",
        dt.date(2026, 4, 30),
    )
    assert pm.history.filter(subject="post-mortem", verb="imported", actor=engineer).exists()


def test_it_imports_a_published_page_as_published_when_it_is_complete(client, engineer):
    client.force_login(engineer)

    confirm(client, PAGE.format(status="Published"))

    pm = PostMortem.objects.get()
    assert pm.status == "published"
    assert pm.published_at is not None


def test_it_imports_an_incomplete_published_page_as_in_review_and_says_why(client, engineer):
    client.force_login(engineer)
    page = PAGE.format(status="Published").replace("**Action 1 (detect)", "**Action 1 (repair)")

    response = confirm(client, page)

    assert messages_of(response) == [
        (
            "warning",
            "The page says Published, but publishing needs: A detect action (SEV1/SEV2). "
            "It was imported as In review.",
        ),
        ("success", "Post-mortem imported."),
    ]
    pm = PostMortem.objects.get()
    assert pm.status == "in_review"
    assert pm.published_at is None


def test_it_takes_the_title_from_the_form_when_the_page_has_none(client, engineer):
    client.force_login(engineer)
    page = PAGE.format(status="Draft").replace("## POST MORTEM: Checkout pool exhausted", "# RETEX")

    confirm(client, page, title="Pool incident")

    assert PostMortem.objects.get().title == "Pool incident"


def _line(page: str, text: str) -> int:
    return page.splitlines().index(text) + 1


BAD_CATEGORY = PAGE.format(status="Draft").replace("Category: database", "Category: weather")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Just some notes.\nNo headings here.", "it has no &#39;#&#39; headings"),
        (
            BAD_CATEGORY,
            f"Line {_line(BAD_CATEGORY, 'Category: weather')}: Root cause category "
            "&#39;weather&#39; is not one of",
        ),
        ("   \n\n  ", "The file is empty."),
    ],
    ids=["not-markdown", "bad-category", "blank"],
)
def test_it_rejects_a_bad_page_naming_the_problem_and_saves_nothing(
    client, engineer, text, message
):
    client.force_login(engineer)

    response = client.post(URL, {"file": upload(text)})

    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert "Nothing was saved." in html
    assert nothing_written()


def test_it_rejects_an_empty_file(client, engineer):
    client.force_login(engineer)

    response = client.post(URL, {"file": upload("")})

    assert response.status_code == 400
    assert "The submitted file is empty." in response.content.decode()
    assert nothing_written()


def test_it_rejects_a_file_that_is_not_utf8(client, engineer):
    client.force_login(engineer)
    data = "## POST MORTEM: Café\n\n### Summary\nRésumé".encode("latin-1")

    response = client.post(URL, {"file": SimpleUploadedFile("pm.md", data)})

    assert response.status_code == 400
    assert "The file is not UTF-8 text" in response.content.decode()
    assert nothing_written()


@override_settings(POSTMORTEM_IMPORT_MAX_BYTES=1024)
def test_it_rejects_a_file_that_is_too_large(client, engineer):
    client.force_login(engineer)
    page = PAGE.format(status="Draft") + "\n### Notes\n" + "x" * 2000

    response = client.post(URL, {"file": upload(page)})

    assert response.status_code == 400
    assert "The file is too large" in response.content.decode()
    assert "at most 1024" in response.content.decode()
    assert nothing_written()


def test_it_requires_a_file(client, engineer):
    client.force_login(engineer)

    response = client.post(URL, {"title": "No file"})

    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    assert nothing_written()


def test_it_rejects_a_put(client, engineer):
    client.force_login(engineer)

    response = client.put(URL)

    assert response.status_code == 405


@pytest.mark.parametrize("role", ["viewer", "manager", "nobody"])
def test_it_forbids_anyone_but_an_engineer(request, db, client, role):
    client.force_login(request.getfixturevalue(role))

    assert client.get(URL).status_code == 403
    response = client.post(URL, {"file": upload(PAGE.format(status="Draft"))})

    assert response.status_code == 403
    assert nothing_written()


def test_it_sends_an_anonymous_visitor_to_the_login_page(client, db):
    response = client.post(URL, {"file": upload(PAGE.format(status="Draft"))})

    assert response.status_code == 302
    assert response.url == f"/login/?next={URL}"
    assert nothing_written()


def test_a_page_without_a_title_is_imported_with_the_guess_said(client, engineer):
    client.force_login(engineer)
    page = PAGE.format(status="Draft").replace("## POST MORTEM: Checkout pool exhausted", "# RETEX")

    response = confirm(client, page, name="pool-incident.md")
    response = client.get(response.url)

    pm = PostMortem.objects.get()
    assert pm.title == "The checkout API returned 502s for 38 minutes"
    page_text = response.content.decode()
    assert "No title: the summary&#39;s first sentence is the title" in page_text


def test_the_preview_shows_each_field_and_every_guess_and_saves_nothing(client, engineer):
    client.force_login(engineer)
    page = PAGE.format(status="Brouillon").replace("Status: to do", "Status: to debatre")

    response = client.post(URL, {"file": upload(page, name="pool.md")})

    text = response.content.decode()
    assert response.status_code == 200
    assert nothing_written()
    assert "Checkout pool exhausted" in text and "Alert on pool usage" in text
    assert "Customer communication" in text  # kept as text, and said so
    assert "Action 2 status &#39;to debatre&#39; read as &#39;to debate&#39;." in text
    assert 'type="hidden" name="text"' in text


def test_a_page_with_several_problems_lists_each_of_them(client, engineer):
    client.force_login(engineer)
    page = BAD_CATEGORY.replace("14 March 2026", "31 February 2026")

    response = client.post(URL, {"file": upload(page)})

    text = response.content.decode()
    assert response.status_code == 400
    assert "The page has 2 problems:" in text
    assert "Date &#39;31 February 2026&#39; is not a date" in text
    assert "Root cause category &#39;weather&#39; is not one of" in text
    assert nothing_written()
