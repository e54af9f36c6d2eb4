"""The demo target: a small JSON API over `users` and `events`, with switchable pathologies.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/demo DEMO_PATHOLOGIES=n_plus_one \\
        gunicorn --chdir examples/demo --bind 127.0.0.1:8000 --workers 1 --threads 4 \\
        app:application

Endpoints (all GET, all JSON, each response with `X-Queries: <SQL queries it ran>`):

    /health               SELECT 1: 200, or 503 when the database is unreachable
    /users/<id>           one user
    /users/<id>/events    the user's 20 latest events
    /report?days=7        events per kind over the last N days (1 to 365)
    /users/<id>/score     a CPU-bound score of the user (PBKDF2 rounds over their row):
                          the endpoint whose time is all computation, no wait

$DEMO_PATHOLOGIES is a comma-separated list of the bugs to switch on ("all" for every
one; empty or unset for a healthy app):

    n_plus_one   /users/<id>/events loads each event's user with its own query
    leak         /users/<id> keeps every response in a cache that never hits or evicts
    slow_join    /report filters on created_at::date, which no index serves

Two more knobs, for measuring Fixproof's regression verdicts (bench/regression_power.py):

    DEMO_UPSTREAM_MS=200   every request but /health first waits for a (simulated)
                           upstream service that answers in 0.5x to 1.5x that many ms:
                           what an auth check or a pricing API adds to a real endpoint
    DEMO_SLOWDOWN_PCT=15   every response but /health is held back by that share of the
                           time it took: a build uniformly 15 % slower, a planted
                           regression of known size

    DEMO_EXTRA_WORK_PCT=25 /users/<id>/score does that share more rounds: a build whose
                           CPU-bound endpoint is 25 % more work, not a sleep
    DEMO_LEAK_MB_PER_MIN=2 a background thread keeps that many MiB a minute for ever,
                           whatever the traffic: a planted leak of known rate

All are whole numbers, 0 or unset for none; anything else stops the worker from booting.

A plain WSGI application: one psycopg connection per worker thread, reconnected when
the database drops it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import random
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import dburl
import psycopg

PATHOLOGIES = ("n_plus_one", "leak", "slow_join")
EVENTS_PER_PAGE = 20
REPORT_DEFAULT_DAYS = 7
REPORT_MAX_DAYS = 365
LEAK_BLOB_BYTES = 64 * 1024
MAX_ID = 2**63 - 1  # bigint


def parse_pathologies(text: str) -> frozenset[str]:
    """`"leak, slow_join"` -> {"leak", "slow_join"}; "all" -> every one; unknown -> ValueError."""
    names = {part.strip().lower() for part in text.split(",")} - {""}
    if "all" in names:
        return frozenset(PATHOLOGIES)
    unknown = sorted(names - set(PATHOLOGIES))
    if unknown:
        raise ValueError(
            f"DEMO_PATHOLOGIES: unknown pathology {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(PATHOLOGIES)}, or all"
        )
    return frozenset(names)


def parse_whole(name: str, text: str, *, high: int) -> int:
    """A knob's value: empty -> 0, a whole number from 0 to `high`, else ValueError."""
    text = text.strip()
    if not text:
        return 0
    if not re.fullmatch(r"[0-9]{1,6}", text) or int(text) > high:
        raise ValueError(f"{name}: {text!r} is not a whole number from 0 to {high}")
    return int(text)


# Read once, at import: a typo stops the worker from booting instead of load-testing
# a healthy app by mistake. So does a missing DATABASE_URL.
ACTIVE = parse_pathologies(os.environ.get("DEMO_PATHOLOGIES", ""))
UPSTREAM_MS = parse_whole("DEMO_UPSTREAM_MS", os.environ.get("DEMO_UPSTREAM_MS", ""), high=10_000)
SLOWDOWN_PCT = parse_whole("DEMO_SLOWDOWN_PCT", os.environ.get("DEMO_SLOWDOWN_PCT", ""), high=1_000)
EXTRA_WORK_PCT = parse_whole(
    "DEMO_EXTRA_WORK_PCT", os.environ.get("DEMO_EXTRA_WORK_PCT", ""), high=1_000
)
LEAK_MB_PER_MIN = parse_whole(
    "DEMO_LEAK_MB_PER_MIN", os.environ.get("DEMO_LEAK_MB_PER_MIN", ""), high=1_000
)
DATABASE_URL = dburl.required()


