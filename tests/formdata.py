"""POST data for the post-mortem form and its four inline formsets.

The create and edit view tests send what the browser sends: the main form's
fields, then for each formset its management form (prefixes impacts, causes,
timeline, actions) and one group of fields per row.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from postmortems.models import PostMortem

PREFIXES = {
    "impacts": "impacts",
    "root_causes": "causes",
    "timeline": "timeline",
    "actions": "actions",
}


def _value(value: Any) -> Any:
    if value is None:
        return ""
    if hasattr(value, "pk"):
        return value.pk
    if hasattr(value, "strftime") and hasattr(value, "hour"):
        return timezone.localtime(value).strftime("%Y-%m-%dT%H:%M")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def formset(prefix: str, rows: list[dict[str, Any]], *, initial: int = 0) -> dict[str, Any]:
    """A formset as posted; a row with ``DELETE: True`` is ticked for deletion."""
    data: dict[str, Any] = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        for name, value in row.items():
            if name == "DELETE":
                if value:
                    data[f"{prefix}-{index}-DELETE"] = "on"
                continue
            data[f"{prefix}-{index}-{name}"] = _value(value)
    return data


def postmortem_data(
    *,
    impacts: list[dict[str, Any]] | None = None,
    root_causes: list[dict[str, Any]] | None = None,
    timeline: list[dict[str, Any]] | None = None,
    actions: list[dict[str, Any]] | None = None,
    initial: dict[str, int] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A complete create/edit POST: ``fields`` override the main form's values."""
    data: dict[str, Any] = {
        "title": "Checkout pool exhausted",
        "severity": "sev2",
        "written_on": "2026-03-14",
        "started_at": "2026-03-13T12:02",
        "ended_at": "2026-03-13T12:40",
        "detected_at": "",
        "resolved_at": "",
        "authors": [],
        "team": "",
        "services": "checkout, orders",
        "summary": "The checkout API returned 502s for 38 minutes.",
        "trigger": "Lunch peak.",
        "resolution": "Traffic dropped.",
        "detection": "Error-rate alert.",
        "lessons_learned": "",
    }
    for name, value in fields.items():
        if name == "is_private":
            if value:
                data["is_private"] = "on"
            continue
        data[name] = [_value(v) for v in value] if isinstance(value, list) else _value(value)
    initial = initial or {}
    children = {
        "impacts": impacts or [],
        "root_causes": root_causes or [],
        "timeline": timeline or [],
        "actions": actions or [],
    }
    for key, rows in children.items():
        data.update(formset(PREFIXES[key], rows, initial=initial.get(key, 0)))
    return data


def action_row(**fields: Any) -> dict[str, Any]:
    row = {
        "kind": "prevent",
        "title": "Index order_events",
        "description": "",
        "owner": "",
        "due_date": "",
        "status": "todo",
        "ticket_url": "",
    }
    row.update(fields)
    return row


def edit_data(pm: PostMortem, **fields: Any) -> dict[str, Any]:
    """What the edit page posts back when nothing is changed, with ``fields`` overridden."""
    values: dict[str, Any] = {
        "title": pm.title,
        "severity": pm.severity,
        "written_on": pm.written_on,
        "started_at": pm.started_at,
        "ended_at": pm.ended_at,
        "detected_at": pm.detected_at,
        "resolved_at": pm.resolved_at,
        "authors": list(pm.authors.all()),
        "team": pm.team,
        "services": ", ".join(pm.services),
        "is_private": pm.is_private,
        "summary": pm.summary,
        "trigger": pm.trigger,
        "resolution": pm.resolution,
        "detection": pm.detection,
        "lessons_learned": pm.lessons_learned,
    }
    values.update(fields)
    impacts = [
        {"id": i.pk, "label": i.label, "value": i.value, "unit": i.unit, "window": i.window}
        for i in pm.impacts.all()
    ]
    causes = [
        {"id": c.pk, "category": c.category, "description": c.description}
        for c in pm.root_causes.all()
    ]
    timeline = [
        {"id": t.pk, "occurred_at": t.occurred_at, "text": t.text} for t in pm.timeline.all()
    ]
    actions = [
        {
            "id": a.pk,
            "kind": a.kind,
            "title": a.title,
            "description": a.description,
            "owner": a.owner,
            "due_date": a.due_date,
            "status": a.status,
            "ticket_url": a.ticket_url,
        }
        for a in pm.actions.all()
    ]
    return postmortem_data(
        impacts=impacts,
        root_causes=causes,
        timeline=timeline,
        actions=actions,
        initial={
            "impacts": len(impacts),
            "root_causes": len(causes),
            "timeline": len(timeline),
            "actions": len(actions),
        },
        **values,
    )
