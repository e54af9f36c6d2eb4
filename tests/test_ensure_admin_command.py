from __future__ import annotations

import io

from django.contrib.auth.models import User
from django.core.management import call_command


def test_it_creates_the_admin_with_a_generated_password_shown_once(db, monkeypatch):
    monkeypatch.delenv("FIXPROOF_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("FIXPROOF_ADMIN_USER", "root-admin")
    out = io.StringIO()
    call_command("ensure_admin", stdout=out)
    text = out.getvalue()
    password = text.split("with password: ")[1].split()[0]
    admin = User.objects.get(username="root-admin")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password(password)

    out = io.StringIO()
    call_command("ensure_admin", stdout=out)
    assert "exists (password unchanged)" in out.getvalue()
    assert password not in out.getvalue()
    assert User.objects.filter(is_superuser=True).count() == 1


def test_it_takes_the_password_from_the_environment_without_printing_it(db, monkeypatch):
    monkeypatch.setenv("FIXPROOF_ADMIN_USER", "admin")
    monkeypatch.setenv("FIXPROOF_ADMIN_PASSWORD", "a long chosen passphrase")
    out = io.StringIO()
    call_command("ensure_admin", stdout=out)
    assert "a long chosen passphrase" not in out.getvalue()
    assert User.objects.get(username="admin").check_password("a long chosen passphrase")
