from __future__ import annotations

import pytest
from django.urls import reverse

from postmortems import services
from postmortems.models import PostMortem


def url(pm: PostMortem) -> str:
    return reverse("postmortems:export", args=[pm.pk])


def test_it_downloads_the_post_mortem_as_markdown(
    client, engineer, viewer, make_postmortem, django_assert_num_queries
):
    pm = make_postmortem(actor=engineer, authors=[engineer], title="Pool exhausted!")
    updated_at = pm.updated_at
    client.force_login(viewer)

    # session, user, groups, the visible post-mortem, then its 6 prefetches:
    # authors, impacts, root causes, timeline, other sections, actions with owners.
    with django_assert_num_queries(10):
        response = client.get(url(pm))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert (
        response["Content-Disposition"]
        == f'attachment; filename="postmortem-{pm.pk}-pool-exhausted.md"'
    )
    text = response.content.decode()
    assert text.startswith("## POST MORTEM: Pool exhausted!\n")
    for part in (
        "### Authors\nEmma Martin",
        "### Summary\nThe checkout API returned 502s.",
        "### Root Causes\nCategory: database\nA slow join on order_events.",
        "**Action 1 (detect): Weekly load test**",
        "**Action 2 (prevent): Index order_events**",
    ):
        assert part in text, part
    # A download writes nothing.
    pm.refresh_from_db()
    assert pm.updated_at == updated_at
    assert pm.history.count() == 3


def test_it_writes_french_headings_on_request(client, viewer, make_postmortem):
    pm = make_postmortem()
    client.force_login(viewer)

    text = client.get(url(pm), {"lang": "fr"}).content.decode()

    assert "### Résumé\n" in text
    assert "### Causes racines\n" in text
    assert "### Summary" not in text


def test_it_writes_in_the_readers_language_by_default(client, viewer, make_postmortem):
    pm = make_postmortem()
    client.force_login(viewer)

    text = client.get(url(pm), HTTP_ACCEPT_LANGUAGE="fr").content.decode()

    assert "### Résumé\n" in text


def test_it_falls_back_to_english_for_an_unknown_language(client, viewer, make_postmortem):
    pm = make_postmortem()
    client.force_login(viewer)

    response = client.get(url(pm), {"lang": "xx"})

    assert response.status_code == 200
    assert "### Summary\n" in response.content.decode()


def test_an_export_imports_back_to_the_same_post_mortem(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer, authors=[engineer])
    client.force_login(engineer)
    data = client.get(url(pm)).content

    copy = services.postmortem_import(data=data, actor=engineer).postmortem

    for name in ("title", "severity", "written_on", "started_at", "ended_at", "summary"):
        assert getattr(copy, name) == getattr(pm, name), name
    assert list(copy.authors.all()) == [engineer]
    assert [(a.number, a.kind, a.title) for a in copy.actions.all()] == [
        (a.number, a.kind, a.title) for a in pm.actions.all()
    ]


def test_it_names_a_title_without_letters_by_its_id(client, viewer, make_postmortem):
    pm = make_postmortem(title="!!!")
    client.force_login(viewer)

    response = client.get(url(pm))

    assert response["Content-Disposition"] == (
        f'attachment; filename="postmortem-{pm.pk}-postmortem.md"'
    )


def test_it_rejects_a_post(client, engineer, make_postmortem):
    pm = make_postmortem()
    client.force_login(engineer)

    response = client.post(url(pm))

    assert response.status_code == 405


def test_it_forbids_a_user_without_a_role(client, nobody, make_postmortem):
    pm = make_postmortem()
    client.force_login(nobody)

    response = client.get(url(pm))

    assert response.status_code == 403
    assert b"Pool exhausted" not in response.content


@pytest.mark.parametrize("role", ["viewer", "other_engineer"])
def test_it_hides_a_private_post_mortem_from_outsiders(
    request, client, engineer, make_postmortem, role
):
    pm = make_postmortem(actor=engineer, authors=[engineer], is_private=True)
    client.force_login(request.getfixturevalue(role))

    response = client.get(url(pm))

    assert response.status_code == 404
    assert b"slow join" not in response.content


def test_it_sends_an_anonymous_visitor_to_the_login_page(client, make_postmortem):
    pm = make_postmortem()

    response = client.get(url(pm))

    assert response.status_code == 302
    assert response.url == f"/login/?next={url(pm)}"


# ---------------------------------------------------------------- self-contained HTML


def html_url(pm: PostMortem) -> str:
    return reverse("postmortems:export_html", args=[pm.pk])


