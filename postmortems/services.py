"""Writes to post-mortems and their actions. Every function is one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.contrib.postgres.search import SearchVector
from django.db import transaction
from django.db.models import Model, Value
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from . import markdown
from .models import (
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

# The post-mortem fields a person edits, in the order the history lists them.
POSTMORTEM_FIELDS = (
    "title",
    "severity",
    "written_on",
    "started_at",
    "ended_at",
    "detected_at",
    "resolved_at",
    "team",
    "services",
    "external_authors",
    "is_private",
    "summary",
    "trigger",
    "resolution",
    "detection",
    "lessons_learned",
)
ACTION_FIELDS = (
    "kind",
    "title",
    "description",
    "owner",
    "owner_name",
    "due_date",
    "status",
    "ticket_url",
)
IMPACT_FIELDS = ("label", "value_before", "value", "unit", "window")
ROOT_CAUSE_FIELDS = ("category", "description")
TIMELINE_FIELDS = ("occurred_at", "text")
# An extra section's position is not its index in the list: it names the known
# section it followed in the page (see markdown.SECTIONS), so export puts it back there.
EXTRA_FIELDS = ("heading", "body", "position")


class TransitionError(Exception):
    """A status change that is not allowed, or that lost a race."""


# (from, to) pairs of the post-mortem workflow.
ALLOWED_TRANSITIONS = {
    (PostMortemStatus.DRAFT, PostMortemStatus.IN_REVIEW),
    (PostMortemStatus.IN_REVIEW, PostMortemStatus.PUBLISHED),
    (PostMortemStatus.IN_REVIEW, PostMortemStatus.DRAFT),
    (PostMortemStatus.PUBLISHED, PostMortemStatus.DRAFT),
}


@dataclass
class PostMortemContent:
    """Everything a post-mortem holds, as a person wrote it (form or Markdown).

    Child lists are complete: rows with an ``id`` are kept and updated, rows
    without one are added, and rows no longer listed are removed.
    """

    fields: dict[str, Any]
    authors: Sequence[User]
    impacts: list[dict[str, Any]]
    root_causes: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    extra_sections: list[dict[str, Any]] | None = None


def _render(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M") if value.tzinfo else str(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _diff(obj: Any, values: dict[str, Any], fields: Iterable[str]) -> list[dict[str, str]]:
    changes = []
    for name in fields:
        if name not in values:
            continue
        old, new = getattr(obj, name), values[name]
        if isinstance(old, Decimal) and new is not None:
            new = Decimal(new)
        if old != new:
            changes.append({"field": name, "old": _render(old), "new": _render(new)})
    return changes


def _sync_children(
    *,
    model: type[Model],
    postmortem: PostMortem,
    rows: list[dict[str, Any]],
    fields: Sequence[str],
    positioned: bool,
) -> tuple[int, int, int]:
    """Make the post-mortem's rows of ``model`` exactly ``rows``; return added/changed/removed."""
    existing = {obj.pk: obj for obj in model._default_manager.filter(postmortem=postmortem)}
    keep: set[int] = set()
    added = changed = 0
    to_create = []
    for position, row in enumerate(rows):
        values = {name: row.get(name) for name in fields if name in row}
        if positioned:
            values["position"] = position
        obj = existing.get(row.get("id")) if row.get("id") else None
        if obj is None:
            to_create.append(model(postmortem=postmortem, **values))
            added += 1
            continue
        keep.add(obj.pk)
        if _diff(obj, values, values.keys()):
            for name, value in values.items():
                setattr(obj, name, value)
            obj.save()
            changed += 1
    model._default_manager.bulk_create(to_create)
    removed_ids = set(existing) - keep
    if removed_ids:
        model._default_manager.filter(pk__in=removed_ids).delete()
    return added, changed, len(removed_ids)


