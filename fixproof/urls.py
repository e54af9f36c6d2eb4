from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.i18n import set_language

urlpatterns = [
    # The home page: the managers' dashboard, or an engineer's own actions.
    path("", include("dashboard.urls")),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Password reset by e-mail, open to whoever is not signed in. The link in the e-mail is
    # built from SITE_URL, never from the request's Host header.
    path(
        "password-reset/",
        login_not_required(
            auth_views.PasswordResetView.as_view(
                extra_email_context={"site_url": settings.SITE_URL}
            )
        ),
        name="password_reset",
    ),
    path(
        "password-reset/sent/",
        login_not_required(auth_views.PasswordResetDoneView.as_view()),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        login_not_required(auth_views.PasswordResetConfirmView.as_view()),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done/",
        login_not_required(auth_views.PasswordResetCompleteView.as_view()),
        name="password_reset_complete",
    ),
    path("i18n/setlang/", login_not_required(set_language), name="set_language"),
    path("postmortems/", include("postmortems.urls")),
    # perfruns' pages under perf/, and the action's proof page under postmortems/.
    path("", include("perfruns.urls")),
    path("admin/", admin.site.urls),
]
