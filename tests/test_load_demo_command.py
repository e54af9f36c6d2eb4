from __future__ import annotations

import io

from django.core.management import call_command

from postmortems.management.commands.load_demo import LEAK_TITLE, POOL_TITLE
from postmortems.models import Action, PostMortem


def test_it_loads_the_pool_exhaustion_story_with_impacts_and_two_actions(db):
    call_command("load_demo", stdout=io.StringIO())
    pool = PostMortem.objects.get(title=POOL_TITLE)
    assert "13 million rows" in pool.summary
    assert [i.label for i in pool.impacts.all()] == [
        "failed requests",
        "average response time",
        "failure rate",
        "peak failure rate at 17:16",
    ]
    assert sorted(a.kind for a in pool.actions.all()) == ["detect", "prevent"]
    assert pool.status == "in_review"
    leak = PostMortem.objects.get(title=LEAK_TITLE)
    assert leak.status == "published"
    assert leak.published_at is not None


def test_it_is_safe_to_run_twice(db):
    call_command("load_demo", stdout=io.StringIO())
    out = io.StringIO()
    call_command("load_demo", stdout=out)
    assert out.getvalue() == ""
    assert PostMortem.objects.count() == 2
    assert Action.objects.count() == 3