def _sync_actions(
    *, postmortem: PostMortem, rows: list[dict[str, Any]], actor: User | None
) -> list[HistoryEntry]:
    existing = {a.pk: a for a in Action.objects.filter(postmortem=postmortem)}
    history: list[HistoryEntry] = []
    keep: set[int] = set()
    next_number = max((a.number for a in existing.values()), default=0) + 1
    # To the minute: what an exported page can say ("Done at: 2026-03-13 12:40"), so that
    # importing the export gives the same time back.
    now = timezone.now().replace(second=0, microsecond=0)
    for row in rows:
        values = {name: row[name] for name in ACTION_FIELDS if name in row}
        # A row without owner_name (the edit form has no field for it) keeps the
        # name an imported page gave; choosing an account replaces it.
        if values.get("owner") is not None:
            values["owner_name"] = ""
        row_id = row.get("id")
        action = existing.get(row_id) if row_id else None
        if action is None:
            number = row.get("number") or next_number
            next_number = max(next_number, number) + 1
            action = Action(postmortem=postmortem, number=number, **values)
            action.done_at = (row.get("done_at") or now) if action.status == "done" else None
            action.save()
            keep.add(action.pk)
            history.append(
                HistoryEntry(
                    postmortem=postmortem,
                    action=action,
                    actor=actor,
                    subject=f"Action {action.number}",
                    verb="created",
                    changes=[{"field": "title", "old": "", "new": action.title}],
                )
            )
            continue
        keep.add(action.pk)
        changes = _diff(action, values, ACTION_FIELDS)
        if not changes:
            continue
        for name, value in values.items():
            setattr(action, name, value)
        if action.status == ActionStatus.DONE and action.done_at is None:
            action.done_at = now
        elif action.status != ActionStatus.DONE:
            action.done_at = None
        action.save()
        history.append(
            HistoryEntry(
                postmortem=postmortem,
                action=action,
                actor=actor,
                subject=f"Action {action.number}",
                verb="updated",
                changes=changes,
            )
        )
    for pk in set(existing) - keep:
        gone = existing[pk]
        history.append(
            HistoryEntry(
                postmortem=postmortem,
                actor=actor,
                subject=f"Action {gone.number}",
                verb="removed",
                changes=[{"field": "title", "old": gone.title, "new": ""}],
            )
        )
        gone.delete()
    return history


def postmortem_reindex(*, postmortem_id: int) -> None:
    """Refresh the full-text vector: title, summary, root causes, actions.

    English and French stemmers both index the text (authors write either),
    plus the 'simple' configuration so names and codes match exactly.
    """
    pm = PostMortem.objects.get(pk=postmortem_id)
    causes = " ".join(RootCause.objects.filter(postmortem=pm).values_list("description", flat=True))
    actions = " ".join(
        f"{title} {description}"
        for title, description in Action.objects.filter(postmortem=pm).values_list(
            "title", "description"
        )
    )
    vector = None
    for config in ("english", "french", "simple"):
        part = (
            SearchVector(Value(pm.title), weight="A", config=config)
            + SearchVector(Value(pm.summary), weight="B", config=config)
            + SearchVector(Value(f"{causes} {actions}"), weight="C", config=config)
        )
        vector = part if vector is None else vector + part
    PostMortem.objects.filter(pk=pm.pk).update(search_vector=vector)


