from __future__ import annotations

import io

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command


def test_it_reports_that_both_services_answer():
    out = io.StringIO()
    call_command("ensure_services", stdout=out)
    assert "PostgreSQL answers." in out.getvalue()
    assert "Redis answers." in out.getvalue()


def test_it_does_not_try_to_start_a_remote_postgresql(monkeypatch):
    db = {**settings.DATABASES["default"], "HOST": "127.0.0.2", "PORT": "1", "PASSWORD": "hunter2"}
    monkeypatch.setattr(settings, "DATABASES", {"default": db})
    with pytest.raises(CommandError) as exc:
        call_command("ensure_services", stdout=io.StringIO())
    assert "PostgreSQL on 127.0.0.2 does not answer: check DATABASE_URL" in str(exc.value)
    assert "hunter2" not in str(exc.value)


def test_it_does_not_try_to_start_a_remote_redis(monkeypatch):
    monkeypatch.setattr(settings, "CELERY_BROKER_URL", "redis://:hunter2@127.0.0.2:1/0")
    with pytest.raises(CommandError) as exc:
        call_command("ensure_services", stdout=io.StringIO())
    assert "Redis on 127.0.0.2 does not answer: check CELERY_BROKER_URL" in str(exc.value)
    assert "hunter2" not in str(exc.value)
