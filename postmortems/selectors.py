"""Reads of the actions overview, "My actions" and the managers' dashboard."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.core.paginator import Page, Paginator
from django.db.models import Case, Count, F, Q, QuerySet, When
from django.utils.html import format_html_join
from markupsafe import Markup

from . import access
from .models import OPEN_ACTION_STATUSES, Action, ActionStatus, PostMortem

# The states a manager counts, in the order the pages show them. An action may be in
# several (an overdue action is also open).
STATE_KEYS = (
    "open",
    "overdue",
    "to_debate",
    "done_unverified",
    "verified",
    "failed",
    "regressed",
)


def action_states(today: dt.date) -> dict[str, Q]:
    """Each state of the actions overview as a filter."""
    verified = Q(criterion__state="verified")
    return {
        "open": Q(status__in=OPEN_ACTION_STATUSES),
        "overdue": Q(status__in=OPEN_ACTION_STATUSES, due_date__lt=today),
        "to_debate": Q(status=ActionStatus.TO_DEBATE),
        "done_unverified": Q(status=ActionStatus.DONE) & ~verified,
        "verified": verified,
        "failed": Q(criterion__state="failed"),
        "regressed": Q(criterion__state="regressed"),
    }


def actions_visible(user: access.AnyUser) -> QuerySet[Action]:
    return Action.objects.filter(postmortem__in=access.visible_postmortems(user))


def actions_filtered(
    user: access.AnyUser, filters: dict[str, Any], *, today: dt.date, with_state: bool = True
) -> QuerySet[Action]:
    """The visible actions that pass every filter of ActionFilterForm's cleaned data.

    `with_state=False` leaves the state filter out: the counts of each state are taken
    over the other filters, so a manager sees what clicking another state would show.
    """
    actions = actions_visible(user)
    if filters.get("team"):
        actions = actions.filter(postmortem__team=filters["team"])
    if filters.get("owner"):
        actions = actions.filter(owner=filters["owner"])
    if filters.get("kind"):
        actions = actions.filter(kind=filters["kind"])
    if filters.get("severity"):
        actions = actions.filter(postmortem__severity=filters["severity"])
    if filters.get("status"):
        actions = actions.filter(status=filters["status"])
    if filters.get("due_from"):
        actions = actions.filter(due_date__gte=filters["due_from"])
    if filters.get("due_until"):
        actions = actions.filter(due_date__lte=filters["due_until"])
    if with_state and filters.get("state"):
        actions = actions.filter(action_states(today)[filters["state"]])
    return actions


def action_counts(actions: QuerySet[Action], *, today: dt.date) -> dict[str, int]:
    """How many of `actions` are in each state: one query."""
    states = action_states(today)
    return actions.aggregate(**{name: Count("pk", filter=states[name]) for name in STATE_KEYS})


def action_counts_by(
    actions: QuerySet[Action], *fields: str, today: dt.date
) -> list[dict[str, Any]]:
    """The counts of each state per value of `fields` (a team and its name, an owner and
    their names): one query, the rows with the most overdue, then open, work first."""
    states = action_states(today)
    rows = (
        actions.order_by()
        .values(*fields)
        .annotate(
            total=Count("pk"), **{name: Count("pk", filter=states[name]) for name in STATE_KEYS}
        )
        .order_by("-overdue", "-open", *fields)
    )
    return list(rows)


ACTION_ROW_RELATED = ("postmortem__team", "owner", "criterion__scenario")


def _unshown_fields() -> list[str]:
    """What a row of the actions list never shows, of the models it reads: long texts, the
    search vector, a scenario's settings. Loading them for fifty rows took longer than the
    query itself."""
    # perfruns' models, reached through the relations (this app never imports perfruns).
    criterion: Any = cast(Any, Action._meta.get_field("criterion")).related_model
    scenario: Any = criterion._meta.get_field("scenario").related_model
    shown_pm = {"id", "title", "severity", "team", "status", "is_private", "created_by"}
    fields = ["description"]
    fields += [
        f"postmortem__{f.name}" for f in PostMortem._meta.concrete_fields if f.name not in shown_pm
    ]
    fields += [
        f"criterion__scenario__{f.name}"
        for f in scenario._meta.concrete_fields
        if f.name not in ("id", "name")
    ]
    return fields


def actions_in_review_order(actions: QuerySet[Action]) -> QuerySet[Action]:
    """Open work first, the soonest due first; then what is done, then what won't be."""
    rank = Case(
        When(status__in=OPEN_ACTION_STATUSES, then=0),
        When(status=ActionStatus.DONE, then=1),
        default=2,
    )
    return actions.order_by(rank, F("due_date").asc(nulls_last=True), "-postmortem_id", "number")


def actions_page(actions: QuerySet[Action], number: Any, *, per_page: int) -> Page:
    """One page of `actions` (ordered), each with its post-mortem, team, owner and proof.

    The page is chosen over the actions' own narrow rows, then only its rows are read
    with their relations: sorting thousands of rows already joined to five tables took
    most of the page's time."""
    page = Paginator(actions.values_list("pk", flat=True), per_page).get_page(number)
    ids = list(page.object_list)
    rows = (
        Action.objects.filter(pk__in=ids)
        .select_related(*ACTION_ROW_RELATED)
        .defer(*_unshown_fields())
        .in_bulk()
    )
    # The page's list now holds the actions themselves, not their keys.
    page.object_list = [rows[pk] for pk in ids if pk in rows]  # type: ignore[misc]
    return page


def person_name(username: str | None, first: str | None, last: str | None) -> str:
    """A person as the pages name them (User.get_full_name(), else the username), from
    the columns a values() query read."""
    return f"{first or ''} {last or ''}".strip() or username or ""


def owner_options() -> str:
    """Who may own an action, as the <option>s of a select, written once for every row of
    a page (Django's widgets would render each row's options again): one query. Values are
    unquoted primary keys followed by a space, so a row marks its owner with a plain
    replace of "value=PK " (Jinja escapes the arguments of replace: no quotes, no ">")."""
    users = get_user_model().objects.filter(is_active=True).order_by("username")
    # Markup (not Django's SafeString): Jinja's replace keeps it safe.
    return Markup(
        format_html_join(
            "",
            "<option value={} >{}</option>",
            (
                (pk, person_name(username, first, last))
                for pk, username, first, last in users.values_list(
                    "pk", "username", "first_name", "last_name"
                )
            ),
        )
    )


def status_options() -> str:
    """The statuses of an action as <option>s, in the reader's language, marked the same
    way as owner_options."""
    return Markup(format_html_join("", "<option value={} >{}</option>", ActionStatus.choices))
