from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from perfruns.pipeline import cluster as cluster_module
from perfruns.pipeline import pgtools
from perfruns.pipeline.cluster import ClusterError, ManagedCluster, stop_stale_clusters
from perfruns.pipeline.pgtools import ToolMissing

SMALL = {"shared_buffers": "32MB", "work_mem": "8MB", "max_connections": 37}


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder the postgres OS user can walk through (pytest's own tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="fixproof-test-"))
    path.chmod(0o755)
    yield path
    # Whatever a test left running, stop it before deleting its files.
    stop_stale_clusters(path)
    shutil.rmtree(path)


@pytest.fixture
def make_cluster(workdir) -> Iterator[Callable[..., ManagedCluster]]:
    made: list[ManagedCluster] = []

    def make(name: str = "cluster") -> ManagedCluster:
        cluster = ManagedCluster(workdir / name)
        made.append(cluster)
        return cluster

    yield make
    errors = []
    for cluster in made:
        try:
            cluster.destroy()
        except Exception as exc:  # keep destroying the others, then fail
            errors.append(exc)
    assert not errors, errors


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _show(conninfo: str, *names: str) -> dict[str, str]:
    with psycopg.connect(conninfo, connect_timeout=5) as conn:
        return {
            name: conn.execute("SELECT current_setting(%s)", [name]).fetchone()[0] for name in names
        }


def test_it_starts_a_cluster_with_the_asked_settings_as_an_unprivileged_user(make_cluster):
    cluster = make_cluster()
    cluster.initialize(**SMALL, durable=False)

    port = cluster.start()

    assert cluster.port == port
    assert cluster.is_running()
    assert _show(
        cluster.conninfo(),
        "shared_buffers",
        "work_mem",
        "max_connections",
        "shared_preload_libraries",
        "listen_addresses",
        "port",
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_level",
    ) == {
        "shared_buffers": "32MB",
        "work_mem": "8MB",
        "max_connections": "37",
        "shared_preload_libraries": "pg_stat_statements",
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "wal_level": "minimal",
    }
    assert cluster.settings() == SMALL
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        assert conn.execute("SELECT count(*) >= 0 FROM pg_stat_statements").fetchone() == (True,)
        hba = conn.execute(
            "SELECT type, address, netmask, auth_method FROM pg_hba_file_rules ORDER BY line_number"
        ).fetchall()
    assert hba == [
        ("local", None, None, "trust"),
        ("host", "127.0.0.1", "255.255.255.255", "trust"),
    ]
    status = Path(f"/proc/{cluster.pid()}/status").read_text()
    real_uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    if os.geteuid() == 0:
        assert cluster.os_user == "postgres"
    assert real_uid == pwd.getpwnam(cluster.os_user).pw_uid != 0

    conninfo = cluster.conninfo()

    cluster.stop()

    assert not cluster.is_running()
    assert cluster.pid() is None
    assert cluster.port is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(conninfo, connect_timeout=2)
    with pytest.raises(ClusterError, match="is not running"):
        cluster.conninfo()


def test_a_later_initialize_rewrites_the_settings_and_keeps_the_data(make_cluster):
    cluster = make_cluster()
    cluster.initialize(**SMALL, durable=False)
    cluster.start()
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE kept")
    cluster.stop()

    cluster.initialize(shared_buffers="48MB", work_mem="16MB", max_connections=25, durable=True)

    asked = {"shared_buffers": "48MB", "work_mem": "16MB", "max_connections": 25}
    assert cluster.settings() == asked  # as recorded, while stopped
    cluster.start()
    assert cluster.settings() == asked  # as the server reports them
    assert _show(cluster.conninfo(), "fsync", "wal_level", "full_page_writes") == {
        "fsync": "on",
        "wal_level": "replica",
        "full_page_writes": "on",
    }
    with psycopg.connect(cluster.conninfo()) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'kept'").fetchone()
    includes = (cluster.data_dir / "postgresql.conf").read_text().count("include = 'fixproof.conf'")
    assert includes == 1


def test_an_explicit_port_that_is_taken_is_named_in_the_error(make_cluster, taken_port):
    cluster = make_cluster()
    cluster.initialize(**SMALL, durable=False)

    with pytest.raises(ClusterError) as caught:
        cluster.start(port=taken_port)

    assert f"port {taken_port} on 127.0.0.1 is already in use" in str(caught.value)
    assert not cluster.is_running()


def test_a_picked_port_taken_meanwhile_is_retried_with_another(
    make_cluster, taken_port, monkeypatch
):
    cluster = make_cluster()
    cluster.initialize(**SMALL, durable=False)
    picks = [taken_port]
    real_free_port = cluster_module.free_port

    def free_port() -> int:
        port = picks.pop() if picks else real_free_port()
        return port

    monkeypatch.setattr(cluster_module, "free_port", free_port)

    port = cluster.start()

    assert port != taken_port
    assert not picks
    assert _show(cluster.conninfo(), "port") == {"port": str(port)}


def test_it_gives_up_when_the_second_pick_is_taken_too(make_cluster, taken_port, monkeypatch):
    cluster = make_cluster()
    cluster.initialize(**SMALL, durable=False)
    monkeypatch.setattr(cluster_module, "free_port", lambda: taken_port)

    with pytest.raises(ClusterError, match=f"port {taken_port} and {taken_port} on 127.0.0.1 are"):
        cluster.start()

    assert not cluster.is_running()


def test_a_refused_start_quotes_the_server_log(make_cluster):
    cluster = make_cluster()
    cluster.initialize(shared_buffers="100TB", work_mem="4MB", max_connections=10, durable=False)

    with pytest.raises(ClusterError) as caught:
        cluster.start()

    message = str(caught.value)
    assert message.startswith(f"could not start the cluster in {cluster.data_dir}: ")
    assert 'invalid value for parameter "shared_buffers": "100TB"' in message
    assert not cluster.is_running()


def test_stale_clusters_left_by_a_killed_worker_are_stopped(workdir, make_cluster):
    first = make_cluster("env-1/cluster")
    second = make_cluster("nested/env-2/cluster")
    never_started = make_cluster("env-3/cluster")
    for cluster in (first, second, never_started):
        cluster.initialize(**SMALL, durable=False)
    first.start()
    second.start()
    pids = [first.pid(), second.pid()]

    stopped = stop_stale_clusters(workdir)

    assert stopped == [first.data_dir, second.data_dir]
    for data_dir in (first.data_dir, second.data_dir):
        assert not ManagedCluster(data_dir).is_running()
        assert not (data_dir / "postmaster.pid").exists()
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
        )
    assert stop_stale_clusters(workdir) == []


