from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from postmortems.models import Action, PostMortem

STALE = "Someone else changed this post-mortem's status; reload the page."


def url(pm: PostMortem) -> str:
    return reverse("postmortems:transition", args=[pm.pk])


def detail(pm: PostMortem) -> str:
    return reverse("postmortems:detail", args=[pm.pk])


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def test_it_moves_a_post_mortem_from_draft_to_review_to_published(
    client, engineer, make_postmortem, django_assert_num_queries
):
    pm = make_postmortem(actor=engineer)
    client.force_login(engineer)

    # session, user, groups, the visible post-mortem (4); the service:
    # SAVEPOINT, SELECT FOR UPDATE, conditional UPDATE, INSERT history,
    # refresh, RELEASE (6).
    with django_assert_num_queries(10):
        response = client.post(url(pm), {"to": "in_review", "current": "draft"})

    assert response.status_code == 302
    assert response.url == detail(pm)
    assert messages_of(response) == [("success", "Status changed.")]
    pm.refresh_from_db()
    assert pm.status == "in_review"
    assert pm.published_at is None

    # Publishing also reads the checklist under the lock: actions, impacts,
    # root causes (3 more).
    with django_assert_num_queries(13):
        client.post(url(pm), {"to": "published", "current": "in_review"})

    pm.refresh_from_db()
    assert pm.status == "published"
    assert pm.published_at is not None
    entries = pm.history.filter(verb="status").order_by("id")
    assert [(h.actor, h.changes) for h in entries] == [
        (engineer, [{"field": "status", "old": "draft", "new": "in_review"}]),
        (engineer, [{"field": "status", "old": "in_review", "new": "published"}]),
    ]


def test_it_takes_a_published_post_mortem_back_to_draft(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)
    client.force_login(engineer)
    client.post(url(pm), {"to": "in_review"})
    client.post(url(pm), {"to": "published"})

    client.post(url(pm), {"to": "draft", "current": "published"})

    pm.refresh_from_db()
    assert pm.status == "draft"
    assert pm.published_at is None


def test_it_refuses_a_transition_the_workflow_does_not_have(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)
    client.force_login(engineer)

    response = client.post(url(pm), {"to": "published", "current": "draft"})

    assert response.url == detail(pm)
    assert messages_of(response) == [("error", "A post-mortem cannot go from Draft to Published.")]
    pm.refresh_from_db()
    assert pm.status == "draft" and pm.published_at is None
    assert not pm.history.filter(verb="status").exists()


def test_it_refuses_an_unknown_status(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)
    client.force_login(engineer)

    response = client.post(url(pm), {"to": "archived"})

    assert messages_of(response) == [("error", "Unknown status.")]
    pm.refresh_from_db()
    assert pm.status == "draft"


def _in_review(make_postmortem, engineer, **fields) -> PostMortem:
    pm = make_postmortem(actor=engineer, **fields)
    PostMortem.objects.filter(pk=pm.pk).update(status="in_review")
    return pm


@pytest.mark.parametrize(
    ("severity", "strip", "missing"),
    [
        (
            "sev3",
            ["summary", "impacts"],
            "A summary; At least one quantified impact",
        ),
        ("sev3", ["root_causes", "actions"], "At least one root cause; At least one action"),
        ("sev2", ["detect"], "A detect action (SEV1/SEV2)"),
        ("sev1", ["prevent"], "A prevent action (SEV1/SEV2)"),
        ("sev1", ["wont_do_prevent"], "A prevent action (SEV1/SEV2)"),
        (
            "sev1",
            ["actions"],
            "At least one action; A detect action (SEV1/SEV2); A prevent action (SEV1/SEV2)",
        ),
    ],
    ids=[
        "summary-and-impact",
        "cause-and-action",
        "sev2-detect",
        "sev1-prevent",
        "wont-do-does-not-count",
        "sev1-no-action",
    ],
)
def test_it_refuses_to_publish_until_the_checklist_is_complete(
    client, engineer, make_postmortem, severity, strip, missing
):
    pm = _in_review(make_postmortem, engineer, severity=severity)
    for part in strip:
        if part == "summary":
            PostMortem.objects.filter(pk=pm.pk).update(summary="  ")
        elif part in ("detect", "prevent"):
            pm.actions.filter(kind=part).delete()
        elif part == "wont_do_prevent":
            pm.actions.filter(kind="prevent").update(status="wont_do")
        else:
            getattr(pm, part).all().delete()
    client.force_login(engineer)

    response = client.post(url(pm), {"to": "published", "current": "in_review"})

    assert messages_of(response) == [
        ("error", f"This post-mortem cannot be published yet. Missing: {missing}.")
    ]
    pm.refresh_from_db()
    assert pm.status == "in_review" and pm.published_at is None


def test_it_publishes_a_sev3_without_detect_or_prevent_actions(client, engineer, make_postmortem):
    pm = _in_review(make_postmortem, engineer, severity="sev3")
    pm.actions.all().delete()
    Action.objects.create(postmortem=pm, number=1, kind="repair", title="Restart the pool")
    client.force_login(engineer)

    client.post(url(pm), {"to": "published"})

    pm.refresh_from_db()
    assert pm.status == "published"


def test_it_refuses_a_click_from_a_page_whose_status_is_out_of_date(
    client, engineer, other_engineer, make_postmortem
):
    pm = _in_review(make_postmortem, engineer)
    # The engineer's page still says "in review" when someone else publishes.
    PostMortem.objects.filter(pk=pm.pk).update(status="published", published_at=timezone.now())
    client.force_login(engineer)

    response = client.post(url(pm), {"to": "draft", "current": "in_review"})

    assert messages_of(response) == [("error", STALE)]
    pm.refresh_from_db()
    assert pm.status == "published"
    assert not pm.history.filter(verb="status").exists()


def test_the_page_sends_the_status_it_shows(client, engineer, make_postmortem):
    pm = _in_review(make_postmortem, engineer)
    client.force_login(engineer)

    html = client.get(detail(pm)).content.decode()

    assert html.count('<input type="hidden" name="current" value="in_review">') == 2
    assert 'name="to" value="published"' in html and 'name="to" value="draft"' in html


def test_it_rejects_a_get(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)
    client.force_login(engineer)

    response = client.get(url(pm), {"to": "in_review"})

    assert response.status_code == 405
    pm.refresh_from_db()
    assert pm.status == "draft"


@pytest.mark.parametrize("role", ["viewer", "manager", "nobody"])
def test_it_forbids_anyone_but_an_engineer(request, client, engineer, make_postmortem, role):
    pm = make_postmortem(actor=engineer)
    client.force_login(request.getfixturevalue(role))

    response = client.post(url(pm), {"to": "in_review"})

    assert response.status_code == 403
    pm.refresh_from_db()
    assert pm.status == "draft"


def test_it_hides_a_private_post_mortem_from_another_engineer(
    client, engineer, other_engineer, make_postmortem
):
    pm = make_postmortem(actor=engineer, authors=[engineer], is_private=True)
    client.force_login(other_engineer)

    response = client.post(url(pm), {"to": "in_review"})

    assert response.status_code == 404
    pm.refresh_from_db()
    assert pm.status == "draft"


def test_it_sends_an_anonymous_visitor_to_the_login_page(client, make_postmortem):
    pm = make_postmortem()

    response = client.post(url(pm), {"to": "in_review"})

    assert response.status_code == 302
    assert response.url == f"/login/?next={url(pm)}"
    pm.refresh_from_db()
    assert pm.status == "draft"