@transaction.atomic
def postmortem_save(
    *,
    actor: User | None,
    content: PostMortemContent,
    postmortem: PostMortem | None = None,
    verb: str = "",
) -> PostMortem:
    """Create a post-mortem, or update one, with all its rows, in one transaction."""
    fields = {name: content.fields[name] for name in POSTMORTEM_FIELDS if name in content.fields}
    history: list[HistoryEntry] = []
    creating = postmortem is None
    if postmortem is None:
        postmortem = PostMortem.objects.create(created_by=actor, **fields)
        history.append(
            HistoryEntry(
                postmortem=postmortem, actor=actor, subject="post-mortem", verb=verb or "created"
            )
        )
    else:
        # Lock the row: a concurrent publish must not check the checklist
        # against rows this write is about to change.
        postmortem = PostMortem.objects.select_for_update().get(pk=postmortem.pk)
        changes = _diff(postmortem, fields, POSTMORTEM_FIELDS)
        old_authors = sorted(str(u) for u in postmortem.authors.all())
        new_authors = sorted(str(u) for u in content.authors)
        if old_authors != new_authors:
            changes.append(
                {"field": "authors", "old": ", ".join(old_authors), "new": ", ".join(new_authors)}
            )
        if changes:
            for name, value in fields.items():
                setattr(postmortem, name, value)
            postmortem.save()
            history.append(
                HistoryEntry(
                    postmortem=postmortem,
                    actor=actor,
                    subject="post-mortem",
                    verb=verb or "updated",
                    changes=changes,
                )
            )
    postmortem.authors.set(content.authors)

    children = [
        ("impacts", ImpactFigure, content.impacts, IMPACT_FIELDS, True),
        ("root causes", RootCause, content.root_causes, ROOT_CAUSE_FIELDS, True),
        ("timeline", TimelineEntry, content.timeline, TIMELINE_FIELDS, False),
    ]
    if content.extra_sections is not None:
        children.append(
            ("other sections", ExtraSection, content.extra_sections, EXTRA_FIELDS, False)
        )
    for subject, model, rows, names, positioned in children:
        added, changed, removed = _sync_children(
            model=model, postmortem=postmortem, rows=rows, fields=names, positioned=positioned
        )
        # A new post-mortem's rows are part of its "created" entry.
        if not creating and (added or changed or removed):
            history.append(
                HistoryEntry(
                    postmortem=postmortem,
                    actor=actor,
                    subject=subject,
                    verb="updated",
                    changes=[
                        {
                            "field": subject,
                            "old": "",
                            "new": f"{added} added, {changed} changed, {removed} removed",
                        }
                    ],
                )
            )
    history += _sync_actions(postmortem=postmortem, rows=content.actions, actor=actor)
    HistoryEntry.objects.bulk_create(history)
    postmortem_reindex(postmortem_id=postmortem.pk)
    postmortem.refresh_from_db()
    return postmortem


@transaction.atomic
def postmortem_transition(*, postmortem: PostMortem, actor: User | None, to: str) -> PostMortem:
    """Move a post-mortem along draft -> in review -> published (and back to draft).

    ``postmortem.status`` is the status the caller saw. If the row's status has
    changed since, the move is refused rather than applied to a status nobody
    looked at (unpublishing what someone else just published).
    """
    seen = postmortem.status
    current = PostMortem.objects.select_for_update().get(pk=postmortem.pk)
    if (seen, to) not in ALLOWED_TRANSITIONS:
        raise TransitionError(
            _("A post-mortem cannot go from %(old)s to %(new)s.")
            % {
                "old": PostMortemStatus(seen).label,
                "new": PostMortemStatus(to).label if to in PostMortemStatus.values else to,
            }
        )
    if to == PostMortemStatus.PUBLISHED:
        missing = current.missing_for_publication()
        if missing:
            raise TransitionError(
                _("This post-mortem cannot be published yet. Missing: %(missing)s.")
                % {"missing": "; ".join(missing)}
            )
    published_at = timezone.now() if to == PostMortemStatus.PUBLISHED else None
    # The conditional UPDATE is the transition: it changes one row or none.
    # It checks the status the caller saw, not the one just read under the lock.
    updated = PostMortem.objects.filter(pk=current.pk, status=seen).update(
        status=to, published_at=published_at, updated_at=timezone.now()
    )
    if updated != 1:
        raise TransitionError(_("Someone else changed this post-mortem's status; reload the page."))
    HistoryEntry.objects.create(
        postmortem=current,
        actor=actor,
        subject="post-mortem",
        verb="status",
        changes=[{"field": "status", "old": seen, "new": to}],
    )
    current.refresh_from_db()
    return current


@transaction.atomic
def action_update(
    *,
    action: Action,
    actor: User | None,
    status: str,
    owner: User | None,
    due_date: dt.date | None,
    seen_status: str | None = None,
) -> Action:
    """What a manager changes on an action: its status, owner and due date.

    ``seen_status`` is the status the person saw; when the action's status has
    changed since, the change is refused instead of overwriting someone else's.
    """
    current = Action.objects.select_for_update().get(pk=action.pk)
    seen = seen_status or current.status
    values: dict[str, Any] = {"status": status, "owner": owner, "due_date": due_date}
    if owner is not None:
        values["owner_name"] = ""
    changes = _diff(current, values, ("status", "owner", "owner_name", "due_date"))
    if not changes:
        return current
    if status == ActionStatus.DONE:
        values["done_at"] = current.done_at or timezone.now()
    else:
        values["done_at"] = None
    updated = Action.objects.filter(pk=current.pk, status=seen).update(
        updated_at=timezone.now(), **values
    )
    if updated != 1:
        raise TransitionError(_("Someone else changed this action; reload the page."))
    HistoryEntry.objects.create(
        postmortem_id=current.postmortem_id,
        action=current,
        actor=actor,
        subject=f"Action {current.number}",
        verb="updated",
        changes=changes,
    )
    current.refresh_from_db()
    return current


