from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from postmortems import access
from postmortems.models import Action

from .forms import (
    CriterionForm,
    EnvironmentForm,
    RestoreForm,
    ScenarioForm,
    ScheduleForm,
    SourceForm,
    VersionComparisonForm,
)
from .loadtest import group_failures
from .masking.policy import PolicyError
from .models import (
    Artifact,
    DumpSource,
    PerfRun,
    RegressionIncident,
    Restore,
    ReviewEnvironment,
    RunStatus,
    RunTrigger,
    Scenario,
    Snapshot,
    VersionComparison,
)
from .services import (
    common,
    environments,
    jobs,
    proofs,
    restores,
    runs,
    scenarios,
    snapshots,
    sources,
    trends,
    version_comparisons,
    weekly_summary,
)
from .services.recording import run_live_figures
from .services.run_comparison import ComparisonError, compare_runs

ARTIFACT_CSP = (
    "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:"
)


def _visible(request: HttpRequest) -> Any:
    """The pks of the post-mortems the person may open."""
    return access.visible_postmortems(request.user).values("pk")


def _files_visible(request: HttpRequest, run: PerfRun) -> bool:
    """A run's files (Locust's report, the target's log) are evidence of the incidents it is
    attached to: only whoever may open every one of them downloads them."""
    return not run.postmortems.exclude(pk__in=_visible(request)).exists()


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
                saved, _created = sources.source_save(
                    name=data["name"],
                    dsn_env=data["dsn_env"],
                    dsn_file=data["dsn_file"],
                    policy_yaml=data["policy_yaml"],
                    retention=data["retention"],
                )
            except (common.PipelineRefused, PolicyError) as exc:
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
    user = access.require_write(request.user)
    source = get_object_or_404(DumpSource, name=name)
    try:
        with transaction.atomic():
            snapshot = snapshots.snapshot_request(source=source, actor=user)
            snapshots.snapshot_enqueue(snapshot)
    except common.PipelineRefused as exc:
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
                saved, _created = environments.environment_save(**data)
            except common.PipelineRefused as exc:
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
    user = access.require_write(request.user)
    env = get_object_or_404(ReviewEnvironment, name=name)
    form = RestoreForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Unknown snapshot."))
        return redirect(env)
    try:
        with transaction.atomic():
            restore: Restore = restores.restore_request(
                environment=env, snapshot=form.cleaned_data["snapshot"], actor=user
            )
            restores.restore_enqueue(restore)
    except common.PipelineRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Restore queued."))
    return redirect(env)


# ---------------------------------------------------------------- scenarios and runs


@require_GET
def scenario_list(request: HttpRequest) -> HttpResponse:
    access.require_role(request.user)
    scenarios = list(Scenario.objects.select_related("environment"))
    latest = {
        run.scenario_id: run
        for run in PerfRun.objects.order_by("scenario_id", "-created_at").distinct("scenario_id")
    }
    return render(request, "perfruns/scenarios.html", {"scenarios": scenarios, "latest": latest})


@require_GET
def scenario_detail(request: HttpRequest, name: str) -> HttpResponse:
    access.require_role(request.user)
    scenario = get_object_or_404(Scenario.objects.select_related("environment", "team"), name=name)
    schedule = scenarios.scenario_schedule(scenario)
    form = ScheduleForm(
        initial={
            "day_of_week": schedule.crontab.day_of_week if schedule else "1",
            "hour": schedule.crontab.hour if schedule else 3,
            "minute": schedule.crontab.minute if schedule else 0,
            "enabled": schedule.enabled if schedule else False,
        }
    )
    return render(
        request,
        "perfruns/scenario.html",
        {
            "scenario": scenario,
            "schedule": schedule,
            "form": form,
            "versions_form": VersionComparisonForm(initial={"version_a": scenario.default_version}),
            "comparisons": scenario.version_comparisons.all()[:10],
            # A private post-mortem shows only to who may open it, here as everywhere.
            "incidents": scenario.incidents.select_related("postmortem", "start_run").filter(
                postmortem__in=_visible(request)
            ),
            "runs": scenario.runs.select_related("created_by")[:30],
            "postmortems": scenario.postmortems.filter(pk__in=_visible(request)),
            "can_run": access.can_write(request.user),
        },
    )


@require_POST
def scenario_run(request: HttpRequest, name: str) -> HttpResponse:
    user = access.require_write(request.user)
    scenario = get_object_or_404(Scenario.objects.select_related("environment"), name=name)
    # Empty: the version of the weekly runs (for a target whose command takes {version}).
    version = request.POST.get("version", "").strip() or None
    try:
        with transaction.atomic():
            run = runs.perfrun_request(
                scenario=scenario, trigger=RunTrigger.MANUAL, actor=user, version=version
            )
            runs.perfrun_enqueue(run)
    except common.PipelineRefused as exc:
        messages.error(request, str(exc))
        return redirect(scenario)
    messages.success(request, _("Run queued."))
    return redirect(run)


