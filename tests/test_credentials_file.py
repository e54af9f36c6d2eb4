"""`make run` prints the generated passwords last: ensure_admin and load_demo write them to a
file only its owner can read, and never to their output (which ends up in logs)."""

from __future__ import annotations

import io
import stat

from django.contrib.auth.models import User
from django.core.management import call_command

from fixproof.credentials import credentials_read


def test_the_admin_and_demo_passwords_go_to_a_private_file_not_the_output(
    db, tmp_path, monkeypatch
):
    monkeypatch.delenv("FIXPROOF_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("FIXPROOF_ADMIN_USER", "admin")
    path = tmp_path / "var" / "credentials.txt"
    out = io.StringIO()

    call_command("ensure_admin", credentials_file=path, stdout=out)
    call_command("load_demo", credentials_file=path, stdout=out)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    accounts = credentials_read(path)
    assert list(accounts) == ["admin", "emma", "karim", "marc", "vera"]
    assert accounts["admin"][1] == "administrator" and accounts["marc"][1] == "manager"
    for username, (password, _role) in accounts.items():
        assert User.objects.get(username=username).check_password(password)
        assert password not in out.getvalue()
    assert "shown at the end" in out.getvalue()


def test_a_second_set_up_keeps_the_passwords_and_the_file(db, tmp_path, monkeypatch):
    monkeypatch.delenv("FIXPROOF_ADMIN_PASSWORD", raising=False)
    path = tmp_path / "credentials.txt"
    call_command("ensure_admin", credentials_file=path, stdout=io.StringIO())
    call_command("load_demo", credentials_file=path, stdout=io.StringIO())
    first = path.read_text()

    out = io.StringIO()
    call_command("ensure_admin", credentials_file=path, stdout=out)
    call_command("load_demo", credentials_file=path, stdout=out)

    assert path.read_text() == first
    for username, (password, _role) in credentials_read(path).items():
        assert User.objects.get(username=username).check_password(password)


def test_a_demo_person_left_without_a_password_by_an_older_demo_gets_one(db, tmp_path):
    path = tmp_path / "credentials.txt"
    call_command("load_demo", credentials_file=path, stdout=io.StringIO())
    path.unlink()
    vera = User.objects.get(username="vera")
    vera.set_unusable_password()
    vera.save()

    call_command("load_demo", credentials_file=path, stdout=io.StringIO())

    assert list(credentials_read(path)) == ["vera"]
    vera.refresh_from_db()
    assert vera.check_password(credentials_read(path)["vera"][0])


def test_an_existing_file_open_to_others_is_made_private(db, tmp_path):
    path = tmp_path / "credentials.txt"
    path.write_text("# old\n")
    path.chmod(0o644)

    call_command("load_demo", credentials_file=path, stdout=io.StringIO())

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
