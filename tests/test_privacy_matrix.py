"""A private post-mortem is invisible, everywhere, to whoever cannot open it: every URL of
the URLconf (walked, so a new view is covered without being listed here) × every kind of
person, each page searched for the post-mortem's title, its action's title and its run's
report."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group, User
from django.urls import URLPattern, URLResolver, get_resolver

from perfruns.models import (
    Artifact,
    DumpSource,
    PerfRun,
    RegressionIncident,
    RunStatus,
    RunTrigger,
    Snapshot,
    SnapshotStatus,
    VersionComparison,
)
from postmortems.models import Team

SECRET_TITLE = "XYZZY outage of the payroll export"
SECRET_ACTION = "PLUGH index the payroll table"
SECRET_REPORT = "FROBOZZ locust report"
PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


def routes(patterns=None, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from routes(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern


@pytest.fixture
def world(db, make_postmortem, scenario, tmp_path):
    """A private post-mortem of a team, with everything that can point at it."""
    team = Team.objects.create(name="Payroll", slug="payroll")
    author = User.objects.create_user("alice")
    pm = make_postmortem(actor=author, team=team, title=SECRET_TITLE, is_private=True)
    action = pm.actions.first()
    action.title = SECRET_ACTION
    action.save()
    scenario.postmortems.add(pm)
    scenario.actions.add(action)
    report = tmp_path / "locust.html"
    report.write_text(f"<html>{SECRET_REPORT}</html>")
    runs = []
    for _ in range(2):
        run = PerfRun.objects.create(
            scenario=scenario, environment=scenario.environment, trigger=RunTrigger.SCHEDULE,
            status=RunStatus.PASSED, artifacts_dir=str(tmp_path),
        )  # fmt: skip
        run.postmortems.add(pm)
        run.actions.add(action)
        runs.append(run)
    Artifact.objects.create(
        run=runs[0], name="locust.html", path=str(report), size_bytes=1, content_type="text/html"
    )
    source = DumpSource.objects.create(name="shop", dsn_env="SHOP_DSN", policy_yaml="tables: {}")
    snapshot = Snapshot.objects.create(source=source, status=SnapshotStatus.READY)
    comparison = VersionComparison.objects.create(scenario=scenario, version_a="1", version_b="2")
    incident = RegressionIncident.objects.create(
        scenario=scenario, start_run=runs[1], postmortem=pm
    )
    values = {
        ("postmortems", "pk"): pm.pk,
        ("actions", "action_pk"): action.pk,
        ("sources", "name"): source.name,
        ("snapshots", "pk"): snapshot.pk,
        ("environments", "name"): scenario.environment.name,
        ("scenarios", "name"): scenario.name,
        ("changes", "pk"): incident.pk,
        ("versions", "pk"): comparison.pk,
        ("runs", "pk"): runs[0].pk,
        ("runs", "base"): runs[1].pk,
        ("vs", "pk"): runs[0].pk,
        ("files", "name"): "locust.html",
        # A password reset link that is not valid: the page says so.
        ("password-reset", "uidb64"): "MQ",
        ("<uidb64>", "token"): "bad-token",
    }
    return {"team": team, "pm": pm, "values": values}


def url_of(route: str, values: dict) -> str:
    """The route with each parameter filled by the object the segment before it names."""

    def fill(match: re.Match) -> str:
        before = route[: match.start()].rstrip("/").rsplit("/", 1)[-1]
        key = (before, match["name"])
        if key not in values:
            pytest.fail(f"{route}: no object for <{match['name']}> after {before!r}: add one")
        return str(values[key])

    return "/" + PARAMETER.sub(fill, route)


def person(kind: str, team: Team) -> User | None:
    if kind == "anonymous":
        return None
    user = User.objects.create_user(kind, is_superuser=kind == "admin", is_staff=kind == "admin")
    role = {"insider": "engineer", "outsider": "engineer", "manager": "manager",
            "viewer": "viewer"}.get(kind)  # fmt: skip
    if role:
        user.groups.add(Group.objects.get(name=role))
    if kind == "insider":
        team.members.add(user)
    return user


# Who may open the private post-mortem: its team's engineer, a manager, an administrator.
MAY_OPEN = {"admin", "insider", "manager"}
KINDS = ["admin", "insider", "outsider", "manager", "viewer", "no_role", "anonymous"]
# The pages for whoever is not signed in: logging in, choosing a language, resetting a
# forgotten password.
OPEN_ROUTES = (
    "login/",
    "i18n/setlang/",
    "password-reset/",
    "password-reset/sent/",
    "password-reset/<uidb64>/<token>/",
    "password-reset/done/",
)


@pytest.mark.parametrize("kind", KINDS)
def test_no_page_shows_a_private_postmortem_to_whoever_cannot_open_it(client, world, kind):
    user = person(kind, world["team"])
    if user is not None:
        client.force_login(user)
    seen = []
    for route, _pattern in routes():
        if route.startswith("admin/"):
            continue  # Django's admin: for administrators, who may see everything
        url = url_of(route, world["values"])
        response = client.get(url)
        assert response.status_code < 500, f"{url} as {kind}: {response.status_code}"
        body = b"".join(response.streaming_content) if response.streaming else response.content
        text = body.decode(errors="replace")
        for secret in (SECRET_TITLE, SECRET_ACTION, SECRET_REPORT):
            if secret in text:
                seen.append(f"{url}: {secret}")
        if kind == "anonymous" and route not in OPEN_ROUTES:
            assert response.status_code in (302, 405), f"{url} answered an anonymous visitor"
        if kind == "no_role" and response.status_code == 200:
            assert route in ("logout/", "", *OPEN_ROUTES), (
                f"{url} answered an account without a role"
            )

    if kind in MAY_OPEN:
        # The check can fail: those who may open it do see it, on several pages.
        assert any(SECRET_TITLE in entry for entry in seen)
        assert any(SECRET_REPORT in entry for entry in seen)
    else:
        assert seen == []