@require_POST
def scenario_schedule(request: HttpRequest, name: str) -> HttpResponse:
    access.require_write(request.user)
    scenario = get_object_or_404(Scenario, name=name)
    form = ScheduleForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("The schedule was not changed: check the day and time."))
        return redirect(scenario)
    try:
        scenarios.scenario_schedule_set(scenario=scenario, **form.cleaned_data)
    except common.PipelineRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Schedule saved."))
    return redirect(scenario)


def _run_context(request: HttpRequest, run: PerfRun) -> dict:
    return {
        "run": run,
        "can_cancel": access.can_write(request.user) and run.is_active,
        # A queued run no worker will take says so, rather than "Queued" for ever.
        "no_worker": run.status == RunStatus.QUEUED and not jobs.workers_alive(),
        # The latest samples of a run under way (two queries; none once it is over).
        "live": run_live_figures(run=run) if run.is_active else None,
    }


@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    access.require_role(request.user)
    run = get_object_or_404(
        PerfRun.objects.select_related("scenario", "environment", "created_by", "snapshot"), pk=pk
    )
    endpoints = list(run.endpoints.all())
    failure_groups = list(run.failure_groups.all()[:50])
    # Runs recorded before causes were kept: grouped from the groups shown.
    causes = run.summary.get("failure_causes")
    if causes is None:
        causes = [vars(cause) for cause in group_failures(failure_groups)]
    context = _run_context(request, run)
    context.update(
        endpoints=[e for e in endpoints if not e.is_aggregate],
        total=next((e for e in endpoints if e.is_aggregate), None),
        failure_groups=failure_groups,
        failure_causes=causes,
        artifacts=run.artifacts.all() if _files_visible(request, run) else [],
        postmortems=run.postmortems.filter(pk__in=_visible(request)),
        actions=run.actions.select_related("postmortem").filter(postmortem__in=_visible(request)),
    )
    return render(request, "perfruns/run.html", context)


@require_GET
def run_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The live part of a run page, polled while the run is queued or running."""
    access.require_role(request.user)
    run = get_object_or_404(PerfRun.objects.select_related("scenario"), pk=pk)
    return render(request, "perfruns/_run_progress.html", _run_context(request, run))


@require_GET
def run_series(request: HttpRequest, pk: int) -> JsonResponse:
    """The run's samples on one time axis, for the charts."""
    access.require_role(request.user)
    run = get_object_or_404(PerfRun, pk=pk)
    fields = (
        "t",
        "users",
        "rps",
        "failures_per_s",
        "p50_ms",
        "p95_ms",
        "db_pss",
        "db_pss_anon",
        "db_pss_shared",
        "db_cgroup",
        "target_rss",
        "target_pss",
        "target_processes",
    )
    series: dict[str, Any] = {name: [] for name in fields}
    for row in run.samples.order_by("t", "id").values_list(*fields).iterator(chunk_size=2000):
        for name, value in zip(fields, row, strict=True):
            series[name].append(value)
    series["endpoints"] = _endpoint_lines(run)
    # The robust lines through the memory over the steady phase, drawn over the samples.
    series["fits"] = {
        label: {key: fit[key] for key in ("start_s", "end_s", "intercept", "per_minute")}
        for label in ("db", "target")
        if (fit := run.summary.get(f"{label}_slope")) and "start_s" in fit
    }
    return JsonResponse(series)


def _endpoint_lines(run: PerfRun) -> dict[str, Any]:
    """Each endpoint's p95 and req/s a second, on a time axis of their own: {"t": [...],
    "lines": [{"label": "GET /x", "p95_ms": [...], "rps": [...]}]} (None where an
    endpoint had no row at that second)."""
    times: list[float] = []
    index: dict[str, dict[str, list[float | None]]] = {}
    rows = run.endpoint_samples.order_by("t", "id").values_list(
        "t", "method", "name", "p95_ms", "rps"
    )
    for t, method, name, p95, rps in rows.iterator(chunk_size=2000):
        if not times or t != times[-1]:
            times.append(t)
            for line in index.values():
                line["p95_ms"].append(None)
                line["rps"].append(None)
        label = f"{method} {name}".strip()
        if label not in index:
            index[label] = {"p95_ms": [None] * len(times), "rps": [None] * len(times)}
        line = index[label]
        line["p95_ms"][-1] = p95
        line["rps"][-1] = rps
    lines = [{"label": label, **values} for label, values in sorted(index.items())]
    return {"t": times, "lines": lines}


