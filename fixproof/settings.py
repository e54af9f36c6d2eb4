"""Fixproof settings, all read from the environment (see .env.example).

A bad value stops start-up with a message naming the variable; a value is
never echoed back, because several of them (DATABASE_URL, SECRET_KEY) are
secrets.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent


def _load_dotenv(path: Path) -> None:
    # The process environment wins over the file, so CI and containers can
    # override anything without editing .env.
    if not path.is_file():
        return
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ImproperlyConfigured(f"{path.name} line {number}: expected KEY=VALUE")
        os.environ.setdefault(key.strip(), value.strip().strip("'\""))


_load_dotenv(Path(os.environ.get("FIXPROOF_ENV_FILE", BASE_DIR / ".env")))

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: set it in the environment or in .env "
            "(make run writes one), or set DEBUG=1 for a throw-away development key"
        )
    SECRET_KEY = "fixproof-insecure-development-key-do-not-use-in-production"
elif len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            "CSRF_TRUSTED_ORIGINS entries must start with http:// or https://"
        )

SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
if urlsplit(SITE_URL).scheme not in ("http", "https") or not urlsplit(SITE_URL).netloc:
    raise ImproperlyConfigured("SITE_URL must be an absolute http(s) URL")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_celery_beat",
    # Login throttling: a maintained, tested lockout rather than a counter of our own.
    "axes",
    # The project's own set-up commands: ensure_services, ensure_database, ensure_admin.
    "fixproof",
    "postmortems",
    "perfruns",
    # The managers' dashboard: reads of both apps above.
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A Content-Security-Policy on every response (django-csp).
    "csp.middleware.CSPMiddleware",
    "fixproof.middleware.PrivatePagesMiddleware",
    # Last, as django-axes asks: it answers a locked-out login.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # First, as django-axes asks: it refuses a locked-out username and address.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Five wrong passwords for one username from one address lock it out for 15 minutes.
AXES_FAILURE_LIMIT = env_int("FIXPROOF_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env_int("FIXPROOF_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "locked_out.html"
# Behind a proxy the client's address is the first of X-Forwarded-For (FIXPROOF_PROXY_*).
AXES_IPWARE_PROXY_COUNT = env_int("FIXPROOF_PROXY_COUNT", 0, minimum=0)

ROOT_URLCONF = "fixproof.urls"

TEMPLATES = [
    {
        # Fixproof's own pages are Jinja2 templates under templates/.
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": False,
        "OPTIONS": {
            "environment": "fixproof.jinja2.environment",
            "autoescape": True,
        },
    },
    {
        # The Django admin ships Django templates.
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "fixproof.wsgi.application"

_DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fixproof")
try:
    _db = dj_database_url.parse(_DATABASE_URL, conn_max_age=60)
except Exception:
    raise ImproperlyConfigured(
        "DATABASE_URL is not a valid database URL (expected postgres://user@host:port/name)"
    ) from None
if _db.get("ENGINE") != "django.db.backends.postgresql" or not _db.get("NAME"):
    raise ImproperlyConfigured(
        "DATABASE_URL must be a PostgreSQL URL with a database name "
        "(postgres://user@host:port/name)"
    )
DATABASES = {"default": _db}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
if urlsplit(CELERY_BROKER_URL).scheme not in ("redis", "rediss", "amqp", "amqps"):
    raise ImproperlyConfigured("CELERY_BROKER_URL must be a redis:// or amqp:// URL")
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Every minute a worker ends the jobs whose process is gone (a silent heartbeat), cleans
# what they left and tells the teams: recovery does not wait for a worker to restart.
CELERY_BEAT_SCHEDULE = {
    "fixproof janitor": {"task": "perfruns.janitor_sweep", "schedule": 60.0},
    # Once a day the owners of actions due soon or overdue get their digest (idempotent
    # per person and day: a second run or a second worker sends nothing twice).
    "fixproof reminders": {
        "task": "perfruns.reminders_send",
        "schedule": crontab(minute=0, hour=env_int("REMINDER_HOUR", 7)),
    },
    # Mondays, the managers' summary of the week just ended (idempotent per person and week).
    "fixproof weekly summary": {
        "task": "perfruns.weekly_summary_send",
        "schedule": crontab(minute=0, hour=env_int("REMINDER_HOUR", 7), day_of_week=1),
    },
}
# An action due within this many days is in its owner's daily digest; overdue for
# REMINDER_ESCALATE_AFTER_DAYS, its team's manager is told too.
REMINDER_DUE_SOON_DAYS = env_int("REMINDER_DUE_SOON_DAYS", 2)
REMINDER_ESCALATE_AFTER_DAYS = env_int("REMINDER_ESCALATE_AFTER_DAYS", 7, minimum=1)

# E-mail: the console by default (make run prints the messages); SMTP when EMAIL_HOST is set.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "fixproof@localhost")
CELERY_TIMEZONE = "UTC"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("fr", _("French"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
# Number formats of our own where a language's typography differs from Django's (French
# thousands: a narrow no-break space).
FORMAT_MODULE_PATH = ["fixproof.formats"]
USE_I18N = True
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Filled by collectstatic (make run, the Docker image); served by whitenoise.
STATIC_ROOT = BASE_DIR / "staticfiles"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Largest Markdown file the import form accepts.
POSTMORTEM_IMPORT_MAX_BYTES = env_int("POSTMORTEM_IMPORT_MAX_BYTES", 1_000_000, minimum=1024)

SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Behind an HTTPS proxy: FIXPROOF_HTTPS=1 redirects to HTTPS, sends HSTS and marks the
# cookies secure; FIXPROOF_PROXY_SSL_HEADER=1 trusts the proxy's X-Forwarded-Proto (only
# when the proxy sets it on every request: a client could send it otherwise).
FIXPROOF_HTTPS = env_bool("FIXPROOF_HTTPS", False)
if FIXPROOF_HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = env_int("FIXPROOF_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
if env_bool("FIXPROOF_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Every page's scripts, styles and requests come from the service itself (the charting
# library included: make vendor serves it locally).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # An ordinary 403 or 404 is one line, not a traceback.
    "filters": {"no_traceback_for_4xx": {"()": "fixproof.logs.NoTracebackFor4xx"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["no_traceback_for_4xx"]}
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # The PDF export's layout steps, eight lines a page otherwise; its warnings still show.
    "loggers": {"weasyprint.progress": {"level": "WARNING"}},
}
WHITENOISE_USE_FINDERS = True

# --- Snapshots and review environments -------------------------------------
# Dumps, managed clusters and scratch space live here.
FIXPROOF_DATA_DIR = Path(os.environ.get("FIXPROOF_DATA_DIR") or BASE_DIR / "var").resolve()
SNAPSHOT_RETENTION = env_int("SNAPSHOT_RETENTION", 5, minimum=1)
# pg_restore / masking parallelism.
PIPELINE_JOBS = env_int("PIPELINE_JOBS", 2, minimum=1)
# Upper bound of one snapshot or restore, in seconds.
PIPELINE_TIMEOUT = env_int("PIPELINE_TIMEOUT", 3600, minimum=60)
# The OS user managed clusters run as when Fixproof runs as root.
MANAGED_CLUSTER_OS_USER = os.environ.get("MANAGED_CLUSTER_OS_USER", "postgres")
# The HMAC key of masking: the same key gives the same fakes across snapshots.
# Defaults to a key derived from SECRET_KEY; set it to keep fakes stable when
# SECRET_KEY rotates.
MASKING_KEY = os.environ.get("MASKING_KEY", "")
if MASKING_KEY and len(MASKING_KEY) < 16:
    raise ImproperlyConfigured("MASKING_KEY must be at least 16 characters long")
