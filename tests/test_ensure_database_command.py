from __future__ import annotations

import io

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

SCRATCH = "fixproof_ensure_database_test"


def _server_params() -> dict:
    db = settings.DATABASES["default"]
    return {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "dbname": "postgres"}


def _drop_scratch() -> None:
    with psycopg.connect(autocommit=True, **_server_params()) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{SCRATCH}"')


def _exists() -> bool:
    with psycopg.connect(autocommit=True, **_server_params()) as conn:
        return bool(
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [SCRATCH]).fetchone()
        )


@pytest.fixture
def scratch_settings(monkeypatch):
    _drop_scratch()
    db = {**settings.DATABASES["default"], "NAME": SCRATCH}
    monkeypatch.setattr(settings, "DATABASES", {"default": db})
    yield
    _drop_scratch()


def test_it_creates_the_database_once(scratch_settings):
    out = io.StringIO()
    call_command("ensure_database", stdout=out)
    assert f"Created database {SCRATCH}." in out.getvalue()
    assert _exists()

    out = io.StringIO()
    call_command("ensure_database", stdout=out)
    assert f"Database {SCRATCH} exists." in out.getvalue()


def test_it_names_the_server_without_the_password_when_it_cannot_connect(monkeypatch):
    db = {
        **settings.DATABASES["default"],
        "HOST": "127.0.0.1",
        "PORT": "1",
        "PASSWORD": "hunter2",
        "NAME": SCRATCH,
    }
    monkeypatch.setattr(settings, "DATABASES", {"default": db})
    with pytest.raises(CommandError) as exc:
        call_command("ensure_database")
    assert f"Cannot create database {SCRATCH} on 127.0.0.1:1" in str(exc.value)
    assert "hunter2" not in str(exc.value)
