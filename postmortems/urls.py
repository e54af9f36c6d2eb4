from django.urls import path

from . import views

app_name = "postmortems"

urlpatterns = [
    path("", views.postmortem_list, name="list"),
    path("new/", views.postmortem_create, name="create"),
    path("import/", views.postmortem_import, name="import"),
    path("actions/", views.action_list, name="actions"),
    path("actions/mine/", views.my_actions, name="my_actions"),
    path("<int:pk>/", views.postmortem_detail, name="detail"),
    path("<int:pk>/edit/", views.postmortem_edit, name="edit"),
    path("<int:pk>/status/", views.postmortem_transition, name="transition"),
    path("<int:pk>/export.md", views.postmortem_export, name="export"),
    path("<int:pk>/export.html", views.postmortem_export_html, name="export_html"),
    path("<int:pk>/export.pdf", views.postmortem_export_pdf, name="export_pdf"),
    path("<int:pk>/actions/<int:action_pk>/", views.action_manage, name="action"),
    # .../actions/<action_pk>/proof/ (the proof an action asks for) is the perf-run app's.
]
