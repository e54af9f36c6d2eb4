"""Hardening: HTTPS settings that pass Django's deploy checks, a Content-Security-Policy on
every page, no cache of private pages, login throttling, bounded policies, quiet 4xx logs."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from fixproof.logs import NoTracebackFor4xx
from perfruns.masking.policy import MAX_POLICY_DEPTH, PolicyError, parse_policy

ROOT = Path(settings.BASE_DIR)


def deploy_check(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env={**os.environ, "SECRET_KEY": secrets.token_urlsafe(50), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_https_settings_pass_djangos_deploy_checks():
    checked = deploy_check(DEBUG="0", FIXPROOF_HTTPS="1", FIXPROOF_PROXY_SSL_HEADER="1")

    assert checked.returncode == 0, checked.stderr
    assert "System check identified no issues (0 silenced)." in checked.stdout
    assert "WARNINGS" not in checked.stdout + checked.stderr


def test_without_https_the_deploy_checks_say_what_is_missing():
    checked = deploy_check(DEBUG="0", FIXPROOF_HTTPS="0")

    output = checked.stdout + checked.stderr
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in output


def test_every_page_has_a_content_security_policy(client, viewer):
    client.force_login(viewer)

    response = client.get(reverse("postmortems:list"))

    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "object-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy


def test_a_signed_in_page_is_never_cached_and_a_static_file_is(client, viewer):
    client.force_login(viewer)

    page = client.get(reverse("postmortems:list"))
    css = client.get("/static/fixproof.css")

    assert "no-store" in page["Cache-Control"] and "private" in page["Cache-Control"]
    assert css.status_code == 200
    assert "no-store" not in css.get("Cache-Control", "")


def test_repeated_wrong_passwords_lock_the_account_out_even_for_the_right_one(client, viewer):
    login = reverse("login")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(login, {"username": "vera", "password": "wrong"})

    response = client.post(login, {"username": "vera", "password": "correct horse battery"})

    assert response.status_code == 429
    assert "Too many wrong passwords" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_right_password_before_the_limit_signs_in(client, viewer):
    login = reverse("login")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post(login, {"username": "vera", "password": "wrong"})

    response = client.post(login, {"username": "vera", "password": "correct horse battery"})

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(viewer.pk)


def test_a_policy_nested_too_deep_is_refused_with_a_message_not_a_crash():
    deep = "tables: " + "[" * 5000 + "]" * 5000

    with pytest.raises(PolicyError, match=f"nested more than {MAX_POLICY_DEPTH} levels deep"):
        parse_policy(deep)


def test_a_policy_too_large_is_refused():
    with pytest.raises(PolicyError, match="bytes, more than the 1,000,000"):
        parse_policy("tables: {}\n#" + "x" * 1_000_001)


def test_an_ordinary_refusal_is_logged_without_its_traceback():
    try:
        raise PermissionError("no")
    except PermissionError:
        record = logging.LogRecord(
            "django.request", logging.WARNING, __file__, 1, "Forbidden: /x", (), sys.exc_info()
        )
    record.status_code = 403
    crash = logging.LogRecord(
        "django.request", logging.ERROR, __file__, 1, "Error: /x", (), record.exc_info
    )
    crash.status_code = 500

    assert NoTracebackFor4xx().filter(record) and record.exc_info is None
    assert NoTracebackFor4xx().filter(crash) and crash.exc_info is not None
    assert settings.LOGGING["handlers"]["console"]["filters"] == ["no_traceback_for_4xx"]
