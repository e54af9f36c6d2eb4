from django.urls import include, path

from . import views

app_name = "perfruns"

# The performance pages, under /perf/.
perf_urlpatterns = [
    path("sources/", views.source_list, name="sources"),
    path("sources/new/", views.source_edit, name="source_create"),
    path("sources/<slug:name>/", views.source_detail, name="source"),
    path("sources/<slug:name>/edit/", views.source_edit, name="source_edit"),
    path("sources/<slug:name>/snapshot/", views.snapshot_create, name="snapshot_create"),
    path("snapshots/<int:pk>/", views.snapshot_detail, name="snapshot"),
    path("environments/", views.environment_list, name="environments"),
    path("environments/new/", views.environment_edit, name="environment_create"),
    path("environments/<slug:name>/", views.environment_detail, name="environment"),
    path("environments/<slug:name>/edit/", views.environment_edit, name="environment_edit"),
    path("environments/<slug:name>/progress/", views.environment_progress, name="progress"),
    path("environments/<slug:name>/restore/", views.restore_create, name="restore"),
    path("scenarios/", views.scenario_list, name="scenarios"),
    path("scenarios/new/", views.scenario_edit, name="scenario_create"),
    path("scenarios/<slug:name>/", views.scenario_detail, name="scenario"),
    path("scenarios/<slug:name>/edit/", views.scenario_edit, name="scenario_edit"),
    path("scenarios/<slug:name>/run/", views.scenario_run, name="scenario_run"),
    path("scenarios/<slug:name>/schedule/", views.scenario_schedule, name="scenario_schedule"),
    path(
        "scenarios/<slug:name>/changes/<int:pk>/",
        views.incident_resolve,
        name="incident_resolve",
    ),
    path(
        "scenarios/<slug:name>/versions/",
        views.version_comparison_create,
        name="version_comparison_create",
    ),
    path("versions/<int:pk>/", views.version_comparison_detail, name="version_comparison"),
    path(
        "versions/<int:pk>/progress/",
        views.version_comparison_progress,
        name="version_comparison_progress",
    ),
    path(
        "versions/<int:pk>/cancel/",
        views.version_comparison_cancel,
        name="version_comparison_cancel",
    ),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    path("runs/<int:pk>/progress/", views.run_progress, name="run_progress"),
    path("runs/<int:pk>/series/", views.run_series, name="run_series"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<int:pk>/files/<str:name>", views.run_artifact, name="run_artifact"),
    path("runs/<int:base>/vs/<int:pk>/", views.run_compare, name="run_compare"),
    path("runs/compare/", views.run_compare_pick, name="run_compare_pick"),
]

# Perf-run pages that live at a post-mortem's address: the proof an action asks for.
postmortem_urlpatterns = [
    path(
        "<int:pk>/actions/<int:action_pk>/proof/", views.action_criterion, name="action_criterion"
    ),
]

# One include keeps both prefixes in the one "perfruns" namespace (two includes with the
# same namespace would let reverse() see only one of them).
urlpatterns = [
    path("perf/", include(perf_urlpatterns)),
    # The managers' weekly summary (post-mortems and proofs together), at the top level.
    path("summary/", views.summary_week, name="weekly_summary"),
    path("postmortems/", include(postmortem_urlpatterns)),
]
