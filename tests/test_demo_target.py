"""The demo target in examples/demo: seeded for real, served by gunicorn, loaded by Locust.

One scratch database on the local server for the module (seeded small by seed.py run as a
subprocess); each check starts its own gunicorn with the pathologies it needs, and
kills it whatever happens.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"
BIN = Path(sys.executable).parent
SERVER = "postgresql://postgres@127.0.0.1:5432"
USERS = 300
EVENTS = 20_000
START_TIMEOUT = 15.0
MIB = 1024 * 1024


def _scratch_name() -> str:
    return f"fixproof_demotest_{secrets.token_hex(4)}"


def _create_database(name: str) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop_database(name: str) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _env(**values: str | None) -> dict[str, str]:
    """This process's environment without the demo's variables, plus `values`."""
    knobs = ("DATABASE_URL", "DEMO_PATHOLOGIES", "DEMO_UPSTREAM_MS", "DEMO_SLOWDOWN_PCT")
    env = {k: v for k, v in os.environ.items() if k not in knobs}
    env.update({k: v for k, v in values.items() if v is not None})
    return env


def _seed(url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO / "seed.py"), *args],
        env=_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_db() -> Iterator[str]:
    """The DATABASE_URL of a scratch database seeded with USERS users and EVENTS events."""
    name = _scratch_name()
    _create_database(name)
    try:
        url = f"{SERVER}/{name}"
        seeded = _seed(url, "--users", str(USERS), "--events", str(EVENTS))
        assert seeded.returncode == 0, seeded.stderr
        yield url
    finally:
        _drop_database(name)


@pytest.fixture(scope="module")
def demo_app(demo_db) -> Iterator[ModuleType]:
    """app.py imported here, for its SQL constants."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", demo_db)
        mp.delenv("DEMO_PATHOLOGIES", raising=False)
        mp.syspath_prepend(str(DEMO))
        spec = importlib.util.spec_from_file_location("fixproof_demo_app", DEMO / "app.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules.pop("dburl", None)
    return module


# --- gunicorn -----------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def queries(self) -> int:
        return int(self.headers["x-queries"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            headers = {name.lower(): value for name, value in resp.getheaders()}
            return Response(resp.status, headers, resp.read())
        finally:
            conn.close()

    def wait_for_health(self) -> Response:
        """The first answer of /health (any status), within START_TIMEOUT."""
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(int(START_TIMEOUT / 0.1)):
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                return self.get("/health")
            except OSError:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        pytest.fail(f"gunicorn did not answer /health within {START_TIMEOUT} s:\n{self.log()}")

    def wait_for_exit(self) -> int:
        try:
            return self.process.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"gunicorn still runs after {START_TIMEOUT} s:\n{self.log()}")

    def worker_pid(self) -> int:
        """The gunicorn worker: the master's only child."""
        children = []
        for status in Path("/proc").glob("[0-9]*/status"):
            with contextlib.suppress(OSError):
                for line in status.read_text().splitlines():
                    if line.startswith("PPid:") and int(line.split()[1]) == self.process.pid:
                        children.append(int(status.parent.name))
        assert len(children) == 1, f"gunicorn master {self.process.pid} has {children}"
        return children[0]


def _stop(process: subprocess.Popen) -> None:
    """TERM the master (it stops its worker), KILL the whole session if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # its own session: only gunicorn's processes
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@contextlib.contextmanager
def gunicorn(database_url: str | None, pathologies: str = "", *, wait: bool = True, **knobs: str):
    """A running demo app on a free loopback port; killed on the way out, always.

    `wait` waits for /health to answer 200 (or fails the test with gunicorn's log); `knobs`
    are more of the app's variables (DEMO_UPSTREAM_MS="100").
    """
    with tempfile.TemporaryDirectory(prefix="fixproof-demo-") as tmp:
        log_path = Path(tmp) / "gunicorn.log"
        port = _free_port()
        command = [
            str(BIN / "gunicorn"),
            "--chdir",
            str(DEMO),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
            "--graceful-timeout",
            "3",
            "app:application",
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=_env(DATABASE_URL=database_url, DEMO_PATHOLOGIES=pathologies, **knobs),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            server = Server(process, port, log_path)
            if wait:
                health = server.wait_for_health()
                assert health.status == 200, f"{health.body!r}\n{server.log()}"
            yield server
        finally:
            _stop(process)


@pytest.fixture(scope="module")
def healthy(demo_db) -> Iterator[Server]:
    with gunicorn(demo_db) as server:
        yield server


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _rss_growth(server: Server, requests: int) -> int:
    """How much the worker's RSS grew over `requests` GET /users/<id>, after a warm-up."""
    worker = server.worker_pid()
    for i in range(50):
        assert server.get(f"/users/{1 + i % USERS}").status == 200
    before = _rss_bytes(worker)
    for i in range(requests):
        assert server.get(f"/users/{1 + i % USERS}").status == 200
    after = _rss_bytes(worker)
    assert server.worker_pid() == worker, "the worker was replaced during the measure"
    return after - before


def _plan_nodes(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


def _events_access(url: str, query: str) -> tuple[set[str], set[str]]:
    """(scan node types on events, index names used) of the query's plan for days=7."""
    with psycopg.connect(url) as conn:
        (plan,) = conn.execute("EXPLAIN (FORMAT JSON) " + query, {"days": 7}).fetchone()
    nodes = list(_plan_nodes(plan[0]["Plan"]))
    scans = {n["Node Type"] for n in nodes if n.get("Relation Name") == "events"}
    indexes = {n["Index Name"] for n in nodes if "Index Name" in n}
    return scans, indexes


# --- the seed -----------------------------------------------------------------------------------


def _fingerprint(url: str) -> str:
    """md5 of every row but the timestamps, which follow the hour of seeding."""
    with psycopg.connect(url) as conn:
        users = conn.execute(
            "SELECT md5(string_agg(concat_ws('|', id, email, first_name, last_name, phone), ','"
            " ORDER BY id)) FROM users"
        ).fetchone()[0]
        events = conn.execute(
            "SELECT md5(string_agg(concat_ws('|', id, user_id, kind, payload::text), ','"
            " ORDER BY id)) FROM events"
        ).fetchone()[0]
    return hashlib.sha256(f"{users}{events}".encode()).hexdigest()


def test_the_seed_fills_both_tables_with_personal_looking_data(demo_db):
    with psycopg.connect(demo_db) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == USERS
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == EVENTS
        email, phone = conn.execute("SELECT email, phone FROM users WHERE id = 123").fetchone()
        ip, path = conn.execute(
            "SELECT payload->>'ip', payload->>'path' FROM events ORDER BY id LIMIT 1"
        ).fetchone()
        indexes = {
            row[0]
            for row in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'events'")
        }
        recent = conn.execute(
            "SELECT count(*) FROM events WHERE created_at >= now() - interval '7 days'"
        ).fetchone()[0]
        analyzed = conn.execute(
            "SELECT count(*) FROM pg_stat_user_tables"
            " WHERE relname IN ('users', 'events') AND last_analyze IS NOT NULL"
        ).fetchone()[0]
    assert email == "user123@example.com"
    assert phone.startswith("+1-") and len(phone) == len("+1-202-555-0123")
    assert ip.startswith("10.") and len(ip.split(".")) == 4
    assert path.startswith("/")
    assert {"events_user_id_idx", "events_created_at_idx"} <= indexes
    assert recent > 0
    assert analyzed == 2


def test_the_seed_gives_the_same_rows_every_time():
    name = _scratch_name()
    _create_database(name)
    try:
        url = f"{SERVER}/{name}"
        assert _seed(url, "--users", "40", "--events", "500").returncode == 0
        first = _fingerprint(url)
        assert _seed(url, "--users", "40", "--events", "500").returncode == 0
        assert _fingerprint(url) == first
    finally:
        _drop_database(name)


def test_the_seed_names_the_missing_variable_and_never_prints_a_password():
    missing = _seed(None)
    assert missing.returncode == 2
    assert "DATABASE_URL is not set" in missing.stderr
    password = secrets.token_hex(8)
    refused = _seed(f"postgresql://demo:{password}@127.0.0.1:{_free_port()}/demo")
    assert refused.returncode == 1
    assert "Connection refused" in refused.stderr
    assert password not in refused.stderr + refused.stdout


def test_the_masking_policy_covers_every_text_and_json_column_of_the_seeded_schema(demo_db):
    from perfruns.masking import introspect, parse_policy, scan, validate

    policy = parse_policy((DEMO / "policy.yml").read_text())
    with psycopg.connect(demo_db) as conn:
        schema = introspect(conn)
        assert validate(policy, schema) == []
        assert scan(conn, schema=schema, policy=policy) == []
        unmasked = scan(conn, schema=schema, policy=parse_policy("tables: {}\n"))
    uncovered = [
        f"{table.name}.{column.name}"
        for table in schema.tables.values()
        for column in table.columns
        if column.category in ("text", "json")
        and not policy.covers(table.schema, table.name, column.name)
    ]
    assert uncovered == []
    flagged = {f"{finding.table}.{finding.column}" for finding in unmasked}
    assert flagged == {
        "public.users.email",
        "public.users.first_name",
        "public.users.last_name",
        "public.users.phone",
        "public.events.payload",
    }


# --- the app ------------------------------------------------------------------------------------


def test_health_answers_ok_after_one_query(healthy):
    response = healthy.get("/health")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "status": "ok",
        "pathologies": [],
        "upstream_ms": 0,
        "slowdown_pct": 0,
        "extra_work_pct": 0,
        "leak_mb_per_min": 0,
    }
    assert response.queries == 1


def test_a_user_comes_back_as_json_with_its_query_count(healthy):
    response = healthy.get("/users/123")
    assert response.status == 200
    assert response.queries == 1
    user = response.json()
    assert user["id"] == 123
    assert user["email"] == "user123@example.com"
    assert set(user) == {"id", "email", "first_name", "last_name", "phone", "created_at"}


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/users",
        "/users/",
        "/users/abc",
        "/users/1.5",
        "/users/-1",
        "/users/0",
        "/users/99999999999999999999",
        "/users/1/",
        "/users/1/orders",
        f"/users/{USERS + 1}",
        f"/users/{USERS + 1}/events",
        "/users/abc/events",
    ],
)
def test_unknown_paths_ids_that_are_not_integers_and_missing_users_are_json_404s(healthy, path):
    response = healthy.get(path)
    assert response.status == 404, response.body
    assert response.headers["content-type"] == "application/json"
    assert "error" in response.json()
    assert response.queries <= 1


def test_a_report_with_a_bad_days_value_is_a_400(healthy):
    for days in ("x", "0", "366", "-3", "7.5"):
        response = healthy.get(f"/report?days={days}")
        assert response.status == 400, days
        assert "error" in response.json()


def test_the_events_endpoint_runs_one_joined_query_when_healthy(healthy):
    response = healthy.get("/users/1/events")
    assert response.status == 200
    events = response.json()["events"]
    assert len(events) == 20
    assert response.queries == 1
    times = [event["created_at"] for event in events]
    assert times == sorted(times, reverse=True)
    assert {event["user"]["id"] for event in events} == {1}


def test_the_events_endpoint_runs_one_query_per_event_with_the_n_plus_one_pathology(
    demo_db, healthy
):
    with gunicorn(demo_db, "n_plus_one") as server:
        assert server.get("/health").json()["pathologies"] == ["n_plus_one"]
        response = server.get("/users/1/events")
        assert response.status == 200
        events = response.json()["events"]
        assert len(events) == 20
        assert response.queries == 1 + len(events)
        assert response.json() == healthy.get("/users/1/events").json()
        assert server.get(f"/users/{USERS + 1}/events").status == 404


def test_the_user_endpoint_leaks_about_64_kib_per_request_with_the_leak_pathology(demo_db):
    with gunicorn(demo_db, "leak") as server:
        growth = _rss_growth(server, 300)
    assert growth > 10 * MIB, f"RSS grew by {growth / MIB:.1f} MiB"


def test_the_user_endpoint_does_not_grow_the_worker_when_healthy(healthy):
    growth = _rss_growth(healthy, 300)
    assert growth < 3 * MIB, f"RSS grew by {growth / MIB:.1f} MiB"


def test_the_report_uses_the_created_at_index_when_healthy(demo_db, demo_app, healthy):
    response = healthy.get("/report")
    assert response.status == 200
    assert response.headers["x-report-sql"] == "REPORT_SQL"
    report = response.json()
    assert report["days"] == 7
    assert sum(kind["events"] for kind in report["kinds"]) > 0
    scans, indexes = _events_access(demo_db, demo_app.REPORT_SQL)
    assert "Seq Scan" not in scans
    assert "events_created_at_idx" in indexes


def test_the_report_scans_all_events_with_the_slow_join_pathology(demo_db, demo_app, healthy):
    with gunicorn(demo_db, "slow_join") as server:
        response = server.get("/report")
    assert response.status == 200
    name = response.headers["x-report-sql"]
    assert name == "SLOW_REPORT_SQL"
    assert response.json() == healthy.get("/report").json()
    scans, indexes = _events_access(demo_db, getattr(demo_app, name))
    assert scans == {"Seq Scan"}
    assert "events_created_at_idx" not in indexes


def test_the_app_reconnects_when_the_database_drops_its_connection(demo_db, healthy):
    for _ in range(5):
        assert healthy.get("/users/1").status == 200
    database = demo_db.rsplit("/", 1)[1]
    with psycopg.connect(demo_db, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name = 'fixproof-demo'",
            (database,),
        ).fetchone()[0]
    assert killed >= 1
    responses = [healthy.get("/users/1") for _ in range(5)]
    assert [r.status for r in responses] == [200] * 5, healthy.log()
    assert responses[0].queries == 2  # the dead connection's try, then the new one's


def test_health_is_503_when_the_database_is_unreachable_and_the_password_stays_secret():
    password = secrets.token_hex(8)
    url = f"postgresql://demo:{password}@127.0.0.1:{_free_port()}/demo"
    with gunicorn(url, wait=False) as server:
        response = server.wait_for_health()
        user = server.get("/users/1")
        log = server.log()
    assert response.status == 503
    assert response.json() == {"error": "the database is unavailable"}
    assert user.status == 503
    assert "cannot connect to the database" in log
    assert password not in log
    assert password not in (response.body + user.body).decode()


def test_the_app_refuses_to_start_without_database_url():
    with gunicorn(None, wait=False) as server:
        assert server.wait_for_exit() != 0
        log = server.log()
    assert "DATABASE_URL is not set" in log


def test_the_app_refuses_to_start_with_an_unknown_pathology(demo_db):
    with gunicorn(demo_db, "n_plus_one,typo", wait=False) as server:
        assert server.wait_for_exit() != 0
        log = server.log()
    assert "unknown pathology 'typo'" in log


def test_all_switches_every_pathology_on(demo_db):
    with gunicorn(demo_db, "all") as server:
        assert server.get("/health").json()["pathologies"] == ["leak", "n_plus_one", "slow_join"]
        assert server.get("/users/1/events").queries == 21
        assert server.get("/report").headers["x-report-sql"] == "SLOW_REPORT_SQL"


def _seconds(server: Server, path: str) -> float:
    started = time.perf_counter()
    response = server.get(path)
    assert response.status == 200, response.body
    return time.perf_counter() - started


def test_the_upstream_wait_holds_every_request_but_health_for_at_least_half_its_time(demo_db):
    with gunicorn(demo_db, DEMO_UPSTREAM_MS="120") as server:
        health = server.get("/health").json()
        # A sleep never ends early: lower bounds only, whatever the machine's load.
        waits = [_seconds(server, path) for path in ("/users/1", "/users/1/events", "/report")]
    assert (health["upstream_ms"], health["slowdown_pct"]) == (120, 0)
    assert min(waits) >= 0.060


def test_the_slowdown_holds_each_response_back_by_its_share_of_the_time_taken(demo_db):
    with gunicorn(demo_db, DEMO_UPSTREAM_MS="100", DEMO_SLOWDOWN_PCT="100") as server:
        health = server.get("/health").json()
        waits = [_seconds(server, "/users/2") for _ in range(3)]
    assert (health["upstream_ms"], health["slowdown_pct"]) == (100, 100)
    # At least 50 ms upstream, then as long again held back.
    assert min(waits) >= 0.100


def test_the_score_is_cpu_bound_work_and_a_build_can_plant_more_of_it(demo_db, healthy):
    base = healthy.get("/users/7/score")
    with gunicorn(demo_db, DEMO_EXTRA_WORK_PCT="25") as server:
        heavier = server.get("/users/7/score")
        missing = server.get("/users/999999/score")

    assert base.status == 200 and base.queries == 1
    assert (base.json()["rounds"], heavier.json()["rounds"]) == (200_000, 250_000)
    assert missing.status == 404


def _rss(pid: int) -> int:
    """Resident bytes of a process and its children (gunicorn's master and worker)."""
    total = 0
    for task in [pid, *_children(pid)]:
        for line in Path(f"/proc/{task}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def _children(pid: int) -> list[int]:
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found += [int(child), *_children(int(child))]
    return found


def test_the_planted_leak_keeps_memory_at_its_rate_whatever_the_traffic(demo_db):
    # 120 MiB a minute: 2 MiB a second, kept by a thread that sleeps between slices. A
    # sleep never ends early, so in 4 s no more than ~8 MiB can be kept; at least a few.
    with gunicorn(demo_db, DEMO_LEAK_MB_PER_MIN="120") as server:
        assert server.get("/health").json()["leak_mb_per_min"] == 120
        before = _rss(server.process.pid)
        time.sleep(4)
        grown = _rss(server.process.pid) - before
    assert 3 * 2**20 < grown < 12 * 2**20


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("DEMO_UPSTREAM_MS", "fast"),
        ("DEMO_SLOWDOWN_PCT", "1001"),
        ("DEMO_EXTRA_WORK_PCT", "-5"),
        ("DEMO_LEAK_MB_PER_MIN", "lots"),
    ],
)
def test_the_app_refuses_to_start_with_a_knob_that_is_not_a_whole_number_in_range(
    demo_db, knob, value
):
    with gunicorn(demo_db, wait=False, **{knob: value}) as server:
        assert server.wait_for_exit() != 0
        log = server.log()
    assert f"{knob}: '{value}' is not a whole number" in log


# --- Locust -------------------------------------------------------------------------------------


def test_the_locustfile_hits_every_endpoint_without_failures(demo_db, tmp_path):
    stats_stem = tmp_path / "locust"  # Locust adds ".json"
    with gunicorn(demo_db, "all") as server:
        run = subprocess.run(
            [
                str(BIN / "locust"),
                "-f",
                str(DEMO / "locustfile.py"),
                "--headless",
                "-u",
                "5",
                "-r",
                "5",
                "-t",
                "4s",
                "--host",
                f"http://127.0.0.1:{server.port}",
                "--json-file",
                str(stats_stem),
                "--only-summary",
                "--loglevel",
                "WARNING",
            ],
            cwd=tmp_path,
            env=_env(DEMO_USERS=str(USERS)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    stats = json.loads(stats_stem.with_suffix(".json").read_text())
    by_name = {entry["name"]: entry for entry in stats}
    assert set(by_name) == {"/users/[id]", "/users/[id]/events", "/report"}
    for name, entry in by_name.items():
        assert entry["num_requests"] > 0, name
        assert entry["num_failures"] == 0, name