# --- SQL -------------------------------------------------------------------------------------

USER_SQL = """
SELECT id, email, first_name, last_name, phone, created_at FROM users WHERE id = %(id)s
"""

# Healthy: the user and their latest events in one query (the user's row comes back,
# with NULL events, even when they have none, so one query also tells a 404).
EVENTS_JOINED_SQL = """
SELECT u.id, u.first_name, u.last_name, e.id, e.kind, e.payload, e.created_at
FROM users AS u
LEFT JOIN LATERAL (
    SELECT id, kind, payload, created_at
    FROM events
    WHERE events.user_id = u.id
    ORDER BY created_at DESC, id DESC
    LIMIT %(limit)s
) AS e ON true
WHERE u.id = %(id)s
ORDER BY e.created_at DESC, e.id DESC
"""

# n_plus_one: the events alone, then each event's user on its own, the way a lazy
# ORM relation loads `event.user` inside a loop.
EVENTS_ONLY_SQL = """
SELECT id, user_id, kind, payload, created_at
FROM events
WHERE user_id = %(id)s
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""
EVENT_USER_SQL = "SELECT id, first_name, last_name FROM users WHERE id = %(id)s"

# Both reports give the same rows: `created_at >= D::timestamptz` and
# `created_at::date >= D` are the same test (both in the session's time zone), but
# only the first one is a range the events_created_at_idx index can serve. The cast
# in the second turns it into a sequential scan of all of events.
_REPORT_TEMPLATE = """
SELECT
    e.kind,
    count(*) AS events,
    count(DISTINCT e.user_id) AS users,
    count(*) FILTER (
        WHERE u.created_at >= (current_date - %(days)s::int)::timestamptz
    ) AS events_from_new_users