@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    access.require_write(request.user)
    run = get_object_or_404(PerfRun, pk=pk)
    if runs.perfrun_cancel(run=run):
        messages.success(request, _("The run is being stopped; what it measured is kept."))
    else:
        messages.error(request, _("The run has already ended."))
    return redirect(run)


@require_GET
def run_artifact(request: HttpRequest, pk: int, name: str) -> FileResponse:
    access.require_role(request.user)
    artifact = get_object_or_404(Artifact, run_id=pk, name=name)
    if not _files_visible(request, artifact.run):
        raise Http404(_("This file is no longer kept."))
    path = Path(artifact.path)
    if not path.is_file():
        raise Http404(_("This file is no longer kept."))
    response = FileResponse(
        path.open("rb"),
        content_type=artifact.content_type,
        as_attachment=artifact.content_type != "text/html",
        filename=artifact.name,
    )
    if artifact.content_type == "text/html":
        # Locust's report runs its own inline scripts: in a sandbox, an origin of its own
        # that can read nothing of Fixproof's (its session, its pages).
        response["Content-Security-Policy"] = ARTIFACT_CSP
    return response


@require_GET
def run_compare_pick(request: HttpRequest) -> HttpResponse:
    """Any two runs, by number: to their side-by-side page."""
    access.require_role(request.user)
    try:
        base, pk = int(request.GET["base"]), int(request.GET["pk"])
    except (KeyError, ValueError):
        messages.error(request, _("Give the numbers of the two runs to compare."))
        return redirect("perfruns:scenarios")
    return redirect("perfruns:run_compare", base=base, pk=pk)


@require_GET
def run_compare(request: HttpRequest, base: int, pk: int) -> HttpResponse:
    """Two runs side by side: per-endpoint deltas with their verdicts."""
    access.require_role(request.user)
    visible = PerfRun.objects.select_related("scenario", "environment")
    baseline = get_object_or_404(visible, pk=base)
    candidate = get_object_or_404(visible, pk=pk)
    comparison, problem = None, ""
    try:
        comparison = compare_runs(baseline=baseline, candidate=candidate)
    except ComparisonError as exc:
        problem = str(exc)
    return render(
        request,
        "perfruns/compare.html",
        {
            "baseline": baseline,
            "candidate": candidate,
            "comparison": comparison,
            "problem": problem,
        },
    )


