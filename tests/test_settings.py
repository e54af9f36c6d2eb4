"""Bad configuration stops start-up with a message naming the variable, never its value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOOD = {
    "SECRET_KEY": "s" * 50,
    "DEBUG": "0",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/fixproof",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
}


def start(**overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in GOOD and k != "FIXPROOF_ENV_FILE"}
    env.update(GOOD)
    env.update(overrides)
    # No .env file: the test controls every variable.
    env["FIXPROOF_ENV_FILE"] = "/nonexistent/.env"
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "fixproof.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_starts_with_good_values():
    result = start()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG must be one of"),
        ("SECRET_KEY", "", "SECRET_KEY is not set"),
        ("SECRET_KEY", "short", "SECRET_KEY must be at least 32 characters"),
        ("DATABASE_URL", "mysql://root:hunter2@db/x", "DATABASE_URL must be a PostgreSQL URL"),
        ("DATABASE_URL", "not a url at all:hunter2", "DATABASE_URL"),
        ("CELERY_BROKER_URL", "http://hunter2@broker", "CELERY_BROKER_URL must be"),
        ("SITE_URL", "fixproof.local", "SITE_URL must be an absolute"),
        ("CSRF_TRUSTED_ORIGINS", "fixproof.local", "CSRF_TRUSTED_ORIGINS entries must"),
        ("POSTMORTEM_IMPORT_MAX_BYTES", "lots", "POSTMORTEM_IMPORT_MAX_BYTES must be a whole"),
    ],
)
def test_it_refuses_a_bad_value_naming_the_variable(name, value, message):
    result = start(**{name: value})
    assert result.returncode != 0
    assert message in result.stderr
    # A secret in a bad value is never echoed back.
    assert "hunter2" not in result.stderr


def test_debug_allows_a_missing_secret_key_for_development():
    result = start(DEBUG="1", SECRET_KEY="")
    assert result.returncode == 0, result.stderr


def test_a_malformed_env_file_names_its_line(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nDEBUG=1\nthis line has no equals sign\n")
    env = {k: v for k, v in os.environ.items() if k not in GOOD}
    env.update(GOOD, FIXPROOF_ENV_FILE=str(env_file), DJANGO_SETTINGS_MODULE="fixproof.settings")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert ".env line 3: expected KEY=VALUE" in result.stderr