FROM events AS e
JOIN users AS u ON u.id = e.user_id
WHERE {window}
GROUP BY e.kind
ORDER BY e.kind
"""
REPORT_SQL = _REPORT_TEMPLATE.format(
    window="e.created_at >= (current_date - %(days)s::int)::timestamptz"
)
SLOW_REPORT_SQL = _REPORT_TEMPLATE.format(
    window="e.created_at::date >= current_date - %(days)s::int"
)


# --- database ----------------------------------------------------------------------------------

_local = threading.local()


class DatabaseUnavailable(Exception):
    """No connection: the message is already redacted."""


class Database:
    """The thread's connection, counting the queries a request runs."""

    def __init__(self) -> None:
        self.queries = 0

    def _connection(self) -> psycopg.Connection:
        conn = getattr(_local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            _local.conn = None
            try:
                conn = psycopg.connect(
                    DATABASE_URL,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="fixproof-demo",
                )
            except psycopg.Error as exc:
                raise DatabaseUnavailable(dburl.describe(exc, DATABASE_URL)) from None
            _local.conn = conn
        return conn

    def fetch(self, query: str, params: dict[str, Any] | None = None) -> list[tuple]:
        """Rows of one query; if the connection died, once more on a new connection."""
        for attempt in (1, 2):
            conn = self._connection()
            self.queries += 1
            try:
                return conn.execute(query, params).fetchall()
            except psycopg.OperationalError:
                # Retry only when the connection itself is gone (a restarted server,
                # a killed backend), not for errors a second try would repeat.
                if attempt == 2 or not (conn.closed or conn.broken):
                    raise
                _local.conn = None
        raise AssertionError("unreachable")


# --- the leak pathology ------------------------------------------------------------------------

# A "response cache" keyed on the user id *and* a per-request serial: no key ever comes
# back, so it never hits, and nothing ever evicts. Each entry holds the body padded to
# 64 KiB, like a rendered page kept "for later".
_RESPONSE_CACHE: dict[tuple[int, int], bytes] = {}
_serial = itertools.count()


def _remember(user_id: int, body: bytes) -> None:
    _RESPONSE_CACHE[(user_id, next(_serial))] = body.ljust(LEAK_BLOB_BYTES, b" ")


# --- the planted leak: memory kept at a known rate, whatever the traffic ----------------------

_PLANTED: list[bytes] = []


def _plant_leak(mb_per_min: int) -> None:
    """Keep mb_per_min MiB a minute, a slice every second, written so that it is resident
    (a zero-filled buffer may not be)."""
    chunk = mb_per_min * 2**20 // 60
    while True:
        _PLANTED.append(os.urandom(64) * (chunk // 64))
        time.sleep(1)


if LEAK_MB_PER_MIN:
    threading.Thread(
        target=_plant_leak, args=(LEAK_MB_PER_MIN,), name="planted-leak", daemon=True
    ).start()


# --- responses ---------------------------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _encode(payload: Any) -> bytes:
    return json.dumps(payload, default=_json_default, separators=(",", ":")).encode()


def _log(message: str) -> None:
    print(f"demo app: {message}", file=sys.stderr, flush=True)


# --- endpoints ---------------------------------------------------------------------------------


def health(db: Database) -> Any:
    db.fetch("SELECT 1")
    return {
        "status": "ok",
        "pathologies": sorted(ACTIVE),
        "upstream_ms": UPSTREAM_MS,
        "slowdown_pct": SLOWDOWN_PCT,
        "extra_work_pct": EXTRA_WORK_PCT,
        "leak_mb_per_min": LEAK_MB_PER_MIN,
    }


def upstream_wait() -> None:
    """The simulated upstream call: a wait, no CPU, uniform in [0.5, 1.5] x UPSTREAM_MS."""
    if UPSTREAM_MS:
        time.sleep(UPSTREAM_MS * random.uniform(0.5, 1.5) / 1000)


def slow_down(started: float) -> None:
    """Hold the response back by SLOWDOWN_PCT % of the time it took since `started`."""
    if SLOWDOWN_PCT:
        time.sleep((time.perf_counter() - started) * SLOWDOWN_PCT / 100)


def user_detail(db: Database, user_id: int) -> Any:
    rows = db.fetch(USER_SQL, {"id": user_id})
    if not rows:
        raise HttpError(404, f"no user {user_id}")
    id_, email, first_name, last_name, phone, created_at = rows[0]
    return {
        "id": id_,
        "email": email,
        "first_name": first_name,
        "last_name": last_name,
        "phone": phone,
        "created_at": created_at,
    }


def _event(id_: int, kind: str, payload: dict, created_at: dt.datetime, user: tuple) -> Any:
    owner_id, first_name, last_name = user
    return {
        "id": id_,
        "kind": kind,
        "path": payload.get("path"),
        "ip": payload.get("ip"),
        "created_at": created_at,
        "user": {"id": owner_id, "name": f"{first_name} {last_name}"},
    }


def user_events(db: Database, user_id: int) -> Any:
    params = {"id": user_id, "limit": EVENTS_PER_PAGE}
    if "n_plus_one" in ACTIVE:
        events = []
        for id_, owner, kind, payload, created_at in db.fetch(EVENTS_ONLY_SQL, params):
            user = db.fetch(EVENT_USER_SQL, {"id": owner})[0]
            events.append(_event(id_, kind, payload, created_at, user))
        if not events and not db.fetch(USER_SQL, {"id": user_id}):
            raise HttpError(404, f"no user {user_id}")
        return {"user_id": user_id, "events": events}
    rows = db.fetch(EVENTS_JOINED_SQL, params)
    if not rows:
        raise HttpError(404, f"no user {user_id}")
    events = [
        _event(event_id, kind, payload, created_at, (owner, first_name, last_name))
        for owner, first_name, last_name, event_id, kind, payload, created_at in rows
        if event_id is not None
    ]
    return {"user_id": user_id, "events": events}


SCORE_ROUNDS = 200_000  # tens of milliseconds of one core


def score(db: Database, user_id: int) -> Any:
    """PBKDF2 over the user's row: CPU the request cannot wait away (DEMO_EXTRA_WORK_PCT
    adds rounds)."""
    rows = db.fetch(USER_SQL, {"id": user_id})
    if not rows:
        raise HttpError(404, f"no user {user_id}")
    rounds = SCORE_ROUNDS * (100 + EXTRA_WORK_PCT) // 100
    digest = hashlib.pbkdf2_hmac("sha256", repr(rows[0]).encode(), b"fixproof-demo", rounds)
    return {"id": user_id, "score": int.from_bytes(digest[:4], "big") % 1000, "rounds": rounds}


def report(db: Database, days: int) -> tuple[Any, str]:
    name = "SLOW_REPORT_SQL" if "slow_join" in ACTIVE else "REPORT_SQL"
    query = SLOW_REPORT_SQL if "slow_join" in ACTIVE else REPORT_SQL
    rows = db.fetch(query, {"days": days})
    kinds = [
        {"kind": kind, "events": events, "users": users, "events_from_new_users": from_new}
        for kind, events, users, from_new in rows
    ]
    return {"days": days, "kinds": kinds}, name


# --- routing -----------------------------------------------------------------------------------

_ID = re.compile(r"[0-9]{1,19}")


def _id(text: str) -> int:
    """A path's id, or 404: only plain decimal digits within bigint are ids."""
    if not _ID.fullmatch(text) or not 1 <= int(text) <= MAX_ID:
        raise HttpError(404, f"no user {text!r}")
    return int(text)


def _days(query_string: str) -> int:
    values = parse_qs(query_string).get("days")
    if not values:
        return REPORT_DEFAULT_DAYS
    text = values[-1]
    if not re.fullmatch(r"[0-9]{1,3}", text) or not 1 <= int(text) <= REPORT_MAX_DAYS:
        raise HttpError(400, f"days must be a whole number from 1 to {REPORT_MAX_DAYS}")
    return int(text)


def _route(environ: dict, db: Database) -> tuple[Any, list[tuple[str, str]]]:
    """The JSON payload and extra headers for a request, or HttpError."""
    path = environ.get("PATH_INFO", "") or "/"
    parts = path.split("/")[1:]  # "/users/1/events" -> ["users", "1", "events"]
    known = (
        parts == ["health"]
        or parts == ["report"]
        or (
            len(parts) in (2, 3)
            and parts[0] == "users"
            and parts[2:] in ([], ["events"], ["score"])
        )
    )
    if not known:
        raise HttpError(404, f"no such endpoint: {path}")
    if environ.get("REQUEST_METHOD", "GET") != "GET":
        raise HttpError(405, "only GET is allowed")
    if parts == ["health"]:
        return health(db), []
    upstream_wait()
    if parts == ["report"]:
        payload, query_name = report(db, _days(environ.get("QUERY_STRING", "")))
        return payload, [("X-Report-Sql", query_name)]
    user_id = _id(parts[1])
    if parts[2:] == ["score"]:
        return score(db, user_id), []
    if len(parts) == 3:
        return user_events(db, user_id), []
    payload = user_detail(db, user_id)
    if "leak" in ACTIVE:
        _remember(user_id, _encode(payload))
    return payload, []


def application(
    environ: dict, start_response: Callable[[str, list[tuple[str, str]]], Any]
) -> Iterable[bytes]:
    started = time.perf_counter()
    db = Database()
    headers: list[tuple[str, str]] = []
    try:
        payload, headers = _route(environ, db)
        status = 200
        if environ.get("PATH_INFO") != "/health":
            slow_down(started)
    except HttpError as exc:
        status, payload = exc.status, {"error": str(exc)}
        if status == 405:
            headers = [("Allow", "GET")]
    except DatabaseUnavailable as exc:
        _log(f"cannot connect to the database: {exc}")
        status, payload = 503, {"error": "the database is unavailable"}
    except psycopg.OperationalError as exc:
        _log(f"database error: {dburl.describe(exc, DATABASE_URL)}")
        status, payload = 503, {"error": "the database is unavailable"}
    except Exception:
        _log("internal error:\n" + traceback.format_exc())
        status, payload = 500, {"error": "internal error"}
    body = _encode(payload)
    start_response(
        f"{status} {REASONS[status]}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("X-Queries", str(db.queries)),
            *headers,
        ],
    )
    return [body]
