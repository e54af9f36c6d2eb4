from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, F, Model, Prefetch, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import access, markdown, selectors, services, sharing
from .forms import (
    ActionFilterForm,
    ActionFormSet,
    ActionManageForm,
    ConfirmImportForm,
    ImpactFormSet,
    ImportForm,
    PostMortemForm,
    RootCauseFormSet,
    SearchForm,
    TimelineFormSet,
    TransitionForm,
    initial_rows,
)
from .models import (
    OPEN_ACTION_STATUSES,
    Action,
    HistoryEntry,
    PostMortem,
    PostMortemStatus,
)
from .services import ACTION_FIELDS, IMPACT_FIELDS, ROOT_CAUSE_FIELDS, TIMELINE_FIELDS

PAGE_SIZE = 50
HISTORY_SHOWN = 100


@require_GET
def postmortem_list(request: HttpRequest) -> HttpResponse:
    access.require_role(request.user)
    form = SearchForm(request.GET or None)
    qs = access.visible_postmortems(request.user).select_related("team")
    today = timezone.localdate()
    qs = qs.annotate(
        open_actions=Count("actions", filter=Q(actions__status__in=OPEN_ACTION_STATUSES)),
        overdue_actions=Count(
            "actions",
            filter=Q(actions__status__in=OPEN_ACTION_STATUSES, actions__due_date__lt=today),
        ),
    ).order_by("-created_at", "-id")
    if form.is_valid():
        data = form.cleaned_data
        if data["q"]:
            query = (
                SearchQuery(data["q"], config="english", search_type="websearch")
                | SearchQuery(data["q"], config="french", search_type="websearch")
                | SearchQuery(data["q"], config="simple", search_type="websearch")
            )
            qs = qs.filter(search_vector=query).annotate(rank=SearchRank(F("search_vector"), query))
        if data["status"]:
            qs = qs.filter(status=data["status"])
        if data["severity"]:
            qs = qs.filter(severity=data["severity"])
        if data["team"]:
            qs = qs.filter(team=data["team"])
        # The incident's own date when known, else the post-mortem's date.
        if data["since"]:
            since = timezone.make_aware(dt.datetime.combine(data["since"], dt.time.min))
            qs = qs.filter(
                Q(started_at__gte=since) | Q(started_at__isnull=True, written_on__gte=data["since"])
            )
        if data["until"]:
            until = timezone.make_aware(
                dt.datetime.combine(data["until"] + dt.timedelta(days=1), dt.time.min)
            )
            qs = qs.filter(
                Q(started_at__lt=until) | Q(started_at__isnull=True, written_on__lte=data["until"])
            )
        if data["q"]:
            qs = qs.order_by("-rank", "-created_at")
    if request.GET.get("format") == "csv":
        return _postmortems_csv(qs)
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "postmortems/list.html",
        {
            "form": form,
            "page": page,
            "can_write": access.can_write(request.user),
            "querystring": _querystring_without_page(request),
        },
    )


@require_GET
def action_list(request: HttpRequest) -> HttpResponse:
    """Every visible action with its status and its proof: what a manager reviews."""
    return _actions_page(request, mine=False)


@require_GET
def my_actions(request: HttpRequest) -> HttpResponse:
    """The actions the signed-in person owns: where an engineer lands."""
    return _actions_page(request, mine=True)


def _actions_page(request: HttpRequest, *, mine: bool) -> HttpResponse:
    user = access.require_role(request.user)
    form = ActionFilterForm(request.GET or None)
    today = timezone.localdate()
    filters = dict(form.cleaned_data) if form.is_valid() else {}
    if mine:
        filters["owner"] = user
    unfiltered_state = selectors.actions_filtered(user, filters, today=today, with_state=False)
    actions = selectors.actions_in_review_order(
        selectors.actions_filtered(user, filters, today=today)
    )
    if request.GET.get("format") == "csv":
        return _actions_csv(actions.select_related(*selectors.ACTION_ROW_RELATED))
    counts = selectors.action_counts(unfiltered_state, today=today)
    page = selectors.actions_page(actions, request.GET.get("page"), per_page=PAGE_SIZE)
    can_manage = access.can_manage_actions(user)
    return render(
        request,
        "postmortems/actions.html",
        {
            "form": form,
            "page": page,
            "counts": counts,
            "mine": mine,
            # The change forms of each row are written by the template from these: one
            # users query, and no Django widget rendering per row (50 rows × every user).
            "can_manage": can_manage,
            "owner_options": selectors.owner_options() if can_manage else "",
            "status_choices": selectors.status_options(),
            "querystring": _querystring_without_page(request),
            "state_querystring": _querystring_without(request, "page", "state"),
        },
    )