def _find_user(name: str) -> User | None:
    """An account matching a name written in a page: username (an @handle too), e-mail,
    or first and last name."""
    users = get_user_model().objects.filter(is_active=True)
    name = name.strip()
    match = users.filter(username__iexact=name.lstrip("@")).first()
    if match is None and "@" in name[1:]:
        match = users.filter(email__iexact=name).first()
    if match is None and " " in name.strip():
        first, last = name.strip().split(" ", 1)
        match = users.filter(first_name__iexact=first, last_name__iexact=last).first()
    return match


@dataclass
class ImportResult:
    postmortem: PostMortem
    warnings: list[str]


def postmortem_read(
    *, data: bytes, title: str | None = None, file_name: str | None = None, strict: bool = False
) -> markdown.ParsedPostMortem:
    """What importing `data` would save, without saving anything (a dry run).

    Raises postmortems.markdown.MarkdownError listing every problem and its line."""
    return markdown.parse(markdown.decode(data), title=title, file_name=file_name, strict=strict)


@transaction.atomic
def postmortem_import(
    *,
    data: bytes,
    actor: User | None,
    title: str | None = None,
    file_name: str | None = None,
    strict: bool = False,
) -> ImportResult:
    """Create a post-mortem from a wiki Markdown page; nothing is saved on error.

    Raises postmortems.markdown.MarkdownError listing every problem and its line. What the
    reader guessed (markdown.ParsedPostMortem.notes) comes back among the warnings.
    """
    parsed = postmortem_read(data=data, title=title, file_name=file_name, strict=strict)
    warnings = list(parsed.warnings) + list(parsed.notes)
    authors: list[User] = []
    external: list[str] = []
    for name in parsed.author_names:
        user = _find_user(name)
        if user is None:
            external.append(name)
        elif user not in authors:
            authors.append(user)
    fields = dict(parsed.fields)
    status = fields.pop("status", PostMortemStatus.DRAFT)
    fields["title"] = parsed.title
    fields["external_authors"] = external
    if parsed.team_name:
        fields["team"] = Team.objects.filter(name__iexact=parsed.team_name).first()
        if fields["team"] is None:
            # "Data Platform" and an existing "Data-Platform" share a slug, and
            # slugs are unique: suffix it rather than fail on the constraint.
            base = slugify(parsed.team_name)[:90] or "team"
            slug, n = base, 1
            while Team.objects.filter(slug=slug).exists():
                n += 1
                slug = f"{base}-{n}"
            fields["team"] = Team.objects.create(name=parsed.team_name, slug=slug)
    actions = []
    for row in parsed.actions:
        row = dict(row)
        owner_name = row.pop("owner_name")
        owner = _find_user(owner_name) if owner_name else None
        row["owner"] = owner
        row["owner_name"] = "" if owner else owner_name
        actions.append(row)
    pm = postmortem_save(
        actor=actor,
        verb="imported",
        content=PostMortemContent(
            fields=fields,
            authors=authors,
            impacts=parsed.impacts,
            root_causes=parsed.root_causes,
            timeline=parsed.timeline,
            actions=actions,
            extra_sections=parsed.extra_sections,
        ),
    )
    if status == PostMortemStatus.PUBLISHED and pm.missing_for_publication():
        warnings.append(
            _(
                "The page says Published, but publishing needs: %(missing)s. It was imported "
                "as In review."
            )
            % {"missing": "; ".join(pm.missing_for_publication())}
        )
        status = PostMortemStatus.IN_REVIEW
    if status != PostMortemStatus.DRAFT:
        PostMortem.objects.filter(pk=pm.pk).update(
            status=status,
            published_at=timezone.now() if status == PostMortemStatus.PUBLISHED else None,
        )
        pm.refresh_from_db()
    return ImportResult(postmortem=pm, warnings=warnings)
