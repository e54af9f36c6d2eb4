from __future__ import annotations

import os
import pwd
import stat
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from perfruns.pipeline import pgtools
from perfruns.pipeline.pgtools import (
    PgToolError,
    ToolCancelled,
    ToolMissing,
    find_binary,
    redact,
    run,
)

SERVER_HINT = "install the PostgreSQL server package (Debian: apt-get install postgresql)"


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


@pytest.fixture
def nothing_installed(tmp_path, monkeypatch) -> Path:
    """An empty PATH and an empty /usr/lib/postgresql stand-in."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(pgtools, "SERVER_BIN_ROOT", empty)
    return empty


def test_find_binary_finds_initdb():
    path = find_binary("initdb")

    assert Path(path).name == "initdb"
    assert os.access(path, os.X_OK)


def test_find_binary_looks_in_the_server_folders_when_path_lacks_the_tool(monkeypatch, tmp_path):
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("no PostgreSQL server package under /usr/lib/postgresql")
    monkeypatch.setenv("PATH", str(tmp_path))

    path = find_binary("initdb")

    assert Path(path).parent.parent.parent == Path("/usr/lib/postgresql")


def test_find_binary_prefers_the_newest_version_compared_as_numbers(nothing_installed):
    for version in ("9.6", "15", "10"):
        bin_dir = nothing_installed / version / "bin"
        bin_dir.mkdir(parents=True)
        _script(bin_dir / "initdb", "exit 0\n")

    # A string sort would pick 9.6.
    assert find_binary("initdb") == str(nothing_installed / "15" / "bin" / "initdb")


def test_a_missing_server_tool_says_what_to_install(nothing_installed):
    with pytest.raises(ToolMissing) as caught:
        find_binary("initdb")

    assert str(caught.value) == (
        f"initdb not found on PATH or under {nothing_installed}/*/bin: {SERVER_HINT}"
    )
    assert caught.value.tool == "initdb"


def test_the_default_search_folder_is_named_in_the_message(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(ToolMissing) as caught:
        find_binary("no_such_pg_tool")

    assert str(caught.value) == (
        f"no_such_pg_tool not found on PATH or under /usr/lib/postgresql/*/bin: {SERVER_HINT}"
    )


def test_a_missing_client_tool_points_to_the_client_package(nothing_installed):
    with pytest.raises(ToolMissing, match=r"apt-get install postgresql-client\)$"):
        find_binary("pg_restore")


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("host=db port=5432 password=s3cret user=app", "host=db port=5432 password=*** user=app"),
        ("host=db password = 's3cret word\\' here' dbname=x", "host=db password = *** dbname=x"),
        ("postgres://app:s3cret@db:5432/shop", "postgres://app:***@db:5432/shop"),
        ("postgresql://app:s3c@ret@db/shop?sslmode=require", "postgresql://app:***@db/shop?"),
        ("postgres://app@db/shop?password=s3cret&sslmode=require", "password=***&sslmode=require"),
        ("PGPASSWORD=s3cret pg_dump", "PGPASSWORD=*** pg_dump"),
        ("CREATE ROLE app LOGIN PASSWORD 's3cret'", "PASSWORD '***'"),
    ],
)
def test_redact_removes_the_password(text, kept):
    redacted = redact(text)

    assert "s3cret" not in redacted
    assert kept in redacted


@pytest.mark.parametrize(
    "head",
    [
        "pg_restore: pg_restore: error: ",
        "pg_restore: pg_restore:error:  ",
        "pg_restore: error: pg_restore: error: ",
    ],
)
def test_prefixes_of_parallel_workers_landed_together_are_told_once(head):
    # pg_restore -j: its workers share one stderr and write a line in fragments
    # ("pg_restore: ", "error: ", the text), which interleave.
    output = (
        f"{head}could not read from input file: end of file\n"
        "pg_restore: error: a worker process died unexpectedly\n"
    )

    assert pgtools.condense(output) == (
        "pg_restore: error: could not read from input file: end of file; "
        "pg_restore: error: a worker process died unexpectedly"
    )


def test_redact_leaves_a_conninfo_without_password_alone():
    text = "postgres://app@db:5432/shop host=db port=5432"

    assert redact(text) == text


def test_a_failing_tool_error_is_condensed_and_redacted(tmp_path):
    tool = _script(
        tmp_path / "pg_restore",
        "echo 'pg_restore: connecting to database for restore' >&2\n"
        "echo '' >&2\n"
        "echo 'pg_restore: processing item 3364 TABLE DATA customers' >&2\n"
        "echo 'pg_restore: error: connection to postgres://app:s3cret@db/shop failed:"
        " password=s3cret rejected' >&2\n"
        "echo 'Command was: COPY public.customers (email) FROM stdin;' >&2\n"
        "echo 'Try \"pg_restore --help\" for more information.' >&2\n"
        "exit 1\n",
    )

    with pytest.raises(PgToolError) as caught:
        run([tool, "--dbname", "password=s3cret"], timeout=10)

    assert caught.value.tool == "pg_restore"
    assert str(caught.value) == (
        "pg_restore: error: connection to postgres://app:***@db/shop failed: password=*** rejected"
    )


def test_a_real_tool_failure_keeps_its_error_line(tmp_path):
    not_a_dump = tmp_path / "notes.txt"
    not_a_dump.write_text("hello\n")

    with pytest.raises(PgToolError) as caught:
        run([find_binary("pg_restore"), "--list", str(not_a_dump)], timeout=30)

    assert str(caught.value).startswith("pg_restore: error: ")
    assert "valid archive" in str(caught.value)


def test_a_full_disk_is_called_a_full_disk(tmp_path):
    tool = _script(
        tmp_path / "pg_restore",
        "echo 'pg_restore: error: could not execute query: ERROR:  could not extend file"
        ' "base/16384/16385": No space left on device\' >&2\n'
        "echo 'HINT:  Check free disk space.' >&2\n"
        "exit 1\n",
    )

    with pytest.raises(PgToolError) as caught:
        run([tool], timeout=10)

    assert str(caught.value).startswith("the disk is full (No space left on device): ")
    assert "HINT:  Check free disk space." in str(caught.value)


def test_a_tool_without_output_reports_its_exit_status(tmp_path):
    tool = _script(tmp_path / "quiet", "exit 3\n")

    with pytest.raises(PgToolError, match=r"^quiet: exited with status 3$"):
        run([tool], timeout=10)


def test_a_tool_past_its_deadline_is_stopped_with_its_children(tmp_path):
    child_pid_file = tmp_path / "child.pid"
    tool = _script(
        tmp_path / "slow",
        f"sleep 60 &\necho $! > {child_pid_file}\nsleep 60\n",
    )
    started = time.monotonic()

    with pytest.raises(PgToolError, match=r"^slow did not finish within 0\.5 s and was stopped$"):
        run([tool], timeout=0.5)

    assert time.monotonic() - started < 10
    child = int(child_pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_a_cancelled_tool_is_stopped_with_its_children(tmp_path):
    child_pid_file = tmp_path / "child.pid"
    tool = _script(tmp_path / "long", f"sleep 60 &\necho $! > {child_pid_file}\nsleep 60\n")
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()

    with pytest.raises(ToolCancelled, match=r"^long was stopped$"):
        run([tool], timeout=60, cancel=cancel)

    child = int(child_pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has already been killed


def test_stderr_lines_reach_the_callback_as_they_come(tmp_path):
    tool = _script(tmp_path / "chatty", "echo one >&2\necho two >&2\nprintf three >&2\necho out\n")
    seen: list[str] = []

    result = run([tool], timeout=10, on_stderr_line=seen.append)

    assert seen == ["one", "two", "three"]
    assert result.stdout == "out\n"


def test_stdin_text_is_fed_to_the_tool():
    result = run(["cat"], timeout=10, stdin="select 1;\n")

    assert result.stdout == "select 1;\n"


def test_env_is_added_to_the_inherited_environment(monkeypatch):
    monkeypatch.setenv("FIXPROOF_INHERITED", "yes")

    result = run(["env"], timeout=10, env={"FIXPROOF_ADDED": "1"})

    assert "FIXPROOF_INHERITED=yes" in result.stdout.splitlines()
    assert "FIXPROOF_ADDED=1" in result.stdout.splitlines()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may switch users")
def test_a_tool_can_run_as_another_os_user():
    result = run(["id", "-un"], timeout=10, as_user="postgres")

    assert result.stdout.strip() == "postgres"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may switch users")
def test_switching_users_without_root_is_refused():
    other = next(p.pw_name for p in pwd.getpwall() if p.pw_uid != os.geteuid())

    with pytest.raises(PgToolError, match="not root"):
        run(["id"], timeout=10, as_user=other)


def test_conninfo_quotes_what_needs_quoting():
    text = pgtools.conninfo("127.0.0.1", 5432, "postgres", "my db", password="it's secret")

    assert conninfo_to_dict(text) == {
        "host": "127.0.0.1",
        "port": "5432",
        "user": "postgres",
        "dbname": "my db",
        "password": "it's secret",
    }


def test_conninfo_reaches_the_local_server():
    text = pgtools.conninfo("127.0.0.1", 5432, "postgres", "postgres")

    with psycopg.connect(text, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