def test_it_downloads_a_self_contained_html_page_with_its_actions_and_impacts(
    client, engineer, viewer, make_postmortem
):
    pm = make_postmortem(actor=engineer, authors=[engineer], title="Pool exhausted!")
    pm.impacts.create(label="p95 from 40 ms to 1,2 s", value_before="0.04", value="1.2", unit="s")
    client.force_login(viewer)

    response = client.get(html_url(pm))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert (
        response["Content-Disposition"]
        == f'attachment; filename="postmortem-{pm.pk}-pool-exhausted.html"'
    )
    page = response.content.decode()
    assert "<h1>Pool exhausted!</h1>" in page
    assert "Weekly load test" in page and "Index order_events" in page
    assert "<td>0.04 s</td><td>1.2 s</td>" in page
    # Self-contained: no script and no stylesheet to fetch.
    assert "<script" not in page and "<link" not in page and "<style>" in page


def test_the_html_export_writes_round_figures_as_people_do_not_in_exponents(
    client, viewer, make_postmortem
):
    pm = make_postmortem()
    pm.impacts.create(label="worker memory growth", value_before="400", value="40", unit="MB")
    client.force_login(viewer)

    page = client.get(html_url(pm)).content.decode()

    assert "<td>400 MB</td><td>40 MB</td>" in page and "E+" not in page


def test_the_html_export_of_a_private_post_mortem_is_hidden_from_outsiders(
    client, other_engineer, make_postmortem, engineer
):
    pm = make_postmortem(actor=engineer, is_private=True)
    client.force_login(other_engineer)

    assert client.get(html_url(pm)).status_code == 404


# ---------------------------------------------------------------- PDF


def pdf_url(pm: PostMortem) -> str:
    return reverse("postmortems:export_pdf", args=[pm.pk])


def pdf_text(content: bytes) -> str:
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_it_downloads_a_pdf_with_the_impacts_actions_and_proofs_of_the_html_export(
    client, engineer, viewer, make_postmortem, django_assert_num_queries
):
    pm = make_postmortem(actor=engineer, authors=[engineer], title="Pool exhausted!")
    pm.impacts.create(label="p95 from 40 ms to 1,2 s", value_before="0.04", value="1.2", unit="s")
    client.force_login(viewer)

    # session, user, groups, the visible post-mortem, then its prefetches: authors, impacts,
    # root causes, timeline, other sections, actions (with owners and proofs), the actions'
    # runs and the post-mortem's runs.
    with django_assert_num_queries(12):
        response = client.get(pdf_url(pm))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert (
        response["Content-Disposition"]
        == f'attachment; filename="postmortem-{pm.pk}-pool-exhausted.pdf"'
    )
    assert response.content.startswith(b"%PDF-")
    text = pdf_text(response.content)
    assert "Pool exhausted!" in text
    assert "Weekly load test" in text and "Index order_events" in text
    assert "p95 from 40 ms to 1,2 s" in text and "0.04 s" in text


def test_the_pdf_speaks_the_readers_language(client, viewer, make_postmortem):
    pm = make_postmortem()
    client.force_login(viewer)

    text = pdf_text(client.get(pdf_url(pm), HTTP_ACCEPT_LANGUAGE="fr").content)

    assert "Sévérité SEV3" in text and "à faire" in text and "Exporté de Fixproof" in text


def test_the_pdf_of_a_private_post_mortem_is_hidden_from_outsiders(
    client, other_engineer, make_postmortem, engineer
):
    pm = make_postmortem(actor=engineer, is_private=True)
    client.force_login(other_engineer)

    assert client.get(pdf_url(pm)).status_code == 404


def test_the_pdf_sends_an_anonymous_visitor_to_the_login_page_and_refuses_a_post(
    client, viewer, make_postmortem
):
    pm = make_postmortem()

    assert client.get(pdf_url(pm)).url == f"/login/?next={pdf_url(pm)}"
    client.force_login(viewer)
    assert client.post(pdf_url(pm)).status_code == 405


def test_laying_out_a_pdf_fetches_no_address_whatever_the_page_names():
    import http.server
    import threading

    from postmortems import sharing

    hits: list[str] = []

    class Counting(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_port}"
    try:
        pdf = sharing.pdf_from_html(
            f'<link rel="stylesheet" href="{address}/a.css"><img src="{address}/b.png">'
            f'<p style="background: url({address}/c.png)">Text</p><img src="/d.png">',
            base_url=address,
        )
    finally:
        server.shutdown()
        server.server_close()

    assert pdf.startswith(b"%PDF-")
    assert hits == []