def test_initialize_without_initdb_says_what_to_install(workdir, monkeypatch):
    empty = workdir / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(pgtools, "SERVER_BIN_ROOT", empty)
    cluster = ManagedCluster(workdir / "cluster")

    with pytest.raises(ToolMissing) as caught:
        cluster.initialize(**SMALL, durable=False)

    assert str(caught.value) == (
        f"initdb not found on PATH or under {empty}/*/bin: install the PostgreSQL server "
        "package (Debian: apt-get install postgresql)"
    )
    assert not cluster.data_dir.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the cluster runs as another user only under root")
def test_a_folder_the_os_user_cannot_enter_is_named(workdir):
    private = workdir / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    cluster = ManagedCluster(private / "cluster")

    with pytest.raises(ClusterError) as caught:
        cluster.initialize(**SMALL, durable=False)

    assert str(caught.value).startswith(f"the OS user postgres cannot enter {private}, ")
    assert not cluster.data_dir.exists()


def test_a_folder_with_other_files_is_not_taken_for_a_cluster(workdir):
    folder = workdir / "busy"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    cluster = ManagedCluster(folder)

    with pytest.raises(ClusterError, match="is not empty and holds no PostgreSQL cluster"):
        cluster.initialize(**SMALL, durable=False)
    with pytest.raises(ClusterError, match="holds no PostgreSQL cluster: not deleting it"):
        cluster.destroy()

    assert (folder / "notes.txt").read_text() == "mine"


def test_destroy_stops_the_server_and_deletes_the_folder(workdir):
    cluster = ManagedCluster(workdir / "cluster")
    cluster.initialize(**SMALL, durable=False)
    cluster.start()
    pid = cluster.pid()

    cluster.destroy()

    assert not cluster.data_dir.exists()
    assert (
        not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    )


def test_starting_a_running_cluster_returns_its_port(make_cluster):
    cluster = make_cluster()
    cluster.initialize(**SMALL, durable=False)
    port = cluster.start()

    assert cluster.start() == port
    assert ManagedCluster(cluster.data_dir).port == port  # found again from postmaster.pid


def test_bad_memory_settings_are_refused_before_anything_is_written(workdir):
    cluster = ManagedCluster(workdir / "cluster")

    with pytest.raises(ValueError, match="shared_buffers must be a size such as 128MB"):
        cluster.initialize(
            shared_buffers="1GB'; fsync = 'off", work_mem="4MB", max_connections=10, durable=True
        )

    assert not cluster.data_dir.exists()