# Cells that start with these are formulas to a spreadsheet: prefixed with a quote.
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_CSV_FORMULA_START) else text


def _csv_download(filename: str, header: list[str], rows: Iterable[list[object]]) -> HttpResponse:
    """Rows as a CSV download a spreadsheet opens as written: UTF-8 with a byte-order mark
    (accents), text cells that look like formulas quoted."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.write("\ufeff")
    writer = csv.writer(response)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_cell(cell) for cell in row])
    return response


def _when(value: dt.datetime | None) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M") if value else ""


def _actions_csv(actions: QuerySet[Action]) -> HttpResponse:
    """The filtered list as CSV, every row (no page), for a spreadsheet."""

    def rows() -> Iterator[list[object]]:
        for a in actions.iterator(chunk_size=500):
            criterion = getattr(a, "criterion", None)
            yield [
                a.postmortem.title, a.postmortem.get_severity_display(),
                a.postmortem.team.name if a.postmortem.team else "", a.number,
                a.get_kind_display(), a.title, a.owner_display,
                a.due_date.isoformat() if a.due_date else "", a.get_status_display(),
                _when(a.done_at), criterion.get_state_display() if criterion else "",
                a.ticket_url,
                a.get_absolute_url(),
            ]  # fmt: skip

    header = [
        _("Post-mortem"), _("Severity"), _("Team"), _("Action"), _("Kind"), _("Title"),
        _("Owner"), _("Due"), _("Status"), _("Done at"), _("Proof"), _("Ticket"), _("Link"),
    ]  # fmt: skip
    return _csv_download("actions.csv", header, rows())


def _postmortems_csv(postmortems: QuerySet[PostMortem]) -> HttpResponse:
    """The searched and filtered post-mortems as CSV, every row (no page)."""

    def rows() -> Iterator[list[object]]:
        for pm in postmortems.iterator(chunk_size=500):
            yield [
                pm.title, pm.get_severity_display(), pm.get_status_display(),
                pm.team.name if pm.team else "", pm.written_on.isoformat() if pm.written_on else "",
                _when(pm.started_at), _when(pm.detected_at), _when(pm.resolved_at),
                _when(pm.ended_at), pm.open_actions, pm.overdue_actions,  # type: ignore[attr-defined]
                _("yes") if pm.is_private else "", reverse("postmortems:detail", args=[pm.pk]),
            ]  # fmt: skip

    header = [
        _("Title"), _("Severity"), _("Status"), _("Team"), _("Date"), _("Incident start"),
        _("Detected at"), _("Resolved at"), _("Incident end"), _("Open actions"),
        _("Overdue actions"), _("Private"), _("Link"),
    ]  # fmt: skip
    return _csv_download("postmortems.csv", header, rows())


def _querystring_without(request: HttpRequest, *names: str) -> str:
    params = request.GET.copy()
    for name in names:
        params.pop(name, None)
    return params.urlencode()


def _querystring_without_page(request: HttpRequest) -> str:
    return _querystring_without(request, "page")


def _detail_queryset(*, with_runs: bool = False):
    actions = Action.objects.select_related("owner")
    runs = []
    if with_runs:
        # The page shows the measured runs of the incident and of each action.
        actions = actions.select_related("criterion__scenario").prefetch_related(
            Prefetch("perf_runs", queryset=_attached_runs(Action))
        )
        runs = [Prefetch("perf_runs", queryset=_attached_runs(PostMortem))]
    return PostMortem.objects.select_related("team", "created_by").prefetch_related(
        "authors",
        "impacts",
        "root_causes",
        "timeline",
        "extra_sections",
        Prefetch("actions", queryset=actions),
        *runs,
    )


def _attached_runs(model: type[Model]) -> QuerySet[Any]:
    # The runs' model is reached through the `perf_runs` relation the perf-run app declares
    # on `model`: this app depends on nothing of that app's code. Once the apps are loaded
    # the relation names a model class (hence the cast). select_related spares the scenarios
    # a query of their own.
    run_model = cast(type[Model], model._meta.get_field("perf_runs").related_model)
    return run_model._default_manager.select_related("scenario").order_by("-created_at", "-id")


@require_GET
def postmortem_detail(request: HttpRequest, pk: int) -> HttpResponse:
    access.require_role(request.user)
    pm = access.get_visible_or_404(request.user, pk, _detail_queryset(with_runs=True))
    history = HistoryEntry.objects.filter(postmortem=pm).select_related("actor")[:HISTORY_SHOWN]
    can_manage = access.can_manage_actions(request.user)
    return render(
        request,
        "postmortems/detail.html",
        {
            "pm": pm,
            "checklist": pm.publish_checklist(),
            "history": history,
            "can_write": access.can_write(request.user),
            "can_manage": can_manage,
            "owner_options": selectors.owner_options() if can_manage else "",
            "status_choices": selectors.status_options(),
            "transitions": _transitions_for(pm),
        },
    )


def _transitions_for(pm: PostMortem) -> list[tuple[str, str]]:
    labels = {
        PostMortemStatus.IN_REVIEW: _("Send to review"),
        PostMortemStatus.PUBLISHED: _("Publish"),
        PostMortemStatus.DRAFT: _("Back to draft"),
    }
    return [
        (to, labels[to]) for (frm, to) in sorted(services.ALLOWED_TRANSITIONS) if frm == pm.status
    ]


def _formsets(request: HttpRequest, pm: PostMortem | None) -> dict[str, Any]:
    data = request.POST if request.method == "POST" else None
    if pm is None:
        initial: dict[str, list[dict[str, Any]]] = {
            "impacts": [],
            "root_causes": [],
            "timeline": [],
            "actions": [],
        }
    else:
        initial = {
            "impacts": initial_rows(pm.impacts.all(), IMPACT_FIELDS),
            "root_causes": initial_rows(pm.root_causes.all(), ROOT_CAUSE_FIELDS),
            "timeline": initial_rows(pm.timeline.all(), TIMELINE_FIELDS),
            "actions": initial_rows(pm.actions.all(), ACTION_FIELDS),
        }
    return {
        "impacts": ImpactFormSet(data, initial=initial["impacts"], prefix="impacts"),
        "root_causes": RootCauseFormSet(data, initial=initial["root_causes"], prefix="causes"),
        "timeline": TimelineFormSet(data, initial=initial["timeline"], prefix="timeline"),
        "actions": ActionFormSet(data, initial=initial["actions"], prefix="actions"),
    }


def _edit(request: HttpRequest, user: User, pm: PostMortem | None) -> HttpResponse:
    form = PostMortemForm(request.POST or None, instance=pm)
    formsets = _formsets(request, pm)
    if (
        request.method == "POST"
        and form.is_valid()
        and all(f.is_valid() for f in formsets.values())
    ):
        fields = {name: form.cleaned_data[name] for name in form.Meta.fields if name != "authors"}
        content = services.PostMortemContent(
            fields=fields,
            authors=list(form.cleaned_data["authors"]),
            impacts=formsets["impacts"].rows(),
            root_causes=formsets["root_causes"].rows(),
            timeline=formsets["timeline"].rows(),
            actions=formsets["actions"].rows(),
        )
        saved = services.postmortem_save(actor=user, content=content, postmortem=pm)
        messages.success(request, _("Post-mortem saved."))
        return redirect(saved)
    return render(
        request,
        "postmortems/edit.html",
        {"form": form, "formsets": formsets, "pm": pm, "invalid": request.method == "POST"},
        status=400 if request.method == "POST" else 200,
    )


@require_http_methods(["GET", "POST"])
def postmortem_create(request: HttpRequest) -> HttpResponse:
    user = access.require_write(request.user)
    return _edit(request, user, None)


@require_http_methods(["GET", "POST"])
def postmortem_edit(request: HttpRequest, pk: int) -> HttpResponse:
    access.require_role(request.user)
    pm = access.get_visible_or_404(request.user, pk, _detail_queryset())
    user = access.require_write(request.user)
    return _edit(request, user, pm)


@require_POST
def postmortem_transition(request: HttpRequest, pk: int) -> HttpResponse:
    user = access.require_role(request.user)
    pm = access.get_visible_or_404(request.user, pk)
    access.require_write(request.user)
    form = TransitionForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Unknown status."))
        return redirect(pm)
    if form.cleaned_data["current"]:
        # The status the person saw: if it changed since, the service refuses.
        pm.status = form.cleaned_data["current"]
    try:
        services.postmortem_transition(postmortem=pm, actor=user, to=form.cleaned_data["to"])
    except services.TransitionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Status changed."))
    return redirect(pm)


@require_POST
def action_manage(request: HttpRequest, pk: int, action_pk: int) -> HttpResponse:
    user = access.require_role(request.user)
    pm = access.get_visible_or_404(request.user, pk)
    if not access.can_manage_actions(request.user):
        raise PermissionDenied(_("Only managers and engineers can change actions."))
    action = get_object_or_404(Action, pk=action_pk, postmortem=pm)
    form = ActionManageForm(request.POST, instance=action, prefix=f"a{action.pk}")
    # Changed from the actions list: back to that list, its filters and page kept.
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = ""
    back = back or f"{reverse('postmortems:detail', args=[pm.pk])}#action-{action.number}"
    if not form.is_valid():
        errors = "; ".join(
            f"{form.fields[f].label}: {' '.join(str(m) for m in e)}" for f, e in form.errors.items()
        )
        messages.error(
            request,
            _("Action %(n)d was not changed: %(errors)s") % {"n": action.number, "errors": errors},
        )
        return redirect(back)
    try:
        services.action_update(
            action=action,
            actor=user,
            status=form.cleaned_data["status"],
            owner=form.cleaned_data["owner"],
            due_date=form.cleaned_data["due_date"],
            seen_status=form.cleaned_data["seen_status"] or None,
        )
    except services.TransitionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Action %(n)d updated.") % {"n": action.number})
    return redirect(back)


@require_GET
def postmortem_export_html(request: HttpRequest, pk: int) -> HttpResponse:
    """The post-mortem as one self-contained HTML file (a download): its impacts, actions,
    proofs and the key figures of its runs, to paste into a wiki or attach to a ticket."""
    pm, page = _export_page(request, pk)
    response = HttpResponse(page, content_type="text/html; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_export_name(pm)}.html"'
    return response


@require_GET
def postmortem_export_pdf(request: HttpRequest, pk: int) -> HttpResponse:
    """The same page as the HTML export, as a PDF to attach to a ticket or send round."""
    pm, page = _export_page(request, pk)
    pdf = sharing.pdf_from_html(page, base_url=settings.SITE_URL)
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{_export_name(pm)}.pdf"'
    return response


def _export_page(request: HttpRequest, pk: int) -> tuple[PostMortem, str]:
    access.require_role(request.user)
    pm = access.get_visible_or_404(request.user, pk, _detail_queryset(with_runs=True))
    language = (translation.get_language() or "en")[:2]
    page = render_to_string(
        "postmortems/export.html",
        {"pm": pm, "language": language, "site_url": settings.SITE_URL.rstrip("/")},
        request=request,
    )
    return pm, page


def _export_name(pm: PostMortem) -> str:
    return f"postmortem-{pm.pk}-{slugify(pm.title)[:60] or 'postmortem'}"


@require_GET
def postmortem_export(request: HttpRequest, pk: int) -> HttpResponse:
    access.require_role(request.user)
    pm = access.get_visible_or_404(request.user, pk, _detail_queryset())
    language = request.GET.get("lang") or translation.get_language() or "en"
    text = markdown.export(pm, language=language[:2])
    response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_export_name(pm)}.md"'
    return response


@require_http_methods(["GET", "POST"])
def postmortem_import(request: HttpRequest) -> HttpResponse:
    """Upload a page, see what each field will get and every guess, then confirm."""
    user = access.require_write(request.user)
    error = None
    if request.method == "POST" and "confirm" in request.POST:
        confirm = ConfirmImportForm(request.POST)
        form = ImportForm()
        if confirm.is_valid():
            data = confirm.cleaned_data
            try:
                result = services.postmortem_import(
                    data=data["text"].encode("utf-8"),
                    actor=user,
                    title=data["title"] or None,
                    file_name=data["file_name"] or None,
                )
            except markdown.MarkdownError as exc:
                error = exc
            else:
                for warning in result.warnings:
                    messages.warning(request, warning)
                messages.success(request, _("Post-mortem imported."))
                return redirect(result.postmortem)
        return render(
            request, "postmortems/import.html", {"form": form, "error": error}, status=400
        )
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        data = upload.read()
        title = form.cleaned_data["title"] or None
        try:
            parsed = services.postmortem_read(data=data, title=title, file_name=upload.name)
        except markdown.MarkdownError as exc:
            error = exc
        else:
            confirm = ConfirmImportForm(
                initial={
                    "text": markdown.decode(data),
                    "title": title or "",
                    "file_name": upload.name,
                }
            )
            return render(
                request,
                "postmortems/import_preview.html",
                {"parsed": parsed, "confirm": confirm, "file_name": upload.name},
            )
    status = 400 if request.method == "POST" else 200
    return render(request, "postmortems/import.html", {"form": form, "error": error}, status=status)