@require_POST
def incident_resolve(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    access.require_write(request.user)
    incident = get_object_or_404(RegressionIncident, scenario__name=name, pk=pk)
    try:
        changed = trends.regression_incident_resolve(
            incident=incident, state=request.POST.get("state", "")
        )
    except common.PipelineRefused as exc:
        messages.error(request, str(exc))
    else:
        if changed:
            messages.success(request, _("Change marked."))
        else:
            messages.error(request, _("This change was already accepted or fixed."))
    return redirect("perfruns:scenario", name=name)


# ---------------------------------------------------------------- A/B/A comparisons


@require_POST
def version_comparison_create(request: HttpRequest, name: str) -> HttpResponse:
    user = access.require_write(request.user)
    scenario = get_object_or_404(Scenario.objects.select_related("environment"), name=name)
    form = VersionComparisonForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Give both versions, at most 100 characters each."))
        return redirect(scenario)
    try:
        with transaction.atomic():
            comparison = version_comparisons.version_comparison_request(
                scenario=scenario, actor=user, **form.cleaned_data
            )
            version_comparisons.version_comparison_enqueue(comparison)
    except common.PipelineRefused as exc:
        messages.error(request, str(exc))
        return redirect(scenario)
    messages.success(request, _("Comparison queued: A, then B, then A again."))
    return redirect(comparison)


def _version_comparison(pk: int) -> VersionComparison:
    return get_object_or_404(
        VersionComparison.objects.select_related("scenario", "created_by"), pk=pk
    )


def _version_comparison_context(request: HttpRequest, comparison: VersionComparison) -> dict:
    runs = {run.role: run for run in comparison.runs.all()}
    return {
        "comparison": comparison,
        "runs": runs,
        "active_run": next((r for r in runs.values() if r.is_active), None),
        "can_cancel": access.can_write(request.user) and comparison.is_active,
    }


@require_GET
def version_comparison_detail(request: HttpRequest, pk: int) -> HttpResponse:
    access.require_role(request.user)
    comparison = _version_comparison(pk)
    return render(
        request,
        "perfruns/version_comparison.html",
        _version_comparison_context(request, comparison),
    )


@require_GET
def version_comparison_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The live part of a comparison page, polled while it is queued or running."""
    access.require_role(request.user)
    comparison = _version_comparison(pk)
    return render(
        request,
        "perfruns/_version_comparison_progress.html",
        _version_comparison_context(request, comparison),
    )


@require_POST
def version_comparison_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    access.require_write(request.user)
    comparison = get_object_or_404(VersionComparison, pk=pk)
    if version_comparisons.version_comparison_cancel(comparison=comparison):
        messages.success(request, _("The comparison is being stopped."))
    else:
        messages.error(request, _("The comparison has already ended."))
    return redirect(comparison)


@require_http_methods(["GET", "POST"])
def action_criterion(request: HttpRequest, pk: int, action_pk: int) -> HttpResponse:
    """The proof an action asks for: set, changed or removed by who manages actions."""
    user = access.require_role(request.user)
    pm = access.get_visible_or_404(request.user, pk)
    if not access.can_manage_actions(request.user):
        raise PermissionDenied(_("Only managers and engineers can change actions."))
    action = get_object_or_404(
        Action.objects.select_related("criterion"), pk=action_pk, postmortem=pm
    )
    criterion = getattr(action, "criterion", None)
    back = f"{reverse('postmortems:detail', args=[pm.pk])}#action-{action.number}"
    if request.method == "POST" and "remove" in request.POST:
        if proofs.criterion_remove(action=action, actor=user):
            messages.success(
                request, _("Action %(n)d asks for no proof any more.") % {"n": action.number}
            )
        return redirect(back)
    initial = {}
    if criterion is not None:
        initial = {
            "scenario": criterion.scenario_id,
            "endpoint": criterion.endpoint,
            "metric": criterion.metric,
            "comparison": criterion.comparison,
            "value": criterion.value,
            "users": criterion.users,
            "reference_run": criterion.reference_run_id,
            "red_then_green": criterion.red_then_green,
        }
    form = CriterionForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            proofs.criterion_save(action=action, actor=user, **form.cleaned_data)
        except common.PipelineRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request, _("Action %(n)d now asks for this proof.") % {"n": action.number}
            )
            return redirect(back)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "perfruns/criterion.html",
        {"pm": pm, "action": action, "criterion": criterion, "form": form},
        status=status,
    )


# ---------------------------------------------------------------- the managers' week


@require_GET
def summary_week(request: HttpRequest) -> HttpResponse:
    """Seven days per team and overall, as the reader may see them: the last seven by
    default, or ?week=2026-W12 / ?week=2026-03-16 (the first of seven days)."""
    user = access.require_role(request.user)
    today = timezone.localdate()
    period = weekly_summary.period_last_days(today)
    error = ""
    if request.GET.get("week"):
        try:
            period = weekly_summary.period_parse(request.GET["week"])
        except ValueError as exc:
            error = str(exc)
    summary = weekly_summary.weekly_summary_for(user=user, period=period, today=today)
    previous = period.start - dt.timedelta(days=7)
    following = period.start + dt.timedelta(days=7)
    return render(
        request,
        "perfruns/weekly_summary.html",
        {
            "summary": summary,
            "error": error,
            "previous": previous.isoformat(),
            "following": following.isoformat() if following <= today else "",
        },
        status=400 if error else 200,
    )


# ---------------------------------------------------------------- a scenario's own page


@require_http_methods(["GET", "POST"])
def scenario_edit(request: HttpRequest, name: str | None = None) -> HttpResponse:
    """Create or change a scenario. Administrators only: its start command runs on the
    workers. One loaded from a YAML file is changed in that file, never here: the next
    load would overwrite the change."""
    if not request.user.is_staff:
        raise PermissionDenied(
            _("Only administrators can change scenarios: their start command runs on the workers.")
        )
    scenario = (
        get_object_or_404(Scenario.objects.select_related("environment", "team"), name=name)
        if name
        else None
    )
    initial = ScenarioForm.initial_for(scenario) if scenario else None
    form = ScenarioForm(request.POST or None, initial=initial)
    status = 200
    if request.method == "POST" and scenario is not None and scenario.defined_in:
        form = ScenarioForm(initial=initial)
        status = 409
    elif request.method == "POST":
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            if scenario and data["name"] != scenario.name:
                form.add_error("name", _("A scenario cannot be renamed."))
            elif not scenario and Scenario.objects.filter(name=data["name"]).exists():
                form.add_error("name", _("A scenario with this name exists already."))
            else:
                try:
                    saved, _created = scenarios.scenario_save(
                        name=data["name"], values={**form.values(), "defined_in": ""}
                    )
                except common.PipelineRefused as exc:
                    form.add_error(None, str(exc))
                else:
                    messages.success(request, _("Scenario saved."))
                    return redirect(saved)
    return render(
        request,
        "perfruns/scenario_edit.html",
        {"form": form, "scenario": scenario},
        status=status,
    )
