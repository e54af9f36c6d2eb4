from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from postmortems import access

from . import services, tasks
from .forms import EnvironmentForm, RestoreForm, SourceForm
from .masking.policy import PolicyError
from .models import DumpSource, Restore, ReviewEnvironment, Snapshot


def _require_staff(user) -> None:
    # Sources hold the masking policy and environments the admin DSN names:
    # what decides whether PII leaves production is for administrators.
    if not user.is_staff:
        raise PermissionDenied(_("Only administrators can change sources and environments."))


@require_GET
def source_list(request: HttpRequest) -> HttpResponse:
    access.require_role(request.user)
    sources = DumpSource.objects.all()
    latest = {}
    for snap in Snapshot.objects.order_by("source_id", "-created_at").distinct("source_id"):
        latest[snap.source_id] = snap
    return render(
        request,
        "perfruns/sources.html",
        {"sources": sources, "latest": latest, "can_edit": request.user.is_staff},
    )


@require_GET
def source_detail(request: HttpRequest, name: str) -> HttpResponse:
    access.require_role(request.user)
    source = get_object_or_404(DumpSource, name=name)
    snapshots = source.snapshots.select_related("created_by")[:20]
    return render(
        request,
        "perfruns/source.html",
        {
            "source": source,
            "snapshots": snapshots,
            "can_snapshot": access.can_write(request.user),
            "can_edit": request.user.is_staff,
        },
    )


@require_http_methods(["GET", "POST"])
def source_edit(request: HttpRequest, name: str | None = None) -> HttpResponse:
    _require_staff(request.user)
    source = get_object_or_404(DumpSource, name=name) if name else None
    initial = (
        {
            "name": source.name,
            "dsn_env": source.dsn_env,
            "dsn_file": source.dsn_file,
            "retention": source.retention,
            "policy_yaml": source.policy_yaml,
        }
        if source
        else {}
    )
    form = SourceForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if source and data["name"] != source.name:
            form.add_error("name", _("A source cannot be renamed."))
        else:
            try:
                saved, _created = services.source_save(
                    name=data["name"],
                    dsn_env=data["dsn_env"],
                    dsn_file=data["dsn_file"],
                    policy_yaml=data["policy_yaml"],
                    retention=data["retention"],
                )
            except (services.PipelineRefused, PolicyError) as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, _("Source saved."))
                return redirect(saved)
    status = 400 if request.method == "POST" else 200
    return render(
        request, "perfruns/source_edit.html", {"form": form, "source": source}, status=status
    )


@require_POST
def snapshot_create(request: HttpRequest, name: str) -> HttpResponse:
    access.require_write(request.user)
    source = get_object_or_404(DumpSource, name=name)
    try:
        with transaction.atomic():
            snapshot = services.snapshot_request(source=source, actor=request.user)
            transaction.on_commit(lambda: tasks.snapshot_create.delay(snapshot.pk))
    except services.PipelineRefused as exc:
        messages.error(request, str(exc))
        return redirect(source)
    messages.success(request, _("Snapshot queued."))
    return redirect(snapshot)


@require_GET
def snapshot_detail(request: HttpRequest, pk: int) -> HttpResponse:
    access.require_role(request.user)
    snapshot = get_object_or_404(Snapshot.objects.select_related("source", "created_by"), pk=pk)
    rows = sorted(snapshot.table_rows.items()) if isinstance(snapshot.table_rows, dict) else []
    return render(request, "perfruns/snapshot.html", {"snapshot": snapshot, "rows": rows})


@require_GET
def environment_list(request: HttpRequest) -> HttpResponse:
    access.require_role(request.user)
    envs = ReviewEnvironment.objects.select_related("current_snapshot", "source")
    return render(
        request,
        "perfruns/environments.html",
        {"environments": envs, "can_edit": request.user.is_staff},
    )


def _environment_context(request: HttpRequest, env: ReviewEnvironment) -> dict:
    restores = env.restores.select_related("snapshot", "created_by")[:10]
    return {
        "env": env,
        "restores": restores,
        "active": next((r for r in restores if r.status in ("queued", "running")), None),
        "form": RestoreForm(),
        "can_restore": access.can_write(request.user),
        "can_edit": request.user.is_staff,
    }


@require_GET
def environment_detail(request: HttpRequest, name: str) -> HttpResponse:
    access.require_role(request.user)
    env = get_object_or_404(ReviewEnvironment.objects.select_related("current_snapshot"), name=name)
    return render(request, "perfruns/environment.html", _environment_context(request, env))


@require_GET
def environment_progress(request: HttpRequest, name: str) -> HttpResponse:
    """The live part of the environment page, polled while a restore runs."""
    access.require_role(request.user)
    env = get_object_or_404(ReviewEnvironment.objects.select_related("current_snapshot"), name=name)
    return render(request, "perfruns/_restore_progress.html", _environment_context(request, env))


@require_http_methods(["GET", "POST"])
def environment_edit(request: HttpRequest, name: str | None = None) -> HttpResponse:
    _require_staff(request.user)
    env = get_object_or_404(ReviewEnvironment, name=name) if name else None
    initial = (
        {
            "name": env.name,
            "kind": env.kind,
            "dsn_env": env.dsn_env,
            "database_name": env.database_name,
            "source": env.source,
            "shared_buffers": env.shared_buffers,
            "work_mem": env.work_mem,
            "max_connections": env.max_connections,
        }
        if env
        else {}
    )
    form = EnvironmentForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if env and data["name"] != env.name:
            form.add_error("name", _("An environment cannot be renamed."))
        else:
            try:
                saved, _created = services.environment_save(**data)
            except services.PipelineRefused as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, _("Environment saved."))
                return redirect(saved)
    status = 400 if request.method == "POST" else 200
    return render(
        request, "perfruns/environment_edit.html", {"form": form, "env": env}, status=status
    )


@require_POST
def restore_create(request: HttpRequest, name: str) -> HttpResponse:
    access.require_write(request.user)
    env = get_object_or_404(ReviewEnvironment, name=name)
    form = RestoreForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Unknown snapshot."))
        return redirect(env)
    try:
        with transaction.atomic():
            restore: Restore = services.restore_request(
                environment=env, snapshot=form.cleaned_data["snapshot"], actor=request.user
            )
            transaction.on_commit(lambda: tasks.restore_environment.delay(restore.pk))
    except services.PipelineRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Restore queued."))
    return redirect(env)
